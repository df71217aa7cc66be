//! The fused op's host side: per geometry, the index tables that lay every pixel group out
//! as blocks of queries (built once, cached) and cut them into launches sized by the adapter
//! ([`op_plan`]); per call, one [`op::els_partials`] per launch, a cancel check between
//! them, and the partial states merged into x̂₀, the entropy and the winners.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use burn::tensor::{Int, Tensor};

use super::super::control::{Cancelled, Control};
use super::super::denoiser::{Denoiser, ElsPath, State, to_host};
use super::super::geometry::PixelGroup;
use super::super::machine::{Call, Denoised, PixelMaps};
use super::gpu::AdapterLimits;
use super::groups::{GeometryKey, device_groups};
use super::op::{self, BLOCK_QUERIES, Block, OpParams};
use super::op_merge::merge_group;
use super::op_plan::{self, LaunchPlan};
use super::op_skip;

/// One launch's tables: its queries and blocks, numbered from its own first query.
pub(crate) struct LaunchTables {
    /// [q·D]: flat indices into x's row of the launch's query patches, block by block.
    pub query_idx: Tensor<1, Int>,
    /// [b, 5]: the launch's blocks (see [`op::Block`]), q0 relative to its first query.
    pub blocks: Tensor<2, Int>,
    /// Its first query row in the part and how many it has.
    pub q0: usize,
    pub queries: usize,
}

/// Where a part's winning key came from, for the provenance maps.
pub(crate) enum Sources {
    /// Keys cut from the training images: key row r's patch centre is `key_row_pixel[r]`,
    /// and the image is the key's index over the row's keys.
    Images { key_row_pixel: Vec<u32> },
    /// A merged bank: each key's first occurrence, (training image, patch centre).
    Merged { first: Vec<(u32, u32)> },
}

/// One part of a geometry's tables: the blocks that read their keys from one place (the
/// training images, or the bank of merged duplicate keys, [`super::op_merge`]), each part
/// with its own launches and splits.
pub(crate) struct OpPart {
    /// The merged bank ([1, K·(D + 1) + 1]: each key's values, then its ln n), or `None`
    /// for the training images.
    pub bank: Option<Tensor<2>>,
    /// [Kpos, D] (+ 1 when merged): flat indices into a row of what the keys are read from.
    pub key_idx: Tensor<2, Int>,
    pub launches: Vec<LaunchTables>,
    /// Key splits per block, in every launch of the part.
    pub splits: usize,
    /// Rows the keys are spread over: N images, or the merged bank's one row.
    pub rows: usize,
    /// Output pixel of each query row.
    pub pixels: Vec<usize>,
    /// Per query row: its first key row and how many it has (for decoding winners).
    pub query_keys: Vec<(u32, u32)>,
    pub sources: Sources,
    /// (query, key) pairs a call sweeps, and as many before merging.
    pub pairs: (u64, u64),
    /// A merged bank sorted for skipping ([`super::op_skip`]): its basis and tile bounds
    /// ([1, RANK·D + tiles·BOUND_COLS]), the margin for its largest group's K, and its tile.
    pub skip: Option<PartSkip>,
}

/// What a sorted merged bank carries for the kernel's skipping.
pub(crate) struct PartSkip {
    pub bounds: Tensor<2>,
    pub margin: f32,
    pub tile: usize,
}

/// Skipping is tried below this noise (σ² = 1 − ᾱ). Measured on MNIST, N = 2000, lavapipe
/// (BENCHMARKS.md): at σ² = 0.42 the kernel still folds 94–99.9% of the pairs, at 0.20 76%
/// (P = 3) for no gain, at 0.09 27% (P = 5, 1.4× faster), at 0.02 12.5% (P = 3, 2.3×).
pub const SKIP_BELOW_S2: f64 = 0.25;

/// The fused op's index tables for one geometry, on the device.
pub(crate) struct OpTables {
    pub parts: Vec<OpPart>,
    /// Pixels with no admissible training patch (circular windows larger than the image).
    pub empty: Vec<usize>,
    pub bytes: usize,
}

/// Every geometry's op tables. Eviction keeps the call in progress's.
#[derive(Default)]
pub(crate) struct OpTablesCache(HashMap<GeometryKey, Arc<OpTables>>);

