//! The ELS softmax-accumulate fused into one pass on the CPU.
//!
//! burn's CPU ops run the streaming softmax as separate passes (matmul, max, subtract, exp,
//! sum, weighted sum), each over the whole logit chunk, with a scalar `expf`; profiling showed
//! a third of a call in `expf` and most of the rest moving logits through memory. Here each
//! thread takes a block of queries and walks the keys tile by tile: a small gemm writes a
//! [queries × 512] score tile that stays in L1/L2, and one vectorised sweep per row does the
//! max, a polynomial exp, the sum and the value dot products. The math is the same as
//! [`super::super::softmax::OnlineSoftmax`]; the golden fixtures and a test against the burn path
//! pin it.

use rayon::prelude::*;

use super::simd;

/// Keys per score tile for keys of `da` values: at most 512 (64 queries × 512 keys × 4 bytes
/// = a 128 KB score tile), fewer for long keys so the tile of keys stays under ~192 KB and
/// is still in L2 when the next query block reads it.
fn tile_keys(da: usize) -> usize {
    ((192 * 1024 / 4) / da.max(1)).clamp(64, 512) & !7
}
/// Queries per parallel work item.
const QUERY_BLOCK: usize = 64;

/// Keys and values of one chunk, laid out for the kernel.
pub struct HostChunk {
    /// [Da, K]: patches (centred) with their squared norm as the last row, transposed so the
    /// gemm packs key panels with contiguous reads (a [K, Da] layout made packing a strided
    /// gather that cost as much as the multiply).
    pub keys_t: Vec<f32>,
    /// [C, K]: values channel-major, so each channel's dot product is contiguous.
    pub values_t: Vec<f32>,
    pub len: usize,
    /// Empty for a chunk of every key in bank order. Otherwise each column's place in that
    /// order (image·positions + position): its first occurrence when duplicates are merged
    /// ([`super::merge`]), its own when the bank is reordered for skipping ([`super::skip`]).
    pub first: Vec<u32>,
    /// Merged duplicates: the chunk carries one more key row and one more value row, ln(count).
    pub counted: bool,
}

/// Running softmax state of Q query rows over C value channels.
///
/// Everything is kept relative to the running max m: s = Σ e^(l−m), u = Σ e^(l−m)·(l−m),
/// acc = Σ e^(l−m)·v, so H = ln s − u/s. At small t the logits reach 1e3–1e5 and the
/// textbook H = m + ln s − Σp·l/s cancels to nonsense in f32; the relative form has no large
/// terms, and the per-row sums are f64 (each tile's partial sums are f32, then folded in).
pub struct RowState {
    q: usize,
    c: usize,
    m: Vec<f32>,
    /// Column (over all chunks so far) of each row's largest key logit: its winning key.
    arg: Vec<u64>,
    /// That key logit. It is m itself, except over merged keys ([`super::merge`]), whose
    /// logits carry ln(count) and whose winner is judged without it.
    best: Vec<f32>,
    /// Columns folded in so far.
    seen: u64,
    s: Vec<f64>,
    u: Vec<f64>,
    acc: Vec<f64>,
    want_entropy: bool,
    /// One partial state per thread for [`Self::update`], kept across chunks (a fresh one per
    /// chunk paid a max pass and a winner search per row each time) and merged by `settle`.
    parts: Vec<RowState>,
}

impl RowState {
    pub fn new(q: usize, c: usize, want_entropy: bool) -> Self {
        Self {
            q,
            c,
            m: vec![f32::NEG_INFINITY; q],
            arg: vec![0; q],
            best: vec![f32::NEG_INFINITY; q],
            seen: 0,
            s: vec![0.0; q],
            u: vec![0.0; q],
            acc: vec![0.0; q * c],
            want_entropy,
            parts: Vec::new(),
        }
    }

