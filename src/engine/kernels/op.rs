//! The fused ELS op: one entry point for the softmax-over-patches that every local machine
//! (ELS, LS, and the Local machine) computes, with a body per backend.
//!
//! - On the GPU (any cubecl runtime, wgpu included) it is the kernel in [`super::gpu`]:
//!   no logit ever leaves the chip.
//! - On the CPU backend (flex) the same op runs through the fused CPU kernel
//!   ([`super::cpu::fused::RowState`]), so CI exercises every test through this entry point
//!   without a GPU.
//!
//! What the op computes. Queries are patches of x − a·m ([Q, D]); keys are patches of the
//! centred training images, cut on the fly through an index table (no key bank is built).
//! Queries come in *blocks* of up to [`BLOCK_QUERIES`]; a block row is
//! `(q0, qn, k0, kn, kstride)`: query `q0 + u` (u < qn) sees key positions
//! `k0 + u·kstride .. + kn` of every training image. `kstride = 0` is an ELS pixel group (all
//! queries share the keys), `kstride = 1` packs singleton groups (the Local machine, and
//! ELS pixels whose window overhang no other pixel shares) so they fill a block too.
//! Each block's N·kn keys are split into `splits` ranges; each split writes a partial softmax
//! state (m, l, t, acc[C], winner) relative to its own running max, with
//! `l = Σ e^(x−m)`, `t = Σ e^(x−m)(x−m)`, `acc = Σ e^(x−m)·v`, logit
//! `x = −‖q − a·k‖² / 2σ²`, and `winner` the index within the split of the key whose logit is
//! m (exact in f32: a split holds at most [`MAX_UNIT_TERMS`] keys), and how many keys the split
//! folded. With merged keys ([`OpParams::counted`]) the winner is the largest logit less ln n,
//! kept beside it. A sorted merged bank also carries tile bounds ([`super::op_skip`]), and
//! the GPU kernel skips the tiles that cannot move a float32 result; the CPU body folds every
//! key (the fused CPU kernel skips on its own path, [`super::cpu::skip`]).
//! [`merge`] folds the splits with burn ops; [`winners`] finds each query's largest weight
//! for the provenance maps.

use burn::backend::ops::{FloatTensorOps, IntTensorOps};
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Flex, backend_extension};
use burn::tensor::{Int, Shape, Tensor, TensorData};

use super::cpu::fused::{HostChunk, RowState};

/// Queries per block: one GPU unit each.
pub const BLOCK_QUERIES: usize = 64;
/// Columns of the partial state per query before the C value sums: m, l, t.
pub const STATE_COLS: usize = 3;
/// The running max's starting value: WGSL has no −∞ literal, and every real logit is far
/// above this (|logit| ≤ D·4·(1/2σ²) with σ² ≥ 1e−12 stays under 1e18).
pub const SENTINEL: f32 = -1.0e30;

/// The scalars of one call.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OpParams {
    /// a = √ᾱ: keys are compared at a·k.
    pub a: f32,
    /// 1 / 2σ² with σ² = 1 − ᾱ.
    pub inv_two_s2: f32,
    /// Key splits per block (the grid's second axis on the GPU).
    pub splits: usize,
    pub channels: usize,
    pub patch: usize,
    /// The keys are merged duplicates ([`super::cpu::merge`]): each key row carries one more
    /// index, of its ln(count), which joins its logit, and the state one more value sum,
    /// Σ e^(x−m)·ln n, which gives the entropy over the unmerged keys.
    pub counted: bool,
    /// Splits start at multiples of this many keys: the skip tile when the keys are sorted
    /// ([`super::op_skip`]), so each tile the kernel stages is one the bounds describe; else 1.
    pub align: usize,
    /// The skip margin L in nats ([`super::op_skip::margin`]) when the bank is sorted and its
    /// tile bounds ride along; `None`: fold every key.
    pub skip_margin: Option<f32>,
}

/// Keys per split: ⌈total / splits⌉ rounded up to a multiple of `align`. The kernels and the
/// winners' decoding all cut splits with it.
pub fn split_len(total: usize, splits: usize, align: usize) -> usize {
    total.div_ceil(splits.max(1)).div_ceil(align.max(1)) * align.max(1)
}

/// Columns of a partial state: m, l, t, the C value sums, then with merged keys Σp·ln n and
/// the winner's own logit (less its ln n), then the winner, then the keys the split folded.
pub fn state_cols(channels: usize, counted: bool) -> usize {
    STATE_COLS + channels + 2 * counted as usize + 2
}

