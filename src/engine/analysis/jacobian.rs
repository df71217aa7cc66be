//! What one pixel is sensitive to: ∂x̂₀[o, pixel] / ∂x_t[c, h, w] over the whole canvas.
//!
//! The patch machines' x̂₀ at a pixel is a softmax-weighted mean of training values c_k (the
//! centres of its candidate patches), with logits −‖q − a·k‖²/2σ² and q the pixel's window of
//! x_t. Since ∂logit_k/∂q = (a·k − q)/σ², ∂x̂₀/∂q = (a/σ²)·Cov_w(c, k): the weighted covariance
//! of the candidates' centres with their window values (SCIENCE.md, "Sensitivity of a pixel").
//! Ideal is the same with the whole image as the window. A window entry outside the image
//! (zeros boundary) reads no input; entries that wrap onto one pixel (circular) add up.
//!
//! One pixel is done on the host in float64, like the inspector, and checked against central
//! finite differences of the float64 reference (`tests/jacobian.rs`).

use super::super::geometry::ImageShape;

/// ∂x̂₀ at one pixel with respect to every value of x_t.
#[derive(Clone, Debug, PartialEq)]
pub struct Jacobian {
    /// The canvas: x_t's and x̂₀'s shape.
    pub shape: ImageShape,
    /// [C_out, C_in, H, W]: `values[o·C·H·W + c·H·W + h·W + w]` = ∂x̂₀[o, pixel]/∂x_t[c, h, w].
    pub values: Vec<f64>,
}

impl Jacobian {
    pub fn at(&self, o: usize, c: usize, h: usize, w: usize) -> f64 {
        let s = self.shape;
        self.values[((o * s.c + c) * s.h + h) * s.w + w]
    }

    /// The map of one output channel: Σ over input channels, per input pixel ([H·W]), as the
    /// studio draws it.
    pub fn map(&self, o: usize) -> Vec<f64> {
        let (hw, len) = (self.shape.pixels(), self.shape.len());
        (0..hw).map(|p| (0..self.shape.c).map(|c| self.values[o * len + c * hw + p]).sum()).collect()
    }
}

/// The weighted covariance Cov_w(c, k) of a stream of candidates, with w the softmax of their
/// logits: Σ e^(l−m), Σ e^(l−m)·c, Σ e^(l−m)·k and Σ e^(l−m)·c·kᵀ against the running largest
/// logit m, re-based when it rises.
pub(crate) struct Covariance {
    c: usize,
    d: usize,
    max: f64,
    s0: f64,
    sc: Vec<f64>,
    sk: Vec<f64>,
    /// [C, D]
    sck: Vec<f64>,
}

impl Covariance {
    /// C centre values and D window values per candidate.
    pub fn new(c: usize, d: usize) -> Self {
        Self { c, d, max: f64::NEG_INFINITY, s0: 0.0, sc: vec![0.0; c], sk: vec![0.0; d], sck: vec![0.0; c * d] }
    }

    pub fn push(&mut self, logit: f64, centre: &[f64], key: &[f64]) {
        debug_assert!(centre.len() == self.c && key.len() == self.d);
        if logit > self.max {
            let scale = (self.max - logit).exp(); // 0 for the first candidate
            self.s0 *= scale;
            for v in self.sc.iter_mut().chain(&mut self.sk).chain(&mut self.sck) {
                *v *= scale;
            }
            self.max = logit;
        }
        let w = (logit - self.max).exp();
        if w == 0.0 {
            return;
        }
        self.s0 += w;
        for (o, &co) in centre.iter().enumerate() {
            self.sc[o] += w * co;
            let wc = w * co;
            for (s, &kv) in self.sck[o * self.d..(o + 1) * self.d].iter_mut().zip(key) {
                *s += wc * kv;
            }
        }
        for (s, &kv) in self.sk.iter_mut().zip(key) {
            *s += w * kv;
        }
    }

    /// Cov_w(c, k) ([C, D]): E[c·k] − E[c]·E[k]. Zero when no candidate came.
    pub fn finish(self) -> Vec<f64> {
        if self.s0 == 0.0 {
            return vec![0.0; self.c * self.d];
        }
        let z = self.s0;
        let mut cov = vec![0.0; self.c * self.d];
        for o in 0..self.c {
            let ec = self.sc[o] / z;
            for t in 0..self.d {
                cov[o * self.d + t] = self.sck[o * self.d + t] / z - ec * self.sk[t] / z;
            }
        }
        cov
    }
}

/// The Jacobian from a pixel's covariance ([C, D]): (a/σ²)·Cov scattered onto the inputs its
/// window reads. `query_idx[t]` is window entry t's flat index into x_t ([C, H, W] of
/// `canvas`), or `canvas.len()` for an entry outside the image.
pub(crate) fn assemble(canvas: ImageShape, cov: &[f64], query_idx: &[usize], a: f64, s2: f64) -> Jacobian {
    let (c, len) = (canvas.c, canvas.len());
    let d = query_idx.len();
    assert_eq!(cov.len(), c * d, "a covariance row per output channel");
    let mut values = vec![0.0; c * len];
    let scale = a / s2;
    for o in 0..c {
        for (t, &i) in query_idx.iter().enumerate() {
            if i < len {
                values[o * len + i] += scale * cov[o * d + t];
            }
        }
    }
    Jacobian { shape: canvas, values }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The streamed covariance equals the two-pass one, whatever order the logits come in
    /// (rising maxima re-base the sums).
    #[test]
    fn streamed_covariance_is_the_weighted_covariance() {
        let cands: Vec<(f64, [f64; 2], [f64; 3])> = (0..50)
            .map(|i| {
                let f = i as f64;
                ((f * 0.37).sin() * 30.0, [(f * 0.11).cos(), (f * 0.7).sin()], [f * 0.01, (f * 0.3).cos(), -(f * 0.05)])
            })
            .collect();
        let mut cov = Covariance::new(2, 3);
        for (l, c, k) in &cands {
            cov.push(*l, c, k);
        }
        let got = cov.finish();
        let m = cands.iter().map(|c| c.0).fold(f64::NEG_INFINITY, f64::max);
        let w: Vec<f64> = cands.iter().map(|c| (c.0 - m).exp()).collect();
        let z: f64 = w.iter().sum();
        for o in 0..2 {
            for t in 0..3 {
                let ec: f64 = cands.iter().zip(&w).map(|(c, w)| w * c.1[o]).sum::<f64>() / z;
                let ek: f64 = cands.iter().zip(&w).map(|(c, w)| w * c.2[t]).sum::<f64>() / z;
                let want: f64 = cands.iter().zip(&w).map(|(c, w)| w * (c.1[o] - ec) * (c.2[t] - ek)).sum::<f64>() / z;
                assert!((got[o * 3 + t] - want).abs() < 1e-12, "({o}, {t}): {} vs {want}", got[o * 3 + t]);
            }
        }
    }
}
