//! Per-mode factors of the linear dynamics and the reconstruction of outputs at many times.
//!
//! In the eigenbasis `A = V diag(μ) Vᵀ` every closed form reads, per retained mode `i`,
//!
//! ```text
//! f_train(t) = f₀ + V diag(e_i(t) − 1) z,          z = V_Rᵀ (f₀ − Y)
//! f_test(t)  = g₀ − (K_te V) diag((1 − e_i(t))/μ_i) z
//! ```
//!
//! with `e_i(t)` the decay of mode `i` under gradient flow (`exp(−μ η t/n)`), discrete
//! gradient-descent steps (`(1 − ημ/n)^t`) or heavy-ball momentum (a damped oscillator,
//! [`crate::momentum`]). Both factors are computed without cancellation (`expm1`, series
//! for tiny arguments), so `t = 0` gives exactly `f₀`, `g₀`, and `t = ∞` the limits
//! `(−1, 1/μ)`. Outputs at `T` times come from GEMMs `V · W` with `W` a block of
//! `k × (c·R)` (`c` times, `c·R` a multiple of 16, the same shape whatever `T`, so a time's
//! outputs do not depend on the other times of the call); no `(T, N, N)` array is formed.

use crate::spectral::Reflectors;
use crate::{Error, Real, Result, Shape};
use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::matmul::matmul;
use faer::linalg::{householder, qr};
use faer::reborrow::{Reborrow, ReborrowMut};
use faer::{Accum, Conj, Mat, MatMut, MatRef, Par};
use rayon::prelude::*;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

fn default<D: Default>() -> D {
    D::default()
}

/// How each eigenmode evolves in time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Dynamics {
    /// Gradient flow: `e = exp(−μ·scale·t)`, `scale = η/n`.
    Flow { scale: f64 },
    /// Gradient descent with discrete steps: `e = (1 − μ·scale)^t`, `scale = η/n`.
    Steps { scale: f64 },
    /// Heavy-ball momentum `m`: time `τ = √η·t`, stiffness `μ/n`, damping `(1 − m)/√η`.
    Momentum {
        sqrt_eta: f64,
        inv_n: f64,
        damping: f64,
    },
}

impl Dynamics {
    /// Heavy ball with learning rate `eta`, momentum `m` and `n` loss terms.
    pub fn momentum(eta: f64, m: f64, n: f64) -> Result<Self> {
        if !(eta > 0.0 && eta.is_finite()) {
            return Err(Error::InvalidArgument(format!(
                "learning_rate must be > 0 and finite, got {eta}"
            )));
        }
        if !(0.0..1.0).contains(&m) {
            return Err(Error::InvalidArgument(format!(
                "momentum must be in [0, 1), got {m}"
            )));
        }
        let sqrt_eta = eta.sqrt();
        Ok(Dynamics::Momentum {
            sqrt_eta,
            inv_n: 1.0 / n,
            damping: (1.0 - m) / sqrt_eta,
        })
    }

    /// `(e − 1, (1 − e)/μ)` of a retained mode `μ > 0` at time `t ≥ 0` (`t = ∞` allowed).
    #[must_use]
    pub fn factors(&self, mu: f64, t: f64) -> (f64, f64) {
        if t == 0.0 {
            return (0.0, 0.0);
        }
        if t == f64::INFINITY {
            return (-1.0, 1.0 / mu);
        }
        match *self {
            Dynamics::Flow { scale } => flow_factors(mu, scale * t),
            Dynamics::Steps { scale } => step_factors(mu, scale, t),
            Dynamics::Momentum {
                sqrt_eta,
                inv_n,
                damping,
            } => crate::momentum::factors(mu, mu * inv_n, damping, sqrt_eta * t),
        }
    }

    /// The decay `e` itself (`1` at `t = 0`, `0` at `t = ∞`), computed directly rather than
    /// as `1 + (e − 1)` so that late times keep their relative accuracy (the training loss).
    #[must_use]
    pub fn decay(&self, mu: f64, t: f64) -> f64 {
        if t == 0.0 {
            return 1.0;
        }
        if t == f64::INFINITY {
            return 0.0;
        }
        match *self {
            Dynamics::Flow { scale } => (-mu * (scale * t)).exp(),
            Dynamics::Steps { scale } => {
                let x = scale * mu;
                if x < 1.0 {
                    (t * (-x).ln_1p()).exp()
                } else {
                    (1.0 - x).powf(t)
                }
            }
            Dynamics::Momentum { .. } => 1.0 + self.factors(mu, t).0,
        }
    }
}

/// Gradient flow at scaled time `s = ηt/n`: `(expm1(−μs), −expm1(−μs)/μ)`, with the series
/// `s(1 − μs/2)` for `μs < 1e-8`.
#[inline]
#[must_use]
pub fn flow_factors(mu: f64, s: f64) -> (f64, f64) {
    let x = mu * s;
    let em1 = (-x).exp_m1();
    let phi = if x < 1e-8 {
        s * (1.0 - 0.5 * x)
    } else {
        -em1 / mu
    };
    (em1, phi)
}

/// Discrete steps: `e = (1 − aμ)^t`. For `aμ < 1` through `expm1(t·ln1p(−aμ))` (no
/// cancellation for small `aμ`); beyond, the oscillating or divergent power itself.
#[inline]
#[must_use]
pub fn step_factors(mu: f64, a: f64, t: f64) -> (f64, f64) {
    let x = a * mu;
    if x < 1.0 {
        let y = t * (-x).ln_1p();
        let em1 = y.exp_m1();
        // expm1 and ln1p keep full relative accuracy as aμ → 0, so no series is needed.
        (em1, -em1 / mu)
    } else {
        let e = (1.0 - x).powf(t);
        (e - 1.0, (1.0 - e) / mu)
    }
}

/// Fills `em1[i, j]`, `phi[i, j]` with the factors of mode `mu[i]` at `times[j]`.
pub fn mode_factors(
    dynamics: &Dynamics,
    mu: &[f64],
    times: &[f64],
    em1: MatMut<'_, f64>,
    phi: MatMut<'_, f64>,
) -> Result<()> {
    let (k, nt) = (mu.len(), times.len());
    for (what, m) in [("em1", em1.rb()), ("phi", phi.rb())] {
        if m.nrows() != k || m.ncols() != nt {
            return Err(Error::DimensionMismatch {
                what,
                expected: Shape::Matrix(k, nt),
                got: Shape::Matrix(m.nrows(), m.ncols()),
            });
        }
    }
    check_times(times)?;
    mode_factors_par(dynamics, mu, times, em1, phi, Par::Seq);
    Ok(())
}

/// [`mode_factors`] (shapes and times already checked) with the times spread over the
/// threads of `par`: every entry is computed by the same operations, so the tables are the
/// same bits whatever the thread count.
pub(crate) fn mode_factors_par(
    dynamics: &Dynamics,
    mu: &[f64],
    times: &[f64],
    em1: MatMut<'_, f64>,
    phi: MatMut<'_, f64>,
    par: Par,
) {
    let fill = |((mut a, mut b), &t): ((faer::ColMut<'_, f64>, faer::ColMut<'_, f64>), &f64)| {
        // exp/expm1 below run on a thread that may just have run faer's SIMD kernels.
        crate::simd::clear_upper_vector_state();
        for (i, &m) in mu.iter().enumerate() {
            let (x, y) = dynamics.factors(m, t);
            a[i] = x;
            b[i] = y;
        }
    };
    match par {
        Par::Seq => em1
            .col_iter_mut()
            .zip(phi.col_iter_mut())
            .zip(times)
            .for_each(fill),
        Par::Rayon(_) => em1
            .par_col_iter_mut()
            .zip(phi.par_col_iter_mut())
            .zip(times.par_iter())
            .for_each(fill),
    }
}

pub(crate) fn check_times(times: &[f64]) -> Result<()> {
    match times.iter().find(|t| t.is_nan() || **t < 0.0) {
        Some(t) => Err(Error::InvalidArgument(format!(
            "t must be >= 0 (or inf), got {t}"
        ))),
        None => Ok(()),
    }
}

fn check_mu(mu: &[f64]) -> Result<()> {
    if mu.iter().all(|m| *m > 0.0 && m.is_finite()) {
        Ok(())
    } else {
        Err(Error::InvalidArgument(
            "retained eigenvalues must be positive and finite".into(),
        ))
    }
}

/// `z = V_Rᵀ r` (`k × R`).
pub fn project<T: Real>(v: MatRef<'_, T>, r: MatRef<'_, T>, par: Par) -> Result<Mat<T>> {
    if v.nrows() != r.nrows() {
        return Err(Error::DimensionMismatch {
            what: "residual rows",
            expected: Shape::Rows(v.nrows()),
            got: Shape::Matrix(r.nrows(), r.ncols()),
        });
    }
    let mut z = Mat::<T>::zeros(v.ncols(), r.ncols());
    matmul(
        z.as_mut(),
        Accum::Replace,
        v.transpose(),
        r,
        T::from_f64(1.0),
        par,
    );
    Ok(z)
}

/// `K_te · V` (`M × k`), the test-dependent work a test-set handle caches.
pub fn test_basis<T: Real>(kte: MatRef<'_, T>, v: MatRef<'_, T>, par: Par) -> Result<Mat<T>> {
    if kte.ncols() != v.nrows() {
        return Err(Error::DimensionMismatch {
            what: "k_test_train columns",
            expected: Shape::Cols(v.nrows()),
            got: Shape::Matrix(kte.nrows(), kte.ncols()),
        });
    }
    let mut kv = Mat::<T>::zeros(kte.nrows(), v.ncols());
    matmul(kv.as_mut(), Accum::Replace, kte, v, T::from_f64(1.0), par);
    Ok(kv)
}

/// The output basis `V_R` (`N × k`) of a reconstruction: the eigenvectors themselves, or
/// `Q·Z_R` with `Q` the reflectors of the tridiagonal reduction and `Z_R` the matching
/// eigenvectors of the tridiagonal matrix, `V_R` never formed (docs/numerics.md §17).
/// Every product with it is thin (`k × c` or `N × c`, `c` a few hundred at most).
#[derive(Clone, Copy)]
pub enum Modes<'a, T> {
    Dense(MatRef<'a, T>),
    Factored(&'a Reflectors<T>, MatRef<'a, T>),
}

