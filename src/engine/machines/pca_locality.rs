//! The PCA-locality machine (Lukoianov et al., NeurIPS 2025): the Local machine with each
//! value's square window replaced by a mask read off the Wiener filter W = S (S + s²I)⁻¹ —
//! locality learned from the data instead of assumed.
//!
//! ```text
//! M[j, m] = W[j, m] / W[j, j],   window(m) = { j : |M[j, m]| ≥ τ · max|M| }   (τ = 0.02)
//! x̂₀[m] = Σₙ softmaxₙ(−Σ_{j ∈ window(m)} (x_j − a·φₙ,ⱼ)² / 2σ²) · φₙ[m]
//! ```
//!
//! One softmax over all training images per value (the authors' released code normalises
//! per data batch, which is wrong at low noise). The threshold is discontinuous, so W and
//! the masks are computed in float64 on the host; the masked distances are a matmul on the
//! device.

use std::sync::Arc;

use burn::tensor::{Tensor, TensorData};

use std::any::Any;

use super::super::analysis::inspect::{Inspection, centred_value, centred_x, pixel_votes, softmax, visit_windows};
use super::super::analysis::jacobian::{Covariance, Jacobian};
use super::super::control::{Cancelled, Control};
use super::super::denoiser::{Denoiser, State, to_host};
use super::super::geometry::{Boundary, ImageShape, PixelWindows};
use super::super::kernels::softmax::OnlineSoftmax;
use super::super::machine::{BenchPatches, Call, Denoised, Info, Machine, Needs, PixelMaps, Probe};
use super::gaussian::{GaussianModel, check_values, gaussian_model, gaussian_scales};

/// The masks at one noise level.
pub struct LocalityMasks {
    /// [D, D] on the device: 1 where value j is in value m's window (row j, column m).
    pub b: Tensor<2>,
    /// The same as host bits, per value: `host[m]` lists the values in m's window.
    pub host: Vec<Vec<u32>>,
    pub pixels: Arc<PixelWindows>,
}

/// Values in each value's window ([D] lists, ascending) from the filter `w` ([D, D]).
pub fn mask_lists(w: &[f64], d: usize, threshold: f64) -> Vec<Vec<u32>> {
    let diag: Vec<f64> = (0..d).map(|j| w[j * d + j]).map(|v| if v.abs() < 1e-6 { 1.0 } else { v }).collect();
    // M[j, m] = W[j, m] / W[j, j]: row j scaled by its diagonal.
    let diag = &diag;
    let max = (0..d).flat_map(|j| w[j * d..(j + 1) * d].iter().map(move |v| (v / diag[j]).abs())).fold(0f64, f64::max);
    let cut = threshold * max;
    let mut lists = vec![Vec::new(); d];
    for j in 0..d {
        for (m, v) in w[j * d..(j + 1) * d].iter().enumerate() {
            if (v / diag[j]).abs() >= cut {
                lists[m].push(j as u32);
            }
        }
    }
    lists
}

/// The masks per (ᾱ, threshold), oldest first; each is D² floats on the device.
#[derive(Default)]
pub(crate) struct MaskCache {
    masks: Vec<((u64, u64), Arc<LocalityMasks>)>,
    each: usize,
}

impl State for MaskCache {
    fn bytes(&self) -> usize {
        self.masks.len() * self.each
    }
    fn evict(&mut self, _keep: Option<&dyn Any>) {
        self.masks.clear();
    }
}

