//! Bindings of the spectral core (`tangentflow_core::spectral`): kernel checks and the
//! symmetric eigendecomposition of the scaled, shifted kernel.
//!
//! Names carry the element types, `_<input>_<compute>`; the CPU backend picks one from
//! the dtypes through a table (python/tangentflow/_backends/cpu.py).

use crate::convert::{mat_mut, mat_ref};
use crate::errors::{internal, CoreResult};
use numpy::{PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray2};
use pyo3::prelude::*;
use tangentflow_core::{spectral, threads};

macro_rules! stats_fn {
    ($s:ty, $stats:ident) => {
        /// `(max|K|, max|K − Kᵀ|, trace K, all finite)` in one pass.
        #[pyfunction]
        pub fn $stats(
            py: Python<'_>,
            k: PyReadonlyArray2<'_, $s>,
        ) -> CoreResult<(f64, f64, f64, bool)> {
            let kr = mat_ref(&k);
            let st = py.detach(|| {
                threads::install_sized(spectral::stats_work(kr), |par| {
                    spectral::kernel_stats(kr, par)
                })
            })?;
            Ok((st.max_abs, st.max_asym, st.trace, st.finite))
        }
    };
}

stats_fn!(f64, kernel_stats_f64);
stats_fn!(f32, kernel_stats_f32);

type Eigh<'py, T> = (Bound<'py, PyArray1<f64>>, Bound<'py, PyArray2<T>>, i32);

macro_rules! eigh_fn {
    ($s:ty, $t:ty, $eigh:ident) => {
        /// `(w, V, e)`: `2^-e·(sym(K) + shift·I) = V diag(w) Vᵀ`, eigenvalues ascending
        /// (float64, of the scaled matrix), eigenvectors in Fortran order, `e` the
        /// power-of-two scaling exponent (docs/numerics.md, "Scale invariance").
        #[pyfunction]
        pub fn $eigh<'py>(
            py: Python<'py>,
            k: PyReadonlyArray2<'py, $s>,
            shift: f64,
        ) -> CoreResult<Eigh<'py, $t>> {
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
                e = py.detach(|| {
                    threads::install_sized(spectral::eigh_work(n), |par| {
                        spectral::sym_eigh_scaled(kr, shift, ws, vm, par)
                    })
                })?;
            }
            Ok((w, v, e))
        }
    };
}

eigh_fn!(f64, f64, sym_eigh_f64_f64);
eigh_fn!(f32, f64, sym_eigh_f32_f64);
eigh_fn!(f32, f32, sym_eigh_f32_f32);
eigh_fn!(f64, f32, sym_eigh_f64_f32);

/// `[(stage, seconds)]` of one factorization of `2^-e·(sym(K) + shift·I)` (float64), the
/// breakdown of docs/performance.md; the factors themselves are dropped. `staged = false`
/// times faer's own `self_adjoint_evd` on the symmetrized copy (which copies it again and
/// reduces it unblocked), the composition used before, for comparison in the same process;
/// `tuning = (block size, recursion threshold, parallel threshold, panel width)` sets the
/// stages' parameters (`0`: the default, see `EighTuning`); `process_cpu` times the staged
/// composition in process CPU seconds instead of wall-clock seconds.
/// Private: the benchmark's diagnostic, not part of the API.
#[pyfunction]
#[pyo3(signature = (k, shift, staged = true, tuning = (0, 0, 0, 0), process_cpu = false))]
pub fn _eigh_timings_f64(
    py: Python<'_>,
    k: PyReadonlyArray2<'_, f64>,
    shift: f64,
    staged: bool,
    tuning: (usize, usize, usize, usize),
    process_cpu: bool,
) -> CoreResult<Vec<(&'static str, f64)>> {
    let tuning = spectral::EighTuning {
        block_size: tuning.0,
        recursion_threshold: tuning.1,
        par_threshold: tuning.2,
        tridiag_block: tuning.3,
    };
    let kr = mat_ref(&k);
    let n = kr.nrows();
    let out = py.detach(|| {
        threads::install_sized(
            spectral::eigh_work(n),
            |par| -> tangentflow_core::Result<Vec<(&'static str, f64)>> {
                let clock = std::time::Instant::now();
                let mut w = vec![0.0f64; n];
                let mut v = faer::Mat::<f64>::zeros(n, n);
                let alloc = clock.elapsed().as_secs_f64();
                if staged {
                    let mut tm = spectral::EighTimings {
                        process_cpu,
                        ..spectral::EighTimings::default()
                    };
                    spectral::sym_eigh_scaled_tuned(
                        kr,
                        shift,
                        &mut w,
                        v.as_mut(),
                        par,
                        Some(&mut tm),
                        tuning,
                    )?;
                    return Ok(vec![
                        ("scale", tm.scale),
                        ("symmetrize", tm.symmetrize),
                        ("tridiagonalize", tm.tridiagonalize),
                        ("tridiagonal_solve", tm.tridiagonal_solve),
                        ("back_transform", tm.back_transform),
                        ("other", tm.other + alloc),
                    ]);
                }
                let t = std::time::Instant::now();
                let e = spectral::scale_exponent(kr, shift, par)?;
                let scale = t.elapsed().as_secs_f64();
                let t = std::time::Instant::now();
                let mut a = faer::Mat::<f64>::zeros(n, n);
                spectral::symmetrize_lower_scaled(kr, shift, e, a.as_mut(), par)?;
                let symmetrize = t.elapsed().as_secs_f64();
                let t = std::time::Instant::now();
                spectral::eigh_lower(a.as_ref(), &mut w, v.as_mut(), par)?;
                let evd = t.elapsed().as_secs_f64();
                Ok(vec![
                    ("scale", scale),
                    ("symmetrize", symmetrize),
                    ("self_adjoint_evd", evd),
                    ("other", alloc),
                ])
            },
        )
    })?;
    Ok(out)
}
