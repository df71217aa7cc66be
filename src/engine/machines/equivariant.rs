//! The equivariant machine: the ideal machine over every circular shift of every training
//! image (N·H·W candidates). Shifted inner products come from one matmul against the H·W
//! shifts of x, and the weighted sum of shifted images from one matmul plus an un-shifting
//! gather, so no FFT is needed.

use std::any::Any;

use burn::tensor::{Int, Tensor, TensorData};

use super::super::analysis::inspect::{Inspection, Ranker, Vote, centred_value, centred_x};
use super::super::control::{Cancelled, Control};
use super::super::denoiser::{Denoiser, State, to_host};
use super::super::geometry::{Boundary, ImageShape};
use super::super::kernels::softmax::OnlineSoftmax;
use super::super::machine::{BenchPatches, Call, Denoised, Info, Machine, Needs, PixelMaps, Probe, check_bytes};

/// The largest shift matrix (H·W × C·H·W entries) the shift-invariant nearest-image search
/// builds: 16M entries, 64 MB.
pub const MAX_SHIFT_ENTRIES: usize = 16 << 20;

/// Bytes per (C·(H·W)²) entry of the equivariant machine: two i64 index tables plus two f32
/// temporaries of that size.
const ES_BYTES_PER_ENTRY: f64 = 24.0;

/// The (shift, unshift) index tables of this image shape and their size in bytes.
#[derive(Default)]
pub(crate) struct ShiftTables(Option<(Tensor<1, Int>, Tensor<3, Int>)>, usize);

impl State for ShiftTables {
    fn bytes(&self) -> usize {
        if self.0.is_some() { self.1 } else { 0 }
    }
    fn evict(&mut self, _keep: Option<&dyn Any>) {
        self.0 = None;
    }
}

pub struct Equivariant;

const INFO: Info = Info {
    name: "equivariant",
    aliases: &["es"],
    title: "Equivariant",
    describe: "Ideal over every circular shift of every image; outputs shifted training images. Cost ≈ N·(C·H·W)².",
    needs: Needs { training_size: true, ..Needs::NONE },
};

