//! The local machine: per pixel, a softmax over training images seen through the P×P window
//! around that pixel, at the same place only. Pixels outside the image do not count.

use burn::tensor::Tensor;
use burn::tensor::ops::PadMode;

use super::control::{Cancelled, Control};
use super::denoiser::{Call, Denoised, Denoiser, ElsPath, GeometryKey, PixelMaps, to_host};
use super::machine::Boundary;
use super::softmax::OnlineSoftmax;

impl Denoiser {
    pub(crate) fn local(&mut self, x: &[f32], call: &Call, ctl: &mut Control) -> Result<Denoised, Cancelled> {
        if self.els_path == ElsPath::Op {
            // Same math as LS: each pixel its own group, windows cut with zeros outside.
            let key =
                GeometryKey { patch: call.effective_patch(self.shape), boundary: Boundary::Zeros, equivariant: false };
            return self.els_op(x, call, key, ctl);
        }
        let (x0, entropy, winner) = self.local_parts(x, call, ctl)?;
        let hw = self.shape.pixels();
        let mean = entropy.as_ref().map(|e| e.iter().map(|&v| v as f64).sum::<f64>() / hw as f64);
        let maps = winner.map(|w| PixelMaps {
            winner: w.iter().map(|&n| n as u32).collect(),
            source: (0..hw as u32).collect(),
            entropy: entropy.unwrap_or_default(),
            windows: None,
        });
        Ok(Denoised { x0, entropy: mean.unwrap_or(0.0) as f32, maps })
    }

    /// x̂₀ ([C, H, W]) and, when `call.entropy` (or `call.maps`), each pixel's softmax
    /// entropy ([H·W]); with `call.maps`, each pixel's winning training image ([H·W]).
    #[allow(clippy::type_complexity)]
    pub(crate) fn local_parts(
        &mut self,
        x: &[f32],
        call: &Call,
        ctl: &mut Control,
    ) -> Result<(Vec<f32>, Option<Vec<f32>>, Option<Vec<i64>>), Cancelled> {
        let (a, s2) = call.scales();
        let p = call.patch.max(1) | 1;
        let (c, h, w) = (self.shape.c, self.shape.h, self.shape.w);
        let (hw, len) = (h * w, self.shape.len());
        let r = p / 2;
        let per_image = (c + 2) * (h + 2 * r) * (w + 2 * r);
        let per_chunk = (self.chunk_logits / per_image).clamp(1, self.n);
        ctl.begin(self.n.div_ceil(per_chunk))?;
        let xq = self.centred_query(x, a).narrow(1, 0, len).reshape([1, c, h, w]); // [1, C, H, W]
        let mut sm = OnlineSoftmax::new(call.entropy || call.maps).with_argmax(call.maps);
        for n0 in (0..self.n).step_by(per_chunk) {
            let nc = per_chunk.min(self.n - n0);
            let phi = self.images.clone().narrow(0, n0, nc).narrow(1, 0, len).reshape([nc, c, h, w]);
            let d = xq.clone().sub(phi.clone().mul_scalar(a)).square().sum_dim(1); // [nc, 1, H, W]
            let d2 = window_sum(d, p); // [nc, 1, H, W]
            let logits = d2.reshape([nc, hw]).mul_scalar(-0.5 / s2).transpose(); // [HW, nc]
            sm.update(logits, |weights| {
                let weights = weights.transpose().reshape([nc, 1, hw]); // [nc, 1, HW]
                weights
                    .mul(phi.reshape([nc, c, hw])) // [nc, C, HW]
                    .sum_dim(0)
                    .reshape([c, hw])
                    .transpose() // [HW, C]
            });
            ctl.chunk_done()?;
        }
        let winner = sm.argmax(); // columns are images, in order
        let (out, ent) = sm.finish().expect("at least one image");
        let out = to_host(out); // [HW, C]
        let mut x0 = vec![0f32; len];
        for px in 0..hw {
            for ch in 0..c {
                x0[ch * hw + px] = out[px * c + ch] + self.mean[ch];
            }
        }
        Ok((x0, ent.map(to_host), winner))
    }
}

/// Sum of `d` over the P×P window centred at each pixel, zero outside the image.
/// Done as two separable passes of shifted adds, which stays exact in float32 (a cumulative
/// sum would cancel badly).
fn window_sum(d: Tensor<4>, p: usize) -> Tensor<4> {
    let [_, _, h, w] = d.dims();
    let r = p / 2;
    if r == 0 {
        return d;
    }
    let padded = d.pad((r, r, r, r), PadMode::Constant(0.0)); // [n, 1, H+2r, W+2r]
    let rows = (1..p).fold(padded.clone().narrow(2, 0, h), |acc, dy| acc.add(padded.clone().narrow(2, dy, h))); // [n, 1, H, W+2r]
    (1..p).fold(rows.clone().narrow(3, 0, w), |acc, dx| acc.add(rows.clone().narrow(3, dx, w))) // [n, 1, H, W]
}
