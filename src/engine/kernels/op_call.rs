//! The fused op's host side: per geometry, the index tables that lay every pixel group out
//! as blocks of queries (built once, cached), and one launch of [`op::els_partials`] per call,
//! whose partial states are merged into x̂₀, the entropy and the winners.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use burn::tensor::{Int, Tensor};

use super::super::control::{Cancelled, Control};
use super::super::denoiser::{Denoiser, State, to_host};
use super::super::machine::{Call, Denoised, PixelMaps};
use super::groups::{GeometryKey, device_groups};
use super::op::{self, BLOCK_QUERIES, Block, OpParams};

/// The fused op's index tables for one geometry, on the device.
pub(crate) struct OpTables {
    /// [Q·D]: flat indices into x's row of every query patch, block by block.
    pub query_idx: Tensor<1, Int>,
    /// [Kpos, D]: flat indices into an image row of every key position.
    pub key_idx: Tensor<2, Int>,
    /// [B, 5]: the blocks (see [`op::Block`]).
    pub blocks: Tensor<2, Int>,
    /// Output pixel of each query row.
    pub pixels: Vec<usize>,
    /// Pixels with no admissible training patch (circular windows larger than the image).
    pub empty: Vec<usize>,
    pub n_blocks: usize,
    /// Per query row: its first key row and how many it has (for decoding winners).
    pub query_keys: Vec<(u32, u32)>,
    /// Training-image pixel (patch centre) of each key row.
    pub key_row_pixel: Vec<u32>,
    /// Key positions in the largest block (its keys are N times that).
    pub max_positions: usize,
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

/// ELS (or LS, with `key.equivariant` off) through the fused op: one launch for the whole
/// image, keys cut on the fly from the images.
pub(crate) fn run(
    den: &mut Denoiser,
    x: &[f32],
    call: &Call,
    key: GeometryKey,
    ctl: &mut Control,
) -> Result<Denoised, Cancelled> {
    let (a, s2) = call.scales();
    let tables = op_tables(den, key, ctl)?;
    let (c, hw) = (den.shape.c, den.shape.pixels());
    let d = c * key.patch * key.patch;
    let mut x0 = vec![0f32; den.shape.len()];
    let mut maps = call.maps.then(|| PixelMaps::empty(hw));
    den.fill_mean(&mut x0, &tables.empty);
    ctl.begin(1)?;
    let mut entropy_sum = 0f64;
    if !tables.pixels.is_empty() {
        let q = tables.pixels.len();
        let queries = den.centred_query(x, a).select(1, tables.query_idx.clone()).reshape([q, d]); // [Q, D]
        let params = OpParams {
            a: a as f32,
            inv_two_s2: (0.5 / s2) as f32,
            splits: op::choose_splits(tables.n_blocks, den.n * tables.max_positions, d),
            channels: c,
            patch: key.patch,
        };
        let partials =
            op::els_partials(den.images.clone(), queries, tables.key_idx.clone(), tables.blocks.clone(), params); // [S, Q, 3 + C + 1]
        let won = call.maps.then(|| op::winners(partials.clone()));
        let (out, ent) = op::merge(partials); // [Q, C], [Q, 1]
        let out = to_host(out);
        for (i, &px) in tables.pixels.iter().enumerate() {
            for ch in 0..c {
                x0[ch * hw + px] = out[i * c + ch] + den.mean[ch];
            }
        }
        let ent = to_host(ent);
        entropy_sum = ent.iter().map(|&e| e as f64).sum();
        if let (Some(m), Some(won)) = (maps.as_mut(), won) {
            for (i, &px) in tables.pixels.iter().enumerate() {
                // Split s of a query with N·kn keys starts at key s·⌈N·kn/S⌉.
                let (k_row0, kn) = (tables.query_keys[i].0 as usize, tables.query_keys[i].1 as usize);
                let f = won[i].0 * (den.n * kn).div_ceil(params.splits) + won[i].1;
                m.winner[px] = (f / kn) as u32;
                m.source[px] = tables.key_row_pixel[k_row0 + f % kn];
                m.entropy[px] = ent[i];
            }
        }
    }
    ctl.chunk_done()?;
    Ok(Denoised { x0, entropy: if call.entropy { (entropy_sum / hw as f64) as f32 } else { 0.0 }, maps })
}

/// The op's tables for a geometry, built from its pixel groups once and cached.
fn op_tables(den: &mut Denoiser, key: GeometryKey, ctl: &Control) -> Result<Arc<OpTables>, Cancelled> {
    if let Some(t) = den.state::<OpTablesCache>().and_then(|s| s.0.get(&key)) {
        return Ok(t.clone());
    }
    let groups = device_groups(den, key, ctl)?;
    let d = den.shape.c * key.patch * key.patch;
    let (mut query_idx, mut key_idx, mut blocks) = (Vec::new(), Vec::new(), Vec::new());
    let (mut pixels, mut empty, mut max_positions) = (Vec::new(), Vec::new(), 0);
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
            max_positions = max_positions.max(g.keys_per_image());
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
        max_positions = max_positions.max(1);
    }
    let rows: Vec<i64> = blocks.iter().flat_map(Block::row).collect();
    let bytes = (query_idx.len() + key_idx.len() + rows.len()) * 8 + pixels.len() * 8;
    let kpos = key_idx.len() / d;
    let tables = OpTables {
        query_idx: den.int_tensor(&query_idx),
        key_idx: den.int_tensor(&key_idx).reshape([kpos, d]),
        blocks: den.int_tensor(&rows).reshape([blocks.len(), 5]),
        pixels,
        empty,
        n_blocks: blocks.len(),
        query_keys,
        key_row_pixel,
        max_positions,
        bytes,
    };
    den.make_room(bytes, None);
    let tables = Arc::new(tables);
    den.state_mut::<OpTablesCache>().0.insert(key, tables.clone());
    Ok(tables)
}
