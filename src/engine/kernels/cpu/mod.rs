//! The fused CPU kernel's host side: key banks cut from the training images row by row,
//! kept between calls while they fit the budget, and each call's groups folded through
//! [`fused::RowState`] (large groups) or [`direct::solve`] (small zeros-boundary groups).
//!
//! - [`fused`]: the streaming softmax state and the one-pass fold of a score tile.
//! - [`simd`]: the AVX2 / baseline lane loops the fold runs on.
//! - [`direct`]: the small groups, keys read in place from the images.
//! - [`merge`]: a kept bank's duplicate keys merged into one with a multiplicity.
//! - [`skip`]: a kept bank sorted into tiles that a lower bound rules out, so keys that
//!   cannot move a float32 result are never computed.
//! - [`strips`]: the large rectangular groups' distances summed from row strips read in
//!   place, a factor of P fewer multiply-adds than the dense sweep, and no bank.

pub mod direct;
pub mod fused;
pub mod merge;
pub mod simd;
pub mod skip;
pub mod strips;

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
    // The pixels that reduce to the Local machine: through its window sums over the whole
    // image (~N·HW·C·(2P + 2) operations) when there are many, else each straight from the
    // images with the small groups (~N·C·P² each). At P = 3 the window sums cost a call
    // 17 ms for its four corners, a fifth of a late step once skipping made the rest fast.
    let local_px = groups.iter().filter(|g| g.via_local && !g.host.pixels.is_empty()).count();
    let by_window_sums = local_px * key.patch * key.patch > hw * (2 * key.patch + 2);
    let mut entropy_sum =
        if by_window_sums { fill_via_local(den, x, call, key.patch, &groups, &mut out, ctl)? } else { 0.0 };
    let n = den.n;
    let per_chunk = move |g: &DeviceGroup| (HOST_CHUNK_KEYS / g.host.keys_per_image().max(1)).clamp(1, n);
    // x − a·m with the zero slot, like the device path's query row.
    let xc: Vec<f32> =
        x.iter().enumerate().map(|(i, &v)| (v as f64 - a * den.mean[i / hw] as f64) as f32).chain([0.0]).collect();
    let bank = match host_bank(den, key, &groups, &per_chunk, ctl)? {
        Some(bank) if den.skip_keys => Some(sort_for_skipping(den, key, &groups, bank, &xc, a, s2, ctl)?),
        bank => bank,
    };
    // Chunks to sweep: the bank's (merged groups have fewer), else one per image run.
    let banked: usize = groups
        .iter()
        .enumerate()
        .filter(|(_, g)| g.banked_on_host())
        .map(|(gi, g)| bank.as_ref().map_or(den.n.div_ceil(per_chunk(g)), |b| b[gi].chunks.len()))
        .sum();
    let striped: usize =
        groups.iter().filter(|g| g.strips.is_some() && g.streams()).map(|g| den.n.div_ceil(per_chunk(g))).sum();
    let total = banked + striped;
    ctl.begin(total + 1)?;
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
    let solved = direct::solve(
        &inputs,
        &groups,
        |g| !g.host.pixels.is_empty() && ((g.direct && g.streams()) || (g.via_local && !by_window_sums)),
        ctl.token(),
    )?;
    fill_direct(den, hw, &groups, &solved, &mut out, &mut entropy_sum);
    ctl.chunk_done()?;
    let sweep = Sweep {
        xc: &xc,
        a,
        s2,
        skip: den.skip_keys,
        scale: (a / s2) as f32,
        tail: (-a * a / (2.0 * s2)) as f32,
        patch: key.patch,
        want_entropy: call.entropy || call.maps,
        per_chunk: &per_chunk,
    };
    for (gi, group) in groups.iter().enumerate() {
        if group.host.key_pixels.is_empty() {
            fill_mean(den, hw, &mut out.x0, &group.host.pixels);
        } else if let Some(layout) = group.strips.as_ref().filter(|_| group.streams()) {
            if !group.host.pixels.is_empty() {
                sweep.strips(den, hw, group, layout, &mut out, &mut entropy_sum, ctl)?;
            }
        } else if group.banked_on_host() && !group.host.pixels.is_empty() {
            let kept = bank.as_ref().map(|b| &*b[gi]);
            sweep.group(den, hw, group, kept, &mut out, &mut entropy_sum, ctl)?;
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
    /// √ᾱ and σ² = 1 − ᾱ, for the skip bounds.
    a: f64,
    s2: f64,
    /// Whether a sorted bank may skip (off: `bench --no-skip`, the tests' dense twin).
    skip: bool,
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
    /// (`kept`), else cut from the images as it goes; or through [`skip::sweep`] when the
    /// bank is sorted and this noise level lets it skip enough.
    /// `hw`: the canvas's pixels (x̂₀'s plane stride).
    #[allow(clippy::too_many_arguments)]
    fn group(
        &self,
        den: &Denoiser,
        hw: usize,
        group: &DeviceGroup,
        kept: Option<&HostBank>,
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
        let chunks = kept.map(|k| k.chunks.as_slice());
        let merged = chunks.is_some_and(|ch| ch.first().is_some_and(|k| k.counted));
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
        if let Some((bank, index)) = kept.and_then(|k| Some(&k.chunks).zip(k.skip.as_ref())).filter(|_| self.skip) {
            let raw: Vec<f32> = (0..q * d).map(|i| self.xc[g.query_idx[i] as usize]).collect(); // [Q, D]
            if skip::worth_it(index, bank, &raw, self.a, self.s2) {
                let swept = skip::sweep(
                    index,
                    bank,
                    &queries,
                    &raw,
                    self.a,
                    self.s2,
                    cv,
                    self.want_entropy,
                    ctl.token().as_ref(),
                )?;
                den.skip_work.add(swept.folded, (q * index.keys()) as u64);
                for _ in bank {
                    ctl.chunk_done()?;
                }
                let cols: Vec<u64> = swept.winners;
                self.write(den, hw, g, merged, &swept.vals, swept.entropy, &cols, out, entropy_sum);
                return Ok(());
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
                let cutter = KeyCutter::new(g, den.shape.c, self.patch);
                for n0 in (0..den.n).step_by(ipc) {
                    let chunk = cutter.cut(den, n0, ipc.min(den.n - n0), ctl.token().as_ref())?;
                    state.update(&queries, da, &chunk);
                    ctl.chunk_done()?;
                }
            }
        }
        let mut cols = state.argmax().to_vec();
        if let Some(chunks) = chunks.filter(|ch| ch.first().is_some_and(|k| !k.first.is_empty())) {
            // A merged or sorted column → its key's (first) place in the full bank.
            cols.iter_mut().for_each(|col| *col = merge::first_occurrence(chunks, *col as usize) as u64);
        }
        let (vals, ent) = state.finish();
        self.write(den, hw, g, merged, &vals, ent, &cols, out, entropy_sum);
        Ok(())
    }

    /// One group through [`strips`]: its keys read from the images in place, a chunk of
    /// images at a time, in bank order, so the winners' columns mean what the dense path's do.
    #[allow(clippy::too_many_arguments)]
    fn strips(
        &self,
        den: &Denoiser,
        hw: usize,
        group: &DeviceGroup,
        layout: &strips::Layout,
        out: &mut Denoised,
        entropy_sum: &mut f64,
        ctl: &mut Control,
    ) -> Result<(), Cancelled> {
        let g = &group.host;
        let queries = strips::Queries::new(layout, self.xc, &g.pixels, self.scale, self.tail);
        let mut state = fused::RowState::new(g.pixels.len(), den.shape.c, self.want_entropy);
        let ipc = (self.per_chunk)(group);
        for n0 in (0..den.n).step_by(ipc) {
            let nc = ipc.min(den.n - n0);
            strips::fold_images(&queries, &den.host_centred, n0, nc, &mut state, ctl.token().as_ref())?;
            ctl.chunk_done()?;
        }
        let pairs = (g.pixels.len() * g.keys_per_image() * den.n) as u64;
        den.strip_work.add(pairs, pairs);
        let cols = state.argmax().to_vec();
        let (vals, ent) = state.finish();
        self.write(den, hw, g, false, &vals, ent, &cols, out, entropy_sum);
        Ok(())
    }

    /// Writes one group's x̂₀ ([Q, C'] values less the mean, `merged`: with ln(count) last),
    /// entropies and winners into the call's output.
    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        den: &Denoiser,
        hw: usize,
        g: &PixelGroup,
        merged: bool,
        vals: &[f32],
        mut ent: Vec<f32>,
        cols: &[u64],
        out: &mut Denoised,
        entropy_sum: &mut f64,
    ) {
        let c = den.shape.c;
        let cv = if merged { c + 1 } else { c };
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
            m.set_group(g, cols, &ent);
        }
    }
}

