//! Exact skipping in the fused op: a merged bank sorted into the GPU kernel's key tiles, each
//! with a lower bound on its keys' distances, so the kernel rules whole tiles out without
//! computing their distances or their exps ([`super::gpu::kernel`]).
//!
//! The rule and the bound are the CPU kernel's ([`super::cpu::skip`]): a key whose logit is
//! more than L = ln K + 24 ln 2 + 1 nats below the best one weighs under 2⁻²⁴/(e·K) of it, and
//! a tile's keys are all that far when a lower bound on their distance, from a box around
//! their first [`RANK`] principal coordinates and their residual norms, says so. What the
//! GPU does differently:
//! - **The tile is the kernel's own**: the keys it stages in shared memory at once
//!   ([`super::gpu::tile_keys`]), so one bound decides one staging. A block's 64 queries vote:
//!   a tile no query keeps is neither staged nor swept.
//! - **One basis per geometry**, fitted to its first sorted group; every group's coordinates
//!   use it (any orthonormal rows give a valid bound).
//! - **The query side runs in the kernel**, in f32: its projections, with a guard band of
//!   1e−4 of the coordinates' scale on each gap and of the sum ([`lower_bound`] is the same
//!   arithmetic on the host, which the tests hold against exact distances).
//! - **d_best per split**: before its sweep, each unit folds nothing but finds the tile of
//!   its split with the smallest bound and takes the best exact logit in it as the threshold
//!   to hold other tiles against (with the running max, once that is higher).
//! - **Merged banks only.** A plain group's keys are read from the images through one table
//!   of window positions, an (image, position) grid that cannot be reordered without a
//!   table per key; and where keys do not repeat enough to merge (P ≥ 7 on MNIST), the CPU
//!   kernel measured too few tiles ruled out for skipping to pay (BENCHMARKS.md, "Exact
//!   skipping").

use rayon::prelude::*;

use super::cpu::skip::{RANK, kd_order, margin_nats, principal_basis};
use super::op::MAX_UNIT_TERMS;
use super::op_merge::MergedGroup;

/// Floats per tile in the bound table: the low and high ends of its box on each of the
/// [`RANK`] projections and on the residual norm, then its largest ln n.
pub const BOUND_COLS: usize = 2 * (RANK + 1) + 1;
/// Fewest tiles a group needs to be sorted: below this a split holds too few to rule out.
pub const MIN_TILES: usize = 16;
/// The query side's guard band, relative to its coordinates' scale: f32 projections over
/// D ≤ 3072 values err by under 1e−5 of it, and the basis's rounding to f32 by less.
pub const QUERY_GUARD: f32 = 1e-4;

/// The margin L in nats for a pixel that sees `represented` keys (repeats counted), as the
/// kernel takes it.
pub fn margin(represented: usize) -> f32 {
    margin_nats(represented) as f32
}

/// Values a key needs for its bank to be sorted: one per principal coordinate.
pub const RANK_NEEDED: usize = RANK;

/// Whether a bank of `keys` distinct keys of width `d` is sorted, for a kernel tile of
/// `tile` keys. The seed pass scans every tile of a group in one loop, so a group of more
/// than [`MAX_UNIT_TERMS`] tiles (past any merged bank one binding holds: 3.4M keys of
/// D = 9) stays unsorted rather than meet a software adapter's loop limit.
pub fn worth_sorting(keys: usize, d: usize, tile: usize) -> bool {
    tile > 0 && d >= RANK_NEEDED && keys >= MIN_TILES * tile && keys.div_ceil(tile) <= MAX_UNIT_TERMS
}

/// Bound rows for `tiles` tiles of a group left unsorted: boxes that hold every point and
/// an ln n above any logit, so the kernel keeps each of these tiles.
pub fn keep_every_tile(tiles: usize) -> Vec<f32> {
    let mut row = [0f32; BOUND_COLS];
    for r in 0..=RANK {
        (row[2 * r], row[2 * r + 1]) = (-1e30, 1e30);
    }
    row[BOUND_COLS - 1] = 1e30;
    row.repeat(tiles)
}

/// The projection every sorted group of a geometry shares.
pub struct Basis {
    d: usize,
    /// [RANK, D]: orthonormal rows (float64).
    rows: Vec<f64>,
}

impl Basis {
    /// The leading principal directions of `group`'s keys (D values each, rows D + 1 wide).
    pub fn of(group: &MergedGroup, d: usize) -> Basis {
        let w = d + 1;
        Basis { d, rows: principal_basis(group.len(), d, RANK, &|g, t| group.rows[g * w + t]) }
    }

    /// As the kernel reads it: [RANK·D] f32, the head of the bound table.
    pub fn to_f32(&self) -> Vec<f32> {
        self.rows.iter().map(|&v| v as f32).collect()
    }

