//! The PSPC-Square machine (patch-set posterior composite, Niedoba et al., ICML 2025): for
//! every P×P window wholly inside the image, the Ideal posterior mean of that window over the
//! training images' windows at the same place; each pixel averages the estimates of every
//! window that covers it. P beyond the image side is clamped to the largest square that fits,
//! where the machine is the Ideal machine.
//!
//! Each pixel's estimate is Σₙ qₙ φₙ with qₙ = (Σ over covering windows of their softmax
//! weight on image n) / (number of covering windows): a mixture of window posteriors. Two
//! passes over the training set keep memory bounded: the first finds each window's
//! log-normaliser, the second turns logits into weights and spreads them over the pixels.

use burn::tensor::ops::PadMode;
use burn::tensor::{Int, Tensor, TensorData};

use super::super::analysis::inspect::{Inspection, centred_x, pixel_votes, softmax};
use super::super::control::{Cancelled, Control};
use super::super::denoiser::{Denoiser, to_host};
use super::super::geometry::{Boundary, ImageShape};
use super::super::machine::{BenchPatches, Call, Denoised, Info, Machine, Needs, PixelMaps, Probe};

pub struct Pspc;

const INFO: Info = Info {
    name: "pspc",
    aliases: &["pspc-square"],
    title: "PSPC-Square",
    describe: "PSPC-Square (Niedoba et al. 2025): each in-image P×P window's Ideal posterior at its own place, averaged over the windows covering a pixel. Cost ≈ N·H·W·(C + P).",
    needs: Needs { patch: true, training_size: true, ..Needs::NONE },
};

