//! Per-mode factors of the linear dynamics and the reconstruction of outputs at many times.
//!
//! In the eigenbasis `A = V diag(μ) Vᵀ` every closed form reads, per retained mode `i`,
//!
//! ```text
//! f_train(t) = f₀ + V diag(e_i(t) − 1) z,          z = V_Rᵀ (f₀ − Y)
//! f_test(t)  = g₀ − (K_te V) diag((1 − e_i(t))/μ_i) z
//! ```
//!
//! with `e_i(t)` the decay of mode `i` under gradient flow (`exp(−μ η t/n)`), discrete
//! gradient-descent steps (`(1 − ημ/n)^t`) or heavy-ball momentum (a damped oscillator,
//! [`crate::momentum`]). Both factors are computed without cancellation (`expm1`, series
//! for tiny arguments), so `t = 0` gives exactly `f₀`, `g₀`, and `t = ∞` the limits
//! `(−1, 1/μ)`. Outputs at `T` times come from GEMMs `V · W` with `W` a block of
//! `k × (c·R)` (`c` times, `c·R` a multiple of 16, the same shape whatever `T`, so a time's
//! outputs do not depend on the other times of the call); no `(T, N, N)` array is formed.

use crate::{Error, Real, Result, Shape};
use faer::linalg::matmul::matmul;
use faer::reborrow::Reborrow;
use faer::{Accum, Mat, MatMut, MatRef, Par};
use rayon::prelude::*;

/// How each eigenmode evolves in time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Dynamics {
    /// Gradient flow: `e = exp(−μ·scale·t)`, `scale = η/n`.
    Flow { scale: f64 },
    /// Gradient descent with discrete steps: `e = (1 − μ·scale)^t`, `scale = η/n`.
    Steps { scale: f64 },
    /// Heavy-ball momentum `m`: time `τ = √η·t`, stiffness `μ/n`, damping `(1 − m)/√η`.
    Momentum {
        sqrt_eta: f64,
        inv_n: f64,
        damping: f64,
    },
}

impl Dynamics {
    /// Heavy ball with learning rate `eta`, momentum `m` and `n` loss terms.
    pub fn momentum(eta: f64, m: f64, n: f64) -> Result<Self> {
        if !(eta > 0.0 && eta.is_finite()) {
            return Err(Error::InvalidArgument(format!(
                "learning_rate must be > 0 and finite, got {eta}"
            )));
        }
        if !(0.0..1.0).contains(&m) {
            return Err(Error::InvalidArgument(format!(
                "momentum must be in [0, 1), got {m}"
            )));
        }
        let sqrt_eta = eta.sqrt();
        Ok(Dynamics::Momentum {
            sqrt_eta,
            inv_n: 1.0 / n,
            damping: (1.0 - m) / sqrt_eta,
        })
    }

    /// `(e − 1, (1 − e)/μ)` of a retained mode `μ > 0` at time `t ≥ 0` (`t = ∞` allowed).
    #[must_use]
    pub fn factors(&self, mu: f64, t: f64) -> (f64, f64) {
        if t == 0.0 {
            return (0.0, 0.0);
        }
        if t == f64::INFINITY {
            return (-1.0, 1.0 / mu);
        }
        match *self {
            Dynamics::Flow { scale } => flow_factors(mu, scale * t),
            Dynamics::Steps { scale } => step_factors(mu, scale, t),
            Dynamics::Momentum {
                sqrt_eta,
                inv_n,
                damping,
            } => crate::momentum::factors(mu, mu * inv_n, damping, sqrt_eta * t),
        }
    }
}

/// Gradient flow at scaled time `s = ηt/n`: `(expm1(−μs), −expm1(−μs)/μ)`, with the series
/// `s(1 − μs/2)` for `μs < 1e-8`.
#[inline]
#[must_use]
pub fn flow_factors(mu: f64, s: f64) -> (f64, f64) {
    let x = mu * s;
    let em1 = (-x).exp_m1();
    let phi = if x < 1e-8 {
        s * (1.0 - 0.5 * x)
    } else {
        -em1 / mu
    };
    (em1, phi)
}

