//! tangentflow-core: the numerics of kernel-regime training dynamics, in pure Rust.
//!
//! Everything here works on `faer` matrix views and caller-owned outputs; nothing depends
//! on Python. The PyO3 bindings (`rust/py`) only validate, borrow, release the GIL and wrap.
//!
//! * [`spectral`]: `sym(K)` and its symmetric eigendecomposition, kernel checks.
//! * [`dynamics`]: per-mode factors `e − 1` and `(1 − e)/μ` of gradient flow, discrete
//!   steps and heavy-ball momentum, and the reconstruction of train/test outputs at many
//!   times from a cached eigenbasis.
//! * [`closed_form`]: the MSE closed form at many times in one call (factors, projection,
//!   train and test outputs).
//! * [`cholesky`]: the `t = ∞` fast path with a cheap condition estimate.
//! * [`threads`]: the library's rayon pool (`set_num_threads`), fork-safe.

pub mod cholesky;
pub mod closed_form;
pub mod dynamics;
pub mod error;
pub mod kernels;
pub mod krylov;
pub mod momentum;
pub mod ode;
pub mod ql;
pub mod scalar;
pub mod simd;
pub mod spectral;
pub mod threads;
pub mod tridiag;

pub use error::{Error, Result, Shape};
pub use scalar::Real;
