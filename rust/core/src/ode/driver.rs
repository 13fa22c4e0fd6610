//! The step loop: step-size control, output at the requested times, the convergence,
//! stagnation and horizon checks, and the interrupt hook.

use super::dense::dense;
use super::loss::check_same_shape;
use super::tableau::{A, B, E};
use super::{Gradient, OdeOptions, OdeSolution, MAX_CONVERGE_TAU};
use crate::{Error, Result, Shape};
use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};

/// In convergence mode, integration fails when `max|dF/dτ|` has not improved by 1% over the
/// last half of the accepted steps, and at least this many: an explicit method on a stiff
/// flow keeps noise of the size of the local error tolerance in the fast modes, so rates
/// below `‖Θ‖·‖∇²L‖·(atol + rtol·|F|)` are unreachable. (A genuinely slow but steady
/// decay that stalls this long would need more than `max_steps` anyway.)
const STAGNATION_STEPS: usize = 10_000;

// Step-size control (scipy's RK45).
const SAFETY: f64 = 0.9;
const MIN_FACTOR: f64 = 0.2;
const MAX_FACTOR: f64 = 10.0;
/// `−1/(error estimator order + 1)`.
const ERROR_EXPONENT: f64 = -0.2;

/// The right-hand side: kernel, gradient and the state layout.
struct System<'a, G: Gradient + ?Sized> {
    theta: MatRef<'a, f64>,
    d: usize,
    r: usize,
    damping: Option<f64>,
    grad: &'a mut G,
    par: Par,
    n_evals: usize,
}

impl<G: Gradient + ?Sized> System<'_, G> {
    fn block(&self) -> usize {
        self.d * self.r
    }

    /// `dy = rhs(y)`.
    fn eval(&mut self, y: &[f64], dy: &mut [f64]) -> Result<()> {
        let (d, r, dr) = (self.d, self.r, self.block());
        self.n_evals += 1;
        let f = MatRef::from_row_major_slice(&y[..dr], d, r);
        let (df, rest) = dy.split_at_mut(dr);
        match self.damping {
            None => {
                // dS = G(F); dF = −Θ dS.
                let ds = &mut rest[..dr];
                self.grad
                    .grad(f, MatMut::from_row_major_slice_mut(ds, d, r))?;
                matmul(
                    MatMut::from_row_major_slice_mut(df, d, r),
                    Accum::Replace,
                    self.theta,
                    MatRef::from_row_major_slice(ds, d, r),
                    -1.0,
                    self.par,
                );
                crate::simd::clear_upper_vector_state();
            }
            Some(c) => {
                let (q, pp) = (&y[dr..2 * dr], &y[2 * dr..3 * dr]);
                let (dq, rest) = rest.split_at_mut(dr);
                let (dp, ds) = rest.split_at_mut(dr);
                // G(F) into dP; dQ = −Θ G − cQ; dP = G − cP; dF = Q; dS = P.
                self.grad
                    .grad(f, MatMut::from_row_major_slice_mut(dp, d, r))?;
                matmul(
                    MatMut::from_row_major_slice_mut(dq, d, r),
                    Accum::Replace,
                    self.theta,
                    MatRef::from_row_major_slice(dp, d, r),
                    -1.0,
                    self.par,
                );
                crate::simd::clear_upper_vector_state();
                for (a, b) in dq.iter_mut().zip(q) {
                    *a -= c * b;
                }
                for (a, b) in dp.iter_mut().zip(pp) {
                    *a -= c * b;
                }
                df.copy_from_slice(q);
                ds.copy_from_slice(pp);
            }
        }
        Ok(())
    }

    /// `max|dF/dτ|` (and `max|dQ/dτ|` with momentum) of a derivative `dy`.
    fn rate(&self, dy: &[f64]) -> f64 {
        let n = if self.damping.is_some() {
            2 * self.block()
        } else {
            self.block()
        };
        dy[..n].iter().fold(0.0f64, |m, v| m.max(v.abs()))
    }
}

/// RMS norm `sqrt(mean(v²))`.
fn rms(v: impl Iterator<Item = f64>, len: usize) -> f64 {
    if len == 0 {
        return 0.0;
    }
    (v.map(|x| x * x).sum::<f64>() / len as f64).sqrt()
}
/// Runs the integrator on validated inputs (see [`super::integrate_with_interrupt`]).
pub(super) fn solve<G: Gradient + ?Sized>(
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
    let (d, r) = (f0.nrows(), f0.ncols());
    let mut sys = System {
        theta,
        d,
        r,
        damping,
        grad,
        par,
        n_evals: 0,
    };
    Driver::new(&sys, f0, q0, times, converge_tol).run(&mut sys, opts, interrupt)
}

