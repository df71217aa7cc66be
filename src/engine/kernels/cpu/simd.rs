//! Lane-parallel helpers written so LLVM vectorises them (8 independent accumulators, no
//! branches), compiled twice: for AVX2+FMA when the CPU has it, and for the baseline.

// Lanes, channels and query rows are indexed by number on purpose: each index is a
// register the loop keeps apart, and fixed-count loops unroll into them.
#![allow(clippy::needless_range_loop)]

const LANES: usize = 8;

/// Below this (logit − running max) a key adds nothing an f32 sum can hold (e^−88 ≈ 6e−39),
/// so eight such keys together skip the exp. At small t that is most of a row. (The AVX2
/// loop's test; the portable loop has no cheap eight-lane test to use it.)
#[cfg(target_arch = "x86_64")]
const SKIP_BELOW: f32 = -88.0;

/// a·b + c: one fused instruction where the CPU has FMA (the AVX2 build), a multiply
/// and an add otherwise (a software `fmaf` would be far slower than both).
#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

/// 1.5·2²³: adding it rounds a float to an integer held in the low mantissa bits.
const MAGIC: f32 = 12_582_912.0;
/// log2(e) as a float and the part of it the float misses, so x·log2(e) keeps its
/// accuracy for |x| up to 87.
const LOG2E_HI: f32 = std::f32::consts::LOG2_E;
const LOG2E_LO: f32 = 1.925_963e-8;
/// 2^f on [−½, ½], degree 5, fitted for relative error (9e-8 in exact arithmetic) with
/// the constant term held at 1, so e^0 is exactly 1: a softmax's largest weight must be
/// 1, or a single key's entropy comes out ln(1 + ε) instead of 0. (The linear term is a
/// fitted value 3 ulp from ln 2, not ln 2 misspelt.)
#[allow(clippy::approx_constant)]
const EXP2_POLY: [f32; 6] = [1.0, 0.693_147, 0.240_222_42, 0.055_507_336, 0.009_671_513, 0.001_326_472_7];

/// e^x for −87 ≤ x ≤ 88 (clamped below), to ~2e-7 with FMA: e^x = 2ⁿ·2^f with n =
/// round(x·log2 e) and a degree-5 polynomial for 2^f, the power of two put straight into
/// the exponent bits. Branch-free so it vectorises, and a dependency chain of 10
/// operations (the Cephes form with a two-step ln 2 reduction took 16, which bounded the
/// softmax sweep).
#[inline(always)]
fn exp<const FMA: bool>(x: f32) -> f32 {
    let x = x.max(-87.0);
    let t = madd::<FMA>(x, LOG2E_HI, MAGIC);
    let n = t - MAGIC; // round(x·log2 e)
    let f = madd::<FMA>(x, LOG2E_LO, madd::<FMA>(x, LOG2E_HI, -n));
    let mut p = EXP2_POLY[5];
    for &c in EXP2_POLY[..5].iter().rev() {
        p = madd::<FMA>(p, f, c);
    }
    // 2ⁿ straight from t's bits (its low mantissa bits hold n), with integer ops that
    // vectorise: no float→int conversion and no overflow checks.
    let two_n = f32::from_bits(t.to_bits().wrapping_add(127u32.wrapping_sub(MAGIC.to_bits())) << 23);
    p * two_n
}

/// What one tile row adds to a running softmax: Σ p, Σ p·(l − m) and Σ p·v per channel,
/// with p = e^(l − m).
pub struct Folded<A> {
    pub sum: f32,
    pub pl: f32,
    pub acc: A,
    /// The row's largest logit.
    pub max: f32,
}

impl<const C: usize> Folded<[f32; C]> {
    pub fn widen(self) -> Folded<Vec<f32>> {
        Folded { sum: self.sum, pl: self.pl, acc: self.acc.to_vec(), max: self.max }
    }
}

