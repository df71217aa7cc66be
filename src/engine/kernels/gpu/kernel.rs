//! The fused ELS op on the GPU: a cubecl kernel that computes each query's softmax over its
//! keys in registers, so no logit is ever written to memory (see [`super::super::op`] for what
//! the op computes and how blocks and splits are laid out).
//!
//! Grid: (blocks, splits). One unit per query; a block's units walk the same range of keys
//! (for an ELS group they read the same key at the same time, which the hardware broadcasts
//! from cache), each keeping an online max, sum, Σp·(x − m) and C accumulators of the exact
//! f32 `−‖q − a·k‖² / 2σ²`. The ‖k‖² expansion a matmul needs cancels at small σ; this form
//! does not.

use cubecl::prelude::*;

use super::super::cpu::skip::RANK;
use super::super::op::{SENTINEL, STATE_COLS};
use super::super::op_skip::{BOUND_COLS, QUERY_GUARD};

/// A tile's lower bound on ‖q/a − k‖² (times a² it bounds ‖q − a·k‖²), from its row of the
/// bound table at `base` and the query's coordinates `y` ([`super::super::op_skip::lower_bound`]
/// is the same arithmetic on the host).
#[cube]
fn tile_gap2(bounds: &Tensor<f32>, base: usize, y: &Array<f32>, guard: f32, #[comptime] dims: usize) -> f32 {
    let mut s = 0.0f32;
    #[unroll]
    for r in 0..dims {
        let mut gap = f32::max(bounds[base + 2 * r] - y[r], y[r] - bounds[base + 2 * r + 1]) - guard;
        if gap < 0.0 {
            gap = 0.0;
        }
        s += gap * gap;
    }
    s
}

/// Folds one logit (of key `idx` within the split) into a running state st = (m, l, t,
/// winner, best) with value sums acc, and returns its weight e^(x−m); the caller adds
/// weight·value per channel (it knows where values live). `track`: the max is the winner
/// (with merged keys the caller tracks the winner by its logit less ln n instead).
#[cube]
fn fold(
    x: f32,
    idx: f32,
    st: &mut Array<f32>,
    acc: &mut Array<f32>,
    #[comptime] c: usize,
    #[comptime] track: bool,
) -> f32 {
    let m = st[0];
    if x > m {
        if comptime![track] {
            st[3] = idx; // the new winner
        }
        // Re-base the sums on the new max: e^(x'−m') = e^(m−m')·e^(x'−m).
        let shift = m - x;
        let r = f32::exp(shift);
        st[2] = r * (st[2] + shift * st[1]);
        st[1] *= r;
        #[unroll]
        for ch in 0..c {
            acc[ch] *= r;
        }
        st[0] = x;
    }
    let rel = x - st[0];
    let p = f32::exp(rel);
    st[1] += p;
    st[2] += p * rel;
    p
}

/// One unit's own keys (singleton rows), or keys too wide for a tile: read through the index
/// table straight from the images, the query from global memory too (a register array of
/// thousands of floats would only spill).
#[cube]
#[allow(clippy::too_many_arguments)]
fn keys_from_global<I: Numeric>(
    images: &Tensor<f32>,
    queries: &Tensor<f32>,
    key_idx: &Tensor<I>,
    q: usize,
    kbase: usize,
    kn: usize,
    f0: usize,
    f1: usize,
    a: f32,
    inv_two_s2: f32,
    st: &mut Array<f32>,
    acc: &mut Array<f32>,
    width: usize,
    #[comptime] c: usize,
    #[comptime] centre0: usize,
    #[comptime] plane: usize,
    #[comptime] counted: bool,
) {
    let row = images.stride(0);
    let d = width;
    let qrow = q * queries.stride(0);
    for f in f0..f1 {
        let img = (f / kn) * row;
        let krow = (kbase + f % kn) * key_idx.stride(0);
        let mut dist = 0.0f32;
        for t in 0..d {
            let idx = u32::cast_from(key_idx[krow + t]) as usize;
            let diff = queries[qrow + t] - a * images[img + idx];
            dist += diff * diff;
        }
        let raw = -dist * inv_two_s2;
        let mut x = raw;
        let mut ln_n = 0.0f32;
        if comptime![counted] {
            // A merged key stands for n equal ones: its logit gains ln n (key slot D); the
            // winner is still the key of largest weight, by its own logit.
            ln_n = images[img + u32::cast_from(key_idx[krow + d]) as usize];
            x += ln_n;
            if raw > st[4] {
                st[4] = raw;
                st[3] = f32::cast_from(f - f0);
            }
        }
        let p = fold(x, f32::cast_from(f - f0), st, acc, comptime![c + counted as usize], comptime![!counted]);
        #[unroll]
        for ch in 0..c {
            let idx = u32::cast_from(key_idx[krow + centre0 + ch * plane]) as usize;
            acc[ch] += p * images[img + idx];
        }
        if comptime![counted] {
            acc[c] += p * ln_n;
        }
    }
}