impl Machine for Equivariant {
    fn info(&self) -> &'static Info {
        &INFO
    }
    /// Its index tables grow as C·(H·W)².
    fn check(&self, den: &Denoiser, call: &Call) -> Result<(), String> {
        let s = den.shape;
        let hw = s.pixels() as f64;
        check_bytes(den, call, ES_BYTES_PER_ENTRY * s.c as f64 * hw * hw, "the equivariant machine")
    }

    fn denoise(&self, den: &mut Denoiser, x: &[f32], call: &Call, ctl: &mut Control) -> Result<Denoised, Cancelled> {
        let (a, s2) = call.scales();
        let (c, hw, len) = (den.shape.c, den.shape.pixels(), den.shape.len());
        let (shift_idx, unshift_idx) = es_indices(den);
        let per_chunk = (den.chunk_logits / len).clamp(1, den.n);
        ctl.begin(den.n.div_ceil(per_chunk))?;
        // x_s[s, q] = x'[q + s]: row s is x rolled back by s, so ⟨x, roll(φ, s)⟩ = x_s[s]·φ.
        let shifted_t = den
            .centred_query(x, a)
            .narrow(1, 0, len)
            .reshape([len])
            .select(0, shift_idx)
            .reshape([hw, len])
            .transpose(); // [len, HW]
        let mut sm = OnlineSoftmax::new(call.entropy || call.maps).with_argmax(call.maps);
        for n0 in (0..den.n).step_by(per_chunk) {
            let nc = per_chunk.min(den.n - n0);
            let phi = den.images.clone().narrow(0, n0, nc).narrow(1, 0, len); // [nc, len]
            let cross = phi.clone().matmul(shifted_t.clone()); // [nc, HW]
            let norms = phi.clone().square().sum_dim(1); // [nc, 1]
            let logits = cross.mul_scalar(a / s2).sub(norms.mul_scalar(a * a / (2.0 * s2))); // [nc, HW]
            sm.update(logits.reshape([1, nc * hw]), |p| {
                let by_shift = p.reshape([nc, hw]).transpose().matmul(phi); // [HW(s), len]: Σ_n w[n,s]·φ_n
                by_shift
                    .reshape([hw, c, hw])
                    .gather(2, unshift_idx.clone()) // [s, C, p] = B[s, C, p − s]
                    .sum_dim(0)
                    .reshape([1, len])
            });
            ctl.chunk_done()?;
        }
        let winner = sm.argmax();
        let (out, ent) = sm.finish().expect("at least one image");
        let entropy = ent.map(|e| to_host(e)[0]).unwrap_or(0.0);
        // One softmax over (image, shift): column n·HW + s. Shift s puts φ_n[p − s] at p.
        let (h, w) = (den.shape.h, den.shape.w);
        let maps = winner.map(|win| {
            let (n, s) = (win[0] as usize / hw, win[0] as usize % hw);
            let (sy, sx) = (s / w, s % w);
            PixelMaps {
                winner: vec![n as u32; hw],
                source: (0..hw).map(|p| (((p / w + h - sy) % h) * w + (p % w + w - sx) % w) as u32).collect(),
                entropy: vec![entropy; hw],
                windows: None,
            }
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
        let s = den.shape;
        let (a, s2) = call.scales();
        let hw = s.pixels();
        let xc = centred_x(den, x, a);
        let (y, px) = (at.y, at.x);
        let mut ranked = Ranker::new(den, at.top);
        // Candidate (n, shift) puts φ_n[p − shift] at p.
        for n in 0..den.n {
            ctl.check()?;
            for sy in 0..s.h {
                for sx in 0..s.w {
                    let mut d = 0.0;
                    for c in 0..s.c {
                        for qy in 0..s.h {
                            for qx in 0..s.w {
                                let src = c * hw + ((qy + s.h - sy) % s.h) * s.w + (qx + s.w - sx) % s.w;
                                d += (xc[c * hw + qy * s.w + qx] - a * centred_value(den, n, src)).powi(2);
                            }
                        }
                    }
                    let (sy0, sx0) = ((y + s.h - sy) % s.h, (px + s.w - sx) % s.w);
                    ranked.push(den, Vote { image: n, y: sy0, x: sx0, weight: 0.0 }, -d / (2.0 * s2));
                }
            }
        }
        Ok(ranked.finish(den))
    }

    /// Not timed: N·(C·H·W)² at N = 2000 on MNIST is minutes a call on a CPU.
    fn bench_patches(&self) -> BenchPatches {
        BenchPatches { gray: &[], rgb: &[] }
    }

    fn flops(&self, n: usize, s: ImageShape, _p: usize, _boundary: Boundary) -> f64 {
        let (n, c, h, w) = (n as f64, s.c as f64, s.h as f64, s.w as f64);
        2.0 * n * (c * h * w) * (h * w) * 2.0
    }
}

impl Denoiser {
    /// The training image and circular shift nearest to `y` ([C, H, W]): (image, RMS
    /// distance, (dy, dx)) where image rolled by (dy, dx) is closest: the novelty check that
    /// does not count a translated copy as new. `None` above [`MAX_SHIFT_ENTRIES`] (64×64
    /// RGB would need a 200 MB shift matrix). One matmul of the images against every shift of
    /// y, in chunks of images.
    pub fn nearest_training_shifted(&self, y: &[f32]) -> Option<(usize, f32, (usize, usize))> {
        let (c, h, w) = (self.shape.c, self.shape.h, self.shape.w);
        let (hw, len) = (h * w, self.shape.len());
        if hw * len > MAX_SHIFT_ENTRIES {
            return None;
        }
        let yc: Vec<f32> = y.iter().enumerate().map(|(i, &v)| v - self.mean[i / hw]).collect();
        // shifted[q, s] = y[q + s] (wrapping): y rolled back by s.
        let mut shifted = vec![0f32; len * hw]; // [len, HW]
        for sy in 0..h {
            for sx in 0..w {
                let s = sy * w + sx;
                for ch in 0..c {
                    for qy in 0..h {
                        for qx in 0..w {
                            let src = ch * hw + ((qy + sy) % h) * w + (qx + sx) % w;
                            shifted[(ch * hw + qy * w + qx) * hw + s] = yc[src];
                        }
                    }
                }
            }
        }
        let shifted = Tensor::<2>::from_data(TensorData::new(shifted, [len, hw]), &self.device);
        let y2: f64 = yc.iter().map(|&v| (v as f64).powi(2)).sum();
        let per_chunk = (self.chunk_logits / hw).clamp(1, self.n);
        let mut best = (0, f64::INFINITY, 0);
        for n0 in (0..self.n).step_by(per_chunk) {
            let nc = per_chunk.min(self.n - n0);
            let phi = self.images.clone().narrow(0, n0, nc).narrow(1, 0, len); // [nc, len]
            let norms = phi.clone().square().sum_dim(1); // [nc, 1]
            let d2 = norms.sub(phi.matmul(shifted.clone()).mul_scalar(2.0)); // [nc, HW], + ‖y‖²
            let d2 = d2.try_into_vec_as::<f32>().expect("f32");
            for (i, &d) in d2.iter().enumerate() {
                if (d as f64) < best.1 {
                    best = (n0 + i / hw, d as f64, i % hw);
                }
            }
        }
        let rms = ((best.1 + y2).max(0.0) / len as f64).sqrt() as f32;
        // Column s holds y[q + s], so ⟨φ, column s⟩ = ⟨roll(φ, s), y⟩ with roll(φ, s)[p] = φ[p − s].
        let (dy, dx) = (best.2 / w, best.2 % w);
        Some((best.0, rms, (dy, dx)))
    }
}

/// (shift, unshift) index tables for this image shape, built once.
fn es_indices(den: &mut Denoiser) -> (Tensor<1, Int>, Tensor<3, Int>) {
    if let Some(idx) = den.state::<ShiftTables>().and_then(|s| s.0.clone()) {
        return idx;
    }
    let (c, h, w) = (den.shape.c, den.shape.h, den.shape.w);
    let hw = h * w;
    den.make_room(c * hw * hw * 16, None);
    let mut shift = Vec::with_capacity(hw * c * hw);
    let mut unshift = Vec::with_capacity(hw * c * hw);
    for sy in 0..h {
        for sx in 0..w {
            for ch in 0..c {
                for qy in 0..h {
                    for qx in 0..w {
                        shift.push((ch * hw + ((qy + sy) % h) * w + (qx + sx) % w) as i64);
                        unshift.push((((qy + h - sy) % h) * w + (qx + w - sx) % w) as i64);
                    }
                }
            }
        }
    }
    let shift = Tensor::<1, Int>::from_data(TensorData::new(shift, [hw * c * hw]), &den.device);
    let unshift = Tensor::<3, Int>::from_data(TensorData::new(unshift, [hw, c, hw]), &den.device);
    den.set_state(ShiftTables(Some((shift.clone(), unshift.clone())), c * hw * hw * 16));
    (shift, unshift)
}