/// The fused sweep: exp, sum, Σ p·(l − m) (when U) and C value dot products in one pass
/// over the row, which is only read. Replaces an exp pass that wrote p back and a dot
/// pass per channel that read it again.
#[inline(always)]
fn fold_impl<const C: usize, const U: bool>(row: &[f32], m: f32, vals: [&[f32]; C]) -> Folded<[f32; C]> {
    let n = row.len();
    let full = n - n % LANES;
    let mut sums = [0f32; LANES];
    let mut pls = [0f32; LANES];
    let mut accs = [[0f32; LANES]; C];
    let mut maxs = [f32::NEG_INFINITY; LANES];
    for j0 in (0..full).step_by(LANES) {
        let r = &row[j0..j0 + LANES];
        let v: [&[f32]; C] = std::array::from_fn(|ch| &vals[ch][j0..j0 + LANES]);
        for l in 0..LANES {
            maxs[l] = maxs[l].max(r[l]);
            let shifted = r[l] - m;
            let p = exp::<false>(shifted);
            sums[l] += p;
            if U {
                pls[l] = madd::<false>(p, shifted, pls[l]);
            }
            for ch in 0..C {
                accs[ch][l] = madd::<false>(p, v[ch][l], accs[ch][l]);
            }
        }
    }
    let max = maxs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut out = Folded { sum: sums.iter().sum(), pl: pls.iter().sum(), acc: [0f32; C], max };
    for ch in 0..C {
        out.acc[ch] = accs[ch].iter().sum();
    }
    fold_tail::<false, C, U>(&mut out, row, m, &vals, full);
    out
}

/// The last `row.len() − from` (< 8) values of a row, one at a time, into `out`.
#[inline(always)]
fn fold_tail<const FMA: bool, const C: usize, const U: bool>(
    out: &mut Folded<[f32; C]>,
    row: &[f32],
    m: f32,
    vals: &[&[f32]; C],
    from: usize,
) {
    for j in from..row.len() {
        out.max = out.max.max(row[j]);
        let shifted = row[j] - m;
        let p = exp::<FMA>(shifted);
        out.sum += p;
        if U {
            out.pl += p * shifted;
        }
        for ch in 0..C {
            out.acc[ch] += p * vals[ch][j];
        }
    }
}

/// The fused sweep over one tile row (see [`fold_impl`]): hand-written AVX2 where the CPU
/// has it (the auto-vectoriser split the fused loop into scalar lanes, twice as slow as
/// the two-pass version it replaced), the portable loop elsewhere.
pub fn fold<const C: usize, const U: bool>(row: &[f32], m: f32, vals: [&[f32]; C]) -> Folded<[f32; C]> {
    assert!(vals.iter().all(|v| v.len() >= row.len()));
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU supports AVX2 and FMA (checked at run time), and every value
        // slice is at least as long as the row (asserted above).
        return unsafe { avx2::fold::<C, U>(row, m, vals) };
    }
    fold_impl::<C, U>(row, m, vals)
}

/// Dot products of one key with Q query rows, and the key's squared norm. The key is
/// read in place from `img`: its row segments start at `starts` and are `cols` long
/// (a window of a training image); `queries` is [Q, starts.len()·cols] and `out` has Q
/// slots. Up to four queries share each load of the key; a `dot` per pair ran on one
/// accumulator chain (latency-bound at a quarter of the FMA rate), and copying each key
/// out of its image first cost more than the products.
pub fn window_dots(img: &[f32], starts: &[usize], cols: usize, queries: &[f32], out: &mut [f32]) -> f32 {
    let d = starts.len() * cols;
    assert_eq!(queries.len(), d * out.len());
    assert!(starts.iter().all(|&st| st + cols <= img.len()));
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU supports AVX2 and FMA (checked at run time); every segment and
        // query row is inside its slice (asserted above).
        return unsafe { avx2::window_dots(img, starts, cols, queries, out) };
    }
    let key: Vec<f32> = starts.iter().flat_map(|&st| img[st..st + cols].iter().copied()).collect();
    for (o, qv) in out.iter_mut().zip(queries.chunks_exact(d.max(1))) {
        *o = dot_impl(qv, &key);
    }
    dot_impl(&key, &key)
}

