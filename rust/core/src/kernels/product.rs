//! The fused kernel-times-block product `K(x_a, x_b)·V`, the kernel never stored.
//!
//! The output rows are cut into row tiles of `ROWS` examples and the columns into tiles of
//! `COLS`; for each pair of tiles the entries are computed into a `COLS × ROWS` buffer
//! (the small GEMM `x_b·x_aᵀ`, then the fused recursion of [`super::eval`]) and
//! immediately multiplied into the output by a second small GEMM. Memory: one buffer per
//! thread plus the output, O(tile² + rows·p); one pass over the kernel serves all `p`
//! columns of `V`.
//!
//! For the symmetric kernel (`x2 = None`) only the lower triangle is evaluated and each
//! entry is used twice (`out_i += K_ij v_j` and, off the diagonal, `out_j += K_ij v_i`):
//! half the entries of a full sweep. Its diagonal uses the exact same-input values, as
//! [`super::fully_connected`] does. Row tiles are split into one contiguous group per
//! thread, of equal work, each with a private accumulator summed in group order, so the
//! result depends on the thread count but not on scheduling.

use super::eval::{self, Row};
use super::{check_inputs, prepare, FcSpec, Side};
use crate::{Error, Result, Shape};
use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatMut, MatRef, Par};
use rayon::prelude::*;

/// Output rows per tile (one task of the pool).
const ROWS: usize = 64;
/// Kernel columns per tile (the vectorized run of [`eval::entries`]).
const COLS: usize = 256;

/// Which kernel of the recursion a product uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The NNGP kernel `K_L`.
    Nngp,
    /// The NTK `Θ_L`.
    Ntk,
}

/// The per-example diagonal `K(x_i, x_i)`: `(nngp, ntk)`, each of length `N`, O(N·(d + L)).
pub fn fully_connected_diagonal(x: MatRef<'_, f64>, spec: &FcSpec) -> Result<(Vec<f64>, Vec<f64>)> {
    check_inputs(x, None, spec)?;
    let side = prepare(x, spec);
    Ok(side.diag.iter().copied().unzip())
}

/// Shared, read-only state of one product.
struct Ctx<'a> {
    spec: &'a FcSpec,
    kind: Kind,
    /// `x_b`: the examples of the kernel's columns.
    xb: MatRef<'a, f64>,
    cols: &'a Side,
    alpha: f64,
    v: MatRef<'a, f64>,
}

impl Ctx<'_> {
    /// The entries `K(x_a[i], x_b[j0 + j])` into `g` (`tj × ti`, column `i` for row `i`),
    /// for `j < jend[i]` (the rest of column `i` is zeroed); `rows` is the row side, `xa`
    /// its examples, `ra0` the index of the tile's first row in `rows`.
    fn tile(
        &self,
        mut g: MatMut<'_, f64>,
        xa: MatRef<'_, f64>,
        rows: &Side,
        ra0: usize,
        j0: usize,
        jend: impl Fn(usize) -> usize,
        scratch: &mut Scratch,
    ) {
        let (tj, ti) = (g.nrows(), g.ncols());
        matmul(
            g.as_mut(),
            Accum::Replace,
            self.xb.subrows(j0, tj),
            xa.transpose(),
            self.alpha,
            Par::Seq,
        );
        crate::simd::clear_upper_vector_state();
        let (w2, b2) = (
            self.spec.w_std * self.spec.w_std,
            self.spec.b_std * self.spec.b_std,
        );
        let cols = self.cols.cols();
        let ntk = self.kind == Kind::Ntk;
        for i in 0..ti {
            rows.row(ra0 + i, &mut scratch.p, &mut scratch.ip);
            let row = Row {
                p: &scratch.p,
                ip: &scratch.ip,
            };
            let m = jend(i).min(tj);
            let col = g
                .as_mut()
                .col_mut(i)
                .try_as_col_major_mut()
                .unwrap()
                .as_slice_mut();
            let (k, rest) = col.split_at_mut(m);
            rest.fill(0.0);
            for e in k.iter_mut() {
                *e += b2;
            }
            eval::entries(
                self.spec.activation,
                w2,
                b2,
                &row,
                &cols,
                j0,
                k,
                &mut scratch.th,
                ntk,
            );
            if ntk {
                k.copy_from_slice(&scratch.th[..m]);
            }
        }
    }
}

