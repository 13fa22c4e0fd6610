//! Blocked Householder tridiagonalization of a symmetric matrix held in its lower triangle
//! (docs/performance.md, "The tridiagonalization").
//!
//! `Qᵀ A Q = T` with `Q = H₀ H₁ ⋯ H_{n−2}`, `H_j = I − v_j v_jᵀ / τ_j`, computed panel by
//! panel as LAPACK's `dsytrd`/`dlatrd` do: inside a panel of `nb` columns the trailing
//! matrix is only *read* (one symmetric matrix–vector product per column, corrected by the
//! panel's `V` and `W`), and after the panel it is updated once, `A ← A − V Wᵀ − W Vᵀ`, as
//! a lower-triangular matrix product. An unblocked reduction reads and writes the whole
//! trailing triangle for every column; this one writes it once per panel, which halves
//! the memory traffic of the memory-bound half of the work.
//!
//! The output is in faer's format, so faer's divide and conquer and back-transformation
//! run on it unchanged: the diagonal and subdiagonal of `T` in place, the essential parts
//! of `v_j` below the subdiagonal of column `j`, and `τ_j` (faer's convention, `∞` for an
//! identity reflector) in `taus[j]`.

use faer::linalg::matmul::{self, triangular::BlockStructure};
use faer::prelude::{Reborrow, ReborrowMut};
use faer::{Accum, Mat, MatMut, MatRef, Par};

use crate::scalar::Real;

/// Panel width for `n ≥ 1024` (LAPACK's `dsytrd` uses 32).
pub const BLOCK: usize = 32;

/// The default panel width for an `n×n` matrix: narrower panels below `n = 1024`, where
/// the per-panel trailing update costs more than the memory traffic it saves (measured
/// sequentially at N = 64…800: 8 columns 25–35% faster than 32 up to N = 300, 16 about
/// 12% faster at N = 800; docs/performance.md, "Small problems").
#[must_use]
pub fn default_block(n: usize) -> usize {
    match n {
        0..=512 => 8,
        513..=1023 => 16,
        _ => BLOCK,
    }
}

/// Trailing size `m` with `m²/2` below which the matrix–vector product runs on one thread.
pub const PAR_THRESHOLD: usize = 192 * 256;

