//! The fused ELS op on the GPU: a cubecl kernel that computes each query's softmax over its
//! keys in registers, so no logit is ever written to memory (see [`super::els_op`] for what
//! the op computes and how blocks and splits are laid out).
//!
//! Grid: (blocks, splits). One unit per query; a block's units walk the same range of keys
//! (for an ELS group they read the same key at the same time, which the hardware broadcasts
//! from cache), each keeping an online max, sum, Σp·(x − m) and C accumulators of the exact
//! f32 `−‖q − a·k‖² / 2σ²`. The ‖k‖² expansion a matmul needs cancels at small σ; this form
//! does not.

use burn::backend::TensorMetadata;
use burn::backend::cubecl::dtype_to_storage_type;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::tensor::{DType, Shape};
use burn_cubecl::CubeBackend;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use cubecl::prelude::*;

use super::els_op::{BLOCK_QUERIES, ElsOps, SENTINEL, STATE_COLS};

#[cube(launch)]
fn els_partials_kernel<I: Numeric>(
    images: &Tensor<f32>,  // [N, L+1]
    queries: &Tensor<f32>, // [Q, D]
    key_idx: &Tensor<I>,   // [Kpos, D]
    blocks: &Tensor<I>,    // [B, 5]: q0, qn, k0, kn, kstride
    out: &mut Tensor<f32>, // [S, Q, 3 + C]
    a: f32,
    inv_two_s2: f32,
    n_images: u32,
    #[comptime] d: usize,
    #[comptime] c: usize,
    #[comptime] centre0: usize,
    #[comptime] plane: usize,
    #[define(I)] _int: ElemType,
) {
    let b = CUBE_POS_X as usize;
    let s = CUBE_POS_Y as usize;
    let splits = CUBE_COUNT_Y as usize;
    let u = UNIT_POS_X as usize;
    let q0 = u32::cast_from(blocks[b * 5]) as usize;
    let qn = u32::cast_from(blocks[b * 5 + 1]) as usize;
    let k0 = u32::cast_from(blocks[b * 5 + 2]) as usize;
    let kn = u32::cast_from(blocks[b * 5 + 3]) as usize;
    let kstride = u32::cast_from(blocks[b * 5 + 4]) as usize;
    if u >= qn {
        terminate!();
    }
    let q = q0 + u;
    let n_queries = queries.shape(0);
    let row = images.stride(0);

    let mut qreg = Array::<f32>::new(d);
    for t in 0..d {
        qreg[t] = queries[q * d + t];
    }
    let mut acc = Array::<f32>::new(c);
    #[unroll]
    for ch in 0..c {
        acc[ch] = 0.0;
    }
    let mut m = f32::new(SENTINEL);
    let mut l = 0.0f32;
    let mut ent = 0.0f32;

    let total = n_images as usize * kn;
    let per = (total + splits - 1) / splits;
    let mut f0 = s * per;
    if f0 > total {
        f0 = total;
    }
    let mut f1 = f0 + per;
    if f1 > total {
        f1 = total;
    }
    let kbase = k0 + u * kstride;
    for f in f0..f1 {
        let img = (f / kn) * row;
        let krow = (kbase + f % kn) * d;
        let mut dist = 0.0f32;
        for t in 0..d {
            let idx = u32::cast_from(key_idx[krow + t]) as usize;
            let diff = qreg[t] - a * images[img + idx];
            dist += diff * diff;
        }
        let x = -dist * inv_two_s2;
        if x > m {
            // Re-base the sums on the new max: e^(x'−m') = e^(m−m')·e^(x'−m).
            let shift = m - x;
            let r = f32::exp(shift);
            ent = r * (ent + shift * l);
            l *= r;
            #[unroll]
            for ch in 0..c {
                acc[ch] *= r;
            }
            m = x;
        }
        let rel = x - m;
        let p = f32::exp(rel);
        l += p;
        ent += p * rel;
        #[unroll]
        for ch in 0..c {
            let idx = u32::cast_from(key_idx[krow + centre0 + ch * plane]) as usize;
            acc[ch] += p * images[img + idx];
        }
    }
    let o = (s * n_queries + q) * (STATE_COLS + c);
    out[o] = m;
    out[o + 1] = l;
    out[o + 2] = ent;
    #[unroll]
    for ch in 0..c {
        out[o + STATE_COLS + ch] = acc[ch];
    }
}

impl ElsOps for CubeBackend {
    fn els_partials(
        images: FloatTensor<Self>,
        queries: FloatTensor<Self>,
        key_idx: IntTensor<Self>,
        blocks: IntTensor<Self>,
        a: f32,
        inv_two_s2: f32,
        splits: usize,
        channels: usize,
        patch: usize,
    ) -> FloatTensor<Self> {
        assert_eq!(images.dtype, DType::F32, "the ELS kernel runs in f32");
        assert_eq!(queries.dtype, DType::F32, "the ELS kernel runs in f32");
        let images = into_contiguous(images);
        let queries = into_contiguous(queries);
        let key_idx = into_contiguous(key_idx);
        let blocks = into_contiguous(blocks);
        let [n, _row] = images.shape().dims::<2>();
        let [q, d] = queries.shape().dims::<2>();
        let [b, five] = blocks.shape().dims::<2>();
        assert_eq!(five, 5, "block rows are (q0, qn, k0, kn, kstride)");
        assert_eq!(d, channels * patch * patch, "query width is C·P²");
        let splits = splits.max(1);
        let client = queries.client.clone();
        let out = empty_device_dtype(
            client.clone(),
            queries.device.clone(),
            Shape::new([splits, q, STATE_COLS + channels]),
            DType::F32,
        );
        let r = patch / 2;
        let int_type = dtype_to_storage_type(key_idx.dtype);
        els_partials_kernel::launch(
            &client,
            CubeCount::Static(b as u32, splits as u32, 1),
            CubeDim::new_1d(BLOCK_QUERIES as u32),
            images.into_tensor_arg(),
            queries.into_tensor_arg(),
            key_idx.into_tensor_arg(),
            blocks.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            a,
            inv_two_s2,
            n as u32,
            d,
            channels,
            r * patch + r,
            patch * patch,
            int_type,
        );
        out
    }
}
