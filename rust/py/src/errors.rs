//! One core error enum mapped variant by variant to Python exceptions.
//!
//! Every binding returns [`CoreResult`], so `?` works on core results and on Python
//! results alike; the conversion to a Python exception happens once, where the error
//! crosses into Python (`From<PyCoreError> for PyErr`).

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::PyErr;
use tangentflow_core::Error;

pyo3::import_exception!(tangentflow._errors, LinAlgError);
pyo3::import_exception!(tangentflow._errors, IntegrationError);

/// The error of a binding: a core error, or a Python exception already raised (by NumPy
/// extraction, a user callable, a signal handler).
#[derive(Debug)]
pub enum PyCoreError {
    Core(Error),
    Python(PyErr),
}

/// The result type of the bindings.
pub type CoreResult<T> = Result<T, PyCoreError>;

impl From<Error> for PyCoreError {
    fn from(e: Error) -> Self {
        PyCoreError::Core(e)
    }
}

impl From<PyErr> for PyCoreError {
    fn from(e: PyErr) -> Self {
        PyCoreError::Python(e)
    }
}

impl From<PyCoreError> for PyErr {
    /// Shape, dtype and argument problems are `ValueError`s; a factorization failure is
    /// `tangentflow.LinAlgError`; an ODE solver failure is `tangentflow.IntegrationError`.
    fn from(e: PyCoreError) -> Self {
        let e = match e {
            PyCoreError::Core(e) => e,
            PyCoreError::Python(e) => return e,
        };
        let msg = e.to_string();
        match e {
            Error::NotSquare { .. }
            | Error::DimensionMismatch { .. }
            | Error::NonFinite { .. }
            | Error::InvalidArgument(_) => PyValueError::new_err(msg),
            Error::NotPositiveDefinite { .. } | Error::NoConvergence => LinAlgError::new_err(msg),
            Error::IntegrationFailed(_) => IntegrationError::new_err(msg),
        }
    }
}

/// An unexpected internal failure (never a panic), raised as `RuntimeError`.
pub fn internal(msg: &str) -> PyCoreError {
    PyCoreError::Python(PyRuntimeError::new_err(format!(
        "tangentflow internal error: {msg}"
    )))
}
