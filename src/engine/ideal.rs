//! The ideal machine: a softmax over whole training images. It memorises.

use burn::tensor::Tensor;

use super::control::{Cancelled, Control};
use super::denoiser::{Call, Denoised, Denoiser, PixelMaps, to_host};
use super::els::augment_query;
use super::softmax::OnlineSoftmax;

impl Denoiser {
    pub(crate) fn ideal(&mut self, x: &[f32], call: &Call, ctl: &mut Control) -> Result<Denoised, Cancelled> {
        let (a, s2) = call.scales();
        let len = self.shape.len();
        let per_chunk = (self.chunk_logits / len).clamp(1, self.n);
        ctl.begin(self.n.div_ceil(per_chunk))?;
        let query = augment_query(self.centred_query(x, a).narrow(1, 0, len), a, s2); // [1, D+1]
        let mut sm = OnlineSoftmax::new(call.entropy || call.maps).with_argmax(call.maps);
        for n0 in (0..self.n).step_by(per_chunk) {
            let nc = per_chunk.min(self.n - n0);
            let keys = self.images.clone().narrow(0, n0, nc).narrow(1, 0, len); // [nc, D]
            let norms = keys.clone().square().sum_dim(1); // [nc, 1]
            let keys_aug_t = Tensor::cat(vec![keys.clone(), norms], 1).transpose(); // [D+1, nc]
            sm.update(query.clone().matmul(keys_aug_t), |p| p.matmul(keys)); // [1, D]
            ctl.chunk_done()?;
        }
        let winner = sm.argmax();
        let (out, ent) = sm.finish().expect("at least one image");
        let entropy = ent.map(|e| to_host(e)[0]).unwrap_or(0.0);
        // One softmax over whole images: every pixel has the same winner, taken in place.
        let hw = self.shape.pixels();
        let maps = winner.map(|w| PixelMaps {
            winner: vec![w[0] as u32; hw],
            source: (0..hw as u32).collect(),
            entropy: vec![entropy; hw],
            windows: None,
        });
        Ok(Denoised { x0: self.uncentre(to_host(out)), entropy, maps })
    }

    /// Adds the per-channel mean back to a centred flat image.
    pub(crate) fn uncentre(&self, mut v: Vec<f32>) -> Vec<f32> {
        let hw = self.shape.pixels();
        for (i, x) in v.iter_mut().enumerate() {
            *x += self.mean[i / hw];
        }
        v
    }
}
