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

use super::control::{Cancelled, Control};
use super::denoiser::{Call, Denoised, Denoiser, PixelMaps, to_host};
use super::gaussian::{GaussianModel, gaussian_scales};
use super::softmax::OnlineSoftmax;

/// The paper's threshold: a value belongs to a window when its normalised filter weight is at
/// least 2% of the largest.
pub const PCA_THRESHOLD: f64 = 0.02;

/// Which pixels each pixel's window holds, as bits: row m, bit j. Channels are merged (a
/// pixel is in the window when any of its values is in the window of any of m's values), which
/// is what an overlay on the image can show.
#[derive(Clone, Debug, PartialEq)]
pub struct PixelWindows {
    pub hw: usize,
    words: usize,
    bits: Vec<u64>,
}

impl PixelWindows {
    /// No pixel in any window yet.
    pub fn new(hw: usize) -> Self {
        let words = hw.div_ceil(64);
        Self { hw, words, bits: vec![0; hw * words] }
    }
    /// Puts pixel j in pixel m's window.
    pub fn set(&mut self, m: usize, j: usize) {
        self.bits[m * self.words + j / 64] |= 1 << (j % 64);
    }
    pub fn contains(&self, m: usize, j: usize) -> bool {
        self.bits[m * self.words + j / 64] & (1 << (j % 64)) != 0
    }
    /// The pixels in pixel m's window, ascending.
    pub fn window(&self, m: usize) -> Vec<usize> {
        (0..self.hw).filter(|&j| self.contains(m, j)).collect()
    }
    pub fn size(&self, m: usize) -> usize {
        self.bits[m * self.words..(m + 1) * self.words].iter().map(|w| w.count_ones() as usize).sum()
    }
}

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

impl Denoiser {
    /// The masks at `call`'s noise level, cached per ᾱ (a run reuses its time grid).
    pub(crate) fn locality_masks(&mut self, call: &Call, ctl: &Control) -> Result<Arc<LocalityMasks>, Cancelled> {
        let key = (call.alpha_bar.to_bits(), self.pca_threshold.to_bits());
        if let Some(pos) = self.pca_masks.iter().position(|(k, _)| *k == key) {
            let entry = self.pca_masks.remove(pos);
            let masks = entry.1.clone();
            self.pca_masks.push(entry);
            return Ok(masks);
        }
        let model = self.gaussian_model(ctl)?;
        let masks = Arc::new(self.build_masks(&model, call));
        let each = self.shape.len().pow(2) * 4;
        let keep = (self.cache_budget_bytes / 4 / each).clamp(1, 32);
        while self.pca_masks.len() >= keep {
            self.pca_masks.remove(0);
        }
        self.pca_masks.push((key, masks.clone()));
        Ok(masks)
    }

    fn build_masks(&self, model: &GaussianModel, call: &Call) -> LocalityMasks {
        let (d, hw) = (self.shape.len(), self.shape.pixels());
        let (s2, _) = gaussian_scales(call);
        let lists = mask_lists(&model.filter(s2), d, self.pca_threshold);
        let mut b = vec![0f32; d * d];
        let mut pixels = PixelWindows::new(hw);
        for (m, list) in lists.iter().enumerate() {
            for &j in list {
                b[j as usize * d + m] = 1.0;
                pixels.set(m % hw, j as usize % hw);
            }
        }
        let b = Tensor::from_data(TensorData::new(b, [d, d]), &self.device);
        LocalityMasks { b, host: lists, pixels: Arc::new(pixels) }
    }

    pub(crate) fn pca_locality(&mut self, x: &[f32], call: &Call, ctl: &mut Control) -> Result<Denoised, Cancelled> {
        let masks = self.locality_masks(call, ctl)?;
        let (a, s2) = call.scales();
        let (c, hw, len) = (self.shape.c, self.shape.pixels(), self.shape.len());
        let per_chunk = (self.chunk_logits / len).clamp(1, self.n);
        ctl.begin(self.n.div_ceil(per_chunk))?;
        let xq = self.centred_query(x, a).narrow(1, 0, len); // [1, D]
        let mut sm = OnlineSoftmax::new(call.entropy || call.maps).with_argmax(call.maps);
        for n0 in (0..self.n).step_by(per_chunk) {
            let nc = per_chunk.min(self.n - n0);
            let phi = self.images.clone().narrow(0, n0, nc).narrow(1, 0, len); // [nc, D]
            let e = xq.clone().sub(phi.clone().mul_scalar(a)).square(); // [nc, D]
            let logits = e.matmul(masks.b.clone()).mul_scalar(-0.5 / s2).transpose(); // [D, nc]
            sm.update(logits, |p| p.mul(phi.transpose()).sum_dim(1)); // [D, 1]
            ctl.chunk_done()?;
        }
        let winner = sm.argmax();
        let (out, ent) = sm.finish().expect("at least one image");
        let x0 = self.uncentre(to_host(out));
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
}