impl State for OpTablesCache {
    fn bytes(&self) -> usize {
        self.0.values().map(|t| t.bytes).sum()
    }
    fn evict(&mut self, keep: Option<&dyn Any>) {
        let keep = keep.and_then(|k| k.downcast_ref::<GeometryKey>());
        self.0.retain(|k, _| Some(k) == keep);
    }
}

/// Geometries the adapter cannot run (see [`op_plan::plan`]): they go to the CPU without
/// rebuilding their tables on every call.
#[derive(Default)]
pub(crate) struct OpRefused(std::collections::HashSet<GeometryKey>);

impl State for OpRefused {
    fn bytes(&self) -> usize {
        0
    }
    fn evict(&mut self, _: Option<&dyn Any>) {}
}

/// [`run`], or `None` where the fused CPU kernel must answer instead, having said why in a
/// notice ([`Denoiser::take_notices`]):
/// - a geometry the adapter cannot run (a block past its binding limit or, on a software
///   GPU, its loop limit): this geometry only, every time;
/// - a device error (an allocation the GPU refuses, a lost device): every later call of
///   this denoiser, whose patch machines move to the CPU ([`super::super::denoiser::ElsPath`]).
pub(crate) fn try_run(
    den: &mut Denoiser,
    x: &[f32],
    call: &Call,
    key: GeometryKey,
    ctl: &mut Control,
) -> Result<Option<Denoised>, Cancelled> {
    if den.state::<OpRefused>().is_some_and(|r| r.0.contains(&key)) {
        return Ok(None);
    }
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(den, x, call, key, ctl)));
    match outcome {
        Ok(Ok(Ok(done))) => Ok(Some(done)),
        Ok(Err(cancelled)) => Err(cancelled),
        Ok(Ok(Err(refused))) => {
            den.state_mut::<OpRefused>().0.insert(key);
            den.notice(format!(
                "the GPU cannot run P = {} here ({refused}); that patch size runs on the CPU",
                key.patch
            ));
            Ok(None)
        }
        Err(panic) => {
            let why = super::super::control::panic_text(&*panic);
            let why: String = why.lines().next().unwrap_or("").chars().take(160).collect();
            den.els_path = ElsPath::HostKernel;
            den.evict(None);
            den.notice(format!("the GPU failed ({why}); ELS, LS and Local run on the CPU from here"));
            Ok(None)
        }
    }
}

