//! Tests of the fully connected kernels against a direct scalar recursion and closed forms.

use super::*;

/// Direct scalar implementation of the recursion (no precomputation, no tiling).
fn reference(x1: &Mat<f64>, x2: &Mat<f64>, spec: &FcSpec, same: bool) -> (Mat<f64>, Mat<f64>) {
    let (w2, b2) = (spec.w_std.powi(2), spec.b_std.powi(2));
    let d = x1.ncols() as f64;
    let dot = |a: &Mat<f64>, i: usize, b: &Mat<f64>, j: usize| -> f64 {
        (0..a.ncols()).map(|k| a[(i, k)] * b[(j, k)]).sum::<f64>() * w2 / d + b2
    };
    let mut kk = Mat::<f64>::zeros(x1.nrows(), x2.nrows());
    let mut tt = Mat::<f64>::zeros(x1.nrows(), x2.nrows());
    for i in 0..x1.nrows() {
        for j in 0..x2.nrows() {
            let (mut q1, mut q2, mut k) = (dot(x1, i, x1, i), dot(x2, j, x2, j), dot(x1, i, x2, j));
            let mut th = k;
            for _ in 0..spec.hidden_layers {
                let (e, ed, e1, e2) = match spec.activation {
                    Activation::Relu => {
                        let s = (q1 * q2).sqrt();
                        let c = if same && i == j {
                            1.0
                        } else {
                            (k / s).clamp(-1.0, 1.0)
                        };
                        let t = c.acos();
                        (
                            s / (2.0 * PI) * (t.sin() + (PI - t) * t.cos()),
                            (PI - t) / (2.0 * PI),
                            q1 / 2.0,
                            q2 / 2.0,
                        )
                    }
                    Activation::Erf => {
                        let a = (1.0 + 2.0 * q1) * (1.0 + 2.0 * q2);
                        let f = |q: f64| 2.0 / PI * (2.0 * q / (1.0 + 2.0 * q)).asin();
                        (
                            2.0 / PI * (2.0 * k / a.sqrt()).asin(),
                            4.0 / PI / (a - 4.0 * k * k).sqrt(),
                            f(q1),
                            f(q2),
                        )
                    }
                };
                k = w2 * e + b2;
                th = k + w2 * ed * th;
                q1 = w2 * e1 + b2;
                q2 = w2 * e2 + b2;
            }
            kk[(i, j)] = k;
            tt[(i, j)] = th;
        }
    }
    (kk, tt)
}

fn inputs(n: usize, d: usize, seed: usize) -> Mat<f64> {
    Mat::from_fn(n, d, |i, j| {
        (((i * 31 + j * 17 + seed * 7 + 3) as f64) * 0.618).sin() * 1.3
    })
}

