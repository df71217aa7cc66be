//! Duplicate keys merged for the fused op (the GPU path), by the CPU kernel's rule
//! ([`super::cpu::merge`]): n bit-equal keys weigh n·e^(logit) together, which is one key
//! whose logit gains ln n. The CPU kernel merges the key banks it cuts; the op cuts no bank,
//! so a pixel group's keys are read here once, from the centred images through the group's
//! index table, and its distinct keys go to the device as a bank of their own, each followed
//! by its ln n. On 300 MNIST digits the op then sweeps 3.2× fewer (query, key) pairs at
//! P = 3 and 1.8× fewer at P = 5 (`tests/els_op.rs`, BENCHMARKS.md).

use std::collections::HashMap;

use super::cpu::merge::MIN_SAVING;

/// The fewest keys (images × positions) a group needs before merging it is tried: a short
/// group costs little to sweep and its own launch would cost more.
pub const MIN_KEYS: usize = 4096;

/// One pixel group's distinct keys.
#[derive(Debug, PartialEq)]
pub struct MergedGroup {
    /// [K, D + 1]: each distinct key's D values, then ln(count).
    pub rows: Vec<f32>,
    /// Per distinct key, its first occurrence (lowest image, then key position): (training
    /// image, key position within the group). The provenance maps name this real patch.
    pub first: Vec<(u32, u32)>,
    /// Keys before merging (images × positions).
    pub total: usize,
}

impl MergedGroup {
    pub fn len(&self) -> usize {
        self.first.len()
    }
    pub fn is_empty(&self) -> bool {
        self.first.is_empty()
    }
}

/// The distinct keys of a group whose key positions are `key_idx` ([positions, D], flat
/// indices into an image of `centred`, rows of `row` floats, `n` images; index `row` is the
/// zero a window reads past the image's edge), or `None` when fewer than [`MIN_SAVING`] of
/// them repeat (or the group is under [`MIN_KEYS`]).
pub fn merge_group(centred: &[f32], row: usize, n: usize, key_idx: &[i64], d: usize) -> Option<MergedGroup> {
    let positions = key_idx.len() / d.max(1);
    let total = n * positions;
    if total < MIN_KEYS || d == 0 {
        return None;
    }
    // −0 and +0 are one key.
    let value = |img: usize, pos: usize, t: usize| {
        let i = key_idx[pos * d + t] as usize;
        if i < row { centred[img * row + i] + 0.0 } else { 0.0 }
    };
    let hash = |img: usize, pos: usize| {
        (0..d).fold(0xcbf2_9ce4_8422_2325u64, |h, t| {
            (h.rotate_left(5) ^ value(img, pos, t).to_bits() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        })
    };
    let mut index: HashMap<u64, u32> = HashMap::new();
    let mut first: Vec<(u32, u32)> = Vec::new();
    let mut count: Vec<u32> = Vec::new();
    for img in 0..n {
        for pos in 0..positions {
            match index.entry(hash(img, pos)) {
                std::collections::hash_map::Entry::Occupied(e) => {
                    let u = *e.get() as usize;
                    let (fi, fp) = (first[u].0 as usize, first[u].1 as usize);
                    if !(0..d).all(|t| value(fi, fp, t).to_bits() == value(img, pos, t).to_bits()) {
                        // Two keys, one 64-bit hash: too rare to plan for; leave the group whole.
                        return None;
                    }
                    count[u] += 1;
                }
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(first.len() as u32);
                    first.push((img as u32, pos as u32));
                    count.push(1);
                }
            }
        }
        // Large patches rarely repeat: once a fifth of the keys is seen, a group that is
        // still almost all distinct is left as it is.
        let seen = (img + 1) * positions;
        if seen * 5 >= total && seen < total && first.len() as f64 > (1.0 - MIN_SAVING) * seen as f64 {
            return None;
        }
    }
    if first.len() as f64 > (1.0 - MIN_SAVING) * total as f64 {
        return None;
    }
    let mut rows = Vec::with_capacity(first.len() * (d + 1));
    for (&(img, pos), &k) in first.iter().zip(&count) {
        rows.extend((0..d).map(|t| value(img as usize, pos as usize, t)));
        rows.push((k as f32).ln());
    }
    Some(MergedGroup { rows, first, total })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// "Images" of 130 values whose 2-wide keys at 64 positions repeat (every other key is
    /// blank), and a 65th position past the edge (index 130: zeros).
    fn images(n: usize) -> (Vec<f32>, Vec<i64>) {
        let row = 130;
        let mut centred = vec![0f32; n * row];
        for img in 0..n {
            for j in 0..130 {
                // Only odd positions carry ink, in 3 patterns (and −0 on some blanks).
                let pos = j / 2;
                centred[img * row + j] = if pos % 2 == 1 {
                    ((img + pos) % 3) as f32 * 0.5 - 0.5
                } else if img % 2 == 0 {
                    -0.0
                } else {
                    0.0
                };
            }
        }
        let mut key_idx: Vec<i64> = (0..64).flat_map(|p| [2 * p as i64, 2 * p as i64 + 1]).collect();
        key_idx.extend([130, 130]);
        (centred, key_idx)
    }

    #[test]
    fn distinct_keys_keep_their_first_place_and_count() {
        let (centred, key_idx) = images(80);
        let m = merge_group(&centred, 130, 80, &key_idx, 2).expect("most keys repeat");
        assert_eq!(m.total, 80 * 65);
        // The ink patterns are −0.5, 0 and 0.5 on both values; 0 is also the blank key (−0
        // and +0 alike), so three distinct keys.
        assert_eq!(m.len(), 3, "{:?}", m.first);
        assert_eq!(m.first[0], (0, 0), "the blank key first appears at image 0, position 0");
        let counts: Vec<f32> = m.rows.chunks_exact(3).map(|r| r[2].exp().round()).collect();
        assert_eq!(counts.iter().sum::<f32>() as usize, m.total, "every key counted once: {counts:?}");
        // Each distinct key's values are those of its first occurrence.
        for (r, &(img, pos)) in m.rows.chunks_exact(3).zip(&m.first) {
            let at = |i: usize, p: usize, t: usize| {
                let j = key_idx[p * 2 + t] as usize;
                if j < 130 { centred[i * 130 + j] + 0.0 } else { 0.0 }
            };
            for (t, &v) in r[..2].iter().enumerate() {
                assert_eq!(v, at(img as usize, pos as usize, t));
            }
            // And it is the first place that key occurs.
            let earlier = (0..img as usize * 65 + pos as usize).any(|f| (0..2).all(|t| at(f / 65, f % 65, t) == r[t]));
            assert!(!earlier, "{img}, {pos} is not the first occurrence");
        }
    }

    #[test]
    fn short_or_distinct_groups_are_left_whole() {
        let (centred, key_idx) = images(40);
        assert!(merge_group(&centred, 130, 40, &key_idx[..60], 2).is_none(), "under MIN_KEYS");
        let distinct: Vec<f32> = (0..80 * 130).map(|i| i as f32).collect();
        assert!(merge_group(&distinct, 130, 80, &key_idx[..128], 2).is_none(), "nothing repeats");
    }
}
