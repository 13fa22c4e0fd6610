//! The loss gradients `G(F) = ∇_F L` the integrator evaluates (docs/numerics.md §9).

use crate::{Error, Result, Shape};
use faer::{Mat, MatMut, MatRef};

/// `∇_F L(F)` of a loss on the train outputs (flattened `D×R`).
pub trait Gradient {
    /// Writes `∇_F L(f)` into `out` (same shape as `f`).
    fn grad(&mut self, f: MatRef<'_, f64>, out: MatMut<'_, f64>) -> Result<()>;
}

impl<G: Gradient + ?Sized> Gradient for &mut G {
    fn grad(&mut self, f: MatRef<'_, f64>, out: MatMut<'_, f64>) -> Result<()> {
        (**self).grad(f, out)
    }
}

pub(super) fn check_same_shape(
    what: &'static str,
    a: MatRef<'_, f64>,
    b: MatRef<'_, f64>,
) -> Result<()> {
    if a.nrows() != b.nrows() || a.ncols() != b.ncols() {
        return Err(Error::DimensionMismatch {
            what,
            expected: Shape::Matrix(b.nrows(), b.ncols()),
            got: Shape::Matrix(a.nrows(), a.ncols()),
        });
    }
    Ok(())
}

/// Mean squared error `L = ‖F − Y‖²/(2n)`: `∇L = (F − Y)/n`.
#[derive(Debug, Clone)]
pub struct Mse {
    pub y: Mat<f64>,
    pub n: f64,
}

impl Gradient for Mse {
    fn grad(&mut self, f: MatRef<'_, f64>, mut out: MatMut<'_, f64>) -> Result<()> {
        check_same_shape("loss gradient input", f, self.y.as_ref())?;
        check_same_shape("loss gradient output", out.as_ref(), self.y.as_ref())?;
        let inv_n = 1.0 / self.n;
        for j in 0..f.ncols() {
            for i in 0..f.nrows() {
                out[(i, j)] = (f[(i, j)] - self.y[(i, j)]) * inv_n;
            }
        }
        Ok(())
    }
}

/// Cross-entropy `L = −(1/n) Σ y·log_softmax(f)`, the softmax taken over groups of
/// `classes` consecutive entries of the row-major flattened `F` (the last axis of the
/// user's targets): `∇L = (softmax(f)·Σ_c y_c − y)/n`.
#[derive(Debug, Clone)]
pub struct CrossEntropy {
    pub y: Mat<f64>,
    pub n: f64,
    pub classes: usize,
}

impl Gradient for CrossEntropy {
    fn grad(&mut self, f: MatRef<'_, f64>, mut out: MatMut<'_, f64>) -> Result<()> {
        check_same_shape("loss gradient input", f, self.y.as_ref())?;
        check_same_shape("loss gradient output", out.as_ref(), self.y.as_ref())?;
        let (d, r, k) = (f.nrows(), f.ncols(), self.classes);
        let total = d * r;
        if k == 0 || total % k != 0 {
            return Err(Error::InvalidArgument(format!(
                "cross-entropy: {total} outputs do not split into groups of {k} classes"
            )));
        }
        let inv_n = 1.0 / self.n;
        let y = self.y.as_ref();
        // Row-major position (i, j) of flattened index `start`, advanced one entry at a time.
        let next = |(i, j): (usize, usize)| if j + 1 == r { (i + 1, 0) } else { (i, j + 1) };
        for g in 0..total / k {
            let start = (g * k / r, g * k % r);
            let mut pos = start;
            let mut m = f64::NEG_INFINITY;
            for _ in 0..k {
                m = m.max(f[pos]);
                pos = next(pos);
            }
            let (mut z, mut ysum) = (0.0, 0.0);
            pos = start;
            for _ in 0..k {
                let e = (f[pos] - m).exp();
                out[pos] = e;
                z += e;
                ysum += y[pos];
                pos = next(pos);
            }
            let scale = ysum / z;
            pos = start;
            for _ in 0..k {
                out[pos] = (out[pos] * scale - y[pos]) * inv_n;
                pos = next(pos);
            }
        }
        Ok(())
    }
}
