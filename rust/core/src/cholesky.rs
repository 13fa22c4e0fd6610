//! The `t = ∞` fast path: Cholesky of `A = sym(K) + λI` with a condition estimate.
//!
//! docs/numerics.md ("Cholesky fast path"): the factorization may replace the
//! eigendecomposition only when it succeeds, the estimated condition number is at most a
//! bound (1e6), and the estimated smallest eigenvalue is above the spectral cut (so both
//! paths retain every mode). Everything works on `Ã = 2^-e·A` ([`crate::spectral`]'s
//! power-of-two scaling), so the gate and the solves see the same bits at every kernel
//! scale; [`solve_scaled_with_estimate`] returns `Ã⁻¹·rhs` and `e`.
//!
//! The condition estimate is `‖Ã‖₁·est(‖Ã⁻¹‖₁)` (`‖·‖₁ = ‖·‖_∞` for a symmetric matrix, as
//! LAPACK's `dpocon`), with `est` the larger of two lower bounds of `‖Ã⁻¹‖₁`: Hager's
//! 1-norm estimator with Higham's refinements (LAPACK `dlacn2`: at most five sign/unit
//! vector iterations plus the alternating test vector) and the growth `‖Ã⁻¹x‖₂/‖x‖₂` of
//! three steps of inverse iteration from a seeded pseudo-random start (≤ `‖Ã⁻¹‖₂ ≤ ‖Ã⁻¹‖₁`).
//! The random start has a component along every eigenvector with probability one, so no
//! fixed direction can hide a small eigenvalue from the estimate; each step costs two
//! triangular solves with one vector.

use crate::spectral::{check_square, ldexp, scale_exponent, symmetrize_lower_scaled};
use crate::{Error, Real, Result, Shape};
use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::cholesky::llt::factor::{
    cholesky_in_place, cholesky_in_place_scratch, LltRegularization,
};
use faer::linalg::triangular_solve::{
    solve_lower_triangular_in_place, solve_upper_triangular_in_place,
};
use faer::reborrow::ReborrowMut;
use faer::{Mat, MatMut, MatRef, Par};

/// Iterations of Hager's estimator (LAPACK `dlacn2` uses 5).
const HAGER_ITERS: usize = 5;
/// Inverse-iteration steps from the random start.
const INVERSE_STEPS: usize = 3;
/// Seed of the random start (the estimate is deterministic).
const SEED: u64 = 0x9E37_79B9_7F4A_7C15;

/// What the fast path measured, in the units of the scaled matrix `Ã = 2^-e·A`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CholeskyInfo {
    /// `‖Ã‖_∞`, an upper bound of the largest eigenvalue of `Ã`.
    pub norm_inf: f64,
    /// Estimate (from above) of the smallest eigenvalue of `Ã`: `1/‖Ã⁻¹x‖₂` after inverse
    /// iteration from the random start.
    pub mu_min_est: f64,
    /// `norm_inf · max(Hager's ‖Ã⁻¹‖₁, 1/mu_min_est)`, the estimated 1-norm condition
    /// number (scale-free).
    pub cond_est: f64,
    /// The scaling exponent `e`: `A = 2^e·Ã`.
    pub exp: i32,
}

/// Lower Cholesky factor of `sym(K) + shift·I` and `‖A‖_∞` (unscaled).
pub fn factor<S: Real, T: Real>(k: MatRef<'_, S>, shift: f64, par: Par) -> Result<(Mat<T>, f64)> {
    factor_scaled(k, shift, 0, par)
}

