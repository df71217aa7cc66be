//! The Local machine's softmax through window sums: per pixel, the squared difference to
//! every training image summed over the pixel's P×P window, as two separable passes of
//! shifted adds. The Local machine runs on it, and so do the ELS pixels whose window
//! overhang no other pixel shares (their only keys are their own place in every image).

use burn::tensor::Tensor;
use burn::tensor::ops::PadMode;

use super::super::control::{Cancelled, Control};
use super::super::denoiser::{Denoiser, to_host};
use super::super::machine::{Call, Denoised};
use super::groups::DeviceGroup;
use super::softmax::OnlineSoftmax;

/// x̂₀ ([C, H, W]) and, when `call.entropy` (or `call.maps`), each pixel's softmax
/// entropy ([H·W]); with `call.maps`, each pixel's winning training image ([H·W]).
#[allow(clippy::type_complexity)]
pub(crate) fn local_parts(
    den: &Denoiser,
    x: &[f32],
    call: &Call,
    ctl: &mut Control,
) -> Result<(Vec<f32>, Option<Vec<f32>>, Option<Vec<i64>>), Cancelled> {
    let (a, s2) = call.scales();
    let p = call.patch.max(1) | 1;
    let (c, h, w) = (den.shape.c, den.shape.h, den.shape.w);
    let (hw, len) = (h * w, den.shape.len());
    let r = p / 2;
    let per_image = (c + 2) * (h + 2 * r) * (w + 2 * r);
    let per_chunk = (den.chunk_logits / per_image).clamp(1, den.n);
    ctl.begin(den.n.div_ceil(per_chunk))?;
    let xq = den.centred_query(x, a).narrow(1, 0, len).reshape([1, c, h, w]); // [1, C, H, W]
    let mut sm = OnlineSoftmax::new(call.entropy || call.maps).with_argmax(call.maps);
    for n0 in (0..den.n).step_by(per_chunk) {
        let nc = per_chunk.min(den.n - n0);
        let phi = den.images.clone().narrow(0, n0, nc).narrow(1, 0, len).reshape([nc, c, h, w]);
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
            x0[ch * hw + px] = out[px * c + ch] + den.mean[ch];
        }
    }
    Ok((x0, ent.map(to_host), winner))
}

/// Fills x̂₀ and sums the entropy of the groups computed by the Local machine (see
/// [`DeviceGroup::via_local`]); returns that entropy sum.
pub(crate) fn fill_via_local(
    den: &Denoiser,
    x: &[f32],
    call: &Call,
    patch: usize,
    groups: &[DeviceGroup],
    out: &mut Denoised,
    ctl: &mut Control,
) -> Result<f64, Cancelled> {
    let Denoised { x0, maps, .. } = out;
    if !groups.iter().any(|g| g.via_local && !g.host.pixels.is_empty()) {
        return Ok(0.0);
    }
    // The Local machine at this patch size (its window sums read only P, ᾱ and the flags).
    let local = Call { patch, ..*call };
    let (lx0, entropy, winner) = local_parts(den, x, &local, ctl)?;
    let (c, hw) = (den.shape.c, den.shape.pixels());
    let mut entropy_sum = 0f64;
    for px in groups.iter().filter(|g| g.via_local).flat_map(|g| g.host.pixels.first().copied()) {
        for ch in 0..c {
            x0[ch * hw + px] = lx0[ch * hw + px];
        }
        entropy_sum += entropy.as_ref().map(|e| e[px] as f64).unwrap_or(0.0);
        if let (Some(m), Some(w), Some(e)) = (maps.as_mut(), &winner, &entropy) {
            (m.winner[px], m.source[px], m.entropy[px]) = (w[px] as u32, px as u32, e[px]);
        }
    }
    Ok(entropy_sum)
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
