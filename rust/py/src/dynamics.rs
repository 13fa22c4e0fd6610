//! Bindings of the dynamics (`tangentflow_core::dynamics`, `momentum`, `closed_form`): the
//! typed [`PyDynamics`] value, per-mode factors, the reconstruction steps, and the whole
//! MSE closed form in one call (`closed_form_<t>`, one boundary crossing per `at`).
//!
//! Every function borrows, releases the GIL for the heavy work, and allocates its NumPy
//! outputs (which the core writes). Names carry the compute type (`_f32`, `_f64`).

use crate::convert::{mat_mut, mat_ref, slice, to_numpy};
use crate::errors::{internal, CoreResult};
use crate::spectral::{PyReflectors, Typed};
use faer::{Mat, MatRef};
use numpy::{PyArray1, PyArray2, PyArray3, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::prelude::*;
use std::sync::{Arc, Mutex, PoisonError};
use tangentflow_core::closed_form::{self, Kept, TestSide};
use tangentflow_core::dynamics::{self, Dynamics, Modes, TimeBasis};
use tangentflow_core::threads;
use tangentflow_core::Real;

/// How each eigenmode evolves (`tangentflow._core.Dynamics`): built by `flow`, `gd` or
/// `momentum` and passed to `mode_factors` / `closed_form_*` as it is.
#[pyclass(frozen, name = "Dynamics", module = "tangentflow._core")]
#[derive(Clone, Copy)]
pub struct PyDynamics(Dynamics);

#[pymethods]
impl PyDynamics {
    /// Gradient flow, `e = exp(−μ·scale·t)` with `scale = η/n`.
    #[staticmethod]
    fn flow(scale: f64) -> Self {
        PyDynamics(Dynamics::Flow { scale })
    }

    /// Gradient descent with discrete steps, `e = (1 − μ·scale)^t` with `scale = η/n`.
    #[staticmethod]
    fn gd(scale: f64) -> Self {
        PyDynamics(Dynamics::Steps { scale })
    }

    /// Heavy-ball momentum `momentum` at learning rate `learning_rate` over `n` loss terms.
    #[staticmethod]
    fn momentum(learning_rate: f64, momentum: f64, n: f64) -> CoreResult<Self> {
        Ok(PyDynamics(Dynamics::momentum(learning_rate, momentum, n)?))
    }

    fn __repr__(&self) -> String {
        match self.0 {
            Dynamics::Flow { scale } => format!("Dynamics.flow({scale:?})"),
            Dynamics::Steps { scale } => format!("Dynamics.gd({scale:?})"),
            Dynamics::Momentum {
                sqrt_eta,
                inv_n,
                damping,
            } => format!(
                "Dynamics(momentum: sqrt_eta={sqrt_eta:?}, inv_n={inv_n:?}, damping={damping:?})"
            ),
        }
    }
}

type Factors<'py> = (Bound<'py, PyArray2<f64>>, Bound<'py, PyArray2<f64>>);

/// Per-mode factors `(e − 1, (1 − e)/μ)`, each `(k, T)`, for retained eigenvalues `mu`.
#[pyfunction]
pub fn mode_factors<'py>(
    py: Python<'py>,
    dynamics: PyRef<'py, PyDynamics>,
    mu: PyReadonlyArray1<'py, f64>,
    times: PyReadonlyArray1<'py, f64>,
) -> CoreResult<Factors<'py>> {
    let dynm = dynamics.0;
    let mu = slice(&mu)?;
    let ts = slice(&times)?;
    dynamics::check_retained(mu)?;
    let em1 = PyArray2::<f64>::zeros(py, [mu.len(), ts.len()], true);
    let phi = PyArray2::<f64>::zeros(py, [mu.len(), ts.len()], true);
    {
        let mut a = em1.readwrite();
        let mut b = phi.readwrite();
        let (am, bm) = (mat_mut(&mut a), mat_mut(&mut b));
        py.detach(|| dynamics::mode_factors(&dynm, mu, ts, am, bm))?;
    }
    Ok((em1, phi))
}

