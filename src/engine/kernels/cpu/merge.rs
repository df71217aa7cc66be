//! Duplicate keys merged into one with a multiplicity.
//!
//! Many training patches are bit-for-bit the same: on MNIST 63% of the 3×3 patches are the
//! blank background. n copies of a key k weigh n·e^(logit) together, which is one key with
//! logit + ln n. So a group's bank keeps each distinct key once, its ln n as one more key
//! row (met by a query column of ones), and the softmax over the merged bank is the softmax
//! over every key, exactly.
//!
//! Two things need the full bank's view and are restored from the merged one:
//! - the entropy: with y = logit + ln n, the state's Σ e^(y−m)·(y−m) over merged keys exceeds
//!   the full sum by Σ e^(y−m)·ln n, so ln n also rides along as one more value channel and
//!   the entropy is corrected by its mean, H = H_merged + E[ln n];
//! - the winner: a merged column names its first occurrence (lowest image, then position),
//!   a real training patch, the same one every time.

use super::HOST_CHUNK_KEYS;
use super::fused::HostChunk;
use std::collections::HashMap;

/// Merging pays for its extra key row and value channel only when it removes at least this
/// share of the keys (measured on MNIST: P = 3 removes 71%, P = 5 47%, P = 7 23%; merged,
/// P = 7 saved 3% a call and its first call cost 0.4 s more: BENCHMARKS.md).
pub const MIN_SAVING: f64 = 0.4;

/// The merged form of one group's dense chunks (every image's keys, in image order), or
/// `None` when too few keys repeat for it to pay. `d`: values per key; `c`: channels.
pub fn merge_duplicates(chunks: &[HostChunk], d: usize, c: usize) -> Option<Vec<HostChunk>> {
    let total: usize = chunks.iter().map(|ch| ch.len).sum();
    if total == 0 {
        return None;
    }
    // Distinct keys by their bits, in order of first occurrence: a 64-bit hash of each key
    // (−0 read as +0: the same key, two bit patterns), and on equal hashes a comparison.
    let bits = |ch: &HostChunk, j: usize, t: usize| (ch.keys_t[t * ch.len + j] + 0.0).to_bits();
    let hash = |ch: &HostChunk, j: usize| {
        (0..d).fold(0xcbf2_9ce4_8422_2325u64, |h, t| {
            (h.rotate_left(5) ^ bits(ch, j, t) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        })
    };
    let mut index: HashMap<u64, u32> = HashMap::new();
    let mut first: Vec<(usize, usize)> = Vec::new(); // (chunk, column) of each distinct key
    let mut global: Vec<u32> = Vec::new(); // its column over the whole bank
    let mut count: Vec<u32> = Vec::new();
    let mut col0 = 0usize; // keys seen so far: the next chunk's first column
    for (ci, ch) in chunks.iter().enumerate() {
        for j in 0..ch.len {
            match index.entry(hash(ch, j)) {
                std::collections::hash_map::Entry::Occupied(e) => {
                    let u = *e.get() as usize;
                    let (fc, fj) = first[u];
                    if !(0..d).all(|t| bits(&chunks[fc], fj, t) == bits(ch, j, t)) {
                        // Two keys, one 64-bit hash: too rare to plan for; keep the bank whole.
                        return None;
                    }
                    count[u] += 1;
                }
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(first.len() as u32);
                    first.push((ci, j));
                    global.push((col0 + j) as u32);
                    count.push(1);
                }
            }
        }
        col0 += ch.len;
        // Large patches rarely repeat: once a fifth of the keys is seen, a bank that is still
        // almost all distinct is left as it is.
        if col0 * 5 >= total && col0 < total && first.len() as f64 > (1.0 - MIN_SAVING) * col0 as f64 {
            return None;
        }
    }
    let unique = first.len();
    if (unique as f64) > (1.0 - MIN_SAVING) * total as f64 {
        return None;
    }
    let (da, cv) = (d + 2, c + 1);
    let mut out = Vec::new();
    for start in (0..unique).step_by(HOST_CHUNK_KEYS) {
        let end = (start + HOST_CHUNK_KEYS).min(unique);
        let k = end - start;
        let mut keys_t = vec![0f32; da * k]; // [D+2, K]: values, ‖k‖², ln n
        let mut values_t = vec![0f32; cv * k]; // [C+1, K]: values, ln n
        for (j, u) in (start..end).enumerate() {
            let (ci, col) = first[u];
            let src = &chunks[ci];
            for t in 0..=d {
                keys_t[t * k + j] = src.keys_t[t * src.len + col];
            }
            let ln_n = (count[u] as f32).ln();
            keys_t[(d + 1) * k + j] = ln_n;
            for ch in 0..c {
                values_t[ch * k + j] = src.values_t[ch * src.len + col];
            }
            values_t[c * k + j] = ln_n;
        }
        out.push(HostChunk { keys_t, values_t, len: k, first: global[start..end].to_vec(), counted: true });
    }
    Some(out)
}

