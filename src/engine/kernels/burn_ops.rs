//! The reference path: plain burn ops (a matmul per key chunk, then [`OnlineSoftmax`]), the
//! one the fused CPU kernel and the fused op are tested against. Chosen with
//! [`ElsPath::BurnOps`](crate::engine::denoiser::ElsPath).
//!
//! ‖q − a·k‖² = ‖q‖² − 2a·q·k + a²‖k‖², and ‖q‖² is constant within a pixel's softmax, so
//! the logits are (a/σ²)·q·k − (a²/2σ²)·‖k‖². Appending ‖k‖² to each key and −a/2 to each
//! (scaled) query turns that into a single matmul per key chunk.

use std::sync::Arc;

use burn::tensor::{Int, Tensor};

use super::super::control::{Cancelled, Control};
use super::super::denoiser::{Denoiser, to_host};
use super::super::geometry::centre_offsets;
use super::super::machine::{Call, Denoised, PixelMaps};
use super::groups::{Bank, DeviceGroup, GeometryKey, KeyBanks, bank_bytes, device_groups, make_room_for_bank};
use super::softmax::OnlineSoftmax;
use super::window_sums::fill_via_local;

/// Precomputed keys of one pixel group, one entry per chunk of training images.
pub(crate) struct KeyChunk {
    /// [Kc, D+1]: centred patches with their squared norm appended, transposed to [D+1, Kc].
    pub keys_aug_t: Tensor<2>,
    /// [Kc, C]: centred centre pixels.
    pub values: Tensor<2>,
}

/// ELS (or LS) x̂₀ through burn ops, group by group.
pub(crate) fn run(
    den: &mut Denoiser,
    x: &[f32],
    call: &Call,
    key: GeometryKey,
    ctl: &mut Control,
) -> Result<Denoised, Cancelled> {
    let (a, s2) = call.scales();
    let groups = device_groups(den, key, ctl)?;
    let (c, hw) = (den.shape.c, den.shape.pixels());
    let mut out = Denoised { x0: vec![0f32; c * hw], entropy: 0.0, maps: call.maps.then(|| PixelMaps::empty(hw)) };
    let mut entropy_sum = fill_via_local(den, x, call, key.patch, &groups, &mut out, ctl)?;
    let Denoised { mut x0, mut maps, .. } = out;
    let total: usize = groups.iter().filter(|g| g.streams()).map(|g| den.n.div_ceil(g.images_per_chunk)).sum();
    ctl.begin(total)?;
    let bank = key_bank(den, key, &groups, ctl)?;

    let d = c * key.patch * key.patch;
    let centre = den.int_tensor(&centre_offsets(c, key.patch));
    let xq = den.centred_query(x, a); // [1, C·H·W + 1]

    for (gi, group) in groups.iter().enumerate() {
        let q = group.host.pixels.len();
        if group.via_local {
            continue;
        }
        if group.host.key_pixels.is_empty() {
            den.fill_mean(&mut x0, &group.host.pixels);
            continue;
        }
        let queries = xq.clone().select(1, group.index_tensors(den).0.clone()).reshape([q, d]); // [Q, D]
        let q_aug = augment_query(queries, a, s2); // [Q, D+1]
        let mut sm = OnlineSoftmax::new(call.entropy || call.maps).with_argmax(call.maps);
        for ci in 0..den.n.div_ceil(group.images_per_chunk) {
            let owned;
            let chunk = match &bank {
                Some(bank) => &bank[gi][ci],
                None => {
                    owned = key_chunk(den, group, &centre, ci);
                    &owned
                }
            };
            let logits = q_aug.clone().matmul(chunk.keys_aug_t.clone()); // [Q, Kc]
            sm.update(logits, |p| p.matmul(chunk.values.clone())); // [Q, C]
            ctl.chunk_done()?;
        }
        let winner = sm.argmax();
        let (out, ent) = sm.finish().expect("every group has at least one chunk");
        let out = to_host(out); // [Q, C]
        for (qi, &px) in group.host.pixels.iter().enumerate() {
            for ch in 0..c {
                x0[ch * hw + px] = out[qi * c + ch] + den.mean[ch];
            }
        }
        let ent = ent.map(to_host);
        if let Some(ent) = &ent {
            entropy_sum += ent.iter().map(|&e| e as f64).sum::<f64>();
        }
        if let (Some(m), Some(w), Some(e)) = (maps.as_mut(), winner, ent) {
            let cols: Vec<u64> = w.iter().map(|&v| v as u64).collect();
            m.set_group(&group.host, &cols, &e);
        }
    }
    Ok(Denoised { x0, entropy: (entropy_sum / hw as f64) as f32, maps })
}

/// The keys of chunk `ci` of a group, cut from the training images on the device.
pub(crate) fn key_chunk(den: &Denoiser, group: &DeviceGroup, centre: &Tensor<1, Int>, ci: usize) -> KeyChunk {
    let n0 = ci * group.images_per_chunk;
    let nc = group.images_per_chunk.min(den.n - n0);
    let kg = group.host.keys_per_image();
    let d = group.host.key_idx.len() / kg;
    let keys = den
        .images
        .clone()
        .narrow(0, n0, nc) // [nc, C·H·W + 1]
        .select(1, group.index_tensors(den).1.clone()) // [nc, Kg·D]
        .reshape([nc * kg, d]); // [Kc, D]
    let values = keys.clone().select(1, centre.clone()); // [Kc, C]
    let norms = keys.clone().square().sum_dim(1); // [Kc, 1]
    let keys_aug_t = Tensor::cat(vec![keys, norms], 1).transpose(); // [D+1, Kc]
    KeyChunk { keys_aug_t, values }
}

/// The whole key bank of a geometry, built once and kept while it fits the budget
/// (`Ok(None)`: too big, stream the keys instead). The build checks for cancellation
/// between chunks, so a slider move never waits for a bank it no longer needs.
fn key_bank(
    den: &mut Denoiser,
    key: GeometryKey,
    groups: &[DeviceGroup],
    ctl: &Control,
) -> Result<Option<Bank<Vec<KeyChunk>>>, Cancelled> {
    if let Some(b) = den.state::<KeyBanks<Vec<KeyChunk>>>().and_then(|s| s.get(&key)) {
        return Ok(Some(b));
    }
    let c = den.shape.c;
    let bytes = bank_bytes(den, key, DeviceGroup::streams);
    if !make_room_for_bank(den, key, bytes) {
        return Ok(None);
    }
    let centre = den.int_tensor(&centre_offsets(c, key.patch));
    let mut bank: Vec<Vec<KeyChunk>> = Vec::with_capacity(groups.len());
    for g in groups {
        let mut chunks = Vec::new();
        if g.streams() {
            for ci in 0..den.n.div_ceil(g.images_per_chunk) {
                ctl.check()?;
                chunks.push(key_chunk(den, g, &centre, ci));
            }
        }
        bank.push(chunks);
    }
    let bank = Arc::new(bank);
    den.state_mut::<KeyBanks<Vec<KeyChunk>>>().insert(key, bank.clone(), bytes);
    Ok(Some(bank))
}

/// [Q, D] → [Q, D+1]: queries scaled by a/σ², with −a²/(2σ²) appended to meet ‖k‖².
pub(crate) fn augment_query(queries: Tensor<2>, a: f64, s2: f64) -> Tensor<2> {
    let [q, _] = queries.dims();
    let tail = Tensor::<2>::full([q, 1], -a * a / (2.0 * s2), &queries.device()); // [Q, 1]
    Tensor::cat(vec![queries.mul_scalar(a / s2), tail], 1)
}
