//! CPU vector-state hygiene between faer's SIMD kernels and scalar `libm` code, and a
//! vectorized `exp` over slices (the training loss, docs/numerics.md §16).

/// Issues `vzeroupper` (x86-64 with AVX; a no-op elsewhere).
///
/// faer's GEMM micro-kernels (inline assembly) return with the upper halves of the vector
/// registers dirty. Until something clears them, legacy-SSE code on that thread pays a
/// false-dependency penalty on every instruction: measured here, glibc's `exp` (and so the
/// cross-entropy gradient) ran 16x slower right after a `Θ·G` product (1.3 ms instead of
/// 0.08 ms for 10⁴ entries). Call this after faer products that are followed by scalar
/// `libm` work on the same thread.
#[inline]
pub fn clear_upper_vector_state() {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx") {
            // SAFETY: the CPU supports AVX (checked just above).
            unsafe { zeroupper() }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn zeroupper() {
    #[allow(unused_unsafe)]
    // SAFETY: only reached with AVX available; `vzeroupper` has no other precondition.
    unsafe {
        std::arch::x86_64::_mm256_zeroupper();
    }
}

// -- exp over slices -----------------------------------------------------------------------

/// `ln 2` split so that `n·LN2_HI` is exact for `|n| < 2^11` (Cody–Waite).
const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
/// `1.5·2^52`: adding it rounds to an integer held in the low mantissa bits.
const ROUND_MAGIC: f64 = 6_755_399_441_055_744.0;
/// Below this argument `exp` is subnormal or zero: [`exp_slice`] hands such entries to `libm`.
const EXP_MIN_NORMAL_ARG: f64 = -708.0;
/// Below this argument `exp` rounds to `+0` (`ln(2^-1075) ≈ −745.13`).
const EXP_ZERO_ARG: f64 = -746.0;
/// Above this argument the scaling `2^n` of [`exp_lanes`] would overflow.
const EXP_MAX_ARG: f64 = 709.0;

/// `1/13!, 1/12!, …, 1/1!, 1/0!`: the Taylor polynomial of `exp` on `|r| ≤ ln2/2` (its
/// truncation is below `4e-18` relative).
const EXP_TAYLOR: [f64; 14] = [
    1.0 / 6_227_020_800.0,
    1.0 / 479_001_600.0,
    1.0 / 39_916_800.0,
    1.0 / 3_628_800.0,
    1.0 / 362_880.0,
    1.0 / 40_320.0,
    1.0 / 5_040.0,
    1.0 / 720.0,
    1.0 / 120.0,
    1.0 / 24.0,
    1.0 / 6.0,
    0.5,
    1.0,
    1.0,
];

/// Lanes evaluated in lockstep by [`exp_lanes`]: several independent vectors per Horner
/// step, so the polynomial's dependency chain does not bound the throughput.
const EXP_LANES: usize = 16;
/// [`EXP_LANES`] with AVX-512: four vectors of 8 per Horner step.
const EXP_LANES_512: usize = 32;

/// `exp(x)` for `x` in `[-708, 709]`, lane by lane, by Cody–Waite reduction
/// `x = n·ln2 + r`, `|r| ≤ ln2/2`, and the Taylor polynomial of degree 13 in plain
/// multiplies and adds (no FMA), so every lane's bits are the same on every x86-64, with or
/// without vector units and whatever its position; within 2 ulp of the correctly rounded
/// value (`exp_slice_matches_libm`).
// always inlined: compiled with the target features of the vectorized caller
#[allow(clippy::inline_always)]
#[inline(always)]
fn exp_lanes<const L: usize>(x: &[f64; L], out: &mut [f64; L]) {
    let mut t = [0.0; L];
    let mut r = [0.0; L];
    for i in 0..L {
        let xi = x[i].clamp(EXP_MIN_NORMAL_ARG, EXP_MAX_ARG);
        t[i] = xi * std::f64::consts::LOG2_E + ROUND_MAGIC;
        let n = t[i] - ROUND_MAGIC;
        r[i] = (xi - n * LN2_HI) - n * LN2_LO;
    }
    let mut p = [EXP_TAYLOR[0]; L];
    for &c in &EXP_TAYLOR[1..] {
        for i in 0..L {
            p[i] = p[i] * r[i] + c;
        }
    }
    for i in 0..L {
        // 2^n from the integer in t's low bits (n in [-1022, 1023] on the clamped range)
        let ni = t[i].to_bits().wrapping_sub(ROUND_MAGIC.to_bits());
        out[i] = p[i] * f64::from_bits(ni.wrapping_add(1023) << 52);
    }
}

#[allow(clippy::inline_always)]
#[inline(always)]
fn exp_slice_body<const L: usize>(xs: &[f64], out: &mut [f64]) {
    let mut xc = xs.chunks_exact(L);
    let mut oc = out.chunks_exact_mut(L);
    for (x, o) in (&mut xc).zip(&mut oc) {
        let x: &[f64; L] = x.try_into().expect("lanes");
        let o: &mut [f64; L] = o.try_into().expect("lanes");
        exp_lanes(x, o);
    }
    for (x, o) in xc.remainder().iter().zip(oc.into_remainder()) {
        let mut one = [0.0];
        exp_lanes(&[*x], &mut one);
        *o = one[0];
    }
    // the fix-ups are rare: one vectorized count first, the scalar pass only when needed
    // (a NaN is outside the range too)
    let outside = xs
        .iter()
        .map(|&x| usize::from(!(EXP_MIN_NORMAL_ARG..=EXP_MAX_ARG).contains(&x)))
        .sum::<usize>();
    if outside == 0 {
        return;
    }
    for (o, &x) in out.iter_mut().zip(xs) {
        if x < EXP_ZERO_ARG {
            *o = 0.0; // what libm returns there (below ln of half the smallest subnormal)
        } else if !(EXP_MIN_NORMAL_ARG..=EXP_MAX_ARG).contains(&x) {
            *o = x.exp(); // subnormal, overflow or NaN: libm
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn exp_slice_avx2(xs: &[f64], out: &mut [f64]) {
    exp_slice_body::<EXP_LANES>(xs, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn exp_slice_avx512(xs: &[f64], out: &mut [f64]) {
    exp_slice_body::<EXP_LANES_512>(xs, out);
}

/// `out[i] = exp(xs[i])` (lengths equal), vectorized where the CPU allows: [`exp_lanes`] on
/// normal results (the same bits on every CPU: separate multiplies and adds, no FMA),
/// `+0` below `−746`, `libm` for the rest.
pub fn exp_slice(xs: &[f64], out: &mut [f64]) {
    assert_eq!(xs.len(), out.len(), "exp_slice lengths");
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked just above).
            unsafe { exp_slice_avx512(xs, out) };
            return;
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            unsafe { exp_slice_avx2(xs, out) };
            return;
        }
    }
    exp_slice_body::<EXP_LANES>(xs, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_slice_matches_libm() {
        let mut xs: Vec<f64> = (0..200_001)
            .map(|i| -750.0 + 1460.0 * f64::from(i) / 200_000.0)
            .collect();
        xs.extend([
            0.0,
            -0.0,
            1e-300,
            -1e-300,
            0.346,
            -0.347,
            f64::NEG_INFINITY,
            -745.2,
        ]);
        let mut got = vec![0.0; xs.len()];
        exp_slice(&xs, &mut got);
        let mut worst = 0.0f64;
        for (&x, &g) in xs.iter().zip(&got) {
            let want = x.exp();
            if want == 0.0 || !want.is_normal() {
                assert_eq!(g.to_bits(), want.to_bits(), "{x}");
                continue;
            }
            let ulp = (want.abs() * f64::EPSILON).max(f64::MIN_POSITIVE);
            worst = worst.max((g - want).abs() / ulp);
        }
        assert!(worst <= 2.0, "{worst} ulp");
        let mut one = [0.0];
        exp_slice(&[0.0], &mut one);
        assert_eq!(one[0], 1.0);
    }
}
