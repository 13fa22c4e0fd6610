//! Closed-form infinite-width NNGP and NTK kernels of fully connected networks.
//!
//! The network is `hidden_layers` × [Dense(`W_std`, `b_std`), activation] followed by a Dense
//! readout, in the standard NTK parameterization (weights `W_std/sqrt(fan_in)`, biases
//! `b_std`); the kernels match neural-tangents' `stax` for that architecture.
//!
//! For a pair of inputs `(x, x')` of dimension `d`:
//!
//! ```text
//! K₀ = w²·x·x'/d + b²,  Θ₀ = K₀          (and the variances Kxx, Kx'x' likewise)
//! hidden_layers times, with (u, v) ~ N(0, [[Kxx, K], [K, Kx'x']]):
//!   K  ← w²·E[φ(u)φ(v)] + b²
//!   Θ  ← K_new + w²·E[φ'(u)φ'(v)]·Θ
//! ```
//!
//! `relu` uses the arc-cosine formulas (with `c = K/sqrt(Kxx Kx'x')`, `θ = arccos c`):
//! `E[φφ] = sqrt(Kxx Kx'x')·(sin θ + (π − θ) cos θ)/(2π)`, `E[φ'φ'] = (π − θ)/(2π)`;
//! erf the arcsine formulas:
//! `E[φφ] = (2/π)·asin(2K/sqrt((1 + 2Kxx)(1 + 2Kx'x')))`,
//! `E[φ'φ'] = (4/π)/sqrt((1 + 2Kxx)(1 + 2Kx'x') − 4K²)`.
//!
//! The variances of every example are tracked layer by layer once (O(N·L)); each output
//! entry then runs the whole recursion fused, a row of entries at a time over contiguous
//! slices ([`eval`]: vectorized, with its own accurate arc-cosine). Outputs are filled by
//! `TILE × TILE` tiles in parallel, each tile computing its block of `x2·x1ᵀ` with a small
//! faer matmul; when `x2` is `None` only the lower triangle of tiles is computed and
//! mirrored, and the diagonal uses `c = 1` exactly (the same-input correlation), which
//! avoids the ill-conditioning of `arccos` near 1.
//!
//! [`fully_connected_matmat`] ([`product`]) is the fused kernel-times-block `K(x_a, x_b)·V`
//! that never stores the kernel: each tile of entries is multiplied into the output as
//! soon as it is computed.
//!
//! Convention for a zero-variance input (`x = 0` with `b_std = 0`, ReLU): its correlation
//! with anything is taken as 0, as neural-tangents' clipped formulas do.

mod eval;
mod product;

pub use product::{fully_connected_diagonal, fully_connected_matmat, Kind};

use crate::{Error, Result, Shape};
use eval::{Cols, Row};
use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatMut, MatRef, Par};
use rayon::prelude::*;
use std::f64::consts::FRAC_1_PI;
#[cfg(test)]
use std::f64::consts::PI;

/// Side of the square output tiles processed by one task.
const TILE: usize = 64;

/// Nonlinearity of the hidden layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `max(x, 0)`, arc-cosine kernel formulas.
    Relu,
    /// The error function, arcsine kernel formulas.
    Erf,
}

impl Activation {
    /// Parses `"relu"` or `"erf"`.
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "relu" => Ok(Self::Relu),
            "erf" => Ok(Self::Erf),
            other => Err(Error::InvalidArgument(format!(
                "activation must be 'relu' or 'erf', got {other:?}"
            ))),
        }
    }
}

/// A fully connected architecture: `hidden_layers` × [Dense, activation] + Dense readout.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FcSpec {
    /// Number of [Dense, activation] blocks before the readout (0: a linear model).
    pub hidden_layers: usize,
    /// The nonlinearity.
    pub activation: Activation,
    /// Weight standard deviation `W_std` (> 0), scaled by `1/sqrt(fan_in)`.
    pub w_std: f64,
    /// Bias standard deviation `b_std` (≥ 0).
    pub b_std: f64,
}

/// Deepest network accepted (the per-layer terms are stored per example).
pub const MAX_HIDDEN_LAYERS: usize = 10_000;

