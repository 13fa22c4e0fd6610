//! One core error enum mapped variant by variant to Python exceptions.

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::PyErr;
use tangentflow_core::Error;

pyo3::import_exception!(tangentflow._errors, LinAlgError);
pyo3::import_exception!(tangentflow._errors, TangentflowError);

/// Converts a core error into the matching Python exception.
pub fn to_py(e: Error) -> PyErr {
    let msg = e.to_string();
    match e {
        Error::NotSquare { .. }
        | Error::NotSymmetric { .. }
        | Error::DimensionMismatch { .. }
        | Error::NonFinite { .. }
        | Error::InvalidArgument(_) => PyValueError::new_err(msg),
        Error::NotPositiveDefinite { .. } | Error::NoConvergence => LinAlgError::new_err(msg),
        Error::IntegrationFailed(_) => TangentflowError::new_err(msg),
    }
}

/// Maps an unexpected internal failure (never a panic) to a `RuntimeError`.
pub fn internal(msg: &str) -> PyErr {
    PyRuntimeError::new_err(format!("tangentflow internal error: {msg}"))
}