/// Shape of the partial states: [splits, Q, `state_cols`].
pub fn partials_shape(queries: &Shape, splits: &usize, channels: &usize, counted: &bool) -> Shape {
    Shape::new([*splits, queries[0], state_cols(*channels, *counted)])
}

#[backend_extension(Cube, Fusion, Flex)]
pub trait ElsOps: burn::backend::Backend {
    /// Partial softmax states of every query over its block's keys, one per split:
    /// images [N, L+1] (centred, trailing zero slot), queries [Q, D], key_idx [Kpos, D]
    /// (flat indices into an image row; [Kpos, D + 1] when `counted`, the last index that of
    /// the key's ln n), blocks [B, 5] → [splits, Q, `state_cols`]. `bounds` ([1, RANK·D +
    /// tiles·BOUND_COLS], [`super::op_skip`]) is read only when `skip_margin` > 0: the bank is
    /// sorted, its tiles `align` keys each; pass a one-element tensor otherwise.
    #[fusion(dtype = queries, shape = partials_shape(queries, splits, channels, counted))]
    #[allow(clippy::too_many_arguments)]
    fn els_partials(
        images: FloatTensor<Self>,
        queries: FloatTensor<Self>,
        key_idx: IntTensor<Self>,
        blocks: IntTensor<Self>,
        bounds: FloatTensor<Self>,
        a: f32,
        inv_two_s2: f32,
        splits: usize,
        channels: usize,
        patch: usize,
        counted: bool,
        align: usize,
        skip_margin: f32,
    ) -> FloatTensor<Self>;
}

/// The op on burn tensors: the partial states ([splits, Q, `state_cols`]). `bounds`: the
/// sorted bank's tile bounds when `p.skip_margin` is set.
pub fn els_partials(
    images: Tensor<2>,
    queries: Tensor<2>,
    key_idx: Tensor<2, Int>,
    blocks: Tensor<2, Int>,
    bounds: Option<Tensor<2>>,
    p: OpParams,
) -> Tensor<3> {
    let margin = p.skip_margin.filter(|_| bounds.is_some()).unwrap_or(0.0);
    let bounds = bounds.unwrap_or_else(|| Tensor::<2>::zeros([1, 1], &queries.device()));
    let out = burn::backend::Dispatch::els_partials(
        images.into_dispatch(),
        queries.into_dispatch(),
        key_idx.into_dispatch(),
        blocks.into_dispatch(),
        bounds.into_dispatch(),
        p.a,
        p.inv_two_s2,
        p.splits,
        p.channels,
        p.patch,
        p.counted,
        p.align,
        margin,
    );
    Tensor::from_dispatch(out)
}

/// Folds the splits of [`els_partials`]: x̂₀ − m per query ([Q, C], and with merged keys
/// E[ln n] as one more column) and each query's weight entropy in nats ([Q, 1]; over the
/// merged keys: add E[ln n] for the entropy over every key).
pub fn merge(partials: Tensor<3>, counted: bool) -> (Tensor<2>, Tensor<2>) {
    let [_, q, cols] = partials.dims();
    let c = cols - STATE_COLS - 2 - counted as usize; // the value sums: C, and E[ln n] when counted
    let m = partials.clone().narrow(2, 0, 1); // [S, Q, 1]
    let l = partials.clone().narrow(2, 1, 1);
    let t = partials.clone().narrow(2, 2, 1);
    let acc = partials.narrow(2, STATE_COLS, c); // [S, Q, C]
    let top = m.clone().max_dim(0); // [1, Q, 1]
    let shift = m.sub(top); // ≤ 0; an empty split sits at the sentinel and weighs e^(−1e30) = 0
    let w = shift.clone().exp();
    let l_tot = w.clone().mul(l.clone()).sum_dim(0); // [1, Q, 1]
    let t_tot = w.clone().mul(t.add(shift.mul(l))).sum_dim(0);
    // A query with no key at all (l = 0) reads as x̂₀ − m = 0 with zero entropy; any real
    // key makes l ≥ 1 (the max's own term is e⁰).
    let l_tot = l_tot.clamp_min(1e-30);
    let acc = w.mul(acc).sum_dim(0).div(l_tot.clone()); // [1, Q, C]
    let entropy = l_tot.clone().log().sub(t_tot.div(l_tot)).clamp_min(0.0);
    (acc.reshape([q, c]), entropy.reshape([q, 1]))
}

