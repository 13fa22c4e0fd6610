//! The `t = ∞` fast path: Cholesky of `A = sym(K) + λI` with a cheap condition estimate.
//!
//! Semantics §5: the factorization may replace the eigendecomposition only when it
//! succeeds, the estimated condition number is at most a bound (1e6), and the estimated
//! smallest eigenvalue is above the spectral cut (so both paths retain every mode). The
//! estimate uses `‖A‖_∞ ≥ μ_max` (free, from the symmetrizing pass) and block inverse
//! iteration through the factor for `μ_min`; the right-hand side rides along with the first
//! iteration, so the estimate costs four extra passes over `L`.

use crate::spectral::{check_square, symmetrize_lower};
use crate::{Error, Real, Result};
use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::cholesky::llt::factor::{
    cholesky_in_place, cholesky_in_place_scratch, LltRegularization,
};
use faer::linalg::matmul::matmul;
use faer::linalg::triangular_solve::{
    solve_lower_triangular_in_place, solve_upper_triangular_in_place,
};
use faer::reborrow::{Reborrow, ReborrowMut};
use faer::{Accum, Mat, MatMut, MatRef, Par, Side};

/// Number of probe vectors of the inverse iteration.
const PROBES: usize = 4;
/// Inverse-iteration steps (the first shares its solves with the right-hand side).
const STEPS: usize = 3;

/// What the fast path measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CholeskyInfo {
    /// `‖A‖_∞`, an upper bound of the largest eigenvalue.
    pub norm_inf: f64,
    /// Estimate (from above) of the smallest eigenvalue.
    pub mu_min_est: f64,
    /// `norm_inf / mu_min_est`.
    pub cond_est: f64,
}

/// Lower Cholesky factor of `sym(K) + shift·I` and `‖A‖_∞`.
pub fn factor<S: Real, T: Real>(k: MatRef<'_, S>, shift: f64, par: Par) -> Result<(Mat<T>, f64)> {
    let n = check_square(k, "k_train_train")?;
    let mut l = Mat::<T>::zeros(n, n);
    let norm = symmetrize_lower(k, shift, l.as_mut(), par)?;
    let req = cholesky_in_place_scratch::<T>(n, par, Default::default());
    let mut buf = MemBuffer::new(req);
    let reg = LltRegularization {
        dynamic_regularization_delta: T::from_f64(0.0),
        dynamic_regularization_epsilon: T::from_f64(0.0),
    };
    cholesky_in_place(
        l.as_mut(),
        reg,
        par,
        MemStack::new(&mut buf),
        Default::default(),
    )
    .map_err(|e| match e {
        faer::linalg::cholesky::llt::factor::LltError::NonPositivePivot { index } => {
            Error::NotPositiveDefinite { pivot: index }
        }
    })?;
    // Zero the strict upper triangle so that `l` is exactly the factor.
    for j in 1..n {
        for i in 0..j {
            l[(i, j)] = T::from_f64(0.0);
        }
    }
    if !(0..n).all(|i| l[(i, i)].to_f64().is_finite() && l[(i, i)].to_f64() > 0.0) {
        return Err(Error::NotPositiveDefinite { pivot: 0 });
    }
    Ok((l, norm))
}

/// `rhs ← A⁻¹ rhs` with `A = L Lᵀ`.
pub fn solve_in_place<T: Real>(l: MatRef<'_, T>, mut rhs: MatMut<'_, T>, par: Par) {
    solve_lower_triangular_in_place(l, rhs.rb_mut(), par);
    solve_upper_triangular_in_place(l.transpose(), rhs, par);
}

/// Orthonormalizes the columns of `x` in place (modified Gram–Schmidt; `x` is thin).
fn orthonormalize<T: Real>(mut x: MatMut<'_, T>) {
    for j in 0..x.ncols() {
        for i in 0..j {
            let d: f64 = (0..x.nrows())
                .map(|r| x[(r, i)].to_f64() * x[(r, j)].to_f64())
                .sum();
            for r in 0..x.nrows() {
                x[(r, j)] = T::from_f64(x[(r, j)].to_f64() - d * x[(r, i)].to_f64());
            }
        }
        let nrm: f64 = (0..x.nrows())
            .map(|r| x[(r, j)].to_f64().powi(2))
            .sum::<f64>()
            .sqrt();
        let inv = if nrm > 0.0 { 1.0 / nrm } else { 0.0 };
        for r in 0..x.nrows() {
            x[(r, j)] = T::from_f64(x[(r, j)].to_f64() * inv);
        }
    }
}

