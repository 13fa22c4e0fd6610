//! `A = sym(K) + λI` and its symmetric eigendecomposition (faer's divide and conquer).
//!
//! Scaling (docs/numerics.md, "Scale invariance"): faer's divide-and-conquer tridiagonal
//! solver compares against absolute numbers (its deflation tolerance is
//! `8ε·max(max|d|, max|z|)` with `z` a unit vector, and its secular-equation iteration stops
//! once `|Δf| ≤ ε`), so it is only accurate on matrices of norm about 1. Every factorization
//! here therefore works on `2^-e·A` with `e` the binary exponent of `max|A_ij|`: a
//! multiplication by a power of two changes no bit of the problem, and the eigenvalues are
//! handed back together with `e` (or unscaled exactly, [`ldexp`]).
//!
//! Inputs are read through `MatRef` views of any stride; a C-contiguous NumPy array is
//! the transpose of a column-major matrix, which for these symmetric measures changes
//! nothing. The input is never written: the only copy is the lower triangle of `A`, in the
//! compute precision `T` (the conversion from the input type `S` happens in that copy).

use crate::{Error, Real, Result, Shape};
use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::evd::{self, ComputeEigenvectors};
use faer::linalg::matmul::matmul;
use faer::prelude::{Reborrow, ReborrowMut};
use faer::{Accum, Mat, MatMut, MatRef, Par};
use rayon::prelude::*;

/// Column block used to tile O(N²) passes (64 doubles = one 512-byte row of a tile).
const TILE: usize = 64;

/// Summary of a square kernel, computed in one tiled, parallel pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KernelStats {
    /// `max |K_ij|`.
    pub max_abs: f64,
    /// `max |K_ij − K_ji|`.
    pub max_asym: f64,
    /// `trace(K)`.
    pub trace: f64,
    /// Whether every entry is finite.
    pub finite: bool,
}

impl KernelStats {
    /// Whether `max|K − Kᵀ| ≤ rtol · max|K|` (the API accepts `rtol = 1e-5`).
    #[must_use]
    pub fn is_symmetric(&self, rtol: f64) -> bool {
        self.max_asym <= rtol * self.max_abs
    }
}

/// Independent running maxima in [`kernel_stats`]' inner loop.
const LANES: usize = 4;

/// Finiteness, largest entry, largest asymmetry and trace of a square matrix.
pub fn kernel_stats<S: Real>(k: MatRef<'_, S>, par: Par) -> Result<KernelStats> {
    let n = check_square(k, "k_train_train")?;
    // every statistic is the same for Kᵀ (maxima are exact, the trace is summed in the
    // same order): read a row-major K as its column-major transpose, the order the loops
    // below walk through memory a cache line at a time
    let k = if k.col_stride().unsigned_abs() < k.row_stride().unsigned_abs() {
        k.transpose()
    } else {
        k
    };
    let blocks: Vec<usize> = (0..n).step_by(TILE).collect();
    let fold = |j0: usize| {
        let mut st = KernelStats {
            max_abs: 0.0,
            max_asym: 0.0,
            trace: 0.0,
            finite: true,
        };
        let j1 = (j0 + TILE).min(n);
        let (rs, cs) = (k.row_stride(), k.col_stride());
        let p = k.as_ptr();
        for j in j0..j1 {
            st.trace += k[(j, j)].to_f64();
        }
        let at = |i: usize, j: usize| -> f64 {
            // SAFETY: callers pass i, j < n, which index the n × n matrix through its own
            // strides.
            unsafe { (*p.offset(i as isize * rs + j as isize * cs)).to_f64() }
        };
        for i0 in (j0..n).step_by(TILE) {
            let i1 = (i0 + TILE).min(n);
            // 8 × 8 blocks strictly below the diagonal: K[jb.., ib..] read into a local
            // block first, so that both K_ij and K_ji are read a cache line at a time
            // (one strided column per entry was latency-bound); the maxima are exact, in
            // any order
            let mut below = i0;
            if i0 >= j1 && i1 - i0 == TILE && j1 - j0 == TILE {
                let (mut fin, mut mabs, mut masym) = (true, [0.0f64; 8], [0.0f64; 8]);
                for jb in (j0..j1).step_by(8) {
                    for ib in (i0..i1).step_by(8) {
                        let mut b = [[0.0f64; 8]; 8];
                        for (c, row) in b.iter_mut().enumerate() {
                            for (r, x) in row.iter_mut().enumerate() {
                                *x = at(jb + c, ib + r);
                            }
                        }
                        for r in 0..8 {
                            for c in 0..8 {
                                let (a, bt) = (at(ib + r, jb + c), b[c][r]);
                                fin &= a.is_finite() & bt.is_finite();
                                let (m, d) = (a.abs().max(bt.abs()), (a - bt).abs());
                                mabs[c] = if m > mabs[c] { m } else { mabs[c] };
                                masym[c] = if d > masym[c] { d } else { masym[c] };
                            }
                        }
                    }
                }
                st.finite &= fin;
                st.max_abs = mabs.iter().fold(st.max_abs, |x, &y| x.max(y));
                st.max_asym = masym.iter().fold(st.max_asym, |x, &y| x.max(y));
                below = i1;
            }
            for j in j0..j1 {
                if below >= i1 {
                    break;
                }
                // column j and row j from the diagonal block on: K_ij and K_ji (unchecked
                // reads: i, j < n; branch-free so the loop stays a straight pass), in four
                // independent lanes so that the running maxima are not one dependency chain
                // (a NaN fails `x > m` and is caught by the finiteness flag instead)
                let (mut fin, mut mabs, mut masym) = (true, [0.0f64; LANES], [0.0f64; LANES]);
                let pair = |i: usize| {
                    // SAFETY: i, j < n index the n × n matrix through its own strides.
                    unsafe {
                        (
                            (*p.offset(i as isize * rs + j as isize * cs)).to_f64(),
                            (*p.offset(j as isize * rs + i as isize * cs)).to_f64(),
                        )
                    }
                };
                let mut lane = |q: usize, (a, b): (f64, f64)| {
                    fin &= a.is_finite() & b.is_finite();
                    let (m, d) = (a.abs().max(b.abs()), (a - b).abs());
                    mabs[q] = if m > mabs[q] { m } else { mabs[q] };
                    masym[q] = if d > masym[q] { d } else { masym[q] };
                };
                let (start, end) = (i0.max(j), i1);
                let mut i = start;
                while i + LANES <= end {
                    for q in 0..LANES {
                        lane(q, pair(i + q));
                    }
                    i += LANES;
                }
                for r in i..end {
                    lane(0, pair(r));
                }
                st.finite &= fin;
                st.max_abs = mabs.iter().fold(st.max_abs, |x, &y| x.max(y));
                st.max_asym = masym.iter().fold(st.max_asym, |x, &y| x.max(y));
            }
        }
        st
    };
    let merge = |a: KernelStats, b: KernelStats| KernelStats {
        max_abs: a.max_abs.max(b.max_abs),
        max_asym: a.max_asym.max(b.max_asym),
        trace: a.trace + b.trace,
        finite: a.finite && b.finite,
    };
    let zero = KernelStats {
        max_abs: 0.0,
        max_asym: 0.0,
        trace: 0.0,
        finite: true,
    };
    Ok(match par {
        Par::Seq => blocks.into_iter().map(fold).fold(zero, merge),
        Par::Rayon(_) => blocks.into_par_iter().map(fold).reduce(|| zero, merge),
    })
}