/// Per-thread scratch: the row's per-layer terms and the `Θ` run.
struct Scratch {
    p: Vec<f64>,
    ip: Vec<f64>,
    th: Vec<f64>,
}

impl Scratch {
    fn new() -> Self {
        Scratch {
            p: Vec::new(),
            ip: Vec::new(),
            th: vec![0.0; COLS],
        }
    }
}

fn threads_of(par: Par) -> usize {
    match par {
        Par::Seq => 1,
        Par::Rayon(n) => n.get(),
    }
}

/// The fused product of the fully connected kernel (docs: module [`super::product`]).
///
/// * `x2 = Some(x2)`: `out = K(x1[r0..r1], x2) · v`; `v` is `N2 × p`, `out` is
///   `(r1 − r0) × p`.
/// * `x2 = None` (the symmetric `K(x1, x1)`): `out` (`r1 × p`) receives the contribution of
///   the lower-triangle entries `(i, j)`, `r0 ≤ i < r1`, `j ≤ i`: `out_i += K_ij v_j` and,
///   for `j < i`, `out_j += K_ij v_i`; `v` is `N1 × p`. The outputs of row ranges that
///   partition `0..N1`, added, are `K · v`.
///
/// `out` is overwritten. Errors: those of [`super::fully_connected`], `r0 > r1 > N1`, a
/// wrongly shaped `v` or `out`, a non-finite `v`.
pub fn fully_connected_matmat(
    x1: MatRef<'_, f64>,
    x2: Option<MatRef<'_, f64>>,
    rows: (usize, usize),
    spec: &FcSpec,
    kind: Kind,
    v: MatRef<'_, f64>,
    mut out: MatMut<'_, f64>,
    par: Par,
) -> Result<()> {
    check_inputs(x1, x2, spec)?;
    let (r0, r1) = rows;
    let n1 = x1.nrows();
    if r0 > r1 || r1 > n1 {
        return Err(Error::InvalidArgument(format!(
            "the row range {r0}..{r1} must lie in 0..{n1}"
        )));
    }
    let xb = x2.unwrap_or(x1);
    let p = v.ncols();
    if v.nrows() != xb.nrows() {
        return Err(Error::DimensionMismatch {
            what: "v rows (the kernel's columns)",
            expected: Shape::Rows(xb.nrows()),
            got: Shape::Matrix(v.nrows(), v.ncols()),
        });
    }
    let out_rows = if x2.is_some() { r1 - r0 } else { r1 };
    if out.nrows() != out_rows || out.ncols() != p {
        return Err(Error::DimensionMismatch {
            what: "product output shape",
            expected: Shape::Matrix(out_rows, p),
            got: Shape::Matrix(out.nrows(), out.ncols()),
        });
    }
    super::check_finite(v, "v")?;
    out.fill(0.0);
    if r0 == r1 || p == 0 || xb.nrows() == 0 {
        return Ok(());
    }
    let alpha = spec.w_std * spec.w_std / x1.ncols() as f64;
    if let Some(x2) = x2 {
        let xa = x1.subrows(r0, r1 - r0);
        let rows_side = prepare(xa, spec);
        let cols_side = prepare(x2, spec);
        let ctx = Ctx {
            spec,
            kind,
            xb: x2,
            cols: &cols_side,
            alpha,
            v,
        };
        rectangular(&ctx, xa, &rows_side, out, par);
    } else {
        let side = prepare(x1, spec);
        let ctx = Ctx {
            spec,
            kind,
            xb: x1,
            cols: &side,
            alpha,
            v,
        };
        symmetric(&ctx, r0, r1, out, par);
    }
    Ok(())
}

