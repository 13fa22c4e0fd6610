//! Bindings of the spectral core (`tangentflow_core::spectral`): kernel checks and the
//! symmetric eigendecomposition of the scaled, shifted kernel.
//!
//! Names carry the element types, `_<input>_<compute>`; the CPU backend picks one from
//! the dtypes through a table (python/tangentflow/_backends/cpu.py).

use crate::convert::{mat_mut, mat_ref, to_numpy};
use crate::errors::{internal, CoreResult};
use numpy::{PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray2, PyReadonlyArrayDyn};
use pyo3::prelude::*;
use tangentflow_core::{spectral, threads, Real};

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

macro_rules! finite_fn {
    ($s:ty, $name:ident) => {
        /// Whether every entry of a C- or F-contiguous array is finite (one pass).
        #[pyfunction]
        pub fn $name(py: Python<'_>, a: PyReadonlyArrayDyn<'_, $s>) -> CoreResult<bool> {
            let x = a
                .as_slice()
                .map_err(|_| pyo3::exceptions::PyValueError::new_err("a contiguous array"))?;
            Ok(py.detach(|| {
                threads::install_sized(x.len().saturating_mul(16), |par| {
                    spectral::all_finite(x, par)
                })
            }))
        }
    };
}

finite_fn!(f64, all_finite_f64);
finite_fn!(f32, all_finite_f32);

type Eigh<'py, T> = (Bound<'py, PyArray1<f64>>, Bound<'py, PyArray2<T>>, i32);

/// The eigendecomposition behind both bindings: `(w, B, e, Q)` with `B = V` when `form`,
/// else `B = Z` and the reflectors `Q` (`V = Q Z`, docs/numerics.md §17).
fn eigh_impl<'py, S, T>(
    py: Python<'py>,
    k: &PyReadonlyArray2<'py, S>,
    shift: f64,
    form: bool,
) -> CoreResult<(Eigh<'py, T>, Option<spectral::Reflectors<T>>)>
where
    S: Real + numpy::Element,
    T: Real + numpy::Element,
{
    let n = k.as_array().nrows();
    let w = PyArray1::<f64>::zeros(py, [n], false);
    let b = PyArray2::<T>::zeros(py, [n, n], true);
    let (e, q);
    {
        let kr = mat_ref(k);
        let mut wrw = w.readwrite();
        let ws = wrw
            .as_slice_mut()
            .map_err(|_| internal("eigenvalue buffer"))?;
        let mut brw = b.readwrite();
        let bm = mat_mut(&mut brw);
        (e, q) = py.detach(|| {
            threads::install_sized(spectral::eigh_work(n), |par| {
                if form {
                    spectral::sym_eigh_scaled(kr, shift, ws, bm, par).map(|e| (e, None))
                } else {
                    spectral::sym_eigh_factored(kr, shift, ws, bm, par).map(|(e, q)| (e, Some(q)))
                }
            })
        })?;
    }
    Ok(((w, b, e), q))
}

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
            Ok(eigh_impl::<$s, $t>(py, &k, shift, true)?.0)
        }
    };
}

eigh_fn!(f64, f64, sym_eigh_f64_f64);
eigh_fn!(f32, f64, sym_eigh_f32_f64);
eigh_fn!(f32, f32, sym_eigh_f32_f32);
eigh_fn!(f64, f32, sym_eigh_f64_f32);

/// The reflectors of a factorization's tridiagonal reduction, `Q` with `V = Q Z`
/// (`tangentflow._core.Reflectors`, docs/numerics.md §17): returned by `sym_eigh_factored_*`
/// and passed back to `closed_form_*`, `project_*` and `form_eigenvectors_*`, which apply
/// `Q` to thin products instead of forming `V`. Immutable; shared freely between threads.
#[pyclass(frozen, name = "Reflectors", module = "tangentflow._core")]
pub struct PyReflectors(pub Refl);

/// [`PyReflectors`]' content, by compute type.
pub enum Refl {
    F32(spectral::Reflectors<f32>),
    F64(spectral::Reflectors<f64>),
}

/// The compute types a [`PyReflectors`] can hold.
pub trait Typed: Sized {
    fn of(r: &PyReflectors) -> CoreResult<&spectral::Reflectors<Self>>;
    fn wrap(r: spectral::Reflectors<Self>) -> PyReflectors;
}

macro_rules! typed {
    ($t:ty, $variant:ident) => {
        impl Typed for $t {
            fn of(r: &PyReflectors) -> CoreResult<&spectral::Reflectors<$t>> {
                match &r.0 {
                    Refl::$variant(q) => Ok(q),
                    _ => Err(pyo3::exceptions::PyTypeError::new_err(concat!(
                        "the reflectors are not ",
                        stringify!($t)
                    ))
                    .into()),
                }
            }
            fn wrap(r: spectral::Reflectors<$t>) -> PyReflectors {
                PyReflectors(Refl::$variant(r))
            }
        }
    };
}

typed!(f32, F32);
typed!(f64, F64);

#[pymethods]
impl PyReflectors {
    /// The order `N` of `Q`.
    #[getter]
    fn n(&self) -> usize {
        match &self.0 {
            Refl::F32(q) => q.n(),
            Refl::F64(q) => q.n(),
        }
    }

