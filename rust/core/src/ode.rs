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

use crate::{Error, Result};
use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatMut, MatRef, Par};

/// `∇_F L(F)` of a loss on the train outputs (flattened `D×R`).
pub trait Gradient {
    /// Writes `∇_F L(f)` into `out` (same shape as `f`).
    fn grad(&mut self, f: MatRef<'_, f64>, out: MatMut<'_, f64>) -> Result<()>;
}

impl<G: Gradient + ?Sized> Gradient for &mut G {
    fn grad(&mut self, f: MatRef<'_, f64>, out: MatMut<'_, f64>) -> Result<()> {
        (**self).grad(f, out)
    }
}

fn check_same_shape(what: &'static str, a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> Result<()> {
    if a.nrows() != b.nrows() {
        return Err(Error::DimensionMismatch {
            what,
            expected: b.nrows(),
            got: a.nrows(),
        });
    }
    if a.ncols() != b.ncols() {
        return Err(Error::DimensionMismatch {
            what,
            expected: b.ncols(),
            got: a.ncols(),
        });
    }
    Ok(())
}

/// Mean squared error `L = ‖F − Y‖²/(2n)`: `∇L = (F − Y)/n`.
#[derive(Debug, Clone)]
pub struct Mse {
    pub y: Mat<f64>,
    pub n: f64,
}

impl Gradient for Mse {
    fn grad(&mut self, f: MatRef<'_, f64>, mut out: MatMut<'_, f64>) -> Result<()> {
        check_same_shape("loss gradient input", f, self.y.as_ref())?;
        check_same_shape("loss gradient output", out.as_ref(), self.y.as_ref())?;
        let inv_n = 1.0 / self.n;
        for j in 0..f.ncols() {
            for i in 0..f.nrows() {
                out[(i, j)] = (f[(i, j)] - self.y[(i, j)]) * inv_n;
            }
        }
        Ok(())
    }
}

/// Cross-entropy `L = −(1/n) Σ y·log_softmax(f)`, the softmax taken over groups of
/// `classes` consecutive entries of the row-major flattened `F` (the last axis of the
/// user's targets): `∇L = (softmax(f)·Σ_c y_c − y)/n`.
#[derive(Debug, Clone)]
pub struct CrossEntropy {
    pub y: Mat<f64>,
    pub n: f64,
    pub classes: usize,
}

impl Gradient for CrossEntropy {
    fn grad(&mut self, f: MatRef<'_, f64>, mut out: MatMut<'_, f64>) -> Result<()> {
        check_same_shape("loss gradient input", f, self.y.as_ref())?;
        check_same_shape("loss gradient output", out.as_ref(), self.y.as_ref())?;
        let (d, r, k) = (f.nrows(), f.ncols(), self.classes);
        let total = d * r;
        if k == 0 || total % k != 0 {
            return Err(Error::InvalidArgument(format!(
                "cross-entropy: {total} outputs do not split into groups of {k} classes"
            )));
        }
        let inv_n = 1.0 / self.n;
        let y = self.y.as_ref();
        // Row-major position (i, j) of flattened index `start`, advanced one entry at a time.
        let next = |(i, j): (usize, usize)| if j + 1 == r { (i + 1, 0) } else { (i, j + 1) };
        for g in 0..total / k {
            let start = (g * k / r, g * k % r);
            let mut pos = start;
            let mut m = f64::NEG_INFINITY;
            for _ in 0..k {
                m = m.max(f[pos]);
                pos = next(pos);
            }
            let (mut z, mut ysum) = (0.0, 0.0);
            pos = start;
            for _ in 0..k {
                let e = (f[pos] - m).exp();
                out[pos] = e;
                z += e;
                ysum += y[pos];
                pos = next(pos);
            }
            let scale = ysum / z;
            pos = start;
            for _ in 0..k {
                out[pos] = (out[pos] * scale - y[pos]) * inv_n;
                pos = next(pos);
            }
        }
        Ok(())
    }
}

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

