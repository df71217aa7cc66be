//! The fused CPU kernel's host side: key banks cut from the training images row by row,
//! kept between calls while they fit the budget, and each call's groups folded through
//! [`fused::RowState`] (large groups) or [`direct::solve`] (small zeros-boundary groups).
//!
//! - [`fused`]: the streaming softmax state and the one-pass fold of a score tile.
//! - [`simd`]: the AVX2 / baseline lane loops the fold runs on.
//! - [`direct`]: the small groups, keys read in place from the images.
//! - [`merge`]: a kept bank's duplicate keys merged into one with a multiplicity.

pub mod direct;
pub mod fused;
pub mod merge;
pub mod simd;

use std::sync::Arc;

use rayon::prelude::*;

use super::super::control::{CancelToken, Cancelled, Control};
use super::super::denoiser::Denoiser;
use super::super::geometry::{PixelGroup, centre_offsets};
use super::super::machine::{Call, Denoised, PixelMaps};
use super::groups::{Bank, DeviceGroup, GeometryKey, KeyBanks, bank_bytes, device_groups, make_room_for_bank};
use super::window_sums::fill_via_local;
use fused::HostChunk;

/// Keys per chunk on the fused CPU path: small enough that a cancel lands within a few ms.
pub(crate) const HOST_CHUNK_KEYS: usize = 16_384;

/// ELS (or LS) x̂₀ through the fused CPU kernel: same groups, same math as the reference
/// path, one fused pass per tile.
///
/// With `only`, just the canvas pixels it marks are computed (the others of x̂₀ stay zero):
/// a per-pixel patch map runs each of its patch sizes this way, on that size's groups and
/// key bank, so a map costs the pixel-weighted sum of its sizes' calls.
pub(crate) fn run(
    den: &mut Denoiser,
    x: &[f32],
    call: &Call,
    key: GeometryKey,
    only: Option<&[bool]>,
    ctl: &mut Control,
) -> Result<Denoised, Cancelled> {
    let (a, s2) = call.scales();
    let all = device_groups(den, key, ctl)?;
    let groups: Arc<Vec<DeviceGroup>> = match only {
        Some(only) => Arc::new(all.iter().map(|g| g.restricted(only)).collect()),
        None => all,
    };
    let canvas = key.canvas_shape(den.shape);
    let (hw, len) = (canvas.pixels(), canvas.len());
    let mut out = Denoised { x0: vec![0f32; len], entropy: 0.0, maps: call.maps.then(|| PixelMaps::empty(hw)) };
    let mut entropy_sum = fill_via_local(den, x, call, key.patch, &groups, &mut out, ctl)?;
    let n = den.n;
    let per_chunk = move |g: &DeviceGroup| (HOST_CHUNK_KEYS / g.host.keys_per_image().max(1)).clamp(1, n);
    let bank = host_bank(den, key, &groups, &per_chunk, ctl)?;
    // Chunks to sweep: the bank's (merged groups have fewer), else one per image run.
    let total: usize = groups
        .iter()
        .enumerate()
        .filter(|(_, g)| g.banked_on_host())
        .map(|(gi, g)| bank.as_ref().map_or(den.n.div_ceil(per_chunk(g)), |b| b[gi].len()))
        .sum();
    ctl.begin(total + 1)?;
    // x − a·m with the zero slot, like the device path's query row.
    let xc: Vec<f32> =
        x.iter().enumerate().map(|(i, &v)| (v as f64 - a * den.mean[i / hw] as f64) as f32).chain([0.0]).collect();
    // The small groups, in parallel over groups, straight from the images.
    let inputs = direct::Inputs {
        shape: den.shape,
        canvas,
        patch: key.patch,
        xc: &xc[..len],
        images: &den.host_centred,
        n: den.n,
        scale: a / s2,
        tail: -a * a / (2.0 * s2),
    };
    let solved =
        direct::solve(&inputs, &groups, |g| g.direct && g.streams() && !g.host.pixels.is_empty(), ctl.token())?;
    fill_direct(den, hw, &groups, &solved, &mut out, &mut entropy_sum);
    ctl.chunk_done()?;
    let sweep = Sweep {
        xc: &xc,
        scale: (a / s2) as f32,
        tail: (-a * a / (2.0 * s2)) as f32,
        patch: key.patch,
        want_entropy: call.entropy || call.maps,
        per_chunk: &per_chunk,
    };
    for (gi, group) in groups.iter().enumerate() {
        if group.host.key_pixels.is_empty() {
            fill_mean(den, hw, &mut out.x0, &group.host.pixels);
        } else if group.banked_on_host() && !group.host.pixels.is_empty() {
            let chunks = bank.as_ref().map(|b| b[gi].as_slice());
            sweep.group(den, hw, group, chunks, &mut out, &mut entropy_sum, ctl)?;
        }
    }
    let computed = only.map_or(hw, |o| o.iter().filter(|&&v| v).count());
    out.entropy = if call.entropy { (entropy_sum / computed.max(1) as f64) as f32 } else { 0.0 };
    Ok(out)
}

