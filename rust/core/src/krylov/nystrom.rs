//! Randomized Nyström preconditioner (Frangella, Tropp and Udell, 2023).
//!
//! From one block product `Y = A Ω` with an orthonormalized Gaussian sketch `Ω` (`N × ℓ`):
//! the shift `ν = √N · ε · ‖Y‖_F`, `Y_ν = Y + νΩ`, `Ωᵀ Y_ν = L Lᵀ`, `B = Y_ν L⁻ᵀ = U Σ Wᵀ`
//! and `λ̂_i = max(σ_i² − ν, 0)`, so `A ≈ U diag(λ̂) Uᵀ`. Sketch directions with
//! `λ̂_i ≤ max(100ν, 1e-10·λ̂_1)` are discarded (they carry no information above the shift).
//! With `μ = λ̂_ℓ` (the smallest retained sketch eigenvalue) the preconditioner is
//!
//! ```text
//! P⁻¹ = (λ̂_ℓ + μ) U (Λ̂ + μI)⁻¹ Uᵀ + (I − UUᵀ)
//! ```
//!
//! in closed form, and so are `P^{∓1/2} = I + U diag(d_i^{±1} − 1) Uᵀ` with
//! `d_i = √((λ̂_ℓ + μ)/(λ̂_i + μ)) ∈ (0, 1]`. On the top directions `P^{-1/2} A P^{-1/2}`
//! has eigenvalues in `[λ̂_ℓ, 2λ̂_ℓ]`; the rest of the spectrum is unchanged.
//! `‖P^{-1/2}‖ = 1` and `‖P^{1/2}‖ = 1/d_1`.

use super::{gemm, LinOp, Normal};
use crate::{Error, Result};
use faer::linalg::triangular_solve::solve_lower_triangular_in_place;
use faer::{Accum, Mat, MatMut, MatRef, Side};

/// `P^{∓1/2}` of the module docs.
#[derive(Debug, Clone)]
pub struct NystromPreconditioner {
    u: Mat<f64>,
    lam: Vec<f64>,
    d: Vec<f64>,
    mu: f64,
}

impl NystromPreconditioner {
    /// Sketches `op` with `rank` columns (one block product of `rank` matvecs).
    pub fn new<O: LinOp + ?Sized>(op: &O, rank: usize, seed: u64) -> Result<Self> {
        let n = op.nrows();
        let l = rank.min(n);
        if l == 0 {
            return Ok(Self::identity(n));
        }
        let mut rng = Normal::new(seed);
        let g = Mat::<f64>::from_fn(n, l, |_, _| rng.sample());
        let omega = g.qr().compute_thin_Q();
        let mut y = Mat::<f64>::zeros(n, l);
        op.apply(omega.as_ref(), y.as_mut())?;
        if !super::max_abs(y.as_ref()).1 {
            return Err(Error::NonFinite {
                what: "operator product",
            });
        }
        let ynorm = y.norm_l2();
        if ynorm == 0.0 {
            return Ok(Self::identity(n));
        }
        let mut nu = (n as f64).sqrt() * f64::EPSILON * ynorm;
        for _attempt in 0..6 {
            let ynu = Mat::<f64>::from_fn(n, l, |i, j| y[(i, j)] + nu * omega[(i, j)]);
            let mut m = Mat::<f64>::zeros(l, l);
            gemm(
                m.as_mut(),
                Accum::Replace,
                omega.transpose(),
                ynu.as_ref(),
                1.0,
            );
            let msym = Mat::<f64>::from_fn(l, l, |i, j| 0.5 * (m[(i, j)] + m[(j, i)]));
            let Ok(llt) = msym.llt(Side::Lower) else {
                nu *= 10.0;
                continue;
            };
            let mut bt = ynu.transpose().to_owned();
            crate::threads::install(|par| {
                solve_lower_triangular_in_place(llt.L(), bt.as_mut(), par);
            });
            let b = bt.transpose().to_owned();
            let svd = b.thin_svd().map_err(|_| Error::NoConvergence)?;
            let sig = svd.S();
            let lam_all: Vec<f64> = (0..l).map(|i| (sig[i] * sig[i] - nu).max(0.0)).collect();
            let top = lam_all[0];
            let keep = lam_all
                .iter()
                .take_while(|x| **x > (100.0 * nu).max(1e-10 * top))
                .count();
            if keep == 0 {
                return Ok(Self::identity(n));
            }
            let u = svd.U().subcols(0, keep).to_owned();
            let lam = lam_all[..keep].to_vec();
            let mu = lam[keep - 1];
            let d = lam.iter().map(|x| ((2.0 * mu) / (x + mu)).sqrt()).collect();
            return Ok(NystromPreconditioner { u, lam, d, mu });
        }
        Err(Error::NoConvergence)
    }

    /// `P = I`.
    #[must_use]
    pub fn identity(n: usize) -> Self {
        NystromPreconditioner {
            u: Mat::zeros(n, 0),
            lam: Vec::new(),
            d: Vec::new(),
            mu: 0.0,
        }
    }

    /// Retained sketch rank.
    #[must_use]
    pub fn rank(&self) -> usize {
        self.lam.len()
    }

    /// `λ̂_1` (0 for the identity), an estimate from below of `‖A‖`.
    #[must_use]
    pub fn lambda_max(&self) -> f64 {
        self.lam.first().copied().unwrap_or(0.0)
    }

    /// The sketch eigenvalues `λ̂` (descending).
    #[must_use]
    pub fn eigenvalues(&self) -> &[f64] {
        &self.lam
    }

    /// The shift `μ = λ̂_ℓ`.
    #[must_use]
    pub fn shift(&self) -> f64 {
        self.mu
    }

    /// `‖P^{1/2}‖ = 1/d_1` (1 for the identity).
    #[must_use]
    pub fn sqrt_norm(&self) -> f64 {
        self.d.first().map_or(1.0, |d| 1.0 / d)
    }

    /// `out = x + U diag(g_i − 1) Uᵀ x` with `g = d^{power}` (`power = ±1, ±2`).
    fn apply_power(&self, x: MatRef<'_, f64>, mut out: MatMut<'_, f64>, power: i32) {
        out.copy_from(x);
        let l = self.rank();
        if l == 0 {
            return;
        }
        let mut h = Mat::<f64>::zeros(l, x.ncols());
        gemm(h.as_mut(), Accum::Replace, self.u.transpose(), x, 1.0);
        for i in 0..l {
            let g = self.d[i].powi(power) - 1.0;
            for j in 0..x.ncols() {
                h[(i, j)] *= g;
            }
        }
        gemm(out, Accum::Add, self.u.as_ref(), h.as_ref(), 1.0);
    }

    /// `out = P^{-1/2} x`.
    pub fn apply_inv_sqrt(&self, x: MatRef<'_, f64>, out: MatMut<'_, f64>) {
        self.apply_power(x, out, 1);
    }

    /// `out = P^{1/2} x`.
    pub fn apply_sqrt(&self, x: MatRef<'_, f64>, out: MatMut<'_, f64>) {
        self.apply_power(x, out, -1);
    }

    /// `out = P^{-1} x`.
    pub fn apply_inv(&self, x: MatRef<'_, f64>, out: MatMut<'_, f64>) {
        self.apply_power(x, out, 2);
    }
}
