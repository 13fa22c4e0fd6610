//! The core's single error type; the bindings map each variant to a Python exception.

use std::fmt;

/// Everything that can go wrong in the core. Shape problems are caught by the callers'
/// validation first; the core re-checks so that no faer assertion can panic.
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// A matrix that must be square is not.
    NotSquare {
        what: &'static str,
        nrows: usize,
        ncols: usize,
    },
    /// `max|K − Kᵀ|` is larger than the accepted tolerance.
    NotSymmetric { max_asym: f64, max_abs: f64 },
    /// Cholesky met a non-positive pivot.
    NotPositiveDefinite { pivot: usize },
    /// The eigensolver did not converge.
    NoConvergence,
    /// Two arguments have incompatible shapes.
    DimensionMismatch {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    /// NaN or infinity where finite numbers are required.
    NonFinite { what: &'static str },
    /// Any other invalid argument (negative time, momentum outside `[0, 1)`, ...).
    InvalidArgument(String),
    /// The ODE integrator could not finish (no convergence by the time limit, too many
    /// steps, step size underflow).
    IntegrationFailed(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotSquare { what, nrows, ncols } => {
                write!(f, "{what} must be square, got shape ({nrows}, {ncols})")
            }
            Error::NotSymmetric { max_asym, max_abs } => write!(
                f,
                "kernel is not symmetric: max|K - K^T| = {max_asym:.3e} exceeds 1e-5 * max|K| = {:.3e}",
                1e-5 * max_abs
            ),
            Error::NotPositiveDefinite { pivot } => {
                write!(f, "matrix is not positive definite (non-positive pivot at index {pivot})")
            }
            Error::NoConvergence => write!(f, "the symmetric eigensolver did not converge"),
            Error::DimensionMismatch { what, expected, got } => {
                write!(f, "{what}: expected size {expected}, got {got}")
            }
            Error::NonFinite { what } => write!(f, "{what} contains NaN or infinity"),
            Error::InvalidArgument(msg) | Error::IntegrationFailed(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for Error {}
