//! The per-entry recursion, evaluated for a row of entries at once (vectorized).
//!
//! One call evaluates `K_L, Θ_L` for one example of the first side against a run of
//! examples of the second side, layer by layer, over contiguous slices: the loops have no
//! branches and no calls (the arc-cosine and arcsine are the polynomial below, `sqrt` is an
//! instruction), so LLVM vectorizes them; on x86-64 the same body is also compiled for
//! AVX2 + FMA and AVX-512 + FMA and chosen at run time. Those two use fused multiply-adds
//! (one rounding fewer); the portable body does not, so its last bits may differ from
//! theirs (both are within the accuracy below).
//!
//! # Arc-cosine and arcsine
//!
//! Both reduce to `g(w) = asin(√w)/√w` on `w ∈ [0, 1/4]` (analytic there; its nearest
//! singularity is `w = 1`): for `a = |x| ≤ 1/2`, `asin a = a·g(a²)`; for `a > 1/2`, with
//! `w = (1 − a)/2` (exact) and `s = √w`, `acos a = 2·s·g(w)` and `asin a = π/2 − 2·s·g(w)`.
//! `g` is the degree-13 polynomial interpolating it at the Chebyshev nodes of `[0, 1/4]`
//! (coefficients computed in 60-digit arithmetic, rounded to double): its relative error,
//! Horner's rounding included, is below 1.2e-16 on the whole interval, so `acos`/`asin`
//! are within 2ε and 3ε relative of the correctly rounded values (the rounding of `π/2` and `π`
//! is added back after subtracting from them; `asin` just above 1/2 halves `π/2 − 2t`).
//! At `a = 1` it gives `acos = 0` exactly (`w = s = 0`). The sine of `θ = acos c` is
//! `√((1 − c)(1 + c))`, accurate also near `|c| = 1` where `1 − c²` loses digits.

// The helpers must be inlined into the `target_feature` bodies to be vectorized there.
#![allow(clippy::inline_always)]

use std::f64::consts::{FRAC_1_PI, FRAC_PI_2, PI};

use super::Activation;

/// `π/2 − FRAC_PI_2` and `π − PI`: the rounding of the constants, added back so that the
/// subtractions from them keep their last bit.
const PIO2_LO: f64 = 6.123_233_995_736_766e-17;
const PI_LO: f64 = 1.224_646_799_147_353_2e-16;

/// Monomial coefficients of `g(w) = asin(√w)/√w` on `[0, 1/4]`, degree 0 first.
const G: [f64; 14] = [
    1.0,
    0.166_666_666_666_667_96,
    0.074_999_999_999_666_11,
    0.044_642_857_176_863_22,
    0.030_381_942_642_327_187,
    0.022_372_216_106_072_148,
    0.017_351_600_625_343_435,
    0.013_980_882_992_171_01,
    0.011_398_850_408_440_755,
    0.010_778_675_120_995_992,
    0.003_718_057_748_325_053_7,
    0.021_668_058_869_056_36,
    -0.020_930_658_315_182_45,
    0.032_579_347_966_928_42,
];

/// `a·b + c`, fused (one rounding) when `F` (the AVX2/AVX-512 bodies, which have FMA).
#[inline(always)]
fn madd<const F: bool>(a: f64, b: f64, c: f64) -> f64 {
    if F {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// The degree-13 polynomial `c` at `w ∈ [0, 1/4]`: Horner for the four leading terms
/// (which set the rounding), Estrin's scheme for the tail `c₄ + … + c₁₃ w⁹` (weight below
/// 1e-4): depth 8 instead of Horner's 13, as the loop is latency-bound.
#[inline(always)]
fn poly<const F: bool>(c: &[f64; 14], w: f64) -> f64 {
    let w2 = w * w;
    let w4 = w2 * w2;
    let w8 = w4 * w4;
    let p = |i: usize| madd::<F>(c[i + 1], w, c[i]);
    let q0 = madd::<F>(p(6), w2, p(4));
    let q1 = madd::<F>(p(10), w2, p(8));
    let r0 = madd::<F>(q1, w4, q0);
    let tail = madd::<F>(p(12), w8, r0);
    let mut acc = tail;
    for i in (0..4).rev() {
        acc = madd::<F>(acc, w, c[i]);
    }
    acc
}

/// `(t, big)` with `t = asin(√w)` for `a > 1/2` (`w = (1 − a)/2`), else `t = asin a`.
#[inline(always)]
fn asin_parts<const F: bool>(a: f64) -> (f64, bool) {
    let big = a > 0.5;
    let w = if big { 0.5 * (1.0 - a) } else { a * a };
    let s = if big { w.sqrt() } else { a };
    (s * poly::<F>(&G, w), big)
}

/// `x` clamped to `[−1, 1]` (NaN stays NaN), as two vector min/max.
#[inline(always)]
fn clamp1(x: f64) -> f64 {
    let lo = if x < -1.0 { -1.0 } else { x };
    if lo > 1.0 {
        1.0
    } else {
        lo
    }
}

/// `arccos c` for `c ∈ [−1, 1]`.
#[inline(always)]
pub(super) fn acos<const F: bool>(c: f64) -> f64 {
    let (t, big) = asin_parts::<F>(c.abs());
    let r = if big {
        2.0 * t
    } else {
        (FRAC_PI_2 - t) + PIO2_LO
    };
    if c < 0.0 {
        (PI - r) + PI_LO
    } else {
        r
    }
}

/// `arcsin x` for `x ∈ [−1, 1]`.
#[inline(always)]
pub(super) fn asin<const F: bool>(x: f64) -> f64 {
    let (t, big) = asin_parts::<F>(x.abs());
    let r = if big {
        (FRAC_PI_2 - 2.0 * t) + PIO2_LO
    } else {
        t
    };
    if x < 0.0 {
        -r
    } else {
        r
    }
}

/// The per-layer terms of the first example: `(p, ip)` per layer (see `Side`).
pub(super) struct Row<'a> {
    pub p: &'a [f64],
    pub ip: &'a [f64],
}

/// The second side's per-layer terms, layer-major: layer `l` of example `j` at `l·n + j`.
pub(super) struct Cols<'a> {
    pub p: &'a [f64],
    pub ip: &'a [f64],
    pub n: usize,
}

