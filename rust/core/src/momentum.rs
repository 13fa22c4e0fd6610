//! Heavy-ball momentum, closed form per eigenmode (semantics §8). Placeholder.

/// `(h − 1, (1 − h)/μ)` of the damped oscillator `u'' + c u' + ω² u = 0`, `u(0) = 1`,
/// `u'(0) = 0`, at time `τ`.
#[must_use]
pub fn factors(mu: f64, omega2: f64, c: f64, tau: f64) -> (f64, f64) {
    let _ = (mu, omega2, c, tau);
    unimplemented!("momentum closed form")
}
