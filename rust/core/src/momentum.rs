//! Heavy-ball momentum, closed form per eigenmode (docs/numerics.md §7).
//!
//! Each mode of the MSE flow with momentum is a damped oscillator
//! `h'' + c h' + ω² h = 0`, `h(0) = 1`, `h'(0) = 0` (`ω² = μ/n`, `c = (1 − m)/√η`). The
//! reconstruction needs `h − 1` and `(1 − h)/μ`, both without cancellation. Everything
//! follows from one quantity: `G = (1 − h)/ω²`, the solution of `G'' + c G' + ω² G = 1`,
//! `G(0) = G'(0) = 0`. With the characteristic roots `r± = −c/2 ± √δ`, `δ = c²/4 − ω²`
//! (real or complex conjugate), `G` is the divided difference of `E(r) = (e^{rτ} − 1)/r`
//! at the two roots; in the dimensionless variables
//!
//! ```text
//! x = cτ/2,  y = ω²τ²,  z = δτ² = x² − y,  w± = r±τ = −x ± √z
//! G = τ² Ĝ,  Ĝ = φ₁[w₊, w₋] = ∫₀¹ u e^{−xu} S(z u²) du,  φ₁(w) = (e^w − 1)/w
//! h − 1 = −y Ĝ,   (1 − h)/μ = τ² Ĝ · (ω²/μ)
//! ```
//!
//! where `S(z) = sinh(√z)/√z` (`sin(√−z)/√−z` for `z < 0`) is entire in `z`, so nothing is
//! singular at critical damping. Evaluation:
//!
//! 1. `h` itself from a form with only non-positive exponents (no overflow for any `τ`);
//!    when `1 − h ≥ 1/2` the factors follow directly from it.
//! 2. Otherwise `Ĝ` by the best-conditioned of: the Taylor series in the roots
//!    (`max|w±| ≤ 1`), the expansion around the midpoint `−x` in powers of `z` (near
//!    critical damping, `|z| ≤ x²/4`), the divided difference of `φ₁` (over-damped) or
//!    `1 − h` by a sum of non-negative terms and one bounded term (under-damped). Each has a
//!    cancellation factor of at most about 4 in its domain; as `ω² → 0` the result tends to
//!    `τ/c − (1 − e^{−cτ})/c²` continuously.

/// `(h − 1, (1 − h)/μ)` of the damped oscillator `h'' + c h' + ω² h = 0`, `h(0) = 1`,
/// `h'(0) = 0`, at time `τ` (`omega2 = ω² ≥ 0`, `c ≥ 0`, `τ ≥ 0`).
///
/// `τ = 0` gives `(0, 0)` exactly and `τ = ∞` the limit `(−1, 1/μ)`. Both factors keep
/// full relative accuracy in every damping regime, across critical damping, and as
/// `μ → 0` (where `(1 − h)/μ` tends to `(τ/c − (1 − e^{−cτ})/c²)·(ω²/μ)`). A mode with
/// `μ = 0` (discarded) gets `(1 − h)/μ := 0`.
#[must_use]
pub fn factors(mu: f64, omega2: f64, c: f64, tau: f64) -> (f64, f64) {
    if tau == 0.0 {
        return (0.0, 0.0);
    }
    if tau == f64::INFINITY {
        return (-1.0, 1.0 / mu);
    }
    let ratio = if mu == 0.0 { 0.0 } else { omega2 / mu };
    let a = 0.5 * c;
    let w = omega2.sqrt();
    // δ = a² − ω² as a product: relative accuracy also near critical damping.
    let delta = (a - w) * (a + w);
    let h = h_direct(a, omega2, delta, tau);
    let omh = 1.0 - h;
    if omh >= 0.5 {
        let phi = if mu == 0.0 { 0.0 } else { omh / mu };
        return (-omh, phi);
    }
    let x = a * tau;
    let y = omega2 * tau * tau;
    let z = delta * tau * tau;
    let g_hat = g_hat(x, y, z);
    (-y * g_hat, tau * (tau * g_hat) * ratio)
}