/// Each query's winning key: (split, index within the split) of its largest logit (with
/// merged keys, less ln n: the key of largest weight, not the heaviest group), read back to
/// the host ([Q] pairs); the first split wins a tie.
pub fn winners(partials: Tensor<3>, counted: bool) -> Vec<(usize, usize)> {
    let [s, q, cols] = partials.dims();
    let by = if counted { cols - 3 } else { 0 };
    let m = partials.clone().narrow(2, by, 1).reshape([s, q]).try_into_vec_as::<f32>().expect("f32");
    let w = partials.narrow(2, cols - 2, 1).reshape([s, q]).try_into_vec_as::<f32>().expect("f32");
    (0..q)
        .map(|qi| {
            let best = (0..s).fold(0, |b, si| if m[si * q + qi] > m[b * q + qi] { si } else { b });
            (best, w[best * q + qi] as usize)
        })
        .collect()
}

/// (query, key) pairs the splits folded, summed over queries and splits (read back).
pub fn folded(partials: Tensor<3>) -> u64 {
    let [s, q, cols] = partials.dims();
    // Each count is an integer under 2²⁴ (a split's keys), exact in f32; their sum is not.
    let n = partials.narrow(2, cols - 1, 1).reshape([s * q]).try_into_vec_as::<f32>().expect("f32");
    n.iter().map(|&k| k as u64).sum()
}

/// One row of the block table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    pub q0: usize,
    pub qn: usize,
    pub k0: usize,
    pub kn: usize,
    pub kstride: usize,
}

impl Block {
    pub fn row(&self) -> [i64; 5] {
        [self.q0 as i64, self.qn as i64, self.k0 as i64, self.kn as i64, self.kstride as i64]
    }
}

/// The most distance terms (keys × D) one unit may sum in one split. Mesa's llvmpipe (the
/// lavapipe Vulkan driver CI-less machines test on) stops a shader loop once its iterations
/// in one invocation pass 65535 — an inner loop's count runs on across the iterations of the
/// loop around it — and silently returns what it has: a 600-key × 147 split came back wrong.
/// The guarantee: with keys × D ≤ this per split, the largest loop (the distance loop, keys × D
/// iterations) stays under the limit, and every other loop runs fewer times (the key loop
/// `keys` ≤ keys × D, the tile staging keys × D / 64). A sorted bank's splits are rounded up
/// to a whole tile, adding at most one tile (≤ 3072 floats) to a unit's terms, and its seed
/// pass loops once over a group's tiles, which [`super::op_skip::worth_sorting`] caps at this
/// many. `tests/els_op.rs`
/// (`gpu_op_loop_limit_edge`) runs both ends on lavapipe: 60000 one-value keys in one split,
/// whose last key must be seen, and 408 keys × 147 per split.
/// [`super::op_plan`] applies it on software adapters only.
pub const MAX_UNIT_TERMS: usize = 60_000;

/// The fewest splits that keep a block of `keys` keys of width `d` under [`MAX_UNIT_TERMS`].
pub fn min_splits(keys: usize, d: usize) -> usize {
    (keys * d).div_ceil(MAX_UNIT_TERMS).max(1)
}

// ---------------------------------------------------------------------------------------
// The CPU body: the fused CPU kernel over keys gathered per block.

fn host_f32(t: FloatTensor<Flex>) -> Vec<f32> {
    let data = pollster::block_on(Flex::float_into_data(t)).expect("flex reads back");
    data.convert::<f32>().try_into_vec::<f32>().expect("f32 data")
}

fn host_i64(t: IntTensor<Flex>) -> Vec<i64> {
    let data = pollster::block_on(Flex::int_into_data(t)).expect("flex reads back");
    data.convert::<i64>().try_into_vec::<i64>().expect("i64 data")
}