/// x̂₀ = the mean pixel at `pixels` of a canvas of `hw` pixels: no training patch fits them.
fn fill_mean(den: &Denoiser, hw: usize, x0: &mut [f32], pixels: &[usize]) {
    for &px in pixels {
        for (ch, &m) in den.mean.iter().enumerate() {
            x0[ch * hw + px] = m;
        }
    }
}

/// Writes the small groups [`direct::solve`] computed into x̂₀ (a canvas of `hw` pixels),
/// the maps and the entropy sum.
fn fill_direct(
    den: &Denoiser,
    hw: usize,
    groups: &[DeviceGroup],
    solved: &[Option<direct::GroupResult>],
    out: &mut Denoised,
    entropy_sum: &mut f64,
) {
    let c = den.shape.c;
    for (group, solved) in groups.iter().zip(solved) {
        let Some(solved) = solved else { continue };
        for (i, &px) in group.host.pixels.iter().enumerate() {
            for ch in 0..c {
                out.x0[ch * hw + px] = solved.out[i * c + ch] + den.mean[ch];
            }
            if let Some(m) = out.maps.as_mut() {
                (m.winner[px], m.source[px]) = solved.winner[i];
                m.entropy[px] = solved.entropy[i];
            }
        }
        *entropy_sum += solved.entropy.iter().map(|&e| e as f64).sum::<f64>();
    }
}

/// What every banked group of one call is swept with: the query image (x − a·m with the zero
/// slot), the logit's two coefficients, and how the keys are chunked.
struct Sweep<'a> {
    xc: &'a [f32],
    /// a/σ², applied to the queries.
    scale: f32,
    /// −a²/(2σ²), the queries' last column, met by each key's ‖k‖².
    tail: f32,
    patch: usize,
    want_entropy: bool,
    per_chunk: &'a dyn Fn(&DeviceGroup) -> usize,
}