/// ELS (or LS, with `key.equivariant` off) through the fused op, keys cut on the fly from
/// the images. Errs when the adapter cannot run the geometry at all ([`op_plan::plan`]).
pub(crate) fn run(
    den: &mut Denoiser,
    x: &[f32],
    call: &Call,
    key: GeometryKey,
    ctl: &mut Control,
) -> Result<Result<Denoised, String>, Cancelled> {
    let (a, s2) = call.scales();
    let tables = match op_tables(den, key, ctl)? {
        Ok(t) => t,
        Err(e) => return Ok(Err(e)),
    };
    let (c, hw) = (den.shape.c, den.shape.pixels());
    let d = c * key.patch * key.patch;
    let mut x0 = vec![0f32; den.shape.len()];
    let mut maps = call.maps.then(|| PixelMaps::empty(hw));
    den.fill_mean(&mut x0, &tables.empty);
    ctl.begin(tables.parts.iter().map(|p| p.launches.len()).sum::<usize>().max(1))?;
    let mut entropy_sum = 0f64;
    let centred = den.centred_query(x, a); // [1, C·H·W + 1]
    for part in &tables.parts {
        let counted = part.bank.is_some();
        let cv = c + counted as usize;
        let skip = part.skip.as_ref().filter(|_| den.skip_keys && s2 < SKIP_BELOW_S2);
        let params = OpParams {
            a: a as f32,
            inv_two_s2: (0.5 / s2) as f32,
            splits: part.splits,
            channels: c,
            patch: key.patch,
            counted,
            // A sorted bank's splits stay cut at tiles whether or not this call skips, so
            // winners decode one way.
            align: part.skip.as_ref().map_or(1, |s| s.tile),
            skip_margin: skip.map(|s| s.margin),
        };
        let images = part.bank.clone().unwrap_or_else(|| den.images.clone());
        den.merge_work.add(part.pairs.0, part.pairs.1);
        for launch in &part.launches {
            if std::mem::take(&mut den.fail_next_launch) {
                panic!("can't allocate buffer (injected device error)");
            }
            let q = launch.queries;
            let queries = centred.clone().select(1, launch.query_idx.clone()).reshape([q, d]); // [q, D]
            let bounds = skip.map(|s| s.bounds.clone());
            let partials =
                op::els_partials(images.clone(), queries, part.key_idx.clone(), launch.blocks.clone(), bounds, params); // [S, q, state_cols]
            if skip.is_some() {
                let rows = launch.q0..launch.q0 + q;
                let held: u64 = part.query_keys[rows].iter().map(|&(_, kn)| (kn as usize * part.rows) as u64).sum();
                den.skip_work.add(op::folded(partials.clone()), held);
            }
            let won = call.maps.then(|| op::winners(partials.clone(), counted));
            let (out, ent) = op::merge(partials, counted); // [q, C'], [q, 1]
            let out = to_host(out);
            let mut ent = to_host(ent);
            if counted {
                // H over every key = H over the merged ones + E[ln n] (see `cpu::merge`).
                ent.iter_mut().enumerate().for_each(|(i, e)| *e += out[i * cv + c]);
            }
            let rows = launch.q0..launch.q0 + q;
            for (i, &px) in part.pixels[rows.clone()].iter().enumerate() {
                for ch in 0..c {
                    x0[ch * hw + px] = out[i * cv + ch] + den.mean[ch];
                }
            }
            entropy_sum += ent.iter().map(|&e| e as f64).sum::<f64>();
            if let (Some(m), Some(won)) = (maps.as_mut(), won) {
                for (i, row) in rows.enumerate() {
                    let px = part.pixels[row];
                    // Split s of a query with rows·kn keys starts at key s·split_len.
                    let (k_row0, kn) = (part.query_keys[row].0 as usize, part.query_keys[row].1 as usize);
                    let f = won[i].0 * op::split_len(part.rows * kn, params.splits, params.align) + won[i].1;
                    (m.winner[px], m.source[px]) = match &part.sources {
                        Sources::Images { key_row_pixel } => ((f / kn) as u32, key_row_pixel[k_row0 + f % kn]),
                        Sources::Merged { first } => first[k_row0 + f],
                    };
                    m.entropy[px] = ent[i];
                }
            }
            ctl.chunk_done()?;
        }
    }
    if tables.parts.iter().all(|p| p.launches.is_empty()) {
        ctl.chunk_done()?;
    }
    Ok(Ok(Denoised { x0, entropy: if call.entropy { (entropy_sum / hw as f64) as f32 } else { 0.0 }, maps }))
}