/// Accepted steps before the first reachability check of the last output time; later
/// checks follow at doubling step counts.
const PACE_FIRST_CHECK: usize = 256;

/// Steps still needed to reach `t_end` from `t` if the pace seen since the previous check
/// (from `t_prev` with step size `h_prev`, `window` accepted steps ago; step size `h` now)
/// continues. A step size that did not grow over the window (while the step count doubled)
/// is pinned, by stiffness or by the error control at the tolerance floor: then
/// `(t_end − t)/h`. (A step size that grows, however slowly, is not read as pinned: on a
/// cross-entropy flow it grows slowly while the logits are small, then by orders of
/// magnitude.) Otherwise `τ` is read as growing geometrically by the factor observed per
/// window (the optimistic reading of a relaxing flow), or linearly when that factor is
/// below 1.5. Each reading is optimistic unless the pace accelerates.
pub(super) fn steps_to_reach(
    t_prev: f64,
    t: f64,
    t_end: f64,
    window: usize,
    h_prev: f64,
    h: f64,
) -> f64 {
    let w = window as f64;
    if t >= t_end {
        return 0.0;
    }
    if !(t > 0.0 && t_prev > 0.0 && t > t_prev) {
        return f64::INFINITY;
    }
    if h > 0.0 && h_prev > 0.0 && h <= h_prev {
        return (t_end - t) / h;
    }
    let linear = w * (t_end - t) / (t - t_prev);
    let ratio = t / t_prev;
    if ratio >= 1.5 {
        let geometric = w * ((t_end / t).ln() / ratio.ln()).max(0.0);
        geometric.min(linear)
    } else {
        linear
    }
}

pub(super) fn check_inputs(
    theta: MatRef<'_, f64>,
    f0: MatRef<'_, f64>,
    q0: Option<MatRef<'_, f64>>,
    damping: Option<f64>,
    opts: &OdeOptions,
) -> Result<()> {
    if theta.nrows() != theta.ncols() {
        return Err(Error::NotSquare {
            what: "kernel",
            nrows: theta.nrows(),
            ncols: theta.ncols(),
        });
    }
    if f0.nrows() != theta.nrows() {
        return Err(Error::DimensionMismatch {
            what: "initial outputs rows",
            expected: Shape::Rows(theta.nrows()),
            got: Shape::Matrix(f0.nrows(), f0.ncols()),
        });
    }
    if !theta.col_iter().all(|c| c.iter().all(|v| v.is_finite())) {
        return Err(Error::NonFinite { what: "kernel" });
    }
    if let Some(q) = q0 {
        if damping.is_none() {
            return Err(Error::InvalidArgument(
                "initial velocities q0 need momentum (a damping)".into(),
            ));
        }
        check_same_shape("initial velocities", q, f0)?;
    }
    if let Some(c) = damping {
        if !(c >= 0.0 && c.is_finite()) {
            return Err(Error::InvalidArgument(format!(
                "damping must be >= 0 and finite, got {c}"
            )));
        }
    }
    if !(opts.rtol >= 0.0 && opts.atol >= 0.0 && opts.rtol.is_finite() && opts.atol.is_finite())
        || opts.rtol + opts.atol <= 0.0
    {
        return Err(Error::InvalidArgument(format!(
            "rtol and atol must be >= 0, finite and not both 0, got rtol={} atol={}",
            opts.rtol, opts.atol
        )));
    }
    if let Some(h) = opts.first_step {
        if !(h > 0.0 && h.is_finite()) {
            return Err(Error::InvalidArgument(format!(
                "first_step must be > 0 and finite, got {h}"
            )));
        }
    }
    Ok(())
}

/// Work buffers of the solver (allocated once) and the output bookkeeping.
struct Driver<'t> {
    y: Vec<f64>,
    y_new: Vec<f64>,
    tmp: Vec<f64>,
    k: [Vec<f64>; 7],
    times: &'t [f64],
    converge_tol: Option<f64>,
    /// Next output time to fill.
    next_out: usize,
    /// Convergence state found (or not requested).
    converged: bool,
    sol: OdeSolution,
}