/// Lower Cholesky factor of `2^-e·(sym(K) + shift·I)` and its ∞-norm.
pub fn factor_scaled<S: Real, T: Real>(
    k: MatRef<'_, S>,
    shift: f64,
    e: i32,
    par: Par,
) -> Result<(Mat<T>, f64)> {
    let n = check_square(k, "k_train_train")?;
    let mut l = Mat::<T>::zeros(n, n);
    let norm = symmetrize_lower_scaled(k, shift, e, l.as_mut(), par)?;
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

/// `A⁻¹x` for one vector, through the factor (`A = L Lᵀ`).
fn solve_vec<T: Real>(l: MatRef<'_, T>, x: &[f64]) -> Vec<f64> {
    let n = x.len();
    let mut m = Mat::<T>::from_fn(n, 1, |i, _| T::from_f64(x[i]));
    solve_in_place(l, m.as_mut(), Par::Seq);
    (0..n).map(|i| m[(i, 0)].to_f64()).collect()
}

fn norm1(x: &[f64]) -> f64 {
    x.iter().map(|v| v.abs()).sum()
}

/// Hager's lower bound of `‖A⁻¹‖₁` for a symmetric positive definite `A = L Lᵀ`
/// (Higham's variant, LAPACK `dlacn2`).
fn hager_inverse_norm1<T: Real>(l: MatRef<'_, T>) -> f64 {
    let n = l.nrows();
    if n == 0 {
        return 0.0;
    }
    let mut x = vec![1.0 / n as f64; n];
    let mut est = 0.0f64;
    let mut last_j = usize::MAX;
    let mut last_signs: Option<Vec<f64>> = None;
    for iter in 0..HAGER_ITERS {
        let y = solve_vec(l, &x);
        let new_est = norm1(&y);
        let signs: Vec<f64> = y
            .iter()
            .map(|v| if *v >= 0.0 { 1.0 } else { -1.0 })
            .collect();
        if iter > 0 && (new_est <= est || last_signs.as_ref() == Some(&signs)) {
            est = est.max(new_est);
            break;
        }
        est = new_est;
        // A⁻ᵀ = A⁻¹ (symmetric): the subgradient direction
        let z = solve_vec(l, &signs);
        let (j, zmax) = z
            .iter()
            .enumerate()
            .fold((0, f64::NEG_INFINITY), |(bj, bv), (i, v)| {
                if v.abs() > bv {
                    (i, v.abs())
                } else {
                    (bj, bv)
                }
            });
        let ztx: f64 = z.iter().zip(&x).map(|(a, b)| a * b).sum();
        if iter > 0 && (zmax <= ztx || j == last_j) {
            break;
        }
        last_j = j;
        last_signs = Some(signs);
        x.fill(0.0);
        x[j] = 1.0;
    }
    // Higham's extra test vector x_i = (−1)^i (1 + i/(n−1)), estimate 2‖A⁻¹x‖₁/(3n).
    let denom = if n > 1 { (n - 1) as f64 } else { 1.0 };
    let alt: Vec<f64> = (0..n)
        .map(|i| {
            let s = if i % 2 == 0 { 1.0 } else { -1.0 };
            s * (1.0 + i as f64 / denom)
        })
        .collect();
    let y = solve_vec(l, &alt);
    est.max(2.0 * norm1(&y) / (3.0 * n as f64))
}

/// splitmix64: a tiny deterministic generator for the random start.
fn splitmix(state: &mut u64) -> f64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64 - 0.5
}

/// `max_k ‖A⁻¹x_k‖₂/‖x_k‖₂` over inverse iteration from a seeded random start: a lower
/// bound of `‖A⁻¹‖₂ = 1/μ_min` that converges to it.
fn inverse_iteration_norm2<T: Real>(l: MatRef<'_, T>) -> f64 {
    let n = l.nrows();
    if n == 0 {
        return 0.0;
    }
    let mut state = SEED;
    let mut x: Vec<f64> = (0..n).map(|_| splitmix(&mut state)).collect();
    let mut best = 0.0f64;
    for _ in 0..INVERSE_STEPS {
        let nx = x.iter().map(|v| v * v).sum::<f64>().sqrt();
        if nx == 0.0 || !nx.is_finite() {
            break;
        }
        for v in &mut x {
            *v /= nx;
        }
        let y = solve_vec(l, &x);
        let ny = y.iter().map(|v| v * v).sum::<f64>().sqrt();
        if !ny.is_finite() {
            return f64::INFINITY;
        }
        best = best.max(ny);
        x = y;
    }
    best
}

/// Solves `Ã x = rhs` in place (`Ã = 2^-e·A`, `A = sym(K) + shift·I`, so the true solution
/// is `2^-e·x`) and estimates the condition number; `Err(NotPositiveDefinite)` when the
/// factorization fails.
pub fn solve_scaled_with_estimate<S: Real, T: Real>(
    k: MatRef<'_, S>,
    shift: f64,
    mut rhs: MatMut<'_, T>,
    par: Par,
) -> Result<CholeskyInfo> {
    let n = check_square(k, "k_train_train")?;
    if rhs.nrows() != n {
        return Err(Error::DimensionMismatch {
            what: "right-hand side rows",
            expected: Shape::Rows(n),
            got: Shape::Matrix(rhs.nrows(), rhs.ncols()),
        });
    }
    let e = scale_exponent(k, shift, par)?;
    let (l, norm_inf) = factor_scaled::<S, T>(k, shift, e, par)?;
    let l = l.as_ref();
    solve_in_place(l, rhs.rb_mut(), par);
    let inv2 = inverse_iteration_norm2(l);
    let inv = hager_inverse_norm1(l).max(inv2);
    let mu_min_est = if inv2 > 0.0 && inv2.is_finite() {
        1.0 / inv2
    } else {
        0.0
    };
    let cond_est = if inv.is_finite() && mu_min_est > 0.0 {
        norm_inf * inv
    } else {
        f64::INFINITY
    };
    Ok(CholeskyInfo {
        norm_inf,
        mu_min_est,
        cond_est,
        exp: e,
    })
}