/// Discrete steps: `e = (1 − aμ)^t`. For `aμ < 1` through `expm1(t·ln1p(−aμ))` (no
/// cancellation for small `aμ`); beyond, the oscillating or divergent power itself.
#[inline]
#[must_use]
pub fn step_factors(mu: f64, a: f64, t: f64) -> (f64, f64) {
    let x = a * mu;
    if x < 1.0 {
        let y = t * (-x).ln_1p();
        let em1 = y.exp_m1();
        // expm1 and ln1p keep full relative accuracy as aμ → 0, so no series is needed.
        (em1, -em1 / mu)
    } else {
        let e = (1.0 - x).powf(t);
        (e - 1.0, (1.0 - e) / mu)
    }
}

/// Fills `em1[i, j]`, `phi[i, j]` with the factors of mode `mu[i]` at `times[j]`.
pub fn mode_factors(
    dynamics: &Dynamics,
    mu: &[f64],
    times: &[f64],
    mut em1: MatMut<'_, f64>,
    mut phi: MatMut<'_, f64>,
) -> Result<()> {
    let (k, nt) = (mu.len(), times.len());
    for (what, m) in [("em1", em1.rb()), ("phi", phi.rb())] {
        if m.nrows() != k || m.ncols() != nt {
            return Err(Error::DimensionMismatch {
                what,
                expected: Shape::Matrix(k, nt),
                got: Shape::Matrix(m.nrows(), m.ncols()),
            });
        }
    }
    check_times(times)?;
    // exp/expm1 below run on the thread that may just have run faer's SIMD kernels.
    crate::simd::clear_upper_vector_state();
    for (j, &t) in times.iter().enumerate() {
        for (i, &m) in mu.iter().enumerate() {
            let (a, b) = dynamics.factors(m, t);
            em1[(i, j)] = a;
            phi[(i, j)] = b;
        }
    }
    Ok(())
}

fn check_times(times: &[f64]) -> Result<()> {
    match times.iter().find(|t| t.is_nan() || **t < 0.0) {
        Some(t) => Err(Error::InvalidArgument(format!(
            "t must be >= 0 (or inf), got {t}"
        ))),
        None => Ok(()),
    }
}

fn check_mu(mu: &[f64]) -> Result<()> {
    if mu.iter().all(|m| *m > 0.0 && m.is_finite()) {
        Ok(())
    } else {
        Err(Error::InvalidArgument(
            "retained eigenvalues must be positive and finite".into(),
        ))
    }
}

/// `z = V_Rᵀ r` (`k × R`).
pub fn project<T: Real>(v: MatRef<'_, T>, r: MatRef<'_, T>, par: Par) -> Result<Mat<T>> {
    if v.nrows() != r.nrows() {
        return Err(Error::DimensionMismatch {
            what: "residual rows",
            expected: Shape::Rows(v.nrows()),
            got: Shape::Matrix(r.nrows(), r.ncols()),
        });
    }
    let mut z = Mat::<T>::zeros(v.ncols(), r.ncols());
    matmul(
        z.as_mut(),
        Accum::Replace,
        v.transpose(),
        r,
        T::from_f64(1.0),
        par,
    );
    Ok(z)
}

/// `K_te · V` (`M × k`), the test-dependent work a test-set handle caches.
pub fn test_basis<T: Real>(kte: MatRef<'_, T>, v: MatRef<'_, T>, par: Par) -> Result<Mat<T>> {
    if kte.ncols() != v.nrows() {
        return Err(Error::DimensionMismatch {
            what: "k_test_train columns",
            expected: Shape::Cols(v.nrows()),
            got: Shape::Matrix(kte.nrows(), kte.ncols()),
        });
    }
    let mut kv = Mat::<T>::zeros(kte.nrows(), v.ncols());
    matmul(kv.as_mut(), Accum::Replace, kte, v, T::from_f64(1.0), par);
    Ok(kv)
}