/// Index of the first value equal to `x` (0 if none): the winner search when a row's max
/// rises, eight values per compare. It ran per row and tile as a scalar loop, a tenth of
/// a call at P = 3.
pub fn position(row: &[f32], x: f32) -> usize {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU supports AVX2 (checked at run time).
        return unsafe { avx2::position(row, x) };
    }
    row.iter().position(|&v| v == x).unwrap_or(0)
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{EXP2_POLY, Folded, LANES, LOG2E_HI, LOG2E_LO, MAGIC, fold_tail};
    use std::arch::x86_64::*;

    /// # Safety
    /// AVX2.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn position(row: &[f32], x: f32) -> usize {
        let xv = _mm256_set1_ps(x);
        let full = row.len() - row.len() % LANES;
        let mut j = 0;
        while j < full {
            // SAFETY: j + 8 ≤ row.len().
            let eq = unsafe { _mm256_cmp_ps::<_CMP_EQ_OQ>(_mm256_loadu_ps(row.as_ptr().add(j)), xv) };
            let mask = _mm256_movemask_ps(eq);
            if mask != 0 {
                return j + mask.trailing_zeros() as usize;
            }
            j += LANES;
        }
        row[full..].iter().position(|&v| v == x).map_or(0, |p| full + p)
    }

    /// [`super::exp`] on eight lanes.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn exp8(x: __m256) -> __m256 {
        let x = _mm256_max_ps(x, _mm256_set1_ps(-87.0));
        let t = _mm256_fmadd_ps(x, _mm256_set1_ps(LOG2E_HI), _mm256_set1_ps(MAGIC));
        let n = _mm256_sub_ps(t, _mm256_set1_ps(MAGIC));
        let f = _mm256_fmsub_ps(x, _mm256_set1_ps(LOG2E_HI), n);
        let f = _mm256_fmadd_ps(x, _mm256_set1_ps(LOG2E_LO), f);
        let mut p = _mm256_set1_ps(EXP2_POLY[5]);
        for &c in EXP2_POLY[..5].iter().rev() {
            p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(c));
        }
        let bias = _mm256_set1_epi32(127i32.wrapping_sub(MAGIC.to_bits() as i32));
        let two_n = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(_mm256_castps_si256(t), bias)));
        _mm256_mul_ps(p, two_n)
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn hsum(v: __m256) -> f32 {
        let mut lanes = [0f32; LANES];
        // SAFETY: `lanes` holds exactly eight f32.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), v) };
        lanes.iter().sum()
    }

    /// One row segment of the key (`cols` values at `img[st..]`) against the same segment
    /// of G query rows (at `qo` within each row of `d`), into one accumulator set.
    ///
    /// # Safety
    /// AVX2 and FMA; `st + cols ≤ img.len()` and `(G − 1)·d + qo + cols ≤ queries.len()`.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn segment<const G: usize>(
        img: &[f32],
        st: usize,
        cols: usize,
        full: usize,
        mask: __m256i,
        queries: &[f32],
        qo: usize,
        d: usize,
        acc: &mut [__m256; G],
        norm: &mut __m256,
    ) {
        // SAFETY: in bounds by the contract above; masked lanes are not read.
        unsafe {
            let kp = img.as_ptr().add(st);
            let qp = queries.as_ptr().add(qo);
            let mut c = 0;
            while c < full {
                let k = _mm256_loadu_ps(kp.add(c));
                *norm = _mm256_fmadd_ps(k, k, *norm);
                for g in 0..G {
                    acc[g] = _mm256_fmadd_ps(_mm256_loadu_ps(qp.add(g * d + c)), k, acc[g]);
                }
                c += LANES;
            }
            if full < cols {
                let k = _mm256_maskload_ps(kp.add(full), mask);
                *norm = _mm256_fmadd_ps(k, k, *norm);
                for g in 0..G {
                    acc[g] = _mm256_fmadd_ps(_mm256_maskload_ps(qp.add(g * d + full), mask), k, acc[g]);
                }
            }
        }
    }

    /// `G` query rows against one key read in place (see [`super::window_dots`]): their
    /// dots and the key's squared norm. Row segments alternate between two accumulator
    /// sets, so even one query keeps four FMA chains in flight; each segment's last
    /// `cols % 8` values go through a masked load.
    ///
    /// # Safety
    /// AVX2 and FMA; every `starts[r] + cols ≤ img.len()` and `queries` holds G rows of
    /// `starts.len()·cols`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn window_block<const G: usize>(
        img: &[f32],
        starts: &[usize],
        cols: usize,
        queries: &[f32],
    ) -> ([f32; G], f32) {
        let d = starts.len() * cols;
        let full = cols - cols % LANES;
        let mask =
            _mm256_cmpgt_epi32(_mm256_set1_epi32((cols - full) as i32), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        // Two accumulator sets as separate variables (indexing one array by row parity
        // spilled them to the stack).
        let (mut acc0, mut acc1) = ([_mm256_setzero_ps(); G], [_mm256_setzero_ps(); G]);
        let (mut norm0, mut norm1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut r = 0;
        while r < starts.len() {
            // SAFETY: rows r (and r + 1) are in bounds (the caller's contract).
            unsafe {
                segment::<G>(img, starts[r], cols, full, mask, queries, r * cols, d, &mut acc0, &mut norm0);
                if r + 1 < starts.len() {
                    let next = (r + 1) * cols;
                    segment::<G>(img, starts[r + 1], cols, full, mask, queries, next, d, &mut acc1, &mut norm1);
                }
            }
            r += 2;
        }
        let acc: [[__m256; 2]; G] = std::array::from_fn(|g| [acc0[g], acc1[g]]);
        let norm = [norm0, norm1];
        let mut out = [0f32; G];
        for g in 0..G {
            out[g] = hsum(_mm256_add_ps(acc[g][0], acc[g][1]));
        }
        (out, hsum(_mm256_add_ps(norm[0], norm[1])))
    }

    /// # Safety
    /// As [`window_block`], for `out.len()` query rows.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn window_dots(
        img: &[f32],
        starts: &[usize],
        cols: usize,
        queries: &[f32],
        out: &mut [f32],
    ) -> f32 {
        let d = starts.len() * cols;
        let mut norm = None;
        let mut i = 0;
        while i + 4 <= out.len() {
            // SAFETY: rows i..i+4 are inside `queries`.
            let (r, n) = unsafe { window_block::<4>(img, starts, cols, &queries[i * d..(i + 4) * d]) };
            out[i..i + 4].copy_from_slice(&r);
            norm.get_or_insert(n);
            i += 4;
        }
        // The last one to three rows in one block.
        let rest = &queries[i * d..];
        // SAFETY: each call reads exactly the rows left (none for the norm-only call).
        let (r, n) = unsafe {
            match out.len() - i {
                3 => window_block::<3>(img, starts, cols, rest).map_rows(),
                2 => window_block::<2>(img, starts, cols, rest).map_rows(),
                1 => window_block::<1>(img, starts, cols, rest).map_rows(),
                _ => window_block::<0>(img, starts, cols, rest).map_rows(),
            }
        };
        out[i..].copy_from_slice(&r);
        norm.unwrap_or(n)
    }

    /// A block's fixed-size result as a vector, so the four arms above share one type.
    trait MapRows {
        fn map_rows(self) -> (Vec<f32>, f32);
    }

    impl<const G: usize> MapRows for ([f32; G], f32) {
        fn map_rows(self) -> (Vec<f32>, f32) {
            (self.0.to_vec(), self.1)
        }
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA, and every `vals[ch]` must be at least
    /// `row.len()` long.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn fold<const C: usize, const U: bool>(
        row: &[f32],
        m: f32,
        vals: [&[f32]; C],
    ) -> Folded<[f32; C]> {
        let n = row.len();
        let full = n - n % LANES;
        let mv = _mm256_set1_ps(m);
        let (mut sum, mut pl) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut acc = [_mm256_setzero_ps(); C];
        let mut max = _mm256_set1_ps(f32::NEG_INFINITY);
        let mut j = 0;
        while j < full {
            // SAFETY: j + 8 ≤ full ≤ row.len() ≤ vals[ch].len().
            unsafe {
                let logits = _mm256_loadu_ps(row.as_ptr().add(j));
                let shifted = _mm256_sub_ps(logits, mv);
                // Eight keys that all add nothing (see `SKIP_BELOW`) skip the exp: most of
                // a row at small t, never at large t, where the branch is always predicted.
                // (They cannot raise the max either: they are below the running one.)
                let below = _mm256_cmp_ps::<_CMP_LT_OQ>(shifted, _mm256_set1_ps(super::SKIP_BELOW));
                if _mm256_movemask_ps(below) == 0xFF {
                    j += LANES;
                    continue;
                }
                max = _mm256_max_ps(max, logits);
                let p = exp8(shifted);
                sum = _mm256_add_ps(sum, p);
                if U {
                    pl = _mm256_fmadd_ps(p, shifted, pl);
                }
                for ch in 0..C {
                    acc[ch] = _mm256_fmadd_ps(p, _mm256_loadu_ps(vals[ch].as_ptr().add(j)), acc[ch]);
                }
            }
            j += LANES;
        }
        let mut lanes = [0f32; LANES];
        // SAFETY: `lanes` holds exactly eight f32.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), max) };
        let max = lanes.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut out = Folded { sum: hsum(sum), pl: hsum(pl), acc: [0f32; C], max };
        for ch in 0..C {
            out.acc[ch] = hsum(acc[ch]);
        }
        fold_tail::<true, C, U>(&mut out, row, m, &vals, full);
        out
    }
}