/// `Σ_j zz_j·e_j(t)²` per time (`e_j` the decay of retained mode `mu[j]`): the retained part
/// of `2n·` the MSE training loss from the squared projected residual (docs/numerics.md §16).
#[pyfunction]
pub fn loss_sums<'py>(
    py: Python<'py>,
    dynamics: PyRef<'py, PyDynamics>,
    mu: PyReadonlyArray1<'py, f64>,
    times: PyReadonlyArray1<'py, f64>,
    zz: PyReadonlyArray1<'py, f64>,
) -> CoreResult<Bound<'py, PyArray1<f64>>> {
    let dynm = dynamics.0;
    let (mu, ts, zz) = (slice(&mu)?, slice(&times)?, slice(&zz)?);
    let out = py.detach(|| threads::install(|par| dynamics::loss_sums(&dynm, mu, ts, zz, par)))?;
    Ok(PyArray1::from_vec(py, out))
}

/// Enables (`True`) or disables time compression in `closed_form_*`; returns the previous
/// setting. For tests that compare against the direct path (docs/numerics.md §16).
#[pyfunction]
#[allow(clippy::fn_params_excessive_bools)]
pub fn _set_time_compression(on: bool) -> bool {
    dynamics::set_time_compression(on)
}

/// Whether time compression is enabled.
#[pyfunction]
pub fn _time_compression() -> bool {
    dynamics::time_compression()
}

/// `(train, test)` ranks of the last `closed_form_*` call's compression; `-1` where that
/// side took the direct path or was not computed. An introspection hook for tests.
#[pyfunction]
pub fn _compression_ranks() -> (i64, i64) {
    dynamics::last_compression_ranks()
}

/// What a [`PyTimeBasisCache`] holds: nothing, or one kept time basis of either precision.
enum Slot {
    Empty,
    F32(Arc<TimeBasis<f32>>),
    F64(Arc<TimeBasis<f64>>),
}

/// The last projection on the cache's `V`: `(r, z = V_Rᵀ r)`, either precision.
enum ZSlot {
    Empty,
    F32(Arc<(Mat<f32>, Mat<f32>)>),
    F64(Arc<(Mat<f64>, Mat<f64>)>),
}

/// The precision's variant of a [`Slot`] / [`ZSlot`].
trait Slotted: Sized {
    fn get(slot: &Slot) -> Option<Arc<TimeBasis<Self>>>;
    fn wrap(tb: TimeBasis<Self>) -> Slot;
    fn get_z(slot: &ZSlot) -> Option<Arc<(Mat<Self>, Mat<Self>)>>;
    fn wrap_z(rz: (Mat<Self>, Mat<Self>)) -> ZSlot;
}

macro_rules! slotted {
    ($t:ty, $variant:ident) => {
        impl Slotted for $t {
            fn get(slot: &Slot) -> Option<Arc<TimeBasis<$t>>> {
                match slot {
                    Slot::$variant(tb) => Some(Arc::clone(tb)),
                    _ => None,
                }
            }
            fn wrap(tb: TimeBasis<$t>) -> Slot {
                Slot::$variant(Arc::new(tb))
            }
            fn get_z(slot: &ZSlot) -> Option<Arc<(Mat<$t>, Mat<$t>)>> {
                match slot {
                    ZSlot::$variant(rz) => Some(Arc::clone(rz)),
                    _ => None,
                }
            }
            fn wrap_z(rz: (Mat<$t>, Mat<$t>)) -> ZSlot {
                ZSlot::$variant(Arc::new(rz))
            }
        }
    };
}

slotted!(f32, F32);
slotted!(f64, F64);

/// A time basis kept across `closed_form_*` calls on one output basis (`V` of a
/// factorization, or the `K_te V` of a test set; docs/numerics.md §16, "Reuse"). The owner
/// of that basis holds it; a call uses it only for the same coefficients `z` (compared
/// bitwise), so a stale basis costs a check, never a wrong result. Calls may run
/// concurrently: each works on a snapshot and the last grown or new basis is kept. The
/// cache on `V` also keeps the last projection `z = V_Rᵀ r` with its `r` (a call with the
/// same `r`, compared bitwise, and the same number of retained modes skips the product).
#[pyclass(frozen, name = "TimeBasisCache", module = "tangentflow._core")]
pub struct PyTimeBasisCache(Mutex<Slot>, Mutex<ZSlot>);