    /// Folds one chunk in. `queries` is [Q, Da] (already scaled, with the −a/2 column).
    ///
    /// The chunk's keys are split into one contiguous run of tiles per thread, and each
    /// thread folds all query rows over its run into its own partial state, merged when the
    /// result is read. Splitting over keys rather than queries keeps both cores busy on groups of
    /// fewer than two query blocks (every edge group, and 196 queries = 3 + 1 blocks at
    /// P = 15), and each key tile is read from memory once per thread and then served from
    /// cache to every query block, instead of streamed from DRAM once per query block.
    pub fn update(&mut self, queries: &[f32], da: usize, chunk: &HostChunk) {
        let (q, c, k, want_entropy) = (self.q, self.c, chunk.len, self.want_entropy);
        let tile = tile_keys(da);
        let (seen, tiles, parts) = self.begin_sweep(k, tile);
        self.parts[..parts].par_iter_mut().enumerate().for_each(|(part, st)| {
            let (t0, t1) = (part * tiles / parts, (part + 1) * tiles / parts);
            let mut scores = vec![0f32; QUERY_BLOCK.min(q) * tile];
            for k0 in (t0 * tile..(t1 * tile).min(k)).step_by(tile) {
                let tk = tile.min(k - k0);
                for (b, qb) in queries[..q * da].chunks(QUERY_BLOCK * da).enumerate() {
                    let rows = qb.len() / da;
                    // scores[i, j] = q_i · key_{k0+j}
                    // SAFETY: the pointers cover rows×da, tk×da and rows×tk elements with
                    // the strides given; dst does not alias the inputs.
                    unsafe {
                        gemm::gemm(
                            rows,
                            tk,
                            da,
                            scores.as_mut_ptr(),
                            1,
                            tk as isize,
                            false,
                            qb.as_ptr(),
                            1,
                            da as isize,
                            chunk.keys_t.as_ptr().add(k0),
                            1,
                            k as isize,
                            0.0,
                            1.0,
                            false,
                            false,
                            false,
                            gemm::Parallelism::None,
                        );
                    }
                    let vals = |ch: usize| &chunk.values_t[ch * k + k0..ch * k + k0 + tk];
                    // A merged chunk's last key row is ln(count).
                    let ln_count = chunk.counted.then(|| &chunk.keys_t[(da - 1) * k + k0..(da - 1) * k + k0 + tk]);
                    for i in 0..rows {
                        let r = b * QUERY_BLOCK + i;
                        let row = &mut scores[i * tk..(i + 1) * tk];
                        let best = (&mut st.m[r], &mut st.arg[r], &mut st.best[r], seen + k0 as u64);
                        let acc = &mut st.acc[r * c..(r + 1) * c];
                        fold_row(row, best, ln_count, &mut st.s[r], &mut st.u[r], acc, vals, want_entropy);
                    }
                }
            }
        });
    }