#[inline(always)]
fn max_impl(row: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for l in 0..LANES {
            lanes[l] = lanes[l].max(c[l]);
        }
    }
    tail.iter().fold(lanes.iter().copied().fold(f32::NEG_INFINITY, f32::max), |a, &b| a.max(b))
}

#[inline(always)]
fn exp_shift_sum_with_logit_impl(row: &mut [f32], m: f32) -> (f32, f32) {
    let mut sums = [0f32; LANES];
    let mut pls = [0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            let shifted = c[l] - m;
            c[l] = exp::<false>(shifted);
            sums[l] += c[l];
            pls[l] += c[l] * shifted;
        }
    }
    let (mut sum, mut pl): (f32, f32) = (sums.iter().sum(), pls.iter().sum());
    for v in chunks.into_remainder() {
        let shifted = *v - m;
        *v = exp::<false>(shifted);
        sum += *v;
        pl += *v * shifted;
    }
    (sum, pl)
}

#[inline(always)]
fn dot_impl(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; LANES];
    let ca = a.chunks_exact(LANES);
    let cb = b.chunks_exact(LANES);
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..LANES {
            lanes[l] += x[l] * y[l];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// One query's logits against a tile of keys: `out[j] = Σ_t q[t]·keys_t[t·stride + k0 + j]`,
/// the keys read as `out.len()` contiguous values of each row of a [Da, K] chunk. Row by row
/// so each row's load feeds one multiply-add per lane; a dot per key would gather across rows.
#[inline(always)]
fn tile_logits_impl(q: &[f32], keys_t: &[f32], stride: usize, k0: usize, out: &mut [f32]) {
    let n = out.len();
    if n == 64 {
        // A full tile: a fixed-size accumulator the compiler keeps in registers (eight AVX
        // vectors) across the rows, instead of a load and store per row.
        let mut acc = [0f32; 64];
        for (t, &qv) in q.iter().enumerate() {
            let row: &[f32; 64] = keys_t[t * stride + k0..][..64].try_into().expect("64 keys");
            for j in 0..64 {
                acc[j] += qv * row[j];
            }
        }
        out.copy_from_slice(&acc);
        return;
    }
    out.fill(0.0);
    for (t, &qv) in q.iter().enumerate() {
        let row = &keys_t[t * stride + k0..t * stride + k0 + n];
        for (o, &k) in out.iter_mut().zip(row) {
            *o += qv * k;
        }
    }
}

/// AVX2 and FMA, checked once. Only x86-64 has the fast path; every other target takes the
/// portable loops (which LLVM vectorises for the target's own SIMD).
#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma"))
}

