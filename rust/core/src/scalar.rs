//! The floating-point types the core is generic over (`f32`, `f64`).
//!
//! Per-mode scalar math (exponentials, φ functions) is always done in `f64`; only the
//! matrices are stored in `T`. `Real` is the small bridge between the two.

use faer::traits::RealField;

/// A real floating-point matrix element: `f32` or `f64`.
pub trait Real:
    RealField
    + Copy
    + Send
    + Sync
    + PartialOrd
    + Default
    + 'static
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Neg<Output = Self>
    + std::ops::AddAssign
    + std::ops::SubAssign
    + std::ops::MulAssign
{
    /// Machine epsilon of the type.
    const EPS: f64;
    fn from_f64(x: f64) -> Self;
    fn to_f64(self) -> f64;
}

impl Real for f64 {
    const EPS: f64 = f64::EPSILON;
    #[inline]
    fn from_f64(x: f64) -> Self {
        x
    }
    #[inline]
    fn to_f64(self) -> f64 {
        self
    }
}

impl Real for f32 {
    const EPS: f64 = f32::EPSILON as f64;
    #[inline]
    fn from_f64(x: f64) -> Self {
        x as f32
    }
    #[inline]
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
}