    /// Folds in `k` columns whose logits the caller writes, `tile` columns at a time, for
    /// keys never cut into a bank ([`super::strips`]): `fill(scratch, k0, scores, vals)`
    /// writes scores [Q, tk] and values [C, tk] of columns k0..k0 + tk (tk = `tile`, the last
    /// tile shorter). Threads take contiguous runs of tiles, each with its own `scratch()`,
    /// as in [`Self::update`]. A thread stops at the first tile `stop()` asks it to (the
    /// state is then half-folded, for the caller to discard): a tile is one image's keys, a
    /// few milliseconds, where a chunk of ~20 images at P = 15 took 74 ms on a loaded machine.
    pub fn update_from<S>(
        &mut self,
        k: usize,
        tile: usize,
        scratch: impl Fn() -> S + Sync,
        fill: impl Fn(&mut S, usize, &mut [f32], &mut [f32]) + Sync,
        stop: impl Fn() -> bool + Sync,
    ) {
        let (q, c, want_entropy) = (self.q, self.c, self.want_entropy);
        let tile = tile.max(1);
        let (seen, tiles, parts) = self.begin_sweep(k, tile);
        self.parts[..parts].par_iter_mut().enumerate().for_each(|(part, st)| {
            let (t0, t1) = (part * tiles / parts, (part + 1) * tiles / parts);
            let mut scores = vec![0f32; q * tile];
            let mut values = vec![0f32; c * tile];
            let mut own = scratch();
            for k0 in (t0 * tile..(t1 * tile).min(k)).step_by(tile) {
                if stop() {
                    return;
                }
                let tk = tile.min(k - k0);
                fill(&mut own, k0, &mut scores[..q * tk], &mut values[..c * tk]);
                let vals = |ch: usize| &values[ch * tk..(ch + 1) * tk];
                for r in 0..q {
                    let row = &mut scores[r * tk..(r + 1) * tk];
                    let best = (&mut st.m[r], &mut st.arg[r], &mut st.best[r], seen + k0 as u64);
                    let acc = &mut st.acc[r * c..(r + 1) * c];
                    fold_row(row, best, None, &mut st.s[r], &mut st.u[r], acc, vals, want_entropy);
                }
            }
        });
    }

    /// Counts `k` more columns in and readies a partial state per thread for a sweep of them
    /// in tiles of `tile`: (the first column's number, the tiles, the threads taking them).
    fn begin_sweep(&mut self, k: usize, tile: usize) -> (u64, usize, usize) {
        let seen = self.seen;
        self.seen += k as u64;
        let tiles = k.div_ceil(tile);
        let parts = rayon::current_num_threads().min(tiles).max(1);
        while self.parts.len() < parts {
            self.parts.push(RowState::new(self.q, self.c, self.want_entropy));
        }
        (seen, tiles, parts)
    }

    /// Merges the per-thread partial states into this one.
    fn settle(&mut self) {
        for part in std::mem::take(&mut self.parts) {
            self.merge(part);
        }
    }