impl PyTimeBasisCache {
    fn snapshot<T: Slotted>(&self) -> Option<Arc<TimeBasis<T>>> {
        T::get(&self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
    fn store<T: Slotted>(&self, tb: TimeBasis<T>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = T::wrap(tb);
    }
    /// The kept `z` for this `r` (bitwise) and `k` retained modes.
    fn projection<T: Slotted + Real>(
        &self,
        r: MatRef<'_, T>,
        k: usize,
    ) -> Option<Arc<(Mat<T>, Mat<T>)>> {
        let rz = T::get_z(&self.1.lock().unwrap_or_else(PoisonError::into_inner))?;
        let same = rz.0.shape() == r.shape()
            && rz.1.nrows() == k
            && (0..r.ncols()).all(|c| (0..r.nrows()).all(|i| rz.0[(i, c)] == r[(i, c)]));
        same.then_some(rz)
    }
    fn store_projection<T: Slotted + Real>(&self, r: MatRef<'_, T>, z: MatRef<'_, T>) {
        *self.1.lock().unwrap_or_else(PoisonError::into_inner) =
            T::wrap_z((r.to_owned(), z.to_owned()));
    }
}

#[pymethods]
impl PyTimeBasisCache {
    #[new]
    fn new() -> Self {
        PyTimeBasisCache(Mutex::new(Slot::Empty), Mutex::new(ZSlot::Empty))
    }

    /// The rank of the kept basis (`-1`: none). For tests.
    fn rank(&self) -> i64 {
        match &*self.0.lock().unwrap_or_else(PoisonError::into_inner) {
            Slot::Empty => -1,
            Slot::F32(tb) => tb.rank() as i64,
            Slot::F64(tb) => tb.rank() as i64,
        }
    }

    /// Drops the kept basis and projection.
    fn clear(&self) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Slot::Empty;
        *self.1.lock().unwrap_or_else(PoisonError::into_inner) = ZSlot::Empty;
    }
}

/// How the last `closed_form_*` call used kept time bases `(train, test)`: `0` not, `1` as
/// they were, `2` grown (docs/numerics.md §16, "Reuse"). An introspection hook for tests.
#[pyfunction]
pub fn _basis_reuse() -> (i64, i64) {
    dynamics::last_basis_reuse()
}

/// The output basis of a call: `v` itself, or `Q·v` with the factorization's reflectors.
fn modes<'a, T: Typed + Real>(
    v: MatRef<'a, T>,
    q: Option<&'a PyReflectors>,
) -> CoreResult<Modes<'a, T>> {
    let Some(q) = q else {
        return Ok(Modes::Dense(v));
    };
    let refl = T::of(q)?;
    if refl.n() != v.nrows() {
        return Err(pyo3::exceptions::PyValueError::new_err(format!(
            "the basis has {} rows, Q is {n}×{n}",
            v.nrows(),
            n = refl.n()
        ))
        .into());
    }
    Ok(Modes::Factored(refl, v))
}

/// A zeroed C-ordered `(T, rows, R)` output.
fn outputs<'py, T: numpy::Element>(
    py: Python<'py>,
    nt: usize,
    rows: usize,
    r: usize,
) -> Bound<'py, PyArray3<T>> {
    PyArray3::<T>::zeros(py, [nt, rows, r], false)
}