impl Sweep<'_> {
    /// One group through [`fused::RowState`], chunk by chunk: from the bank when there is one
    /// (`chunks`), else cut from the images as it goes.
    /// `hw`: the canvas's pixels (x̂₀'s plane stride).
    #[allow(clippy::too_many_arguments)]
    fn group(
        &self,
        den: &Denoiser,
        hw: usize,
        group: &DeviceGroup,
        chunks: Option<&[HostChunk]>,
        out: &mut Denoised,
        entropy_sum: &mut f64,
        ctl: &mut Control,
    ) -> Result<(), Cancelled> {
        let c = den.shape.c;
        let g = &group.host;
        let q = g.pixels.len();
        let d = c * self.patch * self.patch;
        // A merged bank's keys carry ln(count) as one more row, met by a query column of
        // ones, and as one more value channel (see [`merge`]).
        let merged = chunks.is_some_and(|ch| ch.first().is_some_and(|k| !k.first.is_empty()));
        let (da, cv) = if merged { (d + 2, c + 1) } else { (d + 1, c) };
        let mut queries = vec![0f32; q * da]; // [Q, Da]
        for i in 0..q {
            for t in 0..d {
                queries[i * da + t] = self.xc[g.query_idx[i * d + t] as usize] * self.scale;
            }
            queries[i * da + d] = self.tail;
            if merged {
                queries[i * da + d + 1] = 1.0;
            }
        }
        let mut state = fused::RowState::new(q, cv, self.want_entropy);
        match chunks {
            Some(chunks) => {
                for chunk in chunks {
                    state.update(&queries, da, chunk);
                    ctl.chunk_done()?;
                }
            }
            None => {
                let ipc = (self.per_chunk)(group);
                for n0 in (0..den.n).step_by(ipc) {
                    let chunk = host_chunk(den, g, self.patch, n0, ipc.min(den.n - n0), ctl.token().as_ref())?;
                    state.update(&queries, da, &chunk);
                    ctl.chunk_done()?;
                }
            }
        }
        let mut cols = state.argmax().to_vec();
        if let Some(chunks) = chunks.filter(|_| merged) {
            // A merged column → its key's first occurrence in the full bank.
            cols.iter_mut().for_each(|col| *col = merge::first_occurrence(chunks, *col as usize) as u64);
        }
        let (vals, mut ent) = state.finish();
        for (i, &px) in g.pixels.iter().enumerate() {
            for ch in 0..c {
                out.x0[ch * hw + px] = vals[i * cv + ch] + den.mean[ch];
            }
            if merged && self.want_entropy {
                // H over every key = H over the merged keys + E[ln count].
                ent[i] += vals[i * cv + c];
            }
        }
        *entropy_sum += ent.iter().map(|&e| e as f64).sum::<f64>();
        if let Some(m) = out.maps.as_mut() {
            m.set_group(g, &cols, &ent);
        }
        Ok(())
    }
}

/// Keys of images n0..n0+nc at a group's key positions, with norms, on the host.
/// Written row by row of the [D+1, K] layout (each image's keys are a contiguous run of
/// every row) from a transposed index table: writing key by key, each value went to a
/// different row 64 KB apart, and cutting a 600 MB bank at P = 11 took 2 s of TLB misses.
/// Checks `cancel` once per image: one chunk at P = 15 is ~15 MB, which under load took
/// longer than a slider move may wait.
fn host_chunk(
    den: &Denoiser,
    g: &PixelGroup,
    p: usize,
    n0: usize,
    nc: usize,
    cancel: Option<&CancelToken>,
) -> Result<fused::HostChunk, Cancelled> {
    let (c, len) = (den.shape.c, den.shape.len());
    let kg = g.keys_per_image();
    let d = g.key_idx.len() / kg;
    let da = d + 1;
    let k = nc * kg;
    // idx_t[t][j]: the image offset of value t of key j; `len` (outside the image) reads
    // the zero appended to each image below.
    let mut idx_t = vec![0u32; d * kg];
    for j in 0..kg {
        for t in 0..d {
            idx_t[t * kg + j] = g.key_idx[j * d + t] as u32;
        }
    }
    let mut img = vec![0f32; len + 1];
    let mut keys_t = vec![0f32; da * k]; // [D+1, K]
    for n in 0..nc {
        if cancel.is_some_and(|t| t.is_cancelled()) {
            return Err(Cancelled);
        }
        img[..len].copy_from_slice(&den.host_centred[(n0 + n) * len..(n0 + n + 1) * len]);
        for t in 0..d {
            let row = &mut keys_t[t * k + n * kg..t * k + (n + 1) * kg];
            for (v, &idx) in row.iter_mut().zip(&idx_t[t * kg..(t + 1) * kg]) {
                *v = img[idx as usize];
            }
        }
    }
    let (rows, norms) = keys_t.split_at_mut(d * k);
    for t in 0..d {
        for (nrm, &v) in norms.iter_mut().zip(&rows[t * k..(t + 1) * k]) {
            *nrm += v * v;
        }
    }
    let mut values_t = vec![0f32; c * k]; // [C, K]
    for (ch, &off) in centre_offsets(c, p).iter().enumerate() {
        values_t[ch * k..(ch + 1) * k].copy_from_slice(&keys_t[off as usize * k..(off as usize + 1) * k]);
    }
    Ok(fused::HostChunk { keys_t, values_t, len: k, first: Vec::new() })
}

