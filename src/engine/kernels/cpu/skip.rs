//! Exact skipping: keys that cannot move a float32 result are ruled out a tile at a time,
//! without computing their distances or their exps.
//!
//! With logits −‖q − a·k‖²/2σ², a key whose squared distance d exceeds the nearest key's
//! d_min by more than Δ = 2σ²·L, L = ln K + 24 ln 2 + 1 (K: every key the pixel sees,
//! repeats counted), weighs less than e^−L = 2⁻²⁴/(e·K) of the largest weight. All such keys
//! together hold under 2⁻²⁴/e of the softmax's mass: they move x̂₀ by less than that share
//! of the values' range and the entropy by less than float32 rounding. Skipping them is exact
//! in the float32 sense, and the bound is a bound, not a guess (`tests/els_op.rs` measures
//! the skipped mass in float64 and asserts it).
//!
//! How whole tiles are ruled out:
//! - **An order.** [`order`] sorts a group's bank so each tile of [`TILE`] keys is compact:
//!   a k-d split on each key's first [`RANK`] principal coordinates (of a sample of the
//!   bank) and its residual norm, at a multiple of [`TILE`] each time. Identical keys keep
//!   their bank order, so ties still go to the first occurrence.
//! - **A lower bound.** U (the [`RANK`]×D basis) is orthonormal, so for any key in a tile
//!   ‖q − a·k‖² = ‖U(q − a·k)‖² + ‖R(q − a·k)‖² ≥ Σ gap(Uq, a·box)² + gap(‖Rq‖, a·[r₀, r₁])²,
//!   with R = I − UᵀU and the tile's box of projections and interval of residual norms.
//!   About 10 operations per tile and query, against 64·2D for its distances.
//! - **A near-best key first.** Each query folds the tile of smallest bound first; its best
//!   key's exact distance (float64) is the d_best that every other tile's bound is held
//!   against, tightened as nearer keys turn up (tiles go in order of their bounds).
//!
//! The float32 bounds carry a guard band (1e−6 of the coordinates' scale on each gap,
//! 1e−5 of the sum), far above their rounding, so a kept tile's keys are never skipped by
//! rounding. [`worth_it`] decides per group: at high noise almost every tile survives, and
//! the dense gemm sweep is cheaper than visiting tiles one query at a time.

use rayon::prelude::*;

use super::super::super::control::{CancelToken, Cancelled};
use super::HOST_CHUNK_KEYS;
use super::fused::{HostChunk, RowState};
use super::simd;

/// Tiles per group in the two-level bound: a query first rules out whole groups.
const GROUP: usize = 16;
/// Principal coordinates per key in the bound.
pub const RANK: usize = 8;
/// Keys per tile: the unit a bound rules out.
pub const TILE: usize = 64;
const _: () = assert!(HOST_CHUNK_KEYS.is_multiple_of(TILE), "tiles must not straddle chunks");
/// Nats past 24 ln 2 + ln K: an e of headroom over the float32 logits' own rounding.
const SLACK_NATS: f64 = 1.0;
/// A tile kept by more than this share of the sampled queries' tiles runs the dense sweep.
const MAX_KEPT_SHARE: f64 = 0.2;
/// Groups of fewer pixels stay dense: the edge groups (18–26 pixels on MNIST) are a small
/// share of a call, and checking each for skipping cost more than it could save.
pub const MIN_QUERIES: usize = 64;
/// Fewer keys than this per group: the sort and the per-query visits cannot pay.
const MIN_KEYS: usize = 16 * TILE;

/// The margin L = ln K + 24 ln 2 + 1 nats for a pixel that sees `represented` keys
/// (repeats counted): every key more than L below the best logit together holds under
/// 2⁻²⁴/e of the softmax's mass.
pub fn margin_nats(represented: usize) -> f64 {
    (represented.max(1) as f64).ln() + 24.0 * std::f64::consts::LN_2 + SLACK_NATS
}

/// A sorted bank's tile bounds.
pub struct SkipIndex {
    d: usize,
    rank: usize,
    /// [rank, D]: orthonormal rows, the sample's leading principal directions.
    basis: Vec<f64>,
    /// [rank + 1, tiles]: each tile's box of projections, the last row its residual norms.
    lo: Vec<f32>,
    hi: Vec<f32>,
    /// [rank + 1, ⌈tiles / GROUP⌉]: the same for each run of [`GROUP`] tiles.
    glo: Vec<f32>,
    ghi: Vec<f32>,
    tiles: usize,
    /// Keys in the sorted bank.
    keys: usize,
    /// Keys the bank stands for, repeats counted: K in the margin.
    pub represented: usize,
}

impl SkipIndex {
    /// Keys in the sorted bank.
    pub fn keys(&self) -> usize {
        self.keys
    }

    pub fn bytes(&self) -> usize {
        self.basis.len() * 8 + (self.lo.len() + self.hi.len() + self.glo.len() + self.ghi.len()) * 4
    }

    /// The margin L in nats: a key more than L below the best logit is skipped.
    fn margin(&self) -> f64 {
        margin_nats(self.represented)
    }

