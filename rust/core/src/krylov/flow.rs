//! Gradient flow `u(s) = exp(−sA) r₀`, `w(s) = A⁻¹(I − exp(−sA)) r₀` at many times from
//! one block Lanczos basis, with the a-posteriori bounds of the module docs.

use super::lanczos::{BlockLanczos, Ritz};
use super::{check_rcond, check_rtol, gemm, max_abs, LinOp, SolverInfo};
use crate::dynamics::flow_factors;
use crate::{Error, Result, Shape};
use faer::{Accum, Mat, MatRef};

/// Options of [`flow`].
#[derive(Debug, Clone, PartialEq)]
pub struct FlowOptions {
    /// Target of the error bound of `u`, relative to `max|r₀|` (default 1e-8).
    pub rtol: f64,
    /// Most block iterations (default 500).
    pub max_iter: usize,
    /// Spectral cut relative to the largest Ritz value (default `N·ε`).
    pub rcond: Option<f64>,
    /// Deflation threshold relative to `‖A‖` (default 1e-13).
    pub drop_tol: f64,
    /// `λ` of `A + λI` (default 0): the iteration runs on `A`, the Ritz values are those of
    /// `T + λI` (the Krylov space is shift-invariant), so one basis serves every `λ`.
    pub shift: f64,
}

impl Default for FlowOptions {
    fn default() -> Self {
        FlowOptions {
            rtol: 1e-8,
            max_iter: 500,
            rcond: None,
            drop_tol: 1e-13,
            shift: 0.0,
        }
    }
}

/// Called after every stopping test with what the solve has done so far (the error
/// estimate relative to `max|r₀|`); an error stops the solve and is returned.
pub type Monitor<'a> = &'a mut dyn FnMut(&SolverInfo) -> Result<()>;

/// A converged (or capped) Krylov solution: evaluate it at any times.
#[derive(Debug, Clone)]
pub struct KrylovFlow {
    lanczos: BlockLanczos,
    ritz: Ritz,
    scale: f64,
    shift: f64,
    /// What the solve did; `error_estimate` is the bound at the largest requested time.
    pub info: SolverInfo,
}

pub(crate) fn check_times(times: &[f64]) -> Result<f64> {
    let mut smax = 0.0f64;
    for &t in times {
        if t.is_nan() || t < 0.0 {
            return Err(Error::InvalidArgument(format!(
                "times must be >= 0 (or inf), got {t}"
            )));
        }
        smax = smax.max(t);
    }
    Ok(smax)
}

/// 8-point Gauss–Legendre nodes and weights on `[-1, 1]` (positive half).
const GL_X: [f64; 4] = [
    0.183_434_642_495_649_8,
    0.525_532_409_916_329,
    0.796_666_477_413_626_7,
    0.960_289_856_497_536_3,
];
const GL_W: [f64; 4] = [
    0.362_683_783_378_362,
    0.313_706_645_877_887_3,
    0.222_381_034_453_374_5,
    0.101_228_536_290_376_3,
];

/// `∫₀^x g_r(σ) dσ` and `∫₀^x σ g_r(σ) dσ` of the defect norm
/// `g_r(σ) = ‖B_m E_mᵀ S e^{−σΘ} z_r‖ + Σ_j δ_j ‖E_jᵀ S e^{−σΘ} z_r‖` (retained modes), on a
/// geometric grid (ratio √2 from `10⁻²/θ_max`, 8 Gauss points per interval) up to
/// `σ_stop = min(s_max, 80/θ_min)`; beyond `σ_stop` the defect is below `e^{−80}` of its
/// start and is bounded by `g(σ_stop) e^{−(σ−σ_stop)θ_min}`.
pub(crate) struct DefectIntegral<'a> {
    ritz: &'a Ritz,
    pts: Vec<f64>,
    g: Vec<Vec<f64>>,
    h: Vec<Vec<f64>>,
    stop: f64,
    g_stop: Vec<f64>,
    tmin: f64,
}