/// Which factor a reconstruction uses, and its sign.
#[derive(Clone, Copy)]
enum Side {
    /// `out = base + basis · (em1 ⊙ z)`.
    Train,
    /// `out = base − basis · (phi ⊙ z)`.
    Test,
}

/// Number of time points per product, from the shapes only (never the number of times):
/// a multiple of `16/gcd(16, R)` (so `chunk·R` columns are a multiple of 16) giving about
/// `clamp(rows/8, 16, 256)` columns: wide enough for an efficient product over many
/// times, narrow enough that a single time stays cheap next to the factorization.
fn fixed_chunk(r: usize, rows: usize) -> usize {
    let r = r.max(1);
    let mut g = 16;
    let mut b = r % 16;
    while b != 0 {
        (g, b) = (b, g % b);
    }
    let base = 16 / g;
    let target = (rows / 8).clamp(16, 256);
    let step = base * r;
    base * ((target + step / 2) / step).max(1)
}

/// `out[t] = base + sign · [then ·] basis · (factor(:, t) ⊙ z)` for all `t`, `out` C-ordered
/// `(T, rows, R)` with `rows` those of `then` if given, else of `basis`. Times go through
/// the products in chunks of a size that depends on the shapes only (not on `T`).
#[allow(clippy::too_many_arguments)]
fn reconstruct<T: Real>(
    side: Side,
    basis: MatRef<'_, T>,
    z: MatRef<'_, T>,
    factor: MatRef<'_, f64>,
    base: MatRef<'_, T>,
    out: &mut [T],
    then: Option<MatRef<'_, T>>,
    par: Par,
) -> Result<()> {
    let (k, r, nt) = (basis.ncols(), z.ncols(), factor.ncols());
    let rows = then.map_or(basis.nrows(), |m| m.nrows());
    if z.nrows() != k || factor.nrows() != k {
        return Err(Error::DimensionMismatch {
            what: "modes of z / factors",
            expected: Shape::Rows(k),
            got: if z.nrows() == k {
                Shape::Matrix(factor.nrows(), factor.ncols())
            } else {
                Shape::Matrix(z.nrows(), z.ncols())
            },
        });
    }
    if let Some(m) = then {
        if m.ncols() != basis.nrows() {
            return Err(Error::DimensionMismatch {
                what: "k_test_train columns",
                expected: Shape::Cols(basis.nrows()),
                got: Shape::Matrix(m.nrows(), m.ncols()),
            });
        }
    }
    if base.nrows() != rows || base.ncols() != r {
        return Err(Error::DimensionMismatch {
            what: "initial outputs",
            expected: Shape::Matrix(rows, r),
            got: Shape::Matrix(base.nrows(), base.ncols()),
        });
    }
    if out.len() != nt * rows * r {
        return Err(Error::DimensionMismatch {
            what: "output buffer",
            expected: Shape::Len(nt * rows * r),
            got: Shape::Len(out.len()),
        });
    }
    if out.is_empty() {
        return Ok(());
    }
    let sign = match side {
        Side::Train => 1.0,
        Side::Test => -1.0,
    };
    let block = rows * r;
    // Every product has the same shape whatever `T`: `chunk` times (`chunk·R` columns, a
    // multiple of 16) per product, the last chunk padded with zero columns. faer computes a
    // product's columns independently of their position, but not of the product's width
    // (one column takes a matrix–vector kernel; small-row products change kernel with the
    // width), so fixed shapes make every time's outputs the same bits whatever the other
    // times of the call (docs/numerics.md §3.1; tests/test_scale.py checks it).
    let chunk = fixed_chunk(r, basis.nrows().max(rows));
    let width = chunk * r;
    let mut w = Mat::<T>::zeros(k, width);
    let mut c = Mat::<T>::zeros(basis.nrows(), width);
    let mut d = then.map(|m| Mat::<T>::zeros(m.nrows(), width));
    for (ci, out_chunk) in out.chunks_mut(chunk * block).enumerate() {
        let t0 = ci * chunk;
        let tc = out_chunk.len() / block.max(1);
        if tc == 0 {
            // rows * r == 0: nothing to write.
            continue;
        }
        for tt in 0..chunk {
            for rr in 0..r {
                for i in 0..k {
                    // padding columns (past the last time) are zero
                    w[(i, tt * r + rr)] = if tt < tc {
                        T::from_f64(sign * factor[(i, t0 + tt)] * z[(i, rr)].to_f64())
                    } else {
                        T::from_f64(0.0)
                    };
                }
            }
        }
        let cols = width;
        if k > 0 {
            matmul(
                c.as_mut().subcols_mut(0, cols),
                Accum::Replace,
                basis,
                w.as_ref().subcols(0, cols),
                T::from_f64(1.0),
                par,
            );
        } else {
            c.as_mut().subcols_mut(0, cols).fill(T::from_f64(0.0));
        }
        if let (Some(m), Some(d)) = (then, d.as_mut()) {
            matmul(
                d.as_mut().subcols_mut(0, cols),
                Accum::Replace,
                m,
                c.as_ref().subcols(0, cols),
                T::from_f64(1.0),
                par,
            );
        }
        let c = d.as_ref().map_or(c.as_ref(), Mat::as_ref);
        let scatter = |(tt, dst): (usize, &mut [T])| {
            for i in 0..rows {
                for rr in 0..r {
                    dst[i * r + rr] =
                        T::from_f64(base[(i, rr)].to_f64() + c[(i, tt * r + rr)].to_f64());
                }
            }
        };
        match par {
            Par::Seq => out_chunk.chunks_mut(block).enumerate().for_each(scatter),
            Par::Rayon(_) => out_chunk
                .par_chunks_mut(block)
                .enumerate()
                .for_each(scatter),
        }
    }
    Ok(())
}