/// Whether this CPU has the vector kernel of the blocked reduction for `T` (f64 with
/// AVX2+FMA or AVX-512). Elsewhere (f32, other CPUs) faer's unblocked reduction, whose
/// fused kernel is vectorized for every type, is the faster choice.
#[must_use]
pub fn accelerated<T: 'static>() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::any::TypeId::of::<T>() == std::any::TypeId::of::<f64>()
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Tridiagonalize the symmetric matrix whose lower triangle is `a` (`n×n`, column major),
/// in place; the strict upper triangle is never read or written. `taus` gets the `n − 1`
/// reflector factors. `nb` is the panel width (`0`: [`default_block`]), `par_threshold` the size
/// of the parallel cut (`0`: [`PAR_THRESHOLD`]).
pub fn tridiagonalize_lower<T: Real>(
    mut a: MatMut<'_, T>,
    taus: &mut [T],
    par: Par,
    nb: usize,
    par_threshold: usize,
) {
    let n = a.nrows();
    assert!(a.ncols() == n && taus.len() == n.saturating_sub(1));
    assert!(
        a.row_stride() == 1,
        "the tridiagonalization needs a column-major buffer"
    );
    if n < 2 {
        return;
    }
    let nb = if nb == 0 { default_block(n) } else { nb }
        .min(n - 1)
        .max(1);
    let par_threshold = if par_threshold == 0 {
        PAR_THRESHOLD
    } else {
        par_threshold
    };
    let zero = T::from_f64(0.0);
    let one = T::from_f64(1.0);
    // the panel's reflectors and their w, interleaved so that every product with the panel
    // is one matrix–vector product: L = [v₀ w₀ v₁ w₁ …], R = [w₀ v₀ w₁ v₁ …], and
    // V Wᵀ + W Vᵀ = L Rᵀ
    let mut l = Mat::<T>::zeros(n, 2 * nb);
    let mut rr = Mat::<T>::zeros(n, 2 * nb);
    let mut sub = vec![zero; nb];
    let mut x = vec![zero; 2 * nb];
    let mut prod = Symv::new(n, par, par_threshold);
    let mut k0 = 0;
    while k0 < n - 1 {
        let b = nb.min(n - 1 - k0);
        for i in 0..b {
            let j = k0 + i;
            // bring column j up to date with the panel's earlier reflectors:
            // A[j.., j] −= V[j.., :i]·W[j, :i]ᵀ + W[j.., :i]·V[j, :i]ᵀ = L[j.., :2i]·R[j, :2i]ᵀ
            if i > 0 {
                let col = a.rb_mut().col_mut(j).subrows_mut(j, n - j);
                let coef: Vec<T> = (0..2 * i).map(|q| rr[(j, q)]).collect();
                sub_combination(col, l.as_ref().submatrix(j, 0, n - j, 2 * i), &coef);
            }
            // the reflector that zeroes A[j+2.., j]
            let m = n - j - 1;
            let tau = {
                let (mut head, tail) = a
                    .rb_mut()
                    .col_mut(j)
                    .subrows_mut(j + 1, m)
                    .split_at_row_mut(1);
                let tau = make_reflector(&mut head[0], tail);
                sub[i] = head[0];
                head[0] = one;
                tau
            };
            taus[j] = tau;
            let tau_inv = if tau.to_f64().is_finite() {
                one / tau
            } else {
                zero
            };
            let (left, right) = a.rb().split_at_col(j + 1);
            let v = left.col(j).subrows(j + 1, m);
            l.as_mut().col_mut(2 * i).subrows_mut(j + 1, m).copy_from(v);
            rr.as_mut()
                .col_mut(2 * i + 1)
                .subrows_mut(j + 1, m)
                .copy_from(v);
            // w = τ⁻¹·(A₂₂ − V Wᵀ − W Vᵀ)·v, then w −= ½τ⁻¹(wᵀv)·v (dlatrd)
            let a22 = right.submatrix(j + 1, 0, m, m);
            let (lp, mut lw) = l.as_mut().split_at_col_mut(2 * i + 1);
            let mut wi = lw.rb_mut().col_mut(0).subrows_mut(j + 1, m);
            prod.apply(a22, v, wi.rb_mut());
            if i > 0 {
                let x = &mut x[..2 * i];
                let vs = contiguous(v);
                for (q, xq) in x.iter_mut().enumerate() {
                    *xq = dot(contiguous(rr.as_ref().col(q).subrows(j + 1, m)), vs);
                }
                sub_combination(wi.rb_mut(), lp.rb().submatrix(j + 1, 0, m, 2 * i), x);
            }
            for r in 0..m {
                wi[r] *= tau_inv;
            }
            let dot = dot(contiguous(wi.rb()), contiguous(v));
            let alpha = -(T::from_f64(0.5) * tau_inv * dot);
            for r in 0..m {
                wi[r] = alpha * v[r] + wi[r];
            }
            rr.as_mut()
                .col_mut(2 * i)
                .subrows_mut(j + 1, m)
                .copy_from(wi.rb());
        }
        // the trailing update A[s.., s..] −= V Wᵀ + W Vᵀ = L Rᵀ (lower triangle), s = k0 + b
        let s = k0 + b;
        let ms = n - s;
        matmul::triangular::matmul(
            a.rb_mut().submatrix_mut(s, s, ms, ms),
            BlockStructure::TriangularLower,
            Accum::Add,
            l.as_ref().submatrix(s, 0, ms, 2 * b),
            BlockStructure::Rectangular,
            rr.as_ref().submatrix(s, 0, ms, 2 * b).transpose(),
            BlockStructure::Rectangular,
            -one,
            if ms * ms / 2 < par_threshold {
                Par::Seq
            } else {
                par
            },
        );
        // faer's product kernels return with the upper vector state dirty, which slows the
        // non-VEX code of the next panel (crate::simd::clear_upper_vector_state)
        crate::simd::clear_upper_vector_state();
        for i in 0..b {
            a[(k0 + i + 1, k0 + i)] = sub[i];
        }
        k0 = s;
    }
}

