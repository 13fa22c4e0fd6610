//! Function-space gradient flow of an arbitrary loss by adaptive Dormand–Prince 5(4)
//! (docs/numerics.md §9, §7).
//!
//! Flattened view (§2.4): train outputs `F ∈ R^{D×R}`, train kernel `Θ ∈ R^{D×D}`,
//! `G(F) = ∇_F L` (D×R). Only the train system is integrated; test outputs are linear in
//! accumulated gradients, so the caller reconstructs them from extra state blocks:
//!
//! * gradient flow (`τ = ηt`): state `(F, S)`,
//!   `F' = −Θ G(F)`, `S' = G(F)`, `S(0) = 0`; then `f_test(τ) = g₀ − Θ_td S(τ)`.
//! * heavy-ball momentum (`τ = √η t`, damping `c = (1 − m)/√η`): state `(F, Q, P, S)`,
//!   `F' = Q`, `Q' = −Θ G(F) − c Q`, `P' = G(F) − c P`, `S' = P`, `P(0) = S(0) = 0`; then
//!   `q_test(τ) = e^{−cτ} q_test₀ − Θ_td P(τ)` and
//!   `f_test(τ) = g₀ + q_test₀ (1 − e^{−cτ})/c − Θ_td S(τ)`.
//!
//! The integrator is scipy's `RK45` (error norm, step control, initial step selection),
//! with outputs from the 4th-order dense-output interpolant of each accepted step rather
//! than steps clipped to every output time. Every block is stored row-major `D×R` in one
//! contiguous state vector; the step loop allocates nothing (the gradient may).
//!
//! Layout: `loss` (the gradient trait and the built-in losses), `tableau` (the
//! Dormand–Prince coefficients), `driver` (step control, the stiffness and horizon checks,
//! the interrupt hook), `dense` (the dense-output interpolant).

mod dense;
mod driver;
mod loss;
mod tableau;
#[cfg(test)]
mod tests;

pub use loss::{CrossEntropy, Gradient, Mse};

use crate::{Error, Result};
use driver::check_inputs;
use faer::{MatRef, Par};

/// Tolerances and limits of the integrator.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OdeOptions {
    /// Relative tolerance (default 1.4e-8, the reference's).
    pub rtol: f64,
    /// Absolute tolerance (default 1.4e-8).
    pub atol: f64,
    /// Most step attempts (accepted and rejected) before giving up.
    pub max_steps: usize,
    /// First step size; `None`: chosen as scipy's `select_initial_step` does.
    pub first_step: Option<f64>,
}

impl Default for OdeOptions {
    fn default() -> Self {
        OdeOptions {
            rtol: 1.4e-8,
            atol: 1.4e-8,
            max_steps: 10_000_000,
            first_step: None,
        }
    }
}

/// States at the output times, each block `(T, D, R)` in C order.
#[derive(Debug, Clone, PartialEq)]
pub struct OdeSolution {
    /// Train outputs `F`.
    pub f: Vec<f64>,
    /// Accumulated gradient `S` (flow) or accumulated `P` (momentum).
    pub s: Vec<f64>,
    /// Train velocities `Q` (momentum only).
    pub q: Option<Vec<f64>>,
    /// Damped accumulated gradient `P` (momentum only).
    pub p: Option<Vec<f64>>,
    /// Last time reached: the last output time, or where convergence was detected.
    pub tau_end: f64,
    /// Accepted steps.
    pub n_steps: usize,
    /// Rejected step attempts.
    pub n_rejected: usize,
    /// Gradient evaluations.
    pub n_evals: usize,
}

/// In convergence mode, integration fails beyond this time.
pub const MAX_CONVERGE_TAU: f64 = 1e12;
/// Integrates the train system and returns its states at the sorted (non-decreasing)
/// output times `times` (each `≥ 0` and finite; `τ = 0` gives the initial state exactly),
/// interpolated by the dense output.
///
/// With `converge_tol = Some(tol)` one more state is appended (slot `times.len()`): the
/// first accepted state where `max|dF/dτ| ≤ tol` (with momentum, also `max|dQ/dτ| ≤ tol`),
/// the `t = ∞` answer; `tau_end` is its time. That mode fails with
/// [`Error::IntegrationFailed`] when `τ` passes [`MAX_CONVERGE_TAU`] first, or when the rate
/// stagnates above `tol`: the integrator's noise floor is about
/// `‖Θ‖·‖∇²L‖·(atol + rtol·|F|)`, so choose `tol` above it or tighten `rtol`/`atol`.
/// Without it, `tau_end` is the last output time.
///
/// `damping = None`: gradient flow, state `(F, S)`; `damping = Some(c)`: heavy ball with
/// `Q(0) = q0` (zero when `None`), state `(F, Q, P, S)`. `par` is used for `Θ·G`.
pub fn integrate<G: Gradient + ?Sized>(
    theta: MatRef<'_, f64>,
    f0: MatRef<'_, f64>,
    q0: Option<MatRef<'_, f64>>,
    damping: Option<f64>,
    grad: &mut G,
    times: &[f64],
    converge_tol: Option<f64>,
    opts: &OdeOptions,
    par: Par,
) -> Result<OdeSolution> {
    integrate_with_interrupt(
        theta,
        f0,
        q0,
        damping,
        grad,
        times,
        converge_tol,
        opts,
        par,
        &mut || Ok(()),
    )
}

/// [`integrate`] with a cancellation hook: `interrupt()` is called before every step
/// attempt, and an error it returns stops the integration and is returned unchanged (the
/// Python bindings use it to deliver Ctrl-C).
pub fn integrate_with_interrupt<G: Gradient + ?Sized>(
    theta: MatRef<'_, f64>,
    f0: MatRef<'_, f64>,
    q0: Option<MatRef<'_, f64>>,
    damping: Option<f64>,
    grad: &mut G,
    times: &[f64],
    converge_tol: Option<f64>,
    opts: &OdeOptions,
    par: Par,
    interrupt: &mut dyn FnMut() -> Result<()>,
) -> Result<OdeSolution> {
    if let Some(t) = times.iter().find(|t| !(t.is_finite() && **t >= 0.0)) {
        return Err(Error::InvalidArgument(format!(
            "ODE output times must be finite and >= 0, got {t}"
        )));
    }
    if times.windows(2).any(|w| w[1] < w[0]) {
        return Err(Error::InvalidArgument(
            "ODE output times must be sorted in non-decreasing order".into(),
        ));
    }
    if let Some(tol) = converge_tol {
        if !(tol > 0.0 && tol.is_finite()) {
            return Err(Error::InvalidArgument(format!(
                "converge_tol must be > 0 and finite, got {tol}"
            )));
        }
    }
    check_inputs(theta, f0, q0, damping, opts)?;
    driver::solve(
        theta,
        f0,
        q0,
        damping,
        grad,
        times,
        converge_tol,
        opts,
        par,
        interrupt,
    )
}