/// Entries per task of [`all_finite`] (a few hundred kilobytes).
const FINITE_CHUNK: usize = 1 << 15;

/// Whether every entry of `x` is finite: one pass in eight independent lanes, split over
/// threads by chunks under `Par::Rayon`, and stopping at the first chunk with a NaN or an
/// infinity (a memory pass, where a boolean temporary would be written and read again).
pub fn all_finite<S: Real>(x: &[S], par: Par) -> bool {
    let chunk_ok = |c: &[S]| {
        let mut ok = [true; 8];
        let full = c.len() / 8 * 8;
        for w in c[..full].chunks_exact(8) {
            for q in 0..8 {
                ok[q] &= w[q].to_f64().abs() <= f64::MAX;
            }
        }
        c[full..].iter().all(|v| v.to_f64().abs() <= f64::MAX) && ok.iter().all(|&b| b)
    };
    match par {
        Par::Seq => x.chunks(FINITE_CHUNK).all(chunk_ok),
        Par::Rayon(_) => x.par_chunks(FINITE_CHUNK).all(chunk_ok),
    }
}

pub(crate) fn check_square<S>(k: MatRef<'_, S>, what: &'static str) -> Result<usize> {
    if k.nrows() == k.ncols() {
        Ok(k.nrows())
    } else {
        Err(Error::NotSquare {
            what,
            nrows: k.nrows(),
            ncols: k.ncols(),
        })
    }
}

/// The binary exponent `e` of `x`: `x = f·2^e` with `|f|` in `[0.5, 1)` (like C's `frexp`);
/// 0 for zero and non-finite `x`. Subnormal `x` are handled exactly.
#[must_use]
pub fn exponent(x: f64) -> i32 {
    if x == 0.0 || !x.is_finite() {
        return 0;
    }
    let bits = x.abs().to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i32;
    if biased == 0 {
        // subnormal: scale into the normal range first (exact)
        return exponent(x * f64::from_bits(0x4350_0000_0000_0000)) - 54; // 2^54
    }
    biased - 1022
}

/// `x·2^e`, exact whenever the result is a normal number (steps of at most 2^±1000, so no
/// intermediate leaves the normal range before the last step).
#[must_use]
pub fn ldexp(mut x: f64, mut e: i32) -> f64 {
    let big = f64::from_bits(((1023 + 1000) as u64) << 52); // 2^1000
    let small = f64::from_bits(((1023 - 1000) as u64) << 52); // 2^-1000
    while e > 1000 {
        x *= big;
        e -= 1000;
    }
    while e < -1000 {
        x *= small;
        e += 1000;
    }
    x * pow2(e)
}

/// `2^e` for `|e| ≤ 1000` (a normal number).
fn pow2(e: i32) -> f64 {
    debug_assert!((-1000..=1000).contains(&e));
    f64::from_bits(((1023 + e) as u64) << 52)
}

/// Multiplication by `2^-e` as two normal factors (exact on normal results).
#[derive(Debug, Clone, Copy)]
struct Pow2Scale(f64, f64);

impl Pow2Scale {
    fn new(e: i32) -> Self {
        let m = -e;
        if m.abs() <= 1000 {
            Pow2Scale(pow2(m), 1.0)
        } else {
            let first = if m > 0 { 1000 } else { -1000 };
            Pow2Scale(pow2(first), pow2(m - first))
        }
    }
    #[inline]
    fn apply(self, x: f64) -> f64 {
        x * self.0 * self.1
    }
}

/// The exponent `e` the factorizations scale `A = sym(K) + shift·I` by (`2^-e·A`):
/// that of `max(max|K_ij|, |shift|)`, so the scaled entries are at most 1 in magnitude.
pub fn scale_exponent<S: Real>(k: MatRef<'_, S>, shift: f64, par: Par) -> Result<i32> {
    let st = kernel_stats(k, par)?;
    if !st.finite || !shift.is_finite() {
        return Err(Error::NonFinite {
            what: "k_train_train",
        });
    }
    Ok(exponent(st.max_abs.max(shift.abs())))
}

/// Writes the lower triangle of `sym(K) + shift·I` into `out` (converted to `T`) and
/// returns `max_i Σ_j |A_ij|`, the ∞-norm of `A` (an upper bound of its spectral radius).
/// The strict upper triangle of `out` is left untouched.
pub fn symmetrize_lower<S: Real, T: Real>(
    k: MatRef<'_, S>,
    shift: f64,
    out: MatMut<'_, T>,
    par: Par,
) -> Result<f64> {
    symmetrize_lower_scaled(k, shift, 0, out, par)
}

/// [`symmetrize_lower`] of `2^-e·A`: the lower triangle of `2^-e·(sym(K) + shift·I)`
/// (each entry scaled before it is symmetrized, so subnormal and huge kernels lose no bit)
/// and its ∞-norm.
pub fn symmetrize_lower_scaled<S: Real, T: Real>(
    k: MatRef<'_, S>,
    shift: f64,
    e: i32,
    out: MatMut<'_, T>,
    par: Par,
) -> Result<f64> {
    let n = check_square(k, "k_train_train")?;
    let sc = Pow2Scale::new(e);
    let shift = sc.apply(shift);
    if out.nrows() != n || out.ncols() != n {
        return Err(Error::DimensionMismatch {
            what: "output of symmetrize",
            expected: Shape::Matrix(n, n),
            got: Shape::Matrix(out.nrows(), out.ncols()),
        });
    }
    // Row sums of |A| accumulate per column block, then add up.
    let (rs, cs) = (k.row_stride(), k.col_stride());
    let fill = |(b, mut cols): (usize, MatMut<'_, T>)| -> Vec<f64> {
        let j0 = b * TILE;
        let p = k.as_ptr();
        let mut rowsum = vec![0.0f64; n];
        for i0 in (j0..n).step_by(TILE) {
            let i1 = (i0 + TILE).min(n);
            for jj in 0..cols.ncols() {
                let j = j0 + jj;
                for i in i0.max(j)..i1 {
                    // SAFETY: i, j < n index the n × n matrix through its own strides.
                    let (kij, kji) = unsafe {
                        (
                            (*p.offset(i as isize * rs + j as isize * cs)).to_f64(),
                            (*p.offset(j as isize * rs + i as isize * cs)).to_f64(),
                        )
                    };
                    let mut a = 0.5 * sc.apply(kij) + 0.5 * sc.apply(kji);
                    if i == j {
                        a += shift;
                    }
                    cols[(i, jj)] = T::from_f64(a);
                    rowsum[i] += a.abs();
                    if i != j {
                        rowsum[j] += a.abs();
                    }
                }
            }
        }
        rowsum
    };
    let add = |mut a: Vec<f64>, b: Vec<f64>| {
        a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        a
    };
    let sums = match par {
        Par::Seq => out
            .col_chunks_mut_compat(TILE)
            .enumerate()
            .map(fill)
            .fold(vec![0.0; n], add),
        Par::Rayon(_) => out
            .par_col_chunks_mut(TILE)
            .enumerate()
            .map(fill)
            .reduce(|| vec![0.0; n], add),
    };
    Ok(sums.into_iter().fold(0.0, f64::max))
}