impl<'t> Driver<'t> {
    fn new<G: Gradient + ?Sized>(
        sys: &System<'_, G>,
        f0: MatRef<'_, f64>,
        q0: Option<MatRef<'_, f64>>,
        times: &'t [f64],
        converge_tol: Option<f64>,
    ) -> Self {
        let (d, r, dr) = (sys.d, sys.r, sys.block());
        let nb = if sys.damping.is_some() { 4 } else { 2 };
        let len = nb * dr;
        let n_out = times.len() + usize::from(converge_tol.is_some());
        let mut y = vec![0.0; len];
        // Initial state (F, [Q, P,] S), blocks row-major.
        for i in 0..d {
            for j in 0..r {
                y[i * r + j] = f0[(i, j)];
                if let Some(q) = q0 {
                    y[dr + i * r + j] = q[(i, j)];
                }
            }
        }
        Driver {
            y,
            y_new: vec![0.0; len],
            tmp: vec![0.0; len],
            k: std::array::from_fn(|_| vec![0.0; len]),
            times,
            converge_tol,
            next_out: 0,
            converged: converge_tol.is_none(),
            sol: OdeSolution {
                f: vec![0.0; n_out * dr],
                s: vec![0.0; n_out * dr],
                q: sys.damping.map(|_| vec![0.0; n_out * dr]),
                p: sys.damping.map(|_| vec![0.0; n_out * dr]),
                tau_end: 0.0,
                n_steps: 0,
                n_rejected: 0,
                n_evals: 0,
            },
        }
    }

    fn done(&self) -> bool {
        self.converged && self.next_out == self.times.len()
    }

    /// Records convergence at time `t` if the derivative `k` is below the tolerance.
    fn check_converged<G: Gradient + ?Sized>(
        &mut self,
        sys: &System<'_, G>,
        t: f64,
        k: usize,
        state_new: bool,
    ) {
        if let (false, Some(tol)) = (self.converged, self.converge_tol) {
            if sys.rate(&self.k[k]) <= tol {
                let dr = sys.block();
                let slot = self.times.len();
                let y = if state_new { &self.y_new } else { &self.y };
                store(&mut self.sol, slot, y, dr);
                self.sol.tau_end = t;
                self.converged = true;
            }
        }
    }

