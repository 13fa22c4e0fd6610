//! Tests of the integrator against closed forms and the reference integrator.

use super::driver::steps_to_reach;
use super::*;
use crate::spectral::{sym_eigh, tests::with_spectrum};
use faer::{Mat, MatMut};

/// Max abs difference over max abs of the reference.
fn rel_err(got: &[f64], want: &[f64]) -> f64 {
    let m = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    got.iter()
        .zip(want)
        .fold(0.0f64, |e, (a, b)| e.max((a - b).abs()))
        / m
}

fn problem(d: usize, r: usize) -> (Mat<f64>, Mat<f64>, Mat<f64>) {
    let lams: Vec<f64> = (0..d).map(|i| 0.2 + 0.8 * i as f64).collect();
    let theta = with_spectrum(&lams);
    let f0 = Mat::<f64>::from_fn(d, r, |i, j| 0.3 * ((i * r + j) as f64 * 0.7).sin());
    let y = Mat::<f64>::from_fn(d, r, |i, j| ((i + 2 * j) as f64 * 1.3).cos());
    (theta, f0, y)
}

/// `V diag(fac(λ_i)) Vᵀ r` for each output time, flattened `(T, D, R)`.
fn modal(
    theta: &Mat<f64>,
    r0: &Mat<f64>,
    times: &[f64],
    fac: impl Fn(f64, f64) -> f64,
) -> Vec<f64> {
    let d = theta.nrows();
    let mut lam = vec![0.0; d];
    let mut v = Mat::<f64>::zeros(d, d);
    sym_eigh(theta.as_ref(), 0.0, &mut lam, v.as_mut(), Par::Seq).unwrap();
    let z = v.transpose() * r0;
    let mut out = Vec::new();
    for &t in times {
        let scaled = Mat::<f64>::from_fn(d, r0.ncols(), |i, j| fac(lam[i], t) * z[(i, j)]);
        let m = &v * &scaled;
        for i in 0..d {
            for j in 0..r0.ncols() {
                out.push(m[(i, j)]);
            }
        }
    }
    out
}

fn tile(m: &Mat<f64>, nt: usize) -> Vec<f64> {
    let mut out = Vec::new();
    for _ in 0..nt {
        for i in 0..m.nrows() {
            for j in 0..m.ncols() {
                out.push(m[(i, j)]);
            }
        }
    }
    out
}

#[test]
fn mse_flow_matches_closed_form() {
    let (d, r) = (12, 3);
    let (theta, f0, y) = problem(d, r);
    let n = (d * r) as f64;
    let times = [0.0, 0.0, 1.0, 10.0, 10.0, 55.0, 300.0, 1000.0];
    let mut loss = Mse { y: y.clone(), n };
    for par in [Par::Seq, Par::rayon(2)] {
        let sol = integrate(
            theta.as_ref(),
            f0.as_ref(),
            None,
            None,
            &mut loss,
            &times,
            None,
            &OdeOptions::default(),
            par,
        )
        .unwrap();
        let r0 = &f0 - &y;
        // F = Y + V e^{−λτ/n} Vᵀ r₀;  S = V ((1 − e^{−λτ/n})/λ) Vᵀ r₀
        let mut want_f = modal(&theta, &r0, &times, |l, t| (-l * t / n).exp());
        for (w, yv) in want_f.iter_mut().zip(tile(&y, times.len())) {
            *w += yv;
        }
        let want_s = modal(&theta, &r0, &times, |l, t| -(-l * t / n).exp_m1() / l);
        let (ef, es) = (rel_err(&sol.f, &want_f), rel_err(&sol.s, &want_s));
        eprintln!("flow: F {ef:.2e} S {es:.2e}, {} steps", sol.n_steps);
        assert!(ef < 1e-6 && es < 1e-6, "F {ef:e} S {es:e}");
        // τ = 0 is exact
        assert_eq!(&sol.f[..d * r], &tile(&f0, 1)[..]);
        assert!(sol.s[..2 * d * r].iter().all(|v| *v == 0.0));
        assert_eq!(sol.tau_end, 1000.0);
        assert!(sol.n_steps > 10 && sol.q.is_none());
    }
}

