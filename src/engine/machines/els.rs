//! The ELS machine (Kamb & Ganguli): per pixel, a softmax over the training patches from every
//! admissible place, so x̂₀ is stitched from patches of many images. The patch softmax itself
//! is the kernel family in [`crate::engine::kernels`].

use super::super::analysis::inspect::{Inspection, Ranker, Vote, centred_value, centred_x, visit_windows};
use super::super::analysis::jacobian::{Covariance, Jacobian, assemble};
use super::super::control::{Cancelled, Control};
use super::super::denoiser::Denoiser;
use super::super::geometry::{Boundary, ImageShape};
use super::super::kernels::{self, groups::GeometryKey};
use super::super::machine::{
    BenchPatches, Call, Denoised, Info, Machine, Needs, Probe, check_patch_tables, compose_patch_map,
};

pub struct Els;

const INFO: Info = Info {
    name: "els",
    aliases: &[],
    title: "ELS",
    describe: "Each pixel votes over training patches from every admissible place: new images from old patches. Cost ≈ N·(H·W)²·C·P².",
    needs: Needs { patch: true, boundary: true, pixel_patch: true, ..Needs::NONE },
};

impl Machine for Els {
    fn info(&self) -> &'static Info {
        &INFO
    }
    /// A circular window cannot be larger than the image.
    fn max_patch(&self, boundary: Boundary, h: usize, w: usize) -> u32 {
        match boundary {
            Boundary::Circular => {
                let m = h.min(w) as u32;
                if m % 2 == 1 { m } else { m - 1 }
            }
            Boundary::Zeros => (2 * h.max(w) - 1) as u32,
        }
    }
    fn check(&self, den: &Denoiser, call: &Call) -> Result<(), String> {
        check_patch_tables(den, call)
    }

    fn denoise(&self, den: &mut Denoiser, x: &[f32], call: &Call, ctl: &mut Control) -> Result<Denoised, Cancelled> {
        let key = GeometryKey::of(call, call.effective_patch(den.shape), true);
        kernels::run(den, x, call, key, ctl)
    }

    /// Each distinct P on just its own pixels, through the fused CPU kernel on that P's groups
    /// and key bank: a map costs the pixel-weighted sum of its sizes' calls, not their sum.
    fn denoise_patch_map(
        &self,
        den: &mut Denoiser,
        x: &[f32],
        call: &Call,
        patches: &[u32],
        ctl: &mut Control,
    ) -> Result<Denoised, Cancelled> {
        compose_patch_map(den, x, call, patches, &mut |den, part, only| {
            kernels::cpu::run(den, x, part, GeometryKey::of(part, part.patch, true), Some(only), ctl)
        })
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
        let (groups, gi, window) = pixel_window(den, call, at, ctl)?;
        let g = &groups[gi].host;
        let xc = centred_x(den, x, a);
        let query: Vec<f64> = window.iter().map(|&i| xc[i]).collect();
        let mut ranked = Ranker::new(den, at.top);
        visit_windows(den, &query, &g.key_idx, (a, s2), ctl, |n, k, logit, _| {
            let kp = g.key_pixels[k];
            ranked.push(den, Vote { image: n, y: kp / s.w, x: kp % s.w, weight: 0.0 }, logit);
        })?;
        Ok(ranked.finish(den))
    }

    /// (a/σ²)·Cov_w(centre, window) over the pixel's candidates, the same ones `inspect` ranks.
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
        let (groups, gi, window) = pixel_window(den, call, at, ctl)?;
        let g = &groups[gi].host;
        let xc = centred_x(den, x, a);
        let query: Vec<f64> = window.iter().map(|&i| xc[i]).collect();
        let (c, hw) = (s.c, s.pixels());
        let mut cov = Covariance::new(c, window.len());
        let mut centre = vec![0f64; c];
        visit_windows(den, &query, &g.key_idx, (a, s2), ctl, |n, k, logit, key| {
            for (o, v) in centre.iter_mut().enumerate() {
                *v = centred_value(den, n, o * hw + g.key_pixels[k]);
            }
            cov.push(logit, &centre, key);
        })?;
        Ok(Some(assemble(call.canvas_shape(s), &cov.finish(), &window, a, s2)))
    }

    fn bench_patches(&self) -> BenchPatches {
        // P = 27 and 45 are the large-patch end a locality scale of 3 reaches on MNIST, where
        // almost every pixel's window overhang is its own: compare them with Local there.
        BenchPatches { gray: &[3, 7, 11, 15, 27, 45], rgb: &[5, 11] }
    }

    fn flops(&self, n: usize, s: ImageShape, p: usize, boundary: Boundary) -> f64 {
        let (n, c, h, w, p) = (n as f64, s.c as f64, s.h as f64, s.w as f64, p as f64);
        let r = (p / 2.0).floor();
        let (h1, w1) = ((h - p + 1.0).max(0.0), (w - p + 1.0).max(0.0));
        match boundary {
            Boundary::Circular => 2.0 * c * (p * p + 1.0) * h * w * n * h1 * w1,
            Boundary::Zeros => {
                2.0 * c * (p * p + 1.0) * n * ((h1 * w1).powi(2) + 2.0 * r * w1 * w1 + 2.0 * r * h1 * h1 + 4.0 * r * r)
            }
        }
    }
}

/// The run's pixel groups, the clicked pixel's group among them, and its window.
type PixelWindow = (std::sync::Arc<Vec<kernels::groups::DeviceGroup>>, usize, Vec<usize>);

/// The clicked pixel's group in the run's own pixel groups (cached: a click does not rebuild
/// the canvas's tables), and its window: flat indices into x_t, the zero slot outside.
fn pixel_window(den: &mut Denoiser, call: &Call, at: Probe, ctl: &Control) -> Result<PixelWindow, Cancelled> {
    let s = den.shape;
    let pixel = at.y * call.canvas_shape(s).w + at.x;
    let groups = kernels::groups::device_groups(den, GeometryKey::of(call, call.effective_patch(s), true), ctl)?;
    let gi = groups.iter().position(|g| g.host.pixels.contains(&pixel)).expect("every pixel has a group");
    let g = &groups[gi].host;
    let q = g.pixels.iter().position(|&v| v == pixel).expect("pixel in its group");
    let d = g.query_idx.len() / g.pixels.len();
    let window = g.query_idx[q * d..(q + 1) * d].iter().map(|&i| i as usize).collect();
    Ok((groups, gi, window))
}