impl<T: Real> Modes<'_, T> {
    /// `N`.
    #[must_use]
    pub fn nrows(&self) -> usize {
        match self {
            Modes::Dense(v) | Modes::Factored(_, v) => v.nrows(),
        }
    }

    /// `k`, the retained modes.
    #[must_use]
    pub fn ncols(&self) -> usize {
        match self {
            Modes::Dense(v) | Modes::Factored(_, v) => v.ncols(),
        }
    }

    /// `dst ← V_R · x`.
    fn times(&self, dst: MatMut<'_, T>, x: MatRef<'_, T>, par: Par) {
        match *self {
            Modes::Dense(v) => matmul(dst, Accum::Replace, v, x, T::from_f64(1.0), par),
            Modes::Factored(q, zr) => {
                let mut dst = dst;
                matmul(dst.rb_mut(), Accum::Replace, zr, x, T::from_f64(1.0), par);
                q.apply(dst, par);
            }
        }
    }

    /// `V_Rᵀ · y` (`k × c`).
    fn t_times(&self, y: MatRef<'_, T>, par: Par) -> Mat<T> {
        let mut out = Mat::<T>::zeros(self.ncols(), y.ncols());
        match *self {
            Modes::Dense(v) => matmul(
                out.as_mut(),
                Accum::Replace,
                v.transpose(),
                y,
                T::from_f64(1.0),
                par,
            ),
            Modes::Factored(q, zr) => {
                let mut qy = y.to_owned();
                q.apply_transpose(qy.as_mut(), par);
                matmul(
                    out.as_mut(),
                    Accum::Replace,
                    zr.transpose(),
                    qy.as_ref(),
                    T::from_f64(1.0),
                    par,
                );
            }
        }
        out
    }
}

/// `z = V_Rᵀ r` (`k × R`) on either form of the basis ([`project`] for a dense one).
pub fn project_modes<T: Real>(v: Modes<'_, T>, r: MatRef<'_, T>, par: Par) -> Result<Mat<T>> {
    match v {
        Modes::Dense(v) => project(v, r, par),
        Modes::Factored(q, zr) => {
            if zr.nrows() != r.nrows() || q.n() != zr.nrows() {
                return Err(Error::DimensionMismatch {
                    what: "residual rows",
                    expected: Shape::Rows(q.n()),
                    got: Shape::Matrix(r.nrows(), r.ncols()),
                });
            }
            Ok(v.t_times(r, par))
        }
    }
}

/// Which factor a reconstruction uses, and its sign.
#[derive(Clone, Copy)]
enum Side {
    /// `out = base + basis · (em1 ⊙ z)`.
    Train,
    /// `out = base − basis · (phi ⊙ z)`.
    Test,
}

impl Side {
    fn sign(self) -> f64 {
        match self {
            Side::Train => 1.0,
            Side::Test => -1.0,
        }
    }
    fn index(self) -> usize {
        match self {
            Side::Train => 0,
            Side::Test => 1,
        }
    }
}

// -- time compression (docs/numerics.md §16) ---------------------------------------------

/// Whether [`crate::closed_form`] may compress the time axis (on by default; the switch
/// exists so that tests can compare against the direct path).
static COMPRESSION: AtomicBool = AtomicBool::new(true);
/// Rank used by the last compressed-capable reconstruction of each side (train, test);
/// `-1`: the direct path. An introspection hook for tests, never read by the numerics.
static LAST_RANK: [AtomicI64; 2] = [AtomicI64::new(-1), AtomicI64::new(-1)];
/// How the last reconstruction of each side used a kept time basis: `0` it did not (direct
/// path or a new compression), `1` reused as it was, `2` grown. For tests, as `LAST_RANK`.
static LAST_REUSE: [AtomicI64; 2] = [AtomicI64::new(0), AtomicI64::new(0)];

/// Fewest compressible times (finite, nonzero) for which compression is tried.
pub const COMPRESSION_MIN_TIMES: usize = 16;
/// The truncation tolerance in units of the compute precision's epsilon: every column of
/// the weighted factor table is kept within `τ = 90·ε·ρ₁` (`2e-14·ρ₁` in float64, `ρ₁` its
/// largest column norm; docs/numerics.md §16). About 6x above the rounding floor of the
/// range finder (`(1 + √32)·ε·ρ₁`, the first block's subtraction).
pub const COMPRESSION_TOL_EPS: f64 = 90.0;
/// Columns per block of the randomized range finder (also the sketch's margin beyond the
/// largest acceptable rank).
const SKETCH_BLOCK: usize = 32;

/// Enables or disables time compression process-wide; returns the previous setting.
pub fn set_time_compression(on: bool) -> bool {
    COMPRESSION.swap(on, Ordering::SeqCst)
}

/// Whether time compression is enabled.
#[must_use]
pub fn time_compression() -> bool {
    COMPRESSION.load(Ordering::SeqCst)
}

/// Ranks of the last closed-form reconstruction (train, test): `-1` where the direct path
/// ran (or the side was not asked for). For tests; not synchronized across concurrent calls.
#[must_use]
pub fn last_compression_ranks() -> (i64, i64) {
    (
        LAST_RANK[0].load(Ordering::SeqCst),
        LAST_RANK[1].load(Ordering::SeqCst),
    )
}

/// How the last closed form used kept time bases (train, test): `0` not, `1` as they
/// were, `2` grown (docs/numerics.md §16, "Reuse"). For tests; not synchronized.
#[must_use]
pub fn last_basis_reuse() -> (i64, i64) {
    (
        LAST_REUSE[0].load(Ordering::SeqCst),
        LAST_REUSE[1].load(Ordering::SeqCst),
    )
}

/// Resets the recorded ranks (called at the start of a closed form).
pub(crate) fn reset_compression_ranks() {
    for r in &LAST_RANK {
        r.store(-1, Ordering::SeqCst);
    }
    for r in &LAST_REUSE {
        r.store(0, Ordering::SeqCst);
    }
}

/// `F[:, cols] ≈ diag(1/w) · U · W` on the modes with `w > 0` (docs/numerics.md §16).
struct LowRank {
    /// `k × r`, orthonormal columns (in the weighted table's row space).
    u: Mat<f64>,
    /// `r × cols.len()`.
    w: Mat<f64>,
}

/// Largest rank worth using for `tc` times and `k` modes: below `tc/2`, and small enough
/// that `r·(k + tc)` (basis product plus combination) stays below half of `k·tc` (direct).
fn max_useful_rank(k: usize, tc: usize) -> usize {
    (tc / 2).min(k * tc / (2 * (k + tc)).max(1))
}

/// Sketch entry `Ω[j, c]`, uniform in `[-1, 1)`, a fixed function of `(j, c)` (splitmix64)
/// so that a grown sketch extends the previous one and results are reproducible.
fn sketch_entry(j: usize, c: usize) -> f64 {
    let mut x = (j as u64)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add((c as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F))
        ^ 0x5851_F42D_4C95_7F2D;
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    (x >> 11) as f64 * (2.0 / (1u64 << 53) as f64) - 1.0
}

/// Largest column 2-norm of `a`.
fn max_col_norm(a: MatRef<'_, f64>) -> f64 {
    (0..a.ncols())
        .map(|j| {
            let c = a.col(j);
            (0..a.nrows()).map(|i| c[i] * c[i]).sum::<f64>().sqrt()
        })
        .fold(0.0, f64::max)
}

/// The unit lower-trapezoidal Householder basis (`m × size`) of a factored matrix.
fn householder_basis(qr: MatRef<'_, f64>, size: usize) -> Mat<f64> {
    Mat::<f64>::from_fn(qr.nrows(), size, |i, j| match i.cmp(&j) {
        std::cmp::Ordering::Greater => qr[(i, j)],
        std::cmp::Ordering::Equal => 1.0,
        std::cmp::Ordering::Less => 0.0,
    })
}

/// The first `ncols` columns of `Q` from a Householder factorization (`basis`, `coeff`).
fn thin_q(basis: MatRef<'_, f64>, coeff: MatRef<'_, f64>, ncols: usize) -> Mat<f64> {
    let m = basis.nrows();
    let mut q = Mat::<f64>::from_fn(m, ncols, |i, j| if i == j { 1.0 } else { 0.0 });
    if ncols == 0 || basis.ncols() == 0 {
        return q;
    }
    let req = householder::apply_block_householder_sequence_on_the_left_in_place_scratch::<f64>(
        m,
        coeff.nrows(),
        ncols,
    );
    let mut mem = MemBuffer::new(req);
    householder::apply_block_householder_sequence_on_the_left_in_place_with_conj(
        basis,
        coeff,
        Conj::No,
        q.as_mut(),
        Par::Seq,
        MemStack::new(&mut mem),
    );
    q
}

/// An orthonormal basis (`k × p`) of the columns of `y` (Householder QR, sequential so the
/// result does not depend on the thread count).
fn orthonormal_basis(y: &Mat<f64>) -> Mat<f64> {
    let (m, n) = y.shape();
    let size = m.min(n);
    let mut a = y.clone();
    let bs = qr::no_pivoting::factor::recommended_block_size::<f64>(m, n);
    let mut coeff = Mat::<f64>::zeros(bs, size);
    let req = qr::no_pivoting::factor::qr_in_place_scratch::<f64>(m, n, bs, Par::Seq, default());
    let mut mem = MemBuffer::new(req);
    qr::no_pivoting::factor::qr_in_place(
        a.as_mut(),
        coeff.as_mut(),
        Par::Seq,
        MemStack::new(&mut mem),
        default(),
    );
    let basis = householder_basis(a.as_ref(), size);
    thin_q(basis.as_ref(), coeff.as_ref(), size)
}