/// Sequential column chunks (faer has only the parallel iterator for chunks).
trait ColChunks<'a, T> {
    fn col_chunks_mut_compat(self, size: usize) -> std::vec::IntoIter<MatMut<'a, T>>;
}

impl<'a, T> ColChunks<'a, T> for MatMut<'a, T> {
    fn col_chunks_mut_compat(self, size: usize) -> std::vec::IntoIter<MatMut<'a, T>> {
        let mut rest = self;
        let mut chunks = Vec::new();
        while rest.ncols() > 0 {
            let take = size.min(rest.ncols());
            let (head, tail) = rest.split_at_col_mut(take);
            chunks.push(head);
            rest = tail;
        }
        chunks.into_iter()
    }
}

/// Eigendecomposition of the symmetric matrix whose lower triangle is stored in `a`:
/// eigenvalues ascending into `w`, orthonormal eigenvectors into the columns of `v`.
pub fn eigh_lower<T: Real>(
    a: MatRef<'_, T>,
    w: &mut [T],
    v: MatMut<'_, T>,
    par: Par,
) -> Result<()> {
    let n = check_square(a, "matrix")?;
    check_eigh_outputs(n, w.len(), v.rb())?;
    if n == 0 {
        return Ok(());
    }
    let req =
        evd::self_adjoint_evd_scratch::<T>(n, ComputeEigenvectors::Yes, par, Default::default());
    let mut buf = MemBuffer::new(req);
    let stack = MemStack::new(&mut buf);
    let s = faer::diag::DiagMut::from_slice_mut(w);
    evd::self_adjoint_evd(a, s, Some(v), par, stack, Default::default())
        .map_err(|_| Error::NoConvergence)
}

fn check_eigh_outputs<T>(n: usize, w_len: usize, v: MatRef<'_, T>) -> Result<()> {
    if w_len != n {
        return Err(Error::DimensionMismatch {
            what: "eigenvalue output",
            expected: Shape::Len(n),
            got: Shape::Len(w_len),
        });
    }
    if v.nrows() != n || v.ncols() != n {
        return Err(Error::DimensionMismatch {
            what: "eigenvector output",
            expected: Shape::Matrix(n, n),
            got: Shape::Matrix(v.nrows(), v.ncols()),
        });
    }
    Ok(())
}

/// Seconds spent in each stage of one [`sym_eigh_scaled_timed`] (docs/performance.md,
/// "Where the time goes in factorize()"). Not printed anywhere by default: the benchmark
/// reads it through a private binding.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EighTimings {
    /// The pass over `K` for `max|K_ij|` (the scaling exponent) and finiteness.
    pub scale: f64,
    /// The fused pass writing the lower triangle of `2^-e·(sym(K) + shift·I)`.
    pub symmetrize: f64,
    /// faer's Householder tridiagonalization, in place in that buffer.
    pub tridiagonalize: f64,
    /// faer's divide-and-conquer solve of the tridiagonal problem (eigenvectors into `V`).
    pub tridiagonal_solve: f64,
    /// Applying the Householder reflectors to `V` (back-transformation).
    pub back_transform: f64,
    /// Eigenvalues to float64, and the allocation of the work space.
    pub other: f64,
    /// Set by the caller: time in CPU seconds of the whole process (all threads, spinning
    /// included) instead of wall-clock seconds; robust to other processes' load when the
    /// library runs on one thread.
    pub process_cpu: bool,
}

/// Seconds on the clock [`EighTimings::process_cpu`] chooses.
fn clock_now(process_cpu: bool) -> f64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    if process_cpu {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes the timespec it is given.
        if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &raw mut ts) } == 0 {
            return ts.tv_sec as f64 + 1e-9 * ts.tv_nsec as f64;
        }
    }
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_secs_f64()
}

/// Seconds since `*t` on the chosen clock; moves `*t` to now.
fn lap(t: &mut f64, process_cpu: bool) -> f64 {
    let now = clock_now(process_cpu);
    let dt = now - *t;
    *t = now;
    dt
}

/// Operations of an eigendecomposition of size `n` (about `6n³`), for
/// [`crate::threads::install_sized`].
#[must_use]
pub fn eigh_work(n: usize) -> usize {
    6usize.saturating_mul(n).saturating_mul(n).saturating_mul(n)
}

/// Work of one validation pass over `k` for [`crate::threads::install_sized`]: a memory
/// pass, weighted so that matrices below about 1000×1000 stay on the calling thread.
#[must_use]
pub fn stats_work<S>(k: MatRef<'_, S>) -> usize {
    16usize.saturating_mul(k.nrows()).saturating_mul(k.ncols())
}

/// `2^-e·(sym(K) + shift·I) = V diag(w) Vᵀ` for a kernel `K` of element type `S`, computed
/// in `T`; returns `e` ([`scale_exponent`]). The eigenvalues `w` of the scaled matrix are
/// float64 whatever `T`, so `w·2^e` can be formed exactly even where `T` would underflow.
/// `K` is read only; one `N×N` buffer of `T` holds the symmetrized, scaled copy.
pub fn sym_eigh_scaled<S: Real, T: Real>(
    k: MatRef<'_, S>,
    shift: f64,
    w: &mut [f64],
    v: MatMut<'_, T>,
    par: Par,
) -> Result<i32> {
    sym_eigh_scaled_timed(k, shift, w, v, par, None)
}

/// [`sym_eigh_scaled`], with the seconds of each stage added to `timings` when given.
///
/// The stages are called one by one, so that the symmetrized, scaled copy is written
/// straight into the buffer that is tridiagonalized in place: one `N×N` buffer fewer, and
/// one copy pass fewer, than handing that copy to faer's `self_adjoint_evd` (which copies
/// its input again). The reduction is the core's blocked one where it is vectorized
/// ([`crate::tridiag`]), faer's otherwise; then faer's divide and conquer and
/// back-transformation. Only the lower triangle of the buffer is ever written or read, so
/// the pages of the strict upper triangle are never touched (docs/performance.md).
pub fn sym_eigh_scaled_timed<S: Real, T: Real>(
    k: MatRef<'_, S>,
    shift: f64,
    w: &mut [f64],
    v: MatMut<'_, T>,
    par: Par,
    timings: Option<&mut EighTimings>,
) -> Result<i32> {
    sym_eigh_scaled_tuned(k, shift, w, v, par, timings, EighTuning::default())
}