impl FcSpec {
    fn validate(&self) -> Result<()> {
        if self.hidden_layers > MAX_HIDDEN_LAYERS {
            return Err(Error::InvalidArgument(format!(
                "hidden_layers must be at most {MAX_HIDDEN_LAYERS}, got {}",
                self.hidden_layers
            )));
        }
        if !(self.w_std.is_finite() && self.w_std > 0.0) {
            return Err(Error::InvalidArgument(format!(
                "w_std must be finite and > 0, got {}",
                self.w_std
            )));
        }
        if !(self.b_std.is_finite() && self.b_std >= 0.0) {
            return Err(Error::InvalidArgument(format!(
                "b_std must be finite and >= 0, got {}",
                self.b_std
            )));
        }
        Ok(())
    }
}

/// The per-layer variance terms of one input set, layer-major (layer `l` of example `i`
/// at `l·n + i`, so a run of examples is a contiguous slice).
///
/// `relu`: `p = sqrt(q)`, `ip = 1/sqrt(q)` (0 when `q = 0`).
/// Erf: `p = 1 + 2q`, `ip = 1/sqrt(1 + 2q)`.
struct Side {
    n: usize,
    layers: usize,
    p: Vec<f64>,
    ip: Vec<f64>,
    /// Final diagonal `(K_ii, Θ_ii)` of the same-input kernel (used when `x2` is `None`).
    diag: Vec<(f64, f64)>,
}

impl Side {
    /// Example `i`'s terms, one per layer (copied out of the layer-major arrays).
    fn row(&self, i: usize, p: &mut Vec<f64>, ip: &mut Vec<f64>) {
        p.clear();
        ip.clear();
        for l in 0..self.layers {
            p.push(self.p[l * self.n + i]);
            ip.push(self.ip[l * self.n + i]);
        }
    }
    fn cols(&self) -> Cols<'_> {
        Cols {
            p: &self.p,
            ip: &self.ip,
            n: self.n,
        }
    }
}

/// Per-example squared norms scaled into `K₀ = w²·|x|²/d + b²`.
fn input_variances(x: MatRef<'_, f64>, w2: f64, b2: f64) -> Vec<f64> {
    let d = x.ncols() as f64;
    (0..x.nrows())
        .map(|i| {
            let s: f64 = (0..x.ncols()).map(|k| x[(i, k)] * x[(i, k)]).sum();
            w2 * s / d + b2
        })
        .collect()
}

/// `E[φ(u)²]` and `E[φ'(u)²]` for `u ~ N(0, q)`.
#[inline]
fn diag_moments(act: Activation, q: f64) -> (f64, f64) {
    match act {
        // c = 1 (θ = 0) exactly; a zero-variance input has correlation 0 (θ = π/2).
        Activation::Relu => {
            if q > 0.0 {
                (0.5 * q, 0.5)
            } else {
                (0.0, 0.25)
            }
        }
        Activation::Erf => {
            let a = 1.0 + 2.0 * q;
            (
                2.0 * FRAC_1_PI * (2.0 * q / a).asin(),
                4.0 * FRAC_1_PI / (1.0 + 4.0 * q).sqrt(),
            )
        }
    }
}

fn prepare(x: MatRef<'_, f64>, spec: &FcSpec) -> Side {
    let (w2, b2) = (spec.w_std * spec.w_std, spec.b_std * spec.b_std);
    let l = spec.hidden_layers;
    let q0 = input_variances(x, w2, b2);
    let n = q0.len();
    let mut p = vec![0.0; n * l];
    let mut ip = vec![0.0; n * l];
    let mut diag = Vec::with_capacity(n);
    for (i, &q_in) in q0.iter().enumerate() {
        let (mut q, mut th) = (q_in, q_in);
        for layer in 0..l {
            let at = layer * n + i;
            match spec.activation {
                Activation::Relu => {
                    let r = q.sqrt();
                    p[at] = r;
                    ip[at] = if r > 0.0 { 1.0 / r } else { 0.0 };
                }
                Activation::Erf => {
                    let a = 1.0 + 2.0 * q;
                    p[at] = a;
                    ip[at] = 1.0 / a.sqrt();
                }
            }
            let (e, ed) = diag_moments(spec.activation, q);
            let q_new = w2 * e + b2;
            th = q_new + w2 * ed * th;
            q = q_new;
        }
        diag.push((q, th));
    }
    Side {
        n,
        layers: l,
        p,
        ip,
        diag,
    }
}