/// Column-pivoted Householder QR of the small `w` (`p × tc`), exact trailing column norms
/// at every step (so the pivot is the column with the largest residual and the stop is
/// sharp), truncated at the first rank whose largest column residual is `≤ tol`: returns
/// `Q_r` (`p × r`).
fn truncated_cpqr(w: &Mat<f64>, tol: f64) -> Mat<f64> {
    let (m, n) = w.shape();
    let mut a: Vec<f64> = (0..n)
        .flat_map(|j| (0..m).map(move |i| (i, j)))
        .map(|(i, j)| w[(i, j)])
        .collect();
    let mut reflectors: Vec<(Vec<f64>, f64)> = Vec::new();
    let size = m.min(n);
    let mut rank = size;
    for s in 0..size {
        let tail =
            |a: &[f64], j: usize| -> f64 { a[j * m + s..(j + 1) * m].iter().map(|x| x * x).sum() };
        let (jmax, nmax) =
            (s..n)
                .map(|j| (j, tail(&a, j)))
                .fold((s, -1.0), |best, c| if c.1 > best.1 { c } else { best });
        if nmax.sqrt() <= tol {
            rank = s;
            break;
        }
        if jmax != s {
            for i in 0..m {
                a.swap(s * m + i, jmax * m + i);
            }
        }
        let mut v: Vec<f64> = a[s * m + s..(s + 1) * m].to_vec();
        let norm = nmax.sqrt();
        let alpha = if v[0] >= 0.0 { -norm } else { norm };
        v[0] -= alpha;
        let vv: f64 = v.iter().map(|x| x * x).sum();
        let beta = if vv > 0.0 { 2.0 / vv } else { 0.0 };
        for j in s..n {
            let col = &mut a[j * m + s..(j + 1) * m];
            let d: f64 = v.iter().zip(col.iter()).map(|(x, y)| x * y).sum();
            let f = beta * d;
            for (c, x) in col.iter_mut().zip(&v) {
                *c -= f * x;
            }
        }
        reflectors.push((v, beta));
    }
    // Q_r = H_0 ⋯ H_{r−1} [I_r; 0]
    let mut q = Mat::<f64>::from_fn(m, rank, |i, j| if i == j { 1.0 } else { 0.0 });
    for (s, (v, beta)) in reflectors.iter().enumerate().take(rank).rev() {
        for j in 0..rank {
            let d: f64 = (0..v.len()).map(|i| v[i] * q[(s + i, j)]).sum();
            let f = beta * d;
            for (i, x) in v.iter().enumerate() {
                q[(s + i, j)] -= f * x;
            }
        }
    }
    q
}

/// The weighted factor table `G = diag(w)·F[:, cols]`, its `τ = tol_rel·ρ₁` (`ρ₁` the
/// largest column norm), or `None` when it is not finite.
fn weighted_table(
    factor: MatRef<'_, f64>,
    cols: &[usize],
    weight: &[f64],
    tol_rel: f64,
) -> Option<(Mat<f64>, f64)> {
    let g = Mat::<f64>::from_fn(factor.nrows(), cols.len(), |i, j| {
        weight[i] * factor[(i, cols[j])]
    });
    let rho1 = max_col_norm(g.as_ref());
    rho1.is_finite().then_some((g, tol_rel * rho1))
}

/// New orthonormal directions `U_n` (`k × r_n`, orthogonal to the orthonormal `prev`) for
/// the residual `e = G − prev·prevᵀG`, such that every column of `e` is within `0.4τ` of
/// its projection on `U_n` (up to the rounding the a posteriori check catches), with at most
/// `pmax` sketch columns; `None` when more would be needed (docs/numerics.md §16).
fn new_directions(
    mut e: Mat<f64>,
    prev: MatRef<'_, f64>,
    tau: f64,
    pmax: usize,
    par: Par,
) -> Option<Mat<f64>> {
    let (k, tc) = e.shape();
    let np = prev.ncols();
    let pmax = pmax.min(k - np.min(k));
    let e0 = e.clone();
    // Blocked randomized range finder on the running residual E = G − Q Qᵀ G: each block
    // sketches E (not G), so its rounding is relative to the residual left, and the basis
    // resolves directions down to about ε·ρ₁ (one sketch of G would stop near ε·σ₁(G),
    // and σ₁(G) ≈ √T·ρ₁ over many similar times).
    let mut q = Mat::<f64>::zeros(k, np + pmax);
    q.as_mut().subcols_mut(0, np).copy_from(prev);
    let mut used = np;
    while max_col_norm(e.as_ref()) > 0.4 * tau {
        // a wider first block: one pass over G usually suffices for smooth spectra
        let b = if used == 0 {
            2 * SKETCH_BLOCK
        } else {
            SKETCH_BLOCK
        }
        .min(np + pmax - used);
        if b == 0 {
            return None;
        }
        let omega = Mat::<f64>::from_fn(tc, b, |j, c| sketch_entry(j, used + c));
        let mut y = Mat::<f64>::zeros(k, b);
        matmul(
            y.as_mut(),
            Accum::Replace,
            e.as_ref(),
            omega.as_ref(),
            1.0,
            par,
        );
        // Orthonormalize against the basis so far, twice (block Gram–Schmidt): once on the
        // sketch, and once more on its orthonormal basis, whose directions for tiny
        // singular values of the sketch are arbitrary and need not be orthogonal to it.
        let prev = q.as_ref().subcols(0, used);
        let reorth = |y: &mut Mat<f64>| {
            let mut c = Mat::<f64>::zeros(used, b);
            matmul(
                c.as_mut(),
                Accum::Replace,
                prev.transpose(),
                y.as_ref(),
                1.0,
                par,
            );
            matmul(y.as_mut(), Accum::Add, prev, c.as_ref(), -1.0, par);
        };
        reorth(&mut y);
        let mut qb = orthonormal_basis(&y);
        reorth(&mut qb);
        let qb = orthonormal_basis(&qb);
        let mut wb = Mat::<f64>::zeros(b, tc);
        matmul(
            wb.as_mut(),
            Accum::Replace,
            qb.transpose(),
            e.as_ref(),
            1.0,
            par,
        );
        matmul(e.as_mut(), Accum::Add, qb.as_ref(), wb.as_ref(), -1.0, par);
        q.as_mut().subcols_mut(used, b).copy_from(qb.as_ref());
        used += b;
    }
    drop(e);
    let qn = q.as_ref().subcols(np, used - np);
    let mut wq = Mat::<f64>::zeros(used - np, tc);
    matmul(
        wq.as_mut(),
        Accum::Replace,
        qn.transpose(),
        e0.as_ref(),
        1.0,
        par,
    );
    let qw = truncated_cpqr(&wq, 0.4 * tau);
    let mut u = Mat::<f64>::zeros(k, qw.ncols());
    matmul(u.as_mut(), Accum::Replace, qn, qw.as_ref(), 1.0, par);
    Some(u)
}

/// `W = Uᵀ G` and whether every column of `G` is within `τ` of `U W` (the a posteriori
/// check of docs/numerics.md §16), with the residual `G − U W`.
fn check_basis(u: MatRef<'_, f64>, g: &Mat<f64>, tau: f64, par: Par) -> (Mat<f64>, Mat<f64>, bool) {
    let mut w = Mat::<f64>::zeros(u.ncols(), g.ncols());
    matmul(
        w.as_mut(),
        Accum::Replace,
        u.transpose(),
        g.as_ref(),
        1.0,
        par,
    );
    let mut e = g.clone();
    matmul(e.as_mut(), Accum::Add, u, w.as_ref(), -1.0, par);
    let ok = max_col_norm(e.as_ref()) <= tau;
    (w, e, ok)
}

/// The low-rank factorization of the weighted factor table `G = diag(w)·F[:, cols]` with
/// every column's residual `≤ τ = tol_rel·ρ₁` (`ρ₁` the largest column norm of `G`),
/// or `None` when the rank would not be clearly below the number of times
/// (docs/numerics.md §16). Randomized range finder with a posteriori check: the returned
/// factorization has passed `max_t ‖G_t − U W_t‖₂ ≤ τ`, with `W = UᵀG`.
fn compress(
    factor: MatRef<'_, f64>,
    cols: &[usize],
    weight: &[f64],
    tol_rel: f64,
    par: Par,
) -> Option<LowRank> {
    let (k, tc) = (factor.nrows(), cols.len());
    if tc < COMPRESSION_MIN_TIMES || k == 0 {
        return None;
    }
    let max_rank = max_useful_rank(k, tc);
    if max_rank == 0 {
        return None;
    }
    let (g, tau) = weighted_table(factor, cols, weight, tol_rel)?;
    if tau == 0.0 {
        return Some(LowRank {
            u: Mat::zeros(k, 0),
            w: Mat::zeros(0, tc),
        });
    }
    let pmax = (max_rank + SKETCH_BLOCK).min(tc).min(k);
    let u = new_directions(g.clone(), Mat::<f64>::zeros(k, 0).as_ref(), tau, pmax, par)?;
    if u.ncols() > max_rank {
        return None;
    }
    let (w, _, ok) = check_basis(u.as_ref(), &g, tau, par);
    ok.then_some(LowRank { u, w })
}

// -- time bases kept across calls (docs/numerics.md §16, "Reuse") -------------------------

/// Largest rank a kept time basis grows to (its products are `rows·R × rank`).
pub const TIME_BASIS_MAX_RANK: usize = 128;

/// A compression basis kept across calls on one output basis (`V`, or a cached `K_te V`):
/// the `z` it was made for (the content key: a call with other coefficients does not use
/// it), its weights, the mode-space basis `U` (`k × r`, orthonormal) and the products
/// `B̂[i·R + rr, q] = (basis·diag(z_rr/w)·U)[i, q]` (`rows·R × r`), which a call whose
/// weighted factor table `U` represents within the bound turns into outputs with one
/// combination product, without any basis product.
pub struct TimeBasis<T> {
    z: Mat<T>,
    weight: Vec<f64>,
    u: Mat<f64>,
    bh: Mat<T>,
}

impl<T: Real> TimeBasis<T> {
    /// The rank `r` of the basis.
    #[must_use]
    pub fn rank(&self) -> usize {
        self.u.ncols()
    }

    /// Whether this basis was made for the coefficients `z` (bitwise).
    fn matches(&self, z: MatRef<'_, T>) -> bool {
        self.z.shape() == z.shape()
            && (0..z.ncols()).all(|c| (0..z.nrows()).all(|i| self.z[(i, c)] == z[(i, c)]))
    }
}

/// `B̂` for the mode-space columns `u`: `basis·(diag(z_rr/w)·u)`, rearranged so that a
/// time's block (`rows·R`, C order) is `B̂·W_t`.
fn basis_products<T: Real>(
    basis: Modes<'_, T>,
    z: MatRef<'_, T>,
    weight: &[f64],
    u: MatRef<'_, f64>,
    then: Option<MatRef<'_, T>>,
    par: Par,
) -> Mat<T> {
    let (k, nout, rank) = (basis.ncols(), z.ncols(), u.ncols());
    // Z̃[:, q·R + rr] = (z[:, rr] / w) ⊙ U[:, q]
    let zt = Mat::<T>::from_fn(k, rank * nout, |i, c| {
        let (q, rr) = (c / nout, c % nout);
        if weight[i] > 0.0 {
            T::from_f64(z[(i, rr)].to_f64() / weight[i] * u[(i, q)])
        } else {
            T::from_f64(0.0)
        }
    });
    let mut b = Mat::<T>::zeros(basis.nrows(), rank * nout);
    if k > 0 && rank > 0 {
        basis.times(b.as_mut(), zt.as_ref(), par);
    }
    let b = match then {
        Some(m) => {
            let mut d = Mat::<T>::zeros(m.nrows(), rank * nout);
            matmul(
                d.as_mut(),
                Accum::Replace,
                m,
                b.as_ref(),
                T::from_f64(1.0),
                par,
            );
            d
        }
        None => b,
    };
    let rows = b.nrows();
    Mat::<T>::from_fn(rows * nout, rank, |ir, q| {
        b[(ir / nout, q * nout + ir % nout)]
    })
}

