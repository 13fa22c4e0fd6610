//! Bindings of the Krylov dynamics (`tangentflow_core::krylov`): a kernel operator given
//! by a Python callable, the gradient flow at many times from one kept basis
//! ([`PyKrylovFlow`]) and the `t = ∞` pseudo-inverse solve ([`PyKrylovPinv`]).
//!
//! The algebra runs with the GIL released. Each block product re-acquires it
//! (`Python::attach`), first checks for signals (Ctrl-C → `KeyboardInterrupt`), then calls
//! `matmat(V)` with `V` a new Fortran-ordered float64 array (`N × p`) and copies the
//! returned `(N, p)` array into the core's buffer. An exception raised by the callable
//! (or by the signal check, or by the progress callable) stops the solve and is re-raised
//! unchanged. The optional `progress(iterations, matvecs, error_estimate)` is called after
//! every stopping test.

use crate::convert::{mat_mut, mat_ref, to_numpy};
use crate::errors::CoreResult;
use faer::{MatMut, MatRef};
use numpy::{
    AllowTypeChange, PyArray2, PyArrayLike2, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2,
};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use std::sync::{Mutex, PoisonError};
use tangentflow_core::krylov::{
    self, FlowOptions, KrylovFlow, LinOp, PinvOptions, PinvSolution, SolverInfo,
};
use tangentflow_core::{Error, Result};

/// The first Python exception raised during a solve (kept to re-raise it unchanged).
#[derive(Default)]
struct Raised(Mutex<Option<PyErr>>);

impl Raised {
    fn store(&self, e: PyErr) -> Error {
        let mut slot = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(e);
        }
        Error::InvalidArgument("a Python callable raised an exception".into())
    }
    fn take(&self) -> Option<PyErr> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// A symmetric `N×N` operator applied by a Python callable `matmat(V) -> (N, p)`.
struct PyOp<'a> {
    matmat: &'a Py<PyAny>,
    n: usize,
    raised: &'a Raised,
}

impl PyOp<'_> {
    fn call(&self, x: MatRef<'_, f64>, mut out: MatMut<'_, f64>) -> PyResult<()> {
        Python::attach(|py| {
            py.check_signals()?;
            let (n, p) = (x.nrows(), x.ncols());
            let arr = PyArray2::<f64>::zeros(py, [n, p], true);
            {
                let mut rw = arr.readwrite();
                mat_mut(&mut rw).copy_from(x);
            }
            let ret = self.matmat.bind(py).call1((arr,))?;
            let y: PyArrayLike2<'_, f64, AllowTypeChange> = ret.extract().map_err(|_| {
                PyValueError::new_err(format!(
                    "the operator's matmat must return a 2-D float array of shape ({n}, {p}), \
                     got an object of type {}",
                    ret.get_type()
                        .name()
                        .map_or_else(|_| "?".into(), |s| s.to_string())
                ))
            })?;
            let yr = mat_ref(&y);
            if yr.nrows() != n || yr.ncols() != p {
                return Err(PyValueError::new_err(format!(
                    "the operator's matmat returned shape ({}, {}), expected ({n}, {p})",
                    yr.nrows(),
                    yr.ncols()
                )));
            }
            out.copy_from(yr);
            Ok(())
        })
    }
}

impl LinOp for PyOp<'_> {
    fn nrows(&self) -> usize {
        self.n
    }
    fn apply(&self, x: MatRef<'_, f64>, out: MatMut<'_, f64>) -> Result<()> {
        self.call(x, out).map_err(|e| self.raised.store(e))
    }
}

/// The progress callable `progress(iterations, matvecs, error_estimate)` as a monitor.
fn monitor<'a>(
    progress: Option<&'a Py<PyAny>>,
    raised: &'a Raised,
) -> impl FnMut(&SolverInfo) -> Result<()> + 'a {
    move |info: &SolverInfo| {
        let Some(cb) = progress else {
            return Ok(());
        };
        Python::attach(|py| {
            cb.bind(py)
                .call1((info.iterations, info.matvecs, info.error_estimate))
                .map(|_| ())
        })
        .map_err(|e| raised.store(e))
    }
}

/// A core result, with the Python exception raised inside it (if any) taking precedence.
fn finish<T>(res: Result<T>, raised: &Raised) -> CoreResult<T> {
    if let Some(e) = raised.take() {
        return Err(e.into());
    }
    Ok(res?)
}

fn times_vec(times: &PyReadonlyArray1<'_, f64>) -> Vec<f64> {
    times.as_array().iter().copied().collect()
}

type Info = (String, usize, usize, f64, bool);

fn info_tuple(i: &SolverInfo) -> Info {
    (
        i.method.to_string(),
        i.iterations,
        i.matvecs,
        i.error_estimate,
        i.converged,
    )
}

