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
    /// Cholesky met a non-positive pivot.
    NotPositiveDefinite { pivot: usize },
    /// The eigensolver did not converge.
    NoConvergence,
    /// An argument's shape does not fit the others': what was expected of it (as much of
    /// the shape as is fixed) and its actual shape.
    DimensionMismatch {
        what: &'static str,
        expected: Shape,
        got: Shape,
    },
    /// NaN or infinity where finite numbers are required.
    NonFinite { what: &'static str },
    /// Any other invalid argument (negative time, momentum outside `[0, 1)`, ...).
    InvalidArgument(String),
    /// The ODE integrator could not finish (no convergence by the time limit, too many
    /// steps, step size underflow).
    IntegrationFailed(String),
}

/// A shape in a [`Error::DimensionMismatch`], printed NumPy-style; `*` marks a free axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `(rows, cols)`.
    Matrix(usize, usize),
    /// `(rows, *)`: only the number of rows is fixed.
    Rows(usize),
    /// `(*, cols)`: only the number of columns is fixed.
    Cols(usize),
    /// `(len,)`: a vector or flat buffer.
    Len(usize),
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shape::Matrix(r, c) => write!(f, "({r}, {c})"),
            Shape::Rows(r) => write!(f, "({r}, *)"),
            Shape::Cols(c) => write!(f, "(*, {c})"),
            Shape::Len(n) => write!(f, "({n},)"),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotSquare { what, nrows, ncols } => {
                write!(f, "{what} must be square, got shape ({nrows}, {ncols})")
            }
            Error::NotPositiveDefinite { pivot } => {
                write!(
                    f,
                    "matrix is not positive definite (non-positive pivot at index {pivot})"
                )
            }
            Error::NoConvergence => write!(f, "the symmetric eigensolver did not converge"),
            Error::DimensionMismatch {
                what,
                expected,
                got,
            } => {
                write!(f, "{what}: expected shape {expected}, got {got}")
            }
            Error::NonFinite { what } => write!(f, "{what} contains NaN or infinity"),
            Error::InvalidArgument(msg) | Error::IntegrationFailed(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for Error {}
