//! Zero-copy views between NumPy arrays and faer matrices.
//!
//! rust-numpy gives element strides through its ndarray view; faer takes element strides
//! too, so any NumPy layout (C, Fortran, sliced) maps to a `MatRef` without copying.

use crate::errors::CoreResult;
use faer::{MatMut, MatRef};
use numpy::{
    Element, PyArray2, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2, PyReadwriteArray2,
};
use pyo3::exceptions::PyValueError;
use pyo3::{Bound, Python};
use tangentflow_core::Real;

/// A faer view of a 2-D NumPy array (valid while `a` is borrowed).
pub fn mat_ref<'a, T: Element>(a: &'a PyReadonlyArray2<'_, T>) -> MatRef<'a, T> {
    let v = a.as_array();
    let (r, c) = v.dim();
    let s = v.strides();
    // SAFETY: the pointer and element strides describe the live, readonly-borrowed array.
    unsafe { MatRef::from_raw_parts(v.as_ptr(), r, c, s[0], s[1]) }
}

/// A mutable faer view of a 2-D NumPy array.
pub fn mat_mut<'a, T: Element>(a: &'a mut PyReadwriteArray2<'_, T>) -> MatMut<'a, T> {
    let mut v = a.as_array_mut();
    let (r, c) = v.dim();
    let s = [v.strides()[0], v.strides()[1]];
    // SAFETY: the pointer and element strides describe the live, exclusively borrowed array.
    unsafe { MatMut::from_raw_parts_mut(v.as_mut_ptr(), r, c, s[0], s[1]) }
}

/// A 1-D array as a contiguous slice (callers pass contiguous float64 vectors).
pub fn slice<'a, T: Element>(a: &'a PyReadonlyArray1<'_, T>) -> CoreResult<&'a [T]> {
    a.as_slice()
        .map_err(|_| PyValueError::new_err("expected a contiguous 1-D array").into())
}

/// A new Fortran-ordered NumPy copy of a faer matrix.
pub fn to_numpy<'py, T: Element + Real>(
    py: Python<'py>,
    m: MatRef<'_, T>,
) -> Bound<'py, PyArray2<T>> {
    let out = PyArray2::<T>::zeros(py, [m.nrows(), m.ncols()], true);
    {
        let mut rw = out.readwrite();
        mat_mut(&mut rw).copy_from(m);
    }
    out
}