/// Solves `A x = rhs` in place and estimates `cond(A)` (unscaled units: `norm_inf` and
/// `mu_min_est` of `A`, `exp = 0`); `Err(NotPositiveDefinite)` when the factorization
/// fails. Prefer [`solve_scaled_with_estimate`] where `A⁻¹·rhs` may leave the range.
pub fn solve_with_estimate<S: Real, T: Real>(
    k: MatRef<'_, S>,
    shift: f64,
    mut rhs: MatMut<'_, T>,
    par: Par,
) -> Result<CholeskyInfo> {
    let info = solve_scaled_with_estimate(k, shift, rhs.rb_mut(), par)?;
    let e = info.exp;
    for j in 0..rhs.ncols() {
        for i in 0..rhs.nrows() {
            rhs[(i, j)] = T::from_f64(ldexp(rhs[(i, j)].to_f64(), -e));
        }
    }
    Ok(CholeskyInfo {
        norm_inf: ldexp(info.norm_inf, e),
        mu_min_est: ldexp(info.mu_min_est, e),
        cond_est: info.cond_est,
        exp: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spectral::{ldexp, tests::with_spectrum};

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
    fn estimate_finds_a_small_eigenvalue_hidden_from_fixed_probes() {
        // A = I + (δ − 1) u uᵀ, u orthogonal to the four fixed probe vectors an earlier
        // estimate used and to the all-ones start of Hager's estimator
        let n = 64;
        let mut basis: Vec<Vec<f64>> = (0..4u8)
            .map(|j| {
                (0..n)
                    .map(|i| {
                        ((i as f64 + 1.0) * (0.618_033_988_749_895 + f64::from(j) * 0.414_213_562))
                            .fract()
                            - 0.5
                    })
                    .collect()
            })
            .collect();
        basis.push(vec![1.0; n]);
        let mut u: Vec<f64> = (0..n).map(|i| ((i * i) as f64 * 0.37).sin()).collect();
        for _ in 0..2 {
            for b in &basis {
                let bb: f64 = b.iter().map(|x| x * x).sum();
                let ub: f64 = u.iter().zip(b).map(|(x, y)| x * y).sum();
                u.iter_mut().zip(b).for_each(|(x, y)| *x -= ub / bb * y);
            }
        }
        let nu = u.iter().map(|x| x * x).sum::<f64>().sqrt();
        for x in &mut u {
            *x /= nu;
        }
        let delta = 1e-8;
        let k = Mat::<f64>::from_fn(n, n, |i, j| {
            f64::from(u8::from(i == j)) + (delta - 1.0) * u[i] * u[j]
        });
        let mut x = Mat::<f64>::from_fn(n, 1, |i, _| i as f64);
        let info = solve_scaled_with_estimate(k.as_ref(), 0.0, x.as_mut(), Par::Seq).unwrap();
        let true_cond = 1.0 / delta;
        assert!(info.cond_est >= 0.5 * true_cond, "{:e}", info.cond_est);
        assert!(ldexp(info.mu_min_est, info.exp) <= 2.0 * delta);
    }

    #[test]
    fn solution_and_estimate_do_not_depend_on_scale() {
        let lams: Vec<f64> = (0..40).map(|i| 1e-2 * 1.2f64.powi(i)).collect();
        let k = with_spectrum(&lams);
        let b = Mat::<f64>::from_fn(40, 1, |i, _| (i as f64).cos());
        let mut x0 = b.clone();
        let i0 = solve_scaled_with_estimate(k.as_ref(), 0.1, x0.as_mut(), Par::Seq).unwrap();
        for e in [-300, -1, 7, 300] {
            let ks = Mat::<f64>::from_fn(40, 40, |i, j| ldexp(k[(i, j)], e));
            let mut x = b.clone();
            let info = solve_scaled_with_estimate(ks.as_ref(), ldexp(0.1, e), x.as_mut(), Par::Seq)
                .unwrap();
            assert_eq!(info.exp, i0.exp + e);
            assert_eq!(
                (info.cond_est, info.norm_inf, info.mu_min_est),
                (i0.cond_est, i0.norm_inf, i0.mu_min_est)
            );
            assert_eq!(x, x0);
        }
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