/// One pixel group's kept keys on the fused path: its chunks (merged and sorted where that
/// pays) and, when sorted, the tile bounds [`skip`] rules tiles out with.
pub(crate) struct HostBank {
    pub chunks: Vec<HostChunk>,
    pub skip: Option<skip::SkipIndex>,
}

impl HostBank {
    fn bytes(&self) -> usize {
        self.chunks.iter().map(|k| (k.keys_t.len() + k.values_t.len() + k.first.len()) * 4).sum::<usize>()
            + self.skip.as_ref().map_or(0, |s| s.bytes())
    }
}

/// Sorts the kept banks of the groups this call would skip enough on ([`skip::would_skip`]),
/// and puts the bank back in the cache with them. A bank is sorted once, at the first call
/// low enough in noise to use it: the sort costs about a bank's cutting (0.1–0.7 s on MNIST),
/// which the high-noise calls at large P, where nothing can be skipped, never pay.
#[allow(clippy::too_many_arguments)]
fn sort_for_skipping(
    den: &mut Denoiser,
    key: GeometryKey,
    groups: &[DeviceGroup],
    bank: Bank<Arc<HostBank>>,
    xc: &[f32],
    a: f64,
    s2: f64,
    ctl: &Control,
) -> Result<Bank<Arc<HostBank>>, Cancelled> {
    let d = den.shape.c * key.patch * key.patch;
    let raw = |g: &PixelGroup| -> Vec<f32> { g.query_idx.iter().map(|&i| xc[i as usize]).collect() };
    let wanted: Vec<usize> = (0..groups.len())
        .filter(|&gi| {
            let (g, b) = (&groups[gi], &bank[gi]);
            g.banked_on_host() && b.skip.is_none() && g.host.pixels.len() >= skip::MIN_QUERIES && {
                let represented = den.n * g.host.keys_per_image();
                skip::would_skip(&b.chunks, &raw(&g.host), d, a, s2, represented)
            }
        })
        .collect();
    if wanted.is_empty() {
        return Ok(bank);
    }
    let mut next: Vec<Arc<HostBank>> = bank.iter().cloned().collect();
    for gi in wanted {
        ctl.check()?;
        if let Some((chunks, index)) = skip::order(&bank[gi].chunks, d, ctl.token().as_ref())? {
            next[gi] = Arc::new(HostBank { chunks, skip: Some(index) });
        }
    }
    let bytes: usize = next.iter().map(|b| b.bytes()).sum();
    let next = Arc::new(next);
    // The unsorted chunks go when the last call holding them ends; freed off this thread.
    std::thread::spawn(move || drop(bank));
    den.state_mut::<KeyBanks<Arc<HostBank>>>().insert(key, next.clone(), bytes);
    Ok(next)
}