/// A kept basis for this call: the one given if its `U` represents the call's table
/// (a hit), or that basis grown by the new directions the table needs (at most
/// [`max_useful_rank`] new ones, [`TIME_BASIS_MAX_RANK`] in all), or `None`. Returns the
/// basis, whether it is new (to be kept), and `W = UᵀG`.
#[allow(clippy::too_many_arguments)]
fn reuse_basis<T: Real>(
    kept: &TimeBasis<T>,
    basis: Modes<'_, T>,
    z: MatRef<'_, T>,
    factor: MatRef<'_, f64>,
    cols: &[usize],
    tol_rel: f64,
    par: Par,
) -> Option<(Option<TimeBasis<T>>, Mat<f64>)> {
    let (k, tc) = (factor.nrows(), cols.len());
    if !kept.matches(z) || kept.u.nrows() != k {
        return None;
    }
    let (g, tau) = weighted_table(factor, cols, &kept.weight, tol_rel)?;
    let (w, e, ok) = check_basis(kept.u.as_ref(), &g, tau, par);
    if ok {
        return Some((None, w));
    }
    let max_new = max_useful_rank(k, tc);
    let cap = TIME_BASIS_MAX_RANK.min(k / 2);
    if max_new == 0 || kept.rank() >= cap {
        return None;
    }
    let pmax = (max_new + SKETCH_BLOCK).min(tc).min(cap - kept.rank());
    let un = new_directions(e, kept.u.as_ref(), tau, pmax, par)?;
    if un.ncols() > max_new || kept.rank() + un.ncols() > cap {
        return None;
    }
    let r0 = kept.rank();
    let mut u = Mat::<f64>::zeros(k, r0 + un.ncols());
    u.as_mut().subcols_mut(0, r0).copy_from(kept.u.as_ref());
    u.as_mut()
        .subcols_mut(r0, un.ncols())
        .copy_from(un.as_ref());
    let (w, _, ok) = check_basis(u.as_ref(), &g, tau, par);
    if !ok {
        return None;
    }
    let bn = basis_products(basis, z, &kept.weight, un.as_ref(), None, par);
    let mut bh = Mat::<T>::zeros(kept.bh.nrows(), u.ncols());
    bh.as_mut().subcols_mut(0, r0).copy_from(kept.bh.as_ref());
    bh.as_mut()
        .subcols_mut(r0, un.ncols())
        .copy_from(bn.as_ref());
    let grown = TimeBasis {
        z: kept.z.clone(),
        weight: kept.weight.clone(),
        u,
        bh,
    };
    Some((Some(grown), w))
}

/// Rows of the sketch that estimates the column norms of `K_te·V` (uncached test outputs).
const NORM_SKETCH_ROWS: usize = 32;

/// `c_j`, the 2-norm of the output column of mode `j`: of `basis[:, j]` (`V`: 1; a cached
/// `K_te V`: exact), or of `(then·basis)[:, j]` estimated from a 32-row random sketch
/// `‖S·then·basis_j‖/√32` (`S` uniform with unit variance; forming `K_te V` would cost as
/// much as the outputs). Only weights: the a posteriori check does not depend on them.
fn output_column_norms<T: Real>(
    basis: Modes<'_, T>,
    then: Option<MatRef<'_, T>>,
    par: Par,
) -> Vec<f64> {
    let norms = |m: MatRef<'_, T>, scale: f64| -> Vec<f64> {
        (0..m.ncols())
            .map(|j| {
                let c = m.col(j);
                (0..m.nrows())
                    .map(|i| c[i].to_f64() * c[i].to_f64())
                    .sum::<f64>()
                    .sqrt()
                    * scale
            })
            .collect()
    };
    match (then, basis) {
        // Q is orthogonal: the columns of Q·Z_R have the norms of those of Z_R
        (None, Modes::Dense(v) | Modes::Factored(_, v)) => norms(v, 1.0),
        (Some(m), _) => {
            let s = NORM_SKETCH_ROWS;
            let sk = Mat::<T>::from_fn(s, m.nrows(), |i, j| {
                T::from_f64(3f64.sqrt() * sketch_entry(j, i + 1000))
            });
            let mut sm = Mat::<T>::zeros(s, m.ncols());
            matmul(
                sm.as_mut(),
                Accum::Replace,
                sk.as_ref(),
                m,
                T::from_f64(1.0),
                par,
            );
            let scale = 1.0 / (s as f64).sqrt();
            match basis {
                Modes::Dense(v) => {
                    let mut smb = Mat::<T>::zeros(s, v.ncols());
                    matmul(
                        smb.as_mut(),
                        Accum::Replace,
                        sm.as_ref(),
                        v,
                        T::from_f64(1.0),
                        par,
                    );
                    norms(smb.as_ref(), scale)
                }
                Modes::Factored(..) => norms(basis.t_times(sm.transpose(), par).transpose(), scale),
            }
        }
    }
}

/// The outputs at the compressed times `cols`: `out[t] = base + sign·B̂·W[:, t]` with
/// `B̂ = [then·]basis·(diag(z/w)·U)` from [`basis_products`]: each time's block is set to
/// the base, then one combination product per run of consecutive output times adds to it.
fn combine<T: Real>(
    side: Side,
    bh: MatRef<'_, T>,
    w: &Mat<f64>,
    cols: &[usize],
    base: MatRef<'_, T>,
    out: &mut [T],
    par: Par,
) {
    let (rows, nout) = base.shape();
    let block = rows * nout;
    if block == 0 || cols.is_empty() {
        return;
    }
    let rank = bh.ncols();
    let sign = side.sign();
    let wt = Mat::<T>::from_fn(rank, cols.len(), |q, j| T::from_f64(sign * w[(q, j)]));
    let flat = row_major(base);
    let mut j0 = 0;
    while j0 < cols.len() {
        let mut j1 = j0 + 1;
        while j1 < cols.len() && cols[j1] == cols[j1 - 1] + 1 {
            j1 += 1;
        }
        let t0 = cols[j0];
        let run = &mut out[t0 * block..(t0 + j1 - j0) * block];
        match par {
            Par::Seq => run.chunks_mut(block).for_each(|d| d.copy_from_slice(&flat)),
            Par::Rayon(_) => run
                .par_chunks_mut(block)
                .for_each(|d| d.copy_from_slice(&flat)),
        }
        if rank > 0 {
            let dst = MatMut::from_column_major_slice_mut(run, block, j1 - j0);
            matmul(
                dst,
                Accum::Add,
                bh,
                wt.as_ref().subcols(j0, j1 - j0),
                T::from_f64(1.0),
                par,
            );
        }
        j0 = j1;
    }
}

/// `base` in C order (`rows × R`, the layout of one time's output block).
fn row_major<T: Real>(base: MatRef<'_, T>) -> Vec<T> {
    let (rows, r) = base.shape();
    let mut flat = Vec::with_capacity(rows * r);
    for i in 0..rows {
        match base.row(i).try_as_row_major() {
            Some(row) => flat.extend_from_slice(row.as_slice()),
            None => flat.extend((0..r).map(|rr| base[(i, rr)])),
        }
    }
    flat
}

// -- the direct path ---------------------------------------------------------------------

/// Output columns per direct product (a few hundred: efficient GEMMs, bounded temporaries).
const DIRECT_COLS: usize = 512;

/// Smallest product width that keeps faer on its general GEMM kernel for an `m × k`
/// left factor: at least two columns (one column takes the matrix–vector kernel) and
/// `m·k·width` above faer's small-product threshold (16³, where it switches to another
/// kernel). Above both, faer computes each output column by the same operations whatever
/// the width and the column's position, and whatever the thread count (it partitions the
/// output, never the inner dimension); `reconstruction_columns_do_not_depend_on_width`
/// checks it.
fn min_width(m: usize, k: usize) -> usize {
    (4096 / (m * k).max(1) + 1).max(2)
}

/// `out[t] = base + sign · [then ·] basis · (factor(:, t) ⊙ z)` for the times `idx`.
/// Times go through the products in chunks of up to [`DIRECT_COLS`] columns; a chunk is
/// padded with zero columns only up to [`min_width`] (tiny problems), so a time's outputs
/// are the same bits whatever the other times of the call (docs/numerics.md §3.1).
#[allow(clippy::too_many_arguments)]
fn direct_outputs<T: Real>(
    side: Side,
    basis: Modes<'_, T>,
    z: MatRef<'_, T>,
    factor: MatRef<'_, f64>,
    base: MatRef<'_, T>,
    out: &mut [T],
    then: Option<MatRef<'_, T>>,
    idx: &[usize],
    par: Par,
) {
    let (k, r) = (basis.ncols(), z.ncols());
    let rows = base.nrows();
    let block = rows * r;
    if idx.is_empty() || block == 0 {
        return;
    }
    let sign = side.sign();
    let mut wmin = min_width(basis.nrows(), k);
    if let Some(m) = then {
        wmin = wmin.max(min_width(m.nrows(), m.ncols()));
    }
    let chunk = (DIRECT_COLS / r).max(1).min(idx.len());
    let wmax = (chunk * r).max(wmin);
    let mut w = Mat::<T>::zeros(k, wmax);
    let mut c = Mat::<T>::zeros(basis.nrows(), wmax);
    let mut d = then.map(|m| Mat::<T>::zeros(m.nrows(), wmax));
    let mut staged: Vec<&mut [T]> = Vec::new();
    let mut blocks: Vec<Option<&mut [T]>> = out.chunks_mut(block).map(Some).collect();
    let flat = row_major(base);
    let mut fbuf: Vec<f64> = Vec::with_capacity(k);
    for times in idx.chunks(chunk) {
        let tc = times.len();
        let width = (tc * r).max(wmin);
        for (tt, &t) in times.iter().enumerate() {
            let fcol = factor.col(t);
            fbuf.clear();
            fbuf.extend(fcol.iter().map(|&x| sign * x));
            for rr in 0..r {
                let col = w.as_mut().col_mut(tt * r + rr).try_as_col_major_mut();
                let col = col.expect("contiguous column").as_slice_mut();
                let zc = z.col(rr);
                for (i, (x, &fi)) in col.iter_mut().zip(&fbuf).enumerate() {
                    *x = T::from_f64(fi * zc[i].to_f64());
                }
            }
        }
        // padding columns (tiny problems only) are zero
        w.as_mut()
            .subcols_mut(tc * r, width - tc * r)
            .fill(T::from_f64(0.0));
        if k > 0 {
            basis.times(
                c.as_mut().subcols_mut(0, width),
                w.as_ref().subcols(0, width),
                par,
            );
        } else {
            c.as_mut().subcols_mut(0, width).fill(T::from_f64(0.0));
        }
        if let (Some(m), Some(d)) = (then, d.as_mut()) {
            matmul(
                d.as_mut().subcols_mut(0, width),
                Accum::Replace,
                m,
                c.as_ref().subcols(0, width),
                T::from_f64(1.0),
                par,
            );
        }
        let cm = d.as_ref().map_or(c.as_ref(), Mat::as_ref);
        staged.clear();
        for &t in times {
            staged.push(blocks[t].take().expect("each time once"));
        }
        // out[t] (rows × R, C order) = base + the time's R columns of cm: the base block
        // copied, then each contiguous column added along its stride (a sum of two `T`s is
        // the correctly rounded sum, in either order)
        #[allow(clippy::mut_mut)]
        let scatter = |(tt, dst): (usize, &mut &mut [T])| {
            dst.copy_from_slice(&flat);
            for rr in 0..r {
                let col = cm.col(tt * r + rr).try_as_col_major();
                let col = col.expect("contiguous column").as_slice();
                for (d, &x) in dst[rr..].iter_mut().step_by(r).zip(col) {
                    *d += x;
                }
            }
        };
        match par {
            Par::Seq => staged.iter_mut().enumerate().for_each(scatter),
            Par::Rayon(_) => staged.par_iter_mut().enumerate().for_each(scatter),
        }
    }
}