/// `h(τ)` from forms whose exponentials all have non-positive arguments; absolute error a
/// few ulps.
fn h_direct(a: f64, omega2: f64, delta: f64, tau: f64) -> f64 {
    let x = a * tau;
    if delta > 0.0 {
        // Over-damped: h = e^{w₊}·((1 + e^{−v})/2 + x·φ₁(−v)), v = 2√δ τ = w₊ − w₋.
        let sd = delta.sqrt();
        let w_plus = -omega2 / (a + sd) * tau;
        let e1 = w_plus.exp();
        if e1 == 0.0 {
            return 0.0;
        }
        let v = 2.0 * sd * tau;
        let em = (-v).exp_m1();
        // x·(1 − e^{−v})/v, written without the product x·τ-sized factors for large v.
        let x_phi = if v > 1.0 {
            a * (-em) / (2.0 * sd)
        } else {
            x * phi1_neg(v, em)
        };
        e1 * (1.0 + 0.5 * em + x_phi)
    } else if x > 746.0 {
        // e^{−x}·(1 + x) and e^{−x}·(|cos| + x) underflow.
        0.0
    } else if delta < 0.0 {
        // Under-damped: h = e^{−x}(cos θ + x sin θ/θ).
        let th = (-delta).sqrt() * tau;
        (-x).exp() * (th.cos() + x * sinc(th))
    } else {
        (-x).exp() * (1.0 + x)
    }
}

/// `(1 − e^{−v})/v` for `v ≥ 0`, given `em = expm1(−v)`.
#[inline]
fn phi1_neg(v: f64, em: f64) -> f64 {
    if v == 0.0 {
        1.0
    } else {
        -em / v
    }
}

/// `φ₁(w) = (e^w − 1)/w` for `w ≤ 0`.
#[inline]
fn phi1(w: f64) -> f64 {
    if w == 0.0 {
        1.0
    } else {
        w.exp_m1() / w
    }
}

/// `sin θ / θ`.
#[inline]
fn sinc(th: f64) -> f64 {
    if th.abs() < 1e-4 {
        let t2 = th * th;
        1.0 - t2 / 6.0 * (1.0 - t2 / 20.0)
    } else {
        th.sin() / th
    }
}

/// `Ĝ(x, y, z) = φ₁[w₊, w₋]` with `w± = −x ± √z`, `z = x² − y` (see the module docs).
fn g_hat(x: f64, y: f64, z: f64) -> f64 {
    let rho = if z >= 0.0 { x + z.sqrt() } else { y.sqrt() };
    if rho <= 1.0 {
        return g_hat_taylor(x, y);
    }
    if z.abs() <= 0.25 * x * x && x <= MIDPOINT_MAX_X {
        return g_hat_midpoint(x, z);
    }
    if z > 0.0 {
        // Over-damped, roots well apart (√z > x/2): divided difference of φ₁, whose
        // cancellation factor φ₁(w₊)/(φ₁(w₊) − φ₁(w₋)) stays below about 4 here.
        let sz = z.sqrt();
        let w_plus = -y / (x + sz);
        let w_minus = -x - sz;
        (phi1(w_plus) - phi1(w_minus)) / (2.0 * sz)
    } else {
        // Under-damped, θ = √−z > x/2 and y > 1:
        // 1 − h = (1 − e^{−x}) + e^{−x}(2 sin²(θ/2) − x sin θ/θ),
        // the only negative term is bounded by a fraction of the first.
        let th = (-z).sqrt();
        let e = (-x).exp();
        let s = (0.5 * th).sin();
        let omh = -(-x).exp_m1() + e * (2.0 * s * s - x * sinc(th));
        omh / y
    }
}

/// Beyond this `x` the near-critical branch is unreachable (`h` is then tiny and the direct
/// formula is used); kept as a bound for the downward recurrence.
const MIDPOINT_MAX_X: f64 = 40.0;

/// Taylor series in the roots for `max|w±| ≤ 1`: `Ĝ = Σ_k h_k/(k + 2)!` with the complete
/// homogeneous polynomials `h_k = (w₊^{k+1} − w₋^{k+1})/(w₊ − w₋)`, generated by
/// `h_k = s h_{k−1} − p h_{k−2}`, `s = w₊ + w₋ = −2x`, `p = w₊ w₋ = y`.
fn g_hat_taylor(x: f64, y: f64) -> f64 {
    let s = -2.0 * x;
    let (mut h_prev, mut h) = (0.0, 1.0); // h_{−1}, h_0
    let mut fact = 2.0; // (k + 2)!
    let mut sum = 0.5;
    // |h_k| ≤ (k + 1)·max|w±|^k ≤ k + 1: 24 terms leave less than 1e-25.
    for k in 1..=24 {
        let h_next = s * h - y * h_prev;
        h_prev = h;
        h = h_next;
        fact *= f64::from(k + 2);
        sum += h / fact;
    }
    sum
}

