//! Bindings of the spectral core: kernel checks, eigendecomposition, Cholesky fast path,
//! per-mode factors and the reconstruction of outputs. Every function borrows, releases
//! the GIL for the heavy work, and allocates its NumPy outputs (which faer writes).
//!
//! Names carry the element types: `_<input>_<compute>` for the kernel-reading functions,
//! `_<compute>` for the others. The Python layer picks one from the dtypes.

use crate::convert::{mat_mut, mat_ref, slice};
use crate::errors::{internal, to_py};
use faer::Mat;
use numpy::{PyArray1, PyArray2, PyArray3, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::prelude::*;
use tangentflow_core::dynamics::{self, Dynamics};
use tangentflow_core::{cholesky, spectral, threads};

fn to_numpy<'py, T: numpy::Element + tangentflow_core::Real>(
    py: Python<'py>,
    m: &Mat<T>,
) -> Bound<'py, PyArray2<T>> {
    let out = PyArray2::<T>::zeros(py, [m.nrows(), m.ncols()], true);
    {
        let mut rw = out.readwrite();
        mat_mut(&mut rw).copy_from(m.as_ref());
    }
    out
}

macro_rules! stats_fn {
    ($s:ty, $stats:ident) => {
        /// `(max|K|, max|K − Kᵀ|, trace K, all finite)` in one pass.
        #[pyfunction]
        pub fn $stats(
            py: Python<'_>,
            k: PyReadonlyArray2<'_, $s>,
        ) -> PyResult<(f64, f64, f64, bool)> {
            let kr = mat_ref(&k);
            let st = py
                .detach(|| threads::install(|par| spectral::kernel_stats(kr, par)))
                .map_err(to_py)?;
            Ok((st.max_abs, st.max_asym, st.trace, st.finite))
        }
    };
}

stats_fn!(f64, kernel_stats_f64);
stats_fn!(f32, kernel_stats_f32);

macro_rules! kernel_fns {
    ($s:ty, $t:ty, $eigh:ident, $chol:ident) => {
        /// `(w, V, e)`: `2^-e·(sym(K) + shift·I) = V diag(w) Vᵀ`, eigenvalues ascending
        /// (float64, of the scaled matrix), eigenvectors in Fortran order, `e` the
        /// power-of-two scaling exponent (docs/numerics.md, "Scale invariance").
        #[pyfunction]
        pub fn $eigh<'py>(
            py: Python<'py>,
            k: PyReadonlyArray2<'py, $s>,
            shift: f64,
        ) -> PyResult<(Bound<'py, PyArray1<f64>>, Bound<'py, PyArray2<$t>>, i32)> {
            let n = k.as_array().nrows();
            let w = PyArray1::<f64>::zeros(py, [n], false);
            let v = PyArray2::<$t>::zeros(py, [n, n], true);
            let e;
            {
                let kr = mat_ref(&k);
                let mut wrw = w.readwrite();
                let ws = wrw
                    .as_slice_mut()
                    .map_err(|_| internal("eigenvalue buffer"))?;
                let mut vrw = v.readwrite();
                let vm = mat_mut(&mut vrw);
                e = py
                    .detach(|| {
                        threads::install(|par| spectral::sym_eigh_scaled(kr, shift, ws, vm, par))
                    })
                    .map_err(to_py)?;
            }
            Ok((w, v, e))
        }

        /// Solves `Ã x = rhs` by Cholesky, `Ã = 2^-e·(sym(K) + shift·I)` (so `A⁻¹·rhs` is
        /// `2^-e·x`), and estimates the condition number: `(x, ‖Ã‖_∞, μ_min(Ã) estimate,
        /// cond estimate, e)`, or `None` when `A` is not positive definite.
        #[pyfunction]
        pub fn $chol<'py>(
            py: Python<'py>,
            k: PyReadonlyArray2<'py, $s>,
            shift: f64,
            rhs: PyReadonlyArray2<'py, $t>,
        ) -> PyResult<Option<(Bound<'py, PyArray2<$t>>, f64, f64, f64, i32)>> {
            let kr = mat_ref(&k);
            let mut x = mat_ref(&rhs).to_owned();
            let res = py.detach(|| {
                threads::install(|par| {
                    cholesky::solve_scaled_with_estimate(kr, shift, x.as_mut(), par)
                })
            });
            match res {
                Ok(info) => Ok(Some((
                    to_numpy(py, &x),
                    info.norm_inf,
                    info.mu_min_est,
                    info.cond_est,
                    info.exp,
                ))),
                Err(tangentflow_core::Error::NotPositiveDefinite { .. }) => Ok(None),
                Err(e) => Err(to_py(e)),
            }
        }
    };
}