/// The op's tables for a geometry, built from its pixel groups once and cached.
fn op_tables(den: &mut Denoiser, key: GeometryKey, ctl: &Control) -> Result<Result<Arc<OpTables>, String>, Cancelled> {
    if let Some(t) = den.state::<OpTablesCache>().and_then(|s| s.0.get(&key)) {
        return Ok(Ok(t.clone()));
    }
    let groups = device_groups(den, key, ctl)?;
    let d = den.shape.c * key.patch * key.patch;
    // On the CPU backend the op's body has no binding limit; launches are still cut by work,
    // so a cancel waits for one.
    let limits = den.adapter_limits.or_else(|| AdapterLimits::of(&den.device)).unwrap_or(AdapterLimits {
        max_binding_bytes: u64::MAX,
        memory_bytes: None,
        software: false,
    });
    let mut plain = PartBuilder::default();
    let mut merged = PartBuilder::default();
    let (mut bank, mut first) = (Vec::new(), Vec::new());
    // Skipping on the merged bank: each group starts and ends on a kernel tile, sorted ones
    // with their bounds, the others with rows that keep every tile.
    let tile = super::gpu::tile_keys(d + 1);
    let mut sorting = den.skip_keys && tile > 0 && d >= op_skip::RANK_NEEDED;
    let mut bounds: Vec<f32> = Vec::new();
    let (mut basis, mut represented) = (None::<op_skip::Basis>, 0usize);
    let mut empty = Vec::new();
    let mut singles = Vec::new();
    let row = den.shape.len(); // host_centred has no zero slot: merge_group reads past-the-edge as 0
    for g in groups.iter().map(|g| &g.host) {
        ctl.check()?;
        if g.key_pixels.is_empty() {
            empty.extend_from_slice(&g.pixels);
        } else if g.pixels.len() == 1 && g.keys_per_image() == 1 {
            singles.push(g);
        } else if let Some(mut m) = den
            .merge_keys
            .then(|| merge_group(&den.host_centred, row, den.n, &g.key_idx, d))
            .flatten()
            .filter(|m| fits_binding(first.len() + m.len() + 2 * tile, d, &limits))
        {
            if sorting {
                pad_to_tile(&mut bank, &mut first, &mut merged.key_idx, d, tile);
                let rows = if op_skip::worth_sorting(m.len(), d, tile) {
                    let basis = basis.get_or_insert_with(|| op_skip::Basis::of(&m, d));
                    represented = represented.max(m.total);
                    op_skip::sort(&mut m, d, basis, tile)
                } else {
                    op_skip::keep_every_tile(m.len().div_ceil(tile))
                };
                bounds.extend_from_slice(&rows);
            }
            // Its distinct keys, each row of the bank D values and ln n, indexed in place.
            let k0 = first.len();
            merged.key_idx.extend((k0 * (d + 1)..(k0 + m.len()) * (d + 1)).map(|i| i as i64));
            bank.extend_from_slice(&m.rows);
            first.extend(m.first.iter().map(|&(img, pos)| (img, g.key_pixels[pos as usize] as u32)));
            merged.add_group(g, d, k0, m.len(), m.len(), m.total);
            if sorting {
                pad_to_tile(&mut bank, &mut first, &mut merged.key_idx, d, tile);
                debug_assert_eq!(bounds.len(), first.len() / tile * op_skip::BOUND_COLS);
            }
            ctl.check()?;
        } else {
            let k0 = plain.key_idx.len() / d;
            plain.key_idx.extend_from_slice(&g.key_idx);
            plain.key_row_pixel.extend(g.key_pixels.iter().map(|&p| p as u32));
            let kn = g.keys_per_image();
            plain.add_group(g, d, k0, kn, den.n * kn, den.n * kn);
        }
    }
    // Singleton groups (LS, and ELS pixels whose overhang no other pixel shares): query
    // u of a block reads key row k0 + u, so 64 of them fill a block.
    for chunk in singles.chunks(BLOCK_QUERIES) {
        ctl.check()?;
        let k0 = plain.key_idx.len() / d;
        plain.blocks.push(Block { q0: plain.pixels.len(), qn: chunk.len(), k0, kn: 1, kstride: 1 });
        for g in chunk {
            plain.query_keys.push(((plain.key_idx.len() / d) as u32, 1));
            plain.key_row_pixel.push(g.key_pixels[0] as u32);
            plain.pixels.push(g.pixels[0]);
            plain.query_idx.extend_from_slice(&g.query_idx);
            plain.key_idx.extend_from_slice(&g.key_idx);
            plain.pairs += den.n as u64;
            plain.pairs_full += den.n as u64;
        }
    }
    // Both parts planned first, so the GPU's memory is counted before anything is uploaded.
    let c = den.shape.c;
    let plain_plan = match (!plain.blocks.is_empty()).then(|| op_plan::plan(&plain.blocks, den.n, d, c, &limits)) {
        Some(Err(e)) => return Ok(Err(e)),
        plan => plan.map(|p| p.expect("errors returned above")),
    };
    let merged_plan = match (!merged.blocks.is_empty()).then(|| op_plan::plan(&merged.blocks, 1, d + 1, c + 1, &limits))
    {
        Some(Err(e)) => return Ok(Err(e)),
        plan => plan.map(|p| p.expect("errors returned above")),
    };
    let resident = den.n as u64 * (den.shape.len() as u64 + 1) * 4 // the training images
        + ((plain.bytes() + merged.bytes()) as u64) // index tables, at 8 bytes an index
        + (bank.len() as u64 + 1) * 4;
    let transient = [(&plain, &plain_plan, false), (&merged, &merged_plan, true)]
        .iter()
        .filter_map(|(part, plan, counted)| plan.as_ref().map(|p| part.largest_launch_bytes(p, d, c, *counted)))
        .max()
        .unwrap_or(0);
    if let Err(e) = fits_memory(resident, transient, &limits) {
        return Ok(Err(e));
    }
    let mut parts = Vec::new();
    let mut bytes = empty.len() * 8;
    if let Some(plan) = plain_plan {
        bytes += plain.bytes();
        let key_row_pixel = std::mem::take(&mut plain.key_row_pixel);
        parts.push(plain.upload(den, d, den.n, None, Sources::Images { key_row_pixel }, plan));
    }
    if let Some(plan) = merged_plan {
        bytes += merged.bytes() + (bank.len() + 1) * 4 + first.len() * 8;
        bank.push(0.0);
        let len = bank.len();
        let tensor = Tensor::<2>::from_data(burn::tensor::TensorData::new(bank, [1, len]), &den.device);
        let mut part = merged.upload(den, d + 1, 1, Some(tensor), Sources::Merged { first }, plan);
        sorting &= basis.is_some();
        if let (true, Some(basis)) = (sorting, basis) {
            let mut table = basis.to_f32();
            table.extend_from_slice(&bounds);
            bytes += table.len() * 4;
            let len = table.len();
            part.skip = Some(PartSkip {
                bounds: Tensor::<2>::from_data(burn::tensor::TensorData::new(table, [1, len]), &den.device),
                margin: op_skip::margin(represented),
                tile,
            });
        }
        parts.push(part);
    }
    let tables = OpTables { parts, empty, bytes };
    den.make_room(bytes, None);
    let tables = Arc::new(tables);
    den.state_mut::<OpTablesCache>().0.insert(key, tables.clone());
    Ok(Ok(tables))
}