/// The symmetric matrix–vector product `w = A·v` from the lower triangle of `A`, split over
/// threads by columns of equal triangle area, each thread into its own accumulator.
struct Symv<T> {
    parts: usize,
    par_threshold: usize,
    acc: Vec<T>,
}

impl<T: Real> Symv<T> {
    fn new(n: usize, par: Par, par_threshold: usize) -> Self {
        let parts = par.degree().max(1);
        Symv {
            parts,
            par_threshold,
            acc: if parts > 1 {
                vec![T::from_f64(0.0); n * parts]
            } else {
                Vec::new()
            },
        }
    }

    fn apply(&mut self, a: MatRef<'_, T>, v: faer::ColRef<'_, T>, w: faer::ColMut<'_, T>) {
        let m = a.nrows();
        let zero = T::from_f64(0.0);
        let v = v.try_as_col_major().expect("column-major").as_slice();
        let w = w
            .try_as_col_major_mut()
            .expect("column-major")
            .as_slice_mut();
        let parts = if m * m / 2 < self.par_threshold {
            1
        } else {
            self.parts
        };
        if parts == 1 {
            w.fill(zero);
            symv_cols(a, v, w, 0, m);
            return;
        }
        // column cuts of equal triangle area: part p holds columns [c_p, c_{p+1})
        let cut = |p: usize| -> usize {
            if p >= parts {
                return m;
            }
            let frac = p as f64 / parts as f64;
            (((1.0 - (1.0 - frac).sqrt()) * m as f64) as usize).min(m)
        };
        let acc = &mut self.acc[..m * parts];
        {
            use rayon::prelude::*;
            acc.par_chunks_mut(m).enumerate().for_each(|(p, out)| {
                let (c0, c1) = (cut(p), cut(p + 1));
                out[c0..].fill(zero);
                symv_cols(a, v, out, c0, c1);
            });
        }
        // w = Σ_p acc_p in a fixed order (part p touched rows ≥ c_p only)
        w.copy_from_slice(&acc[..m]);
        for p in 1..parts {
            let c0 = cut(p);
            for (dst, src) in w[c0..].iter_mut().zip(&acc[p * m + c0..(p + 1) * m]) {
                *dst += *src;
            }
        }
    }
}

/// The reflector `I − v vᵀ/τ` with `v = [1; tail']` that maps `[head; tail]` to
/// `[β; 0]`: `head ← β`, `tail ← tail'`, returns `τ` (infinite when `tail` is zero: no
/// reflection). The formulas and conventions of faer's `make_householder_in_place`, with
/// the tail's norm from one pass of eight partial sums of squares where those can neither
/// overflow nor lose the result to underflow (always in float32, whose squares are summed
/// in float64), and from faer's scaled norm otherwise.
fn make_reflector<T: Real>(head: &mut T, tail: faer::ColMut<'_, T>) -> T {
    // sums of squares ≥ 2^-800: what underflowed (squares below 2^-1022) is below
    // ε·2^-800 of it; finite: nothing overflowed
    const SAFE_MIN: f64 = 1.499_189_962_438_038_5e-241; // 2^-800
    let mut tail = tail;
    let t = tail
        .rb_mut()
        .try_as_col_major_mut()
        .expect("a column of a column-major matrix")
        .as_slice_mut();
    let f32_like = T::EPS > 1e-10;
    let ss = sum_squares(t);
    let tail_norm = if f32_like || (ss.is_finite() && ss >= SAFE_MIN) {
        T::from_f64(ss.sqrt())
    } else {
        faer::ColRef::from_slice(t).norm_l2()
    };
    // in float64 (exact for float64 elements; for float32 the norm is rounded to float32
    // first, as faer's would be, and the results once at the end)
    let min_positive = if f32_like {
        f64::from(f32::MIN_POSITIVE)
    } else {
        f64::MIN_POSITIVE
    };
    let tail_norm = tail_norm.to_f64();
    let mut h = head.to_f64();
    let mut head_norm = h.abs();
    if head_norm < min_positive {
        h = 0.0;
        head_norm = 0.0;
    }
    if tail_norm < min_positive {
        *head = T::from_f64(h);
        return T::from_f64(f64::INFINITY);
    }
    let norm = head_norm.hypot(tail_norm);
    let sign = if head_norm == 0.0 {
        1.0
    } else {
        h * head_norm.recip()
    };
    let signed_norm = sign * norm;
    let inv = (h + signed_norm).recip();
    let tinv = T::from_f64(inv);
    for e in t.iter_mut() {
        *e *= tinv;
    }
    *head = T::from_f64(-signed_norm);
    let q = tail_norm * inv.abs();
    T::from_f64(0.5 * (1.0 + q * q))
}