    /// A query's projections scaled by 1/a: `rank` coordinates and the residual norm.
    fn project(&self, q: &[f32], a: f64) -> Vec<f32> {
        let mut z = vec![0f64; self.rank + 1];
        let mut res: Vec<f64> = q.iter().map(|&v| v as f64).collect();
        for (zr, u) in z.iter_mut().zip(self.basis.chunks_exact(self.d)) {
            *zr = u.iter().zip(q).map(|(u, &v)| u * v as f64).sum();
            res.iter_mut().zip(u).for_each(|(x, u)| *x -= *zr * u);
        }
        z[self.rank] = res.iter().map(|x| x * x).sum::<f64>().sqrt();
        z.iter().map(|v| (v / a) as f32).collect()
    }

    /// One query's tile bounds and its threshold d_best + margin: `out` ([tiles]) holds each
    /// tile's lower bound on ‖q − a·k‖², or +∞ for tiles a group's bound already ruled out.
    ///
    /// Two levels: the bounds of the groups of [`GROUP`] tiles first; the tiles of the
    /// group of smallest bound next, whose tile of smallest bound gives d_best (its nearest
    /// key, float64); then the tiles of every group within the margin.
    fn query_bounds(
        &self,
        query: &[f32],
        y: &[f32],
        a: f64,
        chunks: &[HostChunk],
        margin: f64,
        out: &mut Vec<f32>,
    ) -> f64 {
        let groups = self.tiles.div_ceil(GROUP);
        let mut coarse = vec![0f32; groups];
        box_bounds(&self.glo, &self.ghi, groups, 0..groups, y, a, &mut coarse);
        out.clear();
        out.resize(self.tiles, f32::INFINITY);
        let fine = |g: usize, out: &mut [f32]| {
            let range = g * GROUP..((g + 1) * GROUP).min(self.tiles);
            box_bounds(&self.lo, &self.hi, self.tiles, range.clone(), y, a, &mut out[range]);
        };
        let g0 = (0..groups).fold(0, |m, g| if coarse[g] < coarse[m] { g } else { m });
        fine(g0, out);
        let t0 = (g0 * GROUP..((g0 + 1) * GROUP).min(self.tiles))
            .fold(g0 * GROUP, |m, t| if out[t] < out[m] { t } else { m });
        let (ci, k0, n) = self.tile(t0);
        let near = (k0..k0 + n).map(|col| distance(query, &chunks[ci], col, a, self.d)).fold(f64::INFINITY, f64::min);
        let thr = near + margin;
        for g in (0..groups).filter(|&g| g != g0 && coarse[g] as f64 <= thr) {
            fine(g, out);
        }
        thr
    }

    /// Tile `t`'s chunk, first column in it and key count.
    fn tile(&self, t: usize) -> (usize, usize, usize) {
        let s = t * TILE;
        (s / HOST_CHUNK_KEYS, s % HOST_CHUNK_KEYS, TILE.min(self.keys - s))
    }
}

/// Lower bounds on ‖q − a·k‖² over the boxes `range` of a [dims, stride] box table, into
/// `out` (one per box), for the query's coordinates `y` (scaled by 1/a). With the guard
/// band: each gap is shortened by 1e−6 of the coordinates' scale and the sum by 1e−5.
fn box_bounds(
    lo: &[f32],
    hi: &[f32],
    stride: usize,
    range: std::ops::Range<usize>,
    y: &[f32],
    a: f64,
    out: &mut [f32],
) {
    out.iter_mut().for_each(|o| *o = 0.0);
    let scale = y.iter().fold(1f32, |m, v| m.max(v.abs()));
    let guard = 1e-6 * scale;
    for (r, &yr) in y.iter().enumerate() {
        let (lo, hi) = (
            &lo[r * stride + range.start..r * stride + range.end],
            &hi[r * stride + range.start..r * stride + range.end],
        );
        for ((o, &l), &h) in out.iter_mut().zip(lo).zip(hi) {
            let gap = ((l - yr).max(yr - h) - guard).max(0.0);
            *o += gap * gap;
        }
    }
    let a2 = (a * a * (1.0 - 1e-5)) as f32;
    out.iter_mut().for_each(|o| *o *= a2);
}

