//! "Which training patches made this pixel?": the full softmax of one pixel, ranked.
//!
//! One pixel is cheap enough to do on the host in float64, which also makes it an
//! independent check of the device path.

use super::control::{Cancelled, Control};
use super::denoiser::{Call, Denoiser};
use super::geometry::{els_groups, patch_indices};
use super::machine::MachineKind;

/// One training candidate's share of a pixel's vote.
#[derive(Clone, Debug, PartialEq)]
pub struct Vote {
    pub image: usize,
    /// Centre of the training patch (for the equivariant machine: the shift's source pixel).
    pub y: usize,
    pub x: usize,
    pub weight: f64,
}

/// A pixel's ranked votes plus how spread out they are.
#[derive(Clone, Debug, PartialEq)]
pub struct Inspection {
    /// Highest weight first, at most `top` of them.
    pub votes: Vec<Vote>,
    pub candidates: usize,
    /// Sum of all weights (1 up to rounding): a check, shown in tests.
    pub weight_sum: f64,
    /// Entropy of the weights in nats.
    pub entropy: f64,
    /// x̂₀ at the pixel (C values): every candidate's value weighted, not only the top ones.
    pub x0: Vec<f64>,
    /// How many of the largest weights it takes to reach 90% of the total.
    pub count_90: usize,
}

impl Denoiser {
    /// Ranks the candidates that vote for pixel (y, x) of x̂₀(x) under `call`. Checks `ctl`
    /// once per training image: the equivariant machine's ranking can take seconds.
    pub fn inspect(
        &self,
        x: &[f32],
        call: &Call,
        y: usize,
        px: usize,
        top: usize,
        ctl: &Control,
    ) -> Result<Inspection, Cancelled> {
        assert!(y < self.shape.h && px < self.shape.w, "pixel ({y}, {px}) is outside the image");
        let s = self.shape;
        let (a, s2) = call.scales();
        let hw = s.pixels();
        let len = s.len();
        let xc: Vec<f64> =
            x.iter().enumerate().map(|(i, &v)| v as f64 - a * self.mean[i / hw] as f64).chain([0.0]).collect();
        let img = |n: usize, i: usize| -> f64 { if i == len { 0.0 } else { self.host_centred[n * len + i] as f64 } };
        let mut cands: Vec<(Vote, f64)> = Vec::new();
        match call.machine {
            MachineKind::Ideal => {
                for n in 0..self.n {
                    ctl.check()?;
                    let d: f64 = (0..len).map(|i| (xc[i] - a * img(n, i)).powi(2)).sum();
                    cands.push((Vote { image: n, y, x: px, weight: 0.0 }, -d / (2.0 * s2)));
                }
            }
            MachineKind::Local => {
                let p = call.effective_patch(s);
                let mut idx = Vec::new();
                patch_indices(s, p, y, px, false, &mut idx);
                for n in 0..self.n {
                    ctl.check()?;
                    let d: f64 = idx.iter().map(|&i| (xc[i as usize] - a * img(n, i as usize)).powi(2)).sum();
                    cands.push((Vote { image: n, y, x: px, weight: 0.0 }, -d / (2.0 * s2)));
                }
            }
            MachineKind::Els => {
                let p = call.effective_patch(s);
                let groups = els_groups(s, p, call.boundary, true);
                let pixel = y * s.w + px;
                let g = groups.iter().find(|g| g.pixels.contains(&pixel)).expect("every pixel has a group");
                let q = g.pixels.iter().position(|&v| v == pixel).expect("pixel in its group");
                let d = g.query_idx.len() / g.pixels.len();
                let query: Vec<f64> = g.query_idx[q * d..(q + 1) * d].iter().map(|&i| xc[i as usize]).collect();
                for n in 0..self.n {
                    ctl.check()?;
                    for (k, &kp) in g.key_pixels.iter().enumerate() {
                        let keys = &g.key_idx[k * d..(k + 1) * d];
                        let dist: f64 =
                            keys.iter().zip(&query).map(|(&i, &qv)| (qv - a * img(n, i as usize)).powi(2)).sum();
                        cands.push((Vote { image: n, y: kp / s.w, x: kp % s.w, weight: 0.0 }, -dist / (2.0 * s2)));
                    }
                }
            }
            MachineKind::Equivariant => {
                // Candidate (n, shift) puts φ_n[p − shift] at p.
                for n in 0..self.n {
                    ctl.check()?;
                    for sy in 0..s.h {
                        for sx in 0..s.w {
                            let mut d = 0.0;
                            for c in 0..s.c {
                                for qy in 0..s.h {
                                    for qx in 0..s.w {
                                        let src = c * hw + ((qy + s.h - sy) % s.h) * s.w + (qx + s.w - sx) % s.w;
                                        d += (xc[c * hw + qy * s.w + qx] - a * img(n, src)).powi(2);
                                    }
                                }
                            }
                            let (sy0, sx0) = ((y + s.h - sy) % s.h, (px + s.w - sx) % s.w);
                            cands.push((Vote { image: n, y: sy0, x: sx0, weight: 0.0 }, -d / (2.0 * s2)));
                        }
                    }
                }
            }
        }
        let max = cands.iter().map(|c| c.1).fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = cands.iter().map(|c| (c.1 - max).exp()).sum();
        let mut entropy = 0.0;
        let mut sum = 0.0;
        for (vote, logit) in cands.iter_mut() {
            vote.weight = (*logit - max).exp() / z;
            sum += vote.weight;
            if vote.weight > 0.0 {
                entropy -= vote.weight * vote.weight.ln();
            }
        }
        // Each vote's value is training image `image` at (y, x): its patch centre, the pixel
        // itself (ideal, local) or the shifted source (equivariant).
        let mut x0: Vec<f64> = self.mean.iter().map(|&m| m as f64).collect();
        for (vote, _) in &cands {
            for (ch, v) in x0.iter_mut().enumerate() {
                *v += vote.weight * img(vote.image, ch * hw + vote.y * s.w + vote.x);
            }
        }
        let candidates = cands.len();
        let mut votes: Vec<Vote> = cands.into_iter().map(|c| c.0).collect();
        votes.sort_by(|a, b| b.weight.total_cmp(&a.weight));
        let mut acc = 0.0;
        let count_90 = votes.iter().take_while(|v| (acc < 0.9 * sum, acc += v.weight).0).count().max(1);
        votes.truncate(top);
        Ok(Inspection { votes, candidates, weight_sum: sum, entropy, x0, count_90 })
    }
}
