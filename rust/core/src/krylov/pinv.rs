//! `t = ∞`: `x = A⁺ b` and the null part `(I − AA⁺) b` by preconditioned block Lanczos.
//!
//! Lanczos on `Ã = P^{-1/2} A P^{-1/2}` from `b̃ = P^{-1/2} b` (the Lanczos form of
//! preconditioned block CG: one product with `A` per iteration and block column) with the
//! absolute spectral cut of the module docs: `z = Q S diag(1/θ_k) Sᵀ E₁B₀` over the
//! retained Ritz values, `x = P^{-1/2} z`, and the null part `P^{1/2} Q S_cut z_cut` (no
//! extra product: `b − A x = P^{1/2}(b̃ − Ã z)`). The range residual
//! `ρ_r = ‖(b̃ − Ã z)_r‖` restricted to the retained modes is `‖B_m E_mᵀ S Θ⁻¹ z_r‖` (plus
//! `δ_j ‖E_jᵀ S Θ⁻¹ z_r‖` for deflated blocks, `δ₀`, and `α_k |z_kr| / cut` for unresolved cut
//! pairs), computed exactly as in CG without a product; the train
//! output at `t = ∞` is then off by `‖P^{1/2} Q_{m+1} B_m E_mᵀ S Θ⁻¹ z_r‖` (formed exactly
//! from the next block, `O(N(p + ℓ)R)`) plus `‖P^{1/2}‖` times the deflated and cut parts,
//! and the solution by about
//! `ρ_r / θ_min` (`‖P^{-1/2}‖ = 1`).

use super::flow::Monitor;
use super::lanczos::{BlockLanczos, Ritz};
use super::nystrom::NystromPreconditioner;
use super::{check_rcond, check_rtol, gemm, max_abs, LinOp, SolverInfo};
use crate::{Error, Result, Shape};
use faer::{Accum, Mat, MatMut, MatRef};
use std::cell::Cell;

/// Options of [`solve_pinv`].
#[derive(Debug, Clone, PartialEq)]
pub struct PinvOptions {
    /// Target of the bound on the `t = ∞` train output, relative to `max|b|` (1e-8).
    pub rtol: f64,
    /// Most block iterations (default 1000).
    pub max_iter: usize,
    /// Spectral cut relative to `λ_max` (default `N·ε`).
    pub rcond: Option<f64>,
    /// Deflation threshold relative to `‖Ã‖` (default 1e-13).
    pub drop_tol: f64,
    /// Nyström sketch size `ℓ` (0: no preconditioner; default 100).
    pub rank: usize,
    /// Seed of the Gaussian sketch.
    pub seed: u64,
    /// `λ` of `A + λI` (default 0).
    pub shift: f64,
}

impl Default for PinvOptions {
    fn default() -> Self {
        PinvOptions {
            rtol: 1e-8,
            max_iter: 1000,
            rcond: None,
            drop_tol: 1e-13,
            rank: 100,
            seed: 0x5EED,
            shift: 0.0,
        }
    }
}

/// The `t = ∞` solution.
#[derive(Debug, Clone)]
pub struct PinvSolution {
    /// `A⁺ b` (`N × R`): `f_test(∞) = g₀ − K_td x` with `b = r₀`.
    pub x: Mat<f64>,
    /// `(I − AA⁺) b` (`N × R`): `f_train(∞) = Y + null_part` with `b = r₀`.
    pub null_part: Mat<f64>,
    /// Per column: bound of the error of `null_part` (absolute, 2-norm).
    pub train_bounds: Vec<f64>,
    /// Per column: estimate of the error of `x` (absolute, 2-norm).
    pub solution_estimates: Vec<f64>,
    /// The preconditioner used (the identity with `rank = 0`).
    pub preconditioner: NystromPreconditioner,
    /// Ritz values of the preconditioned operator (ascending) and the cut.
    pub ritz_values: Vec<f64>,
    pub cut: f64,
    pub info: SolverInfo,
}

/// `P^{-1/2} A P^{-1/2}`, counting the columns applied.
struct Preconditioned<'a, O: ?Sized> {
    op: &'a O,
    pre: &'a NystromPreconditioner,
    cols: Cell<usize>,
}

impl<O: LinOp + ?Sized> LinOp for Preconditioned<'_, O> {
    fn nrows(&self) -> usize {
        self.op.nrows()
    }
    fn apply(&self, x: MatRef<'_, f64>, out: MatMut<'_, f64>) -> Result<()> {
        let (n, p) = (x.nrows(), x.ncols());
        let mut y = Mat::<f64>::zeros(n, p);
        self.pre.apply_inv_sqrt(x, y.as_mut());
        let mut ay = Mat::<f64>::zeros(n, p);
        self.op.apply(y.as_ref(), ay.as_mut())?;
        self.cols.set(self.cols.get() + p);
        self.pre.apply_inv_sqrt(ay.as_ref(), out);
        Ok(())
    }
}