/// Tuning parameters of the eigendecomposition's stages; `0` keeps the default. The
/// library uses the defaults; the benchmark's diagnostic varies them
/// (docs/performance.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EighTuning {
    /// Reflectors per block of [`Reflectors`] (default: faer's block size for N, at least
    /// 32; blocks narrower than [`MIN_APPLY_WIDTH`] are applied by plain loops).
    pub block_size: usize,
    /// Size below which faer's divide and conquer solves by QR iteration (faer: 128).
    /// Setting it also sends sizes up to [`crate::ql::MAX_N`] to faer's solver instead of
    /// the core's QL iteration, for comparison.
    pub recursion_threshold: usize,
    /// Trailing-matrix size (`m²/2`) below which the tridiagonalization's products run on
    /// one thread (`crate::tridiag::PAR_THRESHOLD`).
    pub par_threshold: usize,
    /// Panel width of the blocked tridiagonalization (`crate::tridiag::default_block`).
    pub tridiag_block: usize,
}

/// [`sym_eigh_scaled_timed`] with faer's parameters set by `tuning`.
pub fn sym_eigh_scaled_tuned<S: Real, T: Real>(
    k: MatRef<'_, S>,
    shift: f64,
    w: &mut [f64],
    mut v: MatMut<'_, T>,
    par: Par,
    timings: Option<&mut EighTimings>,
    tuning: EighTuning,
) -> Result<i32> {
    let cpu = timings.as_ref().is_some_and(|t| t.process_cpu);
    let mut tm = EighTimings {
        process_cpu: cpu,
        ..EighTimings::default()
    };
    let (e, q) = sym_eigh_factored_tuned(k, shift, w, v.rb_mut(), par, Some(&mut tm), tuning)?;
    let mut clock = clock_now(cpu);
    q.apply(v, par);
    tm.back_transform = lap(&mut clock, cpu);
    if let Some(t) = timings {
        *t = tm;
    }
    Ok(e)
}

/// The orthogonal factor `Q` of the tridiagonal reduction `2^-e·A = Q T Qᵀ`, kept as its
/// Householder reflectors (docs/numerics.md §17): with `T = Z diag(w) Zᵀ` the
/// eigenvectors are `V = Q Z`. Applying `Q` to `c` columns costs `2N²c`; forming `V`
/// (the back-transformation) is the same product with `c = N`, so a caller that needs only
/// thin products `V X` and `Vᵀ Y` applies `Q` to them and never forms `V`.
///
/// `Q = B₀ B₁ ⋯` with block reflectors `B = I − Y S Yᵀ` of up to `bs` columns each (`Y`
/// unit lower trapezoidal, `S` upper triangular). Each block is stored as a dense `Y`
/// (explicit ones and zeros) and a dense `S` (the inverse of faer's triangular factor), so
/// that applying it is three matrix products and nothing else: with every dimension at
/// least [`MIN_APPLY_WIDTH`], faer computes each output column by the same operations
/// whatever the number of columns, their position and the thread count, and so a column of
/// `Q X` depends on the same column of `X` alone (narrower inputs are padded).
pub struct Reflectors<T> {
    /// `n × n`, column-major: block `[j₀, j₀ + b)` holds its `Y` in rows `j₀ + 1 ..`.
    a: ZeroedSquare<T>,
    /// `bs × (n − 1)`: block `[j₀, j₀ + b)` holds its `S` (`b × b`, zero below the diagonal).
    s: Mat<T>,
    bs: usize,
}

/// An `n × n` column-major matrix of zeros from the allocator's zeroed pages, 64-byte
/// aligned: every element is initialized, and a page that is never written costs no memory
/// (the reduction writes only the lower triangle and a band above it).
struct ZeroedSquare<T> {
    buf: Vec<T>,
    off: usize,
    n: usize,
}

impl<T: Real> ZeroedSquare<T> {
    fn new(n: usize) -> Self {
        let size = std::mem::size_of::<T>();
        let buf = vec![T::from_f64(0.0); n * n + 64 / size];
        let off = ((64 - buf.as_ptr() as usize % 64) % 64) / size;
        ZeroedSquare { buf, off, n }
    }

    fn as_ref(&self) -> MatRef<'_, T> {
        let n = self.n;
        MatRef::from_column_major_slice(&self.buf[self.off..self.off + n * n], n, n)
    }

    fn as_mut(&mut self) -> MatMut<'_, T> {
        let n = self.n;
        MatMut::from_column_major_slice_mut(&mut self.buf[self.off..self.off + n * n], n, n)
    }
}

/// The narrowest product [`Reflectors::apply`] issues (and the width inputs are padded to):
/// every dimension of every product is at least this, above faer's small-product kernels.
pub const MIN_APPLY_WIDTH: usize = 17;

impl<T: Real> Reflectors<T> {
    /// Turns the reduction's output (`a` with faer's reflector layout below the
    /// subdiagonal, `hh` its block factors of `bs` columns) into the dense blocks; `a`'s
    /// diagonal and subdiagonal (the tridiagonal matrix, read before) are overwritten.
    fn from_reduction(mut buf: ZeroedSquare<T>, hh: MatRef<'_, T>, bs: usize) -> Self {
        let n = buf.n;
        let mut a = buf.as_mut();
        let n1 = n.saturating_sub(1);
        let mut s = Mat::<T>::zeros(bs.max(1), n1);
        let (zero, one) = (T::from_f64(0.0), T::from_f64(1.0));
        let mut j0 = 0;
        while j0 < n1 {
            let b = bs.min(n1 - j0);
            for q in 0..b {
                let j = j0 + q;
                for i in j0 + 1..=j {
                    a[(i, j)] = zero;
                }
                a[(j + 1, j)] = one;
            }
            // S = T⁻¹ (faer applies a block as I − Y T⁻¹ Yᵀ), by columns: T S = I
            let t = hh.submatrix(0, j0, b, b);
            let mut sb = s.as_mut().submatrix_mut(0, j0, b, b);
            for c in 0..b {
                for i in (0..=c).rev() {
                    let mut acc = if i == c { one } else { zero };
                    for l in i + 1..=c {
                        acc -= t[(i, l)] * sb[(l, c)];
                    }
                    sb[(i, c)] = acc / t[(i, i)];
                }
            }
            j0 += b;
        }
        Reflectors {
            a: buf,
            s,
            bs: bs.max(1),
        }
    }

    /// The order `n` of `Q`.
    #[must_use]
    pub fn n(&self) -> usize {
        self.a.n
    }