/// One unit of work: the output tile at rows `i0..`, columns `j0..`, and (symmetric case,
/// off-diagonal) the mirrored tile at rows `j0..`, columns `i0..`.
struct Task<'a> {
    i0: usize,
    j0: usize,
    nngp: Option<MatMut<'a, f64>>,
    ntk: Option<MatMut<'a, f64>>,
    nngp_t: Option<MatMut<'a, f64>>,
    ntk_t: Option<MatMut<'a, f64>>,
}

/// Splits `m` into a grid of disjoint `TILE × TILE` views, `grid[bi][bj]`.
fn tile_grid(
    m: Option<MatMut<'_, f64>>,
    nb1: usize,
    nb2: usize,
) -> Vec<Vec<Option<MatMut<'_, f64>>>> {
    let Some(m) = m else {
        return (0..nb1).map(|_| (0..nb2).map(|_| None).collect()).collect();
    };
    let mut grid = Vec::with_capacity(nb1);
    let mut rest = m;
    for _ in 0..nb1 {
        let take = TILE.min(rest.nrows());
        let (rows, tail) = rest.split_at_row_mut(take);
        rest = tail;
        let mut line = Vec::with_capacity(nb2);
        let mut r = rows;
        for _ in 0..nb2 {
            let take = TILE.min(r.ncols());
            let (t, tail) = r.split_at_col_mut(take);
            r = tail;
            line.push(Some(t));
        }
        grid.push(line);
    }
    grid
}

/// The checks shared by every entry point: the spec, `d ≥ 1`, matching `d`, finiteness.
fn check_inputs(x1: MatRef<'_, f64>, x2: Option<MatRef<'_, f64>>, spec: &FcSpec) -> Result<()> {
    spec.validate()?;
    let d = x1.ncols();
    if d == 0 {
        return Err(Error::InvalidArgument(
            "inputs must have at least one feature (d >= 1)".into(),
        ));
    }
    check_finite(x1, "x1")?;
    if let Some(x2) = x2 {
        if x2.ncols() != d {
            return Err(Error::DimensionMismatch {
                what: "x2 feature dimension",
                expected: Shape::Cols(d),
                got: Shape::Matrix(x2.nrows(), x2.ncols()),
            });
        }
        check_finite(x2, "x2")?;
    }
    Ok(())
}

fn check_finite(x: MatRef<'_, f64>, what: &'static str) -> Result<()> {
    for j in 0..x.ncols() {
        for i in 0..x.nrows() {
            if !x[(i, j)].is_finite() {
                return Err(Error::NonFinite { what });
            }
        }
    }
    Ok(())
}

fn check_out(m: Option<&MatMut<'_, f64>>, n1: usize, n2: usize, what: &'static str) -> Result<()> {
    if let Some(m) = m {
        if m.nrows() != n1 || m.ncols() != n2 {
            return Err(Error::DimensionMismatch {
                what,
                expected: Shape::Matrix(n1, n2),
                got: Shape::Matrix(m.nrows(), m.ncols()),
            });
        }
    }
    Ok(())
}