#[test]
fn momentum_mse_matches_closed_form() {
    let (d, r) = (10, 2);
    let (theta, f0, y) = problem(d, r);
    let n = (d * r) as f64;
    let times = [0.0, 0.3, 2.0, 17.0, 60.0, 150.0];
    for &c in &[0.05, 0.6, 3.0] {
        let mut loss = Mse { y: y.clone(), n };
        let sol = integrate(
            theta.as_ref(),
            f0.as_ref(),
            None,
            Some(c),
            &mut loss,
            &times,
            None,
            &OdeOptions::default(),
            Par::Seq,
        )
        .unwrap();
        let r0 = &f0 - &y;
        // F = F₀ + V ((h − 1) ⊙ z);  S = V ((1 − h)/λ ⊙ z)  (from Θ S = F₀ − F)
        let mut want_f = modal(&theta, &r0, &times, |l, t| {
            crate::momentum::factors(l, l / n, c, t).0
        });
        for (w, fv) in want_f.iter_mut().zip(tile(&f0, times.len())) {
            *w += fv;
        }
        let want_s = modal(&theta, &r0, &times, |l, t| {
            crate::momentum::factors(l, l / n, c, t).1
        });
        let (ef, es) = (rel_err(&sol.f, &want_f), rel_err(&sol.s, &want_s));
        eprintln!(
            "momentum c {c}: F {ef:.2e} S {es:.2e}, {} steps",
            sol.n_steps
        );
        assert!(ef < 1e-6 && es < 1e-6, "c {c}: F {ef:e} S {es:e}");
        assert!(sol.q.is_some() && sol.p.is_some());
    }
}

fn ce_loss(f: &Mat<f64>, y: &Mat<f64>, n: f64, k: usize) -> f64 {
    let r = f.ncols();
    let flat = |m: &Mat<f64>, idx: usize| m[(idx / r, idx % r)];
    let total = f.nrows() * r;
    let mut l = 0.0;
    for g in 0..total / k {
        let idx: Vec<usize> = (g * k..(g + 1) * k).collect();
        let m = idx
            .iter()
            .map(|&i| flat(f, i))
            .fold(f64::NEG_INFINITY, f64::max);
        let lse = m + idx
            .iter()
            .map(|&i| (flat(f, i) - m).exp())
            .sum::<f64>()
            .ln();
        l -= idx
            .iter()
            .map(|&i| flat(y, i) * (flat(f, i) - lse))
            .sum::<f64>();
    }
    l / n
}