kernel_fns!(f64, f64, sym_eigh_f64_f64, cholesky_solve_f64_f64);
kernel_fns!(f32, f64, sym_eigh_f32_f64, cholesky_solve_f32_f64);
kernel_fns!(f32, f32, sym_eigh_f32_f32, cholesky_solve_f32_f32);
kernel_fns!(f64, f32, sym_eigh_f64_f32, cholesky_solve_f64_f32);

/// Parses the dynamics description the Python layer passes: `("flow", η/n)`,
/// `("gd", η/n)` or `("momentum", η, m, n)`.
fn parse_dynamics(kind: &str, params: &[f64]) -> PyResult<Dynamics> {
    let bad =
        || pyo3::exceptions::PyValueError::new_err(format!("invalid dynamics {kind} {params:?}"));
    match (kind, params) {
        ("flow", [scale]) => Ok(Dynamics::Flow { scale: *scale }),
        ("gd", [scale]) => Ok(Dynamics::Steps { scale: *scale }),
        ("momentum", [eta, m, n]) => Dynamics::momentum(*eta, *m, *n).map_err(to_py),
        _ => Err(bad()),
    }
}

/// Per-mode factors `(e − 1, (1 − e)/μ)`, each `(k, T)`, for retained eigenvalues `mu`.
#[pyfunction]
pub fn mode_factors<'py>(
    py: Python<'py>,
    kind: &str,
    params: Vec<f64>,
    mu: PyReadonlyArray1<'py, f64>,
    times: PyReadonlyArray1<'py, f64>,
) -> PyResult<(Bound<'py, PyArray2<f64>>, Bound<'py, PyArray2<f64>>)> {
    let dynm = parse_dynamics(kind, &params)?;
    let mu = slice(&mu)?;
    let ts = slice(&times)?;
    dynamics::check_retained(mu).map_err(to_py)?;
    let em1 = PyArray2::<f64>::zeros(py, [mu.len(), ts.len()], true);
    let phi = PyArray2::<f64>::zeros(py, [mu.len(), ts.len()], true);
    {
        let mut a = em1.readwrite();
        let mut b = phi.readwrite();
        let (am, bm) = (mat_mut(&mut a), mat_mut(&mut b));
        py.detach(|| dynamics::mode_factors(&dynm, mu, ts, am, bm))
            .map_err(to_py)?;
    }
    Ok((em1, phi))
}

macro_rules! recon_fns {
    ($t:ty, $project:ident, $basis:ident, $train:ident, $test:ident, $cached:ident) => {
        /// `z = Vᵀ r`.
        #[pyfunction]
        pub fn $project<'py>(
            py: Python<'py>,
            v: PyReadonlyArray2<'py, $t>,
            r: PyReadonlyArray2<'py, $t>,
        ) -> PyResult<Bound<'py, PyArray2<$t>>> {
            let (vr, rr) = (mat_ref(&v), mat_ref(&r));
            let z = py
                .detach(|| threads::install(|par| dynamics::project(vr, rr, par)))
                .map_err(to_py)?;
            Ok(to_numpy(py, &z))
        }

        /// `K_te · V`.
        #[pyfunction]
        pub fn $basis<'py>(
            py: Python<'py>,
            kte: PyReadonlyArray2<'py, $t>,
            v: PyReadonlyArray2<'py, $t>,
        ) -> PyResult<Bound<'py, PyArray2<$t>>> {
            let (kr, vr) = (mat_ref(&kte), mat_ref(&v));
            let kv = py
                .detach(|| threads::install(|par| dynamics::test_basis(kr, vr, par)))
                .map_err(to_py)?;
            Ok(to_numpy(py, &kv))
        }

        /// Train outputs `(T, N, R)`: `f₀ + V (em1 ⊙ z)` at every time.
        #[pyfunction]
        pub fn $train<'py>(
            py: Python<'py>,
            v: PyReadonlyArray2<'py, $t>,
            z: PyReadonlyArray2<'py, $t>,
            em1: PyReadonlyArray2<'py, f64>,
            f0: PyReadonlyArray2<'py, $t>,
        ) -> PyResult<Bound<'py, PyArray3<$t>>> {
            let (vr, zr, er, fr) = (mat_ref(&v), mat_ref(&z), mat_ref(&em1), mat_ref(&f0));
            let out = PyArray3::<$t>::zeros(py, [er.ncols(), vr.nrows(), zr.ncols()], false);
            {
                let mut rw = out.readwrite();
                let sl = rw.as_slice_mut().map_err(|_| internal("output buffer"))?;
                py.detach(|| {
                    threads::install(|par| dynamics::train_outputs(vr, zr, er, fr, sl, par))
                })
                .map_err(to_py)?;
            }
            Ok(out)
        }

        /// Test outputs `(T, M, R)`: `g₀ − K_te V (phi ⊙ z)`, cheaper order chosen.
        #[pyfunction]
        pub fn $test<'py>(
            py: Python<'py>,
            kte: PyReadonlyArray2<'py, $t>,
            v: PyReadonlyArray2<'py, $t>,
            z: PyReadonlyArray2<'py, $t>,
            phi: PyReadonlyArray2<'py, f64>,
            g0: PyReadonlyArray2<'py, $t>,
        ) -> PyResult<Bound<'py, PyArray3<$t>>> {
            let (kr, vr, zr, pr, gr) = (
                mat_ref(&kte),
                mat_ref(&v),
                mat_ref(&z),
                mat_ref(&phi),
                mat_ref(&g0),
            );
            let out = PyArray3::<$t>::zeros(py, [pr.ncols(), kr.nrows(), zr.ncols()], false);
            {
                let mut rw = out.readwrite();
                let sl = rw.as_slice_mut().map_err(|_| internal("output buffer"))?;
                py.detach(|| {
                    threads::install(|par| dynamics::test_outputs(kr, vr, zr, pr, gr, sl, par))
                })
                .map_err(to_py)?;
            }
            Ok(out)
        }

        /// Test outputs `(T, M, R)` from a cached `K_te V`.
        #[pyfunction]
        pub fn $cached<'py>(
            py: Python<'py>,
            kv: PyReadonlyArray2<'py, $t>,
            z: PyReadonlyArray2<'py, $t>,
            phi: PyReadonlyArray2<'py, f64>,
            g0: PyReadonlyArray2<'py, $t>,
        ) -> PyResult<Bound<'py, PyArray3<$t>>> {
            let (kr, zr, pr, gr) = (mat_ref(&kv), mat_ref(&z), mat_ref(&phi), mat_ref(&g0));
            let out = PyArray3::<$t>::zeros(py, [pr.ncols(), kr.nrows(), zr.ncols()], false);
            {
                let mut rw = out.readwrite();
                let sl = rw.as_slice_mut().map_err(|_| internal("output buffer"))?;
                py.detach(|| {
                    threads::install(|par| dynamics::test_outputs_cached(kr, zr, pr, gr, sl, par))
                })
                .map_err(to_py)?;
            }
            Ok(out)
        }
    };
}

