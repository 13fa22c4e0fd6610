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

use crate::spectral::{check_square, exponent, ldexp, scale_exponent, symmetrize_lower_scaled};
use crate::{Error, Real, Result, Shape};
use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::cholesky::llt::factor::{
    cholesky_in_place, cholesky_in_place_scratch, LltRegularization,
};
use faer::linalg::triangular_solve::{
    solve_lower_triangular_in_place, solve_upper_triangular_in_place,
};
use faer::reborrow::{Reborrow, ReborrowMut};
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
    /// `norm_inf · max(Hager's ‖Ã⁻¹‖₁/√n, 1/mu_min_est)`, an estimate of the 2-norm
    /// condition number from above in its first factor and from below in its second
    /// (scale-free).
    pub cond_est: f64,
    /// The scaling exponent `e`: `A = 2^e·Ã`.
    pub exp: i32,
}

/// Lower Cholesky factor of `sym(K) + shift·I` and `‖A‖_∞` (unscaled).
pub fn factor<S: Real, T: Real>(k: MatRef<'_, S>, shift: f64, par: Par) -> Result<(Mat<T>, f64)> {
    let (l, norm) = factor_scaled(k, shift, 0, par)?;
    let l = l.as_ref();
    // the strict upper triangle zero, so that the result is exactly the factor
    let out = Mat::<T>::from_fn(l.nrows(), l.ncols(), |i, j| {
        if i >= j {
            l[(i, j)]
        } else {
            T::from_f64(0.0)
        }
    });
    Ok((out, norm))
}

/// A lower Cholesky factor in a column-major buffer of its own. The buffer starts as
/// freshly mapped zero pages (`vec![0; n²]` allocates zeroed memory without writing it;
/// faer's `Mat::zeros` writes every entry), the symmetrizing pass writes only the lower
/// triangle, and the triangular solves read only the lower triangle: the strict upper
/// triangle costs neither a pass nor, mostly, its pages.
pub struct Factor<T> {
    data: Vec<T>,
    n: usize,
}

impl<T: Real> Factor<T> {
    fn zeros(n: usize) -> Self {
        Factor {
            data: vec![T::from_f64(0.0); n * n],
            n,
        }
    }

    /// The factor `L` in the lower triangle (the strict upper one is unspecified).
    #[must_use]
    pub fn as_ref(&self) -> MatRef<'_, T> {
        MatRef::from_column_major_slice(&self.data, self.n, self.n)
    }

    fn as_mut(&mut self) -> MatMut<'_, T> {
        MatMut::from_column_major_slice_mut(&mut self.data, self.n, self.n)
    }
}

/// Lower Cholesky factor of `2^-e·(sym(K) + shift·I)` and its ∞-norm.
pub fn factor_scaled<S: Real, T: Real>(
    k: MatRef<'_, S>,
    shift: f64,
    e: i32,
    par: Par,
) -> Result<(Factor<T>, f64)> {
    let n = check_square(k, "k_train_train")?;
    let mut l = Factor::<T>::zeros(n);
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
    let lr = l.as_ref();
    if !(0..n).all(|i| lr[(i, i)].to_f64().is_finite() && lr[(i, i)].to_f64() > 0.0) {
        return Err(Error::NotPositiveDefinite { pivot: 0 });
    }
    Ok((l, norm))
}

/// `rhs ← A⁻¹ rhs` with `A = L Lᵀ` (reads only the lower triangle of `l`).
pub fn solve_in_place<T: Real>(l: MatRef<'_, T>, mut rhs: MatMut<'_, T>, par: Par) {
    solve_lower_triangular_in_place(l, rhs.rb_mut(), par);
    solve_upper_triangular_in_place(l.transpose(), rhs, par);
}

fn norm1(x: &[f64]) -> f64 {
    x.iter().map(|v| v.abs()).sum()
}

fn norm2(x: &[f64]) -> f64 {
    x.iter().map(|v| v * v).sum::<f64>().sqrt()
}

/// An estimator that needs `A⁻¹x` for one vector at a time: [`solve_scaled_with_estimate`]
/// gathers the pending vectors of all estimators (and the right-hand side) into one block,
/// so each pass over the factor serves all of them.
trait Probe {
    /// The next vector to solve, or None when the estimator is done.
    fn request(&mut self) -> Option<Vec<f64>>;
    /// `A⁻¹x` for the vector of the last request.
    fn feed(&mut self, y: &[f64]);
}

#[derive(Clone, Copy, PartialEq)]
enum HagerPhase {
    /// waiting for `y = A⁻¹x`
    X,
    /// waiting for `z = A⁻¹·sign(y)`
    Z,
    Done,
}

