//! The 4th-order dense output of a Dormand–Prince step.

use super::tableau::P;

/// The 4th-order dense output at `t + x·h` (`0 ≤ x ≤ 1`) of the last step:
/// `y + h Σ_s b_s(x) k_s`, `b_s(x) = Σ_q P[s][q] x^{q+1}`.
pub(super) fn dense(y: &[f64], k: &[Vec<f64>; 7], h: f64, x: f64, out: &mut [f64]) {
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
