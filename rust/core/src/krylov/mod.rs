//! Kernels as operators: block Krylov dynamics that touch `A` only through block products.
//!
//! The dense path ([`crate::spectral`], [`crate::dynamics`]) factorizes the `N×N` matrix
//! `A = sym(K) + λI`. This module computes the same closed forms of docs/numerics.md §3
//! (gradient flow, `s = η t / n`, `r₀ = f₀ − Y`) from products `A·V` alone, so `A` may be
//! an operator that is never stored:
//!
//! ```text
//! u(s) = exp(−sA) r₀                  (f_train(s) = Y + u(s))
//! w(s) = A⁻¹(I − exp(−sA)) r₀         (f_test(s)  = g₀ − K_td w(s))
//! ```
//!
//! * [`LinOp`]: a symmetric positive semidefinite `N×N` operator applied to blocks of
//!   columns, so one sweep over the kernel serves all `R` right-hand sides at once;
//!   [`DenseOp`] wraps a stored matrix.
//! * [`flow`] (finite times, `s = ∞` allowed): block Lanczos on the `R` columns of `r₀`
//!   ([`lanczos`]), full reorthogonalization by two-pass classical Gram–Schmidt and a
//!   pivoted, rank-revealing Gram–Schmidt of every new block (directions whose norm is at
//!   most `drop_tol·‖A‖` are deflated; an exhausted block ends the iteration with the
//!   exact answer on an invariant subspace). Every requested time is evaluated from the
//!   one basis `Q` (`N × k`, `k = Σ` block sizes) and the block tridiagonal
//!   `T = Qᵀ A Q = S diag(θ) Sᵀ`: `u(s) ≈ Q S f(θ, s) Sᵀ E₁ B₀`, so an array of times costs
//!   what its largest time costs.
//! * [`flow_augmented`]: the same from the start block `[V | r₀]`; with top eigenvectors
//!   in `V` their span is handled in closed form (`A V = V Λ` adds no direction) and large
//!   times converge at the rate of the remaining spectrum.
//! * [`solve_pinv`] (`s = ∞`): `A⁺ r₀` and the null part `(I − AA⁺) r₀` by Lanczos on the
//!   symmetrically preconditioned operator `P^{-1/2} A P^{-1/2}` with the randomized
//!   Nyström preconditioner of Frangella, Tropp and Udell (2023) ([`nystrom`]). This is
//!   preconditioned block CG in its Lanczos form (same products per iteration), chosen so
//!   that semidefinite kernels get the dense path's min-norm semantics (below).
//!
//! # Spectral cut (docs/numerics.md §5)
//!
//! Ritz values `θ ≤ rcond · θ_max` are null directions, exactly as eigenvalues below the
//! cut are in the dense path: their factors are `e = 1`, `φ = 0` at every time and `1/θ` is
//! never formed. `rcond` defaults to `N·ε`. For [`solve_pinv`] the cut is absolute,
//! `rcond · λ_max` with `λ_max` the larger of the Nyström estimate of `‖A‖` and the
//! largest Ritz value, so preconditioning does not move it. Because the Nyström basis
//! `U` lies in `range(A)` (up to the stabilizing shift), `P^{-1/2}` maps `range(A)` and
//! `null(A)` to themselves, and `P^{-1/2} (P^{-1/2} A P^{-1/2})⁺ P^{-1/2} = A⁺`: the
//! preconditioned solve returns the minimum-norm solution, never a null component.
//!
//! # Error estimates
//!
//! With `A Q = Q T + Q_{m+1} B_m E_mᵀ + Σ_j F_j E_jᵀ` (`F_j`: the directions deflated at
//! block `j`, `‖F_j‖_F = δ_j`), the Krylov `u_m(σ) = Q exp(−σT) E₁B₀` has the defect
//! `u_m' + A u_m = (Q_{m+1} B_m E_mᵀ + Σ F_j E_jᵀ) exp(−σT) E₁B₀`, so its error is
//! `−∫₀ˢ exp(−(s−σ)A) · defect(σ) dσ` and, since `‖exp(−τA)‖ ≤ 1` for `A ⪰ 0`, per column `r`
//!
//! ```text
//! ‖u_r(s) − u_r*(s)‖₂ ≤ δ₀ + ∫₀ˢ g_r(σ) dσ,
//! g_r(σ) = ‖B_m E_mᵀ S e^{−σΘ} z_r‖ + Σ_j δ_j ‖E_jᵀ S e^{−σΘ} z_r‖,   z = Sᵀ E₁ B₀
//! ```
//!
//! (`δ₀`: the part of `r₀` deflated at the start): the defect-integral bound of Jawecki,
//! Auzinger and Koch (2020). `g_r` is a norm of a small `p × R` matrix function, evaluated
//! exactly at any `σ`; the integral is taken by 8-point Gauss–Legendre on a geometric grid
//! (ratio √2 from `10⁻²/θ_max` up to `min(s, 80/θ_min)`, bounded beyond). It increases
//! with `s`, so the largest requested time decides the stopping rule, and an array of
//! times costs what its largest time costs. For `w(s) = ∫₀ˢ u(σ) dσ` the same argument with
//! `‖A⁻¹(I − e^{−xA})‖ ≤ min(x, 1/λ_min)` gives `∫₀ˢ min(s − σ, 1/θ_min) g_r(σ) dσ`, with the
//! smallest retained Ritz value `θ_min ≥ λ_min` in place of `λ_min`: an estimate, and a
//! bound once `θ_min` has converged. Cut Ritz pairs do not enter `g`: one whose residual
//! `α_k` is at most the cut is an exact null pair of a matrix within twice the cut of `A`
//! (below the cut's resolution) and adds nothing; otherwise it adds
//! `α_k |z_kr| min(s, 1/cut)` until it is resolved. [`flow`] stops once `max_{s, r}` of the
//! `u` bound is at most `rtol · max|r₀|` (a bound on the largest entry error, since
//! `|x_i| ≤ ‖x‖₂`). [`solve_pinv`] forms the range residual exactly from the next block
//! (as CG does, no product) and stops once its image under `P^{1/2}`, the error of the
//! train output at `t = ∞` (deflated and cut parts bounded with `‖P^{1/2}‖`), is at most
//! `rtol · max|b|`. Floating-point round-off of the problem itself (about
//! `ε·min(s‖A‖, cond)·‖r₀‖` for `u`, `ε·cond·‖w‖` for `w`) is not part of either bound.