impl<'a> DefectIntegral<'a> {
    pub(crate) fn new(ritz: &'a Ritz, smax: f64) -> Self {
        let r = ritz.z.ncols();
        let tmin = ritz.theta_min();
        let tmax = ritz
            .theta
            .iter()
            .zip(&ritz.retained)
            .filter(|(_, k)| **k)
            .fold(0.0f64, |a, (t, _)| a.max(*t));
        let mut me = DefectIntegral {
            ritz,
            pts: vec![0.0],
            g: vec![vec![0.0; r]],
            h: vec![vec![0.0; r]],
            stop: 0.0,
            g_stop: vec![0.0; r],
            tmin,
        };
        if !tmin.is_finite() || smax == 0.0 {
            return me;
        }
        let stop = smax.min(80.0 / tmin);
        let mut a = 0.0;
        let mut b = stop.min(1e-2 / tmax);
        loop {
            let (gi, hi) = me.interval(a, b);
            let last_g = me.g.last().expect("nonempty").clone();
            let last_h = me.h.last().expect("nonempty").clone();
            me.g.push(last_g.iter().zip(&gi).map(|(x, y)| x + y).collect());
            me.h.push(last_h.iter().zip(&hi).map(|(x, y)| x + y).collect());
            me.pts.push(b);
            if b >= stop {
                break;
            }
            a = b;
            b = (b * std::f64::consts::SQRT_2).min(stop);
        }
        me.stop = stop;
        me.g_stop = me.defect(stop);
        me
    }

    fn defect(&self, sigma: f64) -> Vec<f64> {
        let f: Vec<f64> = (0..self.ritz.theta.len())
            .map(|i| {
                if self.ritz.retained[i] {
                    (-sigma * self.ritz.theta[i]).exp()
                } else {
                    0.0
                }
            })
            .collect();
        self.ritz.defect_norms(&f)
    }

    /// Gauss–Legendre `(∫ g, ∫ σ g)` over `[a, b]`.
    fn interval(&self, a: f64, b: f64) -> (Vec<f64>, Vec<f64>) {
        let r = self.ritz.z.ncols();
        let (mut gi, mut hi) = (vec![0.0; r], vec![0.0; r]);
        if b <= a {
            return (gi, hi);
        }
        let (c, h) = (0.5 * (a + b), 0.5 * (b - a));
        for (x, w) in GL_X.iter().zip(&GL_W) {
            for sigma in [c - h * x, c + h * x] {
                let d = self.defect(sigma);
                for k in 0..r {
                    gi[k] += h * w * d[k];
                    hi[k] += h * w * sigma * d[k];
                }
            }
        }
        (gi, hi)
    }

    /// `(∫₀^x g, ∫₀^x σ g)` for `0 ≤ x ≤ σ_stop`.
    fn at(&self, x: f64) -> (Vec<f64>, Vec<f64>) {
        let r = self.ritz.z.ncols();
        if self.pts.len() == 1 || x <= 0.0 {
            return (vec![0.0; r], vec![0.0; r]);
        }
        let x = x.min(self.stop);
        let j = self.pts.partition_point(|p| *p <= x) - 1;
        let (gi, hi) = self.interval(self.pts[j], x);
        (
            self.g[j].iter().zip(&gi).map(|(a, b)| a + b).collect(),
            self.h[j].iter().zip(&hi).map(|(a, b)| a + b).collect(),
        )
    }