impl Machine for Pspc {
    fn info(&self) -> &'static Info {
        &INFO
    }
    /// The largest square window that fits; at that size PSPC is the Ideal machine.
    fn max_patch(&self, _boundary: Boundary, h: usize, w: usize) -> u32 {
        h.min(w) as u32
    }

    fn denoise(&self, den: &mut Denoiser, x: &[f32], call: &Call, ctl: &mut Control) -> Result<Denoised, Cancelled> {
        let (a, s2) = call.scales();
        let (c, h, w) = (den.shape.c, den.shape.h, den.shape.w);
        let (hw, len) = (h * w, den.shape.len());
        let p = call.effective_patch(den.shape);
        let per_image = (c + 4) * hw;
        let per_chunk = (den.chunk_logits / per_image).clamp(1, den.n);
        let chunks = den.n.div_ceil(per_chunk);
        ctl.begin(2 * chunks)?;
        let xq = den.centred_query(x, a).narrow(1, 0, len).reshape([1, c, h, w]); // [1, C, H, W]
        let images = den.images.clone();
        let phi_of = |n0: usize, nc: usize| images.clone().narrow(0, n0, nc).narrow(1, 0, len).reshape([nc, c, h, w]);
        let logits_of = |phi: Tensor<4>| {
            let d = xq.clone().sub(phi.mul_scalar(a)).square().sum_dim(1); // [nc, 1, H, W]
            valid_window_sum(d, p).mul_scalar(-0.5 / s2) // [nc, 1, gh, gw]
        };

        // Pass 1: each window's log Σₙ exp(logit), streamed as a running max and sum.
        let mut state: Option<(Tensor<4>, Tensor<4>)> = None; // ([1, 1, gh, gw]; m, s)
        for n0 in (0..den.n).step_by(per_chunk) {
            let nc = per_chunk.min(den.n - n0);
            let l = logits_of(phi_of(n0, nc)); // [nc, 1, gh, gw]
            let cm = l.clone().max_dim(0); // [1, 1, gh, gw]
            state = Some(match state.take() {
                None => (cm.clone(), l.sub(cm).exp().sum_dim(0)),
                Some((m, s)) => {
                    let m_new = m.clone().max_pair(cm);
                    let s = s.mul(m.sub(m_new.clone()).exp()).add(l.sub(m_new.clone()).exp().sum_dim(0));
                    (m_new, s)
                }
            });
            ctl.chunk_done()?;
        }
        let (m, s) = state.expect("at least one image");
        let lse = m.add(s.log()); // [1, 1, gh, gw]

        // Pass 2: weights, spread to the pixels each window covers, averaged.
        let inv_count = cover_counts(den, p).recip(); // [1, 1, H, W]
        let mut acc: Option<Tensor<4>> = None; // [1, C, H, W]
        let mut ent: Option<Tensor<4>> = None; // [1, 1, H, W]
        let mut best: Option<(Tensor<4>, Tensor<4, Int>)> = None; // [1, 1, H, W] each
        for n0 in (0..den.n).step_by(per_chunk) {
            let nc = per_chunk.min(den.n - n0);
            let phi = phi_of(n0, nc); // [nc, C, H, W]
            let weights = logits_of(phi.clone()).sub(lse.clone()).exp(); // [nc, 1, gh, gw]
            let q = full_window_sum(weights, p).mul(inv_count.clone()); // [nc, 1, H, W]
            let part = q.clone().mul(phi).sum_dim(0); // [1, C, H, W]
            acc = Some(match acc.take() {
                None => part,
                Some(t) => t.add(part),
            });
            if call.entropy || call.maps {
                let h_part = q.clone().mul(q.clone().clamp_min(1e-30).log()).sum_dim(0).neg(); // [1, 1, H, W]
                ent = Some(match ent.take() {
                    None => h_part,
                    Some(t) => t.add(h_part),
                });
            }
            if call.maps {
                let (qm, qi) = q.max_dim_with_indices(0); // [1, 1, H, W]
                let qi = qi.add_scalar(n0 as i64);
                best = Some(match best.take() {
                    None => (qm, qi),
                    Some((bm, bi)) => {
                        let better = qm.clone().greater(bm.clone());
                        (bm.max_pair(qm), bi.mask_where(better, qi))
                    }
                });
            }
            ctl.chunk_done()?;
        }
        let x0 = den.uncentre(to_host(acc.expect("at least one image").reshape([c, hw])));
        let ent = ent.map(|e| to_host(e.reshape([1, hw])));
        let entropy = ent.as_ref().map(|e| e.iter().map(|&v| v as f64).sum::<f64>() / hw as f64).unwrap_or(0.0);
        let maps = best.map(|(_, idx)| {
            let idx = idx.into_data().convert::<i64>().try_into_vec::<i64>().expect("int data");
            let mut maps = PixelMaps::empty(hw);
            maps.winner = idx.iter().map(|&n| n as u32).collect();
            maps.entropy = ent.clone().expect("maps imply entropy");
            maps
        });
        Ok(Denoised { x0, entropy: entropy as f32, maps })
    }

    /// The pixel's weight on image n is the mean, over the in-image windows covering it, of
    /// that window's softmax weight on n.
    fn inspect(
        &self,
        den: &mut Denoiser,
        x: &[f32],
        call: &Call,
        at: Probe,
        ctl: &Control,
    ) -> Result<Inspection, Cancelled> {
        let (y, px) = (at.y, at.x);
        let s = den.shape;
        let (a, s2) = call.scales();
        let (hw, len) = (s.pixels(), s.len());
        let p = call.effective_patch(s);
        let xc = centred_x(den, x, a);
        let rows = y.saturating_sub(p - 1)..=y.min(s.h - p);
        let cols = px.saturating_sub(p - 1)..=px.min(s.w - p);
        let count = (rows.clone().count() * cols.clone().count()) as f64;
        let mut q = vec![0f64; den.n];
        for ty in rows {
            for tx in cols.clone() {
                ctl.check()?;
                let logits: Vec<f64> = (0..den.n)
                    .map(|n| {
                        let img = &den.host_centred[n * len..(n + 1) * len];
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
        Ok(pixel_votes(den, &q, (y, px), at.top, None))
    }

    fn bench_patches(&self) -> BenchPatches {
        BenchPatches { gray: &[3, 7], rgb: &[] }
    }

    /// Two passes, each: differences, window sums (2P adds), exp; the second also spreads
    /// weights back (2P adds) and accumulates C values.
    fn flops(&self, n: usize, s: ImageShape, p: usize, _boundary: Boundary) -> f64 {
        let (n, c, h, w, p) = (n as f64, s.c as f64, s.h as f64, s.w as f64, p as f64);
        n * h * w * (8.0 * c + 8.0 * p + 10.0)
    }
}

/// How many P×P windows that lie inside the image cover each pixel: [1, 1, H, W].
fn cover_counts(den: &Denoiser, p: usize) -> Tensor<4> {
    let (h, w) = (den.shape.h, den.shape.w);
    let span = |i: usize, side: usize| (i.min(side - p) + 1 - i.saturating_sub(p - 1)) as f32;
    let counts: Vec<f32> = (0..h * w).map(|px| span(px / w, h) * span(px % w, w)).collect();
    Tensor::from_data(TensorData::new(counts, [1, 1, h, w]), &den.device)
}

/// Sum of `d` ([n, 1, H, W]) over each P×P window wholly inside the image, indexed by the
/// window's top-left corner: [n, 1, H − P + 1, W − P + 1]. Shifted adds keep float32 exact.
fn valid_window_sum(d: Tensor<4>, p: usize) -> Tensor<4> {
    let [_, _, h, w] = d.dims();
    let (gh, gw) = (h + 1 - p, w + 1 - p);
    let rows = (1..p).fold(d.clone().narrow(2, 0, gh), |acc, dy| acc.add(d.clone().narrow(2, dy, gh)));
    (1..p).fold(rows.clone().narrow(3, 0, gw), |acc, dx| acc.add(rows.clone().narrow(3, dx, gw)))
}

/// The adjoint of [`valid_window_sum`]: each window's value added to every pixel it covers,
/// [n, 1, gh, gw] → [n, 1, gh + P − 1, gw + P − 1].
fn full_window_sum(v: Tensor<4>, p: usize) -> Tensor<4> {
    if p == 1 {
        return v;
    }
    valid_window_sum(v.pad((p - 1, p - 1, p - 1, p - 1), PadMode::Constant(0.0)), p)
}