/// `out[t] = base + sign · [then ·] basis · (factor(:, t) ⊙ z)` for all `t`, `out` C-ordered
/// `(T, rows, R)` with `rows` those of `then` if given, else of `basis`. With `compress`
/// (the time indices that may be compressed: finite and nonzero), the time axis is
/// compressed when that pays (docs/numerics.md §16); every other time, and every time
/// without `compress`, takes the direct path. Without `then`, a `kept` basis made for `z`
/// is reused (and grown) when it represents the table; a new basis is returned to be kept
/// with `keep_new` (docs/numerics.md §16, "Reuse").
#[allow(clippy::too_many_arguments)]
fn reconstruct<T: Real>(
    side: Side,
    basis: Modes<'_, T>,
    z: MatRef<'_, T>,
    factor: MatRef<'_, f64>,
    base: MatRef<'_, T>,
    out: &mut [T],
    then: Option<MatRef<'_, T>>,
    compress_cols: Option<Vec<usize>>,
    kept: Option<&TimeBasis<T>>,
    keep_new: bool,
    par: Par,
) -> Result<Option<TimeBasis<T>>> {
    let (k, r, nt) = (basis.ncols(), z.ncols(), factor.ncols());
    let rows = then.map_or(basis.nrows(), |m| m.nrows());
    if z.nrows() != k || factor.nrows() != k {
        return Err(Error::DimensionMismatch {
            what: "modes of z / factors",
            expected: Shape::Rows(k),
            got: if z.nrows() == k {
                Shape::Matrix(factor.nrows(), factor.ncols())
            } else {
                Shape::Matrix(z.nrows(), z.ncols())
            },
        });
    }
    if let Some(m) = then {
        if m.ncols() != basis.nrows() {
            return Err(Error::DimensionMismatch {
                what: "k_test_train columns",
                expected: Shape::Cols(basis.nrows()),
                got: Shape::Matrix(m.nrows(), m.ncols()),
            });
        }
    }
    if base.nrows() != rows || base.ncols() != r {
        return Err(Error::DimensionMismatch {
            what: "initial outputs",
            expected: Shape::Matrix(rows, r),
            got: Shape::Matrix(base.nrows(), base.ncols()),
        });
    }
    if out.len() != nt * rows * r {
        return Err(Error::DimensionMismatch {
            what: "output buffer",
            expected: Shape::Len(nt * rows * r),
            got: Shape::Len(out.len()),
        });
    }
    if out.is_empty() {
        return Ok(None);
    }
    // only worth the weights and the sketch with enough times (compress checks it again)
    let eligible = |cols: &Vec<usize>| {
        cols.len() >= COMPRESSION_MIN_TIMES && max_useful_rank(k, cols.len()) > 0
    };
    let Some(cols) = compress_cols.filter(eligible) else {
        let idx: Vec<usize> = (0..nt).collect();
        direct_outputs(side, basis, z, factor, base, out, then, &idx, par);
        return Ok(None);
    };
    let tol = COMPRESSION_TOL_EPS * T::EPS;
    // a kept basis (same z, no `then`): its products are reused, grown when needed
    let reused = match (kept, then) {
        (Some(kb), None) => reuse_basis(kb, basis, z, factor, &cols, tol, par),
        _ => None,
    };
    let (w, keep, own) = if let Some((grown, w)) = reused {
        LAST_REUSE[side.index()].store(if grown.is_some() { 2 } else { 1 }, Ordering::SeqCst);
        (w, grown, None)
    } else {
        // w_j = c_j·max_rr |z_j,rr|, c_j the norm of mode j's output column (docs/numerics.md
        // §16): the weight that makes the table's error the outputs' error; the train basis
        // V has orthonormal columns (c = 1)
        let c = match side {
            Side::Train => vec![1.0; k],
            Side::Test => output_column_norms(basis, then, par),
        };
        let weight: Vec<f64> = (0..k)
            .map(|i| {
                c[i] * (0..r)
                    .map(|rr| z[(i, rr)].to_f64().abs())
                    .fold(0.0, f64::max)
            })
            .collect();
        let Some(lr) = compress(factor, &cols, &weight, tol, par) else {
            let idx: Vec<usize> = (0..nt).collect();
            direct_outputs(side, basis, z, factor, base, out, then, &idx, par);
            return Ok(None);
        };
        let bh = basis_products(basis, z, &weight, lr.u.as_ref(), then, par);
        if keep_new && then.is_none() {
            let kb = TimeBasis {
                z: z.to_owned(),
                weight,
                u: lr.u,
                bh,
            };
            (lr.w, Some(kb), None)
        } else {
            (lr.w, None, Some(bh))
        }
    };
    let bh_ref = match (own.as_ref(), keep.as_ref(), kept) {
        (Some(bh), _, _) => bh.as_ref(),
        (None, Some(kb), _) | (None, None, Some(kb)) => kb.bh.as_ref(),
        (None, None, None) => unreachable!("a reused basis is a kept one"),
    };
    LAST_RANK[side.index()].store(bh_ref.ncols() as i64, Ordering::SeqCst);
    combine(side, bh_ref, &w, &cols, base, out, par);
    let mut done = vec![false; nt];
    for &t in &cols {
        done[t] = true;
    }
    let idx: Vec<usize> = (0..nt).filter(|&t| !done[t]).collect();
    direct_outputs(side, basis, z, factor, base, out, then, &idx, par);
    Ok(keep)
}

/// Train outputs at every time: `out[t] = f₀ + V_R (em1(:, t) ⊙ z)`, `out` of length
/// `T·N·R` in C order `(T, N, R)`.
pub fn train_outputs<T: Real>(
    v: MatRef<'_, T>,
    z: MatRef<'_, T>,
    em1: MatRef<'_, f64>,
    f0: MatRef<'_, T>,
    out: &mut [T],
    par: Par,
) -> Result<()> {
    train_outputs_with(v, z, em1, f0, out, None, par)
}

/// [`train_outputs`], compressing the times `compress` when that pays (docs/numerics.md §16).
pub(crate) fn train_outputs_with<T: Real>(
    v: MatRef<'_, T>,
    z: MatRef<'_, T>,
    em1: MatRef<'_, f64>,
    f0: MatRef<'_, T>,
    out: &mut [T],
    compress: Option<Vec<usize>>,
    par: Par,
) -> Result<()> {
    train_outputs_kept(Modes::Dense(v), z, em1, f0, out, compress, None, false, par).map(|_| ())
}

/// [`train_outputs_with`] with a kept time basis on `V` (docs/numerics.md §16, "Reuse"):
/// `kept` is used when it was made for `z` and represents this call's table (grown when
/// that pays); returns the basis to keep from now on (new or grown), if any (a new one only
/// with `keep_new`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn train_outputs_kept<T: Real>(
    v: Modes<'_, T>,
    z: MatRef<'_, T>,
    em1: MatRef<'_, f64>,
    f0: MatRef<'_, T>,
    out: &mut [T],
    compress: Option<Vec<usize>>,
    kept: Option<&TimeBasis<T>>,
    keep_new: bool,
    par: Par,
) -> Result<Option<TimeBasis<T>>> {
    reconstruct(
        Side::Train,
        v,
        z,
        em1,
        f0,
        out,
        None,
        compress,
        kept,
        keep_new,
        par,
    )
}

/// Test outputs from a cached `K_te V_R` (`M × k`): `out[t] = g₀ − KV (phi(:, t) ⊙ z)`.
pub fn test_outputs_cached<T: Real>(
    kv: MatRef<'_, T>,
    z: MatRef<'_, T>,
    phi: MatRef<'_, f64>,
    g0: MatRef<'_, T>,
    out: &mut [T],
    par: Par,
) -> Result<()> {
    test_outputs_cached_with(kv, z, phi, g0, out, None, par)
}

/// [`test_outputs_cached`], compressing the times `compress` when that pays.
pub(crate) fn test_outputs_cached_with<T: Real>(
    kv: MatRef<'_, T>,
    z: MatRef<'_, T>,
    phi: MatRef<'_, f64>,
    g0: MatRef<'_, T>,
    out: &mut [T],
    compress: Option<Vec<usize>>,
    par: Par,
) -> Result<()> {
    test_outputs_cached_kept(kv, z, phi, g0, out, compress, None, false, par).map(|_| ())
}