/// Largest `|a − b|` relative to `max|b|` (entries near zero, e.g. the `relu` NNGP of nearly
/// antiparallel inputs, are ill-conditioned and only known to absolute precision).
fn max_rel(a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> f64 {
    let (mut err, mut scale): (f64, f64) = (0.0, 0.0);
    for i in 0..a.nrows() {
        for j in 0..a.ncols() {
            err = err.max((a[(i, j)] - b[(i, j)]).abs());
            scale = scale.max(b[(i, j)].abs());
        }
    }
    err / scale.max(1e-300)
}

fn specs() -> Vec<FcSpec> {
    let mut v = Vec::new();
    for activation in [Activation::Relu, Activation::Erf] {
        for (hidden_layers, w_std, b_std) in [
            (0, 1.0, 0.0),
            (1, 1.0, 0.0),
            (3, 1.5, 0.05),
            (5, 2f64.sqrt(), 0.1),
        ] {
            v.push(FcSpec {
                hidden_layers,
                activation,
                w_std,
                b_std,
            });
        }
    }
    v
}

#[test]
fn matches_scalar_reference_cross() {
    // Sizes straddling the tile size exercise partial tiles.
    let x1 = inputs(70, 5, 1);
    let x2 = inputs(67, 5, 2);
    for spec in specs() {
        let (rk, rt) = reference(&x1, &x2, &spec, false);
        for par in [Par::Seq, Par::rayon(2)] {
            let mut k = Mat::<f64>::zeros(70, 67);
            let mut t = Mat::<f64>::zeros(70, 67);
            fully_connected(
                x1.as_ref(),
                Some(x2.as_ref()),
                &spec,
                Some(k.as_mut()),
                Some(t.as_mut()),
                par,
            )
            .unwrap();
            assert!(max_rel(k.as_ref(), rk.as_ref()) < 1e-12, "{spec:?}");
            assert!(max_rel(t.as_ref(), rt.as_ref()) < 1e-12, "{spec:?}");
        }
    }
}

#[test]
fn matches_scalar_reference_symmetric() {
    let x = inputs(130, 4, 3);
    for spec in specs() {
        let (rk, rt) = reference(&x, &x, &spec, true);
        for par in [Par::Seq, Par::rayon(2)] {
            let mut k = Mat::<f64>::zeros(130, 130);
            let mut t = Mat::<f64>::zeros(130, 130);
            fully_connected(
                x.as_ref(),
                None,
                &spec,
                Some(k.as_mut()),
                Some(t.as_mut()),
                par,
            )
            .unwrap();
            assert!(max_rel(k.as_ref(), rk.as_ref()) < 1e-12, "{spec:?}");
            assert!(max_rel(t.as_ref(), rt.as_ref()) < 1e-12, "{spec:?}");
            for i in 0..130 {
                for j in 0..130 {
                    assert_eq!(k[(i, j)], k[(j, i)]);
                    assert_eq!(t[(i, j)], t[(j, i)]);
                }
            }
        }
    }
}

#[test]
fn single_output_and_row_major_views() {
    let x1 = inputs(9, 3, 4);
    let x2 = inputs(5, 3, 5);
    let spec = FcSpec {
        hidden_layers: 2,
        activation: Activation::Erf,
        w_std: 1.2,
        b_std: 0.3,
    };
    let (rk, rt) = reference(&x1, &x2, &spec, false);
    // Row-major outputs: transposes of column-major (N2, N1) buffers.
    let mut kt = Mat::<f64>::zeros(5, 9);
    let mut tt = Mat::<f64>::zeros(5, 9);
    fully_connected(
        x1.as_ref(),
        Some(x2.as_ref()),
        &spec,
        Some(kt.as_mut().transpose_mut()),
        None,
        Par::Seq,
    )
    .unwrap();
    fully_connected(
        x1.as_ref(),
        Some(x2.as_ref()),
        &spec,
        None,
        Some(tt.as_mut().transpose_mut()),
        Par::Seq,
    )
    .unwrap();
    assert!(max_rel(kt.transpose(), rk.as_ref()) < 1e-12);
    assert!(max_rel(tt.transpose(), rt.as_ref()) < 1e-12);
}

#[test]
fn zero_hidden_layers_is_linear_kernel() {
    let x = inputs(6, 2, 6);
    let spec = FcSpec {
        hidden_layers: 0,
        activation: Activation::Relu,
        w_std: 2.0,
        b_std: 0.5,
    };
    let mut k = Mat::<f64>::zeros(6, 6);
    let mut t = Mat::<f64>::zeros(6, 6);
    fully_connected(
        x.as_ref(),
        None,
        &spec,
        Some(k.as_mut()),
        Some(t.as_mut()),
        Par::Seq,
    )
    .unwrap();
    for i in 0..6 {
        for j in 0..6 {
            let want = 4.0 * (x[(i, 0)] * x[(j, 0)] + x[(i, 1)] * x[(j, 1)]) / 2.0 + 0.25;
            assert!((k[(i, j)] - want).abs() < 1e-14);
            assert_eq!(k[(i, j)], t[(i, j)]);
        }
    }
}

#[test]
fn zero_input_is_finite() {
    let x = Mat::<f64>::from_fn(3, 2, |i, j| if i == 0 { 0.0 } else { (i + j) as f64 });
    let spec = FcSpec {
        hidden_layers: 3,
        activation: Activation::Relu,
        w_std: 1.0,
        b_std: 0.0,
    };
    let mut k = Mat::<f64>::zeros(3, 3);
    let mut t = Mat::<f64>::zeros(3, 3);
    fully_connected(
        x.as_ref(),
        None,
        &spec,
        Some(k.as_mut()),
        Some(t.as_mut()),
        Par::Seq,
    )
    .unwrap();
    assert!((0..3).all(|i| (0..3).all(|j| k[(i, j)].is_finite() && t[(i, j)].is_finite())));
    assert_eq!(k[(0, 0)], 0.0);
    assert_eq!(k[(0, 1)], 0.0);
}

#[test]
fn rejects_bad_arguments() {
    let x1 = inputs(4, 3, 1);
    let x2 = inputs(4, 2, 1);
    let spec = FcSpec {
        hidden_layers: 1,
        activation: Activation::Relu,
        w_std: 1.0,
        b_std: 0.0,
    };
    let mut k = Mat::<f64>::zeros(4, 4);
    assert!(matches!(
        fully_connected(
            x1.as_ref(),
            Some(x2.as_ref()),
            &spec,
            Some(k.as_mut()),
            None,
            Par::Seq
        ),
        Err(Error::DimensionMismatch { .. })
    ));
    let mut small = Mat::<f64>::zeros(4, 3);
    assert!(matches!(
        fully_connected(
            x1.as_ref(),
            None,
            &spec,
            None,
            Some(small.as_mut()),
            Par::Seq
        ),
        Err(Error::DimensionMismatch { .. })
    ));
    let mut bad = x1.clone();
    bad[(2, 1)] = f64::NAN;
    assert!(matches!(
        fully_connected(bad.as_ref(), None, &spec, Some(k.as_mut()), None, Par::Seq),
        Err(Error::NonFinite { what: "x1" })
    ));
    assert!(matches!(
        fully_connected(
            x1.as_ref(),
            Some(bad.as_ref()),
            &spec,
            Some(k.as_mut()),
            None,
            Par::Seq
        ),
        Err(Error::NonFinite { what: "x2" })
    ));
    for (w_std, b_std) in [
        (0.0, 0.0),
        (-1.0, 0.0),
        (f64::INFINITY, 0.0),
        (1.0, -0.1),
        (1.0, f64::NAN),
    ] {
        let s = FcSpec {
            w_std,
            b_std,
            ..spec
        };
        assert!(matches!(
            fully_connected(x1.as_ref(), None, &s, Some(k.as_mut()), None, Par::Seq),
            Err(Error::InvalidArgument(_))
        ));
    }
    let empty = Mat::<f64>::zeros(4, 0);
    assert!(fully_connected(
        empty.as_ref(),
        None,
        &spec,
        Some(k.as_mut()),
        None,
        Par::Seq
    )
    .is_err());
    assert_eq!(Activation::parse("erf"), Ok(Activation::Erf));
    assert!(Activation::parse("tanh").is_err());
}

/// `|a − b|` in units of `ε·max(|a|, |b|)` (between one and two ulp).
fn ulps(a: f64, b: f64) -> f64 {
    (a - b).abs() / (f64::EPSILON * a.abs().max(b.abs()).max(f64::MIN_POSITIVE))
}

#[test]
fn polynomial_acos_and_asin_are_within_2_and_3_ulp_of_libm() {
    // A dense grid of [-1, 1], the branch point ±1/2 and the ends included.
    let mut worst: (f64, f64) = (0.0, 0.0);
    let n: usize = 200_000;
    for i in 0..=n {
        let x = -1.0 + 2.0 * i as f64 / n as f64;
        for c in [
            x,
            0.5f64.next_up(),
            0.5,
            -0.5,
            1.0,
            -1.0,
            0.0,
            1e-300,
            1.0 - 1e-16,
        ] {
            for (a, b) in [
                (eval::acos::<false>(c), eval::asin::<false>(c)),
                (eval::acos::<true>(c), eval::asin::<true>(c)),
            ] {
                worst.0 = worst.0.max(ulps(a, c.acos()));
                worst.1 = worst.1.max(ulps(b, c.asin()));
            }
        }
    }
    assert!(
        worst.0 <= 2.0 && worst.1 <= 3.0,
        "acos, asin: {worst:?} ulp"
    );
    assert_eq!(eval::acos::<false>(1.0), 0.0);
    assert_eq!(eval::acos::<true>(1.0), 0.0);
    assert!(ulps(eval::acos::<false>(-1.0), PI) <= 1.0);
    assert_eq!(eval::asin::<true>(0.0), 0.0);
}

/// `K(x1, x2) · v` from the dense kernels of [`fully_connected`].
fn dense_product(
    x1: &Mat<f64>,
    x2: Option<&Mat<f64>>,
    spec: &FcSpec,
    kind: Kind,
    v: &Mat<f64>,
) -> Mat<f64> {
    let n2 = x2.map_or(x1.nrows(), Mat::nrows);
    let mut k = Mat::<f64>::zeros(x1.nrows(), n2);
    let (kk, tt) = match kind {
        Kind::Nngp => (Some(k.as_mut()), None),
        Kind::Ntk => (None, Some(k.as_mut())),
    };
    fully_connected(x1.as_ref(), x2.map(Mat::as_ref), spec, kk, tt, Par::Seq).unwrap();
    &k * v
}

#[test]
fn fused_product_matches_the_dense_kernel_times_v() {
    // Sizes straddling the row (64) and column (256) tiles.
    let x = inputs(333, 6, 4);
    let xt = inputs(70, 6, 5);
    let v = Mat::from_fn(333, 3, |i, j| ((i * 7 + j * 13) as f64 * 0.37).cos());
    for spec in specs() {
        for kind in [Kind::Nngp, Kind::Ntk] {
            // Symmetric: a partition of the rows (unaligned boundaries too) adds up to K·v.
            let want = dense_product(&x, None, &spec, kind, &v);
            for par in [Par::Seq, Par::rayon(2)] {
                let mut got = Mat::<f64>::zeros(333, 3);
                for (r0, r1) in [(0, 64), (64, 100), (100, 333)] {
                    let mut part = Mat::<f64>::zeros(r1, 3);
                    fully_connected_matmat(
                        x.as_ref(),
                        None,
                        (r0, r1),
                        &spec,
                        kind,
                        v.as_ref(),
                        part.as_mut(),
                        par,
                    )
                    .unwrap();
                    for j in 0..3 {
                        for i in 0..r1 {
                            got[(i, j)] += part[(i, j)];
                        }
                    }
                }
                assert!(
                    max_rel(got.as_ref(), want.as_ref()) < 1e-13,
                    "{spec:?} {kind:?}"
                );
            }
            // Rectangular rows 5..70 of K(xt, x).
            let want = dense_product(&xt, Some(&x), &spec, kind, &v);
            let mut got = Mat::<f64>::zeros(65, 3);
            fully_connected_matmat(
                xt.as_ref(),
                Some(x.as_ref()),
                (5, 70),
                &spec,
                kind,
                v.as_ref(),
                got.as_mut(),
                Par::rayon(2),
            )
            .unwrap();
            assert!(
                max_rel(got.as_ref(), want.subrows(5, 65)) < 1e-13,
                "{spec:?} {kind:?}"
            );
        }
    }
}

#[test]
fn diagonal_is_the_kernels_diagonal() {
    let x = inputs(90, 5, 6);
    for spec in specs() {
        let (rk, rt) = reference(&x, &x, &spec, true);
        let (k, t) = fully_connected_diagonal(x.as_ref(), &spec).unwrap();
        for i in 0..90 {
            assert!(
                ulps(k[i], rk[(i, i)]) < 8.0 && ulps(t[i], rt[(i, i)]) < 8.0,
                "{spec:?}"
            );
        }
    }
}

#[test]
fn product_rejects_bad_shapes() {
    let spec = specs()[2];
    let x = inputs(10, 3, 1);
    let v = Mat::<f64>::zeros(9, 2);
    let mut out = Mat::<f64>::zeros(10, 2);
    let e = fully_connected_matmat(
        x.as_ref(),
        None,
        (0, 10),
        &spec,
        Kind::Ntk,
        v.as_ref(),
        out.as_mut(),
        Par::Seq,
    );
    assert!(matches!(e, Err(Error::DimensionMismatch { .. })));
    let v = Mat::<f64>::zeros(10, 2);
    let e = fully_connected_matmat(
        x.as_ref(),
        None,
        (3, 11),
        &spec,
        Kind::Ntk,
        v.as_ref(),
        out.as_mut(),
        Par::Seq,
    );
    assert!(matches!(e, Err(Error::InvalidArgument(_))));
    let mut bad = v.clone();
    bad[(1, 1)] = f64::NAN;
    let e = fully_connected_matmat(
        x.as_ref(),
        None,
        (0, 10),
        &spec,
        Kind::Ntk,
        bad.as_ref(),
        out.as_mut(),
        Par::Seq,
    );
    assert!(matches!(e, Err(Error::NonFinite { .. })));
}