pub mod lanczos;
pub mod nystrom;

mod flow;
mod pinv;

#[cfg(test)]
mod tests;

pub use flow::{flow, flow_augmented, flow_monitored, FlowOptions, KrylovFlow, Monitor};
pub use lanczos::{BlockLanczos, Ritz};
pub use nystrom::NystromPreconditioner;
pub use pinv::{solve_pinv, solve_pinv_monitored, PinvOptions, PinvSolution};

use crate::{Error, Result, Shape};
use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef};

/// A symmetric positive semidefinite `N×N` operator, applied to blocks of columns.
///
/// `apply` writes `A·x` into `out` (`x` and `out` are `N × p`); implementations should
/// make one pass over their data for all `p` columns. The solvers count matvecs as the
/// number of columns applied.
pub trait LinOp {
    fn nrows(&self) -> usize;
    fn apply(&self, x: MatRef<'_, f64>, out: MatMut<'_, f64>) -> Result<()>;
}

/// A stored (dense) matrix as a [`LinOp`]; its products run on the library's pool.
#[derive(Debug, Clone, Copy)]
pub struct DenseOp<'a> {
    a: MatRef<'a, f64>,
}

impl<'a> DenseOp<'a> {
    /// Wraps a square matrix (assumed symmetric; only `A·x` is ever formed).
    pub fn new(a: MatRef<'a, f64>) -> Result<Self> {
        crate::spectral::check_square(a, "operator")?;
        Ok(DenseOp { a })
    }
}

impl LinOp for DenseOp<'_> {
    fn nrows(&self) -> usize {
        self.a.nrows()
    }
    fn apply(&self, x: MatRef<'_, f64>, out: MatMut<'_, f64>) -> Result<()> {
        check_block(self.a.nrows(), x, (out.nrows(), out.ncols()))?;
        gemm(out, Accum::Replace, self.a, x, 1.0);
        Ok(())
    }
}