/// Sorts one group's bank for skipping: the chunks in tile order (each column's place in the
/// original bank in `first`) and the tiles' bounds. `None` when the bank is too small to pay.
/// `d`: values per key. Cancellable between its passes.
pub fn order(
    chunks: &[HostChunk],
    d: usize,
    cancel: Option<&CancelToken>,
) -> Result<Option<(Vec<HostChunk>, SkipIndex)>, Cancelled> {
    let check = || if cancel.is_some_and(|t| t.is_cancelled()) { Err(Cancelled) } else { Ok(()) };
    let keys: usize = chunks.iter().map(|c| c.len).sum();
    if keys < MIN_KEYS || d == 0 {
        return Ok(None);
    }
    let counted = chunks[0].counted;
    let starts: Vec<usize> = chunks.iter().scan(0, |s, c| Some(std::mem::replace(s, *s + c.len))).collect();
    let locate = |g: usize| {
        let ci = starts.partition_point(|&s| s <= g) - 1;
        (ci, g - starts[ci])
    };
    let rank = RANK.min(d);
    let basis = principal_basis(keys, d, rank, &|g, t| {
        let (ci, col) = locate(g);
        chunks[ci].keys_t[t * chunks[ci].len + col]
    });
    check()?;
    // Coordinates of every key: [rank + 1, K] (the last row the residual norm), float64
    // sums stored as f32 (the boxes' guard band covers the rounding).
    let coords = key_coords(chunks, d, rank, &basis);
    check()?;
    let mut idx: Vec<u32> = (0..keys as u32).collect();
    kd_order(&mut idx, &coords, keys, rank + 1, TILE);
    check()?;
    // The chunks rebuilt in that order.
    let rows = chunks[0].keys_t.len() / chunks[0].len;
    let vrows = chunks[0].values_t.len() / chunks[0].len;
    let sorted: Vec<HostChunk> = idx
        .par_chunks(HOST_CHUNK_KEYS)
        .map(|part| {
            let k = part.len();
            let at: Vec<(usize, usize)> = part.iter().map(|&g| locate(g as usize)).collect();
            let mut keys_t = vec![0f32; rows * k];
            for t in 0..rows {
                for (v, &(ci, col)) in keys_t[t * k..(t + 1) * k].iter_mut().zip(&at) {
                    *v = chunks[ci].keys_t[t * chunks[ci].len + col];
                }
            }
            let mut values_t = vec![0f32; vrows * k];
            for t in 0..vrows {
                for (v, &(ci, col)) in values_t[t * k..(t + 1) * k].iter_mut().zip(&at) {
                    *v = chunks[ci].values_t[t * chunks[ci].len + col];
                }
            }
            let first = part
                .iter()
                .zip(&at)
                .map(|(&g, &(ci, col))| if chunks[ci].first.is_empty() { g } else { chunks[ci].first[col] })
                .collect();
            HostChunk { keys_t, values_t, len: k, first, counted }
        })
        .collect();
    check()?;
    // Each tile's box, widened by a guard band for the f32 rounding of its coordinates.
    let tiles = keys.div_ceil(TILE);
    let dims = rank + 1;
    let (mut lo, mut hi) = (vec![f32::INFINITY; dims * tiles], vec![f32::NEG_INFINITY; dims * tiles]);
    for t in 0..tiles {
        let members = &idx[t * TILE..((t + 1) * TILE).min(keys)];
        let mut scale = 1f32;
        for r in 0..dims {
            for &g in members {
                let v = coords[r * keys + g as usize];
                lo[r * tiles + t] = lo[r * tiles + t].min(v);
                hi[r * tiles + t] = hi[r * tiles + t].max(v);
                scale = scale.max(v.abs());
            }
        }
        let guard = 1e-6 * scale;
        for r in 0..dims {
            lo[r * tiles + t] -= guard;
            hi[r * tiles + t] += guard;
        }
    }
    let groups = tiles.div_ceil(GROUP);
    let (mut glo, mut ghi) = (vec![f32::INFINITY; dims * groups], vec![f32::NEG_INFINITY; dims * groups]);
    for r in 0..dims {
        for t in 0..tiles {
            let g = t / GROUP;
            glo[r * groups + g] = glo[r * groups + g].min(lo[r * tiles + t]);
            ghi[r * groups + g] = ghi[r * groups + g].max(hi[r * tiles + t]);
        }
    }
    let represented = if counted {
        // ln(count) is the key row after the norm.
        sorted
            .iter()
            .map(|c| c.keys_t[(d + 1) * c.len..(d + 2) * c.len].iter().map(|l| l.exp().round() as usize).sum::<usize>())
            .sum()
    } else {
        keys
    };
    Ok(Some((sorted, SkipIndex { d, rank, basis, lo, hi, glo, ghi, tiles, keys, represented })))
}

/// The leading `rank` principal directions ([rank, d], rows orthonormal) of an even sample
/// of a bank's `keys` keys, `value(g, t)` coordinate t of key g, by orthogonal iteration on
/// their covariance (float64). Any orthonormal rows give a valid bound; the principal ones
/// make it tight. The GPU's sorted banks use it too ([`super::super::op_skip`]).
pub(crate) fn principal_basis(keys: usize, d: usize, rank: usize, value: &dyn Fn(usize, usize) -> f32) -> Vec<f64> {
    // The covariance costs samples·D²: at most ~2·10⁸ operations.
    let samples = (200_000_000 / (d * d)).clamp(256, 4096).min(keys);
    let sample: Vec<Vec<f64>> = (0..samples)
        .map(|s| {
            let g = s * keys / samples;
            (0..d).map(|t| value(g, t) as f64).collect()
        })
        .collect();
    let mean: Vec<f64> = (0..d).map(|t| sample.iter().map(|k| k[t]).sum::<f64>() / samples as f64).collect();
    let mut cov = vec![0f64; d * d];
    for k in &sample {
        let c: Vec<f64> = k.iter().zip(&mean).map(|(v, m)| v - m).collect();
        for i in 0..d {
            let ci = c[i];
            for (x, &cj) in cov[i * d..i * d + i + 1].iter_mut().zip(&c) {
                *x += ci * cj;
            }
        }
    }
    for i in 0..d {
        for j in 0..i {
            cov[j * d + i] = cov[i * d + j];
        }
    }
    // Orthogonal iteration from a spread of unit vectors.
    let mut v: Vec<f64> = (0..rank * d).map(|i| if i % d == (i / d) * d / rank { 1.0 } else { 0.01 }).collect();
    orthonormalise(&mut v, rank, d);
    for _ in 0..40 {
        let mut w = vec![0f64; rank * d];
        for r in 0..rank {
            let vr = &v[r * d..(r + 1) * d];
            for i in 0..d {
                w[r * d + i] = cov[i * d..(i + 1) * d].iter().zip(vr).map(|(a, b)| a * b).sum();
            }
        }
        v = w;
        orthonormalise(&mut v, rank, d);
    }
    v
}