/// The masks at `call`'s noise level, cached per ᾱ (a run reuses its time grid).
pub(crate) fn locality_masks(den: &mut Denoiser, call: &Call, ctl: &Control) -> Result<Arc<LocalityMasks>, Cancelled> {
    let key = (call.alpha_bar.to_bits(), den.pca_threshold.to_bits());
    let each = den.shape.len().pow(2) * 4;
    let cached = den.state_mut::<MaskCache>();
    cached.each = each;
    if let Some(pos) = cached.masks.iter().position(|(k, _)| *k == key) {
        let entry = cached.masks.remove(pos);
        let masks = entry.1.clone();
        cached.masks.push(entry);
        return Ok(masks);
    }
    let model = gaussian_model(den, ctl)?;
    let masks = Arc::new(build_masks(den, &model, call, ctl)?);
    let keep = (den.cache_budget_bytes / 4 / each).clamp(1, 32);
    let cached = den.state_mut::<MaskCache>();
    while cached.masks.len() >= keep {
        cached.masks.remove(0);
    }
    cached.masks.push((key, masks.clone()));
    Ok(masks)
}

fn build_masks(den: &Denoiser, model: &GaussianModel, call: &Call, ctl: &Control) -> Result<LocalityMasks, Cancelled> {
    let (d, hw) = (den.shape.len(), den.shape.pixels());
    let (s2, _) = gaussian_scales(call);
    let lists = mask_lists(&model.filter(s2, &mut || ctl.check())?, d, den.pca_threshold);
    ctl.check()?;
    let mut b = vec![0f32; d * d];
    let mut pixels = PixelWindows::new(hw);
    for (m, list) in lists.iter().enumerate() {
        for &j in list {
            b[j as usize * d + m] = 1.0;
            pixels.set(m % hw, j as usize % hw);
        }
    }
    let b = Tensor::from_data(TensorData::new(b, [d, d]), &den.device);
    Ok(LocalityMasks { b, host: lists, pixels: Arc::new(pixels) })
}

pub struct PcaLocality;

const INFO: Info = Info {
    name: "pca-locality",
    aliases: &["pca_locality", "pca"],
    title: "PCA-locality",
    describe: "Data-driven locality (Lukoianov et al. 2025): Local with each pixel's window read off the Wiener filter instead of a square. Cost ≈ N·D² per call.",
    needs: Needs { training_size: true, ..Needs::NONE },
};