fn flow_options(rtol: f64, max_iter: usize, rcond: Option<f64>, shift: f64) -> FlowOptions {
    FlowOptions {
        rtol,
        max_iter,
        rcond,
        shift,
        ..FlowOptions::default()
    }
}

/// Gradient flow `u(s) = exp(−s(A + λI)) r₀`, `w(s) = (A + λI)⁻¹(I − exp(−s(A + λI))) r₀`
/// from one block Lanczos basis kept in this object (docs/numerics.md §15).
#[pyclass(name = "KrylovFlow", module = "tangentflow._core")]
pub struct PyKrylovFlow(KrylovFlow);

#[pymethods]
impl PyKrylovFlow {
    /// Builds the basis for `r0` (`N × R`) until the bound at `max(times)` (scaled times
    /// `s`) is at most `rtol·max|r0|`, the space is invariant, or `max_iter` block steps.
    #[staticmethod]
    #[pyo3(signature = (matmat, n, r0, times, rtol, max_iter, rcond=None, shift=0.0, augment=None, progress=None))]
    #[allow(clippy::too_many_arguments, clippy::needless_pass_by_value)]
    fn solve(
        py: Python<'_>,
        matmat: Py<PyAny>,
        n: usize,
        r0: PyReadonlyArray2<'_, f64>,
        times: PyReadonlyArray1<'_, f64>,
        rtol: f64,
        max_iter: usize,
        rcond: Option<f64>,
        shift: f64,
        augment: Option<PyReadonlyArray2<'_, f64>>,
        progress: Option<Py<PyAny>>,
    ) -> CoreResult<Self> {
        let r0r = mat_ref(&r0);
        let aug = augment.as_ref().map(mat_ref);
        let ts = times_vec(&times);
        let opts = flow_options(rtol, max_iter, rcond, shift);
        let raised = Raised::default();
        let op = PyOp {
            matmat: &matmat,
            n,
            raised: &raised,
        };
        let empty = faer::Mat::<f64>::zeros(n, 0);
        let v = aug.unwrap_or(empty.as_ref());
        let res = py.detach(|| {
            let mut mon = monitor(progress.as_ref(), &raised);
            krylov::flow_monitored(&op, r0r, v, &ts, &opts, &mut mon)
        });
        Ok(PyKrylovFlow(finish(res, &raised)?))
    }

    /// Continues for other times or parameters (a new `rtol`, `rcond` or `shift`): the
    /// bound is re-evaluated on the kept basis and new products are made only while it
    /// exceeds `rtol`.
    #[pyo3(signature = (matmat, times, rtol, max_iter, rcond=None, shift=0.0, progress=None))]
    #[allow(clippy::too_many_arguments, clippy::needless_pass_by_value)]
    fn extend(
        &mut self,
        py: Python<'_>,
        matmat: Py<PyAny>,
        times: PyReadonlyArray1<'_, f64>,
        rtol: f64,
        max_iter: usize,
        rcond: Option<f64>,
        shift: f64,
        progress: Option<Py<PyAny>>,
    ) -> CoreResult<()> {
        let ts = times_vec(&times);
        let opts = flow_options(rtol, max_iter, rcond, shift);
        let raised = Raised::default();
        let op = PyOp {
            matmat: &matmat,
            n: self.0.basis().nrows(),
            raised: &raised,
        };
        let kf = &mut self.0;
        let res = py.detach(|| {
            let mut mon = monitor(progress.as_ref(), &raised);
            kf.extend(&op, &ts, &opts, &mut mon)
        });
        finish(res, &raised)
    }

    /// `(method, iterations, matvecs, error_estimate, converged)` of the last solve.
    fn info(&self) -> Info {
        info_tuple(&self.0.info)
    }

    /// Size `k` of the basis.
    fn dim(&self) -> usize {
        self.0.basis().ncols()
    }

    /// `λ` of the current Ritz values.
    fn shift(&self) -> f64 {
        self.0.shift()
    }