/// Hager's lower bound of `‖A⁻¹‖₁` for a symmetric positive definite `A` (Higham's
/// variant, LAPACK `dlacn2`; `A⁻ᵀ = A⁻¹`), at most [`HAGER_ITERS`] iterations.
struct Hager {
    x: Vec<f64>,
    est: f64,
    iter: usize,
    last_j: usize,
    signs: Vec<f64>,
    last_signs: Option<Vec<f64>>,
    phase: HagerPhase,
}

impl Hager {
    fn new(n: usize) -> Self {
        Hager {
            x: vec![1.0 / n as f64; n],
            est: 0.0,
            iter: 0,
            last_j: usize::MAX,
            signs: Vec::new(),
            last_signs: None,
            phase: if n == 0 {
                HagerPhase::Done
            } else {
                HagerPhase::X
            },
        }
    }
}

impl Probe for Hager {
    fn request(&mut self) -> Option<Vec<f64>> {
        match self.phase {
            HagerPhase::X => Some(self.x.clone()),
            HagerPhase::Z => Some(self.signs.clone()),
            HagerPhase::Done => None,
        }
    }

    fn feed(&mut self, y: &[f64]) {
        match self.phase {
            HagerPhase::X => {
                let new_est = norm1(y);
                let signs: Vec<f64> = y
                    .iter()
                    .map(|v| if *v >= 0.0 { 1.0 } else { -1.0 })
                    .collect();
                if self.iter > 0
                    && (new_est <= self.est || self.last_signs.as_ref() == Some(&signs))
                {
                    self.est = self.est.max(new_est);
                    self.phase = HagerPhase::Done;
                    return;
                }
                self.est = new_est;
                self.signs = signs;
                self.phase = HagerPhase::Z;
            }
            HagerPhase::Z => {
                // the subgradient direction z = A⁻¹·sign(y)
                let (j, zmax) =
                    y.iter()
                        .enumerate()
                        .fold((0, f64::NEG_INFINITY), |(bj, bv), (i, v)| {
                            if v.abs() > bv {
                                (i, v.abs())
                            } else {
                                (bj, bv)
                            }
                        });
                let ztx: f64 = y.iter().zip(&self.x).map(|(a, b)| a * b).sum();
                if self.iter > 0 && (zmax <= ztx || j == self.last_j) {
                    self.phase = HagerPhase::Done;
                    return;
                }
                self.last_j = j;
                self.last_signs = Some(std::mem::take(&mut self.signs));
                self.x.fill(0.0);
                self.x[j] = 1.0;
                self.iter += 1;
                self.phase = if self.iter < HAGER_ITERS {
                    HagerPhase::X
                } else {
                    HagerPhase::Done
                };
            }
            HagerPhase::Done => {}
        }
    }
}

/// Higham's extra test vector `x_i = (−1)^i (1 + i/(n−1))`: the bound `2‖A⁻¹x‖₁/(3n)`.
struct Alternating {
    n: usize,
    est: f64,
    asked: bool,
}

impl Probe for Alternating {
    fn request(&mut self) -> Option<Vec<f64>> {
        if self.asked || self.n == 0 {
            return None;
        }
        self.asked = true;
        let n = self.n;
        let denom = if n > 1 { (n - 1) as f64 } else { 1.0 };
        Some(
            (0..n)
                .map(|i| {
                    let s = if i % 2 == 0 { 1.0 } else { -1.0 };
                    s * (1.0 + i as f64 / denom)
                })
                .collect(),
        )
    }

    fn feed(&mut self, y: &[f64]) {
        self.est = 2.0 * norm1(y) / (3.0 * self.n as f64);
    }
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

/// `max_k ‖A⁻¹x_k‖₂/‖x_k‖₂` over [`INVERSE_STEPS`] steps of inverse iteration from a seeded
/// random start: a lower bound of `‖A⁻¹‖₂ = 1/μ_min` that converges to it.
struct InverseIteration {
    x: Vec<f64>,
    best: f64,
    steps: usize,
}

impl InverseIteration {
    fn new(n: usize) -> Self {
        let mut state = SEED;
        InverseIteration {
            x: (0..n).map(|_| splitmix(&mut state)).collect(),
            best: 0.0,
            steps: if n == 0 { INVERSE_STEPS } else { 0 },
        }
    }
}

impl Probe for InverseIteration {
    fn request(&mut self) -> Option<Vec<f64>> {
        if self.steps >= INVERSE_STEPS {
            return None;
        }
        let nx = norm2(&self.x);
        if nx == 0.0 || !nx.is_finite() {
            self.steps = INVERSE_STEPS;
            return None;
        }
        Some(self.x.iter().map(|v| v / nx).collect())
    }