/// Range residual of the cut solution per column, `ρ_r` (in `Ã`-space), and the bound on
/// the error of the null part, `‖P^{1/2}(b̃ − Ã z)_r‖` restricted to the retained modes:
/// the `Q_{m+1}` part is formed exactly (`P^{1/2} Q_{m+1} B_m E_mᵀ S Θ⁻¹ z_r`, no product
/// with `A`), the deflated parts, `δ₀` and unresolved cut pairs (`α_k |z_kr| / cut`) are
/// bounded with `‖P^{1/2}‖`.
fn residual_bounds(
    ritz: &Ritz,
    next: MatRef<'_, f64>,
    pre: &NystromPreconditioner,
) -> (Vec<f64>, Vec<f64>) {
    let k = ritz.theta.len();
    let r = ritz.z.ncols();
    let inv: Vec<f64> = (0..k)
        .map(|i| {
            if ritz.retained[i] {
                1.0 / ritz.theta[i]
            } else {
                0.0
            }
        })
        .collect();
    let mut rho = ritz.residual_norms(&inv);
    let mut rest = vec![0.0; r];
    for (c, o) in rest.iter_mut().enumerate() {
        *o = ritz.delta0;
        for (d, m) in &ritz.dropped {
            let y = Mat::<f64>::from_fn(k, 1, |i, _| inv[i] * ritz.z[(i, c)]);
            *o += d * (m * &y).norm_l2();
        }
    }
    for i in 0..k {
        if ritz.unresolved_cut(i) {
            for c in 0..r {
                let a = ritz.alpha[i] * ritz.z[(i, c)].abs() / ritz.cut;
                rho[c] += a;
                rest[c] += a;
            }
        }
    }
    let sq = pre.sqrt_norm();
    let mut train: Vec<f64> = rest.iter().map(|x| x * sq).collect();
    if ritz.tail.nrows() > 0 && k > 0 {
        let y = Mat::<f64>::from_fn(k, r, |i, j| inv[i] * ritz.z[(i, j)]);
        let mut v = Mat::<f64>::zeros(ritz.tail.nrows(), r);
        gemm(
            v.as_mut(),
            Accum::Replace,
            ritz.tail.as_ref(),
            y.as_ref(),
            1.0,
        );
        let mut res = Mat::<f64>::zeros(next.nrows(), r);
        gemm(res.as_mut(), Accum::Replace, next, v.as_ref(), 1.0);
        let mut pres = Mat::<f64>::zeros(next.nrows(), r);
        pre.apply_sqrt(res.as_ref(), pres.as_mut());
        for (c, t) in train.iter_mut().enumerate() {
            *t += pres.col(c).norm_l2();
        }
    }
    (rho, train)
}

/// `A⁺ b` and `(I − AA⁺) b` with the spectral cut of the module docs; stops once the
/// bound on the null part (the train output at `t = ∞`) is at most `rtol · max|b|`.
pub fn solve_pinv<O: LinOp + ?Sized>(
    op: &O,
    b: MatRef<'_, f64>,
    opts: &PinvOptions,
) -> Result<PinvSolution> {
    solve_pinv_monitored(op, b, opts, &mut |_| Ok(()))
}

/// `A + λI` applied as `A x + λ x`.
struct Shifted<'a, O: ?Sized> {
    op: &'a O,
    shift: f64,
}

impl<O: LinOp + ?Sized> LinOp for Shifted<'_, O> {
    fn nrows(&self) -> usize {
        self.op.nrows()
    }
    fn apply(&self, x: MatRef<'_, f64>, mut out: MatMut<'_, f64>) -> Result<()> {
        self.op.apply(x, out.as_mut())?;
        for j in 0..x.ncols() {
            for i in 0..x.nrows() {
                out[(i, j)] += self.shift * x[(i, j)];
            }
        }
        Ok(())
    }
}

/// [`solve_pinv`] with a [`Monitor`] (progress, cancellation), on `A + shift·I`.
pub fn solve_pinv_monitored<O: LinOp + ?Sized>(
    op: &O,
    b: MatRef<'_, f64>,
    opts: &PinvOptions,
    monitor: Monitor<'_>,
) -> Result<PinvSolution> {
    if !(opts.shift >= 0.0 && opts.shift.is_finite()) {
        return Err(Error::InvalidArgument(format!(
            "shift must be >= 0 and finite, got {}",
            opts.shift
        )));
    }
    if opts.shift > 0.0 {
        let shifted = Shifted {
            op,
            shift: opts.shift,
        };
        pinv_impl(&shifted, b, opts, monitor)
    } else {
        pinv_impl(op, b, opts, monitor)
    }
}