    /// Ritz values of `T + λI`, ascending, and the absolute cut.
    fn ritz_values<'py>(&self, py: Python<'py>) -> (Bound<'py, PyArray2<f64>>, f64) {
        let th = &self.0.ritz().theta;
        let m = faer::Mat::<f64>::from_fn(th.len(), 1, |i, _| th[i]);
        (to_numpy(py, m.as_ref()), self.0.ritz().cut)
    }

    /// A copy of the basis columns `Q[:, start:]` (`N × (k − start)`), e.g. for one
    /// product `K_td Q` per basis (and one per extension).
    #[pyo3(signature = (start=0))]
    fn basis<'py>(&self, py: Python<'py>, start: usize) -> Bound<'py, PyArray2<f64>> {
        let q = self.0.basis();
        let start = start.min(q.ncols());
        to_numpy(py, q.subcols(start, q.ncols() - start))
    }

    /// Coefficients in `Q` (`k × (T·R)`, time-major) of `u` (`phi=False`) or `w`.
    #[allow(clippy::needless_pass_by_value)] // PyO3 extracts arguments by value
    fn coefficients<'py>(
        &self,
        py: Python<'py>,
        times: PyReadonlyArray1<'py, f64>,
        phi: bool,
    ) -> CoreResult<Bound<'py, PyArray2<f64>>> {
        let ts = times_vec(&times);
        let c = py.detach(|| self.0.coefficients(&ts, phi))?;
        Ok(to_numpy(py, c.as_ref()))
    }

    /// `image · coefficients` (`M × (T·R)`) for an `M × k` image of the basis; with the
    /// basis itself (`image=None`) the train residual `u` or the integral `w`.
    #[allow(clippy::needless_pass_by_value)] // PyO3 extracts arguments by value
    #[pyo3(signature = (times, phi, image=None))]
    fn apply<'py>(
        &self,
        py: Python<'py>,
        times: PyReadonlyArray1<'py, f64>,
        phi: bool,
        image: Option<PyReadonlyArray2<'py, f64>>,
    ) -> CoreResult<Bound<'py, PyArray2<f64>>> {
        let ts = times_vec(&times);
        let img = image.as_ref().map(mat_ref);
        let out = py.detach(|| match img {
            Some(i) => self.0.apply_image(i, &ts, phi),
            None => self.0.apply_image(self.0.basis(), &ts, phi),
        })?;
        Ok(to_numpy(py, out.as_ref()))
    }

    /// Per column and time (`R × T`): bounds of `‖u_r − u_r*‖₂` (`phi=False`) or
    /// estimates of `‖w_r − w_r*‖₂`, absolute.
    #[allow(clippy::needless_pass_by_value)] // PyO3 extracts arguments by value
    fn bounds<'py>(
        &self,
        py: Python<'py>,
        times: PyReadonlyArray1<'py, f64>,
        phi: bool,
    ) -> CoreResult<Bound<'py, PyArray2<f64>>> {
        let ts = times_vec(&times);
        let b = py.detach(|| {
            if phi {
                self.0.integral_bounds(&ts)
            } else {
                self.0.train_bounds(&ts)
            }
        })?;
        Ok(to_numpy(py, b.as_ref()))
    }
}

/// The `t = ∞` solve: `x = (A + λI)⁺ b` and the null part `(I − AA⁺) b` by
/// Nyström-preconditioned block Lanczos (docs/numerics.md §15).
#[pyclass(frozen, name = "KrylovPinv", module = "tangentflow._core")]
pub struct PyKrylovPinv(PinvSolution);

#[pymethods]
impl PyKrylovPinv {
    #[staticmethod]
    #[pyo3(signature = (matmat, n, b, rtol, max_iter, rcond=None, shift=0.0, rank=100, seed=0x5EED, progress=None))]
    #[allow(clippy::too_many_arguments, clippy::needless_pass_by_value)]
    fn solve(
        py: Python<'_>,
        matmat: Py<PyAny>,
        n: usize,
        b: PyReadonlyArray2<'_, f64>,
        rtol: f64,
        max_iter: usize,
        rcond: Option<f64>,
        shift: f64,
        rank: usize,
        seed: u64,
        progress: Option<Py<PyAny>>,
    ) -> CoreResult<Self> {
        let br = mat_ref(&b);
        let opts = PinvOptions {
            rtol,
            max_iter,
            rcond,
            shift,
            rank,
            seed,
            ..PinvOptions::default()
        };
        let raised = Raised::default();
        let op = PyOp {
            matmat: &matmat,
            n,
            raised: &raised,
        };
        let res = py.detach(|| {
            let mut mon = monitor(progress.as_ref(), &raised);
            krylov::solve_pinv_monitored(&op, br, &opts, &mut mon)
        });
        Ok(PyKrylovPinv(finish(res, &raised)?))
    }

    /// `(method, iterations, matvecs, error_estimate, converged)`.
    fn info(&self) -> Info {
        info_tuple(&self.0.info)
    }

    /// `(A + λI)⁺ b` (`N × R`).
    fn solution<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray2<f64>> {
        to_numpy(py, self.0.x.as_ref())
    }

    /// `(I − AA⁺) b` (`N × R`).
    fn null_part<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray2<f64>> {
        to_numpy(py, self.0.null_part.as_ref())
    }

    /// Per column: bounds of the error of `null_part` (absolute 2-norms).
    fn train_bounds(&self) -> Vec<f64> {
        self.0.train_bounds.clone()
    }
}