    /// Per-column bounds of `‖u_r(s) − u_r*(s)‖` (`phi = false`) or `‖w_r(s) − w_r*(s)‖`.
    pub(crate) fn bounds(&self, s: f64, phi: bool) -> Vec<f64> {
        let ritz = self.ritz;
        let r = ritz.z.ncols();
        let inv_tmin = 1.0 / self.tmin;
        let m = s.min(self.stop);
        let (gm, hm) = self.at(m);
        let tail = if s > self.stop {
            (s - self.stop).min(inv_tmin)
        } else {
            0.0
        };
        let mut out: Vec<f64> = if phi {
            let c = s.min(inv_tmin);
            let b = (s - inv_tmin).clamp(0.0, m);
            let (gb, hb) = self.at(b);
            (0..r)
                .map(|k| {
                    let near = if b < m {
                        (s * (gm[k] - gb[k]) - (hm[k] - hb[k])).max(0.0)
                    } else {
                        0.0
                    };
                    let far = if inv_tmin.is_finite() {
                        inv_tmin * gb[k]
                    } else {
                        0.0
                    };
                    near + far + c * self.g_stop[k] * tail + ritz.delta0 * c
                })
                .collect()
        } else {
            (0..r)
                .map(|k| gm[k] + self.g_stop[k] * tail + ritz.delta0)
                .collect()
        };
        let cut_w = if ritz.cut > 0.0 {
            1.0 / ritz.cut
        } else {
            f64::INFINITY
        };
        for i in 0..ritz.theta.len() {
            if ritz.unresolved_cut(i) {
                let lin = s.min(cut_w);
                let wgt = if phi {
                    (0.5 * s * s).min(lin * inv_tmin)
                } else {
                    lin
                };
                for (c, o) in out.iter_mut().enumerate() {
                    *o += ritz.alpha[i] * ritz.z[(i, c)].abs() * wgt;
                }
            }
        }
        out
    }
}

/// `(e_i, φ_i)` of every Ritz value at scaled time `s`, with the cut modes `(1, 0)`.
fn factors(ritz: &Ritz, s: f64) -> (Vec<f64>, Vec<f64>) {
    crate::simd::clear_upper_vector_state();
    let k = ritz.theta.len();
    let (mut e, mut p) = (vec![1.0; k], vec![0.0; k]);
    for i in 0..k {
        if ritz.retained[i] {
            let th = ritz.theta[i];
            e[i] = (-th * s).exp();
            p[i] = flow_factors(th, s).1;
        }
    }
    (e, p)
}

/// Block Lanczos for `exp(−sA) r₀` until the bound at `max(times)` is at most
/// `rtol · max|r₀|`, the space is invariant, or `max_iter` block steps were taken.
/// `times` are scaled times `s = η t / n` (docs/numerics.md §3), `≥ 0`, `∞` allowed.
pub fn flow<O: LinOp + ?Sized>(
    op: &O,
    r0: MatRef<'_, f64>,
    times: &[f64],
    opts: &FlowOptions,
) -> Result<KrylovFlow> {
    flow_augmented(
        op,
        r0,
        MatRef::from_column_major_slice(&[], r0.nrows(), 0),
        times,
        opts,
    )
}

/// [`flow`] from the augmented start `[V | r₀]` ([`BlockLanczos::new_augmented`]): with
/// (approximate) top eigenvectors in `V` (`N × d`, e.g. from a previous basis or a
/// Nyström sketch) large times need fewer iterations; `V` may be empty.
pub fn flow_augmented<O: LinOp + ?Sized>(
    op: &O,
    r0: MatRef<'_, f64>,
    v: MatRef<'_, f64>,
    times: &[f64],
    opts: &FlowOptions,
) -> Result<KrylovFlow> {
    flow_monitored(op, r0, v, times, opts, &mut |_| Ok(()))
}

fn check_flow_options(opts: &FlowOptions, n: usize) -> Result<f64> {
    check_rtol(opts.rtol)?;
    let rcond = check_rcond(opts.rcond, n)?;
    if opts.max_iter == 0 {
        return Err(Error::InvalidArgument("max_iter must be >= 1".into()));
    }
    if !(opts.shift >= 0.0 && opts.shift.is_finite()) {
        return Err(Error::InvalidArgument(format!(
            "shift must be >= 0 and finite, got {}",
            opts.shift
        )));
    }
    Ok(rcond)
}