    /// The element type, `"float32"` or `"float64"`.
    #[getter]
    fn dtype(&self) -> &'static str {
        match &self.0 {
            Refl::F32(_) => "float32",
            Refl::F64(_) => "float64",
        }
    }

    /// Pickling: rebuilt by `_reflectors_from_parts_<t>(a, s, bs)`.
    fn __reduce__<'py>(&self, py: Python<'py>) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        let m = py.import("tangentflow._core")?;
        match &self.0 {
            Refl::F32(q) => {
                let (a, s, bs) = q.parts();
                let args = (to_numpy(py, a), to_numpy(py, s), bs).into_pyobject(py)?;
                Ok((m.getattr("_reflectors_from_parts_f32")?, args.into_any()))
            }
            Refl::F64(q) => {
                let (a, s, bs) = q.parts();
                let args = (to_numpy(py, a), to_numpy(py, s), bs).into_pyobject(py)?;
                Ok((m.getattr("_reflectors_from_parts_f64")?, args.into_any()))
            }
        }
    }
}

macro_rules! from_parts_fn {
    ($t:ty, $name:ident) => {
        /// The reflectors of a pickle (`Reflectors.__reduce__`).
        #[pyfunction]
        pub fn $name(
            a: PyReadonlyArray2<'_, $t>,
            s: PyReadonlyArray2<'_, $t>,
            bs: usize,
        ) -> CoreResult<PyReflectors> {
            let q = spectral::Reflectors::from_parts(mat_ref(&a), mat_ref(&s).to_owned(), bs)?;
            Ok(<$t as Typed>::wrap(q))
        }
    };
}

from_parts_fn!(f32, _reflectors_from_parts_f32);
from_parts_fn!(f64, _reflectors_from_parts_f64);

type Factored<'py, T> = (
    Bound<'py, PyArray1<f64>>,
    Bound<'py, PyArray2<T>>,
    i32,
    PyReflectors,
);

macro_rules! factored_fn {
    ($s:ty, $t:ty, $eigh:ident) => {
        /// `(w, Z, e, Q)`: `2^-e·(sym(K) + shift·I) = V diag(w) Vᵀ` with `V = Q Z` not
        /// formed (docs/numerics.md §17): eigenvalues ascending (float64, of the scaled
        /// matrix), `Z` the tridiagonal matrix's eigenvectors in Fortran order, `Q` its
        /// reduction's [`PyReflectors`]; `form_eigenvectors_*(Q, Z)` is the `V` of
        /// `sym_eigh_*` bitwise.
        #[pyfunction]
        pub fn $eigh<'py>(
            py: Python<'py>,
            k: PyReadonlyArray2<'py, $s>,
            shift: f64,
        ) -> CoreResult<Factored<'py, $t>> {
            let ((w, z, e), q) = eigh_impl::<$s, $t>(py, &k, shift, false)?;
            let q = q.ok_or_else(|| internal("reflectors"))?;
            Ok((w, z, e, <$t as Typed>::wrap(q)))
        }
    };
}

factored_fn!(f64, f64, sym_eigh_factored_f64_f64);
factored_fn!(f32, f64, sym_eigh_factored_f32_f64);
factored_fn!(f32, f32, sym_eigh_factored_f32_f32);
factored_fn!(f64, f32, sym_eigh_factored_f64_f32);

macro_rules! form_fn {
    ($t:ty, $form:ident, $apply:ident) => {
        /// `Q x` as a new Fortran-ordered array (`x`: `N` rows): with `x = Z` of
        /// `sym_eigh_factored_*`, the eigenvectors `V`.
        #[pyfunction]
        pub fn $form<'py>(
            py: Python<'py>,
            q: PyRef<'py, PyReflectors>,
            x: PyReadonlyArray2<'py, $t>,
        ) -> CoreResult<Bound<'py, PyArray2<$t>>> {
            $apply(py, q, x, false)
        }
    };
}

/// `Q x` or `Qᵀ x` (`transpose`) as a new Fortran-ordered array.
fn apply_q<'py, T: Typed + Real + numpy::Element>(
    py: Python<'py>,
    q: PyRef<'py, PyReflectors>,
    x: PyReadonlyArray2<'py, T>,
    transpose: bool,
) -> CoreResult<Bound<'py, PyArray2<T>>> {
    let refl = T::of(&q)?;
    let xr = mat_ref(&x);
    if xr.nrows() != refl.n() {
        return Err(pyo3::exceptions::PyValueError::new_err(format!(
            "x has {} rows, Q is {n}×{n}",
            xr.nrows(),
            n = refl.n()
        ))
        .into());
    }
    let out = to_numpy(py, xr);
    {
        let mut rw = out.readwrite();
        let om = mat_mut(&mut rw);
        let work = 2usize
            .saturating_mul(refl.n())
            .saturating_mul(refl.n())
            .saturating_mul(xr.ncols());
        py.detach(|| {
            threads::install_sized(work, |par| {
                if transpose {
                    refl.apply_transpose(om, par);
                } else {
                    refl.apply(om, par);
                }
            });
        });
    }
    Ok(out)
}

form_fn!(f64, form_eigenvectors_f64, apply_q);
form_fn!(f32, form_eigenvectors_f32, apply_q);

macro_rules! transpose_fn {
    ($t:ty, $name:ident) => {
        /// `Qᵀ x` as a new Fortran-ordered array (`x`: `N` rows).
        #[pyfunction]
        pub fn $name<'py>(
            py: Python<'py>,
            q: PyRef<'py, PyReflectors>,
            x: PyReadonlyArray2<'py, $t>,
        ) -> CoreResult<Bound<'py, PyArray2<$t>>> {
            apply_q(py, q, x, true)
        }
    };
}

transpose_fn!(f64, apply_transpose_f64);
transpose_fn!(f32, apply_transpose_f32);

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