macro_rules! recon_fns {
    ($t:ty, $project:ident, $basis:ident, $train:ident, $test:ident, $cached:ident, $closed:ident) => {
        /// `z = Vᵀ r`; with `cache` (the [`PyTimeBasisCache`] on this `V`) the kept
        /// projection of the same `r` is returned, and a new one is kept. With `q` (the
        /// factorization's [`PyReflectors`]), `v` holds `Z_R` and `V = Q Z_R`.
        #[pyfunction]
        #[pyo3(signature = (v, r, cache=None, q=None))]
        pub fn $project<'py>(
            py: Python<'py>,
            v: PyReadonlyArray2<'py, $t>,
            r: PyReadonlyArray2<'py, $t>,
            cache: Option<PyRef<'py, PyTimeBasisCache>>,
            q: Option<PyRef<'py, PyReflectors>>,
        ) -> CoreResult<Bound<'py, PyArray2<$t>>> {
            let (vr, rr) = (mat_ref(&v), mat_ref(&r));
            if let Some(rz) = cache.as_ref().and_then(|c| c.projection::<$t>(rr, vr.ncols())) {
                return Ok(to_numpy(py, rz.1.as_ref()));
            }
            let modes = modes::<$t>(vr, q.as_deref())?;
            let z = py.detach(|| threads::install(|par| dynamics::project_modes(modes, rr, par)))?;
            if let Some(c) = cache.as_ref() {
                if z.nrows() == vr.ncols() {
                    c.store_projection(rr, z.as_ref());
                }
            }
            Ok(to_numpy(py, z.as_ref()))
        }

        /// `K_te · V`.
        #[pyfunction]
        pub fn $basis<'py>(
            py: Python<'py>,
            kte: PyReadonlyArray2<'py, $t>,
            v: PyReadonlyArray2<'py, $t>,
        ) -> CoreResult<Bound<'py, PyArray2<$t>>> {
            let (kr, vr) = (mat_ref(&kte), mat_ref(&v));
            let kv = py.detach(|| threads::install(|par| dynamics::test_basis(kr, vr, par)))?;
            Ok(to_numpy(py, kv.as_ref()))
        }

        /// Train outputs `(T, N, R)`: `f₀ + V (em1 ⊙ z)` at every time.
        #[pyfunction]
        pub fn $train<'py>(
            py: Python<'py>,
            v: PyReadonlyArray2<'py, $t>,
            z: PyReadonlyArray2<'py, $t>,
            em1: PyReadonlyArray2<'py, f64>,
            f0: PyReadonlyArray2<'py, $t>,
        ) -> CoreResult<Bound<'py, PyArray3<$t>>> {
            let (vr, zr, er, fr) = (mat_ref(&v), mat_ref(&z), mat_ref(&em1), mat_ref(&f0));
            let out = outputs::<$t>(py, er.ncols(), vr.nrows(), zr.ncols());
            {
                let mut rw = out.readwrite();
                let sl = rw.as_slice_mut().map_err(|_| internal("output buffer"))?;
                py.detach(|| {
                    threads::install(|par| dynamics::train_outputs(vr, zr, er, fr, sl, par))
                })?;
            }
            Ok(out)
        }

        /// Test outputs `(T, M, R)`: `g₀ − K_te V (phi ⊙ z)`.
        #[pyfunction]
        pub fn $test<'py>(
            py: Python<'py>,
            kte: PyReadonlyArray2<'py, $t>,
            v: PyReadonlyArray2<'py, $t>,
            z: PyReadonlyArray2<'py, $t>,
            phi: PyReadonlyArray2<'py, f64>,
            g0: PyReadonlyArray2<'py, $t>,
        ) -> CoreResult<Bound<'py, PyArray3<$t>>> {
            let (kr, vr, zr) = (mat_ref(&kte), mat_ref(&v), mat_ref(&z));
            let (pr, gr) = (mat_ref(&phi), mat_ref(&g0));
            let out = outputs::<$t>(py, pr.ncols(), kr.nrows(), zr.ncols());
            {
                let mut rw = out.readwrite();
                let sl = rw.as_slice_mut().map_err(|_| internal("output buffer"))?;
                py.detach(|| {
                    threads::install(|par| dynamics::test_outputs(kr, vr, zr, pr, gr, sl, par))
                })?;
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
        ) -> CoreResult<Bound<'py, PyArray3<$t>>> {
            let (kr, zr, pr, gr) = (mat_ref(&kv), mat_ref(&z), mat_ref(&phi), mat_ref(&g0));
            let out = outputs::<$t>(py, pr.ncols(), kr.nrows(), zr.ncols());
            {
                let mut rw = out.readwrite();
                let sl = rw.as_slice_mut().map_err(|_| internal("output buffer"))?;
                py.detach(|| {
                    threads::install(|par| dynamics::test_outputs_cached(kr, zr, pr, gr, sl, par))
                })?;
            }
            Ok(out)
        }

        /// The whole MSE closed form in one call: `(z, train, test)` with `z = Vᵀ r`,
        /// `train` `(T, N, R)` when `f0` is given, `test` `(T, M, R)` when `test` (the
        /// test–train kernel, or `K_te V` with `cached`) and `g0` are given. `train_cache`
        /// (on `V`) and `test_cache` (on a cached `K_te V`) keep time bases across calls.
        #[pyfunction]
        #[pyo3(signature = (dynamics, mu, times, v, r, f0, test, g0, cached, train_cache=None, test_cache=None, q=None))]
        #[allow(clippy::type_complexity)]
        pub fn $closed<'py>(
            py: Python<'py>,
            dynamics: PyRef<'py, PyDynamics>,
            mu: PyReadonlyArray1<'py, f64>,
            times: PyReadonlyArray1<'py, f64>,
            v: PyReadonlyArray2<'py, $t>,
            r: PyReadonlyArray2<'py, $t>,
            f0: Option<PyReadonlyArray2<'py, $t>>,
            test: Option<PyReadonlyArray2<'py, $t>>,
            g0: Option<PyReadonlyArray2<'py, $t>>,
            cached: bool,
            train_cache: Option<PyRef<'py, PyTimeBasisCache>>,
            test_cache: Option<PyRef<'py, PyTimeBasisCache>>,
            q: Option<PyRef<'py, PyReflectors>>,
        ) -> CoreResult<(
            Bound<'py, PyArray2<$t>>,
            Option<Bound<'py, PyArray3<$t>>>,
            Option<Bound<'py, PyArray3<$t>>>,
        )> {
            let dynm = dynamics.0;
            let (mu, ts) = (slice(&mu)?, slice(&times)?);
            let (vr, rr) = (mat_ref(&v), mat_ref(&r));
            let modes = modes::<$t>(vr, q.as_deref())?;
            let fr = f0.as_ref().map(mat_ref);
            let (nt, ncol) = (ts.len(), rr.ncols());
            let test = match (test.as_ref().map(mat_ref), g0.as_ref().map(mat_ref)) {
                (Some(k), Some(g)) => Some((k, g)),
                (None, None) => None,
                _ => {
                    return Err(
                        pyo3::exceptions::PyValueError::new_err("test and g0 go together").into(),
                    )
                }
            };
            let train_out = fr.map(|f| outputs::<$t>(py, nt, f.nrows(), ncol));
            let test_out = test.map(|(k, _)| outputs::<$t>(py, nt, k.nrows(), ncol));
            let z = {
                let mut train_rw = train_out.as_ref().map(PyArrayMethods::readwrite);
                let mut test_rw = test_out.as_ref().map(PyArrayMethods::readwrite);
                let train_sl = match train_rw.as_mut() {
                    Some(rw) => Some(rw.as_slice_mut().map_err(|_| internal("output buffer"))?),
                    None => None,
                };
                let test_sl = match test_rw.as_mut() {
                    Some(rw) => Some(rw.as_slice_mut().map_err(|_| internal("output buffer"))?),
                    None => None,
                };
                let train = fr.zip(train_sl);
                let side = test.zip(test_sl).map(|((k, g0), out)| {
                    if cached {
                        TestSide::Cached { kv: k, g0, out }
                    } else {
                        TestSide::Kernel { kte: k, g0, out }
                    }
                });
                let kept_train = train_cache.as_ref().and_then(|c| c.snapshot::<$t>());
                let kept_test = if cached {
                    test_cache.as_ref().and_then(|c| c.snapshot::<$t>())
                } else {
                    None
                };
                let kept_z = train_cache
                    .as_ref()
                    .and_then(|c| c.projection::<$t>(rr, vr.ncols()));
                let kept = Kept {
                    train: kept_train.as_deref(),
                    test: kept_test.as_deref(),
                    keep: true,
                    z: kept_z.as_ref().map(|rz| rz.1.as_ref()),
                };
                // Q·Z_R costs about N more operations per mode column than V_R
                let inner = if q.is_some() { vr.ncols() + vr.nrows() } else { vr.ncols() };
                let work = closed_form::work(
                    vr.nrows(),
                    inner,
                    ncol,
                    nt,
                    test.map_or(0, |(k, _)| k.nrows()),
                    !cached,
                );
                let (z, new_train, new_test) = py.detach(|| {
                    threads::install_sized(work, |par| {
                        closed_form::closed_form(&dynm, mu, ts, modes, rr, train, side, kept, par)
                    })
                })?;
                if let Some(c) = train_cache.as_ref() {
                    if kept_z.is_none() {
                        c.store_projection(rr, z.as_ref());
                    }
                    if let Some(tb) = new_train {
                        c.store(tb);
                    }
                }
                if let (Some(c), Some(tb), true) = (test_cache.as_ref(), new_test, cached) {
                    c.store(tb);
                }
                z
            };
            Ok((to_numpy(py, z.as_ref()), train_out, test_out))
        }
    };
}

recon_fns!(
    f64,
    project_f64,
    test_basis_f64,
    train_outputs_f64,
    test_outputs_f64,
    test_outputs_cached_f64,
    closed_form_f64
);
recon_fns!(
    f32,
    project_f32,
    test_basis_f32,
    train_outputs_f32,
    test_outputs_f32,
    test_outputs_cached_f32,
    closed_form_f32
);
