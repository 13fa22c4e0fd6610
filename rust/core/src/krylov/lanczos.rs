//! Block Lanczos with full reorthogonalization and rank-revealing deflation.
//!
//! `A Q = Q T + Q_{m+1} B_m E_mᵀ + Σ_j F_j E_jᵀ`: `Q` (`N × k`) has orthonormal columns in
//! blocks of sizes `p_1 ≥ p_2 ≥ …` (a block shrinks when its new directions are deflated),
//! `T` is block tridiagonal with diagonal blocks `A_j = Q_jᵀ A Q_j` and couplings `B_j`
//! (`p_{j+1} × p_j`), and `F_j` (`‖F_j‖_F = δ_j ≤ √p_j · drop_tol·‖A‖`) collects the
//! deflated directions. Each step applies `A` once to the `p_j` columns of the newest
//! block, removes every component along `Q` by two passes of classical Gram–Schmidt
//! (`W ← W − Q(QᵀW)`, twice) and orthonormalizes the rest by Gram–Schmidt with column
//! pivoting (the column of largest remaining norm first, each new vector projected out of
//! the remaining ones twice and re-orthogonalized against `Q` once): columns whose norm
//! falls below the drop tolerance are deflated. When nothing is left the Krylov space is
//! invariant and the iteration is exact.

use super::{gemm, LinOp};
use crate::spectral::{ldexp, sym_eigh_scaled};
use crate::{Error, Result, Shape};
use faer::{Accum, Mat, MatRef};

/// The state of a block Lanczos iteration started from `r₀ = Q_1 B_0 (+ deflated part)`.
#[derive(Debug, Clone)]
pub struct BlockLanczos {
    n: usize,
    /// `N × cap` storage; the first `k` columns are the basis.
    q: Mat<f64>,
    k: usize,
    /// `(first column, size)` of every block of `Q`.
    blocks: Vec<(usize, usize)>,
    diag: Vec<Mat<f64>>,
    /// `sub[j] = B_j`, coupling block `j` to block `j + 1` (both in `Q`).
    sub: Vec<Mat<f64>>,
    /// The next block `Q_{m+1}` and `B_m`, not yet part of `Q`.
    pending_q: Mat<f64>,
    pending_b: Mat<f64>,
    /// `(block j, δ_j)` for every block with deflated directions.
    drops: Vec<(usize, f64)>,
    delta0: f64,
    b0: Mat<f64>,
    anorm: f64,
    drop_tol: f64,
    matvecs: usize,
    iterations: usize,
}

/// The Ritz decomposition `T = S diag(θ) Sᵀ` with everything the estimates need.
#[derive(Debug, Clone)]
pub struct Ritz {
    /// Ritz values, ascending.
    pub theta: Vec<f64>,
    /// Eigenvectors of `T` (`k × k`).
    pub s: Mat<f64>,
    /// `Sᵀ E₁ B₀` (`k × R`): the starting block in the Ritz basis.
    pub z: Mat<f64>,
    /// `α_k = ‖B_m E_mᵀ s_k‖ + Σ_j δ_j ‖E_jᵀ s_k‖`: residual coupling of each Ritz pair.
    pub alpha: Vec<f64>,
    /// The absolute cut: `θ ≤ cut` are null directions.
    pub cut: f64,
    /// `θ_k > cut`.
    pub retained: Vec<bool>,
    /// Norm of the part of `r₀` deflated at the start.
    pub delta0: f64,
    /// `B_m E_mᵀ S` (`p_{m+1} × k`): the coupling of every Ritz vector to `Q_{m+1}`.
    pub tail: Mat<f64>,
    /// `(δ_j, E_jᵀ S)` for every block with deflated directions.
    pub dropped: Vec<(f64, Mat<f64>)>,
}

impl Ritz {
    /// Smallest retained Ritz value (`∞` if none).
    #[must_use]
    pub fn theta_min(&self) -> f64 {
        self.theta
            .iter()
            .zip(&self.retained)
            .filter(|(_, r)| **r)
            .map(|(t, _)| *t)
            .fold(f64::INFINITY, f64::min)
    }

    /// Whether a cut Ritz pair is still unresolved (its residual exceeds the cut).
    #[must_use]
    pub fn unresolved_cut(&self, i: usize) -> bool {
        !self.retained[i] && self.alpha[i] > self.cut
    }