    /// Folds in one row's logits for columns `col0..col0 + logits.len()`, computed by the
    /// caller (the small groups of [`super::direct`]); `vals(ch)` are the values of those
    /// columns. Columns must come in increasing order across calls, as in [`Self::update`].
    pub fn fold_logits<'v>(&mut self, i: usize, logits: &mut [f32], col0: u64, vals: impl Fn(usize) -> &'v [f32]) {
        let c = self.c;
        let best = (&mut self.m[i], &mut self.arg[i], &mut self.best[i], col0);
        fold_row(
            logits,
            best,
            None,
            &mut self.s[i],
            &mut self.u[i],
            &mut self.acc[i * c..(i + 1) * c],
            vals,
            self.want_entropy,
        );
    }

    /// Folds in one row's tile of logits in any column order ([`super::skip`] visits tiles
    /// of 64 keys), and returns the tile's largest logit. The winner is left to the caller,
    /// which orders ties by the keys' places in the full bank. The fixed channel counts run
    /// without the per-row allocation and winner search of [`fold_row`], a third of a
    /// 64-key tile's cost there.
    pub(crate) fn fold_tile<'v>(&mut self, i: usize, logits: &[f32], vals: impl Fn(usize) -> &'v [f32]) -> f32 {
        match (self.c, self.want_entropy) {
            (1, true) => self.fold_fixed::<1, true>(i, logits, [vals(0)]),
            (1, false) => self.fold_fixed::<1, false>(i, logits, [vals(0)]),
            (2, true) => self.fold_fixed::<2, true>(i, logits, [vals(0), vals(1)]),
            (2, false) => self.fold_fixed::<2, false>(i, logits, [vals(0), vals(1)]),
            (3, true) => self.fold_fixed::<3, true>(i, logits, [vals(0), vals(1), vals(2)]),
            (3, false) => self.fold_fixed::<3, false>(i, logits, [vals(0), vals(1), vals(2)]),
            (4, true) => self.fold_fixed::<4, true>(i, logits, [vals(0), vals(1), vals(2), vals(3)]),
            (4, false) => self.fold_fixed::<4, false>(i, logits, [vals(0), vals(1), vals(2), vals(3)]),
            _ => {
                // The generic fold exponentiates in place; the caller still reads the logits.
                let top = simd::max(logits);
                let c = self.c;
                let (mut arg, mut best) = (0u64, f32::NEG_INFINITY);
                fold_row(
                    &mut logits.to_vec(),
                    (&mut self.m[i], &mut arg, &mut best, 0),
                    None,
                    &mut self.s[i],
                    &mut self.u[i],
                    &mut self.acc[i * c..(i + 1) * c],
                    vals,
                    self.want_entropy,
                );
                top
            }
        }
    }

    /// [`Self::fold_tile`] for C channels: [`fold_row`]'s fused branch on fixed-size sums.
    fn fold_fixed<const C: usize, const U: bool>(&mut self, i: usize, row: &[f32], vals: [&[f32]; C]) -> f32 {
        if !self.m[i].is_finite() {
            self.m[i] = simd::max(row);
        }
        let m_old = self.m[i];
        let mut folded = simd::fold::<C, U>(row, m_old, vals);
        let top = folded.max;
        let acc = &mut self.acc[i * C..(i + 1) * C];
        let rose = top > m_old;
        if rose {
            self.m[i] = top;
            if top - m_old > RESCALE_LIMIT {
                rebase(&mut self.s[i], &mut self.u[i], acc, (m_old - top) as f64);
                folded = simd::fold::<C, U>(row, top, vals);
            }
        }
        self.s[i] += folded.sum as f64;
        if U {
            self.u[i] += folded.pl as f64;
        }
        for (a, d) in acc.iter_mut().zip(&folded.acc) {
            *a += *d as f64;
        }
        if rose && top - m_old <= RESCALE_LIMIT {
            rebase(&mut self.s[i], &mut self.u[i], acc, (m_old - top) as f64);
        }
        top
    }

    /// Folds in another state over the same rows (other columns): both move to the larger
    /// max; a tie goes to the smaller column, as one pass over the columns in order would
    /// give it (exact ties are common: background patches are identical).
    fn merge(&mut self, other: RowState) {
        let c = self.c;
        for i in 0..self.q {
            let (mo, ms) = (other.m[i], self.m[i]);
            if !mo.is_finite() {
                continue;
            }
            let acc_o = &other.acc[i * c..(i + 1) * c];
            if !ms.is_finite() {
                (self.m[i], self.arg[i], self.s[i], self.u[i]) = (mo, other.arg[i], other.s[i], other.u[i]);
                self.best[i] = other.best[i];
                self.acc[i * c..(i + 1) * c].copy_from_slice(acc_o);
                continue;
            }
            let m = ms.max(mo);
            let (mut s_o, mut u_o, mut acc_o) = (other.s[i], other.u[i], acc_o.to_vec());
            rebase(&mut s_o, &mut u_o, &mut acc_o, (mo - m) as f64);
            let acc = &mut self.acc[i * c..(i + 1) * c];
            rebase(&mut self.s[i], &mut self.u[i], acc, (ms - m) as f64);
            self.s[i] += s_o;
            self.u[i] += u_o;
            acc.iter_mut().zip(&acc_o).for_each(|(a, b)| *a += b);
            let (bo, bs) = (other.best[i], self.best[i]);
            if bo > bs || (bo == bs && other.arg[i] < self.arg[i]) {
                (self.arg[i], self.best[i]) = (other.arg[i], bo);
            }
            self.m[i] = m;
        }
    }

    /// The raw running state (m, s, u, acc) of every row, for callers that merge partial
    /// states themselves ([`super::super::op`]), and each row's winning column. A row that saw
    /// no key has m = −∞ and s = 0.
    #[allow(clippy::type_complexity)]
    /// (m, s, u, acc, winner, the winner's logit); with merged keys that logit is less its
    /// ln(count), so it can differ from m.
    #[allow(clippy::type_complexity)]
    pub fn into_parts(mut self) -> (Vec<f32>, Vec<f64>, Vec<f64>, Vec<f64>, Vec<u64>, Vec<f32>) {
        self.settle();
        (self.m, self.s, self.u, self.acc, self.arg, self.best)
    }

    /// Each row's winning column: the key with its largest weight, counted over all chunks in
    /// the order they were folded in.
    pub fn argmax(&mut self) -> &[u64] {
        self.settle();
        &self.arg
    }

    /// Σ softmax·v per row ([Q, C]) and the entropy of each row's weights.
    pub fn finish(mut self) -> (Vec<f32>, Vec<f32>) {
        self.settle();
        let mut out = vec![0f32; self.q * self.c];
        let mut entropy = vec![0f32; self.q];
        for i in 0..self.q {
            let inv = 1.0 / self.s[i];
            for (o, a) in out[i * self.c..(i + 1) * self.c].iter_mut().zip(&self.acc[i * self.c..(i + 1) * self.c]) {
                *o = (a * inv) as f32;
            }
            if self.want_entropy {
                // u ≤ 0, so H ≥ 0 up to rounding; clamp the rounding.
                entropy[i] = (self.s[i].ln() - self.u[i] * inv).max(0.0) as f32;
            }
        }
        (out, entropy)
    }
}

