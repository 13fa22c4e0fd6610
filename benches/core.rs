//! `cargo bench`: the O(N³) floor (eigendecomposition), the reconstruction at 100 times,
//! and the Cholesky path for t = ∞, at N = 512, 1024, 2048 on an NTK-like kernel; and the
//! small tridiagonal eigensolver against faer's, in the same run, at N = 64, 100, 150.
//!
//! Baselines for NumPy/SciPy live in the Python benchmark (benches/bench_predict.py);
//! here the numbers are absolute, for regressions of the core itself.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use faer::{Mat, Par};
use std::hint::black_box;
use tangentflow_core::dynamics::{self, Dynamics};
use tangentflow_core::{cholesky, ql, spectral, threads};

/// Arc-cosine (ReLU NNGP-like) kernel of deterministic unit vectors in 16 dimensions.
fn kernel(n: usize) -> Mat<f64> {
    let d = 16;
    let x = Mat::<f64>::from_fn(n, d, |i, j| {
        ((i * 31 + j * 17) as f64 * 0.618_033_988_7).sin()
    });
    let norms: Vec<f64> = (0..n)
        .map(|i| (0..d).map(|j| x[(i, j)].powi(2)).sum::<f64>().sqrt())
        .collect();
    Mat::<f64>::from_fn(n, n, |i, j| {
        let c = ((0..d).map(|k| x[(i, k)] * x[(j, k)]).sum::<f64>() / (norms[i] * norms[j]))
            .clamp(-1.0, 1.0);
        let th = c.acos();
        ((1.0 - c * c).sqrt() + (std::f64::consts::PI - th) * c) / std::f64::consts::PI
            + 1e-3 * f64::from(u8::from(i == j))
    })
}

/// The tridiagonal form of [`kernel`]`(n)` (diagonal, subdiagonal), from faer's reduction.
fn tridiagonal(n: usize) -> (Vec<f64>, Vec<f64>) {
    use faer::dyn_stack::{MemBuffer, MemStack};
    use faer::linalg::evd::tridiag;
    let mut a = kernel(n);
    let mut hh = Mat::<f64>::zeros(1, n - 1);
    let params = Default::default();
    let mut mem = MemBuffer::new(tridiag::tridiag_in_place_scratch::<f64>(
        n,
        Par::Seq,
        params,
    ));
    tridiag::tridiag_in_place(
        a.as_mut(),
        hh.as_mut(),
        Par::Seq,
        MemStack::new(&mut mem),
        params,
    );
    let d = (0..n).map(|i| a[(i, i)]).collect();
    let s = (0..n)
        .map(|i| if i + 1 < n { a[(i + 1, i)] } else { 0.0 })
        .collect();
    (d, s)
}

fn small_tridiagonal(c: &mut Criterion) {
    use faer::diag::{DiagMut, DiagRef};
    use faer::dyn_stack::{MemBuffer, MemStack};
    use faer::linalg::evd;
    let mut g = c.benchmark_group("tridiagonal_eigh");
    for &n in &[64usize, 100, 150] {
        let (d, s) = tridiagonal(n);
        let mut w = vec![0.0; n];
        let mut v = Mat::<f64>::zeros(n, n);
        g.bench_with_input(BenchmarkId::new("ql", n), &n, |b, _| {
            b.iter(|| ql::tridiagonal_eigh(&d, &s, &mut w, v.as_mut()).unwrap());
        });
        let params = Default::default();
        let req = evd::self_adjoint_evd_scratch::<f64>(
            n,
            evd::ComputeEigenvectors::Yes,
            Par::Seq,
            params,
        );
        let mut mem = MemBuffer::new(req);
        g.bench_with_input(BenchmarkId::new("faer", n), &n, |b, _| {
            b.iter(|| {
                evd::tridiagonal_self_adjoint_evd(
                    DiagRef::from_slice(&d),
                    DiagRef::from_slice(&s),
                    DiagMut::from_slice_mut(&mut w),
                    Some(v.as_mut()),
                    Par::Seq,
                    MemStack::new(&mut mem),
                    params,
                )
                .unwrap();
            });
        });
    }
    g.finish();
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("core");
    g.sample_size(10);
    for &n in &[512usize, 1024, 2048] {
        let k = kernel(n);
        g.bench_with_input(BenchmarkId::new("eigh", n), &n, |b, _| {
            b.iter(|| {
                threads::install(|par| {
                    let mut w = vec![0.0; n];
                    let mut v = Mat::<f64>::zeros(n, n);
                    spectral::sym_eigh(k.as_ref(), 0.0, &mut w, v.as_mut(), par).unwrap();
                    black_box(w);
                });
            });
        });
        let mut w = vec![0.0; n];
        let mut v = Mat::<f64>::zeros(n, n);
        threads::install(|par| spectral::sym_eigh(k.as_ref(), 0.0, &mut w, v.as_mut(), par))
            .unwrap();
        let r = 10;
        let times: Vec<f64> = (0..100)
            .map(|i| 10f64.powf(-2.0 + 6.0 * f64::from(i) / 99.0))
            .collect();
        let y = Mat::<f64>::from_fn(n, r, |i, j| ((i + 3 * j) as f64).cos());
        let f0 = Mat::<f64>::zeros(n, r);
        g.bench_with_input(
            BenchmarkId::new("reconstruct_train_100_times", n),
            &n,
            |b, _| {
                b.iter(|| {
                    threads::install(|par| {
                        let dynm = Dynamics::Flow {
                            scale: 1.0 / (n * r) as f64,
                        };
                        let mut em1 = Mat::<f64>::zeros(n, times.len());
                        let mut phi = Mat::<f64>::zeros(n, times.len());
                        dynamics::mode_factors(&dynm, &w, &times, em1.as_mut(), phi.as_mut())
                            .unwrap();
                        let z = dynamics::project(v.as_ref(), (&f0 - &y).as_ref(), par).unwrap();
                        let mut out = vec![0.0; times.len() * n * r];
                        dynamics::train_outputs(
                            v.as_ref(),
                            z.as_ref(),
                            em1.as_ref(),
                            f0.as_ref(),
                            &mut out,
                            par,
                        )
                        .unwrap();
                        black_box(out);
                    });
                });
            },
        );
        g.bench_with_input(
            BenchmarkId::new("cholesky_solve_with_estimate", n),
            &n,
            |b, _| {
                b.iter(|| {
                    threads::install(|par| {
                        let mut x = y.clone();
                        let info = cholesky::solve_with_estimate(k.as_ref(), 0.0, x.as_mut(), par)
                            .unwrap();
                        black_box((x, info));
                    });
                });
            },
        );
    }
    g.finish();
    let _ = Par::Seq;
}

criterion_group!(core, benches, small_tridiagonal);
criterion_main!(core);
