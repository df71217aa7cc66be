//! The launcher: burn's [`ElsOps`] for every cubecl backend, which lays the tensors out, sizes
//! the grid and launches [`super::kernel`].

use burn::backend::TensorMetadata;
use burn::backend::cubecl::dtype_to_storage_type;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::tensor::{DType, Shape};
use burn_cubecl::CubeBackend;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use cubecl::prelude::*;

use super::super::cpu::skip::RANK;
use super::super::op::{BLOCK_QUERIES, ElsOps, state_cols};
use super::super::op_skip::BOUND_COLS;
use super::kernel::{els_partials_kernel, els_seed_kernel};

/// Shared-memory key tile, in floats: 12 KB, under WebGPU's 16 KB default per workgroup.
const TILE_FLOATS: usize = 3072;

/// Keys staged per tile for patch width `d`; 0 when one key does not fit (RGB P ≥ 33), in
/// which case units read keys straight from global memory.
pub fn tile_keys(d: usize) -> usize {
    (TILE_FLOATS / d).min(64)
}

impl ElsOps for CubeBackend {
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
    ) -> FloatTensor<Self> {
        assert_eq!(images.dtype, DType::F32, "the ELS kernel runs in f32");
        assert_eq!(queries.dtype, DType::F32, "the ELS kernel runs in f32");
        let images = into_contiguous(images);
        let queries = into_contiguous(queries);
        let key_idx = into_contiguous(key_idx);
        let blocks = into_contiguous(blocks);
        let bounds = into_contiguous(bounds);
        let [n, _row] = images.shape().dims::<2>();
        let [q, d] = queries.shape().dims::<2>();
        let [b, five] = blocks.shape().dims::<2>();
        assert_eq!(five, 5, "block rows are (q0, qn, k0, kn, kstride)");
        assert_eq!(d, channels * patch * patch, "query width is C·P²");
        let [_, key_width] = key_idx.shape().dims::<2>();
        assert_eq!(key_width, d + counted as usize, "key rows are D wide, D + 1 with ln n when counted");
        let splits = splits.max(1);
        let client = queries.client.clone();
        let out = empty_device_dtype(
            client.clone(),
            queries.device.clone(),
            Shape::new([splits, q, state_cols(channels, counted)]),
            DType::F32,
        );
        let r = patch / 2;
        let int_type = dtype_to_storage_type(key_idx.dtype);
        let tile = tile_keys(d + counted as usize);
        // Skipping needs a sorted bank of one row whose tiles are the kernel's (op_skip).
        let skipping = skip_margin > 0.0;
        if skipping {
            assert!(counted && n == 1 && align == tile, "a sorted bank is one merged row in tiles of {tile} keys");
            let [_, len] = bounds.shape().dims::<2>();
            assert!(len >= RANK * d + BOUND_COLS, "the bound table holds the basis and a tile at least");
        }
        // SAFETY: every index the kernel forms is in bounds by construction: block rows come
        // from `op_call`'s tables (q0 + qn ≤ Q, k0 + kn ≤ Kpos), key indices are < L + 1 (the
        // trailing zero slot), idle units read only the block's first query row and write
        // nothing, and a split's key range is clamped to the block's N·kn keys. The GPU tests
        // (`tests/els_op.rs`, `tests/golden.rs`, `tests/maps.rs`) cover short blocks, empty
        // splits, singleton rows and keys too wide for a tile. When skipping, a split's keys
        // start at a multiple of the tile (`align`) and a group's at one too (`op_call` pads
        // the bank), so the tile a unit bounds, (k0 + f) / tile, is a row of the bound table
        // built for that bank; `tests/els_op.rs` (`gpu_op_skips_tiles_...`) runs it.
        let pre = if skipping {
            let pre = empty_device_dtype(client.clone(), queries.device.clone(), Shape::new([q, RANK + 3]), DType::F32);
            // SAFETY: as below; the seed pass reads a block's keys k0 .. k0 + kn and their
            // tiles' bound rows only, and writes row q of `pre` for each of its queries.
            unsafe {
                els_seed_kernel::launch_unchecked(
                    &client,
                    CubeCount::Static(b as u32, 1, 1),
                    CubeDim::new_1d(BLOCK_QUERIES as u32),
                    images.clone().into_tensor_arg(),
                    queries.clone().into_tensor_arg(),
                    key_idx.clone().into_tensor_arg(),
                    blocks.clone().into_tensor_arg(),
                    bounds.clone().into_tensor_arg(),
                    pre.clone().into_tensor_arg(),
                    a,
                    inv_two_s2,
                    d,
                    tile,
                    int_type,
                );
            }
            pre
        } else {
            empty_device_dtype(client.clone(), queries.device.clone(), Shape::new([1, 1]), DType::F32)
        };
        unsafe {
            els_partials_kernel::launch_unchecked(
                &client,
                CubeCount::Static(b as u32, splits as u32, 1),
                CubeDim::new_1d(BLOCK_QUERIES as u32),
                images.into_tensor_arg(),
                queries.into_tensor_arg(),
                key_idx.into_tensor_arg(),
                blocks.into_tensor_arg(),
                bounds.into_tensor_arg(),
                pre.into_tensor_arg(),
                out.clone().into_tensor_arg(),
                a,
                inv_two_s2,
                n as u32,
                d as u32,
                align.max(1) as u32,
                skip_margin,
                d,
                channels,
                r * patch + r,
                patch * patch,
                tile,
                counted,
                skipping,
                int_type,
            );
        }
        out
    }
}