    #[allow(clippy::too_many_lines)]
    fn run<G: Gradient + ?Sized>(
        mut self,
        sys: &mut System<'_, G>,
        opts: &OdeOptions,
        interrupt: &mut dyn FnMut() -> Result<()>,
    ) -> Result<OdeSolution> {
        let dr = sys.block();
        if !self.y.iter().all(|v| v.is_finite()) {
            return Err(Error::NonFinite {
                what: "initial state",
            });
        }
        // Outputs at τ = 0 are the initial state, exactly.
        while self.next_out < self.times.len() && self.times[self.next_out] == 0.0 {
            store(&mut self.sol, self.next_out, &self.y, dr);
            self.next_out += 1;
        }
        if dr == 0 {
            // Nothing to integrate: every output is the (empty) initial state.
            self.sol.tau_end = self.times.last().copied().unwrap_or(0.0);
            return Ok(self.sol);
        }
        if self.done() {
            self.sol.tau_end = self.times.last().copied().unwrap_or(0.0);
            return Ok(self.sol);
        }
        sys.eval(&self.y, &mut self.k[0])?;
        self.check_converged(sys, 0.0, 0, false);
        let last_time = self.times.last().copied().unwrap_or(0.0);
        if self.done() {
            self.sol.n_evals = sys.n_evals;
            return Ok(self.sol);
        }
        let bound = |converged: bool| if converged { last_time } else { f64::INFINITY };
        let (rtol, atol) = (opts.rtol, opts.atol);
        let mut h_abs = match opts.first_step {
            Some(h) => h.min(bound(self.converged)),
            None => self.initial_step(sys, bound(self.converged), rtol, atol)?,
        };
        let mut t = 0.0f64;
        let mut attempts = 0usize;
        // Convergence mode: best rate so far and the step that last improved it by 1%.
        let (mut best_rate, mut best_step) = (f64::INFINITY, 0usize);
        // Reachability of the last output time: (accepted steps, τ, step size) at the last
        // check.
        let (mut pace_step, mut pace_t, mut pace_h) = (0usize, 0.0f64, 0.0f64);
        let mut next_pace_check = PACE_FIRST_CHECK;
        loop {
            // One accepted step from t.
            let t_bound = bound(self.converged);
            let min_step = 10.0 * (next_up(t) - t);
            h_abs = h_abs.max(min_step);
            let mut rejected = false;
            let (h, t_new) = loop {
                if h_abs < min_step || !h_abs.is_finite() {
                    return Err(Error::IntegrationFailed(format!(
                        "step size became too small at tau = {t:e} (non-finite or stiff derivative?)"
                    )));
                }
                interrupt()?;
                attempts += 1;
                if attempts > opts.max_steps {
                    return Err(Error::IntegrationFailed(format!(
                        "more than max_steps = {} step attempts (reached tau = {t:e})",
                        opts.max_steps
                    )));
                }
                let t_new = (t + h_abs).min(t_bound);
                let h = t_new - t;
                h_abs = h;
                self.rk_step(sys, h)?;
                let err = self.error_norm(h, rtol, atol);
                if err < 1.0 {
                    let mut factor = if err == 0.0 {
                        MAX_FACTOR
                    } else {
                        MAX_FACTOR.min(SAFETY * err.powf(ERROR_EXPONENT))
                    };
                    if rejected {
                        factor = factor.min(1.0);
                    }
                    h_abs *= factor;
                    break (h, t_new);
                }
                // NaN error norms (overflowing trial stages) are rejections too.
                let factor = if err.is_nan() {
                    MIN_FACTOR
                } else {
                    MIN_FACTOR.max(SAFETY * err.powf(ERROR_EXPONENT))
                };
                h_abs *= factor;
                rejected = true;
                self.sol.n_rejected += 1;
            };
            self.sol.n_steps += 1;
            while self.next_out < self.times.len() && self.times[self.next_out] <= t_new {
                let tj = self.times[self.next_out];
                if tj == t_new {
                    store(&mut self.sol, self.next_out, &self.y_new, dr);
                } else {
                    dense(&self.y, &self.k, h, (tj - t) / h, &mut self.tmp);
                    store(&mut self.sol, self.next_out, &self.tmp, dr);
                }
                self.next_out += 1;
            }
            if !self.converged {
                self.check_converged(sys, t_new, 6, true);
            }
            if !self.converged {
                let tol = self.converge_tol.unwrap_or(0.0);
                let rate = sys.rate(&self.k[6]);
                if t_new > MAX_CONVERGE_TAU {
                    return Err(Error::IntegrationFailed(format!(
                        "no convergence to max|df/dtau| <= {tol:e} by tau = {MAX_CONVERGE_TAU:e} \
                         (max|df/dtau| = {rate:e})"
                    )));
                }
                if rate < 0.99 * best_rate {
                    best_rate = rate;
                    best_step = self.sol.n_steps;
                }
                if self.sol.n_steps - best_step > STAGNATION_STEPS.max(self.sol.n_steps / 2) {
                    return Err(Error::IntegrationFailed(format!(
                        "max|df/dtau| stagnates near {best_rate:e} > converge_tol = {tol:e} at tau = \
                         {t_new:e}: this is the integrator's noise floor (about |kernel| x |loss \
                         Hessian| x (atol + rtol |f|)); use a larger converge_tol or smaller rtol/atol"
                    )));
                }
            }
            if self.converged && self.sol.n_steps >= next_pace_check && t_new < last_time {
                // A horizon the step budget cannot reach fails now, not after max_steps.
                let window = self.sol.n_steps - pace_step;
                let more = steps_to_reach(pace_t, t_new, last_time, window, pace_h, h_abs);
                if pace_t > 0.0 && attempts as f64 + more > 2.0 * opts.max_steps as f64 {
                    return Err(Error::IntegrationFailed(format!(
                        "tau = {last_time:e} is out of reach: after {} steps the integrator is at \
                         tau = {t_new:e} with step size {h_abs:.3e}, and at that pace it needs about \
                         {more:.1e} more steps (max_steps = {}): the step size is limited (the flow \
                         is stiff, about 3.3 / (|kernel| x |loss Hessian|), or at the error \
                         tolerance's limit). Ask for a smaller t, or use loss=\"mse\", whose \
                         closed form has no step limit",
                        self.sol.n_steps, opts.max_steps
                    )));
                }
                pace_step = self.sol.n_steps;
                pace_t = t_new;
                pace_h = h_abs;
                next_pace_check = 2 * self.sol.n_steps;
            }
            t = t_new;
            std::mem::swap(&mut self.y, &mut self.y_new);
            self.k.swap(0, 6);
            if self.done() {
                if self.converge_tol.is_none() {
                    self.sol.tau_end = t;
                }
                self.sol.n_evals = sys.n_evals;
                return Ok(self.sol);
            }
        }
    }

