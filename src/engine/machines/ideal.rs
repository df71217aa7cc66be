//! The ideal machine: a softmax over whole training images. It memorises.

use burn::tensor::Tensor;

use super::super::analysis::inspect::{Inspection, Ranker, Vote, centred_x, visit_windows};
use super::super::analysis::jacobian::{Covariance, Jacobian, assemble};
use super::super::control::{Cancelled, Control};
use super::super::denoiser::{Denoiser, to_host};
use super::super::geometry::{Boundary, ImageShape};
use super::super::kernels::burn_ops::augment_query;
use super::super::kernels::softmax::OnlineSoftmax;
use super::super::machine::{Call, Denoised, Info, Machine, Needs, PixelMaps, Probe};

pub struct Ideal;

const INFO: Info = Info {
    name: "ideal",
    aliases: &["is"],
    title: "Ideal",
    describe: "Softmax over whole training images; memorises. Cost ≈ N·C·H·W.",
    needs: Needs { training_size: true, ..Needs::NONE },
};

impl Machine for Ideal {
    fn info(&self) -> &'static Info {
        &INFO
    }

    fn denoise(&self, den: &mut Denoiser, x: &[f32], call: &Call, ctl: &mut Control) -> Result<Denoised, Cancelled> {
        let (a, s2) = call.scales();
        let len = den.shape.len();
        let per_chunk = (den.chunk_logits / len).clamp(1, den.n);
        ctl.begin(den.n.div_ceil(per_chunk))?;
        let query = augment_query(den.centred_query(x, a).narrow(1, 0, len), a, s2); // [1, D+1]
        let mut sm = OnlineSoftmax::new(call.entropy || call.maps).with_argmax(call.maps);
        for n0 in (0..den.n).step_by(per_chunk) {
            let nc = per_chunk.min(den.n - n0);
            let keys = den.images.clone().narrow(0, n0, nc).narrow(1, 0, len); // [nc, D]
            let norms = keys.clone().square().sum_dim(1); // [nc, 1]
            let keys_aug_t = Tensor::cat(vec![keys.clone(), norms], 1).transpose(); // [D+1, nc]
            sm.update(query.clone().matmul(keys_aug_t), |p| p.matmul(keys)); // [1, D]
            ctl.chunk_done()?;
        }
        let winner = sm.argmax();
        let (out, ent) = sm.finish().expect("at least one image");
        let entropy = ent.map(|e| to_host(e)[0]).unwrap_or(0.0);
        // One softmax over whole images: every pixel has the same winner, taken in place.
        let hw = den.shape.pixels();
        let maps = winner.map(|w| PixelMaps {
            winner: vec![w[0] as u32; hw],
            source: (0..hw as u32).collect(),
            entropy: vec![entropy; hw],
            windows: None,
        });
        Ok(Denoised { x0: den.uncentre(to_host(out)), entropy, maps })
    }

    fn inspect(
        &self,
        den: &mut Denoiser,
        x: &[f32],
        call: &Call,
        at: Probe,
        ctl: &Control,
    ) -> Result<Inspection, Cancelled> {
        let (a, s2) = call.scales();
        let len = den.shape.len();
        let xc = centred_x(den, x, a);
        let (y, px) = (at.y, at.x);
        let whole: Vec<i64> = (0..len as i64).collect();
        let mut ranked = Ranker::new(den, at.top);
        visit_windows(den, &xc[..len], &whole, (a, s2), ctl, |n, _, logit, _| {
            ranked.push(den, Vote { image: n, y, x: px, weight: 0.0 }, logit);
        })?;
        Ok(ranked.finish(den))
    }

    /// (a/σ²)·Cov_w(the pixel's values, whole images) over the training images.
    fn jacobian(
        &self,
        den: &mut Denoiser,
        x: &[f32],
        call: &Call,
        at: Probe,
        ctl: &Control,
    ) -> Result<Option<Jacobian>, Cancelled> {
        let s = den.shape;
        let (a, s2) = call.scales();
        let (c, hw, len) = (s.c, s.pixels(), s.len());
        let xc = centred_x(den, x, a);
        let pixel = at.y * s.w + at.x;
        let mut cov = Covariance::new(c, len);
        let mut centre = vec![0f64; c];
        let whole: Vec<i64> = (0..len as i64).collect();
        visit_windows(den, &xc[..len], &whole, (a, s2), ctl, |_, _, logit, key| {
            for (o, v) in centre.iter_mut().enumerate() {
                *v = key[o * hw + pixel];
            }
            cov.push(logit, &centre, key);
        })?;
        let window: Vec<usize> = (0..len).collect();
        Ok(Some(assemble(s, &cov.finish(), &window, a, s2)))
    }

    fn flops(&self, n: usize, s: ImageShape, _p: usize, _boundary: Boundary) -> f64 {
        let (n, c, h, w) = (n as f64, s.c as f64, s.h as f64, s.w as f64);
        5.0 * n * c * h * w
    }
}