macro_rules! multiversion {
    ($name:ident, $avx:ident, $imp:ident, ($($arg:ident: $ty:ty),*) -> $ret:ty) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        fn $avx($($arg: $ty),*) -> $ret {
            $imp($($arg),*)
        }

        pub fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            if has_avx2() {
                // SAFETY: the CPU supports AVX2 and FMA (checked at run time).
                return unsafe { $avx($($arg),*) };
            }
            $imp($($arg),*)
        }
    };
}

multiversion!(max, max_avx2, max_impl, (row: &[f32]) -> f32);
multiversion!(exp_shift_sum_with_logit, exp_shift_sum_with_logit_avx2, exp_shift_sum_with_logit_impl, (row: &mut [f32], m: f32) -> (f32, f32));
multiversion!(dot, dot_avx2, dot_impl, (a: &[f32], b: &[f32]) -> f32);
multiversion!(tile_logits, tile_logits_avx2, tile_logits_impl, (q: &[f32], keys_t: &[f32], stride: usize, k0: usize, out: &mut [f32]) -> ());

#[cfg(test)]
mod tests {
    #[test]
    fn polynomial_exp_is_accurate() {
        // Without FMA, x·log2 e is rounded before n is taken off: ~4e-6 at x = −87, where
        // a softmax weight is 1e-38 of the largest and nothing sees it.
        for (fma, limit) in [(false, 5e-6), (true, 5e-7)] {
            let mut worst = 0f64;
            // Down to the clamp, and up to the largest rise a tile may fold with.
            for i in -64_000..=87_000 {
                let x = -(i as f32) / 1000.0;
                let e = if fma { super::exp::<true>(x) } else { super::exp::<false>(x) };
                worst = worst.max(((e as f64) / (x as f64).exp() - 1.0).abs());
            }
            assert!(worst < limit, "fma {fma}: worst relative error {worst}");
        }
        #[cfg(target_arch = "x86_64")]
        if super::has_avx2() {
            use std::arch::x86_64::*;
            let mut worst = 0f64;
            for i in (-64_000..=86_992).step_by(8) {
                let xs: [f32; 8] = std::array::from_fn(|l| -((i + l as i32) as f32) / 1000.0);
                let mut out = [0f32; 8];
                // SAFETY: AVX2 and FMA are present (checked above); both arrays hold 8.
                unsafe { _mm256_storeu_ps(out.as_mut_ptr(), super::avx2::exp8(_mm256_loadu_ps(xs.as_ptr()))) };
                for (x, e) in xs.iter().zip(out) {
                    worst = worst.max(((e as f64) / (*x as f64).exp() - 1.0).abs());
                }
            }
            assert!(worst < 5e-7, "exp8: worst relative error {worst}");
        }
        // The largest weight of a softmax is exactly 1.
        assert_eq!((super::exp::<false>(0.0), super::exp::<true>(0.0)), (1.0, 1.0));
        assert_eq!(super::max(&[1.0, 7.0, -3.0, 2.0, 0.0, 1.0, 1.0, 1.0, 6.5, 9.5]), 9.5);
    }