/// `Σ x²` in float64, eight partial sums added pairwise.
fn sum_squares<T: Real>(x: &[T]) -> f64 {
    const L: usize = 8;
    let full = x.len() / L * L;
    let mut acc = [0.0f64; L];
    for c in x[..full].chunks_exact(L) {
        for q in 0..L {
            let v = c[q].to_f64();
            acc[q] += v * v;
        }
    }
    for (q, &v) in x[full..].iter().enumerate() {
        let v = v.to_f64();
        acc[q] += v * v;
    }
    ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]))
}

/// The entries of a unit-stride column.
fn contiguous<T: Real>(c: faer::ColRef<'_, T>) -> &[T] {
    c.try_as_col_major()
        .expect("a column of a column-major matrix")
        .as_slice()
}

/// `Σ_r a[r]·b[r]` in a fixed order: eight partial sums over the rows `r ≡ q (mod 8)`,
/// added pairwise (independent chains instead of one, so it runs at the adds' throughput
/// rather than their latency; the same bits on every CPU).
fn dot<T: Real>(a: &[T], b: &[T]) -> T {
    const L: usize = 8;
    let zero = T::from_f64(0.0);
    let n = a.len().min(b.len());
    let full = n / L * L;
    let mut acc = [zero; L];
    for (ca, cb) in a[..full].chunks_exact(L).zip(b[..full].chunks_exact(L)) {
        for q in 0..L {
            acc[q] = ca[q] * cb[q] + acc[q];
        }
    }
    for (q, (&x, &y)) in a[full..n].iter().zip(&b[full..n]).enumerate() {
        acc[q] = x * y + acc[q];
    }
    ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]))
}

/// `y −= Σ_q A[:, q]·coef[q]` for a column-major `A` with few columns (the panel's
/// corrections): one pass over `y` per column of `A`, no matrix-product dispatch (which
/// costs more than the product itself at these sizes).
fn sub_combination<T: Real>(y: faer::ColMut<'_, T>, a: MatRef<'_, T>, coef: &[T]) {
    let y = y
        .try_as_col_major_mut()
        .expect("a column of a column-major matrix")
        .as_slice_mut();
    for (q, &c) in coef.iter().enumerate() {
        for (yr, &ar) in y.iter_mut().zip(contiguous(a.col(q))) {
            *yr -= ar * c;
        }
    }
}

/// `out[r] += Σ_{c ∈ [c0, c1)} A[r, c]·v[c]` over the lower triangle `r ≥ c`, plus the
/// mirrored `out[c] += Σ_{r > c} A[r, c]·v[r]`; rows `< c0` are not touched.
fn symv_cols<T: Real>(a: MatRef<'_, T>, v: &[T], out: &mut [T], c0: usize, c1: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::any::TypeId;
        if TypeId::of::<T>() == TypeId::of::<f64>() && std::arch::is_x86_feature_detected!("fma") {
            let simd = if std::arch::is_x86_feature_detected!("avx512f") {
                Some(true)
            } else if std::arch::is_x86_feature_detected!("avx2") {
                Some(false)
            } else {
                None
            };
            if let Some(avx512) = simd {
                // SAFETY: T is f64 (same layout); the features were detected on this CPU.
                let a64: MatRef<'_, f64> = unsafe {
                    faer::MatRef::from_raw_parts(
                        a.as_ptr().cast(),
                        a.nrows(),
                        a.ncols(),
                        a.row_stride(),
                        a.col_stride(),
                    )
                };
                let v64: &[f64] = unsafe { std::slice::from_raw_parts(v.as_ptr().cast(), v.len()) };
                let out64: &mut [f64] =
                    unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr().cast(), out.len()) };
                if avx512 {
                    unsafe { x86::symv_avx512(a64, v64, out64, c0, c1) };
                } else {
                    unsafe { x86::symv_avx2(a64, v64, out64, c0, c1) };
                }
                return;
            }
        }
    }
    symv_body::<T>(a, v, out, c0, c1);
}