/// One part's tables on the host while a geometry's groups are laid out.
#[derive(Default)]
struct PartBuilder {
    query_idx: Vec<i64>,
    /// [Kpos · width]: flat key indices (width D, or D + 1 for a merged bank).
    key_idx: Vec<i64>,
    blocks: Vec<Block>,
    pixels: Vec<usize>,
    query_keys: Vec<(u32, u32)>,
    key_row_pixel: Vec<u32>,
    /// (query, key) pairs swept, and before merging.
    pairs: u64,
    pairs_full: u64,
}

impl PartBuilder {
    /// A group whose queries all see key rows `k0 .. k0 + kn` (of every image when the keys
    /// are cut from the images), in blocks of 64: `swept` keys a query folds, `total` before
    /// merging.
    fn add_group(&mut self, g: &PixelGroup, d: usize, k0: usize, kn: usize, swept: usize, total: usize) {
        for (chunk, idx) in g.pixels.chunks(BLOCK_QUERIES).zip(g.query_idx.chunks(BLOCK_QUERIES * d)) {
            self.blocks.push(Block { q0: self.pixels.len(), qn: chunk.len(), k0, kn, kstride: 0 });
            self.pixels.extend_from_slice(chunk);
            self.query_idx.extend_from_slice(idx);
            self.query_keys.extend(chunk.iter().map(|_| (k0 as u32, kn as u32)));
        }
        let q = g.pixels.len() as u64;
        self.pairs += q * swept as u64;
        self.pairs_full += q * total as u64;
    }

    fn bytes(&self) -> usize {
        (self.query_idx.len() + self.key_idx.len() + self.blocks.len() * 5) * 8 + self.pixels.len() * 16
    }

    /// The most bytes one launch of `plan` holds on the device at once: its query matrix and
    /// its partial states ([`op::state_cols`] each).
    fn largest_launch_bytes(&self, plan: &LaunchPlan, d: usize, c: usize, counted: bool) -> u64 {
        let cols = op::state_cols(c, counted) as u64;
        plan.launches
            .iter()
            .map(|r| {
                let q: u64 = self.blocks[r.clone()].iter().map(|b| b.qn as u64).sum();
                q * d as u64 * 4 + q * plan.splits as u64 * cols * 4
            })
            .max()
            .unwrap_or(0)
    }

    /// The part on the device, cut into `plan`'s launches. `width`: key row width; `rows`:
    /// rows the keys are spread over.
    fn upload(
        self,
        den: &Denoiser,
        width: usize,
        rows: usize,
        bank: Option<Tensor<2>>,
        sources: Sources,
        plan: LaunchPlan,
    ) -> OpPart {
        let counted = bank.is_some();
        let q_width = width - counted as usize;
        let LaunchPlan { splits, launches } = plan;
        let launches: Vec<LaunchTables> = launches
            .into_iter()
            .map(|r| {
                let q0 = self.blocks[r.start].q0;
                let q1 = self.blocks[r.end - 1].q0 + self.blocks[r.end - 1].qn;
                let rows: Vec<i64> = self.blocks[r].iter().flat_map(|b| Block { q0: b.q0 - q0, ..*b }.row()).collect();
                LaunchTables {
                    query_idx: den.int_tensor(&self.query_idx[q0 * q_width..q1 * q_width]),
                    blocks: den.int_tensor(&rows).reshape([rows.len() / 5, 5]),
                    q0,
                    queries: q1 - q0,
                }
            })
            .collect();
        let kpos = self.key_idx.len() / width;
        OpPart {
            bank,
            key_idx: den.int_tensor(&self.key_idx).reshape([kpos, width]),
            launches,
            splits,
            rows,
            pixels: self.pixels,
            query_keys: self.query_keys,
            sources,
            pairs: (self.pairs, self.pairs_full),
            skip: None,
        }
    }
}

