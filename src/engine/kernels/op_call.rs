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
use super::super::machine::{Call, Denoised, PixelMaps};
use super::gpu::AdapterLimits;
use super::groups::{GeometryKey, device_groups};
use super::op::{self, BLOCK_QUERIES, Block, OpParams};
use super::op_plan::{self, LaunchPlan};

/// One launch's tables: its queries and blocks, numbered from its own first query.
pub(crate) struct LaunchTables {
    /// [q·D]: flat indices into x's row of the launch's query patches, block by block.
    pub query_idx: Tensor<1, Int>,
    /// [b, 5]: the launch's blocks (see [`op::Block`]), q0 relative to its first query.
    pub blocks: Tensor<2, Int>,
    /// Its first query row in the call and how many it has.
    pub q0: usize,
    pub queries: usize,
}

/// The fused op's index tables for one geometry, on the device.
pub(crate) struct OpTables {
    /// [Kpos, D]: flat indices into an image row of every key position (every launch binds
    /// all of it).
    pub key_idx: Tensor<2, Int>,
    pub launches: Vec<LaunchTables>,
    /// Key splits per block, in every launch.
    pub splits: usize,
    /// Output pixel of each query row.
    pub pixels: Vec<usize>,
    /// Pixels with no admissible training patch (circular windows larger than the image).
    pub empty: Vec<usize>,
    /// Per query row: its first key row and how many it has (for decoding winners).
    pub query_keys: Vec<(u32, u32)>,
    /// Training-image pixel (patch centre) of each key row.
    pub key_row_pixel: Vec<u32>,
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
    ctl.begin(tables.launches.len().max(1))?;
    let mut entropy_sum = 0f64;
    let params =
        OpParams { a: a as f32, inv_two_s2: (0.5 / s2) as f32, splits: tables.splits, channels: c, patch: key.patch };
    let centred = den.centred_query(x, a); // [1, C·H·W + 1]
    for launch in &tables.launches {
        if std::mem::take(&mut den.fail_next_launch) {
            panic!("can't allocate buffer (injected device error)");
        }
        let q = launch.queries;
        let queries = centred.clone().select(1, launch.query_idx.clone()).reshape([q, d]); // [q, D]
        let partials =
            op::els_partials(den.images.clone(), queries, tables.key_idx.clone(), launch.blocks.clone(), params); // [S, q, 3 + C + 1]
        let won = call.maps.then(|| op::winners(partials.clone()));
        let (out, ent) = op::merge(partials); // [q, C], [q, 1]
        let out = to_host(out);
        let rows = launch.q0..launch.q0 + q;
        for (i, &px) in tables.pixels[rows.clone()].iter().enumerate() {
            for ch in 0..c {
                x0[ch * hw + px] = out[i * c + ch] + den.mean[ch];
            }
        }
        let ent = to_host(ent);
        entropy_sum += ent.iter().map(|&e| e as f64).sum::<f64>();
        if let (Some(m), Some(won)) = (maps.as_mut(), won) {
            for (i, row) in rows.enumerate() {
                let px = tables.pixels[row];
                // Split s of a query with N·kn keys starts at key s·⌈N·kn/S⌉.
                let (k_row0, kn) = (tables.query_keys[row].0 as usize, tables.query_keys[row].1 as usize);
                let f = won[i].0 * (den.n * kn).div_ceil(params.splits) + won[i].1;
                m.winner[px] = (f / kn) as u32;
                m.source[px] = tables.key_row_pixel[k_row0 + f % kn];
                m.entropy[px] = ent[i];
            }
        }
        ctl.chunk_done()?;
    }
    if tables.launches.is_empty() {
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
    let (mut query_idx, mut key_idx, mut blocks) = (Vec::new(), Vec::new(), Vec::new());
    let (mut pixels, mut empty) = (Vec::new(), Vec::new());
    let mut singles = Vec::new();
    let (mut query_keys, mut key_row_pixel) = (Vec::new(), Vec::new());
    for g in groups.iter().map(|g| &g.host) {
        if g.key_pixels.is_empty() {
            empty.extend_from_slice(&g.pixels);
        } else if g.pixels.len() == 1 && g.keys_per_image() == 1 {
            singles.push(g);
        } else {
            let k0 = key_idx.len() / d;
            key_idx.extend_from_slice(&g.key_idx);
            key_row_pixel.extend(g.key_pixels.iter().map(|&p| p as u32));
            for (chunk, idx) in g.pixels.chunks(BLOCK_QUERIES).zip(g.query_idx.chunks(BLOCK_QUERIES * d)) {
                blocks.push(Block { q0: pixels.len(), qn: chunk.len(), k0, kn: g.keys_per_image(), kstride: 0 });
                pixels.extend_from_slice(chunk);
                query_idx.extend_from_slice(idx);
                query_keys.extend(chunk.iter().map(|_| (k0 as u32, g.keys_per_image() as u32)));
            }
        }
    }
    // Singleton groups (LS, and ELS pixels whose overhang no other pixel shares): query
    // u of a block reads key row k0 + u, so 64 of them fill a block.
    for chunk in singles.chunks(BLOCK_QUERIES) {
        ctl.check()?;
        blocks.push(Block { q0: pixels.len(), qn: chunk.len(), k0: key_idx.len() / d, kn: 1, kstride: 1 });
        for g in chunk {
            query_keys.push(((key_idx.len() / d) as u32, 1));
            key_row_pixel.push(g.key_pixels[0] as u32);
            pixels.push(g.pixels[0]);
            query_idx.extend_from_slice(&g.query_idx);
            key_idx.extend_from_slice(&g.key_idx);
        }
    }
    // On the CPU backend the op's body has no binding limit; launches are still cut by work,
    // so a cancel waits for one.
    let limits = den.adapter_limits.or_else(|| AdapterLimits::of(&den.device)).unwrap_or(AdapterLimits {
        max_binding_bytes: u64::MAX,
        memory_bytes: None,
        software: false,
    });
    let LaunchPlan { splits, launches } = match op_plan::plan(&blocks, den.n, d, den.shape.c, &limits) {
        Ok(p) => p,
        Err(e) => return Ok(Err(e)),
    };
    let launches: Vec<LaunchTables> = launches
        .into_iter()
        .map(|r| {
            let q0 = blocks[r.start].q0;
            let q1 = blocks[r.end - 1].q0 + blocks[r.end - 1].qn;
            let rows: Vec<i64> = blocks[r].iter().flat_map(|b| Block { q0: b.q0 - q0, ..*b }.row()).collect();
            LaunchTables {
                query_idx: den.int_tensor(&query_idx[q0 * d..q1 * d]),
                blocks: den.int_tensor(&rows).reshape([rows.len() / 5, 5]),
                q0,
                queries: q1 - q0,
            }
        })
        .collect();
    let bytes = (query_idx.len() + key_idx.len() + blocks.len() * 5) * 8 + pixels.len() * 8;
    let kpos = key_idx.len() / d;
    let tables = OpTables {
        key_idx: den.int_tensor(&key_idx).reshape([kpos, d]),
        launches,
        splits,
        pixels,
        empty,
        query_keys,
        key_row_pixel,
        bytes,
    };
    den.make_room(bytes, None);
    let tables = Arc::new(tables);
    den.state_mut::<OpTablesCache>().0.insert(key, tables.clone());
    Ok(Ok(tables))
}
