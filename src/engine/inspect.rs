//! "Which training patches made this pixel?": the full softmax of one pixel, ranked.
//!
//! One pixel is cheap enough to do on the host in float64, which also makes it an
//! independent check of the device path.

use super::control::{Cancelled, Control};
use super::denoiser::{Call, Denoiser};
use super::gaussian::gaussian_scales;
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
    /// How many of the largest weights it takes to reach 90% of the total (for the Gaussian
    /// machine: input pixels carrying 90% of the filter's absolute weight).
    pub count_90: usize,
    /// The Gaussian machine's Wiener-filter row for the pixel, per input pixel ([H·W]; summed
    /// over input channels, averaged over the pixel's channels): which pixels of z − μ it
    /// reads, and how much. None for the other machines.
    pub filter: Option<Vec<f64>>,
    /// The PCA-locality machine's learned window of the pixel (pixel indices y·W + x,
    /// ascending). None for the machines with square windows.
    pub window: Option<Vec<usize>>,
}

impl Denoiser {
    /// Ranks the candidates that vote for pixel (y, x) of x̂₀(x) under `call`. Checks `ctl`
    /// once per training image: the equivariant machine's ranking can take seconds.
    pub fn inspect(
        &mut self,
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
        let xc = self.centred_x(x, a);
        let img = |n: usize, i: usize| -> f64 { if i == len { 0.0 } else { self.host_centred[n * len + i] as f64 } };
        let mut cands: Vec<(Vote, f64)> = Vec::new();
        match call.machine {
            MachineKind::Gaussian => return self.inspect_gaussian(x, call, y, px, ctl),
            MachineKind::Pspc => return self.inspect_pspc(x, call, y, px, top, ctl),
            MachineKind::PcaLocality => return self.inspect_pca(x, call, y, px, top, ctl),
            MachineKind::Cnn => return Ok(self.inspect_cnn(x, call, y, px)),
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
        let weights = softmax(&cands.iter().map(|c| c.1).collect::<Vec<_>>());
        // Each vote's value is training image `image` at (y, x): its patch centre, the pixel
        // itself (ideal, local) or the shifted source (equivariant).
        let mut x0: Vec<f64> = self.mean.iter().map(|&m| m as f64).collect();
        let votes: Vec<Vote> = cands
            .into_iter()
            .zip(weights)
            .map(|((vote, _), weight)| {
                for (ch, v) in x0.iter_mut().enumerate() {
                    *v += weight * img(vote.image, ch * hw + vote.y * s.w + vote.x);
                }
                Vote { weight, ..vote }
            })
            .collect();
        Ok(ranked(votes, x0, top))
    }

    /// The Gaussian machine has no vote: its x̂₀ at a pixel is a fixed linear combination of
    /// z − μ, whose weights (a row of the Wiener filter) are what the inspector shows.
    fn inspect_gaussian(
        &mut self,
        x: &[f32],
        call: &Call,
        y: usize,
        px: usize,
        ctl: &Control,
    ) -> Result<Inspection, Cancelled> {
        let model = self.gaussian_model(ctl)?;
        let (s2, inv_a) = gaussian_scales(call);
        let (c, hw) = (self.shape.c, self.shape.pixels());
        let v: Vec<f64> = x.iter().zip(&model.mu).map(|(&xi, m)| xi as f64 * inv_a - m).collect();
        let pixel = y * self.shape.w + px;
        let mut filter = vec![0f64; hw];
        let mut x0 = Vec::with_capacity(c);
        for ch in 0..c {
            let m = ch * hw + pixel;
            let row = model.filter_row(m, s2);
            x0.push(model.mu[m] + row.iter().zip(&v).map(|(a, b)| a * b).sum::<f64>());
            for (j, w) in row.iter().enumerate() {
                filter[j % hw] += w / c as f64;
            }
        }
        let total: f64 = filter.iter().map(|w| w.abs()).sum();
        let mut mags: Vec<f64> = filter.iter().map(|w| w.abs()).collect();
        mags.sort_by(|a, b| b.total_cmp(a));
        let mut acc = 0.0;
        let count_90 = mags.iter().take_while(|&&w| (acc < 0.9 * total, acc += w).0).count().max(1);
        Ok(Inspection {
            votes: Vec::new(),
            candidates: self.shape.len(),
            weight_sum: filter.iter().sum(),
            entropy: 0.0,
            x0,
            count_90,
            filter: Some(filter),
            window: None,
        })
    }

    /// The CNN has no votes: only its x̂₀ at the pixel.
    fn inspect_cnn(&self, x: &[f32], call: &Call, y: usize, px: usize) -> Inspection {
        let s = self.shape;
        let x0 = match self.cnn() {
            Some(cnn) => {
                let (all, _) = cnn.x0_hat(x, super::cnn::cosine_time(call.alpha_bar), call.alpha_bar, self.device());
                (0..s.c).map(|ch| all[ch * s.pixels() + y * s.w + px] as f64).collect()
            }
            None => Vec::new(),
        };
        Inspection {
            votes: Vec::new(),
            candidates: 0,
            weight_sum: 0.0,
            entropy: 0.0,
            x0,
            count_90: 0,
            filter: None,
            window: None,
        }
    }

    /// PSPC: the pixel's weight on image n is the mean, over the in-image windows covering
    /// it, of that window's softmax weight on n.
    fn inspect_pspc(
        &self,
        x: &[f32],
        call: &Call,
        y: usize,
        px: usize,
        top: usize,
        ctl: &Control,
    ) -> Result<Inspection, Cancelled> {
        let s = self.shape;
        let (a, s2) = call.scales();
        let (hw, len) = (s.pixels(), s.len());
        let p = call.effective_patch(s);
        let xc = self.centred_x(x, a);
        let rows = y.saturating_sub(p - 1)..=y.min(s.h - p);
        let cols = px.saturating_sub(p - 1)..=px.min(s.w - p);
        let count = (rows.clone().count() * cols.clone().count()) as f64;
        let mut q = vec![0f64; self.n];
        for ty in rows {
            for tx in cols.clone() {
                ctl.check()?;
                let logits: Vec<f64> = (0..self.n)
                    .map(|n| {
                        let img = &self.host_centred[n * len..(n + 1) * len];
                        let mut d = 0.0;
                        for ch in 0..s.c {
                            for wy in ty..ty + p {
                                for wx in tx..tx + p {
                                    let i = ch * hw + wy * s.w + wx;
                                    d += (xc[i] - a * img[i] as f64).powi(2);
                                }
                            }
                        }
                        -d / (2.0 * s2)
                    })
                    .collect();
                for (qn, w) in q.iter_mut().zip(softmax(&logits)) {
                    *qn += w / count;
                }
            }
        }
        Ok(self.pixel_votes(&q, y, px, top, None))
    }

    /// PCA-locality: each of the pixel's values has its own softmax over the images, on
    /// distances over its learned window; the votes shown are their mean over channels.
    fn inspect_pca(
        &mut self,
        x: &[f32],
        call: &Call,
        y: usize,
        px: usize,
        top: usize,
        ctl: &Control,
    ) -> Result<Inspection, Cancelled> {
        let masks = self.locality_masks(call, ctl)?;
        let s = self.shape;
        let (a, s2) = call.scales();
        let (hw, len) = (s.pixels(), s.len());
        let xc = self.centred_x(x, a);
        let pixel = y * s.w + px;
        let mut q = vec![0f64; self.n];
        let mut x0 = Vec::with_capacity(s.c);
        for ch in 0..s.c {
            ctl.check()?;
            let m = ch * hw + pixel;
            let logits: Vec<f64> = (0..self.n)
                .map(|n| {
                    let img = &self.host_centred[n * len..(n + 1) * len];
                    let d: f64 =
                        masks.host[m].iter().map(|&j| (xc[j as usize] - a * img[j as usize] as f64).powi(2)).sum();
                    -d / (2.0 * s2)
                })
                .collect();
            let w = softmax(&logits);
            x0.push(
                self.mean[ch] as f64
                    + w.iter().enumerate().map(|(n, wn)| wn * self.host_centred[n * len + m] as f64).sum::<f64>(),
            );
            for (qn, wn) in q.iter_mut().zip(w) {
                *qn += wn / s.c as f64;
            }
        }
        let mut out = self.pixel_votes(&q, y, px, top, Some(masks.pixels.window(pixel)));
        out.x0 = x0;
        Ok(out)
    }

    /// Ranked votes for a pixel whose value is Σₙ qₙ φₙ at the pixel itself.
    fn pixel_votes(&self, q: &[f64], y: usize, px: usize, top: usize, window: Option<Vec<usize>>) -> Inspection {
        let s = self.shape;
        let (hw, len) = (s.pixels(), s.len());
        let pixel = y * s.w + px;
        let x0 = (0..s.c)
            .map(|ch| {
                self.mean[ch] as f64
                    + q.iter()
                        .enumerate()
                        .map(|(n, w)| w * self.host_centred[n * len + ch * hw + pixel] as f64)
                        .sum::<f64>()
            })
            .collect();
        let votes = q.iter().enumerate().map(|(image, &weight)| Vote { image, y, x: px, weight }).collect();
        Inspection { window, ..ranked(votes, x0, top) }
    }

    /// x − a·m in float64, flat, with the trailing zero slot.
    fn centred_x(&self, x: &[f32], a: f64) -> Vec<f64> {
        let hw = self.shape.pixels();
        x.iter().enumerate().map(|(i, &v)| v as f64 - a * self.mean[i / hw] as f64).chain([0.0]).collect()
    }
}

/// Softmax of float64 logits.
fn softmax(logits: &[f64]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
    let z: f64 = e.iter().sum();
    e.into_iter().map(|v| v / z).collect()
}

/// Sorts weighted votes, highest first, and summarises them: entropy, 90% count, the top few.
fn ranked(mut votes: Vec<Vote>, x0: Vec<f64>, top: usize) -> Inspection {
    let sum: f64 = votes.iter().map(|v| v.weight).sum();
    let entropy = -votes.iter().filter(|v| v.weight > 0.0).map(|v| v.weight * v.weight.ln()).sum::<f64>();
    let candidates = votes.len();
    votes.sort_by(|a, b| b.weight.total_cmp(&a.weight));
    let mut acc = 0.0;
    let count_90 = votes.iter().take_while(|v| (acc < 0.9 * sum, acc += v.weight).0).count().max(1);
    votes.truncate(top);
    Inspection { votes, candidates, weight_sum: sum, entropy, x0, count_90, filter: None, window: None }
}