/// Pads the merged bank (values and ln n zero), its first occurrences and its identity index
/// table to a multiple of `tile` keys, so the next group starts on a kernel tile. The padding
/// rows are no group's keys: no block reads them.
fn pad_to_tile(bank: &mut Vec<f32>, first: &mut Vec<(u32, u32)>, key_idx: &mut Vec<i64>, d: usize, tile: usize) {
    let pad = first.len().next_multiple_of(tile) - first.len();
    let k0 = first.len();
    bank.extend(std::iter::repeat_n(0.0, pad * (d + 1)));
    first.extend(std::iter::repeat_n((0, 0), pad));
    key_idx.extend((k0 * (d + 1)..(k0 + pad) * (d + 1)).map(|i| i as i64));
}

/// Whether a geometry's tables (`resident` bytes with the training images) and its largest
/// launch (`transient`) fit the adapter's memory, where the runtime states it, with a tenth
/// kept back for the runtime's own pools. A geometry that does not is refused up front and
/// runs on the CPU, rather than dying in an allocation mid-call.
fn fits_memory(resident: u64, transient: u64, limits: &AdapterLimits) -> Result<(), String> {
    match limits.memory_bytes {
        Some(memory) if (resident + transient) as f64 > 0.9 * memory as f64 => Err(format!(
            "its tables and largest launch need {} of the GPU's {}",
            size(resident + transient),
            size(memory)
        )),
        _ => Ok(()),
    }
}

/// Bytes for a message: GB from one on, else MB.
fn size(bytes: u64) -> String {
    if bytes >= 1_000_000_000 {
        format!("{:.2} GB", bytes as f64 / 1e9)
    } else {
        format!("{:.1} MB", bytes as f64 / 1e6)
    }
}

/// Whether a merged bank of `keys` keys of width `d`, and its index table (at 8 bytes an
/// index, the widest a backend uses), each fit one binding of the adapter: a bank that does
/// not leaves its groups unmerged.
fn fits_binding(keys: usize, d: usize, limits: &AdapterLimits) -> bool {
    let bytes = (keys * (d + 1) * 8) as u64;
    bytes <= limits.max_binding_bytes.min(op_plan::LAUNCH_BUFFER_CAP)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_merged_bank_must_fit_one_binding() {
        let lavapipe = AdapterLimits { max_binding_bytes: 128 << 20, memory_bytes: None, software: true };
        // MNIST P = 5: ~616k distinct keys of 25 values, 125 MB at 8 bytes an index: fits.
        assert!(fits_binding(616_000, 25, &lavapipe));
        // 134,217,728 / 8 / 26 = 645,277 keys is the edge at D = 25.
        assert!(fits_binding(645_277, 25, &lavapipe));
        assert!(!fits_binding(645_278, 25, &lavapipe));
        // A hardware adapter's larger limit is still capped at 256 MiB a buffer.
        let h200 = AdapterLimits { max_binding_bytes: 1 << 40, memory_bytes: None, software: false };
        assert!(fits_binding(1_290_555, 25, &h200));
        assert!(!fits_binding(1_290_556, 25, &h200));
    }

    #[test]
    fn a_geometry_must_fit_the_gpus_memory() {
        let gpu =
            |gb: u64| AdapterLimits { max_binding_bytes: 128 << 20, memory_bytes: Some(gb << 30), software: false };
        // 9 GiB of tables and a 0.2 GiB launch on a 10 GiB card: 92% of it, over the 90% kept.
        let e = fits_memory(9 << 30, 200 << 20, &gpu(10)).unwrap_err();
        assert!(e.contains("9.87 GB of the GPU's 10.74 GB"), "{e}");
        assert!(fits_memory(8 << 30, 200 << 20, &gpu(10)).is_ok());
        // Where the runtime states no memory, nothing is refused on its account.
        let unknown = AdapterLimits { memory_bytes: None, ..gpu(1) };
        assert!(fits_memory(u64::MAX / 4, 0, &unknown).is_ok());
    }
}