/// [`test_outputs_cached_with`] with a kept time basis on `K_te V` (as
/// [`train_outputs_kept`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn test_outputs_cached_kept<T: Real>(
    kv: MatRef<'_, T>,
    z: MatRef<'_, T>,
    phi: MatRef<'_, f64>,
    g0: MatRef<'_, T>,
    out: &mut [T],
    compress: Option<Vec<usize>>,
    kept: Option<&TimeBasis<T>>,
    keep_new: bool,
    par: Par,
) -> Result<Option<TimeBasis<T>>> {
    reconstruct(
        Side::Test,
        Modes::Dense(kv),
        z,
        phi,
        g0,
        out,
        None,
        compress,
        kept,
        keep_new,
        par,
    )
}

/// Test outputs without a cache: `out[t] = g₀ − K_te·(V_R (phi(:, t) ⊙ z))`.
///
/// One multiplication order for every call (docs/numerics.md §3.1): the order must not
/// depend on the number of times `T`, or `t=None`, `t=inf` and an `inf` inside an array of
/// times would round differently (on an ill-conditioned kernel visibly so: the result is
/// accurate to about `cond(A)·ε`, and each order has its own rounding). This order is the
/// one of the Cholesky path (`K_te·x`) and costs `2(Nk + MN)·R` per time; the other,
/// `(K_te V_R)·W`, pays off only over many times and is what a cached test set
/// ([`test_outputs_cached`]) does.
pub fn test_outputs<T: Real>(
    kte: MatRef<'_, T>,
    v: MatRef<'_, T>,
    z: MatRef<'_, T>,
    phi: MatRef<'_, f64>,
    g0: MatRef<'_, T>,
    out: &mut [T],
    par: Par,
) -> Result<()> {
    test_outputs_with(kte, Modes::Dense(v), z, phi, g0, out, None, par)
}

/// [`test_outputs`], compressing the times `compress` when that pays.
#[allow(clippy::too_many_arguments)]
pub(crate) fn test_outputs_with<T: Real>(
    kte: MatRef<'_, T>,
    v: Modes<'_, T>,
    z: MatRef<'_, T>,
    phi: MatRef<'_, f64>,
    g0: MatRef<'_, T>,
    out: &mut [T],
    compress: Option<Vec<usize>>,
    par: Par,
) -> Result<()> {
    if g0.nrows() != kte.nrows() || g0.ncols() != z.ncols() {
        return Err(Error::DimensionMismatch {
            what: "initial test outputs",
            expected: Shape::Matrix(kte.nrows(), z.ncols()),
            got: Shape::Matrix(g0.nrows(), g0.ncols()),
        });
    }
    if z.nrows() != v.ncols() || phi.nrows() != v.ncols() {
        return Err(Error::DimensionMismatch {
            what: "modes of z / factors",
            expected: Shape::Rows(v.ncols()),
            got: if z.nrows() == v.ncols() {
                Shape::Matrix(phi.nrows(), phi.ncols())
            } else {
                Shape::Matrix(z.nrows(), z.ncols())
            },
        });
    }
    if kte.ncols() != v.nrows() {
        return Err(Error::DimensionMismatch {
            what: "k_test_train columns",
            expected: Shape::Cols(v.nrows()),
            got: Shape::Matrix(kte.nrows(), kte.ncols()),
        });
    }
    // y = V_R (phi ⊙ z) for a chunk of times at once, then K_te · y in one product.
    reconstruct(
        Side::Test,
        v,
        z,
        phi,
        g0,
        out,
        Some(kte),
        compress,
        None,
        false,
        par,
    )
    .map(|_| ())
}

/// Validates retained eigenvalues (used by the bindings before any reconstruction).
pub fn check_retained(mu: &[f64]) -> Result<()> {
    check_mu(mu)
}

/// The time indices a closed form may compress: finite and nonzero (`t = 0` and `t = ∞`
/// always take the direct path, so their identities hold bit for bit; docs/numerics.md §16).
/// `None` when compression is switched off ([`set_time_compression`]).
#[must_use]
pub fn compressible_times(times: &[f64]) -> Option<Vec<usize>> {
    if !time_compression() {
        return None;
    }
    Some(
        (0..times.len())
            .filter(|&j| times[j] > 0.0 && times[j].is_finite())
            .collect(),
    )
}

/// Relative size of the neglected tail of a training-loss sum (`2^-60`).
const LOSS_TAIL: f64 = 8.673_617_379_884_035e-19;

/// `Σ_j zz_j · e_j(t)²` for every time (`e_j` the decay of mode `mu[j]`,
/// [`Dynamics::decay`]): the retained part of `2n·` the MSE training loss from the squared
/// projected residual `zz_j = Σ_r z_jr²`, in O(k·T) without any `N` (docs/numerics.md §16).
/// Each time's sum runs over the modes in order on one thread, so the result does not
/// depend on the thread count; under gradient flow over ascending modes it stops once the
/// terms left are provably below `2^-60` of it (`e_j` decreases with `μ_j`).
pub fn loss_sums(
    dynamics: &Dynamics,
    mu: &[f64],
    times: &[f64],
    zz: &[f64],
    par: Par,
) -> Result<Vec<f64>> {
    check_mu(mu)?;
    check_times(times)?;
    if zz.len() != mu.len() {
        return Err(Error::DimensionMismatch {
            what: "squared coefficients",
            expected: Shape::Len(mu.len()),
            got: Shape::Len(zz.len()),
        });
    }
    // Under gradient flow e_j decreases with μ_j: over ascending modes the terms left after
    // mode j are at most e_j²·Σ_{i>j} zz_i, and the sum stops once that is below 2^-60 of it.
    let monotone = matches!(dynamics, Dynamics::Flow { .. }) && mu.windows(2).all(|p| p[0] <= p[1]);
    let mut rest = vec![0.0; zz.len() + 1];
    for j in (0..zz.len()).rev() {
        rest[j] = rest[j + 1] + zz[j];
    }
    let one = |t: f64| -> f64 {
        if let (Dynamics::Flow { scale }, true) = (dynamics, t > 0.0 && t.is_finite()) {
            return flow_loss_sum(mu, zz, &rest, scale * t, monotone);
        }
        let mut acc = 0.0;
        for (j, (&m, &c)) in mu.iter().zip(zz).enumerate() {
            let e = dynamics.decay(m, t);
            let e2 = e * e;
            acc += c * e2;
            if monotone && e2 * rest[j + 1] <= acc * LOSS_TAIL {
                break;
            }
        }
        acc
    };
    let mut out = vec![0.0; times.len()];
    let work = |(o, &t): (&mut f64, &f64)| {
        crate::simd::clear_upper_vector_state();
        *o = one(t);
    };
    match par {
        Par::Seq => out.iter_mut().zip(times).for_each(work),
        Par::Rayon(_) => out.par_iter_mut().zip(times).for_each(work),
    }
    Ok(out)
}

/// Modes per block of [`flow_loss_sum`]: the exponentials of a block are one vectorized
/// pass, and the stopping test runs once per block.
const LOSS_BLOCK: usize = 64;

