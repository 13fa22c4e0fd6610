//! The MSE closed form at many times in one call: per-mode factors, projection of the
//! residual and reconstruction of the train and test outputs (docs/numerics.md §3).
//!
//! The same steps, in the same order and on the same buffers' values, as calling
//! [`dynamics::mode_factors`], [`dynamics::project`] and the reconstructions one by one, so
//! the outputs are bitwise those of the step-by-step path, except that the closed form
//! compresses the time axis when many finite nonzero times make that pay (docs/numerics.md
//! §16; within its bound of the step-by-step outputs; `t = 0` and `t = ∞` stay bitwise).

use crate::dynamics::{self, Dynamics, Modes, TimeBasis};
use crate::{Real, Result};
use faer::{Mat, MatRef, Par};

/// The test side of a closed form: the test–train kernel (`M × N`) or its cached product
/// with the retained eigenvectors (`K_te V_R`, `M × k`), the initial test outputs `g₀`
/// (`M × R`) and the `(T, M, R)` output buffer.
pub enum TestSide<'a, T> {
    Kernel {
        kte: MatRef<'a, T>,
        g0: MatRef<'a, T>,
        out: &'a mut [T],
    },
    Cached {
        kv: MatRef<'a, T>,
        g0: MatRef<'a, T>,
        out: &'a mut [T],
    },
}

/// Time bases kept across calls (docs/numerics.md §16, "Reuse"): on `V` for the train
/// outputs and on a cached `K_te V` for the test outputs; `keep` asks for new ones.
#[derive(Clone, Copy)]
pub struct Kept<'a, T> {
    pub train: Option<&'a TimeBasis<T>>,
    pub test: Option<&'a TimeBasis<T>>,
    pub keep: bool,
    /// `z = V_Rᵀ r` of an earlier call with the same `r` and `V_R` (then not recomputed).
    pub z: Option<MatRef<'a, T>>,
}

impl<T> Default for Kept<'_, T> {
    fn default() -> Self {
        Kept {
            train: None,
            test: None,
            keep: false,
            z: None,
        }
    }
}

/// The result of [`closed_form`]: `z` and the time bases to keep from now on (train, test;
/// `None`: keep what was kept).
pub type ClosedForm<T> = (Mat<T>, Option<TimeBasis<T>>, Option<TimeBasis<T>>);

/// Operations of a [`closed_form`] call (uncompressed, an upper bound), for
/// [`crate::threads::install_sized`]: `n×k` modes, `r` output columns, `t` times, `m` test
/// rows; `m_kernel`: the test side is `K_te` itself (`m×n`, applied to `V_R (φ ⊙ z)`)
/// rather than a kept `K_te V` (`m×k`).
#[must_use]
pub fn work(n: usize, k: usize, r: usize, t: usize, m: usize, m_kernel: bool) -> usize {
    let test_inner = if m_kernel { n } else { k };
    let per_column = n
        .saturating_mul(k)
        .saturating_add(m.saturating_mul(test_inner));
    let outputs = per_column.saturating_mul(r).saturating_mul(t);
    let projection = n.saturating_mul(k).saturating_mul(r);
    outputs.saturating_add(projection).saturating_mul(2)
}

