//! Bindings of the `t = ∞` fast path (`tangentflow_core::cholesky`): a Cholesky solve
//! of the scaled, shifted kernel with a cheap condition estimate.

use crate::convert::{mat_ref, to_numpy};
use crate::errors::CoreResult;
use numpy::{PyArray2, PyReadonlyArray2};
use pyo3::prelude::*;
use tangentflow_core::{cholesky, threads, Error};

type Solved<'py, T> = Option<(Bound<'py, PyArray2<T>>, f64, f64, f64, i32)>;

macro_rules! chol_fn {
    ($s:ty, $t:ty, $chol:ident) => {
        /// Solves `Ã x = rhs` by Cholesky, `Ã = 2^-e·(sym(K) + shift·I)` (so `A⁻¹·rhs` is
        /// `2^-e·x`), and estimates the condition number: `(x, ‖Ã‖_∞, μ_min(Ã) estimate,
        /// cond estimate, e)`, or `None` when `A` is not positive definite. `max_abs`:
        /// `max|K_ij|` of a kernel already checked finite (the scale then costs no pass
        /// over `K`); None measures it.
        #[pyfunction]
        #[pyo3(signature = (k, shift, rhs, max_abs=None))]
        pub fn $chol<'py>(
            py: Python<'py>,
            k: PyReadonlyArray2<'py, $s>,
            shift: f64,
            rhs: PyReadonlyArray2<'py, $t>,
            max_abs: Option<f64>,
        ) -> CoreResult<Solved<'py, $t>> {
            let kr = mat_ref(&k);
            let mut x = mat_ref(&rhs).to_owned();
            let res = py.detach(|| {
                threads::install(|par| {
                    cholesky::solve_scaled_with_estimate_given(kr, shift, max_abs, x.as_mut(), par)
                })
            });
            match res {
                Ok(info) => Ok(Some((
                    to_numpy(py, x.as_ref()),
                    info.norm_inf,
                    info.mu_min_est,
                    info.cond_est,
                    info.exp,
                ))),
                Err(Error::NotPositiveDefinite { .. }) => Ok(None),
                Err(e) => Err(e.into()),
            }
        }
    };
}

chol_fn!(f64, f64, cholesky_solve_f64_f64);
chol_fn!(f32, f64, cholesky_solve_f32_f64);
chol_fn!(f32, f32, cholesky_solve_f32_f32);
chol_fn!(f64, f32, cholesky_solve_f64_f32);
