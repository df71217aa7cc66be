//! The local machine: per pixel, a softmax over training images seen through the P×P window
//! around that pixel, at the same place only. Pixels outside the image do not count.

use super::super::analysis::inspect::{Inspection, Ranker, Vote, centred_value, centred_x, visit_windows};
use super::super::analysis::jacobian::{Covariance, Jacobian, assemble};
use super::super::control::{Cancelled, Control};
use super::super::denoiser::{Denoiser, ElsPath};
use super::super::geometry::{Boundary, ImageShape, patch_indices};
use super::super::kernels::groups::GeometryKey;
use super::super::kernels::op_call;
use super::super::kernels::window_sums::local_parts;
use super::super::machine::{BenchPatches, Call, Denoised, Info, Machine, Needs, PixelMaps, Probe, check_patch_tables};

pub struct Local;

const INFO: Info = Info {
    name: "local",
    aliases: &["ls"],
    title: "Local",
    describe: "Each pixel votes over training images seen through its P×P window, same place only. Cost ≈ N·H·W·(C + P).",
    needs: Needs { patch: true, training_size: true, pixel_patch: true, ..Needs::NONE },
};

impl Machine for Local {
    fn info(&self) -> &'static Info {
        &INFO
    }
    fn check(&self, den: &Denoiser, call: &Call) -> Result<(), String> {
        check_patch_tables(den, call)
    }

    fn denoise(&self, den: &mut Denoiser, x: &[f32], call: &Call, ctl: &mut Control) -> Result<Denoised, Cancelled> {
        if den.els_path == ElsPath::Op {
            // Same math as LS: each pixel its own group, windows cut with zeros outside.
            let key = GeometryKey {
                patch: call.effective_patch(den.shape),
                boundary: Boundary::Zeros,
                equivariant: false,
                canvas: None,
            };
            if let Some(done) = op_call::try_run(den, x, call, key, ctl)? {
                return Ok(done);
            }
        }
        let (x0, entropy, winner) = local_parts(den, x, call, ctl)?;
        let hw = den.shape.pixels();
        let mean = entropy.as_ref().map(|e| e.iter().map(|&v| v as f64).sum::<f64>() / hw as f64);
        let maps = winner.map(|w| PixelMaps {
            winner: w.iter().map(|&n| n as u32).collect(),
            source: (0..hw as u32).collect(),
            entropy: entropy.unwrap_or_default(),
            windows: None,
        });
        Ok(Denoised { x0, entropy: mean.unwrap_or(0.0) as f32, maps })
    }

    fn inspect(
        &self,
        den: &mut Denoiser,
        x: &[f32],
        call: &Call,
        at: Probe,
        ctl: &Control,
    ) -> Result<Inspection, Cancelled> {
        let s = den.shape;
        let (a, s2) = call.scales();
        let xc = centred_x(den, x, a);
        let p = call.effective_patch(s);
        let mut idx = Vec::new();
        patch_indices(s, p, at.y, at.x, false, &mut idx);
        let query: Vec<f64> = idx.iter().map(|&i| xc[i as usize]).collect();
        let mut ranked = Ranker::new(den, at.top);
        visit_windows(den, &query, &idx, (a, s2), ctl, |n, _, logit, _| {
            ranked.push(den, Vote { image: n, y: at.y, x: at.x, weight: 0.0 }, logit);
        })?;
        Ok(ranked.finish(den))
    }

    /// (a/σ²)·Cov_w(centre, window) over the training images seen through the pixel's window.
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
        let xc = centred_x(den, x, a);
        let p = call.effective_patch(s);
        let mut idx = Vec::new();
        patch_indices(s, p, at.y, at.x, false, &mut idx);
        let window: Vec<usize> = idx.iter().map(|&i| i as usize).collect();
        let (c, hw, d) = (s.c, s.pixels(), window.len());
        let pixel = at.y * s.w + at.x;
        let query: Vec<f64> = window.iter().map(|&i| xc[i]).collect();
        let mut cov = Covariance::new(c, d);
        let mut centre = vec![0f64; c];
        visit_windows(den, &query, &idx, (a, s2), ctl, |n, _, logit, key| {
            for (o, v) in centre.iter_mut().enumerate() {
                *v = centred_value(den, n, o * hw + pixel);
            }
            cov.push(logit, &centre, key);
        })?;
        Ok(Some(assemble(s, &cov.finish(), &window, a, s2)))
    }

    fn bench_patches(&self) -> BenchPatches {
        BenchPatches { gray: &[7, 27, 45], rgb: &[] }
    }

    fn flops(&self, n: usize, s: ImageShape, p: usize, _boundary: Boundary) -> f64 {
        let (n, c, h, w, p) = (n as f64, s.c as f64, s.h as f64, s.w as f64, p as f64);
        n * h * w * (5.0 * c + p * p)
    }
}