    /// Per column `r` of `y = diag(f) z`: `‖B_m E_mᵀ S y_r‖ + Σ_j δ_j ‖E_jᵀ S y_r‖ + δ₀`, the
    /// norm of the residual `Q_{m+1} B_m E_mᵀ S y + Σ F_j E_jᵀ S y` (bounded by the triangle
    /// inequality for the deflated parts) plus the deflated start.
    #[must_use]
    pub fn residual_norms(&self, f: &[f64]) -> Vec<f64> {
        let mut out = self.defect_norms(f);
        for o in &mut out {
            *o += self.delta0;
        }
        out
    }

    /// [`Ritz::residual_norms`] without `δ₀`: the norm of the defect `A Q y − Q T y` per
    /// column of `y = diag(f) z`.
    #[must_use]
    pub fn defect_norms(&self, f: &[f64]) -> Vec<f64> {
        let k = self.theta.len();
        let r = self.z.ncols();
        let y = Mat::<f64>::from_fn(k, r, |i, j| f[i] * self.z[(i, j)]);
        let mut out = vec![0.0; r];
        let mut add = |m: MatRef<'_, f64>, w: f64| {
            if m.nrows() == 0 || k == 0 {
                return;
            }
            let mut v = Mat::<f64>::zeros(m.nrows(), r);
            gemm(v.as_mut(), Accum::Replace, m, y.as_ref(), 1.0);
            for (c, o) in out.iter_mut().enumerate() {
                *o += w * v.col(c).norm_l2();
            }
        };
        add(self.tail.as_ref(), 1.0);
        for (d, m) in &self.dropped {
            add(m.as_ref(), *d);
        }
        out
    }

    /// `S diag(f_i) z` for per-mode factors `f` (`k × R`).
    #[must_use]
    pub fn combine(&self, f: &[f64]) -> Mat<f64> {
        let k = self.theta.len();
        let r = self.z.ncols();
        let fz = Mat::<f64>::from_fn(k, r, |i, j| f[i] * self.z[(i, j)]);
        let mut c = Mat::<f64>::zeros(k, r);
        if k > 0 {
            gemm(
                c.as_mut(),
                Accum::Replace,
                self.s.as_ref(),
                fz.as_ref(),
                1.0,
            );
        }
        c
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn axpy(alpha: f64, x: &[f64], y: &mut [f64]) {
    y.iter_mut().zip(x).for_each(|(y, x)| *y += alpha * x);
}

fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

/// `W ← W − Q(QᵀW)` twice; returns the accumulated `QᵀW` (`k × p`).
fn cgs2(q: MatRef<'_, f64>, w: &mut Mat<f64>) -> Mat<f64> {
    let (k, p) = (q.ncols(), w.ncols());
    let mut h = Mat::<f64>::zeros(k, p);
    if k == 0 {
        return h;
    }
    let mut hp = Mat::<f64>::zeros(k, p);
    for _ in 0..2 {
        gemm(hp.as_mut(), Accum::Replace, q.transpose(), w.as_ref(), 1.0);
        gemm(w.as_mut(), Accum::Add, q, hp.as_ref(), -1.0);
        h += &hp;
    }
    h
}

/// Gram–Schmidt with column pivoting of `w` (already orthogonal to `q`): returns the new
/// orthonormal columns (`N × r`), `R` (`r × p`, with `w ≈ Q_new R` column by column) and
/// the Frobenius norm of what was deflated (columns whose remaining norm is `≤ tol`).
fn pivoted_gs(q: MatRef<'_, f64>, w: &mut Mat<f64>, tol: f64) -> (Mat<f64>, Mat<f64>, f64) {
    let (n, p) = (w.nrows(), w.ncols());
    let mut accepted: Vec<Vec<f64>> = Vec::new();
    let mut rows: Vec<Vec<f64>> = Vec::new();
    let mut remaining: Vec<usize> = (0..p).collect();
    while !remaining.is_empty() {
        let (pos, best) = remaining
            .iter()
            .enumerate()
            .map(|(pos, &c)| (pos, norm(w.col_as_slice(c))))
            .fold((0, -1.0), |a, b| if b.1 > a.1 { b } else { a });
        if best <= tol {
            break;
        }
        let c = remaining.swap_remove(pos);
        let mut row = vec![0.0; p];
        let mut v = w.col_as_slice(c).to_vec();
        if q.ncols() > 0 {
            // one more pass against the old basis (not recorded: a round-off correction)
            let vm = MatRef::from_column_major_slice(&v, n, 1);
            let mut h = Mat::<f64>::zeros(q.ncols(), 1);
            gemm(h.as_mut(), Accum::Replace, q.transpose(), vm, 1.0);
            let mut vmat = Mat::<f64>::from_fn(n, 1, |i, _| v[i]);
            gemm(vmat.as_mut(), Accum::Add, q, h.as_ref(), -1.0);
            v.copy_from_slice(vmat.col_as_slice(0));
        }
        for _ in 0..2 {
            for (i, qi) in accepted.iter().enumerate() {
                let coef = dot(qi, &v);
                axpy(-coef, qi, &mut v);
                rows[i][c] += coef;
            }
        }
        let nv = norm(&v);
        if nv <= tol {
            w.col_as_slice_mut(c).copy_from_slice(&v);
            remaining.push(c);
            break;
        }
        for x in &mut v {
            *x /= nv;
        }
        row[c] = nv;
        for &c2 in &remaining {
            let col = w.col_as_slice_mut(c2);
            for _ in 0..2 {
                let coef = dot(&v, col);
                axpy(-coef, &v, col);
                row[c2] += coef;
            }
        }
        accepted.push(v);
        rows.push(row);
    }
    let dropped = remaining
        .iter()
        .map(|&c| dot(w.col_as_slice(c), w.col_as_slice(c)))
        .sum::<f64>()
        .sqrt();
    let r = accepted.len();
    let qn = Mat::<f64>::from_fn(n, r, |i, j| accepted[j][i]);
    let rm = Mat::<f64>::from_fn(r, p, |i, j| rows[i][j]);
    (qn, rm, dropped)
}

impl BlockLanczos {
    /// Starts from the columns of `r0` (`N × R`). Directions of `r0` whose norm is at most
    /// `drop_tol · max_c ‖r0_c‖` after pivoting are deflated (their norm is `delta0`).
    pub fn new(r0: MatRef<'_, f64>, drop_tol: f64) -> Result<Self> {
        if !(0.0..1.0).contains(&drop_tol) {
            return Err(Error::InvalidArgument(format!(
                "drop_tol must be in [0, 1), got {drop_tol}"
            )));
        }
        let (n, r) = (r0.nrows(), r0.ncols());
        if !super::max_abs(r0).1 {
            return Err(Error::NonFinite { what: "r0" });
        }
        let mut w = r0.to_owned();
        let ref_norm = (0..r)
            .map(|c| norm(w.col_as_slice(c)))
            .fold(0.0f64, f64::max);
        let empty = Mat::<f64>::zeros(n, 0);
        let (q1, b0, delta0) = if ref_norm == 0.0 {
            (Mat::zeros(n, 0), Mat::zeros(0, r), 0.0)
        } else {
            pivoted_gs(empty.as_ref(), &mut w, drop_tol * ref_norm)
        };
        Ok(BlockLanczos {
            n,
            q: Mat::zeros(n, 0),
            k: 0,
            blocks: Vec::new(),
            diag: Vec::new(),
            sub: Vec::new(),
            pending_b: Mat::zeros(q1.ncols(), 0),
            pending_q: q1,
            drops: Vec::new(),
            delta0,
            b0,
            anorm: 0.0,
            drop_tol,
            matvecs: 0,
            iterations: 0,
        })
    }

    /// Starts from the block `[V | r0]` (augmentation, "deflation" of the directions of
    /// `V`): the first block spans `V` and `r0`, the results are for `r0` only. With `V`
    /// exact eigenvectors of `A`, `A V = V Λ` adds no new direction, so those columns are
    /// deflated after the first product and the iteration continues on `V^⊥`, where the
    /// largest eigenvalue is the next one: the exact closed form on `span V`, and the
    /// convergence of the rest governed by the remaining spectrum. With approximate `V`
    /// (a Nyström sketch) nothing is assumed: it is block Lanczos from a larger start,
    /// and every bound keeps holding. `delta0 = ‖r0 − Q_1 B_0‖_F`.
    pub fn new_augmented(v: MatRef<'_, f64>, r0: MatRef<'_, f64>, drop_tol: f64) -> Result<Self> {
        let (n, d, r) = (r0.nrows(), v.ncols(), r0.ncols());
        if v.nrows() != n {
            return Err(Error::DimensionMismatch {
                what: "augmentation rows",
                expected: Shape::Rows(n),
                got: Shape::Matrix(v.nrows(), v.ncols()),
            });
        }
        if !super::max_abs(v).1 {
            return Err(Error::NonFinite {
                what: "augmentation",
            });
        }
        if !super::max_abs(r0).1 {
            return Err(Error::NonFinite { what: "r0" });
        }
        let both = Mat::<f64>::from_fn(
            n,
            d + r,
            |i, j| {
                if j < d {
                    v[(i, j)]
                } else {
                    r0[(i, j - d)]
                }
            },
        );
        let mut me = Self::new(both.as_ref(), drop_tol)?;
        me.b0 = me.b0.as_ref().subcols(d, r).to_owned();
        let mut res = r0.to_owned();
        if me.pending_q.ncols() > 0 {
            gemm(
                res.as_mut(),
                Accum::Add,
                me.pending_q.as_ref(),
                me.b0.as_ref(),
                -1.0,
            );
        }
        me.delta0 = res.norm_l2();
        Ok(me)
    }

    /// Whether the Krylov space is invariant (no new direction left).
    #[must_use]
    pub fn exhausted(&self) -> bool {
        self.pending_q.ncols() == 0
    }

    /// The orthonormal basis `Q` (`N × k`).
    #[must_use]
    pub fn basis(&self) -> MatRef<'_, f64> {
        self.q.as_ref().subcols(0, self.k)
    }

    /// The next block `Q_{m+1}` (`N × p_{m+1}`, orthonormal, orthogonal to `Q`).
    #[must_use]
    pub fn next_block(&self) -> MatRef<'_, f64> {
        self.pending_q.as_ref()
    }

    /// Block steps taken.
    #[must_use]
    pub fn iterations(&self) -> usize {
        self.iterations
    }

    /// Columns applied to the operator.
    #[must_use]
    pub fn matvecs(&self) -> usize {
        self.matvecs
    }

    /// The largest column norm of any product seen (a lower bound of `‖A‖`).
    #[must_use]
    pub fn norm_estimate(&self) -> f64 {
        self.anorm
    }

    /// Size of the basis.
    #[must_use]
    pub fn dim(&self) -> usize {
        self.k
    }

    fn append_pending(&mut self) {
        let p = self.pending_q.ncols();
        let need = self.k + p;
        if need > self.q.ncols() {
            let cap = need.max(2 * self.q.ncols()).min(self.n.max(need));
            self.q.reserve(self.n, cap);
            self.q.resize_with(self.n, cap, |_, _| 0.0);
        }
        self.q
            .as_mut()
            .subcols_mut(self.k, p)
            .copy_from(self.pending_q.as_ref());
        if !self.blocks.is_empty() {
            self.sub
                .push(std::mem::replace(&mut self.pending_b, Mat::zeros(0, 0)));
        }
        self.blocks.push((self.k, p));
        self.k = need;
    }

    /// One block step: a product with the newest block, reorthogonalization, deflation.
    /// Returns `false` (and does nothing) when the space is already invariant.
    pub fn step<O: LinOp + ?Sized>(&mut self, op: &O) -> Result<bool> {
        if self.exhausted() {
            return Ok(false);
        }
        if op.nrows() != self.n {
            return Err(Error::DimensionMismatch {
                what: "operator size",
                expected: Shape::Matrix(self.n, self.n),
                got: Shape::Matrix(op.nrows(), op.nrows()),
            });
        }
        self.append_pending();
        let (k0, p) = *self.blocks.last().expect("a block was just appended");
        let mut w = Mat::<f64>::zeros(self.n, p);
        op.apply(self.q.as_ref().subcols(k0, p), w.as_mut())?;
        self.matvecs += p;
        self.iterations += 1;
        if !super::max_abs(w.as_ref()).1 {
            return Err(Error::NonFinite {
                what: "operator product",
            });
        }
        for c in 0..p {
            self.anorm = self.anorm.max(norm(w.col_as_slice(c)));
        }
        let basis = self.q.as_ref().subcols(0, self.k);
        let h = cgs2(basis, &mut w);
        let aj = Mat::<f64>::from_fn(p, p, |i, j| 0.5 * (h[(k0 + i, j)] + h[(k0 + j, i)]));
        self.diag.push(aj);
        let (qn, b, dropped) = pivoted_gs(basis, &mut w, self.drop_tol * self.anorm);
        if dropped > 0.0 {
            self.drops.push((self.blocks.len() - 1, dropped));
        }
        self.pending_q = qn;
        self.pending_b = b;
        Ok(true)
    }

    /// The block tridiagonal `T` (`k × k`).
    #[must_use]
    pub fn t_matrix(&self) -> Mat<f64> {
        let mut t = Mat::<f64>::zeros(self.k, self.k);
        for (j, &(c0, p)) in self.blocks.iter().enumerate() {
            t.as_mut()
                .submatrix_mut(c0, c0, p, p)
                .copy_from(self.diag[j].as_ref());
            if let Some(b) = self.sub.get(j) {
                let (r0, pn) = self.blocks[j + 1];
                t.as_mut()
                    .submatrix_mut(r0, c0, pn, p)
                    .copy_from(b.as_ref());
                t.as_mut()
                    .submatrix_mut(c0, r0, p, pn)
                    .copy_from(b.transpose());
            }
        }
        t
    }

    /// Ritz decomposition with the cut `rcond · max(θ_max, lambda_floor)`.
    pub fn ritz(&self, rcond: f64, lambda_floor: f64) -> Result<Ritz> {
        self.ritz_shifted(rcond, lambda_floor, 0.0)
    }

    /// [`BlockLanczos::ritz`] of `A + shift·I` from the basis of `A`: the Krylov space is
    /// shift-invariant (`(A + λI) Q = Q (T + λI) + …` with the same residual blocks), so
    /// only `T` moves.
    pub fn ritz_shifted(&self, rcond: f64, lambda_floor: f64, shift: f64) -> Result<Ritz> {
        let k = self.k;
        let r = self.b0.ncols();
        if k == 0 {
            return Ok(Ritz {
                theta: Vec::new(),
                s: Mat::zeros(0, 0),
                z: Mat::zeros(0, r),
                alpha: Vec::new(),
                cut: 0.0,
                retained: Vec::new(),
                delta0: self.delta0,
                tail: Mat::zeros(0, 0),
                dropped: Vec::new(),
            });
        }
        let mut t = self.t_matrix();
        if shift != 0.0 {
            for i in 0..k {
                t[(i, i)] += shift;
            }
        }
        let mut w = vec![0.0; k];
        let mut s = Mat::<f64>::zeros(k, k);
        let e = crate::threads::install(|par| {
            sym_eigh_scaled::<f64, f64>(t.as_ref(), 0.0, &mut w, s.as_mut(), par)
        })?;
        let theta: Vec<f64> = w.iter().map(|x| ldexp(*x, e)).collect();
        let tmax = theta.iter().fold(0.0f64, |a, b| a.max(b.abs()));
        let cut = rcond * tmax.max(lambda_floor);
        let retained: Vec<bool> = theta.iter().map(|t| *t > cut).collect();
        let p1 = self.blocks[0].1;
        let mut z = Mat::<f64>::zeros(k, r);
        gemm(
            z.as_mut(),
            Accum::Replace,
            s.as_ref().subrows(0, p1).transpose(),
            self.b0.as_ref(),
            1.0,
        );
        let mut alpha = vec![0.0; k];
        let (cl, pl) = *self.blocks.last().expect("k > 0");
        let mut tail = Mat::<f64>::zeros(self.pending_b.nrows(), k);
        if self.pending_b.nrows() > 0 {
            gemm(
                tail.as_mut(),
                Accum::Replace,
                self.pending_b.as_ref(),
                s.as_ref().subrows(cl, pl),
                1.0,
            );
            for (i, a) in alpha.iter_mut().enumerate() {
                *a = tail.col(i).norm_l2();
            }
        }
        let mut dropped = Vec::new();
        for &(j, delta) in &self.drops {
            let (c0, p) = self.blocks[j];
            let rows = s.as_ref().subrows(c0, p).to_owned();
            for (i, a) in alpha.iter_mut().enumerate() {
                *a += delta * rows.col(i).norm_l2();
            }
            dropped.push((delta, rows));
        }
        Ok(Ritz {
            theta,
            s,
            z,
            alpha,
            cut,
            retained,
            delta0: self.delta0,
            tail,
            dropped,
        })
    }
}