/// `out = K(xa, xb) · v`, row tiles in parallel (each owns its output rows).
fn rectangular(ctx: &Ctx<'_>, xa: MatRef<'_, f64>, rows: &Side, out: MatMut<'_, f64>, par: Par) {
    let n2 = ctx.xb.nrows();
    let mut tiles = Vec::new();
    let mut rest = out;
    let mut i0 = 0;
    while rest.nrows() > 0 {
        let take = ROWS.min(rest.nrows());
        let (t, tail) = rest.split_at_row_mut(take);
        tiles.push((i0, t));
        rest = tail;
        i0 += take;
    }
    let run = |scratch: &mut Scratch, g: &mut Mat<f64>, (i0, mut o): (usize, MatMut<'_, f64>)| {
        let ti = o.nrows();
        for j0 in (0..n2).step_by(COLS) {
            let tj = COLS.min(n2 - j0);
            let mut gv = g.as_mut().submatrix_mut(0, 0, tj, ti);
            ctx.tile(
                gv.as_mut(),
                xa.subrows(i0, ti),
                rows,
                i0,
                j0,
                |_| tj,
                scratch,
            );
            matmul(
                o.as_mut(),
                Accum::Add,
                gv.as_ref().transpose(),
                ctx.v.subrows(j0, tj),
                1.0,
                Par::Seq,
            );
        }
    };
    let init = || (Scratch::new(), Mat::<f64>::zeros(COLS, ROWS));
    match par {
        Par::Seq => {
            let (mut s, mut g) = init();
            for t in tiles {
                run(&mut s, &mut g, t);
            }
        }
        Par::Rayon(_) => tiles
            .into_par_iter()
            .for_each_init(init, |(s, g), t| run(s, g, t)),
    }
}

/// The lower-triangle contribution of rows `r0..r1` into `out` (`r1 × p`).
fn symmetric(ctx: &Ctx<'_>, r0: usize, r1: usize, mut out: MatMut<'_, f64>, par: Par) {
    let p = ctx.v.ncols();
    let x = ctx.xb;
    let side = ctx.cols;
    // Row tiles and their work (entries of the lower triangle), split into contiguous
    // groups of about equal work, one per thread.
    let tiles: Vec<(usize, usize)> = (r0..r1)
        .step_by(ROWS)
        .map(|i0| (i0, ROWS.min(r1 - i0)))
        .collect();
    let total: usize = tiles.iter().map(|&(i0, ti)| i0 + ti).sum();
    let n_groups = threads_of(par).min(tiles.len()).max(1);
    let mut groups: Vec<Vec<(usize, usize)>> = vec![Vec::new(); n_groups];
    let mut acc_work = 0;
    for &(i0, ti) in &tiles {
        let gi = ((acc_work * n_groups) / total.max(1)).min(n_groups - 1);
        groups[gi].push((i0, ti));
        acc_work += i0 + ti;
    }
    let run = |group: &Vec<(usize, usize)>| -> Mat<f64> {
        let mut acc = Mat::<f64>::zeros(r1, p);
        let mut g = Mat::<f64>::zeros(COLS, ROWS);
        let mut scratch = Scratch::new();
        for &(i0, ti) in group {
            let i1 = i0 + ti;
            for j0 in (0..i1).step_by(COLS) {
                let tj = COLS.min(i1 - j0);
                let mut gv = g.as_mut().submatrix_mut(0, 0, tj, ti);
                // Row i0 + i keeps the columns j0 + j <= i0 + i.
                let jend = |i: usize| (i0 + i + 1).saturating_sub(j0);
                ctx.tile(
                    gv.as_mut(),
                    x.subrows(i0, ti),
                    side,
                    i0,
                    j0,
                    jend,
                    &mut scratch,
                );
                let diag = ctx.kind;
                for i in 0..ti {
                    let gi = i0 + i;
                    if gi >= j0 && gi < j0 + tj {
                        let (k, th) = side.diag[gi];
                        gv[(gi - j0, i)] = if diag == Kind::Ntk { th } else { k };
                    }
                }
                matmul(
                    acc.as_mut().subrows_mut(i0, ti),
                    Accum::Add,
                    gv.as_ref().transpose(),
                    ctx.v.subrows(j0, tj),
                    1.0,
                    Par::Seq,
                );
                // The mirrored entries, the diagonal once only.
                for i in 0..ti {
                    let gi = i0 + i;
                    if gi >= j0 && gi < j0 + tj {
                        gv[(gi - j0, i)] = 0.0;
                    }
                }
                matmul(
                    acc.as_mut().subrows_mut(j0, tj),
                    Accum::Add,
                    gv.as_ref(),
                    ctx.v.subrows(i0, ti),
                    1.0,
                    Par::Seq,
                );
            }
        }
        acc
    };
    let parts: Vec<Mat<f64>> = match par {
        Par::Seq => groups.iter().map(run).collect(),
        Par::Rayon(_) => groups.par_iter().map(run).collect(),
    };
    for part in &parts {
        for j in 0..p {
            for i in 0..r1 {
                out[(i, j)] += part[(i, j)];
            }
        }
    }
}
