//! Bindings of the fully connected infinite-width kernels (`tangentflow.kernels`) and of
//! their fused products (`tangentflow.operators.fully_connected`).
//!
//! The Python layer validates and converts the inputs to float64; this borrows them,
//! allocates the C-ordered outputs, and lets the core fill them with the GIL released
//! inside the library's thread pool.

use crate::convert::{mat_mut, mat_ref};
use crate::errors::CoreResult;
use numpy::{PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray2};
use pyo3::prelude::*;
use tangentflow_core::kernels::{self, Activation, FcSpec, Kind};
use tangentflow_core::{threads, Error, Shape};

type Out<'py> = Option<Bound<'py, PyArray2<f64>>>;

/// `(nngp, ntk)` of `hidden_layers` × [Dense, activation] + Dense, each `(N1, N2)` or
/// `None` when not requested; `x2 = None` means `x1` itself (exactly symmetric outputs).
#[pyfunction]
#[allow(clippy::needless_pass_by_value)] // pyo3 extracts arguments by value
#[pyo3(signature = (x1, x2, hidden_layers, activation, w_std, b_std, want_nngp, want_ntk))]
pub fn fully_connected_f64<'py>(
    py: Python<'py>,
    x1: PyReadonlyArray2<'py, f64>,
    x2: Option<PyReadonlyArray2<'py, f64>>,
    hidden_layers: usize,
    activation: &str,
    w_std: f64,
    b_std: f64,
    want_nngp: bool,
    want_ntk: bool,
) -> CoreResult<(Out<'py>, Out<'py>)> {
    let spec = FcSpec {
        hidden_layers,
        activation: Activation::parse(activation)?,
        w_std,
        b_std,
    };
    let x1r = mat_ref(&x1);
    let x2r = x2.as_ref().map(mat_ref);
    let n1 = x1r.nrows();
    let n2 = x2r.map_or(n1, |m| m.nrows());
    // Check the feature dimension before allocating N1 × N2 outputs.
    if let Some(m) = x2r {
        if m.ncols() != x1r.ncols() {
            return Err(Error::DimensionMismatch {
                what: "x2 feature dimension",
                expected: Shape::Cols(x1r.ncols()),
                got: Shape::Matrix(m.nrows(), m.ncols()),
            }
            .into());
        }
    }
    let alloc = |want: bool| want.then(|| PyArray2::<f64>::zeros(py, [n1, n2], false));
    let (nngp, ntk) = (alloc(want_nngp), alloc(want_ntk));
    {
        let mut k_rw = nngp.as_ref().map(PyArrayMethods::readwrite);
        let mut t_rw = ntk.as_ref().map(PyArrayMethods::readwrite);
        let km = k_rw.as_mut().map(mat_mut);
        let tm = t_rw.as_mut().map(mat_mut);
        py.detach(|| {
            threads::install(|par| kernels::fully_connected(x1r, x2r, &spec, km, tm, par))
        })?;
    }
    Ok((nngp, ntk))
}

fn spec_of(hidden_layers: usize, activation: &str, w_std: f64, b_std: f64) -> CoreResult<FcSpec> {
    Ok(FcSpec {
        hidden_layers,
        activation: Activation::parse(activation)?,
        w_std,
        b_std,
    })
}

/// The fused product of `tangentflow.operators.fully_connected`: `K(x1[r0:r1], x2) @ v`
/// (`(r1 − r0, p)`), or with `x2 = None` the lower-triangle contribution of rows `r0:r1` of
/// the symmetric `K(x1, x1)` (`(r1, p)`; the contributions of a partition of the rows add
/// up to `K @ v`). The kernel is never stored; the GIL is released.
#[pyfunction]
#[allow(clippy::needless_pass_by_value)] // pyo3 extracts arguments by value
#[pyo3(signature = (x1, x2, r0, r1, hidden_layers, activation, w_std, b_std, ntk, v))]
pub fn fc_matmat_f64<'py>(
    py: Python<'py>,
    x1: PyReadonlyArray2<'py, f64>,
    x2: Option<PyReadonlyArray2<'py, f64>>,
    r0: usize,
    r1: usize,
    hidden_layers: usize,
    activation: &str,
    w_std: f64,
    b_std: f64,
    ntk: bool,
    v: PyReadonlyArray2<'py, f64>,
) -> CoreResult<Bound<'py, PyArray2<f64>>> {
    let spec = spec_of(hidden_layers, activation, w_std, b_std)?;
    let kind = if ntk { Kind::Ntk } else { Kind::Nngp };
    let (x1r, x2r, vr) = (mat_ref(&x1), x2.as_ref().map(mat_ref), mat_ref(&v));
    let rows = if x2r.is_some() {
        r1.saturating_sub(r0)
    } else {
        r1
    };
    let out = PyArray2::<f64>::zeros(py, [rows.min(x1r.nrows()), vr.ncols()], false);
    {
        let mut rw = out.readwrite();
        let om = mat_mut(&mut rw);
        py.detach(|| {
            threads::install(|par| {
                kernels::fully_connected_matmat(x1r, x2r, (r0, r1), &spec, kind, vr, om, par)
            })
        })?;
    }
    Ok(out)
}

/// `(nngp, ntk)` diagonals `K(x_i, x_i)` of `hidden_layers` × [Dense, activation] + Dense.
#[pyfunction]
#[allow(clippy::needless_pass_by_value)] // pyo3 extracts arguments by value
#[pyo3(signature = (x, hidden_layers, activation, w_std, b_std))]
pub fn fc_diagonal_f64<'py>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, f64>,
    hidden_layers: usize,
    activation: &str,
    w_std: f64,
    b_std: f64,
) -> CoreResult<(Bound<'py, PyArray1<f64>>, Bound<'py, PyArray1<f64>>)> {
    let spec = spec_of(hidden_layers, activation, w_std, b_std)?;
    let xr = mat_ref(&x);
    let (k, t) = py.detach(|| kernels::fully_connected_diagonal(xr, &spec))?;
    Ok((PyArray1::from_vec(py, k), PyArray1::from_vec(py, t)))
}
