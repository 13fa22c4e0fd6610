//! `tangentflow._core`: thin PyO3 bindings of `tangentflow-core`.
//!
//! Each function validates and borrows its NumPy inputs, builds faer views
//! ([`convert`]), runs the core with the GIL released inside the library's thread pool,
//! and wraps the result. Numerics live in the core crate only.

mod convert;
mod errors;
mod kernels;
mod ode;
mod spectral;

use pyo3::prelude::*;

#[pymodule(gil_used = false)]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add(
        "build_profile",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
    )?;
    spectral::register(m)?;
    kernels::register(m)?;
    ode::register(m)?;
    Ok(())
}