impl Machine for PcaLocality {
    fn info(&self) -> &'static Info {
        &INFO
    }
    fn check(&self, den: &Denoiser, call: &Call) -> Result<(), String> {
        check_values(den, call)
    }

    fn denoise(&self, den: &mut Denoiser, x: &[f32], call: &Call, ctl: &mut Control) -> Result<Denoised, Cancelled> {
        let masks = locality_masks(den, call, ctl)?;
        let (a, s2) = call.scales();
        let (c, hw, len) = (den.shape.c, den.shape.pixels(), den.shape.len());
        let per_chunk = (den.chunk_logits / len).clamp(1, den.n);
        ctl.begin(den.n.div_ceil(per_chunk))?;
        let xq = den.centred_query(x, a).narrow(1, 0, len); // [1, D]
        let mut sm = OnlineSoftmax::new(call.entropy || call.maps).with_argmax(call.maps);
        for n0 in (0..den.n).step_by(per_chunk) {
            let nc = per_chunk.min(den.n - n0);
            let phi = den.images.clone().narrow(0, n0, nc).narrow(1, 0, len); // [nc, D]
            let e = xq.clone().sub(phi.clone().mul_scalar(a)).square(); // [nc, D]
            let logits = e.matmul(masks.b.clone()).mul_scalar(-0.5 / s2).transpose(); // [D, nc]
            sm.update(logits, |p| p.mul(phi.transpose()).sum_dim(1)); // [D, 1]
            ctl.chunk_done()?;
        }
        let winner = sm.argmax();
        let (out, ent) = sm.finish().expect("at least one image");
        let x0 = den.uncentre(to_host(out));
        let ent = ent.map(to_host);
        let entropy = ent.as_ref().map(|e| e.iter().map(|&v| v as f64).sum::<f64>() / len as f64).unwrap_or(0.0);
        // Each value has its own softmax; a pixel's map shows its first channel's winner and
        // the mean of its channels' entropies.
        let maps = winner.map(|w| {
            let mut maps = PixelMaps::empty(hw);
            for px in 0..hw {
                maps.winner[px] = w[px] as u32;
                let e = ent.as_ref().expect("maps imply entropy");
                maps.entropy[px] = (0..c).map(|ch| e[ch * hw + px]).sum::<f32>() / c as f32;
            }
            maps.windows = Some(masks.pixels.clone());
            maps
        });
        Ok(Denoised { x0, entropy: entropy as f32, maps })
    }

    /// Each of the pixel's values has its own softmax over the images, on distances over its
    /// learned window; the votes shown are their mean over channels.
    fn inspect(
        &self,
        den: &mut Denoiser,
        x: &[f32],
        call: &Call,
        at: Probe,
        ctl: &Control,
    ) -> Result<Inspection, Cancelled> {
        let (y, px) = (at.y, at.x);
        let masks = locality_masks(den, call, ctl)?;
        let s = den.shape;
        let (a, s2) = call.scales();
        let (hw, len) = (s.pixels(), s.len());
        let xc = centred_x(den, x, a);
        let pixel = y * s.w + px;
        let mut q = vec![0f64; den.n];
        let mut x0 = Vec::with_capacity(s.c);
        for ch in 0..s.c {
            ctl.check()?;
            let m = ch * hw + pixel;
            let logits: Vec<f64> = (0..den.n)
                .map(|n| {
                    let img = &den.host_centred[n * len..(n + 1) * len];
                    let d: f64 =
                        masks.host[m].iter().map(|&j| (xc[j as usize] - a * img[j as usize] as f64).powi(2)).sum();
                    -d / (2.0 * s2)
                })
                .collect();
            let w = softmax(&logits);
            x0.push(
                den.mean[ch] as f64
                    + w.iter().enumerate().map(|(n, wn)| wn * den.host_centred[n * len + m] as f64).sum::<f64>(),
            );
            for (qn, wn) in q.iter_mut().zip(w) {
                *qn += wn / s.c as f64;
            }
        }
        let mut out = pixel_votes(den, &q, (y, px), at.top, Some(masks.pixels.window(pixel)));
        out.x0 = x0;
        Ok(out)
    }

    /// Each of the pixel's values m has its own softmax over the training images, compared on
    /// m's learned window: ∂x̂₀[m]/∂x_j = (a/σ²)·Cov_w(φ[m], φ[j]) for j in that window.
    fn jacobian(
        &self,
        den: &mut Denoiser,
        x: &[f32],
        call: &Call,
        at: Probe,
        ctl: &Control,
    ) -> Result<Option<Jacobian>, Cancelled> {
        let masks = locality_masks(den, call, ctl)?;
        let s = den.shape;
        let (a, s2) = call.scales();
        let (hw, len) = (s.pixels(), s.len());
        let xc = centred_x(den, x, a);
        let pixel = at.y * s.w + at.x;
        let mut values = vec![0f64; s.c * len];
        for o in 0..s.c {
            let m = o * hw + pixel;
            let window: Vec<i64> = masks.host[m].iter().map(|&j| j as i64).collect();
            let query: Vec<f64> = window.iter().map(|&j| xc[j as usize]).collect();
            let mut cov = Covariance::new(1, window.len());
            visit_windows(den, &query, &window, (a, s2), ctl, |n, _, logit, key| {
                cov.push(logit, &[centred_value(den, n, m)], key);
            })?;
            for (&j, c) in window.iter().zip(cov.finish()) {
                values[o * len + j as usize] += a / s2 * c;
            }
        }
        Ok(Some(Jacobian { shape: s, values }))
    }

    fn bench_patches(&self) -> BenchPatches {
        BenchPatches { gray: &[0], rgb: &[0] }
    }

    /// The masked distances are one [N, D] × [D, D] product.
    fn flops(&self, n: usize, s: ImageShape, _p: usize, _boundary: Boundary) -> f64 {
        let (n, c, h, w) = (n as f64, s.c as f64, s.h as f64, s.w as f64);
        2.0 * n * (c * h * w).powi(2) + 8.0 * n * c * h * w
    }
}