/// Gram–Schmidt (twice) on the rows of `v` ([rank, d]); a row that vanishes (a bank of
/// fewer independent directions) is replaced by the first unit vector that is independent.
fn orthonormalise(v: &mut [f64], rank: usize, d: usize) {
    for r in 0..rank {
        let mut fresh = 0;
        loop {
            for _ in 0..2 {
                for p in 0..r {
                    let dot: f64 = (0..d).map(|i| v[r * d + i] * v[p * d + i]).sum();
                    for i in 0..d {
                        v[r * d + i] -= dot * v[p * d + i];
                    }
                }
            }
            let norm = (0..d).map(|i| v[r * d + i] * v[r * d + i]).sum::<f64>().sqrt();
            if norm > 1e-9 {
                v[r * d..(r + 1) * d].iter_mut().for_each(|x| *x /= norm);
                break;
            }
            // `rank ≤ d`, so some unit vector is independent of the rows before.
            v[r * d..(r + 1) * d].iter_mut().enumerate().for_each(|(i, x)| *x = (i == fresh) as u8 as f64);
            fresh += 1;
        }
    }
}

/// [rank + 1, K]: each key's projections on `basis` and its residual norm, in key order.
///
/// In float64, a block of 256 keys at a time: the projections as one small gemm, the
/// residual as √(‖k‖² − ‖Uk‖²), whose cancellation float64 leaves at ~1e−8·‖k‖, far inside
/// the guard band (in float32 it would reach 1e−3·‖k‖). A scalar loop over every key's
/// residual vector took a second at P = 15; this is a tenth of that.
fn key_coords(chunks: &[HostChunk], d: usize, rank: usize, basis: &[f64]) -> Vec<f32> {
    const BLOCK: usize = 256;
    let keys: usize = chunks.iter().map(|c| c.len).sum();
    let per: Vec<Vec<f32>> = chunks
        .par_iter()
        .map(|ch| {
            let k = ch.len;
            let mut out = vec![0f32; (rank + 1) * k];
            let mut buf = vec![0f64; d * BLOCK]; // [D, B]
            let mut z = vec![0f64; rank * BLOCK]; // [rank, B]
            for j0 in (0..k).step_by(BLOCK) {
                let b = BLOCK.min(k - j0);
                let mut norm = [0f64; BLOCK];
                for t in 0..d {
                    let src = &ch.keys_t[t * k + j0..t * k + j0 + b];
                    for ((x, &v), n) in buf[t * b..(t + 1) * b].iter_mut().zip(src).zip(norm.iter_mut()) {
                        *x = v as f64;
                        *n += *x * *x;
                    }
                }
                // z[r, j] = Σ_t basis[r, t]·buf[t, j]
                // SAFETY: the pointers cover rank×b, rank×d and d×b elements with the strides
                // given, and dst does not alias the inputs.
                unsafe {
                    gemm::gemm(
                        rank,
                        b,
                        d,
                        z.as_mut_ptr(),
                        1,
                        b as isize,
                        false,
                        basis.as_ptr(),
                        1,
                        d as isize,
                        buf.as_ptr(),
                        1,
                        b as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
                for r in 0..rank {
                    for j in 0..b {
                        let zz = z[r * b + j];
                        out[r * k + j0 + j] = zz as f32;
                        norm[j] -= zz * zz;
                    }
                }
                for j in 0..b {
                    out[rank * k + j0 + j] = norm[j].max(0.0).sqrt() as f32;
                }
            }
            out
        })
        .collect();
    let mut coords = vec![0f32; (rank + 1) * keys];
    let mut g0 = 0;
    for (ch, p) in chunks.iter().zip(&per) {
        for r in 0..=rank {
            coords[r * keys + g0..r * keys + g0 + ch.len].copy_from_slice(&p[r * ch.len..(r + 1) * ch.len]);
        }
        g0 += ch.len;
    }
    coords
}

/// Orders `idx` so each run of `leaf` is a k-d leaf: split on the widest coordinate at a
/// multiple of `leaf` near the middle, ties by bank place, and each leaf in bank order.
/// `coords` is [dims, keys].
pub(crate) fn kd_order(idx: &mut [u32], coords: &[f32], keys: usize, dims: usize, leaf: usize) {
    if idx.len() <= leaf {
        idx.sort_unstable();
        return;
    }
    let widest = (0..dims)
        .map(|r| {
            let row = &coords[r * keys..(r + 1) * keys];
            let (lo, hi) = idx.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &g| {
                let v = row[g as usize];
                (lo.min(v), hi.max(v))
            });
            hi - lo
        })
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (r, w)| if w > best.1 { (r, w) } else { best });
    let row = &coords[widest.0 * keys..(widest.0 + 1) * keys];
    let mid = idx.len().div_ceil(leaf) / 2 * leaf;
    idx.select_nth_unstable_by(mid, |&x, &y| row[x as usize].total_cmp(&row[y as usize]).then(x.cmp(&y)));
    let (left, right) = idx.split_at_mut(mid);
    if left.len() > 32 * leaf {
        rayon::join(|| kd_order(left, coords, keys, dims, leaf), || kd_order(right, coords, keys, dims, leaf));
    } else {
        kd_order(left, coords, keys, dims, leaf);
        kd_order(right, coords, keys, dims, leaf);
    }
}