    /// `(Y blocks, S blocks, bs)`: the stored form, for serialization.
    #[must_use]
    pub fn parts(&self) -> (MatRef<'_, T>, MatRef<'_, T>, usize) {
        (self.a.as_ref(), self.s.as_ref(), self.bs)
    }

    /// The reflectors from [`Reflectors::parts`]; checks the shapes only (the values are
    /// those a factorization stored).
    pub fn from_parts(a: MatRef<'_, T>, s: Mat<T>, bs: usize) -> Result<Self> {
        let n = a.nrows();
        if a.ncols() != n || bs == 0 || s.nrows() != bs || s.ncols() != n.saturating_sub(1) {
            return Err(Error::InvalidArgument(format!(
                "reflector parts of shapes {:?}, {:?} with blocks of {bs}",
                a.shape(),
                s.shape()
            )));
        }
        let mut buf = ZeroedSquare::new(n);
        buf.as_mut().copy_from(a);
        Ok(Reflectors { a: buf, s, bs })
    }

    fn apply_with(&self, mut x: MatMut<'_, T>, par: Par, transpose: bool) {
        let n = self.n();
        assert_eq!(x.nrows(), n, "Q is {n}×{n}");
        let c = x.ncols();
        if n < 2 || c == 0 {
            return;
        }
        if c < MIN_APPLY_WIDTH {
            let mut padded = Mat::<T>::zeros(n, MIN_APPLY_WIDTH);
            padded.as_mut().subcols_mut(0, c).copy_from(x.rb());
            self.apply_with(padded.as_mut(), par, transpose);
            x.copy_from(padded.as_ref().subcols(0, c));
            return;
        }
        let threads = par.degree();
        if threads > 1 && c >= 2 * MIN_APPLY_WIDTH {
            // one part of the columns per thread, each applied sequentially: the parts are
            // independent, so there is no synchronization per block (faster than threaded
            // products per block, by a quarter for 300 columns at N = 2000-4000)
            let parts = threads.min(c / MIN_APPLY_WIDTH);
            let width = c.div_ceil(parts);
            let mut cols = Vec::new();
            let mut rest = x;
            while rest.ncols() > 0 {
                let take = width.min(rest.ncols());
                let (head, tail) = rest.split_at_col_mut(take);
                cols.push(head);
                rest = tail;
            }
            cols.into_par_iter()
                .for_each(|part| self.apply_with(part, Par::Seq, transpose));
            return;
        }
        let n1 = n - 1;
        let starts: Vec<usize> = (0..n1).step_by(self.bs).collect();
        let mut w = Mat::<T>::zeros(self.bs, c);
        let mut w2 = Mat::<T>::zeros(self.bs, c);
        let mut one_block = |j0: usize| {
            let b = self.bs.min(n1 - j0);
            let m = n1 - j0;
            let y = self.a.as_ref().submatrix(j0 + 1, j0, m, b);
            let s = self.s.as_ref().submatrix(0, j0, b, b);
            let s = if transpose { s.transpose() } else { s };
            let mut xb = x.rb_mut().subrows_mut(j0 + 1, m);
            let mut wb = w.as_mut().subrows_mut(0, b);
            let mut w2b = w2.as_mut().subrows_mut(0, b);
            if b >= MIN_APPLY_WIDTH {
                let (pos, neg) = (T::from_f64(1.0), T::from_f64(-1.0));
                matmul(
                    wb.rb_mut(),
                    Accum::Replace,
                    y.transpose(),
                    xb.rb(),
                    pos,
                    par,
                );
                matmul(w2b.rb_mut(), Accum::Replace, s, wb.rb(), pos, par);
                matmul(xb.rb_mut(), Accum::Add, y, w2b.rb(), neg, par);
            } else {
                // a last block narrower than the kernels' minimum: plain loops, the same
                // operations for every column
                small_block(y, s, xb.rb_mut(), wb.rb_mut(), w2b.rb_mut());
            }
        };
        if transpose {
            for &j0 in &starts {
                one_block(j0);
            }
        } else {
            for &j0 in starts.iter().rev() {
                one_block(j0);
            }
        }
    }

    /// `x ← Q x` (`x` has `n` rows). Column `j` of the result depends on column `j` of `x`
    /// alone (bitwise: not on the other columns, their number or the thread count).
    pub fn apply(&self, x: MatMut<'_, T>, par: Par) {
        self.apply_with(x, par, false);
    }

    /// `x ← Qᵀ x` (`x` has `n` rows), column by column as [`Reflectors::apply`].
    pub fn apply_transpose(&self, x: MatMut<'_, T>, par: Par) {
        self.apply_with(x, par, true);
    }
}

/// `x ← x − Y (S (Yᵀ x))` for a block narrower than [`MIN_APPLY_WIDTH`].
fn small_block<T: Real>(
    y: MatRef<'_, T>,
    s: MatRef<'_, T>,
    mut x: MatMut<'_, T>,
    mut w: MatMut<'_, T>,
    mut w2: MatMut<'_, T>,
) {
    let (m, b) = y.shape();
    let zero = T::from_f64(0.0);
    for c in 0..x.ncols() {
        for q in 0..b {
            let mut acc = zero;
            for i in 0..m {
                acc += y[(i, q)] * x[(i, c)];
            }
            w[(q, c)] = acc;
        }
        for q in 0..b {
            let mut acc = zero;
            for l in 0..b {
                acc += s[(q, l)] * w[(l, c)];
            }
            w2[(q, c)] = acc;
        }
        for i in 0..m {
            let mut acc = zero;
            for q in 0..b {
                acc += y[(i, q)] * w2[(q, c)];
            }
            x[(i, c)] -= acc;
        }
    }
}

/// [`sym_eigh_scaled`] without the back-transformation: the eigenvalues into `w`, the
/// eigenvectors `Z` of the tridiagonal matrix into `z`, and the reflectors of `Q`
/// (`V = Q Z`, see [`Reflectors`]); returns `e` and `Q`. Applying `Q` to `z` gives bitwise
/// the `V` of [`sym_eigh_scaled`].
pub fn sym_eigh_factored<S: Real, T: Real>(
    k: MatRef<'_, S>,
    shift: f64,
    w: &mut [f64],
    z: MatMut<'_, T>,
    par: Par,
) -> Result<(i32, Reflectors<T>)> {
    sym_eigh_factored_tuned(k, shift, w, z, par, None, EighTuning::default())
}