impl ElsOps for Flex {
    fn els_partials(
        images: FloatTensor<Self>,
        queries: FloatTensor<Self>,
        key_idx: IntTensor<Self>,
        blocks: IntTensor<Self>,
        _bounds: FloatTensor<Self>,
        a: f32,
        inv_two_s2: f32,
        splits: usize,
        channels: usize,
        patch: usize,
        counted: bool,
        align: usize,
        _skip_margin: f32,
    ) -> FloatTensor<Self> {
        use burn::backend::TensorMetadata;
        use rayon::prelude::*;
        let device = Default::default();
        let [n, row] = images.shape().dims::<2>();
        let [q_total, d] = queries.shape().dims::<2>();
        let (images, queries) = (host_f32(images), host_f32(queries));
        let (key_idx, blocks) = (host_i64(key_idx), host_i64(blocks));
        let c = channels;
        // With merged keys ln n is one more key row (met by a query column of ones) and one
        // more value channel, as in the CPU kernel's merged banks.
        let (kw, cv) = (d + counted as usize, c + counted as usize);
        let cols = state_cols(c, counted);
        let centre = super::super::geometry::centre_offsets(c, patch);
        // The fused kernel's logits are (2a/2σ²)·q·k − (a²/2σ²)·‖k‖²: the exact logit plus
        // ‖q‖²/2σ², a per-query constant that cancels in the merge.
        let (scale, tail) = (2.0 * a * inv_two_s2, -a * a * inv_two_s2);
        let da = d + 1 + counted as usize;
        let splits = splits.max(1);
        // (split, query) → state row, filled per (block, split, query group).
        let jobs: Vec<(Block, usize)> = blocks
            .chunks_exact(5)
            .map(|r| Block {
                q0: r[0] as usize,
                qn: r[1] as usize,
                k0: r[2] as usize,
                kn: r[3] as usize,
                kstride: r[4] as usize,
            })
            .flat_map(|b| (0..splits).map(move |s| (b, s)))
            .collect();
        let results: Vec<(usize, usize, Vec<f32>)> = jobs
            .par_iter()
            .flat_map_iter(|&(b, s)| {
                // Queries that share keys: the whole block when kstride = 0, else one each.
                let sets: Vec<(usize, usize)> =
                    if b.kstride == 0 { vec![(0, b.qn)] } else { (0..b.qn).map(|u| (u, 1)).collect() };
                let total = n * b.kn;
                let per = split_len(total, splits, align);
                let (f0, f1) = ((s * per).min(total), ((s + 1) * per).min(total));
                let (images, queries, key_idx, centre) = (&images, &queries, &key_idx, &centre);
                sets.into_iter().map(move |(u0, qn)| {
                    let kbase = b.k0 + u0 * b.kstride;
                    let k = f1 - f0;
                    let mut keys_t = vec![0f32; da * k]; // [D+1, K]
                    let mut values_t = vec![0f32; cv * k]; // [C (+ 1), K]
                    for (col, f) in (f0..f1).enumerate() {
                        let (img, j) = (f / b.kn, f % b.kn);
                        let base = img * row;
                        let idx = &key_idx[(kbase + j) * kw..(kbase + j + 1) * kw];
                        let mut norm = 0f32;
                        for (t, &i) in idx[..d].iter().enumerate() {
                            let v = images[base + i as usize];
                            keys_t[t * k + col] = v;
                            norm += v * v;
                        }
                        keys_t[d * k + col] = norm;
                        for (ch, &off) in centre.iter().enumerate() {
                            values_t[ch * k + col] = keys_t[off as usize * k + col];
                        }
                        if counted {
                            let ln_n = images[base + idx[d] as usize];
                            keys_t[(d + 1) * k + col] = ln_n;
                            values_t[c * k + col] = ln_n;
                        }
                    }
                    let mut qa = vec![0f32; qn * da]; // [qn, D + 1 (+ 1)]
                    for i in 0..qn {
                        let qrow = b.q0 + u0 + i;
                        for t in 0..d {
                            qa[i * da + t] = queries[qrow * d + t] * scale;
                        }
                        qa[i * da + d] = tail;
                        if counted {
                            qa[i * da + d + 1] = 1.0;
                        }
                    }
                    let mut state = RowState::new(qn, cv, true);
                    if k > 0 {
                        state.update(&qa, da, &HostChunk { keys_t, values_t, len: k, first: Vec::new(), counted });
                    }
                    let (m, l, t, acc, arg, best) = state.into_parts();
                    let mut out = vec![0f32; qn * cols];
                    for i in 0..qn {
                        let o = &mut out[i * cols..(i + 1) * cols];
                        o[0] = if m[i].is_finite() { m[i] } else { SENTINEL };
                        o[1] = l[i] as f32;
                        o[2] = t[i] as f32;
                        for ch in 0..cv {
                            o[STATE_COLS + ch] = acc[i * cv + ch] as f32;
                        }
                        if counted {
                            o[cols - 3] = if best[i].is_finite() { best[i] } else { SENTINEL };
                        }
                        o[cols - 2] = arg[i] as f32;
                        o[cols - 1] = k as f32; // every key: this body does not skip
                    }
                    (s, b.q0 + u0, out)
                })
            })
            .collect();
        let mut out = vec![0f32; splits * q_total * cols];
        for (s, q, vals) in results {
            let at = (s * q_total + q) * cols;
            out[at..at + vals.len()].copy_from_slice(&vals);
        }
        // Queries no block names (none in practice) keep an empty state.
        for s in 0..splits {
            for q in 0..q_total {
                let at = (s * q_total + q) * cols;
                if out[at + 1] == 0.0 {
                    out[at] = SENTINEL;
                }
            }
        }
        Flex::float_from_data(TensorData::new(out, [splits, q_total, cols]), &device)
    }
}