/// Outputs of gradient dynamics on `A = V diag(μ) Vᵀ` at `times`: with `z = V_Rᵀ r`
/// (`r = f₀ − Y`), `train = (f₀, out)` receives `f₀ + V_R (em1 ⊙ z)` and `test` receives
/// `g₀ − K_te V_R (φ ⊙ z)` (see [`dynamics`]). Returns `z` and the time bases to keep
/// (`kept`: those of earlier calls on the same `V` / `K_te V`).
///
/// `mu` are the retained eigenvalues (checked), `v` the matching eigenvectors (`N × k`),
/// formed or as `Q·Z_R` ([`Modes`]).
pub fn closed_form<T: Real>(
    dynamics: &Dynamics,
    mu: &[f64],
    times: &[f64],
    v: Modes<'_, T>,
    r: MatRef<'_, T>,
    train: Option<(MatRef<'_, T>, &mut [T])>,
    test: Option<TestSide<'_, T>>,
    kept: Kept<'_, T>,
    par: Par,
) -> Result<ClosedForm<T>> {
    dynamics::check_retained(mu)?;
    let mut em1 = Mat::<f64>::zeros(mu.len(), times.len());
    let mut phi = Mat::<f64>::zeros(mu.len(), times.len());
    dynamics::check_times(times)?;
    dynamics::mode_factors_par(dynamics, mu, times, em1.as_mut(), phi.as_mut(), par);
    let z = match kept.z {
        Some(z) if z.nrows() == v.ncols() && z.ncols() == r.ncols() => z.to_owned(),
        _ => dynamics::project_modes(v, r, par)?,
    };
    dynamics::reset_compression_ranks();
    let cols = dynamics::compressible_times(times);
    let (zr, keep) = (z.as_ref(), kept.keep);
    let mut new_train = None;
    if let Some((f0, out)) = train {
        let em1 = em1.as_ref();
        new_train =
            dynamics::train_outputs_kept(v, zr, em1, f0, out, cols.clone(), kept.train, keep, par)?;
    }
    let mut new_test = None;
    match test {
        Some(TestSide::Kernel { kte, g0, out }) => {
            let phi = phi.as_ref();
            dynamics::test_outputs_with(kte, v, zr, phi, g0, out, cols, par)?;
        }
        Some(TestSide::Cached { kv, g0, out }) => {
            let phi = phi.as_ref();
            new_test = dynamics::test_outputs_cached_kept(
                kv, zr, phi, g0, out, cols, kept.test, keep, par,
            )?;
        }
        None => {}
    }
    Ok((z, new_train, new_test))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spectral::{sym_eigh, tests::with_spectrum};

    /// One call gives bitwise the outputs of the step-by-step path.
    #[test]
    fn matches_the_steps_bitwise() {
        let (n, m, r) = (7, 3, 2);
        let a = with_spectrum(&[0.0, 1e-3, 0.2, 0.5, 1.0, 3.0, 9.0]);
        let mut w = vec![0.0; n];
        let mut vv = Mat::<f64>::zeros(n, n);
        sym_eigh(a.as_ref(), 0.0, &mut w, vv.as_mut(), Par::Seq).unwrap();
        let first = 1;
        let (mu, v) = (&w[first..], vv.as_ref().subcols(first, n - first));
        let res = Mat::<f64>::from_fn(n, r, |i, j| ((i * r + j) as f64 * 0.37).sin());
        let f0 = Mat::<f64>::from_fn(n, r, |i, j| 0.1 * (i + j) as f64);
        let kte = Mat::<f64>::from_fn(m, n, |i, j| ((i * n + j) as f64 * 0.11).cos());
        let g0 = Mat::<f64>::from_fn(m, r, |i, j| 0.2 * (i as f64) - (j as f64));
        let times = [0.0, 0.3, 2.0, f64::INFINITY];
        for dynm in [
            Dynamics::Flow { scale: 0.5 },
            Dynamics::Steps { scale: 0.05 },
            Dynamics::momentum(0.5, 0.9, n as f64).unwrap(),
        ] {
            let nt = times.len();
            let (mut train, mut test) = (vec![0.0; nt * n * r], vec![0.0; nt * m * r]);
            let z = closed_form(
                &dynm,
                mu,
                &times,
                Modes::Dense(v),
                res.as_ref(),
                Some((f0.as_ref(), &mut train)),
                Some(TestSide::Kernel {
                    kte: kte.as_ref(),
                    g0: g0.as_ref(),
                    out: &mut test,
                }),
                Kept::default(),
                Par::Seq,
            )
            .unwrap()
            .0;
            let mut em1 = Mat::<f64>::zeros(mu.len(), nt);
            let mut phi = Mat::<f64>::zeros(mu.len(), nt);
            dynamics::mode_factors(&dynm, mu, &times, em1.as_mut(), phi.as_mut()).unwrap();
            let z2 = dynamics::project(v, res.as_ref(), Par::Seq).unwrap();
            let (mut train2, mut test2) = (vec![0.0; nt * n * r], vec![0.0; nt * m * r]);
            dynamics::train_outputs(
                v,
                z2.as_ref(),
                em1.as_ref(),
                f0.as_ref(),
                &mut train2,
                Par::Seq,
            )
            .unwrap();
            dynamics::test_outputs(
                kte.as_ref(),
                v,
                z2.as_ref(),
                phi.as_ref(),
                g0.as_ref(),
                &mut test2,
                Par::Seq,
            )
            .unwrap();
            assert_eq!(z, z2);
            assert_eq!(train, train2);
            assert_eq!(test, test2);
            // t = 0 gives f0 and g0 exactly; t = inf the interpolant of the residual.
            assert_eq!(&train[..n * r], f0_row_major(&f0).as_slice());
            // the cached basis gives the same outputs to rounding
            let kv = dynamics::test_basis(kte.as_ref(), v, Par::Seq).unwrap();
            let mut test3 = vec![0.0; nt * m * r];
            closed_form(
                &dynm,
                mu,
                &times,
                Modes::Dense(v),
                res.as_ref(),
                None,
                Some(TestSide::Cached {
                    kv: kv.as_ref(),
                    g0: g0.as_ref(),
                    out: &mut test3,
                }),
                Kept::default(),
                Par::Seq,
            )
            .unwrap();
            let scale = test2.iter().fold(1.0f64, |s, x| s.max(x.abs()));
            for (a, b) in test3.iter().zip(&test2) {
                assert!((a - b).abs() <= 1e-12 * scale, "{a} vs {b}");
            }
        }
    }

    fn f0_row_major(f0: &Mat<f64>) -> Vec<f64> {
        let mut out = Vec::new();
        for i in 0..f0.nrows() {
            for j in 0..f0.ncols() {
                out.push(f0[(i, j)]);
            }
        }
        out
    }

    #[test]
    fn checks_the_retained_eigenvalues() {
        let v = Mat::<f64>::zeros(2, 1);
        let r = Mat::<f64>::zeros(2, 1);
        let e = closed_form(
            &Dynamics::Flow { scale: 1.0 },
            &[-1.0],
            &[1.0],
            Modes::Dense(v.as_ref()),
            r.as_ref(),
            None,
            None,
            Kept::default(),
            Par::Seq,
        );
        assert!(e.is_err());
    }
}
