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
use rayon::prelude::*;
use std::collections::HashMap;

/// Merging pays for its extra key row and value channel only when it removes at least this
/// share of the keys (measured on MNIST: P = 3 removes 71%, P = 5 47%, P = 7 23%; merged,
/// P = 7 saved 3% a call and its first call cost 0.4 s more: BENCHMARKS.md).
pub const MIN_SAVING: f64 = 0.4;

/// The merged form of one group's dense chunks (every image's keys, in image order), or
/// `None` when too few keys repeat for it to pay. `d`: values per key; `c`: channels.
///
/// Every pass walks the [D, K] chunks a row at a time: a key's values lie a row (64 KB) apart,
/// and reading them key by key made the merge a tenth of a 20-step sample (BENCHMARKS.md).
pub fn merge_duplicates(chunks: &[HostChunk], d: usize, c: usize) -> Option<Vec<HostChunk>> {
    let total: usize = chunks.iter().map(|ch| ch.len).sum();
    if total == 0 {
        return None;
    }
    // Distinct keys by their bits, in order of first occurrence: a 64-bit hash of each key
    // (−0 read as +0: the same key, two bit patterns), its bits checked below. Hashes are
    // computed in parallel over chunks, first for the fifth of the keys that decides whether
    // the bank is merged at all; ids are given in order, on one thread.
    let hashes = |chunks: &[HostChunk]| -> Vec<Vec<u64>> {
        chunks
            .par_iter()
            .map(|ch| {
                let mut hash = vec![0xcbf2_9ce4_8422_2325u64; ch.len];
                // `max(1)`: an empty chunk has no rows to walk (and `chunks_exact(0)` panics).
                for row in ch.keys_t[..d * ch.len].chunks_exact(ch.len.max(1)) {
                    for (h, &v) in hash.iter_mut().zip(row) {
                        *h = (h.rotate_left(5) ^ (v + 0.0).to_bits() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                    }
                }
                hash
            })
            .collect()
    };
    let mut seen = 0;
    let decisive = chunks
        .iter()
        .position(|ch| {
            seen += ch.len;
            seen * 5 >= total
        })
        .map_or(chunks.len(), |i| i + 1);
    let mut index: HashMap<u64, u32, BuildPassThrough> = HashMap::with_capacity_and_hasher(total / 8, BuildPassThrough);
    let mut first: Vec<(usize, usize)> = Vec::new(); // (chunk, column) of each distinct key
    let mut global: Vec<u32> = Vec::new(); // its column over the whole bank
    let mut count: Vec<u32> = Vec::new();
    let mut ids: Vec<Vec<u32>> = Vec::with_capacity(chunks.len()); // each key's distinct key
    let mut col0 = 0usize; // keys seen so far: the next chunk's first column
    for (part, offset) in [(&chunks[..decisive], 0), (&chunks[decisive..], decisive)] {
        for (i, hash) in hashes(part).into_iter().enumerate() {
            let mut id = Vec::with_capacity(hash.len());
            for (j, &h) in hash.iter().enumerate() {
                let next = first.len() as u32;
                let u = *index.entry(h ^ (h >> 29)).or_insert(next);
                if u == next {
                    first.push((offset + i, j));
                    global.push((col0 + j) as u32);
                    count.push(0);
                }
                count[u as usize] += 1;
                id.push(u);
            }
            ids.push(id);
            col0 += hash.len();
        }
        // Large patches rarely repeat: once a fifth of the keys is seen, a bank that is still
        // almost all distinct is left as it is.
        if col0 < total && first.len() as f64 > (1.0 - MIN_SAVING) * col0 as f64 {
            return None;
        }
    }
    let unique = first.len();
    if (unique as f64) > (1.0 - MIN_SAVING) * total as f64 {
        return None;
    }
    // Each key's bits against its distinct key's, row by row, in parallel over chunks. Two
    // keys, one 64-bit hash: too rare to plan for; the bank is kept whole.
    let same = chunks.par_iter().zip(&ids).all(|(ch, id)| {
        (0..d).all(|t| {
            let row = &ch.keys_t[t * ch.len..(t + 1) * ch.len];
            row.iter().zip(id).all(|(&v, &u)| {
                let (fc, fj) = first[u as usize];
                (v + 0.0).to_bits() == (chunks[fc].keys_t[t * chunks[fc].len + fj] + 0.0).to_bits()
            })
        })
    });
    if !same {
        return None;
    }
    let (da, cv) = (d + 2, c + 1);
    let starts: Vec<usize> = (0..unique).step_by(HOST_CHUNK_KEYS).collect();
    let out = starts
        .par_iter()
        .map(|&start| {
            let end = (start + HOST_CHUNK_KEYS).min(unique);
            let k = end - start;
            let firsts = &first[start..end];
            let ln_n: Vec<f32> = count[start..end].iter().map(|&n| (n as f32).ln()).collect();
            // Row by row: first occurrences come in (chunk, column) order, so each row's
            // reads move forward through the source rows.
            let mut keys_t = vec![0f32; da * k]; // [D+2, K]: values, ‖k‖², ln n
            for (t, row) in keys_t.chunks_exact_mut(k).enumerate().take(d + 1) {
                for (o, &(fc, fj)) in row.iter_mut().zip(firsts) {
                    *o = chunks[fc].keys_t[t * chunks[fc].len + fj];
                }
            }
            keys_t[(d + 1) * k..].copy_from_slice(&ln_n);
            let mut values_t = vec![0f32; cv * k]; // [C+1, K]: values, ln n
            for (ch, row) in values_t.chunks_exact_mut(k).enumerate().take(c) {
                for (o, &(fc, fj)) in row.iter_mut().zip(firsts) {
                    *o = chunks[fc].values_t[ch * chunks[fc].len + fj];
                }
            }
            values_t[c * k..].copy_from_slice(&ln_n);
            HostChunk { keys_t, values_t, len: k, first: global[start..end].to_vec(), counted: true }
        })
        .collect();
    Some(out)
}

/// The merge's keys are already 64-bit hashes: the map uses them as they are instead of
/// hashing them again with SipHash.
#[derive(Default)]
struct BuildPassThrough;

#[derive(Default)]
struct PassThrough(u64);

impl std::hash::BuildHasher for BuildPassThrough {
    type Hasher = PassThrough;
    fn build_hasher(&self) -> PassThrough {
        PassThrough(0)
    }
}

impl std::hash::Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | b as u64;
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
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

    /// −0 and +0 are one key, wherever their copies fall among the chunks, and each merged
    /// column counts every copy.
    #[test]
    fn signed_zeros_merge_across_chunks_with_their_counts() {
        let mut keys: Vec<[f32; 2]> = Vec::new();
        for i in 0..200 {
            keys.push([[0.0, -0.0][i % 2], [-0.0, 0.0][i / 2 % 2]]);
            if i % 10 == 0 {
                keys.push([1.0 + i as f32, 2.0]);
            }
        }
        let mut chunks = dense(&keys, 23);
        // An empty chunk among them (no keys to add) changes nothing.
        chunks.insert(
            3,
            HostChunk { keys_t: Vec::new(), values_t: Vec::new(), len: 0, first: Vec::new(), counted: false },
        );
        let merged = merge_duplicates(&chunks, 2, 1).expect("most keys repeat");
        let kept: usize = merged.iter().map(|c| c.len).sum();
        assert_eq!(kept, 1 + 20);
        // ln n rides in the last key row: 200 zeros, then 20 distinct keys seen once.
        let ln_n: Vec<f32> = merged.iter().flat_map(|c| c.keys_t[3 * c.len..].to_vec()).collect();
        assert_eq!(ln_n.len(), 21);
        assert!((ln_n[0] - 200f32.ln()).abs() < 1e-6, "{}", ln_n[0]);
        assert!(ln_n[1..].iter().all(|&l| l == 0.0));
        assert_eq!(first_occurrence(&merged, 0), 0);
        assert_eq!(first_occurrence(&merged, 1), 1, "the first distinct key follows the first zero");
    }

    #[test]
    fn distinct_keys_are_left_dense() {
        let keys: Vec<[f32; 2]> = (0..100).map(|i| [i as f32, 1.0]).collect();
        assert!(merge_duplicates(&dense(&keys, 40), 2, 1).is_none());
    }
}