/// [`flow_augmented`] with a [`Monitor`] (progress, cancellation).
pub fn flow_monitored<O: LinOp + ?Sized>(
    op: &O,
    r0: MatRef<'_, f64>,
    v: MatRef<'_, f64>,
    times: &[f64],
    opts: &FlowOptions,
    monitor: Monitor<'_>,
) -> Result<KrylovFlow> {
    let n = op.nrows();
    if r0.nrows() != n {
        return Err(Error::DimensionMismatch {
            what: "r0 rows",
            expected: Shape::Rows(n),
            got: Shape::Matrix(r0.nrows(), r0.ncols()),
        });
    }
    check_flow_options(opts, n)?;
    let smax = check_times(times)?;
    let (scale, finite) = max_abs(r0);
    if !finite {
        return Err(Error::NonFinite { what: "r0" });
    }
    let lanczos = if v.ncols() == 0 || scale == 0.0 {
        BlockLanczos::new(r0, opts.drop_tol)?
    } else {
        BlockLanczos::new_augmented(v, r0, opts.drop_tol)?
    };
    let mut kf = KrylovFlow {
        ritz: lanczos.ritz(f64::EPSILON, 0.0)?, // empty: no block yet
        lanczos,
        scale,
        shift: opts.shift,
        info: SolverInfo {
            method: "block-lanczos",
            iterations: 0,
            matvecs: 0,
            error_estimate: f64::INFINITY,
            converged: false,
        },
    };
    kf.iterate(op, smax, opts, false, monitor)?;
    Ok(kf)
}

impl KrylovFlow {
    /// Continues this solve for other times or options (`rtol`, `max_iter`, `rcond`,
    /// `shift`; `drop_tol` is the basis's own): the bound is evaluated for the new
    /// parameters on the existing basis first, and the iteration resumes (new products)
    /// only while it exceeds `rtol · max|r₀|`. A learning-rate change is a change of the
    /// scaled times; a `diag_reg` change is a change of `shift`.
    pub fn extend<O: LinOp + ?Sized>(
        &mut self,
        op: &O,
        times: &[f64],
        opts: &FlowOptions,
        monitor: Monitor<'_>,
    ) -> Result<()> {
        if op.nrows() != self.lanczos.basis().nrows() {
            return Err(Error::DimensionMismatch {
                what: "operator size",
                expected: Shape::Rows(self.lanczos.basis().nrows()),
                got: Shape::Rows(op.nrows()),
            });
        }
        check_flow_options(opts, op.nrows())?;
        let smax = check_times(times)?;
        self.shift = opts.shift;
        self.iterate(op, smax, opts, true, monitor)
    }

    fn iterate<O: LinOp + ?Sized>(
        &mut self,
        op: &O,
        smax: f64,
        opts: &FlowOptions,
        check_first: bool,
        monitor: Monitor<'_>,
    ) -> Result<()> {
        let rcond = check_rcond(opts.rcond, op.nrows())?;
        let target = opts.rtol * self.scale;
        let lz = &mut self.lanczos;
        let mut schedule = super::CheckSchedule::default();
        let rel = |est: f64, scale: f64| if scale > 0.0 { est / scale } else { 0.0 };
        let mut result = None;
        if check_first && (lz.iterations() > 0 || lz.exhausted()) {
            let ritz = lz.ritz_shifted(rcond, 0.0, opts.shift)?;
            let est = self_estimate(&ritz, smax);
            let last = lz.exhausted() || lz.iterations() >= opts.max_iter;
            schedule.last = lz.iterations();
            if est <= target || last {
                result = Some((ritz, est, est <= target));
            }
        }
        let (ritz, est, converged) = match result {
            Some(r) => r,
            None => loop {
                let stepped = lz.step(op)?;
                let it = lz.iterations();
                let last = !stepped || lz.exhausted() || it >= opts.max_iter;
                if last || schedule.due(it) {
                    let ritz = lz.ritz_shifted(rcond, 0.0, opts.shift)?;
                    let est = self_estimate(&ritz, smax);
                    monitor(&SolverInfo {
                        method: "block-lanczos",
                        iterations: it,
                        matvecs: lz.matvecs(),
                        error_estimate: rel(est, self.scale),
                        converged: est <= target,
                    })?;
                    if est <= target || last {
                        break (ritz, est, est <= target);
                    }
                }
            },
        };
        self.info = SolverInfo {
            method: "block-lanczos",
            iterations: lz.iterations(),
            matvecs: lz.matvecs(),
            error_estimate: rel(est, self.scale),
            converged,
        };
        self.ritz = ritz;
        Ok(())
    }
}

/// The bound of `u` at `smax` on the current basis, worst column (no product).
fn self_estimate(ritz: &Ritz, smax: f64) -> f64 {
    DefectIntegral::new(ritz, smax)
        .bounds(smax, false)
        .into_iter()
        .fold(0.0f64, f64::max)
}