/// Before a skipping sweep, per query of a sorted bank's block: its coordinates y (the
/// [`RANK`] projections and the residual norm of q/a), the guard band for them, and the best
/// exact logit (with ln n) in the block's tile of smallest bound, over the whole bank rather
/// than one split, so that every split holds its tiles against a key near the global best
/// → pre [Q, RANK + 3]. One unit per query, 64 to a cube as in the sweep.
#[cube(launch_unchecked)]
pub(super) fn els_seed_kernel<I: Numeric>(
    images: &Tensor<f32>,  // [1, K·(D + 1) + 1]: the sorted merged bank
    queries: &Tensor<f32>, // [Q, D]
    key_idx: &Tensor<I>,   // [K, D + 1]
    blocks: &Tensor<I>,    // [B, 5]
    bounds: &Tensor<f32>,  // [1, RANK·D + tiles·BOUND_COLS]
    pre: &mut Tensor<f32>, // [Q, RANK + 3]
    a: f32,
    inv_two_s2: f32,
    #[comptime] d: usize,
    #[comptime] tile: usize,
    #[define(I)] _int: ElemType,
) {
    let b = CUBE_POS_X as usize;
    let u = UNIT_POS_X as usize;
    let br = b * blocks.stride(0);
    let q0 = u32::cast_from(blocks[br]) as usize;
    let qn = u32::cast_from(blocks[br + 1]) as usize;
    let k0 = u32::cast_from(blocks[br + 2]) as usize;
    let kn = u32::cast_from(blocks[br + 3]) as usize;
    if u < qn {
        let q = q0 + u;
        let qrow = q * queries.stride(0);
        let mut y = Array::<f32>::new(comptime![RANK + 1]);
        #[unroll]
        for r in 0..RANK {
            let mut z = 0.0f32;
            for t in 0..d {
                z += bounds[r * d + t] * queries[qrow + t];
            }
            y[r] = z;
        }
        let mut res2 = 0.0f32;
        for t in 0..d {
            let mut v = queries[qrow + t];
            #[unroll]
            for r in 0..RANK {
                v -= y[r] * bounds[r * d + t];
            }
            res2 += v * v;
        }
        y[RANK] = f32::sqrt(res2);
        let inv_a = 1.0 / a;
        let mut guard = 0.0f32;
        #[unroll]
        for r in 0..comptime![RANK + 1] {
            y[r] *= inv_a;
            guard = f32::max(guard, f32::abs(y[r]));
        }
        guard *= f32::new(QUERY_GUARD);
        let head = comptime![RANK * d];
        let mut t_best = k0 / tile;
        let mut lb_best = -f32::new(SENTINEL);
        let mut tt = k0 / tile;
        while tt * tile < k0 + kn {
            let lb = tile_gap2(bounds, head + tt * BOUND_COLS, &y, guard, comptime![RANK + 1]);
            if lb < lb_best {
                lb_best = lb;
                t_best = tt;
            }
            tt += 1;
        }
        let mut seed = f32::new(SENTINEL);
        let mut kk = t_best * tile;
        let mut k_end = kk + tile;
        if k_end > k0 + kn {
            k_end = k0 + kn;
        }
        while kk < k_end {
            let krow = kk * key_idx.stride(0);
            let mut dist = 0.0f32;
            for t in 0..d {
                let diff = queries[qrow + t] - a * images[u32::cast_from(key_idx[krow + t]) as usize];
                dist += diff * diff;
            }
            let x = -dist * inv_two_s2 + images[u32::cast_from(key_idx[krow + d]) as usize];
            if x > seed {
                seed = x;
            }
            kk += 1;
        }
        let o = q * pre.stride(0);
        #[unroll]
        for r in 0..comptime![RANK + 1] {
            pre[o + r] = y[r];
        }
        pre[o + RANK + 1] = guard;
        pre[o + RANK + 2] = seed;
    }
}