/// The first occurrence (column of the full bank) of merged column `col`, counted over
/// `chunks` in the order they were folded.
pub fn first_occurrence(chunks: &[HostChunk], mut col: usize) -> u32 {
    for ch in chunks {
        if col < ch.len {
            return ch.first[col];
        }
        col -= ch.len;
    }
    panic!("merged column {col} past the bank's end")
}

#[cfg(test)]
mod tests {
    use super::super::fused::RowState;
    use super::*;

    /// Keys of width 2 where most are one of three patterns, one key per column.
    fn dense(keys: &[[f32; 2]], split: usize) -> Vec<HostChunk> {
        keys.chunks(split)
            .map(|ks| {
                let k = ks.len();
                let mut keys_t = vec![0f32; 3 * k];
                let mut values_t = vec![0f32; k];
                for (j, key) in ks.iter().enumerate() {
                    keys_t[j] = key[0];
                    keys_t[k + j] = key[1];
                    keys_t[2 * k + j] = key[0] * key[0] + key[1] * key[1];
                    values_t[j] = key[0];
                }
                HostChunk { keys_t, values_t, len: k, first: Vec::new(), counted: false }
            })
            .collect()
    }

    #[test]
    fn the_merged_softmax_is_the_full_one_with_its_entropy_and_first_winner() {
        let patterns = [[0.0f32, 0.0], [0.5, -0.25], [-0.75, 0.5]];
        let mut keys: Vec<[f32; 2]> = (0..300).map(|i| patterns[(i * 7 + i / 13) % 3]).collect();
        keys.extend((0..20).map(|i| [i as f32 * 0.01, -(i as f32) * 0.02]));
        let full = dense(&keys, 97);
        let merged = merge_duplicates(&full, 2, 1).expect("most keys repeat");
        let kept: usize = merged.iter().map(|c| c.len).sum();
        assert_eq!(kept, 3 + 19, "three patterns and 20 distinct keys ([0, 0] is also pattern 0)");
        // Every merged column names the first time its key appears.
        let firsts: Vec<u32> = (0..kept).map(|col| first_occurrence(&merged, col)).collect();
        for &f in &firsts {
            let key = keys[f as usize];
            assert_eq!(keys.iter().position(|k| *k == key), Some(f as usize));
        }
        for (scale, tail) in [(1.0f32, -0.5f32), (40.0, -20.0)] {
            let q = [0.3f32 * scale, -0.1 * scale, tail];
            let mut a = RowState::new(1, 1, true);
            for ch in &full {
                a.update(&q, 3, ch);
            }
            let win_full = a.argmax()[0];
            let (xa, ha) = a.finish();
            let qm = [q[0], q[1], q[2], 1.0];
            let mut b = RowState::new(1, 2, true);
            for ch in &merged {
                b.update(&qm, 4, ch);
            }
            let win = firsts[b.argmax()[0] as usize];
            let (xb, hb) = b.finish();
            assert!((xa[0] - xb[0]).abs() < 1e-5, "x̂₀ {} vs {}", xa[0], xb[0]);
            assert!((ha[0] - (hb[0] + xb[1])).abs() < 1e-4, "entropy {} vs {} + {}", ha[0], hb[0], xb[1]);
            assert_eq!(win as u64, win_full, "the winner is the first occurrence");
        }
    }

    #[test]
    fn distinct_keys_are_left_dense() {
        let keys: Vec<[f32; 2]> = (0..100).map(|i| [i as f32, 1.0]).collect();
        assert!(merge_duplicates(&dense(&keys, 40), 2, 1).is_none());
    }
}