/// What a solve did, in the terms `solver_info` reports.
#[derive(Debug, Clone, PartialEq)]
pub struct SolverInfo {
    /// `"block-lanczos"` or `"nystrom-pcg"` (preconditioned Lanczos) / `"pcg"` (without).
    pub method: &'static str,
    /// Block iterations (each one product with a block of at most `R` columns).
    pub iterations: usize,
    /// Columns applied to the operator, preconditioner sketch included.
    pub matvecs: usize,
    /// The error bound at the stopping test (largest time, worst column), relative to
    /// `max|r₀|` (see the module docs).
    pub error_estimate: f64,
    /// Whether the estimate reached `rtol` (or the Krylov space became invariant).
    pub converged: bool,
}

fn check_block(n: usize, x: MatRef<'_, f64>, out: (usize, usize)) -> Result<()> {
    if x.nrows() != n {
        return Err(Error::DimensionMismatch {
            what: "operator input rows",
            expected: Shape::Rows(n),
            got: Shape::Matrix(x.nrows(), x.ncols()),
        });
    }
    if out.0 != n || out.1 != x.ncols() {
        return Err(Error::DimensionMismatch {
            what: "operator output shape",
            expected: Shape::Matrix(n, x.ncols()),
            got: Shape::Matrix(out.0, out.1),
        });
    }
    Ok(())
}

/// `dst (accum) alpha · a · b` on the library's pool.
pub(crate) fn gemm(
    dst: MatMut<'_, f64>,
    accum: Accum,
    a: MatRef<'_, f64>,
    b: MatRef<'_, f64>,
    alpha: f64,
) {
    if a.nrows() * a.ncols() * b.ncols() < 1 << 16 {
        matmul(dst, accum, a, b, alpha, faer::Par::Seq);
    } else {
        crate::threads::install(|par| matmul(dst, accum, a, b, alpha, par));
    }
}

/// Deterministic standard normal numbers (SplitMix64 and Box–Muller), so sketches are
/// reproducible from a seed without a dependency.
pub(crate) struct Normal {
    state: u64,
    spare: Option<f64>,
}

impl Normal {
    pub(crate) fn new(seed: u64) -> Self {
        Normal {
            state: seed ^ 0x9E37_79B9_7F4A_7C15,
            spare: None,
        }
    }
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `(0, 1)`.
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64)
    }
    pub(crate) fn sample(&mut self) -> f64 {
        if let Some(x) = self.spare.take() {
            return x;
        }
        let (u1, u2) = (self.uniform(), self.uniform());
        let r = (-2.0 * u1.ln()).sqrt();
        let (s, c) = (std::f64::consts::TAU * u2).sin_cos();
        self.spare = Some(r * s);
        r * c
    }
}

/// `max |x_ij|` (0 for an empty matrix), and whether every entry is finite.
pub(crate) fn max_abs(x: MatRef<'_, f64>) -> (f64, bool) {
    let mut m = 0.0f64;
    let mut finite = true;
    for j in 0..x.ncols() {
        for i in 0..x.nrows() {
            let v = x[(i, j)];
            finite &= v.is_finite();
            m = m.max(v.abs());
        }
    }
    (m, finite)
}

/// When the stopping test runs: every iteration up to 10, then whenever the iteration
/// count has grown by 15% since the last test. A test costs an eigendecomposition of `T`
/// (`O(k³)`), so the tests together cost about `3k³` at the end, and the iteration stops at
/// most 15% later than an every-iteration test would.
#[derive(Debug, Default)]
pub(crate) struct CheckSchedule {
    last: usize,
}

impl CheckSchedule {
    pub(crate) fn due(&mut self, it: usize) -> bool {
        let due = it <= 10 || it >= self.last + (self.last * 3).div_ceil(20).max(1);
        if due {
            self.last = it;
        }
        due
    }
}

pub(crate) fn check_rtol(rtol: f64) -> Result<()> {
    if rtol > 0.0 && rtol.is_finite() {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "rtol must be > 0 and finite, got {rtol}"
        )))
    }
}

pub(crate) fn check_rcond(rcond: Option<f64>, n: usize) -> Result<f64> {
    match rcond {
        None => Ok(n.max(1) as f64 * f64::EPSILON),
        Some(r) if r > 0.0 && r < 1.0 => Ok(r),
        Some(r) => Err(Error::InvalidArgument(format!(
            "rcond must be in (0, 1), got {r}"
        ))),
    }
}