/// `Σ_j zz_j·exp(−2μ_j s)` under gradient flow at scaled time `s` (finite, > 0): the
/// exponentials block by block through [`crate::simd::exp_slice`] (`e_j² = exp(−2μ_j s)`
/// directly), summed in four interleaved partial sums (a fixed order: the same bits for
/// every thread count); with `monotone` (ascending `μ`) it stops after the first block whose
/// last term bounds the rest below `2^-60` of the sum (`rest[j]` = `Σ_{i≥j} zz_i`).
fn flow_loss_sum(mu: &[f64], zz: &[f64], rest: &[f64], s: f64, monotone: bool) -> f64 {
    let mut x = [0.0; LOSS_BLOCK];
    let mut e2 = [0.0; LOSS_BLOCK];
    let mut acc = [0.0; 4];
    let mut j0 = 0;
    while j0 < mu.len() {
        let b = LOSS_BLOCK.min(mu.len() - j0);
        for (xi, &m) in x[..b].iter_mut().zip(&mu[j0..j0 + b]) {
            *xi = -2.0 * (m * s);
        }
        crate::simd::exp_slice(&x[..b], &mut e2[..b]);
        for (i, (&e, &c)) in e2[..b].iter().zip(&zz[j0..j0 + b]).enumerate() {
            acc[i % 4] += c * e;
        }
        j0 += b;
        let total = (acc[0] + acc[1]) + (acc[2] + acc[3]);
        if monotone && e2[b - 1] * rest[j0] <= total * LOSS_TAIL {
            break;
        }
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spectral::{sym_eigh, tests::with_spectrum};

    #[test]
    fn flow_factors_limits_and_series() {
        assert_eq!(Dynamics::Flow { scale: 1.0 }.factors(2.0, 0.0), (0.0, 0.0));
        assert_eq!(
            Dynamics::Flow { scale: 1.0 }.factors(2.0, f64::INFINITY),
            (-1.0, 0.5)
        );
        let (em1, phi) = flow_factors(1e-20, 3.0);
        assert!((em1 + 3e-20).abs() < 1e-35);
        assert!((phi - 3.0).abs() < 1e-15);
        // across the series threshold the two branches agree
        let (_, a) = flow_factors(1.0, 0.999_999e-8);
        let (_, b) = flow_factors(1.0, 1.000_001e-8);
        assert!((a - b).abs() < 3e-14 * 1e-8 + 1e-22 + 2.1e-14, "{a} {b}");
        let (em1, phi) = flow_factors(0.7, 2.0);
        assert!((em1 - ((-1.4f64).exp() - 1.0)).abs() < 1e-16);
        assert!((phi - (1.0 - (-1.4f64).exp()) / 0.7).abs() < 1e-15);
    }

    #[test]
    fn step_factors_match_powers() {
        for &(mu, a, t) in &[
            (0.3, 1.0, 5.0),
            (1.5, 1.0, 3.0),
            (2.5, 1.0, 4.0),
            (1e-9, 0.1, 100.0),
        ] {
            let e = (1.0f64 - a * mu).powi(t as i32);
            let (em1, phi) = step_factors(mu, a, t);
            assert!(
                (em1 - (e - 1.0)).abs() < 1e-13 * e.abs().max(1.0),
                "{mu} {em1} {e}"
            );
            let want = if a * mu < 1e-6 { a * t } else { (1.0 - e) / mu };
            assert!((phi - want).abs() < 1e-6 * want.abs(), "{phi} {want}");
        }
    }

    #[test]
    fn reconstruction_matches_dense_formula() {
        let lams: Vec<f64> = (0..40).map(|i| 0.05 + f64::from(i) * 0.1).collect();
        let k = with_spectrum(&lams);
        let n = lams.len();
        let mut w = vec![0.0; n];
        let mut v = Mat::<f64>::zeros(n, n);
        sym_eigh(k.as_ref(), 0.0, &mut w, v.as_mut(), Par::Seq).unwrap();
        let r = 3;
        let y = Mat::<f64>::from_fn(n, r, |i, j| ((i * 3 + j) as f64).cos());
        let f0 = Mat::<f64>::from_fn(n, r, |i, j| 0.1 * ((i + 5 * j) as f64).sin());
        let kte = Mat::<f64>::from_fn(7, n, |i, j| ((i * n + j) as f64 * 0.37).sin());
        let g0 = Mat::<f64>::from_fn(7, r, |i, j| (i + j) as f64 * 0.01);
        let times = [0.0, 0.5, 3.0, f64::INFINITY];
        let dynm = Dynamics::Flow { scale: 0.9 };
        let mut em1 = Mat::<f64>::zeros(n, times.len());
        let mut phi = Mat::<f64>::zeros(n, times.len());
        mode_factors(&dynm, &w, &times, em1.as_mut(), phi.as_mut()).unwrap();
        let z = project(v.as_ref(), (&f0 - &y).as_ref(), Par::Seq).unwrap();
        let mut tr = vec![0.0; times.len() * n * r];
        train_outputs(
            v.as_ref(),
            z.as_ref(),
            em1.as_ref(),
            f0.as_ref(),
            &mut tr,
            Par::rayon(2),
        )
        .unwrap();
        let mut te1 = vec![0.0; times.len() * 7 * r];
        let mut te2 = te1.clone();
        test_outputs(
            kte.as_ref(),
            v.as_ref(),
            z.as_ref(),
            phi.as_ref(),
            g0.as_ref(),
            &mut te1,
            Par::Seq,
        )
        .unwrap();
        let kv = test_basis(kte.as_ref(), v.as_ref(), Par::Seq).unwrap();
        test_outputs_cached(
            kv.as_ref(),
            z.as_ref(),
            phi.as_ref(),
            g0.as_ref(),
            &mut te2,
            Par::Seq,
        )
        .unwrap();
        for (ti, &t) in times.iter().enumerate() {
            // dense: f = Y + V e V^T r0 ; g = g0 + Kte V diag(phi) V^T (Y - f0)
            let s = 0.9 * t;
            let e = Mat::<f64>::from_fn(n, n, |i, j| {
                if i == j {
                    if t.is_infinite() {
                        0.0
                    } else {
                        (-w[i] * s).exp()
                    }
                } else {
                    0.0
                }
            });
            let p = Mat::<f64>::from_fn(n, n, |i, j| {
                if i == j {
                    if t.is_infinite() {
                        1.0 / w[i]
                    } else {
                        (1.0 - (-w[i] * s).exp()) / w[i]
                    }
                } else {
                    0.0
                }
            });
            let f = &y + &v * &e * v.transpose() * (&f0 - &y);
            let g = &g0 + &kte * &v * &p * v.transpose() * (&y - &f0);
            for i in 0..n {
                for j in 0..r {
                    assert!((tr[ti * n * r + i * r + j] - f[(i, j)]).abs() < 1e-12);
                }
            }
            for i in 0..7 {
                for j in 0..r {
                    assert!((te1[ti * 7 * r + i * r + j] - g[(i, j)]).abs() < 1e-11);
                    assert!((te2[ti * 7 * r + i * r + j] - g[(i, j)]).abs() < 1e-11);
                }
            }
        }
        // t = 0 is exact
        for i in 0..n {
            for j in 0..r {
                assert_eq!(tr[i * r + j], f0[(i, j)]);
            }
        }
    }

    /// Deterministic pseudo-random matrix entries in [-1, 1).
    fn rand_mat(m: usize, n: usize, seed: usize) -> Mat<f64> {
        Mat::<f64>::from_fn(m, n, |i, j| sketch_entry(i + 7919 * seed, j))
    }

    #[test]
    fn reconstruction_columns_do_not_depend_on_width() {
        // The direct path's claim (min_width): a time's outputs are the same bits whatever
        // the other times of the call and the thread count.
        for &(n, k, r) in &[
            (3, 2, 1),
            (20, 20, 3),
            (37, 11, 2),
            (300, 250, 10),
            (64, 64, 1),
        ] {
            let v = rand_mat(n, k, 1);
            let z = rand_mat(k, r, 2);
            let f0 = rand_mat(n, r, 3);
            let kte = rand_mat(5, n, 4);
            let g0 = rand_mat(5, r, 5);
            let nt = 700 / r + 3;
            let fac = Mat::<f64>::from_fn(k, nt, |i, j| sketch_entry(i, j + 11));
            let mut all = vec![0.0; nt * n * r];
            train_outputs(
                v.as_ref(),
                z.as_ref(),
                fac.as_ref(),
                f0.as_ref(),
                &mut all,
                Par::Seq,
            )
            .unwrap();
            let mut all_te = vec![0.0; nt * 5 * r];
            test_outputs(
                kte.as_ref(),
                v.as_ref(),
                z.as_ref(),
                fac.as_ref(),
                g0.as_ref(),
                &mut all_te,
                Par::rayon(2),
            )
            .unwrap();
            for &(j0, len) in &[(0, 1), (5, 1), (3, 2), (10, 17), (nt - 9, 9), (1, nt - 1)] {
                for par in [Par::Seq, Par::rayon(2), Par::rayon(3)] {
                    let sub = fac.as_ref().subcols(j0, len);
                    let mut part = vec![0.0; len * n * r];
                    train_outputs(v.as_ref(), z.as_ref(), sub, f0.as_ref(), &mut part, par)
                        .unwrap();
                    assert_eq!(part, all[j0 * n * r..(j0 + len) * n * r], "{n} {k} {r}");
                    let mut part_te = vec![0.0; len * 5 * r];
                    test_outputs(
                        kte.as_ref(),
                        v.as_ref(),
                        z.as_ref(),
                        sub,
                        g0.as_ref(),
                        &mut part_te,
                        par,
                    )
                    .unwrap();
                    assert_eq!(part_te, all_te[j0 * 5 * r..(j0 + len) * 5 * r]);
                }
            }
        }
    }

    /// `V = Q·Z` unformed (docs/numerics.md §17): forming it gives the eigenvectors of
    /// `sym_eigh_scaled` bitwise, and every product with the factored form agrees with the
    /// formed one to rounding; a time's outputs do not depend on the other times of the
    /// call or on the thread count.
    #[test]
    fn factored_modes_match_the_formed_eigenvectors() {
        use crate::spectral::{sym_eigh_factored, sym_eigh_scaled};
        for &(n, first, r, par) in &[
            (200, 10, 3, Par::rayon(2)),
            (90, 0, 2, Par::Seq),
            (2, 0, 1, Par::Seq),
        ] {
            let x = rand_mat(n, n, 9);
            let a = &x * x.transpose() + Mat::<f64>::identity(n, n) * 1e-3;
            let (mut w, mut wz) = (vec![0.0; n], vec![0.0; n]);
            let mut v = Mat::<f64>::zeros(n, n);
            let mut z = Mat::<f64>::zeros(n, n);
            let e0 = sym_eigh_scaled(a.as_ref(), 0.0, &mut w, v.as_mut(), par).unwrap();
            let (e, q) = sym_eigh_factored(a.as_ref(), 0.0, &mut wz, z.as_mut(), par).unwrap();
            assert_eq!((e, &w), (e0, &wz));
            let mut formed = z.clone();
            q.apply(formed.as_mut(), par);
            assert_eq!(formed, v, "n = {n}");
            // Qᵀ Q x = x
            let y = rand_mat(n, 5, 3);
            let mut qy = y.clone();
            q.apply(qy.as_mut(), par);
            q.apply_transpose(qy.as_mut(), par);
            assert!((&qy - &y).norm_max() <= 1e-13 * y.norm_max() * n as f64);

            let k = n - first;
            let (vr, zr) = (v.as_ref().subcols(first, k), z.as_ref().subcols(first, k));
            let (dense, fact) = (Modes::Dense(vr), Modes::Factored(&q, zr));
            let res = rand_mat(n, r, 4);
            let za = project_modes(dense, res.as_ref(), par).unwrap();
            let zb = project_modes(fact, res.as_ref(), par).unwrap();
            assert!((&za - &zb).norm_max() <= 1e-13 * res.norm_max() * n as f64);
            let f0 = rand_mat(n, r, 5);
            let (m, kte) = (7, rand_mat(7, n, 6));
            let g0 = rand_mat(m, r, 7);
            let mu: Vec<f64> = w[first..].iter().map(|x| x.max(1e-3)).collect();
            // 3 times take the direct path, 120 log-spaced ones the compressed one
            let few = vec![0.0, 0.7, f64::INFINITY];
            let many: Vec<f64> = (0..120)
                .map(|i| 10f64.powf(-2.0 + 6.0 * f64::from(i) / 119.0))
                .collect();
            for times in [few, many] {
                let nt = times.len();
                let mut em1 = Mat::<f64>::zeros(k, nt);
                let mut phi = Mat::<f64>::zeros(k, nt);
                let dynm = Dynamics::Flow { scale: 0.3 };
                mode_factors(&dynm, &mu, &times, em1.as_mut(), phi.as_mut()).unwrap();
                let cols = compressible_times(&times);
                let run = |modes: Modes<'_, f64>| {
                    let mut tr = vec![0.0; nt * n * r];
                    let mut te = vec![0.0; nt * m * r];
                    let zz = za.as_ref();
                    train_outputs_kept(
                        modes,
                        zz,
                        em1.as_ref(),
                        f0.as_ref(),
                        &mut tr,
                        cols.clone(),
                        None,
                        false,
                        par,
                    )
                    .unwrap();
                    test_outputs_with(
                        kte.as_ref(),
                        modes,
                        zz,
                        phi.as_ref(),
                        g0.as_ref(),
                        &mut te,
                        cols.clone(),
                        par,
                    )
                    .unwrap();
                    (tr, te)
                };
                let ((tra, tea), (trb, teb)) = (run(dense), run(fact));
                let close = |a: &[f64], b: &[f64]| {
                    let scale = a.iter().fold(1.0f64, |s, x| s.max(x.abs()));
                    a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-12 * scale)
                };
                assert!(close(&tra, &trb), "train, n = {n}, T = {nt}");
                assert!(close(&tea, &teb), "test, n = {n}, T = {nt}");
                if times[0] == 0.0 {
                    // t = 0 is f0 exactly on both forms
                    assert_eq!(tra[..n * r], trb[..n * r]);
                }
            }
            // direct path: a time's bits do not depend on the other times or the threads
            let nt = 40;
            let fac = Mat::<f64>::from_fn(k, nt, |i, j| sketch_entry(i, j + 11));
            let zz = rand_mat(k, r, 8);
            let mut all = vec![0.0; nt * n * r];
            train_outputs_kept(
                fact,
                zz.as_ref(),
                fac.as_ref(),
                f0.as_ref(),
                &mut all,
                None,
                None,
                false,
                Par::Seq,
            )
            .unwrap();
            for &(j0, len) in &[(0, 1), (5, 1), (3, 2), (10, 17)] {
                for p in [Par::Seq, Par::rayon(2), Par::rayon(3)] {
                    let sub = fac.as_ref().subcols(j0, len);
                    let mut part = vec![0.0; len * n * r];
                    train_outputs_kept(
                        fact,
                        zz.as_ref(),
                        sub,
                        f0.as_ref(),
                        &mut part,
                        None,
                        None,
                        false,
                        p,
                    )
                    .unwrap();
                    assert_eq!(part, all[j0 * n * r..(j0 + len) * n * r], "n = {n}");
                }
            }
        }
    }

    /// Eigenvalues spread over `decades`, orthonormal eigenvectors from a QR.
    fn spectrum_problem(n: usize, decades: f64) -> (Vec<f64>, Mat<f64>) {
        let mu: Vec<f64> = (0..n)
            .map(|i| 10f64.powf(-decades * (1.0 - i as f64 / (n - 1) as f64)))
            .collect();
        let v = orthonormal_basis(&rand_mat(n, n, 9));
        (mu, v)
    }

    #[test]
    fn compression_is_low_rank_and_within_its_bound() {
        let n = 500;
        for &decades in &[2.0, 16.0] {
            let (mu, v) = spectrum_problem(n, decades);
            let r = 3;
            let res = rand_mat(n, r, 12);
            let f0 = rand_mat(n, r, 13);
            let kte = rand_mat(9, n, 14);
            let g0 = rand_mat(9, r, 15);
            let mut times: Vec<f64> = (0..1000)
                .map(|j| 10f64.powf(-1.0 + 8.0 * f64::from(j) / 999.0))
                .collect();
            times.insert(0, 0.0);
            times.insert(100, f64::INFINITY);
            let nt = times.len();
            for dynm in [
                Dynamics::Flow { scale: 1.0 },
                Dynamics::momentum(0.5, 0.9, n as f64).unwrap(),
            ] {
                let mut em1 = Mat::<f64>::zeros(n, nt);
                let mut phi = Mat::<f64>::zeros(n, nt);
                mode_factors(&dynm, &mu, &times, em1.as_mut(), phi.as_mut()).unwrap();
                let z = project(v.as_ref(), res.as_ref(), Par::Seq).unwrap();
                let weight: Vec<f64> = (0..n)
                    .map(|i| (0..r).map(|c| z[(i, c)].abs()).fold(0.0, f64::max))
                    .collect();
                let cols = compressible_times(&times).unwrap();
                assert_eq!(cols.len(), nt - 2);
                let tol = COMPRESSION_TOL_EPS * f64::EPSILON;
                for fac in [&em1, &phi] {
                    let lr = compress(fac.as_ref(), &cols, &weight, tol, Par::Seq)
                        .expect("log-spaced times compress");
                    let rank = lr.u.ncols();
                    assert!(rank > 3 && rank < (nt - 2) / 4, "rank {rank}");
                    // the returned factorization meets the bound it was checked against
                    let g =
                        Mat::<f64>::from_fn(n, cols.len(), |i, j| weight[i] * fac[(i, cols[j])]);
                    let rho1 = max_col_norm(g.as_ref());
                    let e = &g - &lr.u * &lr.w;
                    assert!(max_col_norm(e.as_ref()) <= tol * rho1);
                }
                // closed-form outputs (compressed) against the direct step functions
                let mut direct = vec![0.0; nt * n * r];
                train_outputs(
                    v.as_ref(),
                    z.as_ref(),
                    em1.as_ref(),
                    f0.as_ref(),
                    &mut direct,
                    Par::Seq,
                )
                .unwrap();
                let mut comp = vec![0.0; nt * n * r];
                train_outputs_with(
                    v.as_ref(),
                    z.as_ref(),
                    em1.as_ref(),
                    f0.as_ref(),
                    &mut comp,
                    Some(cols.clone()),
                    Par::rayon(2),
                )
                .unwrap();
                let scale = (0..n * r)
                    .map(|i| res[(i / r, i % r)].abs())
                    .fold(0.0, f64::max);
                let worst = comp
                    .iter()
                    .zip(&direct)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f64::max);
                assert!(worst <= 1e-13 * scale, "train {worst:e}");
                assert_ne!(comp, direct, "the compressed path ran");
                // t = 0 and t = inf are the direct path's bits
                assert_eq!(comp[..n * r], direct[..n * r]);
                assert_eq!(
                    comp[100 * n * r..101 * n * r],
                    direct[100 * n * r..101 * n * r]
                );
                let mut dte = vec![0.0; nt * 9 * r];
                let mut cte = vec![0.0; nt * 9 * r];
                test_outputs(
                    kte.as_ref(),
                    v.as_ref(),
                    z.as_ref(),
                    phi.as_ref(),
                    g0.as_ref(),
                    &mut dte,
                    Par::Seq,
                )
                .unwrap();
                test_outputs_with(
                    kte.as_ref(),
                    Modes::Dense(v.as_ref()),
                    z.as_ref(),
                    phi.as_ref(),
                    g0.as_ref(),
                    &mut cte,
                    Some(cols.clone()),
                    Par::Seq,
                )
                .unwrap();
                let tscale = dte.iter().fold(0.0f64, |s, x| s.max(x.abs()));
                let worst = cte
                    .iter()
                    .zip(&dte)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f64::max);
                assert!(worst <= 1e-13 * tscale, "test {worst:e} of {tscale:e}");
                assert_eq!(cte[100 * 9 * r..101 * 9 * r], dte[100 * 9 * r..101 * 9 * r]);
            }
        }
    }

    #[test]
    fn compression_falls_back_when_the_rank_is_not_small() {
        // 40 times, each 3x apart over 0.1..1e18 on 16 decades of eigenvalues: rank ≈ T
        let (mu, _) = spectrum_problem(200, 16.0);
        let times: Vec<f64> = (0..40)
            .map(|j| 10f64.powf(-1.0 + 19.0 * f64::from(j) / 39.0))
            .collect();
        let mut em1 = Mat::<f64>::zeros(200, 40);
        let mut phi = Mat::<f64>::zeros(200, 40);
        mode_factors(
            &Dynamics::Flow { scale: 1.0 },
            &mu,
            &times,
            em1.as_mut(),
            phi.as_mut(),
        )
        .unwrap();
        let w = vec![1.0; 200];
        let tol = COMPRESSION_TOL_EPS * f64::EPSILON;
        assert!(compress(
            em1.as_ref(),
            &(0..40).collect::<Vec<_>>(),
            &w,
            tol,
            Par::Seq
        )
        .is_none());
        // too few times: never tried
        assert!(compress(
            em1.as_ref(),
            &(0..15).collect::<Vec<_>>(),
            &w,
            tol,
            Par::Seq
        )
        .is_none());
        // a zero table has rank 0
        let zero = Mat::<f64>::zeros(200, 40);
        let lr = compress(
            zero.as_ref(),
            &(0..40).collect::<Vec<_>>(),
            &w,
            tol,
            Par::Seq,
        )
        .unwrap();
        assert_eq!(lr.u.ncols(), 0);
    }

    #[test]
    fn loss_sums_match_the_factors() {
        let mu = [1e-6, 0.01, 0.5, 2.0, 50.0, 1e4];
        let zz = [0.3, 1.0, 2.0, 0.5, 0.25, 4.0];
        let times = [0.0, 1e-3, 0.7, 40.0, 1e5, f64::INFINITY];
        for dynm in [
            Dynamics::Flow { scale: 0.8 },
            Dynamics::Steps { scale: 1e-5 },
            Dynamics::momentum(0.5, 0.5, 6.0).unwrap(),
        ] {
            let got = loss_sums(&dynm, &mu, &times, &zz, Par::rayon(2)).unwrap();
            for (j, &t) in times.iter().enumerate() {
                let want: f64 = mu
                    .iter()
                    .zip(&zz)
                    .map(|(&m, &c)| {
                        let e = 1.0 + dynm.factors(m, t).0;
                        c * e * e
                    })
                    .sum();
                assert!(
                    (got[j] - want).abs() <= 1e-14 * want.max(1e-300) + 1e-300,
                    "{t} {}",
                    got[j]
                );
            }
            assert_eq!(got[0], zz.iter().sum::<f64>());
            assert_eq!(got[5], 0.0);
        }
    }

    #[test]
    fn compression_rank_is_the_numerical_rank() {
        // 3 decades of eigenvalues, 8 decades of times: the truncated pivoted QR keeps about
        // as many columns as the singular values above the tolerance (46 here; NumPy's SVD
        // counts 46 above 0.4·τ)
        let mu: Vec<f64> = (0..200)
            .map(|i| 10f64.powf(-3.0 + 3.0 * f64::from(i) / 199.0))
            .collect();
        let ts: Vec<f64> = (0..500)
            .map(|j| 10f64.powf(-2.0 + 8.0 * f64::from(j) / 499.0))
            .collect();
        let mut em1 = Mat::<f64>::zeros(200, 500);
        let mut phi = Mat::<f64>::zeros(200, 500);
        let dynm = Dynamics::Flow { scale: 1.0 / 400.0 };
        mode_factors(&dynm, &mu, &ts, em1.as_mut(), phi.as_mut()).unwrap();
        let w = vec![1.0; 200];
        let tol = COMPRESSION_TOL_EPS * f64::EPSILON;
        let lr = compress(
            em1.as_ref(),
            &(0..500).collect::<Vec<_>>(),
            &w,
            tol,
            Par::Seq,
        )
        .unwrap();
        assert!((40..=50).contains(&lr.u.ncols()), "{}", lr.u.ncols());
    }

    #[test]
    fn bad_times_are_rejected() {
        let mut a = Mat::<f64>::zeros(1, 1);
        let mut b = Mat::<f64>::zeros(1, 1);
        let err = mode_factors(
            &Dynamics::Flow { scale: 1.0 },
            &[1.0],
            &[-1.0],
            a.as_mut(),
            b.as_mut(),
        );
        assert!(matches!(err, Err(Error::InvalidArgument(_))));
    }
}