/// The host key bank of a geometry, kept between calls while it fits the budget
/// (`Ok(None)`: too big, cut the keys per call). Cancellable between chunks: a bank can
/// take seconds to cut at large P, and a slider move must not wait for it.
fn host_bank(
    den: &mut Denoiser,
    key: GeometryKey,
    groups: &[DeviceGroup],
    per_chunk: &dyn Fn(&DeviceGroup) -> usize,
    ctl: &Control,
) -> Result<Option<Bank<HostChunk>>, Cancelled> {
    if let Some(b) = den.state::<KeyBanks<HostChunk>>().and_then(|s| s.get(&key)) {
        return Ok(Some(b));
    }
    let bytes = bank_bytes(den, key, DeviceGroup::banked_on_host);
    if !make_room_for_bank(den, key, bytes) {
        return Ok(None);
    }
    // Every chunk of every banked group, cut in parallel (the cutting is memory-bound
    // and was a tenth of a 20-step sample on one core).
    let n = den.n;
    let jobs: Vec<(usize, usize, usize)> = groups
        .iter()
        .enumerate()
        .filter(|(_, g)| g.banked_on_host())
        .flat_map(|(gi, g)| {
            let ipc = per_chunk(g);
            (0..n).step_by(ipc).map(move |n0| (gi, n0, ipc.min(n - n0)))
        })
        .collect();
    let (this, token) = (&*den, ctl.token());
    let cut: Vec<Result<fused::HostChunk, Cancelled>> = jobs
        .par_iter()
        .map(|&(gi, n0, nc)| host_chunk(this, &groups[gi].host, key.patch, n0, nc, token.as_ref()))
        .collect();
    if cut.iter().any(|c| c.is_err()) {
        // Handing hundreds of MB back to the OS takes ~0.3 ms a MB, longer than a cancel
        // may: free the half-built bank on another thread.
        std::thread::spawn(move || drop(cut));
        return Err(Cancelled);
    }
    let mut bank: Vec<Vec<fused::HostChunk>> = groups.iter().map(|_| Vec::new()).collect();
    for (&(gi, _, _), chunk) in jobs.iter().zip(cut) {
        bank[gi].push(chunk?);
    }
    // Each group's repeated keys merged (in parallel over groups; a cancel is checked per
    // group, the merge of one group being a hash pass over its keys).
    let (d, c) = (den.shape.c * key.patch * key.patch, den.shape.c);
    let merged: Vec<Option<Vec<HostChunk>>> = bank
        .par_iter()
        .map(|chunks| {
            let skip = !this.merge_keys || token.as_ref().is_some_and(|t| t.is_cancelled());
            if skip { None } else { merge::merge_duplicates(chunks, d, c) }
        })
        .collect();
    if ctl.check().is_err() {
        std::thread::spawn(move || drop(bank));
        return Err(Cancelled);
    }
    for (chunks, m) in bank.iter_mut().zip(merged) {
        if let Some(m) = m {
            *chunks = m;
        }
    }
    let bytes: usize = bank.iter().flatten().map(|k| (k.keys_t.len() + k.values_t.len() + k.first.len()) * 4).sum();
    let bank = Arc::new(bank);
    den.state_mut::<KeyBanks<HostChunk>>().insert(key, bank.clone(), bytes);
    Ok(Some(bank))
}
