//! Bindings of the ODE integrator (`tangentflow._core.ode_solve`).
//!
//! The train system is integrated in the core with the GIL released, on a helper thread
//! (inside the library's pool), while the calling thread waits and checks for signals
//! (`py.check_signals()`) every [`SIGNAL_POLL`]: Ctrl-C sets a cancellation flag that the
//! integrator checks before every step attempt, and the `KeyboardInterrupt` is re-raised
//! on the calling thread. (Signal handlers run only on Python's main thread, so a loop that
//! never returns to it could not be interrupted.) A Python gradient callable is invoked
//! with the GIL re-acquired (`Python::attach`) for each evaluation; an exception it raises
//! stops the integration and is re-raised unchanged. Test outputs are reconstructed by the
//! caller from the returned `S` (and `P`) blocks (core `ode` docs).

use crate::convert::{mat_mut, mat_ref};
use crate::errors::CoreResult;
use faer::{MatMut, MatRef};
use numpy::{
    AllowTypeChange, PyArray1, PyArray2, PyArrayLike2, PyArrayMethods, PyReadonlyArray1,
    PyReadonlyArray2,
};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Duration;
use tangentflow_core::ode::{self, CrossEntropy, Gradient, Mse, OdeOptions};
use tangentflow_core::{threads, Error, Shape};

/// How often the waiting thread checks for signals.
const SIGNAL_POLL: Duration = Duration::from_millis(20);

/// A Python callable `grad(F) -> array (D, R)`.
struct PyGradient {
    func: Py<PyAny>,
    /// The exception raised by the callable (or by checking its result), re-raised later.
    err: Option<PyErr>,
}

impl PyGradient {
    fn call(&self, f: MatRef<'_, f64>, mut out: MatMut<'_, f64>) -> PyResult<()> {
        Python::attach(|py| {
            let (d, r) = (f.nrows(), f.ncols());
            let arr = PyArray2::<f64>::zeros(py, [d, r], false);
            {
                let mut rw = arr.readwrite();
                mat_mut(&mut rw).copy_from(f);
            }
            let ret = self.func.bind(py).call1((arr,))?;
            let g: PyArrayLike2<'_, f64, AllowTypeChange> = ret.extract().map_err(|_| {
                PyValueError::new_err(format!(
                    "the loss gradient callable must return a 2-D float array of shape ({d}, {r}), got {}",
                    describe(&ret)
                ))
            })?;
            let gr = mat_ref(&g);
            if gr.nrows() != d || gr.ncols() != r {
                return Err(PyValueError::new_err(format!(
                    "the loss gradient callable returned shape ({}, {}), expected ({d}, {r})",
                    gr.nrows(),
                    gr.ncols()
                )));
            }
            if !all_finite(gr) {
                return Err(PyValueError::new_err(
                    "the loss gradient callable returned NaN or infinity",
                ));
            }
            out.copy_from(gr);
            Ok(())
        })
    }
}

fn describe(ob: &Bound<'_, PyAny>) -> String {
    match ob.getattr("shape") {
        Ok(shape) => format!("shape {shape}"),
        Err(_) => format!(
            "an object of type {}",
            ob.get_type()
                .name()
                .map_or_else(|_| "?".into(), |n| n.to_string())
        ),
    }
}

impl Gradient for PyGradient {
    fn grad(&mut self, f: MatRef<'_, f64>, out: MatMut<'_, f64>) -> tangentflow_core::Result<()> {
        self.call(f, out).map_err(|e| {
            self.err = Some(e);
            Error::InvalidArgument("the loss gradient callable raised an exception".into())
        })
    }
}

/// The loss: a built-in one (GIL-free) or a Python callable.
enum Loss {
    Mse(Mse),
    CrossEntropy(CrossEntropy),
    Callable(PyGradient),
}

impl Gradient for Loss {
    fn grad(&mut self, f: MatRef<'_, f64>, out: MatMut<'_, f64>) -> tangentflow_core::Result<()> {
        match self {
            Loss::Mse(l) => l.grad(f, out),
            Loss::CrossEntropy(l) => l.grad(f, out),
            Loss::Callable(l) => l.grad(f, out),
        }
    }
}