/// Moves a row's running sums from max m to a larger max m', given shift = m − m' ≤ 0:
/// e^(l−m') = c·e^(l−m) with c = e^shift, and (l − m') = (l − m) + shift, so
/// s' = c·s, acc' = c·acc and u' = c·(u + shift·s).
pub(crate) fn rebase(s: &mut f64, u: &mut f64, acc: &mut [f64], shift: f64) {
    let correction = shift.exp();
    *u = correction * (*u + shift * *s);
    *s *= correction;
    acc.iter_mut().for_each(|a| *a *= correction);
}

/// How far a tile's max may rise above the running max it was folded against before the
/// tile is folded again: e^64 × a tile of 512 keys stays far from f32 overflow.
const RESCALE_LIMIT: f32 = 64.0;

/// One row of one tile, in one fused pass against the row's running max m (which also finds
/// the tile's max): exponentiate relative to m, accumulate the sum, the values and (for the
/// entropy) Σ p·(l − m); if the tile rose above m, move everything to the new max afterwards
/// (or, past [`RESCALE_LIMIT`], fold the tile again against it). A separate max pass before
/// the exp cost a tenth of a call at P = 3. The row keeps its logits, for the winner search.
#[inline]
#[allow(clippy::too_many_arguments)]
fn fold_row<'v>(
    row: &mut [f32],
    (m, arg, best, col0): (&mut f32, &mut u64, &mut f32, u64),
    ln_count: Option<&[f32]>,
    s: &mut f64,
    u: &mut f64,
    acc: &mut [f64],
    vals: impl Fn(usize) -> &'v [f32],
    want_entropy: bool,
) {
    let c = acc.len();
    // Merged keys: the winner is the largest logit less ln(count), found before the fold
    // (which may overwrite the row); m below only keeps the sums stable.
    let track = ln_count.is_none();
    if let Some(ln_count) = ln_count {
        // Two vector passes (a difference, its max); the position only on a new best.
        let mut x = [0f32; 512];
        let x = &mut x[..row.len()];
        x.iter_mut().zip(row.iter().zip(ln_count)).for_each(|(x, (&y, &l))| *x = y - l);
        let top = simd::max(x);
        if top > *best {
            (*best, *arg) = (top, col0 + simd::position(x, top) as u64);
        }
    }
    if !(1..=4).contains(&c) {
        // Channel counts without a fused sweep: the max first, then the row exponentiated
        // in place and one dot per channel.
        let m_new = m.max(simd::max(row));
        if m_new > *m {
            if track {
                (*arg, *best) = (col0 + simd::position(row, m_new) as u64, m_new);
            }
            if m.is_finite() {
                rebase(s, u, acc, (*m - m_new) as f64);
            }
            *m = m_new;
        }
        let (sum, pl) = simd::exp_shift_sum_with_logit(row, m_new);
        *s += sum as f64;
        if want_entropy {
            *u += pl as f64;
        }
        for (ch, a) in acc.iter_mut().enumerate() {
            *a += simd::dot(row, vals(ch)) as f64;
        }
        return;
    }
    if !m.is_finite() {
        // The row's first tile: nothing to fold against yet.
        *m = simd::max(row);
        if track {
            (*arg, *best) = (col0 + simd::position(row, *m) as u64, *m);
        }
    }
    // 1 and 3 channels (gray, RGB); 2 and 4 when a merged bank adds ln(count) to them.
    let fold = |m: f32| match (c, want_entropy) {
        (1, true) => simd::fold::<1, true>(row, m, [vals(0)]).widen(),
        (1, false) => simd::fold::<1, false>(row, m, [vals(0)]).widen(),
        (2, true) => simd::fold::<2, true>(row, m, [vals(0), vals(1)]).widen(),
        (2, false) => simd::fold::<2, false>(row, m, [vals(0), vals(1)]).widen(),
        (3, true) => simd::fold::<3, true>(row, m, [vals(0), vals(1), vals(2)]).widen(),
        (3, false) => simd::fold::<3, false>(row, m, [vals(0), vals(1), vals(2)]).widen(),
        (4, true) => simd::fold::<4, true>(row, m, [vals(0), vals(1), vals(2), vals(3)]).widen(),
        _ => simd::fold::<4, false>(row, m, [vals(0), vals(1), vals(2), vals(3)]).widen(),
    };
    let m_old = *m;
    let mut folded = fold(m_old);
    let rose = folded.max > m_old;
    if rose {
        // A new winner: rare after the first tiles, so the search costs nothing.
        if track {
            (*arg, *best) = (col0 + simd::position(row, folded.max) as u64, folded.max);
        }
        *m = folded.max;
        if folded.max - m_old > RESCALE_LIMIT {
            rebase(s, u, acc, (m_old - folded.max) as f64);
            folded = fold(folded.max);
        }
    }
    *s += folded.sum as f64;
    if want_entropy {
        *u += folded.pl as f64;
    }
    for (a, d) in acc.iter_mut().zip(&folded.acc) {
        *a += *d as f64;
    }
    if rose && *m - m_old <= RESCALE_LIMIT {
        rebase(s, u, acc, (m_old - *m) as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chunk of many tiles, folded by 1, 2 and 3 threads (so split over keys into 1–3
    /// partial states and merged): every split gives the f64 softmax, the same winner, and
    /// the same numbers within f32 rounding.
    #[test]
    fn key_splits_merge_to_the_exact_softmax() {
        // One, two and three channels: two goes through the two-pass fold.
        for c in [1usize, 2, 3] {
            key_splits_case(c);
        }
    }

    fn key_splits_case(c: usize) {
        let (q, da, k) = (70usize, 6usize, 1500usize);
        // A hash, not a short-period formula: keys must not repeat across the splits.
        let val = |i: usize| {
            let mut z = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 31)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            ((z >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        };
        let queries: Vec<f32> = (0..q * da).map(|i| val(i) * 3.0).collect();
        let keys_t: Vec<f32> = (0..da * k).map(|i| val(i + 77_777)).collect();
        let values_t: Vec<f32> = (0..c * k).map(|i| val(i + 5_555)).collect();
        let chunk =
            HostChunk { keys_t: keys_t.clone(), values_t: values_t.clone(), len: k, first: Vec::new(), counted: false };
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
            pool.install(|| {
                let mut state = RowState::new(q, c, true);
                state.update(&queries, da, &chunk);
                let arg = state.argmax().to_vec();
                let (out, ent) = state.finish();
                (out, ent, arg)
            })
        };
        let one = run(1);
        for threads in [2, 3] {
            let many = run(threads);
            assert_eq!(one.2, many.2, "winners with {threads} threads");
            for (a, b) in one.0.iter().zip(&many.0).chain(one.1.iter().zip(&many.1)) {
                assert!((a - b).abs() < 1e-5, "{threads} threads: {a} vs {b}");
            }
        }
        for i in 0..q {
            let logits: Vec<f64> =
                (0..k).map(|j| (0..da).map(|t| queries[i * da + t] as f64 * keys_t[t * k + j] as f64).sum()).collect();
            let m = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let w: Vec<f64> = logits.iter().map(|l| (l - m).exp()).collect();
            let z: f64 = w.iter().sum();
            let best = logits.iter().position(|&l| l == m).expect("a max") as u64;
            assert_eq!(one.2[i], best, "row {i} winner");
            for ch in 0..c {
                let want = w.iter().zip(&values_t[ch * k..]).map(|(w, &v)| w * v as f64).sum::<f64>() / z;
                assert!((one.0[i * c + ch] as f64 - want).abs() < 1e-5, "row {i} ch {ch}");
            }
            let h = -w.iter().map(|&wi| (wi / z) * (wi / z).ln()).sum::<f64>();
            assert!((one.1[i] as f64 - h).abs() < 1e-4, "row {i} entropy {} vs {h}", one.1[i]);
        }
    }

    /// `update_from` asks `stop()` before every tile: once it says stop, each thread fills at
    /// most the tile it was already in, and left alone every tile is filled exactly once.
    #[test]
    fn a_stopped_sweep_fills_no_tile_after_the_stop() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        let (tiles, threads, stop_after) = (400usize, 2usize, 25usize);
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
        let sweep = |stop_at: usize| {
            let filled = AtomicUsize::new(0);
            let seen: Vec<AtomicUsize> = (0..tiles).map(|_| AtomicUsize::new(0)).collect();
            let mut state = RowState::new(1, 1, false);
            pool.install(|| {
                state.update_from(
                    tiles,
                    1,
                    || (),
                    |_, k0, scores, vals| {
                        seen[k0].fetch_add(1, SeqCst);
                        filled.fetch_add(1, SeqCst);
                        scores[0] = k0 as f32;
                        vals[0] = 1.0;
                    },
                    || filled.load(SeqCst) >= stop_at,
                )
            });
            let per_tile: Vec<usize> = seen.iter().map(|n| n.load(SeqCst)).collect();
            (filled.into_inner(), per_tile, state)
        };
        let (all, per_tile, mut state) = sweep(usize::MAX);
        assert_eq!(all, tiles, "every tile filled");
        assert!(per_tile.iter().all(|&n| n == 1), "each tile once");
        assert_eq!(state.argmax()[0], tiles as u64 - 1, "the largest logit won");
        let (stopped, _, _) = sweep(stop_after);
        assert!(
            (stop_after..=stop_after + threads).contains(&stopped),
            "{stopped} tiles filled after a stop at {stop_after} with {threads} threads"
        );
    }

    /// Later keys that rise above the running max by a lot (0 → 300, past `RESCALE_LIMIT`:
    /// the tile is folded again), then by a little (300 → 302: folded against the old max,
    /// then re-based), then keys far below it (skipped): the result is the exact softmax,
    /// its entropy and its winner.
    #[test]
    fn rising_and_falling_maxima_fold_exactly() {
        // da = 1 with the query [1]: each key's single value is its logit.
        let part = |base: f32, n: usize| (0..n).map(move |j| base - ((j * 37 % 101) as f32) * 0.05);
        let logits: Vec<f32> =
            part(0.0, 700).chain(part(300.0, 700)).chain(part(302.0, 700)).chain(part(-500.0, 700)).collect();
        let values: Vec<f32> = (0..logits.len()).map(|j| ((j * 13 % 7) as f32) - 3.0).collect();
        // One thread: one partial state walks every tile of 512 keys, so the rises happen
        // inside a row's fold, not between partial states.
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("pool");
        let mut state = RowState::new(1, 1, true);
        let chunk = HostChunk {
            keys_t: logits.clone(),
            values_t: values.clone(),
            len: logits.len(),
            first: Vec::new(),
            counted: false,
        };
        pool.install(|| state.update(&[1.0], 1, &chunk));
        let winner = state.argmax()[0];
        let (out, entropy) = state.finish();
        let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let w: Vec<f64> = logits.iter().map(|&l| (l as f64 - m).exp()).collect();
        let z: f64 = w.iter().sum();
        let mean = w.iter().zip(&values).map(|(w, &v)| w * v as f64).sum::<f64>() / z;
        let h = -w.iter().filter(|&&wi| wi > 0.0).map(|&wi| (wi / z) * (wi / z).ln()).sum::<f64>();
        assert_eq!(winner, logits.iter().position(|&l| l as f64 == m).expect("a max") as u64);
        assert!((out[0] as f64 - mean).abs() < 1e-5, "mean {} vs {mean}", out[0]);
        assert!((entropy[0] as f64 - h).abs() < 1e-4, "entropy {} vs {h}", entropy[0]);
    }

    /// Logits of 1e5 plus small offsets, as ELS meets them at very small t (the absolute
    /// level is ‖q‖²/2σ²): the entropy must come from the offsets alone. Accumulated as
    /// m + ln s − Σp·l/s in f32, the 1e5 terms cancel and leave errors of ~1e-2 nats.
    #[test]
    fn entropy_survives_huge_logits() {
        let offsets: Vec<f64> = (0..1500).map(|j| -((j % 37) as f64) * 0.173 - (j / 37) as f64 * 0.01).collect();
        let level = 1.0e5f64;
        // da = 1: the query is [1], so each key's single value is its logit.
        let keys_t: Vec<f32> = offsets.iter().map(|&o| (level + o) as f32).collect();
        let values_t: Vec<f32> = (0..offsets.len()).map(|j| (j % 5) as f32).collect();
        let len = offsets.len();
        // Two chunks, so the running max is re-based once.
        let (a, b) = (len / 3, len - len / 3);
        let chunk = |r: std::ops::Range<usize>| HostChunk {
            keys_t: keys_t[r.clone()].to_vec(),
            values_t: values_t[r.clone()].to_vec(),
            len: r.len(),
            first: Vec::new(),
            counted: false,
        };
        let mut state = RowState::new(1, 1, true);
        state.update(&[1.0], 1, &chunk(0..a));
        state.update(&[1.0], 1, &chunk(a..len));
        let (out, entropy) = state.finish();
        assert_eq!(b + a, len);
        // The reference from the f32 logits the kernel saw, in f64.
        let logits: Vec<f64> = keys_t.iter().map(|&k| k as f64).collect();
        let m = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let w: Vec<f64> = logits.iter().map(|l| (l - m).exp()).collect();
        let z: f64 = w.iter().sum();
        let h: f64 = -w.iter().map(|&wi| (wi / z) * (wi / z).ln()).sum::<f64>();
        let mean: f64 = w.iter().zip(&values_t).map(|(wi, &v)| wi * v as f64).sum::<f64>() / z;
        assert!((entropy[0] as f64 - h).abs() < 1e-4, "entropy {} vs {h}", entropy[0]);
        assert!((out[0] as f64 - mean).abs() < 1e-4, "mean {} vs {mean}", out[0]);
    }
}
