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
            let st = py.detach(|| threads::install(|par| spectral::kernel_stats(kr, par)))?;
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
                    threads::install(|par| spectral::sym_eigh_scaled(kr, shift, ws, vm, par))
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