/// Solves `A x = rhs` in place and estimates `cond(A)`; `Err(NotPositiveDefinite)` when
/// the factorization fails.
pub fn solve_with_estimate<S: Real, T: Real>(
    k: MatRef<'_, S>,
    shift: f64,
    mut rhs: MatMut<'_, T>,
    par: Par,
) -> Result<CholeskyInfo> {
    let n = check_square(k, "k_train_train")?;
    if rhs.nrows() != n {
        return Err(Error::DimensionMismatch {
            what: "right-hand side rows",
            expected: n,
            got: rhs.nrows(),
        });
    }
    let (l, norm_inf) = factor::<S, T>(k, shift, par)?;
    let l = l.as_ref();
    let r = rhs.ncols();
    let p = PROBES.min(n);
    // [rhs | probes] solved together in the first step.
    let mut x = Mat::<T>::zeros(n, r + p);
    x.as_mut().subcols_mut(0, r).copy_from(rhs.rb());
    for j in 0..p {
        for i in 0..n {
            // Deterministic, sign-varying probe vectors.
            let h = ((i as f64 + 1.0) * (0.618_033_988_749_895 + j as f64 * 0.414_213_562)).fract();
            x[(i, r + j)] = T::from_f64(h - 0.5);
        }
    }
    orthonormalize(x.as_mut().subcols_mut(r, p));
    let mut mu_min_est = f64::INFINITY;
    for step in 0..STEPS {
        let mut probes = if step == 0 {
            x.as_mut()
        } else {
            x.as_mut().subcols_mut(r, p)
        };
        let before = probes.rb().subcols(probes.ncols() - p, p).to_owned();
        solve_in_place(l, probes.rb_mut(), par);
        let y = probes.rb().subcols(probes.ncols() - p, p);
        // Rayleigh quotients of A⁻¹ on the probe block: G = Xᵀ A⁻¹ X.
        let mut g = Mat::<T>::zeros(p, p);
        matmul(
            g.as_mut(),
            Accum::Replace,
            before.transpose(),
            y,
            T::from_f64(1.0),
            Par::Seq,
        );
        let g64 = Mat::<f64>::from_fn(p, p, |i, j| 0.5 * (g[(i, j)].to_f64() + g[(j, i)].to_f64()));
        let ev = g64
            .self_adjoint_eigenvalues(Side::Lower)
            .map_err(|_| Error::NoConvergence)?;
        let top = ev.last().copied().unwrap_or(0.0);
        if top > 0.0 {
            mu_min_est = mu_min_est.min(1.0 / top);
        }
        orthonormalize(x.as_mut().subcols_mut(r, p));
    }
    rhs.copy_from(x.as_ref().subcols(0, r));
    if !mu_min_est.is_finite() {
        mu_min_est = 0.0;
    }
    let cond_est = if mu_min_est > 0.0 {
        norm_inf / mu_min_est
    } else {
        f64::INFINITY
    };
    Ok(CholeskyInfo {
        norm_inf,
        mu_min_est,
        cond_est,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spectral::tests::with_spectrum;

    #[test]
    fn solves_and_estimates_condition() {
        let lams: Vec<f64> = (0..80).map(|i| 1e-3 * 1.12f64.powi(i)).collect();
        let k = with_spectrum(&lams);
        let b = Mat::<f64>::from_fn(80, 2, |i, j| ((i + j) as f64).sin());
        let mut x = b.clone();
        let info = solve_with_estimate(k.as_ref(), 0.0, x.as_mut(), Par::rayon(2)).unwrap();
        let res = &k * &x - &b;
        let rn: f64 = (0..80)
            .map(|i| res[(i, 0)].abs().max(res[(i, 1)].abs()))
            .fold(0.0, f64::max);
        assert!(rn < 1e-10, "{rn}");
        let true_cond = lams[79] / lams[0];
        assert!(
            info.mu_min_est >= lams[0] * (1.0 - 1e-9),
            "estimate from above"
        );
        assert!(
            info.mu_min_est < 3.0 * lams[0],
            "{} vs {}",
            info.mu_min_est,
            lams[0]
        );
        assert!(info.cond_est > 0.3 * true_cond);
    }

    #[test]
    fn indefinite_is_an_error() {
        let k = with_spectrum(&[1.0, 2.0, -0.5, 3.0]);
        let mut b = Mat::<f64>::zeros(4, 1);
        assert!(matches!(
            solve_with_estimate(k.as_ref(), 0.0, b.as_mut(), Par::Seq),
            Err(Error::NotPositiveDefinite { .. })
        ));
    }
}