#[cube(launch_unchecked)]
pub(super) fn els_partials_kernel<I: Numeric>(
    images: &Tensor<f32>,  // [N, L+1]
    queries: &Tensor<f32>, // [Q, D]
    key_idx: &Tensor<I>,   // [Kpos, D], or [Kpos, D + 1] with ln n's slot when counted
    blocks: &Tensor<I>,    // [B, 5]: q0, qn, k0, kn, kstride
    bounds: &Tensor<f32>,  // [1, RANK·D + tiles·BOUND_COLS] when skipping (op_skip), else [1, 1]
    pre: &Tensor<f32>,     // [Q, RANK + 3] from els_seed_kernel when skipping, else [1, 1]
    out: &mut Tensor<f32>, // [S, Q, state_cols]: m, l, t, C (+ 1) sums, (best,) winner, folded
    a: f32,
    inv_two_s2: f32,
    n_images: u32,
    width: u32,
    align: u32,
    margin: f32,
    #[comptime] d: usize,
    #[comptime] c: usize,
    #[comptime] centre0: usize,
    #[comptime] plane: usize,
    #[comptime] tile: usize,
    #[comptime] counted: bool,
    #[comptime] skipping: bool,
    #[define(I)] _int: ElemType,
) {
    // Value sums: the C channels, and with merged keys E[ln n] for the entropy (see
    // `super::super::cpu::merge`).
    let cv = comptime![c + counted as usize];
    // Floats staged per key: its D values, and ln n when counted.
    let dk = comptime![d + counted as usize];
    let b = CUBE_POS_X as usize;
    let s = CUBE_POS_Y as usize;
    let splits = CUBE_COUNT_Y as usize;
    let u = UNIT_POS_X as usize;
    let units = CUBE_DIM_X as usize;
    // Every tensor is read through its strides: wgpu may pad the rows of a 2-D upload.
    let br = b * blocks.stride(0);
    let q0 = u32::cast_from(blocks[br]) as usize;
    let qn = u32::cast_from(blocks[br + 1]) as usize;
    let k0 = u32::cast_from(blocks[br + 2]) as usize;
    let kn = u32::cast_from(blocks[br + 3]) as usize;
    let kstride = u32::cast_from(blocks[br + 4]) as usize;
    // Idle units of a short block still help stage keys, so none may leave early.
    let active = u < qn;
    let mut q = q0;
    if active {
        q = q0 + u;
    }
    let row = images.stride(0);

    let mut acc = Array::<f32>::new(cv);
    #[unroll]
    for ch in 0..cv {
        acc[ch] = 0.0;
    }
    let mut st = Array::<f32>::new(STATE_COLS + 2); // m, l, t, winner, the winner's logit
    st[0] = f32::new(SENTINEL);
    st[1] = 0.0;
    st[2] = 0.0;
    st[3] = 0.0;
    st[4] = f32::new(SENTINEL);

    let total = n_images as usize * kn;
    // `op::split_len`: ⌈total / splits⌉ up to a multiple of `align` (a skip tile).
    let al = align as usize;
    #[allow(clippy::manual_div_ceil)] // cubecl has no div_ceil on usize
    let per = ((total + splits - 1) / splits + al - 1) / al * al;
    // Keys this unit folded (the skip's work counter).
    let mut folded = 0u32;
    let mut f0 = s * per;
    if f0 > total {
        f0 = total;
    }
    let mut f1 = f0 + per;
    if f1 > total {
        f1 = total;
    }
    // Whether the block's keys went through shared memory (uniform across the cube). The
    // comptime test stays an `if` of its own: it removes the shared path from the kernel
    // entirely when a key does not fit a tile.
    let mut staged = false;
    #[allow(clippy::collapsible_if)]
    if comptime![tile > 0] {
        if kstride == 0 {
            // The block's queries share their keys: stage `tile` keys at a time in shared
            // memory, each gathered from the images once for all 64 units; the query sits
            // in registers.
            let mut qreg = Array::<f32>::new(d);
            let qrow = q * queries.stride(0);
            for t in 0..d {
                qreg[t] = queries[qrow + t];
            }
            // One more float: the block's vote on whether a tile is kept.
            let mut sh = Shared::<[f32]>::new_slice(tile * dk + 1);
            // Skipping (a sorted bank, one row: key f is bank row k0 + f, and tile (k0 + f) /
            // tile of the bound table): the query's coordinates, guard band and best-known
            // logit, from [`els_seed_kernel`].
            let mut y = Array::<f32>::new(comptime![RANK + 1]);
            let mut guard = 0.0f32;
            let mut seed = f32::new(SENTINEL);
            let a2 = a * a * (1.0 - f32::new(QUERY_GUARD));
            let head = comptime![RANK * d];
            if comptime![skipping] {
                let pr = q * pre.stride(0);
                #[unroll]
                for r in 0..comptime![RANK + 1] {
                    y[r] = pre[pr + r];
                }
                guard = pre[pr + RANK + 1];
                seed = pre[pr + RANK + 2];
            }
            let mut f = f0;
            while f < f1 {
                let mut cnt = f1 - f;
                if cnt > tile {
                    cnt = tile;
                }
                let mut keep = true;
                let mut any = true;
                if comptime![skipping] {
                    // Kept when its keys' largest possible logit is within the margin of the
                    // best so far: −a²·gap²/2σ² + its largest ln n ≥ max(m, seed) − L.
                    keep = false;
                    if active {
                        let at = head + ((k0 + f) / tile) * BOUND_COLS; // the tile's bound row
                        let lb = tile_gap2(bounds, at, &y, guard, comptime![RANK + 1]);
                        let x_ub = -a2 * lb * inv_two_s2 + bounds[at + BOUND_COLS - 1];
                        keep = x_ub >= f32::max(st[0], seed) - margin;
                    }
                    if u == 0 {
                        sh[tile * dk] = 0.0;
                    }
                    sync_cube();
                    if keep {
                        sh[tile * dk] = 1.0;
                    }
                    sync_cube();
                    any = sh[tile * dk] > 0.5;
                    sync_cube();
                }
                if any {
                    let mut e = u;
                    while e < cnt * dk {
                        let ff = f + e / dk;
                        let idx = u32::cast_from(key_idx[(k0 + ff % kn) * key_idx.stride(0) + e % dk]) as usize;
                        sh[e] = images[(ff / kn) * row + idx];
                        e += units;
                    }
                    sync_cube();
                    if active && keep {
                        folded += cnt as u32;
                        for kk in 0..cnt {
                            let base = kk * dk;
                            let mut dist = 0.0f32;
                            for t in 0..d {
                                let diff = qreg[t] - a * sh[base + t];
                                dist += diff * diff;
                            }
                            let raw = -dist * inv_two_s2;
                            let mut x = raw;
                            if comptime![counted] {
                                x += sh[base + d];
                                if raw > st[4] {
                                    st[4] = raw;
                                    st[3] = f32::cast_from(f + kk - f0);
                                }
                            }
                            let p = fold(x, f32::cast_from(f + kk - f0), &mut st, &mut acc, cv, comptime![!counted]);
                            #[unroll]
                            for ch in 0..c {
                                acc[ch] += p * sh[base + centre0 + ch * plane];
                            }
                            if comptime![counted] {
                                acc[c] += p * sh[base + d];
                            }
                        }
                    }
                    sync_cube();
                }
                f += tile;
            }
            staged = true;
        }
    }
    if !staged && active {
        folded = (f1 - f0) as u32;
        keys_from_global(
            images,
            queries,
            key_idx,
            q,
            k0 + u * kstride,
            kn,
            f0,
            f1,
            a,
            inv_two_s2,
            &mut st,
            &mut acc,
            width as usize,
            c,
            centre0,
            plane,
            counted,
        );
    }
    if active {
        let o = s * out.stride(0) + q * out.stride(1);
        out[o] = st[0];
        out[o + 1] = st[1];
        out[o + 2] = st[2];
        #[unroll]
        for ch in 0..cv {
            out[o + STATE_COLS + ch] = acc[ch];
        }
        if comptime![counted] {
            out[o + STATE_COLS + cv] = st[4];
            out[o + STATE_COLS + cv + 1] = st[3];
            out[o + STATE_COLS + cv + 2] = f32::cast_from(folded);
        } else {
            out[o + STATE_COLS + cv] = st[3];
            out[o + STATE_COLS + cv + 1] = f32::cast_from(folded);
        }
    }
}