/// On entry `k[j]` is `K₀` of the pair `(row, j0 + j)`; on exit `k[j] = K_L` and, when
/// `NTK`, `th[j] = Θ_L` (`th` is scratch otherwise).
#[inline(always)]
fn entries_body<const NTK: bool, const F: bool>(
    act: Activation,
    w2: f64,
    b2: f64,
    row: &Row<'_>,
    cols: &Cols<'_>,
    j0: usize,
    k: &mut [f64],
    th: &mut [f64],
) {
    let m = k.len();
    let th = &mut th[..m];
    if NTK {
        th.copy_from_slice(k);
    }
    let half_pi_inv = 0.5 * FRAC_1_PI;
    for l in 0..row.p.len() {
        let (a1, ia1) = (row.p[l], row.ip[l]);
        let p2 = &cols.p[l * cols.n + j0..l * cols.n + j0 + m];
        let ip2 = &cols.ip[l * cols.n + j0..l * cols.n + j0 + m];
        match act {
            Activation::Relu => {
                for j in 0..m {
                    let c = clamp1(k[j] * ia1 * ip2[j]);
                    let pm = PI - acos::<F>(c);
                    // sin θ; (1 − c)(1 + c) keeps its digits near |c| = 1, unlike 1 − c².
                    let sin = ((1.0 - c) * (1.0 + c)).sqrt();
                    let e = a1 * p2[j] * half_pi_inv * madd::<F>(pm, c, sin);
                    let kn = madd::<F>(w2, e, b2);
                    if NTK {
                        th[j] = madd::<F>(w2 * (pm * half_pi_inv), th[j], kn);
                    }
                    k[j] = kn;
                }
            }
            Activation::Erf => {
                for j in 0..m {
                    let kj = k[j];
                    let arg = clamp1(2.0 * kj * ia1 * ip2[j]);
                    let e = 2.0 * FRAC_1_PI * asin::<F>(arg);
                    let kn = madd::<F>(w2, e, b2);
                    if NTK {
                        let det = (a1 * p2[j] - 4.0 * kj * kj).max(f64::MIN_POSITIVE);
                        th[j] = madd::<F>(w2 * (4.0 * FRAC_1_PI / det.sqrt()), th[j], kn);
                    }
                    k[j] = kn;
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn entries_avx512<const NTK: bool>(
    act: Activation,
    w2: f64,
    b2: f64,
    row: &Row<'_>,
    cols: &Cols<'_>,
    j0: usize,
    k: &mut [f64],
    th: &mut [f64],
) {
    entries_body::<NTK, true>(act, w2, b2, row, cols, j0, k, th);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn entries_avx2<const NTK: bool>(
    act: Activation,
    w2: f64,
    b2: f64,
    row: &Row<'_>,
    cols: &Cols<'_>,
    j0: usize,
    k: &mut [f64],
    th: &mut [f64],
) {
    entries_body::<NTK, true>(act, w2, b2, row, cols, j0, k, th);
}

/// The recursion for the pairs `(row, j0 + j)`, `j < k.len()`: `k` holds `K₀` on entry
/// and `K_L` on exit; `th` receives `Θ_L` when `ntk` (it must be at least as long as `k`).
pub(super) fn entries(
    act: Activation,
    w2: f64,
    b2: f64,
    row: &Row<'_>,
    cols: &Cols<'_>,
    j0: usize,
    k: &mut [f64],
    th: &mut [f64],
    ntk: bool,
) {
    #[cfg(target_arch = "x86_64")]
    {
        let fma = std::arch::is_x86_feature_detected!("fma");
        if fma && std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F and FMA (checked just above).
            unsafe {
                if ntk {
                    entries_avx512::<true>(act, w2, b2, row, cols, j0, k, th);
                } else {
                    entries_avx512::<false>(act, w2, b2, row, cols, j0, k, th);
                }
            }
            return;
        }
        if fma && std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            unsafe {
                if ntk {
                    entries_avx2::<true>(act, w2, b2, row, cols, j0, k, th);
                } else {
                    entries_avx2::<false>(act, w2, b2, row, cols, j0, k, th);
                }
            }
            return;
        }
    }
    if ntk {
        entries_body::<true, false>(act, w2, b2, row, cols, j0, k, th);
    } else {
        entries_body::<false, false>(act, w2, b2, row, cols, j0, k, th);
    }
}