    /// Every fused variant (and the in-place fallback) against f64, on a row whose length
    /// is not a multiple of the lane count, with values that differ per channel.
    #[test]
    fn fused_folds_match_f64() {
        let row: Vec<f32> = (0..37).map(|i| -((i * 7 % 11) as f32) * 0.31 + 0.2).collect();
        let vals: Vec<Vec<f32>> = (0..3).map(|ch| (0..37).map(|j| ((j + ch) % 5) as f32 - 1.5).collect()).collect();
        let m = 0.5f32;
        let p: Vec<f64> = row.iter().map(|&l| ((l - m) as f64).exp()).collect();
        let sum: f64 = p.iter().sum();
        let pl: f64 = p.iter().zip(&row).map(|(p, &l)| p * (l - m) as f64).sum();
        let acc = |ch: usize| p.iter().zip(&vals[ch]).map(|(p, &v)| p * v as f64).sum::<f64>();
        let close = |got: f32, want: f64| (got as f64 - want).abs() < 1e-5 * (1.0 + want.abs());
        let f = super::fold::<3, true>(&row, m, [&vals[0], &vals[1], &vals[2]]);
        assert!(close(f.sum, sum) && close(f.pl, pl), "{} {}", f.sum, f.pl);
        assert_eq!(f.max, row.iter().copied().fold(f32::NEG_INFINITY, f32::max));
        // The first of equal values, in the vector part and in the tail.
        let mut ties = vec![0f32; 37];
        (ties[11], ties[19], ties[34], ties[36]) = (5.0, 5.0, 7.0, 7.0);
        assert_eq!((super::position(&ties, 5.0), super::position(&ties, 7.0)), (11, 34));
        assert_eq!(super::position(&ties, 9.0), 0);
        assert!((0..3).all(|ch| close(f.acc[ch], acc(ch))), "{:?}", f.acc);
        let f = super::fold::<1, true>(&row, m, [&vals[1]]);
        assert!(close(f.sum, sum) && close(f.pl, pl) && close(f.acc[0], acc(1)));
        let f = super::fold::<3, false>(&row, m, [&vals[0], &vals[1], &vals[2]]);
        assert!(close(f.sum, sum) && (0..3).all(|ch| close(f.acc[ch], acc(ch))));
        let f = super::fold::<1, false>(&row, m, [&vals[2]]);
        assert!(close(f.sum, sum) && close(f.acc[0], acc(2)));
        // The portable loop, which a CPU with AVX2 never reaches through `fold`.
        let f = super::fold_impl::<3, true>(&row, m, [&vals[0], &vals[1], &vals[2]]);
        assert!(close(f.sum, sum) && close(f.pl, pl) && (0..3).all(|ch| close(f.acc[ch], acc(ch))));
        // Dots of one key with 7 query rows (a block of four, then three single rows).
        let key: Vec<f32> = (0..37).map(|j| ((j * 5 % 9) as f32 - 4.0) * 0.25).collect();
        let queries: Vec<f32> = (0..7 * 37).map(|j| ((j * 3 % 13) as f32 - 6.0) * 0.1).collect();
        let mut got = [0f32; 7];
        let norm = super::window_dots(&key, &[0], 37, &queries, &mut got);
        let want = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum::<f64>();
        assert!(close(norm, want(&key, &key)));
        for (i, g) in got.iter().enumerate() {
            assert!(close(*g, want(&key, &queries[i * 37..(i + 1) * 37])), "query {i}");
        }
        // The same key as three row segments of 11, 13 apart in a larger "image", for
        // 1, 2, 3 and 5 queries (every block size, and a tail that is not a multiple of 8).
        let img: Vec<f32> = (0..60).map(|j| ((j * 7 % 17) as f32 - 8.0) * 0.125).collect();
        let (starts, cols) = ([4usize, 17, 30], 11);
        let key: Vec<f32> = starts.iter().flat_map(|&st| img[st..st + cols].to_vec()).collect();
        for q in [1usize, 2, 3, 5] {
            let queries: Vec<f32> = (0..q * 33).map(|j| ((j * 5 % 11) as f32 - 5.0) * 0.2).collect();
            let mut got = vec![0f32; q];
            let norm = super::window_dots(&img, &starts, cols, &queries, &mut got);
            assert!(close(norm, want(&key, &key)), "{q} queries: norm {norm}");
            for (i, g) in got.iter().enumerate() {
                assert!(close(*g, want(&key, &queries[i * 33..(i + 1) * 33])), "{q} queries, row {i}");
            }
        }
        let mut inplace = row.clone();
        let (s, l) = super::exp_shift_sum_with_logit(&mut inplace, m);
        assert!(close(s, sum) && close(l, pl));
        assert!(close(super::dot(&inplace, &vals[0]), acc(0)));
    }
}