    /// [RANK + 1, K]: each key's projections and residual norm √(‖k‖² − ‖Uk‖²), summed in
    /// float64 (its cancellation stays near 1e−8·‖k‖, inside the bounds' guard band).
    fn coords(&self, group: &MergedGroup) -> Vec<f32> {
        let (d, w, keys) = (self.d, self.d + 1, group.len());
        let per_key: Vec<[f32; RANK + 1]> = (0..keys)
            .into_par_iter()
            .map(|g| {
                let k = &group.rows[g * w..g * w + d];
                let mut out = [0f32; RANK + 1];
                let mut rest: f64 = k.iter().map(|&v| v as f64 * v as f64).sum();
                for (o, u) in out.iter_mut().zip(self.rows.chunks_exact(d)) {
                    let z: f64 = u.iter().zip(k).map(|(u, &v)| u * v as f64).sum();
                    *o = z as f32;
                    rest -= z * z;
                }
                out[RANK] = rest.max(0.0).sqrt() as f32;
                out
            })
            .collect();
        let mut coords = vec![0f32; (RANK + 1) * keys];
        for (g, c) in per_key.iter().enumerate() {
            for (r, &v) in c.iter().enumerate() {
                coords[r * keys + g] = v;
            }
        }
        coords
    }
}

/// Sorts `group`'s keys (rows and first occurrences alike) into k-d tiles of `tile` keys on
/// their coordinates under `basis`, and returns the tiles' bound rows ([tiles ·
/// [`BOUND_COLS`]]). Each tile's box is widened by 1e−6 of its coordinates' scale, above
/// their f32 rounding. Keys of one tile keep their bank order.
pub fn sort(group: &mut MergedGroup, d: usize, basis: &Basis, tile: usize) -> Vec<f32> {
    let (w, keys) = (d + 1, group.len());
    let coords = basis.coords(group);
    let mut idx: Vec<u32> = (0..keys as u32).collect();
    kd_order(&mut idx, &coords, keys, RANK + 1, tile);
    let tiles = keys.div_ceil(tile);
    let mut bounds = vec![0f32; tiles * BOUND_COLS];
    for (t, row) in bounds.chunks_exact_mut(BOUND_COLS).enumerate() {
        let members = &idx[t * tile..((t + 1) * tile).min(keys)];
        let mut scale = 1f32;
        for r in 0..=RANK {
            let (lo, hi) = members.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &g| {
                let v = coords[r * keys + g as usize];
                (lo.min(v), hi.max(v))
            });
            (row[2 * r], row[2 * r + 1]) = (lo, hi);
            scale = scale.max(lo.abs()).max(hi.abs());
        }
        let guard = 1e-6 * scale;
        for r in 0..=RANK {
            row[2 * r] -= guard;
            row[2 * r + 1] += guard;
        }
        row[BOUND_COLS - 1] = members.iter().map(|&g| group.rows[g as usize * w + d]).fold(f32::NEG_INFINITY, f32::max);
    }
    group.rows = idx.iter().flat_map(|&g| group.rows[g as usize * w..(g as usize + 1) * w].to_vec()).collect();
    group.first = idx.iter().map(|&g| group.first[g as usize]).collect();
    bounds
}

/// A query's coordinates as the kernel forms them, in f32: its [`RANK`] projections and its
/// residual norm, scaled by 1/a (`basis`: [`Basis::to_f32`]).
pub fn query_coords(q: &[f32], basis: &[f32], a: f32) -> [f32; RANK + 1] {
    let d = q.len();
    let mut y = [0f32; RANK + 1];
    for (yr, u) in y.iter_mut().zip(basis.chunks_exact(d)) {
        *yr = u.iter().zip(q).map(|(u, v)| u * v).sum();
    }
    let mut res2 = 0f32;
    for t in 0..d {
        let mut v = q[t];
        for r in 0..RANK {
            v -= y[r] * basis[r * d + t];
        }
        res2 += v * v;
    }
    y[RANK] = res2.sqrt();
    y.iter_mut().for_each(|v| *v /= a);
    y
}