fn pinv_impl<O: LinOp + ?Sized>(
    op: &O,
    b: MatRef<'_, f64>,
    opts: &PinvOptions,
    monitor: Monitor<'_>,
) -> Result<PinvSolution> {
    let n = op.nrows();
    if b.nrows() != n {
        return Err(Error::DimensionMismatch {
            what: "right-hand side rows",
            expected: Shape::Rows(n),
            got: Shape::Matrix(b.nrows(), b.ncols()),
        });
    }
    check_rtol(opts.rtol)?;
    let rcond = check_rcond(opts.rcond, n)?;
    if opts.max_iter == 0 {
        return Err(Error::InvalidArgument("max_iter must be >= 1".into()));
    }
    let (scale, finite) = max_abs(b);
    if !finite {
        return Err(Error::NonFinite {
            what: "right-hand side",
        });
    }
    let pre = if opts.rank > 0 && scale > 0.0 {
        NystromPreconditioner::new(op, opts.rank, opts.seed)?
    } else {
        NystromPreconditioner::identity(n)
    };
    let sketch = if pre.rank() > 0 { opts.rank.min(n) } else { 0 };
    let pop = Preconditioned {
        op,
        pre: &pre,
        cols: Cell::new(0),
    };
    let mut bt = Mat::<f64>::zeros(n, b.ncols());
    pre.apply_inv_sqrt(b, bt.as_mut());
    let mut lz = BlockLanczos::new(bt.as_ref(), opts.drop_tol)?;
    let target = opts.rtol * scale;
    let mut schedule = super::CheckSchedule::default();
    let (ritz, rho, train_bounds, converged) = loop {
        let stepped = lz.step(&pop)?;
        let it = lz.iterations();
        let last = !stepped || lz.exhausted() || it >= opts.max_iter;
        if last || schedule.due(it) {
            let ritz = lz.ritz(rcond, pre.lambda_max())?;
            let (rho, train) = residual_bounds(&ritz, lz.next_block(), &pre);
            let worst = train.iter().fold(0.0f64, |a, b| a.max(*b));
            monitor(&SolverInfo {
                method: if pre.rank() > 0 { "nystrom-pcg" } else { "pcg" },
                iterations: it,
                matvecs: pop.cols.get() + sketch,
                error_estimate: if scale > 0.0 { worst / scale } else { 0.0 },
                converged: worst <= target,
            })?;
            if worst <= target || last {
                break (ritz, rho, train, worst <= target);
            }
        }
    };
    let k = ritz.theta.len();
    let inv: Vec<f64> = (0..k)
        .map(|i| {
            if ritz.retained[i] {
                1.0 / ritz.theta[i]
            } else {
                0.0
            }
        })
        .collect();
    let nul: Vec<f64> = (0..k)
        .map(|i| if ritz.retained[i] { 0.0 } else { 1.0 })
        .collect();
    let r = b.ncols();
    let mut x = Mat::<f64>::zeros(n, r);
    let mut null_part = Mat::<f64>::zeros(n, r);
    if k > 0 {
        let q = lz.basis();
        let mut z = Mat::<f64>::zeros(n, r);
        gemm(
            z.as_mut(),
            Accum::Replace,
            q,
            ritz.combine(&inv).as_ref(),
            1.0,
        );
        pre.apply_inv_sqrt(z.as_ref(), x.as_mut());
        gemm(
            z.as_mut(),
            Accum::Replace,
            q,
            ritz.combine(&nul).as_ref(),
            1.0,
        );
        pre.apply_sqrt(z.as_ref(), null_part.as_mut());
    } else {
        // nothing retained or b = 0: b itself is the null part
        null_part.copy_from(b);
    }
    let tmin = ritz.theta_min();
    let worst = train_bounds.iter().fold(0.0f64, |a, b| a.max(*b));
    let info = SolverInfo {
        method: if pre.rank() > 0 { "nystrom-pcg" } else { "pcg" },
        iterations: lz.iterations(),
        matvecs: pop.cols.get() + sketch,
        error_estimate: if scale > 0.0 { worst / scale } else { 0.0 },
        converged,
    };
    Ok(PinvSolution {
        x,
        null_part,
        train_bounds,
        solution_estimates: rho.iter().map(|x| x / tmin).collect(),
        ritz_values: ritz.theta.clone(),
        cut: ritz.cut,
        preconditioner: pre,
        info,
    })
}