/// Train outputs at every time: `out[t] = f₀ + V_R (em1(:, t) ⊙ z)`, `out` of length
/// `T·N·R` in C order `(T, N, R)`.
pub fn train_outputs<T: Real>(
    v: MatRef<'_, T>,
    z: MatRef<'_, T>,
    em1: MatRef<'_, f64>,
    f0: MatRef<'_, T>,
    out: &mut [T],
    par: Par,
) -> Result<()> {
    reconstruct(Side::Train, v, z, em1, f0, out, None, par)
}

/// Test outputs from a cached `K_te V_R` (`M × k`): `out[t] = g₀ − KV (phi(:, t) ⊙ z)`.
pub fn test_outputs_cached<T: Real>(
    kv: MatRef<'_, T>,
    z: MatRef<'_, T>,
    phi: MatRef<'_, f64>,
    g0: MatRef<'_, T>,
    out: &mut [T],
    par: Par,
) -> Result<()> {
    reconstruct(Side::Test, kv, z, phi, g0, out, None, par)
}

/// Test outputs without a cache: `out[t] = g₀ − K_te·(V_R (phi(:, t) ⊙ z))`.
///
/// One multiplication order for every call (docs/numerics.md §3.1): the order must not
/// depend on the number of times `T`, or `t=None`, `t=inf` and an `inf` inside an array of
/// times would round differently (on an ill-conditioned kernel visibly so: the result is
/// accurate to about `cond(A)·ε`, and each order has its own rounding). This order is the
/// one of the Cholesky path (`K_te·x`) and costs `2(Nk + MN)·R` per time; the other,
/// `(K_te V_R)·W`, pays off only over many times and is what a cached test set
/// ([`test_outputs_cached`]) does.
pub fn test_outputs<T: Real>(
    kte: MatRef<'_, T>,
    v: MatRef<'_, T>,
    z: MatRef<'_, T>,
    phi: MatRef<'_, f64>,
    g0: MatRef<'_, T>,
    out: &mut [T],
    par: Par,
) -> Result<()> {
    if g0.nrows() != kte.nrows() || g0.ncols() != z.ncols() {
        return Err(Error::DimensionMismatch {
            what: "initial test outputs",
            expected: Shape::Matrix(kte.nrows(), z.ncols()),
            got: Shape::Matrix(g0.nrows(), g0.ncols()),
        });
    }
    if z.nrows() != v.ncols() || phi.nrows() != v.ncols() {
        return Err(Error::DimensionMismatch {
            what: "modes of z / factors",
            expected: Shape::Rows(v.ncols()),
            got: if z.nrows() == v.ncols() {
                Shape::Matrix(phi.nrows(), phi.ncols())
            } else {
                Shape::Matrix(z.nrows(), z.ncols())
            },
        });
    }
    if kte.ncols() != v.nrows() {
        return Err(Error::DimensionMismatch {
            what: "k_test_train columns",
            expected: Shape::Cols(v.nrows()),
            got: Shape::Matrix(kte.nrows(), kte.ncols()),
        });
    }
    // y = V_R (phi ⊙ z) for a chunk of times at once, then K_te · y in one product.
    reconstruct(Side::Test, v, z, phi, g0, out, Some(kte), par)
}