/// Whether a group's unsorted bank is worth sorting for this call: the share of an even
/// sample of its keys within the margin of the sample's nearest, for a few of its queries,
/// is under [`MAX_KEPT_SHARE`] / 2 (the tiles keep ~1.5× the keys that must be kept). The
/// sample's nearest is no nearer than the bank's, so the estimate errs towards not sorting.
/// `raw`: [Q, D] the group's unscaled queries; `represented`: K.
pub fn would_skip(chunks: &[HostChunk], raw: &[f32], d: usize, a: f64, s2: f64, represented: usize) -> bool {
    let keys: usize = chunks.iter().map(|c| c.len).sum();
    let q = raw.len() / d.max(1);
    if keys < MIN_KEYS || q == 0 {
        return false;
    }
    let margin = 2.0 * s2 * ((represented.max(1) as f64).ln() + 24.0 * std::f64::consts::LN_2 + SLACK_NATS);
    let starts: Vec<usize> = chunks.iter().scan(0, |s, c| Some(std::mem::replace(s, *s + c.len))).collect();
    let samples = keys.min(2048);
    let cols: Vec<(usize, usize)> = (0..samples)
        .map(|s| {
            let g = s * keys / samples;
            let ci = starts.partition_point(|&st| st <= g) - 1;
            (ci, g - starts[ci])
        })
        .collect();
    // The sample gathered once ([S, D], a·k), then read contiguously per query.
    let sample: Vec<f64> = cols
        .iter()
        .flat_map(|&(ci, col)| (0..d).map(move |t| a * chunks[ci].keys_t[t * chunks[ci].len + col] as f64))
        .collect();
    let picks = q.min(4);
    let mut within = 0usize;
    for p in 0..picks {
        let qi = p * q / picks;
        let query = &raw[qi * d..(qi + 1) * d];
        let dist: Vec<f64> = sample
            .chunks_exact(d)
            .map(|k| k.iter().zip(query).map(|(&k, &v)| (v as f64 - k) * (v as f64 - k)).sum())
            .collect();
        let near = dist.iter().copied().fold(f64::INFINITY, f64::min);
        within += dist.iter().filter(|&&x| x <= near + margin).count();
    }
    (within as f64) < 0.5 * MAX_KEPT_SHARE * (picks * samples) as f64
}

/// Whether skipping pays for this group at this noise: the share of tiles a sample of its
/// queries keeps (against the tile of smallest bound's best key) is under
/// [`MAX_KEPT_SHARE`].
pub fn worth_it(index: &SkipIndex, chunks: &[HostChunk], raw: &[f32], a: f64, s2: f64) -> bool {
    let d = index.d;
    let q = raw.len() / d;
    if q == 0 {
        return false;
    }
    let picks = q.min(8);
    let margin = 2.0 * s2 * index.margin();
    let mut bounds = Vec::new();
    let mut kept = 0usize;
    for p in 0..picks {
        let qi = p * q / picks;
        let query = &raw[qi * d..(qi + 1) * d];
        let thr = index.query_bounds(query, &index.project(query, a), a, chunks, margin, &mut bounds);
        kept += bounds.iter().filter(|&&b| (b as f64) <= thr).count();
    }
    (kept as f64) < MAX_KEPT_SHARE * (picks * index.tiles) as f64
}

/// ‖q − a·k‖² in float64 for column `col` of `chunk`.
fn distance(q: &[f32], chunk: &HostChunk, col: usize, a: f64, d: usize) -> f64 {
    (0..d)
        .map(|t| {
            let x = q[t] as f64 - a * chunk.keys_t[t * chunk.len + col] as f64;
            x * x
        })
        .sum()
}