/// Cuts a group's keys out of the training images, a chunk of images at a time.
/// Built once per group: the transposed index table is the same for every chunk, and
/// rebuilding it per chunk (176k scattered writes at P = 15) was most of the time a
/// cancelled bank build spent finishing its remaining chunks.
struct KeyCutter {
    /// idx_t[t][j]: the image offset of value t of key j; `len` (outside the image) reads
    /// the zero appended to each image in [`KeyCutter::cut`].
    idx_t: Vec<u32>,
    /// Keys per image.
    kg: usize,
    /// Values per key (C·P²).
    d: usize,
    /// Where each channel's centre value sits in a key.
    centres: Vec<i64>,
}

impl KeyCutter {
    fn new(g: &PixelGroup, c: usize, p: usize) -> Self {
        let kg = g.keys_per_image();
        let d = g.key_idx.len().checked_div(kg).unwrap_or(0);
        let mut idx_t = vec![0u32; d * kg];
        for j in 0..kg {
            for t in 0..d {
                idx_t[t * kg + j] = g.key_idx[j * d + t] as u32;
            }
        }
        KeyCutter { idx_t, kg, d, centres: centre_offsets(c, p) }
    }

    /// Keys of images n0..n0+nc, with norms, on the host.
    /// Written row by row of the [D+1, K] layout (each image's keys are a contiguous run of
    /// every row): writing key by key, each value went to a different row 64 KB apart, and
    /// cutting a 600 MB bank at P = 11 took 2 s of TLB misses.
    /// Checks `cancel` before anything is allocated and once per image: one chunk at P = 15
    /// is ~15 MB, which under load took longer than a slider move may wait.
    fn cut(
        &self,
        den: &Denoiser,
        n0: usize,
        nc: usize,
        cancel: Option<&CancelToken>,
    ) -> Result<fused::HostChunk, Cancelled> {
        let cancelled = || cancel.is_some_and(|t| t.is_cancelled());
        if cancelled() {
            return Err(Cancelled);
        }
        let (c, len) = (den.shape.c, den.shape.len());
        let (kg, d) = (self.kg, self.d);
        let da = d + 1;
        let k = nc * kg;
        let mut img = vec![0f32; len + 1];
        let mut keys_t = vec![0f32; da * k]; // [D+1, K]
        for n in 0..nc {
            if cancelled() {
                return Err(Cancelled);
            }
            img[..len].copy_from_slice(&den.host_centred[(n0 + n) * len..(n0 + n + 1) * len]);
            for t in 0..d {
                let row = &mut keys_t[t * k + n * kg..t * k + (n + 1) * kg];
                for (v, &idx) in row.iter_mut().zip(&self.idx_t[t * kg..(t + 1) * kg]) {
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
        for (ch, &off) in self.centres.iter().enumerate() {
            values_t[ch * k..(ch + 1) * k].copy_from_slice(&keys_t[off as usize * k..(off as usize + 1) * k]);
        }
        Ok(fused::HostChunk { keys_t, values_t, len: k, first: Vec::new(), counted: false })
    }
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
) -> Result<Option<Bank<Arc<HostBank>>>, Cancelled> {
    if let Some(b) = den.state::<KeyBanks<Arc<HostBank>>>().and_then(|s| s.get(&key)) {
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
    let cutters: Vec<Option<KeyCutter>> =
        groups.iter().map(|g| g.banked_on_host().then(|| KeyCutter::new(&g.host, this.shape.c, key.patch))).collect();
    let cut: Vec<Result<fused::HostChunk, Cancelled>> = jobs
        .par_iter()
        .map(|&(gi, n0, nc)| cutters[gi].as_ref().expect("a banked group").cut(this, n0, nc, token.as_ref()))
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
    let kept: Vec<Arc<HostBank>> = bank.into_iter().map(|chunks| Arc::new(HostBank { chunks, skip: None })).collect();
    let bytes: usize = kept.iter().map(|b| b.bytes()).sum();
    let bank = Arc::new(kept);
    den.state_mut::<KeyBanks<Arc<HostBank>>>().insert(key, bank.clone(), bytes);
    Ok(Some(bank))
}