/// [`sym_eigh_factored`] with stage timings (all but `back_transform`) and tuning.
pub fn sym_eigh_factored_tuned<S: Real, T: Real>(
    k: MatRef<'_, S>,
    shift: f64,
    w: &mut [f64],
    mut v: MatMut<'_, T>,
    par: Par,
    timings: Option<&mut EighTimings>,
    tuning: EighTuning,
) -> Result<(i32, Reflectors<T>)> {
    use faer::linalg::qr;

    let cpu = timings.as_ref().is_some_and(|t| t.process_cpu);
    let mut clock = clock_now(cpu);
    let mut tm = EighTimings {
        process_cpu: cpu,
        ..EighTimings::default()
    };
    let n = check_square(k, "k_train_train")?;
    check_eigh_outputs(n, w.len(), v.rb())?;
    let e = scale_exponent(k, shift, par)?;
    tm.scale = lap(&mut clock, cpu);
    if n == 0 {
        if let Some(t) = timings {
            *t = tm;
        }
        return Ok((
            e,
            Reflectors::from_reduction(ZeroedSquare::new(0), Mat::<T>::zeros(1, 0).as_ref(), 1),
        ));
    }
    let mut params: faer::Spec<evd::SelfAdjointEvdParams, T> = Default::default();
    if tuning.recursion_threshold > 0 {
        params.recursion_threshold = tuning.recursion_threshold;
    }
    // the reflectors' blocks: faer's size for the back-transformation, but at least 32
    // (wider than the MIN_APPLY_WIDTH that Reflectors::apply needs; faer picks 8 below
    // N = 128, which would leave every block to plain loops)
    let bs = if tuning.block_size > 0 {
        tuning.block_size.min(n).max(1)
    } else {
        qr::no_pivoting::factor::recommended_block_size::<T>(n, n).max(32)
    };
    // the scratch of each stage, reused one after the other (self_adjoint_evd_scratch
    // covers every stage's)
    let req = evd::self_adjoint_evd_scratch::<T>(n, ComputeEigenvectors::Yes, par, params);
    let mut mem = MemBuffer::new(req);
    let stack = MemStack::new(&mut mem);
    // the buffer that is tridiagonalized in place and then holds the reflectors
    let mut a = ZeroedSquare::<T>::new(n);
    let mut hh = Mat::<T>::zeros(bs.max(1), n - 1);
    tm.other += lap(&mut clock, cpu);

    symmetrize_lower_scaled(k, shift, e, a.as_mut(), par)?;
    tm.symmetrize = lap(&mut clock, cpu);

    if crate::tridiag::accelerated::<T>() {
        tridiagonalize_blocked(a.as_mut(), hh.as_mut(), bs, par, tuning);
    } else {
        if tuning.par_threshold > 0 {
            params.tridiag.par_threshold = tuning.par_threshold;
        }
        evd::tridiag::tridiag_in_place(a.as_mut(), hh.as_mut(), par, stack, params.tridiag.into());
    }
    tm.tridiagonalize = lap(&mut clock, cpu);

    let ar = a.as_ref();
    let diag: Vec<T> = (0..n).map(|i| ar[(i, i)]).collect();
    let sub: Vec<T> = (0..n)
        .map(|i| {
            if i + 1 < n {
                ar[(i + 1, i)]
            } else {
                T::from_f64(0.0)
            }
        })
        .collect();
    let mut wt = vec![T::from_f64(0.0); n];
    if n <= crate::ql::MAX_N && tuning.recursion_threshold == 0 {
        crate::ql::tridiagonal_eigh(&diag, &sub, &mut wt, v.rb_mut())?;
    } else {
        evd::tridiagonal_self_adjoint_evd(
            faer::diag::DiagRef::from_slice(&diag),
            faer::diag::DiagRef::from_slice(&sub),
            faer::diag::DiagMut::from_slice_mut(&mut wt),
            Some(v.rb_mut()),
            par,
            stack,
            params,
        )
        .map_err(|_| Error::NoConvergence)?;
    }
    tm.tridiagonal_solve = lap(&mut clock, cpu);

    for (dst, src) in w.iter_mut().zip(&wt) {
        *dst = src.to_f64();
    }
    tm.other += lap(&mut clock, cpu);
    if let Some(t) = timings {
        *t = tm;
    }
    Ok((e, Reflectors::from_reduction(a, hh.as_ref(), bs)))
}

/// The core's blocked tridiagonalization (`crate::tridiag`), leaving the reflectors and
/// their block factors in the format of faer's own `tridiag_in_place`: `τ` in the first
/// row of `hh`, then each block of `bs` reflectors upgraded to its triangular factor.
fn tridiagonalize_blocked<T: Real>(
    mut a: MatMut<'_, T>,
    mut hh: MatMut<'_, T>,
    bs: usize,
    par: Par,
    tuning: EighTuning,
) {
    use faer::linalg::householder;
    let n = a.nrows();
    let mut taus = vec![T::from_f64(0.0); n - 1];
    crate::tridiag::tridiagonalize_lower(
        a.rb_mut(),
        &mut taus,
        par,
        tuning.tridiag_block,
        tuning.par_threshold,
    );
    let n1 = n - 1;
    let mut j = 0;
    while j < n1 {
        let b = bs.min(n1 - j);
        let mut h = hh.rb_mut().submatrix_mut(0, j, b, b);
        for q in 0..b {
            h[(0, q)] = taus[j + q];
        }
        for q in 0..b {
            h[(q, q)] = h[(0, q)];
        }
        householder::upgrade_householder_factor(
            h,
            a.rb().submatrix(1, 0, n1, n1).submatrix(j, j, n1 - j, b),
            b,
            1,
            par,
        );
        j += b;
    }
}

