//! CPU vector-state hygiene between faer's SIMD kernels and scalar `libm` code.

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
