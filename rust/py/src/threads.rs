//! Bindings of the core's thread pool (`tangentflow.set_num_threads`).

use crate::errors::CoreResult;
use pyo3::prelude::*;
use tangentflow_core::threads;

/// Sets the size of the core's thread pool (0: default).
#[pyfunction]
pub fn set_num_threads(n: usize) -> CoreResult<()> {
    Ok(threads::set_num_threads(n)?)
}

/// The number of threads the core uses.
#[pyfunction]
pub fn get_num_threads() -> usize {
    threads::num_threads()
}