fn all_finite(m: MatRef<'_, f64>) -> bool {
    m.col_iter().all(|c| c.iter().all(|v| v.is_finite()))
}

fn check_finite(what: &'static str, m: MatRef<'_, f64>) -> CoreResult<()> {
    if all_finite(m) {
        Ok(())
    } else {
        Err(Error::NonFinite { what }.into())
    }
}

/// Flat `(T, D, R)` states as a `NumPy` array.
fn states(py: Python<'_>, v: Vec<f64>, t: usize, d: usize, r: usize) -> PyResult<Bound<'_, PyAny>> {
    Ok(PyArray1::from_vec(py, v).reshape([t, d, r])?.into_any())
}

/// Integrates the train system of an arbitrary loss by adaptive Dormand–Prince 5(4).
///
/// `kernel` (D, D), `f0` (D, R); `times`: sorted absolute times `τ ≥ 0` (may be None or
/// empty with `converge_tol`); `loss`: `"mse"`, `"cross_entropy"` (softmax over groups of
/// `classes` consecutive entries of the row-major flattened outputs; default `classes = R`)
/// or a callable `grad(F) -> (D, R)`; `y` (D, R) targets for the built-in losses; `n` their
/// normalisation (default `D·R`). Momentum: `damping = c` (and optional `q0`).
///
/// Returns a dict of float64 arrays `f`, `s` (and `q`, `p` with momentum), each `(T', D, R)`
/// with `T' = len(times)`, plus one final slot holding the converged state when
/// `converge_tol` is given; `tau_end` (time of the converged state, else the last time),
/// `n_steps`, `n_rejected`, `n_evals`.
#[pyfunction]
#[allow(clippy::needless_pass_by_value)] // PyO3 extracts arguments by value
#[pyo3(signature = (
    kernel, f0, times, loss, y=None, n=None, classes=None, q0=None, damping=None,
    rtol=1.4e-8, atol=1.4e-8, converge_tol=None, first_step=None, max_steps=None,
))]
pub fn ode_solve<'py>(
    py: Python<'py>,
    kernel: PyReadonlyArray2<'py, f64>,
    f0: PyReadonlyArray2<'py, f64>,
    times: Option<PyReadonlyArray1<'py, f64>>,
    loss: &Bound<'py, PyAny>,
    y: Option<PyReadonlyArray2<'py, f64>>,
    n: Option<f64>,
    classes: Option<usize>,
    q0: Option<PyReadonlyArray2<'py, f64>>,
    damping: Option<f64>,
    rtol: f64,
    atol: f64,
    converge_tol: Option<f64>,
    first_step: Option<f64>,
    max_steps: Option<usize>,
) -> CoreResult<Bound<'py, PyDict>> {
    let kr = mat_ref(&kernel);
    let fr = mat_ref(&f0);
    let qr = q0.as_ref().map(mat_ref);
    let (d, r) = (fr.nrows(), fr.ncols());
    if kr.nrows() != kr.ncols() {
        return Err(Error::NotSquare {
            what: "kernel",
            nrows: kr.nrows(),
            ncols: kr.ncols(),
        }
        .into());
    }
    if kr.nrows() != d {
        return Err(Error::DimensionMismatch {
            what: "f0 rows (kernel size)",
            expected: Shape::Rows(kr.nrows()),
            got: Shape::Matrix(d, r),
        }
        .into());
    }
    check_finite("kernel", kr)?;
    check_finite("f0", fr)?;
    if let Some(q) = qr {
        check_finite("q0", q)?;
    }
    let times: Vec<f64> = times.map(|t| t.as_array().to_vec()).unwrap_or_default();
    let n = n.unwrap_or((d * r) as f64);
    if !(n > 0.0 && n.is_finite()) {
        return Err(PyValueError::new_err(format!("n must be > 0 and finite, got {n}")).into());
    }
    let targets = |name: &str| -> CoreResult<faer::Mat<f64>> {
        let y = y
            .as_ref()
            .ok_or_else(|| PyValueError::new_err(format!("loss {name:?} needs the targets y")))?;
        let yr = mat_ref(y);
        if yr.nrows() != d || yr.ncols() != r {
            return Err(PyValueError::new_err(format!(
                "y must have the shape of f0 ({d}, {r}), got ({}, {})",
                yr.nrows(),
                yr.ncols()
            ))
            .into());
        }
        check_finite("y", yr)?;
        Ok(yr.to_owned())
    };
    let mut loss = if let Ok(name) = loss.cast::<PyString>() {
        match name.to_str()? {
            "mse" => Loss::Mse(Mse {
                y: targets("mse")?,
                n,
            }),
            "cross_entropy" => {
                let classes = classes.unwrap_or(r);
                if classes == 0 || (d * r) % classes != 0 {
                    return Err(PyValueError::new_err(format!(
                        "classes must be > 0 and divide the {} outputs, got {classes}",
                        d * r
                    ))
                    .into());
                }
                Loss::CrossEntropy(CrossEntropy {
                    y: targets("cross_entropy")?,
                    n,
                    classes,
                })
            }
            other => {
                return Err(PyValueError::new_err(format!(
                    "loss must be 'mse', 'cross_entropy' or a callable, got {other:?}"
                ))
                .into())
            }
        }
    } else if loss.is_callable() {
        Loss::Callable(PyGradient {
            func: loss.clone().unbind(),
            err: None,
        })
    } else {
        return Err(PyTypeError::new_err(format!(
            "loss must be 'mse', 'cross_entropy' or a callable grad(f) -> array, got {}",
            loss.get_type().name()?
        ))
        .into());
    };
    let defaults = OdeOptions::default();
    let opts = OdeOptions {
        rtol,
        atol,
        max_steps: max_steps.unwrap_or(defaults.max_steps),
        first_step,
    };
    let cancel = AtomicBool::new(false);
    let mut signal: Option<PyErr> = None;
    let done = (Mutex::new(false), Condvar::new());
    let result = std::thread::scope(|scope| {
        let (loss, times, opts, cancel, done_ref) = (&mut loss, &times, &opts, &cancel, &done);
        let worker = scope.spawn(move || {
            let out = threads::install(|par| {
                ode::integrate_with_interrupt(
                    kr,
                    fr,
                    qr,
                    damping,
                    loss,
                    times,
                    converge_tol,
                    opts,
                    par,
                    &mut || {
                        if cancel.load(Ordering::Relaxed) {
                            Err(Error::IntegrationFailed("interrupted".into()))
                        } else {
                            Ok(())
                        }
                    },
                )
            });
            *done_ref.0.lock().unwrap_or_else(PoisonError::into_inner) = true;
            done_ref.1.notify_all();
            out
        });
        loop {
            let finished = py.detach(|| {
                let guard = done.0.lock().unwrap_or_else(PoisonError::into_inner);
                let (guard, _) = done
                    .1
                    .wait_timeout_while(guard, SIGNAL_POLL, |d| !*d)
                    .unwrap_or_else(PoisonError::into_inner);
                *guard
            });
            if finished {
                break;
            }
            if signal.is_none() {
                if let Err(e) = py.check_signals() {
                    signal = Some(e);
                    cancel.store(true, Ordering::Relaxed);
                }
            }
        }
        py.detach(|| worker.join())
    });
    let result = match result {
        Ok(r) => r,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    if let Some(e) = signal {
        return Err(e.into());
    }
    if let Loss::Callable(g) = &mut loss {
        if let Some(e) = g.err.take() {
            return Err(e.into());
        }
    }
    let sol = result?;
    let t = times.len() + usize::from(converge_tol.is_some());
    let out = PyDict::new(py);
    out.set_item("f", states(py, sol.f, t, d, r)?)?;
    out.set_item("s", states(py, sol.s, t, d, r)?)?;
    if let (Some(q), Some(p)) = (sol.q, sol.p) {
        out.set_item("q", states(py, q, t, d, r)?)?;
        out.set_item("p", states(py, p, t, d, r)?)?;
    }
    out.set_item("tau_end", sol.tau_end)?;
    out.set_item("n_steps", sol.n_steps)?;
    out.set_item("n_rejected", sol.n_rejected)?;
    out.set_item("n_evals", sol.n_evals)?;
    Ok(out)
}