    fn feed(&mut self, y: &[f64]) {
        let ny = norm2(y);
        if !ny.is_finite() {
            self.best = f64::INFINITY;
            self.steps = INVERSE_STEPS;
            return;
        }
        self.best = self.best.max(ny);
        self.x.copy_from_slice(y);
        self.steps += 1;
    }
}

/// Runs the estimators to completion; the first block also solves `rhs` in place. Every
/// block holds the pending vector of each active estimator, so the factor is read twice
/// per block, not twice per vector.
fn run_probes<T: Real>(
    l: MatRef<'_, T>,
    mut rhs: MatMut<'_, T>,
    probes: &mut [&mut dyn Probe],
    par: Par,
) {
    let n = l.nrows();
    let r = rhs.ncols();
    let mut first = true;
    loop {
        let mut asked: Vec<(usize, Vec<f64>)> = Vec::new();
        for (i, p) in probes.iter_mut().enumerate() {
            if let Some(x) = p.request() {
                asked.push((i, x));
            }
        }
        if asked.is_empty() {
            if first {
                solve_in_place(l, rhs.rb_mut(), par);
            }
            return;
        }
        let off = if first { r } else { 0 };
        let mut b = Mat::<T>::zeros(n, off + asked.len());
        if first {
            b.as_mut().subcols_mut(0, r).copy_from(rhs.rb());
        }
        for (c, (_, x)) in asked.iter().enumerate() {
            for (i, v) in x.iter().enumerate() {
                b[(i, off + c)] = T::from_f64(*v);
            }
        }
        solve_in_place(l, b.as_mut(), par);
        if first {
            rhs.copy_from(b.as_ref().subcols(0, r));
            first = false;
        }
        let mut y = vec![0.0f64; n];
        for (c, (i, _)) in asked.iter().enumerate() {
            for (row, v) in y.iter_mut().enumerate() {
                *v = b[(row, off + c)].to_f64();
            }
            probes[*i].feed(&y);
        }
    }
}

/// Solves `Ã x = rhs` in place (`Ã = 2^-e·A`, `A = sym(K) + shift·I`, so the true solution
/// is `2^-e·x`) and estimates the condition number; `Err(NotPositiveDefinite)` when the
/// factorization fails.
pub fn solve_scaled_with_estimate<S: Real, T: Real>(
    k: MatRef<'_, S>,
    shift: f64,
    rhs: MatMut<'_, T>,
    par: Par,
) -> Result<CholeskyInfo> {
    solve_scaled_with_estimate_given(k, shift, None, rhs, par)
}

/// [`solve_scaled_with_estimate`] with `max|K_ij|` already known (`max_abs`, from the
/// caller's validation pass over a finite `K`): the scaling exponent then costs no pass
/// over the kernel. `None` measures it (and checks finiteness).
pub fn solve_scaled_with_estimate_given<S: Real, T: Real>(
    k: MatRef<'_, S>,
    shift: f64,
    max_abs: Option<f64>,
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
    let e = match max_abs {
        Some(m) if m.is_finite() && shift.is_finite() => exponent(m.abs().max(shift.abs())),
        Some(_) => {
            return Err(Error::NonFinite {
                what: "k_train_train",
            })
        }
        None => scale_exponent(k, shift, par)?,
    };
    let (l, norm_inf) = factor_scaled::<S, T>(k, shift, e, par)?;
    let l = l.as_ref();
    let mut hager = Hager::new(n);
    let mut alt = Alternating {
        n,
        est: 0.0,
        asked: false,
    };
    let mut inverse = InverseIteration::new(n);
    run_probes(
        l,
        rhs.rb_mut(),
        &mut [&mut hager, &mut alt, &mut inverse],
        par,
    );
    let inv2 = inverse.best;
    // a lower bound of ‖Ã⁻¹‖₂: inverse iteration's, or the 1-norm estimates over √n
    // (‖B‖₁ ≤ √n·‖B‖₂); the gate bounds the 2-norm condition number, which is what the
    // agreement of the two paths depends on (docs/numerics.md §3.2)
    let inv = (hager.est.max(alt.est) / (n as f64).sqrt()).max(inv2);
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
    fn factor_is_lower_triangular_and_reproduces_the_matrix() {
        let lams: Vec<f64> = (0..150).map(|i| 0.5 + f64::from(i)).collect();
        let k = with_spectrum(&lams);
        let (l, norm) = factor::<f64, f64>(k.as_ref(), 0.25, Par::rayon(2)).unwrap();
        let n = k.nrows();
        let mut norm_ref = 0.0f64;
        for i in 0..n {
            let mut row = 0.0;
            for j in 0..n {
                if j > i {
                    assert_eq!(l[(i, j)], 0.0);
                }
                let a = 0.5 * (k[(i, j)] + k[(j, i)]) + if i == j { 0.25 } else { 0.0 };
                let llt: f64 = (0..n).map(|p| l[(i, p)] * l[(j, p)]).sum();
                assert!((llt - a).abs() < 1e-11 * lams[149], "{i} {j}");
                row += a.abs();
            }
            norm_ref = norm_ref.max(row);
        }
        assert!((norm - norm_ref).abs() <= 1e-12 * norm_ref);
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