/// `sym(K) + shift·I = V diag(w) Vᵀ` for a kernel `K` of element type `S`, computed in `T`
/// (on the scaled matrix of [`sym_eigh_scaled`]; the eigenvalues are unscaled exactly
/// unless they leave the range of `T`). `K` is read only.
pub fn sym_eigh<S: Real, T: Real>(
    k: MatRef<'_, S>,
    shift: f64,
    w: &mut [T],
    v: MatMut<'_, T>,
    par: Par,
) -> Result<()> {
    let mut w64 = vec![0.0; w.len()];
    let e = sym_eigh_scaled(k, shift, &mut w64, v, par)?;
    for (dst, src) in w.iter_mut().zip(&w64) {
        *dst = T::from_f64(ldexp(*src, e));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use faer::Mat;

    /// `U diag(λ) Uᵀ` with a deterministic orthogonal `U` (Householder reflections).
    pub fn with_spectrum(lams: &[f64]) -> Mat<f64> {
        let n = lams.len();
        let mut u = Mat::<f64>::identity(n, n);
        for r in 0..3 {
            let h: Vec<f64> = (0..n)
                .map(|i| ((i * 7 + r * 13 + 1) as f64).sin())
                .collect();
            let nn: f64 = h.iter().map(|x| x * x).sum();
            let refl = Mat::<f64>::from_fn(n, n, |i, j| {
                f64::from(u8::from(i == j)) - 2.0 * h[i] * h[j] / nn
            });
            u = &refl * &u;
        }
        let d = Mat::<f64>::from_fn(n, n, |i, j| if i == j { lams[i] } else { 0.0 });
        &u * &d * u.transpose()
    }

    /// `Q x` column by column (docs/numerics.md §17): a column's bits depend on that column
    /// alone, not on the others, their number, its position or the thread count; and
    /// `Qᵀ Q x = x`.
    #[test]
    fn reflector_columns_do_not_depend_on_width() {
        for &n in &[2usize, 3, 17, 160, 300] {
            let x = Mat::<f64>::from_fn(n, n, |i, j| ((i * 31 + j * 17) % 29) as f64 - 14.0);
            let a = &x * x.transpose();
            let mut w = vec![0.0; n];
            let mut z = Mat::<f64>::zeros(n, n);
            let (_, q) = sym_eigh_factored(a.as_ref(), 0.0, &mut w, z.as_mut(), Par::Seq).unwrap();
            let y = Mat::<f64>::from_fn(n, 300, |i, j| (((i * 7 + j * 13) % 23) as f64).sin());
            let mut full = y.clone();
            q.apply(full.as_mut(), Par::rayon(2));
            let mut back = full.clone();
            q.apply_transpose(back.as_mut(), Par::Seq);
            assert!((&back - &y).norm_max() <= 1e-13 * n as f64, "n = {n}");
            for &(j0, c) in &[
                (0, 1),
                (3, 1),
                (5, 2),
                (0, 15),
                (1, 16),
                (7, 17),
                (50, 100),
                (0, 257),
            ] {
                for par in [Par::Seq, Par::rayon(2), Par::rayon(3)] {
                    let mut part = y.as_ref().subcols(j0, c).to_owned();
                    q.apply(part.as_mut(), par);
                    assert!(
                        part.as_ref() == full.as_ref().subcols(j0, c),
                        "n = {n}, {j0} + {c}"
                    );
                    let mut tpart = full.as_ref().subcols(j0, c).to_owned();
                    q.apply_transpose(tpart.as_mut(), par);
                    assert!(
                        tpart.as_ref() == back.as_ref().subcols(j0, c),
                        "n = {n}, {j0} + {c}"
                    );
                }
            }
        }
    }

    #[test]
    fn all_finite_finds_any_nan_or_infinity() {
        for n in [0usize, 1, 7, 8, 9, 100, FINITE_CHUNK + 3, 3 * FINITE_CHUNK] {
            let mut x = vec![1.5f64; n];
            for par in [Par::Seq, Par::rayon(2)] {
                assert!(all_finite(&x, par));
            }
            for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
                for at in [0, n / 2, n.saturating_sub(1)] {
                    if n == 0 {
                        continue;
                    }
                    let keep = x[at];
                    x[at] = bad;
                    assert!(!all_finite(&x, Par::Seq) && !all_finite(&x, Par::rayon(2)));
                    let y: Vec<f32> = x.iter().map(|&v| v as f32).collect();
                    assert!(!all_finite(&y, Par::Seq));
                    x[at] = keep;
                }
            }
        }
        assert!(all_finite(&[f64::MAX, -f64::MAX, 5e-324], Par::Seq));
    }

    #[test]
    fn stats_detect_asymmetry_and_nan() {
        let mut k = with_spectrum(&[1.0, 2.0, 3.0, 4.0, 5.0]);
        let st = kernel_stats(k.as_ref(), Par::Seq).unwrap();
        assert!(st.finite && st.max_asym < 1e-14 && (st.trace - 15.0).abs() < 1e-12);
        k[(0, 3)] += 1e-3;
        let st = kernel_stats(k.as_ref(), Par::rayon(2)).unwrap();
        assert!((st.max_asym - 1e-3).abs() < 1e-12);
        assert!(!st.is_symmetric(1e-5));
        k[(2, 1)] = f64::NAN;
        assert!(!kernel_stats(k.as_ref(), Par::Seq).unwrap().finite);
    }

    /// Every entry of the blocked pass counts, in both memory orders: a plain double loop
    /// gives the same statistics (exactly) with one entry changed anywhere, including
    /// inside the full 64 × 64 tiles below the diagonal and in the ragged edge.
    #[test]
    fn stats_match_a_plain_pass_everywhere() {
        let n = 203;
        let base = Mat::<f64>::from_fn(n, n, |i, j| (((i * 7 + j * 7) % 13) as f64 - 6.0) * 0.25);
        let plain = |k: MatRef<'_, f64>| {
            let (mut m, mut d, mut fin) = (0.0f64, 0.0f64, true);
            for i in 0..n {
                for j in 0..n {
                    let (a, b) = (k[(i, j)], k[(j, i)]);
                    fin &= a.is_finite();
                    m = m.max(a.abs());
                    d = d.max((a - b).abs());
                }
            }
            (m, d, fin)
        };
        for (i, j) in [
            (0, 0),
            (150, 10),
            (10, 150),
            (130, 70),
            (202, 0),
            (202, 201),
            (64, 63),
        ] {
            for v in [9.0, -17.5, f64::NAN, f64::INFINITY] {
                let mut k = base.clone();
                k[(i, j)] = v;
                for kk in [k.as_ref(), k.as_ref().transpose()] {
                    for par in [Par::Seq, Par::rayon(2)] {
                        let st = kernel_stats(kk, par).unwrap();
                        let (m, d, fin) = plain(kk);
                        assert_eq!(st.finite, fin, "({i}, {j}) = {v}");
                        if fin {
                            assert_eq!((st.max_abs, st.max_asym), (m, d), "({i}, {j}) = {v}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn eigh_recovers_constructed_spectrum() {
        let lams: Vec<f64> = (0..150)
            .map(|i| {
                if i < 3 {
                    0.0
                } else {
                    f64::from(i).powi(2) * 1e-3
                }
            })
            .collect();
        let k = with_spectrum(&lams);
        let n = lams.len();
        for par in [Par::Seq, Par::rayon(2)] {
            let mut w = vec![0.0; n];
            let mut v = Mat::<f64>::zeros(n, n);
            sym_eigh(k.as_ref(), 0.5, &mut w, v.as_mut(), par).unwrap();
            for (a, b) in w.iter().zip(&lams) {
                assert!((a - (b + 0.5)).abs() < 1e-11, "{a} vs {b}");
            }
            let vtv = v.transpose() * &v;
            for i in 0..n {
                for j in 0..n {
                    let want = if i == j { 1.0 } else { 0.0 };
                    assert!((vtv[(i, j)] - want).abs() < 1e-12);
                }
            }
        }
    }

    #[test]
    fn staged_eigh_agrees_with_faers_self_adjoint_evd() {
        // 60: faer's QR path; 150, 300: divide and conquer, several panels of the blocked
        // tridiagonalization; a rounded, asymmetric kernel; one and two threads
        for n in [60usize, 150, 300] {
            let lams: Vec<f64> = (0..n)
                .map(|i| 1e-4 + (i as f64 / 7.0).sin().abs())
                .collect();
            let mut k = with_spectrum(&lams);
            k[(3, 1)] += 1e-9;
            for par in [Par::Seq, Par::rayon(2)] {
                let e = scale_exponent(k.as_ref(), 0.25, par).unwrap();
                let mut a = Mat::<f64>::zeros(n, n);
                symmetrize_lower_scaled(k.as_ref(), 0.25, e, a.as_mut(), par).unwrap();
                let mut w_ref = vec![0.0; n];
                let mut v_ref = Mat::<f64>::zeros(n, n);
                eigh_lower(a.as_ref(), &mut w_ref, v_ref.as_mut(), par).unwrap();
                let mut w = vec![0.0; n];
                let mut v = Mat::<f64>::zeros(n, n);
                let mut tm = EighTimings::default();
                let got =
                    sym_eigh_scaled_timed(k.as_ref(), 0.25, &mut w, v.as_mut(), par, Some(&mut tm))
                        .unwrap();
                assert_eq!(got, e);
                let wmax = w_ref.iter().fold(0.0f64, |m, x| m.max(x.abs()));
                for (x, y) in w.iter().zip(&w_ref) {
                    assert!(
                        (x - y).abs() <= 8.0 * f64::EPSILON * wmax * (n as f64).sqrt(),
                        "n = {n}: {x} vs {y}"
                    );
                }
                // A V = V diag(w) and VᵀV = I at rounding level (A: the full symmetric matrix)
                let full =
                    Mat::<f64>::from_fn(n, n, |i, j| if i >= j { a[(i, j)] } else { a[(j, i)] });
                let res = &full * &v
                    - &v * faer::Mat::from_fn(n, n, |i, j| if i == j { w[i] } else { 0.0 });
                assert!(
                    res.norm_max() <= 20.0 * f64::EPSILON * wmax * (n as f64).sqrt(),
                    "n = {n}"
                );
                let o = v.transpose() * &v - Mat::<f64>::identity(n, n);
                assert!(
                    o.norm_max() <= 20.0 * f64::EPSILON * (n as f64).sqrt(),
                    "n = {n}"
                );
                assert!(tm.tridiagonalize > 0.0 && tm.tridiagonal_solve > 0.0);
            }
        }
    }

    #[test]
    fn staged_eigh_float32() {
        let n = 120;
        let lams: Vec<f64> = (0..n).map(|i| 0.01 + i as f64 / n as f64).collect();
        let k = with_spectrum(&lams);
        let mut w = vec![0.0; n];
        let mut v = Mat::<f32>::zeros(n, n);
        let e = sym_eigh_scaled(k.as_ref(), 0.0, &mut w, v.as_mut(), Par::rayon(2)).unwrap();
        let mut want = lams.clone();
        want.sort_by(f64::total_cmp);
        for (x, y) in w.iter().zip(&want) {
            assert!((ldexp(*x, e) - y).abs() < 1e-5, "{x} vs {y}");
        }
        let o = v.transpose() * &v - Mat::<f32>::identity(n, n);
        assert!(o.norm_max() < 1e-5);
    }

    #[test]
    fn exponent_and_ldexp_are_exact() {
        assert_eq!(exponent(0.75), 0);
        assert_eq!(exponent(1.0), 1);
        assert_eq!(exponent(-3.0), 2);
        assert_eq!(exponent(f64::MAX), 1024);
        assert_eq!(exponent(f64::MIN_POSITIVE), -1021);
        assert_eq!(exponent(5e-324), -1073);
        assert_eq!(exponent(0.0), 0);
        assert_eq!(exponent(f64::NAN), 0);
        for x in [1.0, 0.3, -7.25, 5e-324, 1e-310, 1.7e308] {
            let e = exponent(x);
            let m = ldexp(x, -e);
            assert!((0.5..1.0).contains(&m.abs()), "{x} {m}");
            assert_eq!(ldexp(m, e), x, "round trip of {x}");
        }
        assert_eq!(ldexp(1.0, -1074), 5e-324);
        assert_eq!(ldexp(5e-324, 2097), f64::MAX.mul_add(0.0, 2f64.powi(1023)));
    }

    #[test]
    fn eigendecomposition_is_scale_invariant() {
        // n ≥ 128: faer's divide and conquer (whose thresholds are absolute) is used
        let lams: Vec<f64> = (0..150).map(|i| 1e-3 + 1.05f64.powi(i) * 1e-2).collect();
        let k = with_spectrum(&lams);
        let n = lams.len();
        let mut w0 = vec![0.0; n];
        let mut v0 = Mat::<f64>::zeros(n, n);
        let e0 = sym_eigh_scaled(k.as_ref(), 0.0, &mut w0, v0.as_mut(), Par::Seq).unwrap();
        for e in [-1040, -100, -40, 40, 100, 1000] {
            let ks = Mat::<f64>::from_fn(n, n, |i, j| ldexp(k[(i, j)], e));
            let mut w = vec![0.0; n];
            let mut v = Mat::<f64>::zeros(n, n);
            let got = sym_eigh_scaled(ks.as_ref(), 0.0, &mut w, v.as_mut(), Par::rayon(2)).unwrap();
            assert_eq!(got, e0 + e);
            let lmax = lams.iter().copied().fold(0.0, f64::max);
            // the same scaled problem, up to the entries that 2^-1040 made subnormal
            let tol = if e < -1000 { 1e-9 } else { 1e-13 };
            for (a, b) in w.iter().zip(&w0) {
                assert!((a - b).abs() <= tol * ldexp(lmax, -e0), "2^{e}: {a} vs {b}");
            }
            let mut wu = vec![0.0; n];
            sym_eigh(ks.as_ref(), 0.0, &mut wu, v.as_mut(), Par::Seq).unwrap();
            if e.abs() < 1000 {
                for (a, b) in wu.iter().zip(&lams) {
                    assert!(
                        (ldexp(*a, -e) - b).abs() <= 1e-13 * lmax,
                        "2^{e}: {a} vs {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn symmetrize_converts_and_bounds_norm() {
        let k = Mat::<f32>::from_fn(3, 3, |i, j| (i + 2 * j) as f32);
        let mut a = Mat::<f64>::zeros(3, 3);
        let norm = symmetrize_lower(k.as_ref(), 1.0, a.as_mut(), Par::Seq).unwrap();
        assert_eq!(a[(2, 0)], 0.5 * (2.0 + 4.0));
        assert_eq!(a[(1, 1)], 3.0 + 1.0);
        assert_eq!(a[(0, 2)], 0.0, "upper triangle untouched");
        // row sums of |sym(K) + I|: row 2 = 3 + 4.5 + 7
        assert_eq!(norm, 14.5);
        assert!(matches!(
            symmetrize_lower(Mat::<f64>::zeros(2, 3).as_ref(), 0.0, a.as_mut(), Par::Seq),
            Err(Error::NotSquare { .. })
        ));
    }
}