/// The kernel's lower bound on ‖q − a·k‖² over a tile's keys, from its bound row and the
/// query's coordinates `y` ([`query_coords`]), in f32 with the guard band: each gap shortened
/// by [`QUERY_GUARD`] of the coordinates' scale, the sum by that share.
pub fn lower_bound(row: &[f32], y: &[f32; RANK + 1], a: f32) -> f32 {
    let guard = QUERY_GUARD * y.iter().fold(0f32, |m, v| m.max(v.abs()));
    let mut s = 0f32;
    for r in 0..=RANK {
        let gap = ((row[2 * r] - y[r]).max(y[r] - row[2 * r + 1]) - guard).max(0.0);
        s += gap * gap;
    }
    a * a * (1.0 - QUERY_GUARD) * s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bank of `keys` distinct keys of `d` values in clusters (as patches are), ln n from
    /// 0 to ln 5, and its first occurrences numbered in bank order.
    fn bank(keys: usize, d: usize) -> MergedGroup {
        let mut s = 7u64;
        let mut rnd = || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 33) as f64 / (1u64 << 31) as f64) as f32 - 0.5
        };
        let centres: Vec<Vec<f32>> = (0..20).map(|_| (0..d).map(|_| 2.0 * rnd()).collect()).collect();
        let mut rows = Vec::new();
        for k in 0..keys {
            let c = &centres[k % 20];
            rows.extend(c.iter().map(|&v| v + 0.2 * rnd()));
            rows.push(((k % 5 + 1) as f32).ln());
        }
        MergedGroup { rows, first: (0..keys as u32).map(|k| (k, k)).collect(), total: keys * 3 }
    }

    #[test]
    fn sorting_permutes_keys_and_their_first_places_together() {
        let (d, tile) = (9, 61);
        let mut g = bank(3000, d);
        let before = bank(3000, d);
        let basis = Basis::of(&g, d);
        let bounds = sort(&mut g, d, &basis, tile);
        assert_eq!(bounds.len(), 3000usize.div_ceil(tile) * BOUND_COLS);
        let mut seen = vec![false; 3000];
        for (k, &(img, _)) in g.first.iter().enumerate() {
            let src = img as usize;
            assert!(!std::mem::replace(&mut seen[src], true), "key {src} twice");
            assert_eq!(g.rows[k * (d + 1)..(k + 1) * (d + 1)], before.rows[src * (d + 1)..(src + 1) * (d + 1)]);
        }
        assert!(seen.iter().all(|&s| s), "every key kept");
        // Each tile's largest ln n is its members' largest.
        for (t, row) in bounds.chunks_exact(BOUND_COLS).enumerate() {
            let top = (t * tile..((t + 1) * tile).min(3000)).map(|k| g.rows[k * (d + 1) + d]).fold(f32::MIN, f32::max);
            assert_eq!(row[BOUND_COLS - 1], top);
        }
    }

    /// The bound holds against float64 distances for every (query, tile), and rules out
    /// most tiles at low noise: the kernel's skip is exact and does something.
    #[test]
    fn tile_bounds_hold_below_every_distance_and_rule_most_tiles_out_at_low_noise() {
        let (d, tile, keys) = (25, 64, 4000);
        let mut g = bank(keys, d);
        let basis = Basis::of(&g, d);
        let bounds = sort(&mut g, d, &basis, tile);
        let u = basis.to_f32();
        let (mut checked, mut ruled_out) = (0usize, 0usize);
        for (qi, a) in [(0usize, 0.95f32), (1, 0.6), (2, 0.2), (3, 0.99)]
            .iter()
            .flat_map(|&(i, a)| (0..6).map(move |j| (i * 6 + j, a)))
        {
            // A query near key qi·131, noised: a·k + small.
            let k0 = &g.rows[(qi * 131 % keys) * (d + 1)..][..d];
            let q: Vec<f32> =
                k0.iter().enumerate().map(|(t, &v)| a * v + 0.03 * ((t * 7 + qi) % 5) as f32 - 0.06).collect();
            let y = query_coords(&q, &u, a);
            let dist = |k: usize| -> f64 {
                g.rows[k * (d + 1)..][..d].iter().zip(&q).map(|(&v, &x)| (x as f64 - a as f64 * v as f64).powi(2)).sum()
            };
            let best = (0..keys).map(dist).fold(f64::INFINITY, f64::min);
            let s2 = 0.01f64; // σ² at low noise
            let margin = 2.0 * s2 * margin(keys * 3) as f64;
            for (t, row) in bounds.chunks_exact(BOUND_COLS).enumerate() {
                let lb = lower_bound(row, &y, a) as f64;
                assert!(lb.is_finite());
                let nearest = (t * tile..((t + 1) * tile).min(keys)).map(dist).fold(f64::INFINITY, f64::min);
                assert!(lb <= nearest, "query {qi}, tile {t}: bound {lb} above its nearest key {nearest}");
                checked += 1;
                if lb > best + margin {
                    ruled_out += 1;
                }
            }
        }
        assert_eq!(checked, 24 * keys.div_ceil(tile));
        // 20 clusters: a query's own holds ~1/20 of the keys; the bound rules out most others.
        assert!(ruled_out * 10 > checked * 6, "ruled out {ruled_out} of {checked} tiles");
    }

    #[test]
    fn small_or_narrow_banks_are_not_sorted() {
        assert!(worth_sorting(16 * 61, 25, 61));
        assert!(!worth_sorting(16 * 61 - 1, 25, 61));
        assert!(!worth_sorting(100_000, RANK - 1, 64), "fewer values than principal coordinates");
        assert!(!worth_sorting(100_000, 4000, 0), "a key too wide for a tile");
        assert!(worth_sorting(MAX_UNIT_TERMS * 64, 9, 64), "the seed pass's loop at its limit");
        assert!(!worth_sorting(MAX_UNIT_TERMS * 64 + 1, 9, 64), "one tile past it");
    }
}