    /// One Dormand–Prince step of size `h` from `y` (with `k[0] = f(y)`): stages
    /// `k[1..6]`, `y_new` and `k[6] = f(y_new)`.
    fn rk_step<G: Gradient + ?Sized>(&mut self, sys: &mut System<'_, G>, h: f64) -> Result<()> {
        for s in 1..6 {
            let a = &A[s];
            for (i, out) in self.tmp.iter_mut().enumerate() {
                let mut acc = 0.0;
                for (j, kj) in self.k.iter().enumerate().take(s) {
                    acc += a[j] * kj[i];
                }
                *out = self.y[i] + h * acc;
            }
            sys.eval(&self.tmp, &mut self.k[s])?;
        }
        for (i, out) in self.y_new.iter_mut().enumerate() {
            let mut acc = 0.0;
            for (j, kj) in self.k.iter().enumerate().take(6) {
                acc += B[j] * kj[i];
            }
            *out = self.y[i] + h * acc;
        }
        sys.eval(&self.y_new, &mut self.k[6])
    }

    /// scipy's error norm: RMS of `h·Σ E_j k_j / (atol + rtol·max(|y|, |y_new|))`.
    fn error_norm(&self, h: f64, rtol: f64, atol: f64) -> f64 {
        let len = self.y.len();
        rms(
            (0..len).map(|i| {
                let mut e = 0.0;
                for (j, kj) in self.k.iter().enumerate() {
                    e += E[j] * kj[i];
                }
                let scale = atol + rtol * self.y[i].abs().max(self.y_new[i].abs());
                h * e / scale
            }),
            len,
        )
    }

    /// scipy's `select_initial_step` (Hairer, Nørsett & Wanner II.4) for error order 4.
    fn initial_step<G: Gradient + ?Sized>(
        &mut self,
        sys: &mut System<'_, G>,
        t_bound: f64,
        rtol: f64,
        atol: f64,
    ) -> Result<f64> {
        let len = self.y.len();
        let scale = |v: f64| atol + v.abs() * rtol;
        let d0 = rms(self.y.iter().map(|v| v / scale(*v)), len);
        let d1 = rms(
            self.y.iter().zip(&self.k[0]).map(|(v, f)| f / scale(*v)),
            len,
        );
        let mut h0 = if d0 < 1e-5 || d1 < 1e-5 {
            1e-6
        } else {
            0.01 * d0 / d1
        };
        h0 = h0.min(t_bound);
        for i in 0..len {
            self.tmp[i] = self.y[i] + h0 * self.k[0][i];
        }
        sys.eval(&self.tmp, &mut self.k[1])?;
        let d2 = rms(
            (0..len).map(|i| (self.k[1][i] - self.k[0][i]) / scale(self.y[i])),
            len,
        ) / h0;
        let h1 = if d1 <= 1e-15 && d2 <= 1e-15 {
            (h0 * 1e-3).max(1e-6)
        } else {
            (0.01 / d1.max(d2)).powf(0.2)
        };
        Ok((100.0 * h0).min(h1).min(t_bound))
    }
}

/// The smallest double above `t ≥ 0`.
fn next_up(t: f64) -> f64 {
    f64::from_bits(t.to_bits() + 1)
}

/// Copies the blocks of state `y` into output slot `j`.
fn store(sol: &mut OdeSolution, j: usize, y: &[f64], dr: usize) {
    let dst = j * dr..(j + 1) * dr;
    sol.f[dst.clone()].copy_from_slice(&y[..dr]);
    match (&mut sol.q, &mut sol.p) {
        (Some(q), Some(p)) => {
            q[dst.clone()].copy_from_slice(&y[dr..2 * dr]);
            p[dst.clone()].copy_from_slice(&y[2 * dr..3 * dr]);
            sol.s[dst].copy_from_slice(&y[3 * dr..4 * dr]);
        }
        _ => sol.s[dst].copy_from_slice(&y[dr..2 * dr]),
    }
}