recon_fns!(
    f64,
    project_f64,
    test_basis_f64,
    train_outputs_f64,
    test_outputs_f64,
    test_outputs_cached_f64
);
recon_fns!(
    f32,
    project_f32,
    test_basis_f32,
    train_outputs_f32,
    test_outputs_f32,
    test_outputs_cached_f32
);

/// Sets the size of the core's thread pool (0: default).
#[pyfunction]
pub fn set_num_threads(n: usize) -> PyResult<()> {
    threads::set_num_threads(n).map_err(to_py)
}

/// The number of threads the core uses.
#[pyfunction]
pub fn get_num_threads() -> usize {
    threads::num_threads()
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(kernel_stats_f64, m)?)?;
    m.add_function(wrap_pyfunction!(kernel_stats_f32, m)?)?;
    m.add_function(wrap_pyfunction!(sym_eigh_f64_f64, m)?)?;
    m.add_function(wrap_pyfunction!(sym_eigh_f32_f64, m)?)?;
    m.add_function(wrap_pyfunction!(sym_eigh_f32_f32, m)?)?;
    m.add_function(wrap_pyfunction!(sym_eigh_f64_f32, m)?)?;
    m.add_function(wrap_pyfunction!(cholesky_solve_f64_f64, m)?)?;
    m.add_function(wrap_pyfunction!(cholesky_solve_f32_f64, m)?)?;
    m.add_function(wrap_pyfunction!(cholesky_solve_f32_f32, m)?)?;
    m.add_function(wrap_pyfunction!(cholesky_solve_f64_f32, m)?)?;
    m.add_function(wrap_pyfunction!(mode_factors, m)?)?;
    for f in [
        wrap_pyfunction!(project_f64, m)?,
        wrap_pyfunction!(project_f32, m)?,
        wrap_pyfunction!(test_basis_f64, m)?,
        wrap_pyfunction!(test_basis_f32, m)?,
        wrap_pyfunction!(train_outputs_f64, m)?,
        wrap_pyfunction!(train_outputs_f32, m)?,
        wrap_pyfunction!(test_outputs_f64, m)?,
        wrap_pyfunction!(test_outputs_f32, m)?,
        wrap_pyfunction!(test_outputs_cached_f64, m)?,
        wrap_pyfunction!(test_outputs_cached_f32, m)?,
        wrap_pyfunction!(set_num_threads, m)?,
        wrap_pyfunction!(get_num_threads, m)?,
    ] {
        m.add_function(f)?;
    }
    Ok(())
}
