//! `tangentflow._core`: thin PyO3 bindings of `tangentflow-core`, one file per core concept.
//!
//! Each function validates and borrows its NumPy inputs, builds faer views
//! ([`convert`]), runs the core with the GIL released inside the library's thread pool,
//! and wraps the result; errors cross as precise Python exceptions ([`errors`]). Numerics
//! live in the core crate only.
//!
//! * [`spectral`]: kernel checks and the eigendecomposition.
//! * [`cholesky`]: the `t = ∞` fast path.
//! * [`dynamics`]: the typed `Dynamics`, per-mode factors, reconstruction of outputs and
//!   the closed form in one call.
//! * [`ode`]: the function-space ODE integrator.
//! * [`kernels`]: the infinite-width fully connected kernels.
//! * [`krylov`]: Krylov dynamics over a kernel operator given by a Python callable.
//! * [`threads`]: the core's thread pool.

mod cholesky;
mod convert;
mod dynamics;
mod errors;
mod kernels;
mod krylov;
mod ode;
mod spectral;
mod threads;

use pyo3::prelude::*;

#[pymodule(gil_used = false)]
mod _core {
    #[pymodule_export]
    use crate::cholesky::{
        cholesky_solve_f32_f32, cholesky_solve_f32_f64, cholesky_solve_f64_f32,
        cholesky_solve_f64_f64,
    };
    #[pymodule_export]
    use crate::dynamics::{
        _basis_reuse, _compression_ranks, _set_time_compression, _time_compression,
        closed_form_f32, closed_form_f64, loss_sums, mode_factors, project_f32, project_f64,
        test_basis_f32, test_basis_f64, test_outputs_cached_f32, test_outputs_cached_f64,
        test_outputs_f32, test_outputs_f64, train_outputs_f32, train_outputs_f64, PyDynamics,
        PyTimeBasisCache,
    };
    #[pymodule_export]
    use crate::kernels::{fc_diagonal_f64, fc_matmat_f64, fully_connected_f64};
    #[pymodule_export]
    use crate::krylov::{PyKrylovFlow, PyKrylovPinv};
    #[pymodule_export]
    use crate::ode::ode_solve;
    #[pymodule_export]
    use crate::spectral::{
        _eigh_timings_f64, _reflectors_from_parts_f32, _reflectors_from_parts_f64, all_finite_f32,
        all_finite_f64, apply_transpose_f32, apply_transpose_f64, form_eigenvectors_f32,
        form_eigenvectors_f64, kernel_stats_f32, kernel_stats_f64, sym_eigh_f32_f32,
        sym_eigh_f32_f64, sym_eigh_f64_f32, sym_eigh_f64_f64, sym_eigh_factored_f32_f32,
        sym_eigh_factored_f32_f64, sym_eigh_factored_f64_f32, sym_eigh_factored_f64_f64,
        PyReflectors,
    };
    #[pymodule_export]
    use crate::threads::{get_num_threads, set_num_threads};

    use super::{Bound, PyModule, PyModuleMethods, PyResult};

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add("__version__", env!("CARGO_PKG_VERSION"))?;
        m.add(
            "build_profile",
            if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
        )?;
        Ok(())
    }
}