/// Expansion around the midpoint of the roots (near critical damping, `|z| ≤ x²/4`):
/// `Ĝ = Σ_k I_{2k+1}(x) z^k/(2k + 1)!`, `I_n(x) = ∫₀¹ uⁿ e^{−xu} du` (ratio of successive
/// terms at most 1/4 in modulus).
fn g_hat_midpoint(x: f64, z: f64) -> f64 {
    const N: usize = 2 * MIDPOINT_TERMS + 1;
    let mut moments = [0.0f64; N + 1];
    exp_moments(x, &mut moments);
    let mut coef = 1.0; // z^k / (2k + 1)!
    let mut sum = 0.0;
    for k in 0..MIDPOINT_TERMS {
        let n = 2 * k + 1;
        if k > 0 {
            coef *= z / ((n - 1) * n) as f64;
        }
        let term = coef * moments[n];
        sum += term;
        if term.abs() <= 1e-18 * sum.abs() && k > 1 {
            break;
        }
    }
    sum
}

const MIDPOINT_TERMS: usize = 60;

/// `out[n] = ∫₀¹ uⁿ e^{−xu} du` for `x ≥ 0`, by the downward recurrence
/// `I_{n−1} = (x I_n + e^{−x})/n` (stable), started from the series
/// `I_N = e^{−x} Σ_j x^j / ((N + 1)⋯(N + 1 + j))` at `N` well above `x`.
fn exp_moments(x: f64, out: &mut [f64]) {
    let top = out.len() - 1;
    let start = top + 2 * (x.ceil() as usize) + 20;
    let e = (-x).exp();
    let mut term = 1.0 / (start + 1) as f64;
    let mut series = term;
    for j in 1..400 {
        term *= x / (start + 1 + j) as f64;
        series += term;
        if term <= 1e-18 * series {
            break;
        }
    }
    let mut i_n = e * series;
    for n in (1..=start).rev() {
        i_n = (x * i_n + e) / n as f64;
        if n - 1 <= top {
            out[n - 1] = i_n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 3×3 matrix product.
    fn mul(a: &[[f64; 3]; 3], b: &[[f64; 3]; 3]) -> [[f64; 3]; 3] {
        let mut c = [[0.0; 3]; 3];
        for i in 0..3 {
            for j in 0..3 {
                c[i][j] = (0..3).map(|k| a[i][k] * b[k][j]).sum();
            }
        }
        c
    }

    /// Reference `G(τ) = (1 − h)/ω²` independent of the implementation. In the time unit
    /// `1/ν`, `ν = max(ω, c)`, the scaled `g = ν² G` obeys `g'' + ĉ g' + ω̂² g = 1` with
    /// `ĉ, ω̂ ≤ 1`; the exponential of the augmented system `(g, g', 1)' = B (g, g', 1)` comes
    /// from its Taylor series on `σ/2^k` (`‖B‖σ/2^k ≤ 1/8`, 40 terms) and `k` squarings.
    fn reference_g(omega2: f64, c: f64, tau: f64) -> f64 {
        let nu = omega2.sqrt().max(c);
        let (wh, ch) = (omega2 / (nu * nu), c / nu);
        let b = [[0.0, 1.0, 0.0], [-wh, -ch, 1.0], [0.0, 0.0, 0.0]];
        let norm = 1.0 + ch + wh;
        let mut k = 0;
        let mut dt = nu * tau;
        while dt * norm > 0.125 {
            dt *= 0.5;
            k += 1;
        }
        // E = exp(B dt) − I by its series, then (I + E)² − I = 2E + E² keeps the small
        // entries (slow modes) to full relative accuracy through the squarings.
        let mut e = [[0.0; 3]; 3];
        let mut term = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
        let bs = b.map(|r| r.map(|v| v * dt));
        for j in 1..40 {
            term = mul(&term, &bs).map(|r| r.map(|v| v / f64::from(j)));
            for r in 0..3 {
                for s in 0..3 {
                    e[r][s] += term[r][s];
                }
            }
        }
        for _ in 0..k {
            let e2 = mul(&e, &e);
            for r in 0..3 {
                for s in 0..3 {
                    e[r][s] = 2.0 * e[r][s] + e2[r][s];
                }
            }
        }
        e[0][2] / (nu * nu)
    }

    /// Classical RK4 on `G'' + cG' + ω²G = 1` with `steps` steps.
    fn rk4_g(omega2: f64, c: f64, tau: f64, steps: usize) -> f64 {
        let f = |g: f64, v: f64| (v, 1.0 - c * v - omega2 * g);
        let h = tau / steps as f64;
        let (mut g, mut v) = (0.0, 0.0);
        for _ in 0..steps {
            let (a1, b1) = f(g, v);
            let (a2, b2) = f(g + 0.5 * h * a1, v + 0.5 * h * b1);
            let (a3, b3) = f(g + 0.5 * h * a2, v + 0.5 * h * b2);
            let (a4, b4) = f(g + h * a3, v + h * b3);
            g += h / 6.0 * (a1 + 2.0 * a2 + 2.0 * a3 + a4);
            v += h / 6.0 * (b1 + 2.0 * b2 + 2.0 * b3 + b4);
        }
        g
    }

    fn rel(a: f64, b: f64) -> f64 {
        if a == b {
            0.0
        } else {
            (a - b).abs() / b.abs()
        }
    }

    const RATIOS: [f64; 7] = [1e-6, 0.5, 1.0 - 1e-9, 1.0, 1.0 + 1e-9, 2.0, 1e6];
    const OMEGA2: [f64; 5] = [1e2, 1.0, 1e-4, 1e-9, 1e-14];
    const TAUS: [f64; 6] = [1e-8, 0.1, 1.0, 10.0, 1e3, 1e6];

    #[test]
    fn reference_agrees_with_rk4() {
        // The two references agree where RK4 with small steps is affordable (RK4's own
        // round-off over up to 10⁷ steps limits this check to 1e-10).
        for &ratio in &RATIOS {
            for &omega2 in &[1.0, 1e-4, 1e-14] {
                let c = 2.0 * (ratio * omega2).sqrt();
                for &tau in &[1e-8, 0.1, 1.0, 10.0] {
                    let steps = ((tau * 1.0f64.max(c).max(omega2.sqrt())) / 2e-3)
                        .ceil()
                        .max(50.0) as usize;
                    let a = reference_g(omega2, c, tau);
                    let b = rk4_g(omega2, c, tau, steps);
                    assert!(
                        rel(a, b) < 1e-10,
                        "ratio {ratio} ω² {omega2} τ {tau}: {a} vs {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn factors_match_reference_across_regimes() {
        let mut worst = 0.0f64;
        for &ratio in &RATIOS {
            for &omega2 in &OMEGA2 {
                let c = 2.0 * (ratio * omega2).sqrt();
                for &tau in &TAUS {
                    let n = 7.0;
                    let mu = n * omega2;
                    let g = reference_g(omega2, c, tau);
                    let (hm1, phi) = factors(mu, omega2, c, tau);
                    let want_hm1 = -omega2 * g;
                    let want_phi = g / n;
                    let (e1, e2) = (rel(hm1, want_hm1), rel(phi, want_phi));
                    worst = worst.max(e1).max(e2);
                    assert!(
                        e1 < 1e-10 && e2 < 1e-10,
                        "ratio {ratio} ω² {omega2} c {c} τ {tau}: h−1 {hm1} vs {want_hm1} ({e1:.1e}), \
                         φ {phi} vs {want_phi} ({e2:.1e})"
                    );
                    assert!((-2.0..=0.0).contains(&hm1), "h − 1 = {hm1} outside [−2, 0]");
                }
            }
        }
        eprintln!("worst relative error {worst:.2e}");
    }

    #[test]
    fn strongly_damped_and_small_stiffness() {
        // c fixed, ω² → 0 (c²/4ω² up to 1e300): (1 − h)/μ → (τ/c − (1 − e^{−cτ})/c²)·ω²/μ.
        for &c in &[1e-3, 0.3, 1.0, 50.0] {
            for &tau in &[1e-8, 1e-3, 0.1, 1.0, 10.0, 1e3, 1e6] {
                let x = c * tau;
                // τ/c − (1 − e^{−x})/c² = τ²·(x/2 − x²/6 + x³/24 − …)/x... written as τ² ψ(x),
                // ψ(x) = (x − 1 + e^{−x})/x² (series for small x).
                let psi = if x < 1e-2 {
                    let mut s = 0.0;
                    let mut t = 0.5;
                    for k in 0..12 {
                        s += t;
                        t *= -x / f64::from(k + 3);
                    }
                    s
                } else {
                    (x + (-x).exp_m1()) / (x * x)
                };
                let limit = tau * tau * psi;
                for &omega2 in &[0.0, 1e-300, 1e-200, 1e-30] {
                    let mu = 10.0 * omega2;
                    let (hm1, phi) = factors(mu, omega2, c, tau);
                    if omega2 == 0.0 {
                        assert_eq!((hm1, phi), (0.0, 0.0));
                        continue;
                    }
                    assert!(
                        rel(phi, limit / 10.0) < 1e-12,
                        "c {c} τ {tau} ω² {omega2}: {phi} vs {}",
                        limit / 10.0
                    );
                    if omega2 * limit > 1e-290 {
                        assert!(
                            rel(hm1, -omega2 * limit) < 1e-12,
                            "c {c} τ {tau} ω² {omega2:e}: {hm1:e}"
                        );
                    }
                }
                // and the reference at a small but non-negligible ω² agrees with the series
                let omega2 = 1e-16 / tau.max(1.0).powi(2);
                let g = reference_g(omega2, c, tau);
                assert!(rel(g, limit) < 1e-9, "c {c} τ {tau}: {g} vs {limit}");
                let (_, phi) = factors(omega2, omega2, c, tau);
                assert!(rel(phi, g) < 1e-10);
            }
        }
    }

    #[test]
    fn smooth_across_critical_damping() {
        // Sweep c²/4ω² through 1 in tiny steps: no jump between branches.
        for &omega2 in &[1.0, 3e-3] {
            for &tau in &[0.5, 2.0, 7.0, 30.0] {
                for i in -200..=200 {
                    let ratio = 1.0 + f64::from(i) * 1e-3;
                    let c = 2.0 * (ratio * omega2).sqrt();
                    let (hm1, _) = factors(omega2, omega2, c, tau);
                    let g = reference_g(omega2, c, tau);
                    assert!(rel(-hm1 / omega2, g) < 1e-11, "ratio {ratio} τ {tau}");
                }
            }
        }
    }

    #[test]
    fn dense_sweep_over_time() {
        // Crosses every branch boundary (series, midpoint, divided difference, direct).
        for &ratio in &[1e-2, 0.3, 0.9, 0.999, 1.0, 1.001, 1.2, 3.0, 100.0] {
            let c = 2.0 * f64::sqrt(ratio);
            for i in 0..=300 {
                let tau = 10f64.powf(-3.0 + f64::from(i) * 0.02);
                let (hm1, phi) = factors(2.0, 1.0, c, tau);
                let g = reference_g(1.0, c, tau);
                assert!(
                    rel(-hm1, g) < 1e-11 && rel(2.0 * phi, g) < 1e-11,
                    "ratio {ratio} τ {tau}: {hm1} {g}"
                );
            }
        }
    }

    #[test]
    fn limits_and_large_times() {
        assert_eq!(factors(2.0, 1.0, 0.5, 0.0), (0.0, 0.0));
        assert_eq!(factors(2.0, 1.0, 0.5, f64::INFINITY), (-1.0, 0.5));
        // far beyond the decay time: h → 0, no overflow
        for &(omega2, c) in &[
            (1.0, 1e-3),
            (1.0, 2.0),
            (1.0, 10.0),
            (1e-6, 1e3),
            (4.0, 4.0),
        ] {
            for &tau in &[1e8, 1e12, 1e100, 1e300] {
                let (hm1, phi) = factors(omega2, omega2, c, tau);
                assert!(hm1.is_finite() && phi.is_finite(), "{omega2} {c} {tau}");
                if tau >= 1e12 {
                    assert!((hm1 + 1.0).abs() < 1e-12, "{omega2} {c} {tau}: {hm1}");
                    assert!((phi - 1.0 / omega2).abs() < 1e-12 / omega2);
                }
            }
        }
        // undamped oscillator: 1 − h = 1 − cos(ωτ) = 2 sin²(ωτ/2)
        for &tau in &[1e-6, 0.3, 2.0, 6.0, 100.0] {
            let (hm1, phi) = factors(1.0, 1.0, 0.0, tau);
            let want = 2.0 * (0.5 * tau).sin().powi(2);
            assert!(
                rel(-hm1, want) < 1e-12 && rel(phi, want) < 1e-12,
                "{tau}: {hm1} {want}"
            );
        }
    }
}