/// What [`sweep`] gives back per query.
pub struct Swept {
    /// [Q, C'] x̂₀ − m (C' value channels, a merged bank's ln(count) last).
    pub vals: Vec<f32>,
    pub entropy: Vec<f32>,
    /// Each query's winner: its place in the original bank.
    pub winners: Vec<u64>,
    /// Keys whose logits were computed, summed over queries.
    pub folded: u64,
}

/// Queries per block in [`sweep`]: similar queries (k-d ordered like the keys) keep mostly
/// the same tiles, so each kept tile is read from memory once per block, not once per query.
const QUERY_BLOCK: usize = 32;

/// The softmax of every query over a sorted bank, skipping what cannot count.
/// `queries`: [Q, Da] as the dense sweep takes them (scaled, with the norm's and ln(count)'s
/// columns); `raw`: [Q, D] the unscaled patches; `cv`: value channels.
///
/// Each query's d_best is the nearest key (float64) in its tile of smallest bound; a tile
/// is kept for a query when its bound is within the margin of that. A block of queries walks
/// the union of its kept tiles in bank order, each query folding the tiles it keeps.
#[allow(clippy::too_many_arguments)]
pub fn sweep(
    index: &SkipIndex,
    chunks: &[HostChunk],
    queries: &[f32],
    raw: &[f32],
    a: f64,
    s2: f64,
    cv: usize,
    want_entropy: bool,
    cancel: Option<&CancelToken>,
) -> Result<Swept, Cancelled> {
    let (d, tiles) = (index.d, index.tiles);
    let q = raw.len() / d;
    let da = queries.len() / q.max(1);
    let margin = 2.0 * s2 * index.margin();
    let counted = chunks.first().is_some_and(|c| c.counted);
    // Every query's coordinates ([rank + 1, Q]), and the queries in k-d order.
    let ys: Vec<Vec<f32>> = (0..q).into_par_iter().map(|i| index.project(&raw[i * d..(i + 1) * d], a)).collect();
    let dims = index.rank + 1;
    let coords: Vec<f32> = (0..dims).flat_map(|r| ys.iter().map(move |y| y[r])).collect();
    let mut qorder: Vec<u32> = (0..q as u32).collect();
    kd_order(&mut qorder, &coords, q, dims, QUERY_BLOCK);
    type Part = (Vec<u32>, Vec<f32>, Vec<f32>, Vec<u64>, u64);
    let parts: Vec<Result<Part, Cancelled>> = qorder
        .par_chunks(QUERY_BLOCK)
        .map(|block| {
            if cancel.is_some_and(|t| t.is_cancelled()) {
                return Err(Cancelled);
            }
            let nb = block.len();
            let mut bounds = vec![Vec::new(); nb];
            let mut thr = vec![0f64; nb];
            let mut best = vec![(f32::NEG_INFINITY, u64::MAX); nb];
            let mut keep = vec![false; tiles];
            for (i, &qi) in block.iter().enumerate() {
                let query = &raw[qi as usize * d..(qi as usize + 1) * d];
                thr[i] = index.query_bounds(query, &ys[qi as usize], a, chunks, margin, &mut bounds[i]);
                bounds[i].iter().zip(keep.iter_mut()).for_each(|(&lb, k)| *k |= lb as f64 <= thr[i]);
            }
            let mut state = RowState::new(nb, cv, want_entropy);
            let (mut row, mut x) = ([0f32; TILE], [0f32; TILE]);
            let mut folded = 0u64;
            let kept: Vec<usize> = (0..tiles).filter(|&t| keep[t]).collect();
            for &t in &kept {
                let (ci, k0, n) = index.tile(t);
                let ch = &chunks[ci];
                let ln_count = counted.then(|| &ch.keys_t[(d + 1) * ch.len + k0..(d + 1) * ch.len + k0 + n]);
                for (i, &qi) in block.iter().enumerate() {
                    if bounds[i][t] as f64 > thr[i] {
                        continue;
                    }
                    let row = &mut row[..n];
                    simd::tile_logits(&queries[qi as usize * da..(qi as usize + 1) * da], &ch.keys_t, ch.len, k0, row);
                    let vals = |c: usize| &ch.values_t[c * ch.len + k0..c * ch.len + k0 + n];
                    let top_row = state.fold_tile(i, row, vals);
                    // The winner: the largest logit less ln(count) (never above the row's
                    // largest), ties to the first place in the bank.
                    if top_row >= best[i].0 {
                        let x = &mut x[..n];
                        match ln_count {
                            Some(l) => x.iter_mut().zip(row.iter().zip(l)).for_each(|(x, (&y, &l))| *x = y - l),
                            None => x.copy_from_slice(row),
                        }
                        let top = simd::max(x);
                        let place = ch.first[k0 + simd::position(x, top)] as u64;
                        if top > best[i].0 || (top == best[i].0 && place < best[i].1) {
                            best[i] = (top, place);
                        }
                    }
                    folded += n as u64;
                }
            }
            let (vals, ent) = state.finish();
            Ok((block.to_vec(), vals, ent, best.iter().map(|b| b.1).collect(), folded))
        })
        .collect();
    let mut out = Swept { vals: vec![0f32; q * cv], entropy: vec![0f32; q], winners: vec![0; q], folded: 0 };
    for part in parts {
        let (block, vals, ent, winners, folded) = part?;
        for (i, &qi) in block.iter().enumerate() {
            let qi = qi as usize;
            out.vals[qi * cv..(qi + 1) * cv].copy_from_slice(&vals[i * cv..(i + 1) * cv]);
            out.entropy[qi] = ent[i];
            out.winners[qi] = winners[i];
        }
        out.folded += folded;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::merge::merge_duplicates;
    use super::*;

    /// A reproducible value in [−0.5, 0.5) from an index.
    fn val(i: u64) -> f64 {
        let mut z = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 31)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        (z >> 40) as f64 / (1u64 << 24) as f64 - 0.5
    }

    const D: usize = 9;

    /// 20000 keys of width 9 around 60 centres, every other one its centre exactly (exact
    /// ties, and half the bank merges away), in chunks of 5000 laid out as the bank cuts them;
    /// values: the middle.
    fn keys() -> Vec<[f32; D]> {
        (0..20_000u64)
            .map(|j| {
                let c = j % 60;
                std::array::from_fn(|t| {
                    let centre = 1.6 * val(c * 31 + t as u64);
                    let wobble = if j % 2 == 0 { 0.0 } else { 0.08 * val(1_000_000 + j * 17 + t as u64) };
                    (centre + wobble) as f32
                })
            })
            .collect()
    }

    fn chunks_of(keys: &[[f32; D]]) -> Vec<HostChunk> {
        keys.chunks(5000)
            .map(|part| {
                let k = part.len();
                let mut keys_t = vec![0f32; (D + 1) * k];
                for (j, key) in part.iter().enumerate() {
                    for t in 0..D {
                        keys_t[t * k + j] = key[t];
                        keys_t[D * k + j] += key[t] * key[t];
                    }
                }
                let values_t = part.iter().map(|key| key[D / 2]).collect();
                HostChunk { keys_t, values_t, len: k, first: Vec::new(), counted: false }
            })
            .collect()
    }

    /// Queries near keys: a·k + σ·noise.
    fn queries(keys: &[[f32; D]], a: f64, s: f64, n: usize) -> Vec<f32> {
        (0..n)
            .flat_map(|i| {
                let k = keys[(i * 7919) % keys.len()];
                (0..D).map(move |t| (a * k[t] as f64 + s * val(5_000_000 + (i * D + t) as u64) * 3.4) as f32)
            })
            .collect()
    }

    /// The exact softmax over every key in float64: (x̂₀, entropy, distances).
    fn exact(keys: &[[f32; D]], q: &[f32], a: f64, s2: f64) -> (f64, f64, Vec<f64>) {
        let dist: Vec<f64> =
            keys.iter().map(|k| (0..D).map(|t| (q[t] as f64 - a * k[t] as f64).powi(2)).sum()).collect();
        let dmin = dist.iter().copied().fold(f64::INFINITY, f64::min);
        let w: Vec<f64> = dist.iter().map(|d| (-(d - dmin) / (2.0 * s2)).exp()).collect();
        let z: f64 = w.iter().sum();
        let mean = w.iter().zip(keys).map(|(w, k)| w * k[D / 2] as f64).sum::<f64>() / z;
        let h = -w.iter().map(|&w| w / z).filter(|&p| p > 0.0).map(|p| p * p.ln()).sum::<f64>();
        (mean, h, dist)
    }

    /// Scaled queries as the dense sweep takes them ([Q, Da]).
    fn scaled(raw: &[f32], a: f64, s2: f64, counted: bool) -> Vec<f32> {
        raw.chunks(D)
            .flat_map(|q| {
                let mut row: Vec<f32> = q.iter().map(|&v| (v as f64 * a / s2) as f32).collect();
                row.push((-a * a / (2.0 * s2)) as f32);
                if counted {
                    row.push(1.0);
                }
                row
            })
            .collect()
    }

    /// Every tile a query's bound rules out holds only keys at least that far, and all of them
    /// together weigh under 2⁻²⁴ of the softmax, measured in float64 over the whole bank.
    /// And the bound rules most of the bank out at small σ, so the check has work to see.
    #[test]
    fn skipped_tiles_hold_under_the_bound() {
        let keys = keys();
        let (sorted, index) = order(&chunks_of(&keys), D, None).unwrap().expect("sorted");
        assert_eq!(sorted.iter().map(|c| c.len).sum::<usize>(), keys.len());
        let mut checked_tiles = 0;
        for ab in [0.999, 0.99, 0.9] {
            let (a, s2) = (f64::sqrt(ab), 1.0 - ab);
            let raw = queries(&keys, a, s2.sqrt(), 12);
            let margin = 2.0 * s2 * index.margin();
            let (mut skipped_tiles, mut tiles) = (0, 0);
            for q in raw.chunks(D) {
                let (_, _, dist) = exact(&keys, q, a, s2);
                let dmin = dist.iter().copied().fold(f64::INFINITY, f64::min);
                let mut bounds = Vec::new();
                let y = index.project(q, a);
                let thr = index.query_bounds(q, &y, a, &sorted, margin, &mut bounds);
                assert!(thr >= dmin + margin, "the threshold sits on a real key's distance");
                let groups = index.tiles.div_ceil(GROUP);
                let mut coarse = vec![0f32; groups];
                box_bounds(&index.glo, &index.ghi, groups, 0..groups, &y, a, &mut coarse);
                let (mut skipped, mut total) = (0f64, 0f64);
                for t in 0..index.tiles {
                    let (ci, k0, n) = index.tile(t);
                    // The tile's own bound, whether or not its group's already ruled it out
                    // (+∞ in `bounds`): each key is at least that far, and the group's bound
                    // is no more than it.
                    let mut fine = [0f32];
                    box_bounds(&index.lo, &index.hi, index.tiles, t..t + 1, &y, a, &mut fine);
                    assert!(coarse[t / GROUP] <= fine[0], "tile {t}: its group's bound is above its own");
                    if bounds[t].is_infinite() {
                        assert!(coarse[t / GROUP] as f64 > thr, "tile {t} dropped by a group within the margin");
                    } else {
                        assert_eq!(bounds[t], fine[0]);
                    }
                    for col in k0..k0 + n {
                        let d = dist[sorted[ci].first[col] as usize];
                        let w = (-(d - dmin) / (2.0 * s2)).exp();
                        total += w;
                        assert!(d >= fine[0] as f64, "tile {t}: a key at {d} under its bound {}", fine[0]);
                        if bounds[t] as f64 > thr {
                            skipped += w;
                        }
                    }
                    skipped_tiles += (bounds[t] as f64 > thr) as usize;
                    tiles += 1;
                }
                assert!(skipped <= total * 2f64.powi(-24), "ᾱ {ab}: skipped mass {skipped} of {total}");
            }
            checked_tiles += skipped_tiles;
            if ab > 0.98 {
                assert!(skipped_tiles * 2 > tiles, "ᾱ {ab}: only {skipped_tiles} of {tiles} tiles ruled out");
            }
        }
        assert!(checked_tiles > 0);
    }

    /// The sweep over a sorted bank gives the exact softmax of the whole bank: x̂₀, entropy
    /// and the winner (the nearest key, its first copy among exact ties), whole and merged.
    #[test]
    fn sweeps_give_the_whole_banks_softmax() {
        let keys = keys();
        let whole = chunks_of(&keys);
        let merged = merge_duplicates(&whole, D, 1).expect("a fifth of the keys are exact copies of 60");
        for (what, bank, counted) in [("whole", &whole, false), ("merged", &merged, true)] {
            let (sorted, index) = order(bank, D, None).unwrap().expect("sorted");
            assert_eq!(index.represented, keys.len(), "{what}: K counts every copy");
            for ab in [0.999, 0.97, 0.5] {
                let (a, s2) = (f64::sqrt(ab), 1.0 - ab);
                let raw = queries(&keys, a, s2.sqrt(), 40);
                let cv = 1 + counted as usize;
                let out = sweep(&index, &sorted, &scaled(&raw, a, s2, counted), &raw, a, s2, cv, true, None).unwrap();
                let q = raw.len() / D;
                assert_eq!((out.vals.len(), out.winners.len()), (q * cv, q));
                for (i, query) in raw.chunks(D).enumerate() {
                    let (mean, h, dist) = exact(&keys, query, a, s2);
                    let got = out.vals[i * cv] as f64;
                    assert!((got - mean).abs() < 2e-5, "{what} ᾱ {ab} query {i}: x̂₀ {got} vs {mean}");
                    // A merged bank's entropy is restored by E[ln count], as the kernel does.
                    let ent = out.entropy[i] as f64 + if counted { out.vals[i * cv + 1] as f64 } else { 0.0 };
                    assert!((ent - h).abs() < 2e-4 * h.max(1.0), "{what} ᾱ {ab} query {i}: H {ent} vs {h}");
                    let w = out.winners[i] as usize;
                    let dmin = dist.iter().copied().fold(f64::INFINITY, f64::min);
                    assert!(dist[w] - dmin <= 1e-5 * (1.0 + dmin), "{what} ᾱ {ab} query {i}: winner {w} not nearest");
                    assert!(!dist[..w].contains(&dist[w]), "{what} ᾱ {ab} query {i}: an exact copy precedes {w}");
                }
                if ab > 0.99 {
                    assert!(
                        out.folded * 4 < (q * index.keys) as u64,
                        "{what}: folded {} of {}",
                        out.folded,
                        q * index.keys
                    );
                }
            }
        }
    }

    /// A bank of fewer keys than a sort can pay for is left alone.
    #[test]
    fn small_banks_stay_unsorted() {
        let keys = keys();
        assert!(order(&chunks_of(&keys[..MIN_KEYS - 1]), D, None).unwrap().is_none());
        assert!(order(&chunks_of(&keys[..MIN_KEYS]), D, None).unwrap().is_some());
    }
}