/// In convergence mode, integration fails when `max|dF/dτ|` has not improved by 1% over the
/// last half of the accepted steps, and at least this many: an explicit method on a stiff
/// flow keeps noise of the size of the local error tolerance in the fast modes, so rates
/// below `‖Θ‖·‖∇²L‖·(atol + rtol·|F|)` are unreachable. (A genuinely slow but steady
/// decay that stalls this long would need more than `max_steps` anyway.)
const STAGNATION_STEPS: usize = 10_000;

// Dormand–Prince 5(4) tableau, error weights and dense-output polynomial (scipy's RK45).
// The system is autonomous, so the nodes c_i are not needed.
const A: [[f64; 5]; 6] = [
    [0.0, 0.0, 0.0, 0.0, 0.0],
    [1.0 / 5.0, 0.0, 0.0, 0.0, 0.0],
    [3.0 / 40.0, 9.0 / 40.0, 0.0, 0.0, 0.0],
    [44.0 / 45.0, -56.0 / 15.0, 32.0 / 9.0, 0.0, 0.0],
    [
        19372.0 / 6561.0,
        -25360.0 / 2187.0,
        64448.0 / 6561.0,
        -212.0 / 729.0,
        0.0,
    ],
    [
        9017.0 / 3168.0,
        -355.0 / 33.0,
        46732.0 / 5247.0,
        49.0 / 176.0,
        -5103.0 / 18656.0,
    ],
];
const B: [f64; 6] = [
    35.0 / 384.0,
    0.0,
    500.0 / 1113.0,
    125.0 / 192.0,
    -2187.0 / 6784.0,
    11.0 / 84.0,
];
const E: [f64; 7] = [
    -71.0 / 57600.0,
    0.0,
    71.0 / 16695.0,
    -71.0 / 1920.0,
    17253.0 / 339_200.0,
    -22.0 / 525.0,
    1.0 / 40.0,
];
const P: [[f64; 4]; 7] = [
    [
        1.0,
        -8_048_581_381.0 / 2_820_520_608.0,
        8_663_915_743.0 / 2_820_520_608.0,
        -12_715_105_075.0 / 11_282_082_432.0,
    ],
    [0.0, 0.0, 0.0, 0.0],
    [
        0.0,
        131_558_114_200.0 / 32_700_410_799.0,
        -68_118_460_800.0 / 10_900_136_933.0,
        87_487_479_700.0 / 32_700_410_799.0,
    ],
    [
        0.0,
        -1_754_552_775.0 / 470_086_768.0,
        14_199_869_525.0 / 1_410_260_304.0,
        -10_690_763_975.0 / 1_880_347_072.0,
    ],
    [
        0.0,
        127_303_824_393.0 / 49_829_197_408.0,
        -318_862_633_887.0 / 49_829_197_408.0,
        701_980_252_875.0 / 199_316_789_632.0,
    ],
    [
        0.0,
        -282_668_133.0 / 205_662_961.0,
        2_019_193_451.0 / 616_988_883.0,
        -1_453_857_185.0 / 822_651_844.0,
    ],
    [
        0.0,
        40_617_522.0 / 29_380_423.0,
        -110_615_467.0 / 29_380_423.0,
        69_997_945.0 / 29_380_423.0,
    ],
];
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
fn steps_to_reach(t_prev: f64, t: f64, t_end: f64, window: usize, h_prev: f64, h: f64) -> f64 {
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

fn check_inputs(
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
            expected: theta.nrows(),
            got: f0.nrows(),
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

/// The 4th-order dense output at `t + x·h` (`0 ≤ x ≤ 1`) of the last step:
/// `y + h Σ_s b_s(x) k_s`, `b_s(x) = Σ_q P[s][q] x^{q+1}`.
fn dense(y: &[f64], k: &[Vec<f64>; 7], h: f64, x: f64, out: &mut [f64]) {
    let mut b = [0.0; 7];
    for (s, bs) in b.iter_mut().enumerate() {
        let mut xp = x;
        for q in 0..4 {
            *bs += P[s][q] * xp;
            xp *= x;
        }
        *bs *= h;
    }
    for (i, o) in out.iter_mut().enumerate() {
        let mut acc = 0.0;
        for (s, ks) in k.iter().enumerate() {
            acc += b[s] * ks[i];
        }
        *o = y[i] + acc;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spectral::{sym_eigh, tests::with_spectrum};

    /// Max abs difference over max abs of the reference.
    fn rel_err(got: &[f64], want: &[f64]) -> f64 {
        let m = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        got.iter()
            .zip(want)
            .fold(0.0f64, |e, (a, b)| e.max((a - b).abs()))
            / m
    }

    fn problem(d: usize, r: usize) -> (Mat<f64>, Mat<f64>, Mat<f64>) {
        let lams: Vec<f64> = (0..d).map(|i| 0.2 + 0.8 * i as f64).collect();
        let theta = with_spectrum(&lams);
        let f0 = Mat::<f64>::from_fn(d, r, |i, j| 0.3 * ((i * r + j) as f64 * 0.7).sin());
        let y = Mat::<f64>::from_fn(d, r, |i, j| ((i + 2 * j) as f64 * 1.3).cos());
        (theta, f0, y)
    }

    /// `V diag(fac(λ_i)) Vᵀ r` for each output time, flattened `(T, D, R)`.
    fn modal(
        theta: &Mat<f64>,
        r0: &Mat<f64>,
        times: &[f64],
        fac: impl Fn(f64, f64) -> f64,
    ) -> Vec<f64> {
        let d = theta.nrows();
        let mut lam = vec![0.0; d];
        let mut v = Mat::<f64>::zeros(d, d);
        sym_eigh(theta.as_ref(), 0.0, &mut lam, v.as_mut(), Par::Seq).unwrap();
        let z = v.transpose() * r0;
        let mut out = Vec::new();
        for &t in times {
            let scaled = Mat::<f64>::from_fn(d, r0.ncols(), |i, j| fac(lam[i], t) * z[(i, j)]);
            let m = &v * &scaled;
            for i in 0..d {
                for j in 0..r0.ncols() {
                    out.push(m[(i, j)]);
                }
            }
        }
        out
    }

    fn tile(m: &Mat<f64>, nt: usize) -> Vec<f64> {
        let mut out = Vec::new();
        for _ in 0..nt {
            for i in 0..m.nrows() {
                for j in 0..m.ncols() {
                    out.push(m[(i, j)]);
                }
            }
        }
        out
    }

    #[test]
    fn mse_flow_matches_closed_form() {
        let (d, r) = (12, 3);
        let (theta, f0, y) = problem(d, r);
        let n = (d * r) as f64;
        let times = [0.0, 0.0, 1.0, 10.0, 10.0, 55.0, 300.0, 1000.0];
        let mut loss = Mse { y: y.clone(), n };
        for par in [Par::Seq, Par::rayon(2)] {
            let sol = integrate(
                theta.as_ref(),
                f0.as_ref(),
                None,
                None,
                &mut loss,
                &times,
                None,
                &OdeOptions::default(),
                par,
            )
            .unwrap();
            let r0 = &f0 - &y;
            // F = Y + V e^{−λτ/n} Vᵀ r₀;  S = V ((1 − e^{−λτ/n})/λ) Vᵀ r₀
            let mut want_f = modal(&theta, &r0, &times, |l, t| (-l * t / n).exp());
            for (w, yv) in want_f.iter_mut().zip(tile(&y, times.len())) {
                *w += yv;
            }
            let want_s = modal(&theta, &r0, &times, |l, t| -(-l * t / n).exp_m1() / l);
            let (ef, es) = (rel_err(&sol.f, &want_f), rel_err(&sol.s, &want_s));
            eprintln!("flow: F {ef:.2e} S {es:.2e}, {} steps", sol.n_steps);
            assert!(ef < 1e-6 && es < 1e-6, "F {ef:e} S {es:e}");
            // τ = 0 is exact
            assert_eq!(&sol.f[..d * r], &tile(&f0, 1)[..]);
            assert!(sol.s[..2 * d * r].iter().all(|v| *v == 0.0));
            assert_eq!(sol.tau_end, 1000.0);
            assert!(sol.n_steps > 10 && sol.q.is_none());
        }
    }

    #[test]
    fn momentum_mse_matches_closed_form() {
        let (d, r) = (10, 2);
        let (theta, f0, y) = problem(d, r);
        let n = (d * r) as f64;
        let times = [0.0, 0.3, 2.0, 17.0, 60.0, 150.0];
        for &c in &[0.05, 0.6, 3.0] {
            let mut loss = Mse { y: y.clone(), n };
            let sol = integrate(
                theta.as_ref(),
                f0.as_ref(),
                None,
                Some(c),
                &mut loss,
                &times,
                None,
                &OdeOptions::default(),
                Par::Seq,
            )
            .unwrap();
            let r0 = &f0 - &y;
            // F = F₀ + V ((h − 1) ⊙ z);  S = V ((1 − h)/λ ⊙ z)  (from Θ S = F₀ − F)
            let mut want_f = modal(&theta, &r0, &times, |l, t| {
                crate::momentum::factors(l, l / n, c, t).0
            });
            for (w, fv) in want_f.iter_mut().zip(tile(&f0, times.len())) {
                *w += fv;
            }
            let want_s = modal(&theta, &r0, &times, |l, t| {
                crate::momentum::factors(l, l / n, c, t).1
            });
            let (ef, es) = (rel_err(&sol.f, &want_f), rel_err(&sol.s, &want_s));
            eprintln!(
                "momentum c {c}: F {ef:.2e} S {es:.2e}, {} steps",
                sol.n_steps
            );
            assert!(ef < 1e-6 && es < 1e-6, "c {c}: F {ef:e} S {es:e}");
            assert!(sol.q.is_some() && sol.p.is_some());
        }
    }

    fn ce_loss(f: &Mat<f64>, y: &Mat<f64>, n: f64, k: usize) -> f64 {
        let r = f.ncols();
        let flat = |m: &Mat<f64>, idx: usize| m[(idx / r, idx % r)];
        let total = f.nrows() * r;
        let mut l = 0.0;
        for g in 0..total / k {
            let idx: Vec<usize> = (g * k..(g + 1) * k).collect();
            let m = idx
                .iter()
                .map(|&i| flat(f, i))
                .fold(f64::NEG_INFINITY, f64::max);
            let lse = m + idx
                .iter()
                .map(|&i| (flat(f, i) - m).exp())
                .sum::<f64>()
                .ln();
            l -= idx
                .iter()
                .map(|&i| flat(y, i) * (flat(f, i) - lse))
                .sum::<f64>();
        }
        l / n
    }

    #[test]
    fn cross_entropy_gradient_matches_finite_differences() {
        for &(d, r, k) in &[(6, 4, 4), (12, 1, 3), (5, 6, 3), (6, 2, 4)] {
            let f = Mat::<f64>::from_fn(d, r, |i, j| 2.0 * ((i * 31 + j * 7) as f64 * 0.37).sin());
            // soft labels whose groups do not sum to one
            let y = Mat::<f64>::from_fn(d, r, |i, j| 0.5 + 0.5 * ((i * 5 + j * 3) as f64).cos());
            let n = (d * r) as f64 * 0.7;
            let mut ce = CrossEntropy {
                y: y.clone(),
                n,
                classes: k,
            };
            let mut g = Mat::<f64>::zeros(d, r);
            ce.grad(f.as_ref(), g.as_mut()).unwrap();
            let eps = 1e-5;
            for i in 0..d {
                for j in 0..r {
                    let mut fp = f.clone();
                    fp[(i, j)] += eps;
                    let mut fm = f.clone();
                    fm[(i, j)] -= eps;
                    let fd = (ce_loss(&fp, &y, n, k) - ce_loss(&fm, &y, n, k)) / (2.0 * eps);
                    assert!(
                        (fd - g[(i, j)]).abs() < 1e-9,
                        "({d},{r},{k}) [{i},{j}]: {fd} vs {}",
                        g[(i, j)]
                    );
                }
            }
        }
        // large logits: no overflow
        let f = Mat::<f64>::from_fn(2, 3, |i, j| 800.0 * (i + j) as f64);
        let y = Mat::<f64>::from_fn(2, 3, |_, j| f64::from(u8::from(j == 0)));
        let mut ce = CrossEntropy {
            y,
            n: 6.0,
            classes: 3,
        };
        let mut g = Mat::<f64>::zeros(2, 3);
        ce.grad(f.as_ref(), g.as_mut()).unwrap();
        assert!(g.col_iter().all(|c| c.iter().all(|v| v.is_finite())));
        let mut bad = CrossEntropy {
            y: Mat::zeros(2, 3),
            n: 1.0,
            classes: 4,
        };
        assert!(matches!(
            bad.grad(f.as_ref(), g.as_mut()),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn convergence_mode() {
        let (d, r) = (8, 2);
        let (theta, f0, y) = problem(d, r);
        let n = (d * r) as f64;
        let tol = 1e-7;
        for damping in [None, Some(0.8)] {
            let mut loss = Mse { y: y.clone(), n };
            let sol = integrate(
                theta.as_ref(),
                f0.as_ref(),
                None,
                damping,
                &mut loss,
                &[],
                Some(tol),
                &OdeOptions::default(),
                Par::Seq,
            )
            .unwrap();
            let f = MatRef::from_row_major_slice(&sol.f, d, r);
            let g = (f - &y) / n;
            let rate = (&theta * &g)
                .col_iter()
                .flat_map(|c| c.iter().copied().collect::<Vec<_>>())
                .fold(0.0f64, |m, v| m.max(v.abs()));
            assert!(sol.tau_end > 0.0);
            if damping.is_none() {
                assert!(rate <= tol * 1.0001, "{rate}");
            }
            // |F − Y| ≲ rate·n/λ_min
            let e = rel_err(&sol.f, &tile(&y, 1));
            assert!(
                e < 2.0 * tol * n / 0.2,
                "{damping:?}: {e:e} at tau {} after {} steps",
                sol.tau_end,
                sol.n_steps
            );
        }
        // Times and convergence in one run: the times as without it, the converged state last.
        let times = [0.0, 2.0, 40.0, 1e4];
        let mut loss = Mse { y: y.clone(), n };
        let opts = OdeOptions::default();
        let both = integrate(
            theta.as_ref(),
            f0.as_ref(),
            None,
            None,
            &mut loss,
            &times,
            Some(1e-6),
            &opts,
            Par::Seq,
        )
        .unwrap();
        let only = integrate(
            theta.as_ref(),
            f0.as_ref(),
            None,
            None,
            &mut loss,
            &times,
            None,
            &opts,
            Par::Seq,
        )
        .unwrap();
        let dr = d * r;
        assert_eq!(both.f.len(), 5 * dr);
        assert!(rel_err(&both.f[..4 * dr], &only.f) < 1e-6);
        assert!(
            both.tau_end > 40.0 && both.tau_end < 1e4,
            "{}",
            both.tau_end
        );
        assert_eq!(only.tau_end, 1e4);
        assert!(rel_err(&both.f[4 * dr..], &tile(&y, 1)) < 2e-6 * n / 0.2);
        // Already converged at τ = 0: the initial state, no steps beyond the times.
        let mut loss = Mse { y: f0.clone(), n };
        let at0 = integrate(
            theta.as_ref(),
            f0.as_ref(),
            None,
            None,
            &mut loss,
            &[],
            Some(1e-6),
            &opts,
            Par::Seq,
        )
        .unwrap();
        assert_eq!((at0.tau_end, at0.n_steps), (0.0, 0));
        assert_eq!(at0.f, tile(&f0, 1));
        // Below the noise floor (≈ ‖Θ‖/n·atol ≈ 1e-8 here) the rate stagnates: a clean error.
        let mut loss = Mse { y: y.clone(), n };
        let err = integrate(
            theta.as_ref(),
            f0.as_ref(),
            None,
            None,
            &mut loss,
            &[],
            Some(1e-12),
            &OdeOptions::default(),
            Par::Seq,
        );
        assert!(
            matches!(&err, Err(Error::IntegrationFailed(m)) if m.contains("stagnates")),
            "{err:?}"
        );
        // Cross-entropy with one-hot targets never converges (logits grow like log τ): with a
        // tolerance below the rate at τ = 1e12 this fails cleanly.
        let y = Mat::<f64>::from_fn(d, r, |i, j| f64::from(u8::from(j == i % r)));
        let mut ce = CrossEntropy { y, n, classes: r };
        let err = integrate(
            theta.as_ref(),
            f0.as_ref(),
            None,
            None,
            &mut ce,
            &[],
            Some(1e-16),
            &OdeOptions::default(),
            Par::Seq,
        );
        assert!(matches!(err, Err(Error::IntegrationFailed(_))), "{err:?}");
    }

    struct Failing(usize);
    impl Gradient for Failing {
        fn grad(&mut self, f: MatRef<'_, f64>, mut out: MatMut<'_, f64>) -> Result<()> {
            if self.0 == 0 {
                return Err(Error::InvalidArgument("boom".into()));
            }
            self.0 -= 1;
            out.copy_from(f);
            Ok(())
        }
    }

    #[test]
    fn errors() {
        let (theta, f0, y) = problem(4, 2);
        let opts = OdeOptions::default();
        let mut loss = Mse { y, n: 8.0 };
        let run = |loss: &mut Mse, times: &[f64]| {
            integrate(
                theta.as_ref(),
                f0.as_ref(),
                None,
                None,
                loss,
                times,
                None,
                &opts,
                Par::Seq,
            )
        };
        assert!(matches!(
            run(&mut loss, &[1.0, 0.5]),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            run(&mut loss, &[-1.0]),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            run(&mut loss, &[f64::INFINITY]),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            run(&mut loss, &[f64::NAN]),
            Err(Error::InvalidArgument(_))
        ));
        let empty = run(&mut loss, &[]).unwrap();
        assert!(empty.f.is_empty() && empty.n_evals == 0);
        let zero = run(&mut loss, &[0.0]).unwrap();
        assert_eq!(zero.n_evals, 0);
        // wrong shapes
        let bad_f0 = Mat::<f64>::zeros(3, 2);
        let e = integrate(
            theta.as_ref(),
            bad_f0.as_ref(),
            None,
            None,
            &mut loss,
            &[1.0],
            None,
            &opts,
            Par::Seq,
        );
        assert!(matches!(e, Err(Error::DimensionMismatch { .. })));
        let e = integrate(
            theta.as_ref(),
            f0.as_ref(),
            Some(f0.as_ref()),
            None,
            &mut loss,
            &[1.0],
            None,
            &opts,
            Par::Seq,
        );
        assert!(matches!(e, Err(Error::InvalidArgument(_))));
        let e = integrate(
            theta.as_ref(),
            f0.as_ref(),
            None,
            Some(-1.0),
            &mut loss,
            &[1.0],
            None,
            &opts,
            Par::Seq,
        );
        assert!(matches!(e, Err(Error::InvalidArgument(_))));
        // a failing gradient propagates its error
        for k in [0, 1, 5] {
            let e = integrate(
                theta.as_ref(),
                f0.as_ref(),
                None,
                None,
                &mut Failing(k),
                &[10.0],
                None,
                &opts,
                Par::Seq,
            );
            assert_eq!(e, Err(Error::InvalidArgument("boom".into())));
        }
        // max_steps
        let few = OdeOptions {
            max_steps: 3,
            ..opts
        };
        let e = integrate(
            theta.as_ref(),
            f0.as_ref(),
            None,
            None,
            &mut loss,
            &[1e4],
            None,
            &few,
            Par::Seq,
        );
        assert!(matches!(e, Err(Error::IntegrationFailed(_))));
        for tol in [0.0, -1.0, f64::NAN] {
            let e = integrate(
                theta.as_ref(),
                f0.as_ref(),
                None,
                None,
                &mut loss,
                &[],
                Some(tol),
                &opts,
                Par::Seq,
            );
            assert!(matches!(e, Err(Error::InvalidArgument(_))));
        }
    }

    #[test]
    fn interrupt_stops_the_integration_and_its_error_is_returned() {
        let (theta, f0, y) = problem(4, 2);
        let opts = OdeOptions::default();
        let mut loss = Mse { y, n: 8.0 };
        let mut calls = 0usize;
        let mut hook = || {
            calls += 1;
            if calls > 5 {
                Err(Error::InvalidArgument("stop".into()))
            } else {
                Ok(())
            }
        };
        let e = integrate_with_interrupt(
            theta.as_ref(),
            f0.as_ref(),
            None,
            None,
            &mut loss,
            &[1e6],
            None,
            &opts,
            Par::Seq,
            &mut hook,
        );
        assert!(matches!(e, Err(Error::InvalidArgument(ref m)) if m == "stop"));
        assert_eq!(calls, 6); // called before each step attempt, stopped at the first error
                              // a hook that never fires changes nothing
        let plain = integrate(
            theta.as_ref(),
            f0.as_ref(),
            None,
            None,
            &mut loss,
            &[3.0],
            None,
            &opts,
            Par::Seq,
        )
        .unwrap();
        let hooked = integrate_with_interrupt(
            theta.as_ref(),
            f0.as_ref(),
            None,
            None,
            &mut loss,
            &[3.0],
            None,
            &opts,
            Par::Seq,
            &mut || Ok(()),
        )
        .unwrap();
        assert_eq!(plain, hooked);
    }

    #[test]
    fn unreachable_horizon_fails_early() {
        // Cross-entropy to tau = 1e300: the step size cannot grow fast enough for the
        // budget. It must fail long before max_steps attempts.
        let (theta, _, _) = problem(6, 3);
        let f0 = Mat::<f64>::zeros(6, 3);
        let y = Mat::<f64>::from_fn(6, 3, |i, j| f64::from(u8::from(i % 3 == j)));
        let mut loss = CrossEntropy {
            y,
            n: 18.0,
            classes: 3,
        };
        let opts = OdeOptions {
            max_steps: 200_000,
            ..OdeOptions::default()
        };
        let mut attempts = 0usize;
        let e = integrate_with_interrupt(
            theta.as_ref(),
            f0.as_ref(),
            None,
            None,
            &mut loss,
            &[1e300],
            None,
            &opts,
            Par::Seq,
            &mut || {
                attempts += 1;
                Ok(())
            },
        );
        match e {
            Err(Error::IntegrationFailed(m)) => assert!(m.contains("out of reach"), "{m}"),
            other => panic!("expected an early failure, got {other:?}"),
        }
        assert!(attempts < opts.max_steps / 4, "{attempts} attempts");
        // a reachable horizon of the same flow still integrates
        let ok = integrate(
            theta.as_ref(),
            f0.as_ref(),
            None,
            None,
            &mut loss,
            &[1e3],
            None,
            &opts,
            Par::Seq,
        );
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn pace_extrapolation() {
        // a pinned step size: (t_end - t) / h
        let s = steps_to_reach(100.0, 200.0, 1600.0, 100, 1.0, 1.0);
        assert!((s - 1400.0).abs() < 1e-9, "{s}");
        // a growing step size, tau doubling per window: geometric
        let s = steps_to_reach(100.0, 200.0, 1600.0, 100, 1.0, 1.2);
        assert!((s - 300.0).abs() < 1e-9, "{s}");
        // slow progress with a growing step size: linear
        let s = steps_to_reach(100.0, 110.0, 210.0, 10, 1.0, 2.0);
        assert!((s - 100.0).abs() < 1e-9, "{s}");
        // no progress: unreachable; past the end: nothing left
        assert!(steps_to_reach(100.0, 100.0, 200.0, 10, 1.0, 2.0).is_infinite());
        assert_eq!(steps_to_reach(100.0, 200.0, 150.0, 10, 1.0, 1.0), 0.0);
    }
}