/// Validates retained eigenvalues (used by the bindings before any reconstruction).
pub fn check_retained(mu: &[f64]) -> Result<()> {
    check_mu(mu)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spectral::{sym_eigh, tests::with_spectrum};

    #[test]
    fn flow_factors_limits_and_series() {
        assert_eq!(Dynamics::Flow { scale: 1.0 }.factors(2.0, 0.0), (0.0, 0.0));
        assert_eq!(
            Dynamics::Flow { scale: 1.0 }.factors(2.0, f64::INFINITY),
            (-1.0, 0.5)
        );
        let (em1, phi) = flow_factors(1e-20, 3.0);
        assert!((em1 + 3e-20).abs() < 1e-35);
        assert!((phi - 3.0).abs() < 1e-15);
        // across the series threshold the two branches agree
        let (_, a) = flow_factors(1.0, 0.999_999e-8);
        let (_, b) = flow_factors(1.0, 1.000_001e-8);
        assert!((a - b).abs() < 3e-14 * 1e-8 + 1e-22 + 2.1e-14, "{a} {b}");
        let (em1, phi) = flow_factors(0.7, 2.0);
        assert!((em1 - ((-1.4f64).exp() - 1.0)).abs() < 1e-16);
        assert!((phi - (1.0 - (-1.4f64).exp()) / 0.7).abs() < 1e-15);
    }

    #[test]
    fn step_factors_match_powers() {
        for &(mu, a, t) in &[
            (0.3, 1.0, 5.0),
            (1.5, 1.0, 3.0),
            (2.5, 1.0, 4.0),
            (1e-9, 0.1, 100.0),
        ] {
            let e = (1.0f64 - a * mu).powi(t as i32);
            let (em1, phi) = step_factors(mu, a, t);
            assert!(
                (em1 - (e - 1.0)).abs() < 1e-13 * e.abs().max(1.0),
                "{mu} {em1} {e}"
            );
            let want = if a * mu < 1e-6 { a * t } else { (1.0 - e) / mu };
            assert!((phi - want).abs() < 1e-6 * want.abs(), "{phi} {want}");
        }
    }

    #[test]
    fn reconstruction_matches_dense_formula() {
        let lams: Vec<f64> = (0..40).map(|i| 0.05 + f64::from(i) * 0.1).collect();
        let k = with_spectrum(&lams);
        let n = lams.len();
        let mut w = vec![0.0; n];
        let mut v = Mat::<f64>::zeros(n, n);
        sym_eigh(k.as_ref(), 0.0, &mut w, v.as_mut(), Par::Seq).unwrap();
        let r = 3;
        let y = Mat::<f64>::from_fn(n, r, |i, j| ((i * 3 + j) as f64).cos());
        let f0 = Mat::<f64>::from_fn(n, r, |i, j| 0.1 * ((i + 5 * j) as f64).sin());
        let kte = Mat::<f64>::from_fn(7, n, |i, j| ((i * n + j) as f64 * 0.37).sin());
        let g0 = Mat::<f64>::from_fn(7, r, |i, j| (i + j) as f64 * 0.01);
        let times = [0.0, 0.5, 3.0, f64::INFINITY];
        let dynm = Dynamics::Flow { scale: 0.9 };
        let mut em1 = Mat::<f64>::zeros(n, times.len());
        let mut phi = Mat::<f64>::zeros(n, times.len());
        mode_factors(&dynm, &w, &times, em1.as_mut(), phi.as_mut()).unwrap();
        let z = project(v.as_ref(), (&f0 - &y).as_ref(), Par::Seq).unwrap();
        let mut tr = vec![0.0; times.len() * n * r];
        train_outputs(
            v.as_ref(),
            z.as_ref(),
            em1.as_ref(),
            f0.as_ref(),
            &mut tr,
            Par::rayon(2),
        )
        .unwrap();
        let mut te1 = vec![0.0; times.len() * 7 * r];
        let mut te2 = te1.clone();
        test_outputs(
            kte.as_ref(),
            v.as_ref(),
            z.as_ref(),
            phi.as_ref(),
            g0.as_ref(),
            &mut te1,
            Par::Seq,
        )
        .unwrap();
        let kv = test_basis(kte.as_ref(), v.as_ref(), Par::Seq).unwrap();
        test_outputs_cached(
            kv.as_ref(),
            z.as_ref(),
            phi.as_ref(),
            g0.as_ref(),
            &mut te2,
            Par::Seq,
        )
        .unwrap();
        for (ti, &t) in times.iter().enumerate() {
            // dense: f = Y + V e V^T r0 ; g = g0 + Kte V diag(phi) V^T (Y - f0)
            let s = 0.9 * t;
            let e = Mat::<f64>::from_fn(n, n, |i, j| {
                if i == j {
                    if t.is_infinite() {
                        0.0
                    } else {
                        (-w[i] * s).exp()
                    }
                } else {
                    0.0
                }
            });
            let p = Mat::<f64>::from_fn(n, n, |i, j| {
                if i == j {
                    if t.is_infinite() {
                        1.0 / w[i]
                    } else {
                        (1.0 - (-w[i] * s).exp()) / w[i]
                    }
                } else {
                    0.0
                }
            });
            let f = &y + &v * &e * v.transpose() * (&f0 - &y);
            let g = &g0 + &kte * &v * &p * v.transpose() * (&y - &f0);
            for i in 0..n {
                for j in 0..r {
                    assert!((tr[ti * n * r + i * r + j] - f[(i, j)]).abs() < 1e-12);
                }
            }
            for i in 0..7 {
                for j in 0..r {
                    assert!((te1[ti * 7 * r + i * r + j] - g[(i, j)]).abs() < 1e-11);
                    assert!((te2[ti * 7 * r + i * r + j] - g[(i, j)]).abs() < 1e-11);
                }
            }
        }
        // t = 0 is exact
        for i in 0..n {
            for j in 0..r {
                assert_eq!(tr[i * r + j], f0[(i, j)]);
            }
        }
    }

    #[test]
    fn bad_times_are_rejected() {
        let mut a = Mat::<f64>::zeros(1, 1);
        let mut b = Mat::<f64>::zeros(1, 1);
        let err = mode_factors(
            &Dynamics::Flow { scale: 1.0 },
            &[1.0],
            &[-1.0],
            a.as_mut(),
            b.as_mut(),
        );
        assert!(matches!(err, Err(Error::InvalidArgument(_))));
    }
}