#[test]
fn cross_entropy_gradient_matches_finite_differences() {
    for &(d, r, k) in &[(6, 4, 4), (12, 1, 3), (5, 6, 3), (6, 2, 4)] {
        let f = Mat::<f64>::from_fn(d, r, |i, j| 2.0 * ((i * 31 + j * 7) as f64 * 0.37).sin());
        // soft labels whose groups do not sum to one
        let y = Mat::<f64>::from_fn(d, r, |i, j| 0.5 + 0.5 * ((i * 5 + j * 3) as f64).cos());
        let n = (d * r) as f64 * 0.7;
        let mut ce = CrossEntropy {
            y: y.clone(),
            n,
            classes: k,
        };
        let mut g = Mat::<f64>::zeros(d, r);
        ce.grad(f.as_ref(), g.as_mut()).unwrap();
        let eps = 1e-5;
        for i in 0..d {
            for j in 0..r {
                let mut fp = f.clone();
                fp[(i, j)] += eps;
                let mut fm = f.clone();
                fm[(i, j)] -= eps;
                let fd = (ce_loss(&fp, &y, n, k) - ce_loss(&fm, &y, n, k)) / (2.0 * eps);
                assert!(
                    (fd - g[(i, j)]).abs() < 1e-9,
                    "({d},{r},{k}) [{i},{j}]: {fd} vs {}",
                    g[(i, j)]
                );
            }
        }
    }
    // large logits: no overflow
    let f = Mat::<f64>::from_fn(2, 3, |i, j| 800.0 * (i + j) as f64);
    let y = Mat::<f64>::from_fn(2, 3, |_, j| f64::from(u8::from(j == 0)));
    let mut ce = CrossEntropy {
        y,
        n: 6.0,
        classes: 3,
    };
    let mut g = Mat::<f64>::zeros(2, 3);
    ce.grad(f.as_ref(), g.as_mut()).unwrap();
    assert!(g.col_iter().all(|c| c.iter().all(|v| v.is_finite())));
    let mut bad = CrossEntropy {
        y: Mat::zeros(2, 3),
        n: 1.0,
        classes: 4,
    };
    assert!(matches!(
        bad.grad(f.as_ref(), g.as_mut()),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn convergence_mode() {
    let (d, r) = (8, 2);
    let (theta, f0, y) = problem(d, r);
    let n = (d * r) as f64;
    let tol = 1e-7;
    for damping in [None, Some(0.8)] {
        let mut loss = Mse { y: y.clone(), n };
        let sol = integrate(
            theta.as_ref(),
            f0.as_ref(),
            None,
            damping,
            &mut loss,
            &[],
            Some(tol),
            &OdeOptions::default(),
            Par::Seq,
        )
        .unwrap();
        let f = MatRef::from_row_major_slice(&sol.f, d, r);
        let g = (f - &y) / n;
        let rate = (&theta * &g)
            .col_iter()
            .flat_map(|c| c.iter().copied().collect::<Vec<_>>())
            .fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(sol.tau_end > 0.0);
        if damping.is_none() {
            assert!(rate <= tol * 1.0001, "{rate}");
        }
        // |F − Y| ≲ rate·n/λ_min
        let e = rel_err(&sol.f, &tile(&y, 1));
        assert!(
            e < 2.0 * tol * n / 0.2,
            "{damping:?}: {e:e} at tau {} after {} steps",
            sol.tau_end,
            sol.n_steps
        );
    }
    // Times and convergence in one run: the times as without it, the converged state last.
    let times = [0.0, 2.0, 40.0, 1e4];
    let mut loss = Mse { y: y.clone(), n };
    let opts = OdeOptions::default();
    let both = integrate(
        theta.as_ref(),
        f0.as_ref(),
        None,
        None,
        &mut loss,
        &times,
        Some(1e-6),
        &opts,
        Par::Seq,
    )
    .unwrap();
    let only = integrate(
        theta.as_ref(),
        f0.as_ref(),
        None,
        None,
        &mut loss,
        &times,
        None,
        &opts,
        Par::Seq,
    )
    .unwrap();
    let dr = d * r;
    assert_eq!(both.f.len(), 5 * dr);
    assert!(rel_err(&both.f[..4 * dr], &only.f) < 1e-6);
    assert!(
        both.tau_end > 40.0 && both.tau_end < 1e4,
        "{}",
        both.tau_end
    );
    assert_eq!(only.tau_end, 1e4);
    assert!(rel_err(&both.f[4 * dr..], &tile(&y, 1)) < 2e-6 * n / 0.2);
    // Already converged at τ = 0: the initial state, no steps beyond the times.
    let mut loss = Mse { y: f0.clone(), n };
    let at0 = integrate(
        theta.as_ref(),
        f0.as_ref(),
        None,
        None,
        &mut loss,
        &[],
        Some(1e-6),
        &opts,
        Par::Seq,
    )
    .unwrap();
    assert_eq!((at0.tau_end, at0.n_steps), (0.0, 0));
    assert_eq!(at0.f, tile(&f0, 1));
    // Below the noise floor (≈ ‖Θ‖/n·atol ≈ 1e-8 here) the rate stagnates: a clean error.
    let mut loss = Mse { y: y.clone(), n };
    let err = integrate(
        theta.as_ref(),
        f0.as_ref(),
        None,
        None,
        &mut loss,
        &[],
        Some(1e-12),
        &OdeOptions::default(),
        Par::Seq,
    );
    assert!(
        matches!(&err, Err(Error::IntegrationFailed(m)) if m.contains("stagnates")),
        "{err:?}"
    );
    // Cross-entropy with one-hot targets never converges (logits grow like log τ): with a
    // tolerance below the rate at τ = 1e12 this fails cleanly.
    let y = Mat::<f64>::from_fn(d, r, |i, j| f64::from(u8::from(j == i % r)));
    let mut ce = CrossEntropy { y, n, classes: r };
    let err = integrate(
        theta.as_ref(),
        f0.as_ref(),
        None,
        None,
        &mut ce,
        &[],
        Some(1e-16),
        &OdeOptions::default(),
        Par::Seq,
    );
    assert!(matches!(err, Err(Error::IntegrationFailed(_))), "{err:?}");
}

struct Failing(usize);
impl Gradient for Failing {
    fn grad(&mut self, f: MatRef<'_, f64>, mut out: MatMut<'_, f64>) -> Result<()> {
        if self.0 == 0 {
            return Err(Error::InvalidArgument("boom".into()));
        }
        self.0 -= 1;
        out.copy_from(f);
        Ok(())
    }
}

#[test]
fn errors() {
    let (theta, f0, y) = problem(4, 2);
    let opts = OdeOptions::default();
    let mut loss = Mse { y, n: 8.0 };
    let run = |loss: &mut Mse, times: &[f64]| {
        integrate(
            theta.as_ref(),
            f0.as_ref(),
            None,
            None,
            loss,
            times,
            None,
            &opts,
            Par::Seq,
        )
    };
    assert!(matches!(
        run(&mut loss, &[1.0, 0.5]),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        run(&mut loss, &[-1.0]),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        run(&mut loss, &[f64::INFINITY]),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        run(&mut loss, &[f64::NAN]),
        Err(Error::InvalidArgument(_))
    ));
    let empty = run(&mut loss, &[]).unwrap();
    assert!(empty.f.is_empty() && empty.n_evals == 0);
    let zero = run(&mut loss, &[0.0]).unwrap();
    assert_eq!(zero.n_evals, 0);
    // wrong shapes
    let bad_f0 = Mat::<f64>::zeros(3, 2);
    let e = integrate(
        theta.as_ref(),
        bad_f0.as_ref(),
        None,
        None,
        &mut loss,
        &[1.0],
        None,
        &opts,
        Par::Seq,
    );
    assert!(matches!(e, Err(Error::DimensionMismatch { .. })));
    let e = integrate(
        theta.as_ref(),
        f0.as_ref(),
        Some(f0.as_ref()),
        None,
        &mut loss,
        &[1.0],
        None,
        &opts,
        Par::Seq,
    );
    assert!(matches!(e, Err(Error::InvalidArgument(_))));
    let e = integrate(
        theta.as_ref(),
        f0.as_ref(),
        None,
        Some(-1.0),
        &mut loss,
        &[1.0],
        None,
        &opts,
        Par::Seq,
    );
    assert!(matches!(e, Err(Error::InvalidArgument(_))));
    // a failing gradient propagates its error
    for k in [0, 1, 5] {
        let e = integrate(
            theta.as_ref(),
            f0.as_ref(),
            None,
            None,
            &mut Failing(k),
            &[10.0],
            None,
            &opts,
            Par::Seq,
        );
        assert_eq!(e, Err(Error::InvalidArgument("boom".into())));
    }
    // max_steps
    let few = OdeOptions {
        max_steps: 3,
        ..opts
    };
    let e = integrate(
        theta.as_ref(),
        f0.as_ref(),
        None,
        None,
        &mut loss,
        &[1e4],
        None,
        &few,
        Par::Seq,
    );
    assert!(matches!(e, Err(Error::IntegrationFailed(_))));
    for tol in [0.0, -1.0, f64::NAN] {
        let e = integrate(
            theta.as_ref(),
            f0.as_ref(),
            None,
            None,
            &mut loss,
            &[],
            Some(tol),
            &opts,
            Par::Seq,
        );
        assert!(matches!(e, Err(Error::InvalidArgument(_))));
    }
}

#[test]
fn interrupt_stops_the_integration_and_its_error_is_returned() {
    let (theta, f0, y) = problem(4, 2);
    let opts = OdeOptions::default();
    let mut loss = Mse { y, n: 8.0 };
    let mut calls = 0usize;
    let mut hook = || {
        calls += 1;
        if calls > 5 {
            Err(Error::InvalidArgument("stop".into()))
        } else {
            Ok(())
        }
    };
    let e = integrate_with_interrupt(
        theta.as_ref(),
        f0.as_ref(),
        None,
        None,
        &mut loss,
        &[1e6],
        None,
        &opts,
        Par::Seq,
        &mut hook,
    );
    assert!(matches!(e, Err(Error::InvalidArgument(ref m)) if m == "stop"));
    assert_eq!(calls, 6); // called before each step attempt, stopped at the first error
                          // a hook that never fires changes nothing
    let plain = integrate(
        theta.as_ref(),
        f0.as_ref(),
        None,
        None,
        &mut loss,
        &[3.0],
        None,
        &opts,
        Par::Seq,
    )
    .unwrap();
    let hooked = integrate_with_interrupt(
        theta.as_ref(),
        f0.as_ref(),
        None,
        None,
        &mut loss,
        &[3.0],
        None,
        &opts,
        Par::Seq,
        &mut || Ok(()),
    )
    .unwrap();
    assert_eq!(plain, hooked);
}

#[test]
fn unreachable_horizon_fails_early() {
    // Cross-entropy to tau = 1e300: the step size cannot grow fast enough for the
    // budget. It must fail long before max_steps attempts.
    let (theta, _, _) = problem(6, 3);
    let f0 = Mat::<f64>::zeros(6, 3);
    let y = Mat::<f64>::from_fn(6, 3, |i, j| f64::from(u8::from(i % 3 == j)));
    let mut loss = CrossEntropy {
        y,
        n: 18.0,
        classes: 3,
    };
    let opts = OdeOptions {
        max_steps: 200_000,
        ..OdeOptions::default()
    };
    let mut attempts = 0usize;
    let e = integrate_with_interrupt(
        theta.as_ref(),
        f0.as_ref(),
        None,
        None,
        &mut loss,
        &[1e300],
        None,
        &opts,
        Par::Seq,
        &mut || {
            attempts += 1;
            Ok(())
        },
    );
    match e {
        Err(Error::IntegrationFailed(m)) => assert!(m.contains("out of reach"), "{m}"),
        other => panic!("expected an early failure, got {other:?}"),
    }
    assert!(attempts < opts.max_steps / 4, "{attempts} attempts");
    // a reachable horizon of the same flow still integrates
    let ok = integrate(
        theta.as_ref(),
        f0.as_ref(),
        None,
        None,
        &mut loss,
        &[1e3],
        None,
        &opts,
        Par::Seq,
    );
    assert!(ok.is_ok(), "{ok:?}");
}

#[test]
fn pace_extrapolation() {
    // a pinned step size: (t_end - t) / h
    let s = steps_to_reach(100.0, 200.0, 1600.0, 100, 1.0, 1.0);
    assert!((s - 1400.0).abs() < 1e-9, "{s}");
    // a growing step size, tau doubling per window: geometric
    let s = steps_to_reach(100.0, 200.0, 1600.0, 100, 1.0, 1.2);
    assert!((s - 300.0).abs() < 1e-9, "{s}");
    // slow progress with a growing step size: linear
    let s = steps_to_reach(100.0, 110.0, 210.0, 10, 1.0, 2.0);
    assert!((s - 100.0).abs() < 1e-9, "{s}");
    // no progress: unreachable; past the end: nothing left
    assert!(steps_to_reach(100.0, 100.0, 200.0, 10, 1.0, 2.0).is_infinite());
    assert_eq!(steps_to_reach(100.0, 200.0, 150.0, 10, 1.0, 1.0), 0.0);
}