/// Infinite-width NNGP and NTK kernels of a fully connected network.
///
/// * `x1`: `N1 × d` inputs (rows are examples); `x2`: `N2 × d`, or `None` for `x1` itself
///   (then the outputs are exactly symmetric and the diagonal uses correlation 1 exactly).
/// * `nngp`, `ntk`: optional `N1 × N2` outputs (row `i` = example `x1[i]`, like
///   neural-tangents' `kernel_fn(x1, x2)`), any strides; fully overwritten.
///
/// Errors: `d` mismatch, `d = 0`, wrongly sized outputs, non-finite inputs, `w_std ≤ 0`,
/// `b_std < 0`.
pub fn fully_connected(
    x1: MatRef<'_, f64>,
    x2: Option<MatRef<'_, f64>>,
    spec: &FcSpec,
    nngp: Option<MatMut<'_, f64>>,
    ntk: Option<MatMut<'_, f64>>,
    par: Par,
) -> Result<()> {
    check_inputs(x1, x2, spec)?;
    let d = x1.ncols();
    let same = x2.is_none();
    let x2v = x2.unwrap_or(x1);
    let (n1, n2) = (x1.nrows(), x2v.nrows());
    check_out(nngp.as_ref(), n1, n2, "nngp output shape")?;
    check_out(ntk.as_ref(), n1, n2, "ntk output shape")?;
    if (nngp.is_none() && ntk.is_none()) || n1 == 0 || n2 == 0 {
        return Ok(());
    }

    let s1 = prepare(x1, spec);
    let s2 = if same { None } else { Some(prepare(x2v, spec)) };
    let s2 = s2.as_ref().unwrap_or(&s1);

    let (nb1, nb2) = (n1.div_ceil(TILE), n2.div_ceil(TILE));
    let mut g_nngp = tile_grid(nngp, nb1, nb2);
    let want_ntk = ntk.is_some();
    let mut g_ntk = tile_grid(ntk, nb1, nb2);
    let mut tasks = Vec::new();
    for bi in 0..nb1 {
        let bj_end = if same { bi + 1 } else { nb2 };
        for bj in 0..bj_end {
            let mirror = same && bj < bi;
            tasks.push(Task {
                i0: bi * TILE,
                j0: bj * TILE,
                nngp: g_nngp[bi][bj].take(),
                ntk: g_ntk[bi][bj].take(),
                nngp_t: if mirror { g_nngp[bj][bi].take() } else { None },
                ntk_t: if mirror { g_ntk[bj][bi].take() } else { None },
            });
        }
    }

    let l = spec.hidden_layers;
    let (w2, b2) = (spec.w_std * spec.w_std, spec.b_std * spec.b_std);
    let alpha = w2 / d as f64;
    let act = spec.activation;
    let run = |mut t: Task<'_>| {
        let ti = TILE.min(n1 - t.i0);
        let tj = TILE.min(n2 - t.j0);
        // gᵀ: column i holds the pairs (i, j0..j0+tj), contiguous for the row evaluation.
        let mut g = Mat::<f64>::zeros(tj, ti);
        matmul(
            g.as_mut(),
            Accum::Replace,
            x2v.subrows(t.j0, tj),
            x1.subrows(t.i0, ti).transpose(),
            alpha,
            Par::Seq,
        );
        crate::simd::clear_upper_vector_state();
        let mut th = vec![0.0; tj];
        let (mut rp, mut rip) = (Vec::with_capacity(l), Vec::with_capacity(l));
        let cols = s2.cols();
        let diag_tile = same && t.i0 == t.j0;
        for i in 0..ti {
            let gi = t.i0 + i;
            s1.row(gi, &mut rp, &mut rip);
            let row = Row { p: &rp, ip: &rip };
            let jend = if diag_tile { i + 1 } else { tj };
            let k = &mut g.col_as_slice_mut(i)[..jend];
            for v in k.iter_mut() {
                *v += b2;
            }
            eval::entries(act, w2, b2, &row, &cols, t.j0, k, &mut th, want_ntk);
            if diag_tile {
                (k[i], th[i]) = s1.diag[gi];
            }
            for j in 0..jend {
                let (kk, tt) = (k[j], th[j]);
                if let Some(m) = t.nngp.as_mut() {
                    m[(i, j)] = kk;
                    if diag_tile {
                        m[(j, i)] = kk;
                    }
                }
                if let Some(m) = t.ntk.as_mut() {
                    m[(i, j)] = tt;
                    if diag_tile {
                        m[(j, i)] = tt;
                    }
                }
                if let Some(m) = t.nngp_t.as_mut() {
                    m[(j, i)] = kk;
                }
                if let Some(m) = t.ntk_t.as_mut() {
                    m[(j, i)] = tt;
                }
            }
        }
    };
    match par {
        Par::Seq => tasks.into_iter().for_each(run),
        Par::Rayon(_) => tasks.into_par_iter().for_each(run),
    }
    Ok(())
}

#[cfg(test)]
mod tests;