/// The f64 kernels: four columns at a time, one vector of rows per step; `out` is read
/// and written once per four columns, the dot products accumulate lane by lane and are
/// summed in a fixed order (deterministic).
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::column;
    use faer::MatRef;
    use std::arch::x86_64::{
        __m256d, __m512d, _mm256_fmadd_pd, _mm256_loadu_pd, _mm256_set1_pd, _mm256_setzero_pd,
        _mm256_storeu_pd, _mm512_fmadd_pd, _mm512_loadu_pd, _mm512_set1_pd, _mm512_setzero_pd,
        _mm512_storeu_pd,
    };

    macro_rules! kernel {
        ($name:ident, $feat:literal, $vec:ty, $w:literal, $set1:ident, $zero:ident, $load:ident, $store:ident, $fma:ident) => {
            #[target_feature(enable = $feat)]
            pub(super) unsafe fn $name(
                a: MatRef<'_, f64>,
                v: &[f64],
                out: &mut [f64],
                c0: usize,
                c1: usize,
            ) {
                let m = a.nrows();
                let mut c = c0;
                while c + 4 <= c1 {
                    let cols = [
                        column(a, c),
                        column(a, c + 1),
                        column(a, c + 2),
                        column(a, c + 3),
                    ];
                    let vc = [v[c], v[c + 1], v[c + 2], v[c + 3]];
                    let mut s = [0.0f64; 4];
                    for q in 0..4 {
                        out[c + q] = cols[q][c + q].mul_add(vc[q], out[c + q]);
                        for r in c + q + 1..c + 4 {
                            out[r] = cols[q][r].mul_add(vc[q], out[r]);
                            s[q] = cols[q][r].mul_add(v[r], s[q]);
                        }
                    }
                    let start = c + 4;
                    let full = start + (m - start) / $w * $w;
                    let (p0, p1, p2, p3) = (
                        cols[0].as_ptr(),
                        cols[1].as_ptr(),
                        cols[2].as_ptr(),
                        cols[3].as_ptr(),
                    );
                    let (pv, po) = (v.as_ptr(), out.as_mut_ptr());
                    // SAFETY: every access below is at a row < full <= m, inside the columns,
                    // v and out (all of length m).
                    unsafe {
                        let (b0, b1, b2, b3) =
                            ($set1(vc[0]), $set1(vc[1]), $set1(vc[2]), $set1(vc[3]));
                        let (mut s0, mut s1, mut s2, mut s3) = ($zero(), $zero(), $zero(), $zero());
                        let mut r = start;
                        while r < full {
                            let vr = $load(pv.add(r));
                            let x0 = $load(p0.add(r));
                            let x1 = $load(p1.add(r));
                            let x2 = $load(p2.add(r));
                            let x3 = $load(p3.add(r));
                            let t01 = $fma(x1, b1, $fma(x0, b0, $load(po.add(r))));
                            let t23 = $fma(x3, b3, $fma(x2, b2, $zero()));
                            let o: $vec = $fma(t23, $set1(1.0), t01);
                            $store(po.add(r), o);
                            s0 = $fma(x0, vr, s0);
                            s1 = $fma(x1, vr, s1);
                            s2 = $fma(x2, vr, s2);
                            s3 = $fma(x3, vr, s3);
                            r += $w;
                        }
                        let mut lanes = [[0.0f64; $w]; 4];
                        $store(lanes[0].as_mut_ptr(), s0);
                        $store(lanes[1].as_mut_ptr(), s1);
                        $store(lanes[2].as_mut_ptr(), s2);
                        $store(lanes[3].as_mut_ptr(), s3);
                        for q in 0..4 {
                            for l in 0..$w {
                                s[q] += lanes[q][l];
                            }
                        }
                    }
                    for r in full..m {
                        let mut t = out[r];
                        for q in 0..4 {
                            t = cols[q][r].mul_add(vc[q], t);
                            s[q] = cols[q][r].mul_add(v[r], s[q]);
                        }
                        out[r] = t;
                    }
                    for q in 0..4 {
                        out[c + q] += s[q];
                    }
                    c += 4;
                }
                while c < c1 {
                    let col = column(a, c);
                    let vc = v[c];
                    out[c] = col[c].mul_add(vc, out[c]);
                    let mut s = 0.0;
                    for r in c + 1..m {
                        out[r] = col[r].mul_add(vc, out[r]);
                        s = col[r].mul_add(v[r], s);
                    }
                    out[c] += s;
                    c += 1;
                }
            }
        };
    }

    kernel!(
        symv_avx512,
        "avx512f,fma",
        __m512d,
        8,
        _mm512_set1_pd,
        _mm512_setzero_pd,
        _mm512_loadu_pd,
        _mm512_storeu_pd,
        _mm512_fmadd_pd
    );
    kernel!(
        symv_avx2,
        "avx2,fma",
        __m256d,
        4,
        _mm256_set1_pd,
        _mm256_setzero_pd,
        _mm256_loadu_pd,
        _mm256_storeu_pd,
        _mm256_fmadd_pd
    );
}