impl KrylovFlow {
    /// The orthonormal basis `Q` (`N × k`).
    #[must_use]
    pub fn basis(&self) -> MatRef<'_, f64> {
        self.lanczos.basis()
    }

    /// The Ritz decomposition the results come from.
    #[must_use]
    pub fn ritz(&self) -> &Ritz {
        &self.ritz
    }

    /// The block tridiagonal `T = QᵀAQ`.
    #[must_use]
    pub fn t_matrix(&self) -> Mat<f64> {
        self.lanczos.t_matrix()
    }

    /// `λ` of the Ritz values (`T + λI`).
    #[must_use]
    pub fn shift(&self) -> f64 {
        self.shift
    }

    /// `max|r₀|`, the scale of the relative estimates.
    #[must_use]
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// Coefficients in the basis `Q`: `k × (T·R)`, time-major (columns `t·R .. t·R + R`
    /// belong to `times[t]`), of `u` (`phi = false`) or `w` (`phi = true`).
    pub fn coefficients(&self, times: &[f64], phi: bool) -> Result<Mat<f64>> {
        check_times(times)?;
        let k = self.ritz.theta.len();
        let r = self.ritz.z.ncols();
        let mut c = Mat::<f64>::zeros(k, times.len() * r);
        for (j, &s) in times.iter().enumerate() {
            let (e, p) = factors(&self.ritz, s);
            let cj = self.ritz.combine(if phi { &p } else { &e });
            c.as_mut().subcols_mut(j * r, r).copy_from(cj.as_ref());
        }
        Ok(c)
    }

    /// `image · coefficients` for any `M × k` image of the basis (e.g. `K_td Q`, one
    /// blocked product per basis): `M × (T·R)`.
    pub fn apply_image(
        &self,
        image: MatRef<'_, f64>,
        times: &[f64],
        phi: bool,
    ) -> Result<Mat<f64>> {
        let k = self.ritz.theta.len();
        if image.ncols() != k {
            return Err(Error::DimensionMismatch {
                what: "basis image columns",
                expected: Shape::Cols(k),
                got: Shape::Matrix(image.nrows(), image.ncols()),
            });
        }
        let c = self.coefficients(times, phi)?;
        let mut out = Mat::<f64>::zeros(image.nrows(), c.ncols());
        if k > 0 {
            gemm(out.as_mut(), Accum::Replace, image, c.as_ref(), 1.0);
        }
        Ok(out)
    }

    /// `u(s) = exp(−sA) r₀` at every time (`N × (T·R)`, time-major); `f_train = Y + u`.
    pub fn train(&self, times: &[f64]) -> Result<Mat<f64>> {
        self.apply_image(self.basis(), times, false)
    }

    /// `w(s) = A⁻¹(I − exp(−sA)) r₀` at every time (`N × (T·R)`); `f_test = g₀ − K_td w`.
    pub fn integral(&self, times: &[f64]) -> Result<Mat<f64>> {
        self.apply_image(self.basis(), times, true)
    }

    /// Absolute bounds of `‖u_r(s) − u_r*(s)‖₂`: `R × T`.
    pub fn train_bounds(&self, times: &[f64]) -> Result<Mat<f64>> {
        self.bound_matrix(times, false)
    }

    /// Absolute estimates of `‖w_r(s) − w_r*(s)‖₂`: `R × T` (see the module docs).
    pub fn integral_bounds(&self, times: &[f64]) -> Result<Mat<f64>> {
        self.bound_matrix(times, true)
    }

    fn bound_matrix(&self, times: &[f64], phi: bool) -> Result<Mat<f64>> {
        let smax = check_times(times)?;
        let di = DefectIntegral::new(&self.ritz, smax);
        let r = self.ritz.z.ncols();
        let mut m = Mat::<f64>::zeros(r, times.len());
        for (j, &s) in times.iter().enumerate() {
            for (c, b) in di.bounds(s, phi).into_iter().enumerate() {
                m[(c, j)] = b;
            }
        }
        Ok(m)
    }
}