#[inline]
fn column<T: Real>(a: MatRef<'_, T>, c: usize) -> &[T] {
    a.col(c)
        .try_as_col_major()
        .expect("column-major")
        .as_slice()
}

/// The portable kernel (f32, or CPUs without AVX2/FMA): one column at a time.
fn symv_body<T: Real>(a: MatRef<'_, T>, v: &[T], out: &mut [T], c0: usize, c1: usize) {
    let m = a.nrows();
    for c in c0..c1 {
        let col = column(a, c);
        let vc = v[c];
        out[c] = col[c] * vc + out[c];
        let mut s = T::from_f64(0.0);
        for r in c + 1..m {
            out[r] = col[r] * vc + out[r];
            s = col[r] * v[r] + s;
        }
        out[c] += s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym(n: usize, seed: u64) -> Mat<f64> {
        let mut x = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let mut next = move || {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((x >> 11) as f64) / ((1u64 << 53) as f64) - 0.5
        };
        let g = Mat::<f64>::from_fn(n, n, |_, _| next());
        &g + g.transpose()
    }

    /// The reflector agrees with faer's on columns from 2^-1070 to 2^1000 (subnormal,
    /// tiny and huge entries take faer's scaled norm, the rest one sum of squares), and a
    /// zero tail gives no reflection.
    #[test]
    fn reflector_matches_faers_at_every_scale() {
        use faer::linalg::householder::make_householder_in_place;
        let base: Vec<f64> = (0..37)
            .map(|i| (f64::from(i * 7 % 11) - 5.0) * 0.3)
            .collect();
        for e in [-1070, -1000, -600, -300, 0, 300, 600, 1000] {
            for lead in [0.0, 0.7, -2.5] {
                let sc = 2f64.powi(e);
                let col: Vec<f64> = base.iter().map(|x| x * sc).collect();
                let (mut h1, mut h2) = (lead * sc, lead * sc);
                let mut t1 = col.clone();
                let mut t2 = faer::Col::<f64>::from_fn(col.len(), |i| col[i]);
                let tau1 = make_reflector(&mut h1, faer::ColMut::from_slice_mut(&mut t1));
                let tau2 = make_householder_in_place(&mut h2, t2.as_mut()).tau;
                let close =
                    |a: f64, b: f64| a == b || (a - b).abs() <= 1e-14 * a.abs().max(b.abs());
                assert!(close(h1, h2), "e={e}: beta {h1:e} vs {h2:e}");
                assert!(close(tau1, tau2), "e={e}: tau {tau1} vs {tau2}");
                for (a, b) in t1.iter().zip(t2.iter()) {
                    assert!((a - b).abs() <= 1e-14, "e={e}: {a} vs {b}");
                }
            }
        }
        let mut h = 3.0f64;
        let mut zeros = vec![0.0f64; 5];
        let tau = make_reflector(&mut h, faer::ColMut::from_slice_mut(&mut zeros));
        assert!(tau.is_infinite() && h == 3.0);
    }

    /// Q from the reflectors, T from the diagonal and subdiagonal: ‖QᵀAQ − T‖ and
    /// ‖QᵀQ − I‖ at rounding level.
    fn check(n: usize, nb: usize, par: Par, par_threshold: usize) {
        let a0 = sym(n, n as u64);
        let mut a = a0.clone();
        let mut taus = vec![0.0; n.saturating_sub(1)];
        tridiagonalize_lower(a.as_mut(), &mut taus, par, nb, par_threshold);
        let mut q = Mat::<f64>::identity(n, n);
        for j in (0..n.saturating_sub(1)).rev() {
            let mut v = vec![0.0; n];
            v[j + 1] = 1.0;
            for r in j + 2..n {
                v[r] = a[(r, j)];
            }
            let beta = if taus[j].is_finite() {
                1.0 / taus[j]
            } else {
                0.0
            };
            for c in 0..n {
                let d: f64 = (0..n).map(|r| v[r] * q[(r, c)]).sum();
                for r in 0..n {
                    q[(r, c)] -= beta * v[r] * d;
                }
            }
        }
        let mut t = Mat::<f64>::zeros(n, n);
        for i in 0..n {
            t[(i, i)] = a[(i, i)];
            if i + 1 < n {
                t[(i + 1, i)] = a[(i + 1, i)];
                t[(i, i + 1)] = a[(i + 1, i)];
            }
        }
        let scale = (a0.norm_max() * n as f64).max(f64::MIN_POSITIVE);
        let r = q.transpose() * &a0 * &q - &t;
        assert!(
            r.norm_max() <= 1e-14 * scale,
            "n={n} nb={nb}: {}",
            r.norm_max() / scale
        );
        let o = q.transpose() * &q - Mat::<f64>::identity(n, n);
        assert!(
            o.norm_max() <= 1e-14 * n as f64,
            "n={n} nb={nb}: {}",
            o.norm_max()
        );
    }

    #[test]
    fn reduces_to_tridiagonal_form() {
        for n in [0, 1, 2, 3, 5, 8, 33, 70] {
            for nb in [1, 3, 32] {
                check(n, nb, Par::Seq, 0);
            }
        }
        // the parallel product, forced on at small sizes
        check(97, 8, Par::rayon(2), 1);
        check(130, 32, Par::rayon(3), 1);
    }

    #[test]
    fn symv_matches_dense_product() {
        for m in [1, 4, 5, 13, 40] {
            let a = sym(m, 7);
            let v: Vec<f64> = (0..m).map(|i| (i as f64 * 0.37).sin()).collect();
            let mut out = vec![0.0; m];
            symv_cols(a.as_ref(), &v, &mut out, 0, m);
            for r in 0..m {
                let e: f64 = (0..m).map(|c| a[(r, c)] * v[c]).sum();
                assert!((out[r] - e).abs() < 1e-14 * m as f64, "m={m} r={r}");
            }
        }
    }

    #[test]
    fn identity_reflectors_of_a_diagonal_matrix() {
        let mut a = Mat::<f64>::from_fn(6, 6, |i, j| if i == j { i as f64 } else { 0.0 });
        let mut taus = vec![0.0; 5];
        tridiagonalize_lower(a.as_mut(), &mut taus, Par::Seq, 2, 0);
        for i in 0..6 {
            assert_eq!(a[(i, i)], i as f64);
        }
        assert!(taus.iter().all(|t| t.is_infinite()));
    }
}
