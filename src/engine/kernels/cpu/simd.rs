//! Lane-parallel helpers written so LLVM vectorises them (8 independent accumulators, no
//! branches), compiled for each instruction set the CPU may have ([`Isa`]: AVX-512, AVX2+FMA,
//! NEON, or the baseline). The fused sweep ([`fold`]) and the winner search ([`position`]) are
//! written out per instruction set, since the auto-vectoriser splits the fused loop into
//! scalar lanes; they share one algorithm (the polynomial [`exp`], the skip test), so each
//! differs from the others only in lane count and summation order.

// Lanes, channels and query rows are indexed by number on purpose: each index is a
// register the loop keeps apart, and fixed-count loops unroll into them.
#![allow(clippy::needless_range_loop)]

const LANES: usize = 8;

/// Below this (logit − running max) a key adds nothing an f32 sum can hold (e^−88 ≈ 6e−39),
/// so a vector of such keys together skips the exp. At small t that is most of a row. (The
/// SIMD loops' test; the portable loop has no cheap all-lanes test to use it.)
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
const SKIP_BELOW: f32 = -88.0;

/// The instruction sets the hand-written loops come in, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// x86-64 with AVX-512F: 16 lanes.
    Avx512,
    /// x86-64 with AVX2 and FMA: 8 lanes.
    Avx2,
    /// AArch64 (Apple silicon, Graviton): NEON and FMA are part of the base architecture.
    Neon,
    /// Anything else: the portable loops, vectorised by LLVM for the baseline.
    Portable,
}

impl Isa {
    /// What this CPU has, detected once. `MORPHOGEN_SIMD=avx2|portable|…` picks a lesser one
    /// (for `bench` comparisons and for testing a path on a CPU that has a better one); a name
    /// the CPU does not support is ignored.
    pub fn current() -> Isa {
        static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *ISA.get_or_init(|| {
            let asked = std::env::var("MORPHOGEN_SIMD").ok().and_then(|v| Isa::parse(&v));
            asked.filter(|a| Isa::supported().contains(a)).unwrap_or(Isa::supported()[0])
        })
    }

    /// Every instruction set this CPU can run, best first (always ending in `Portable`);
    /// detected once, since every fold checks its set against it.
    pub fn supported() -> &'static [Isa] {
        static SUPPORTED: std::sync::OnceLock<Vec<Isa>> = std::sync::OnceLock::new();
        SUPPORTED.get_or_init(Isa::detect)
    }

    fn detect() -> Vec<Isa> {
        let mut out = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                out.push(Isa::Avx512);
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                out.push(Isa::Avx2);
            }
        }
        #[cfg(target_arch = "aarch64")]
        if std::arch::is_aarch64_feature_detected!("neon") {
            out.push(Isa::Neon);
        }
        out.push(Isa::Portable);
        out
    }

    pub fn parse(name: &str) -> Option<Isa> {
        match name.trim().to_ascii_lowercase().as_str() {
            "avx512" | "avx-512" => Some(Isa::Avx512),
            "avx2" => Some(Isa::Avx2),
            "neon" => Some(Isa::Neon),
            "portable" | "scalar" | "none" => Some(Isa::Portable),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "AVX-512",
            Isa::Avx2 => "AVX2+FMA",
            Isa::Neon => "NEON",
            Isa::Portable => "portable",
        }
    }
}

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
    fold_with::<C, U>(Isa::current(), row, m, vals)
}

/// [`fold`] on a given instruction set, which must be one of [`Isa::supported`].
pub fn fold_with<const C: usize, const U: bool>(isa: Isa, row: &[f32], m: f32, vals: [&[f32]; C]) -> Folded<[f32; C]> {
    assert!(vals.iter().all(|v| v.len() >= row.len()));
    assert!(isa == Isa::Portable || Isa::supported().contains(&isa), "{isa:?} is not supported here");
    match isa {
        // SAFETY (each arm): the CPU supports the instruction set (asserted above), and every
        // value slice is at least as long as the row (asserted above).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { avx512::fold::<C, U>(row, m, vals) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2::fold::<C, U>(row, m, vals) },
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => unsafe { neon::fold::<C, U>(row, m, vals) },
        _ => fold_impl::<C, U>(row, m, vals),
    }
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
    if Isa::current() != Isa::Portable && Isa::supported().contains(&Isa::Avx2) {
        // SAFETY: the CPU supports AVX2 and FMA (detected at run time); every segment and
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
    position_with(Isa::current(), row, x)
}

/// [`position`] on a given instruction set, which must be one of [`Isa::supported`].
pub fn position_with(isa: Isa, row: &[f32], x: f32) -> usize {
    assert!(isa == Isa::Portable || Isa::supported().contains(&isa), "{isa:?} is not supported here");
    match isa {
        // SAFETY (each arm): the CPU supports the instruction set (asserted above).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { avx512::position(row, x) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2::position(row, x) },
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => unsafe { neon::position(row, x) },
        _ => row.iter().position(|&v| v == x).unwrap_or(0),
    }
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

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{EXP2_POLY, Folded, LOG2E_HI, LOG2E_LO, MAGIC, fold_tail};
    use std::arch::x86_64::*;

    const L: usize = 16;

    /// [`super::exp`] on sixteen lanes.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) fn exp16(x: __m512) -> __m512 {
        let x = _mm512_max_ps(x, _mm512_set1_ps(-87.0));
        let t = _mm512_fmadd_ps(x, _mm512_set1_ps(LOG2E_HI), _mm512_set1_ps(MAGIC));
        let n = _mm512_sub_ps(t, _mm512_set1_ps(MAGIC));
        let f = _mm512_fmsub_ps(x, _mm512_set1_ps(LOG2E_HI), n);
        let f = _mm512_fmadd_ps(x, _mm512_set1_ps(LOG2E_LO), f);
        let mut p = _mm512_set1_ps(EXP2_POLY[5]);
        for &c in EXP2_POLY[..5].iter().rev() {
            p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(c));
        }
        let bias = _mm512_set1_epi32(127i32.wrapping_sub(MAGIC.to_bits() as i32));
        let two_n = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(_mm512_castps_si512(t), bias)));
        _mm512_mul_ps(p, two_n)
    }

    /// # Safety
    /// AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn position(row: &[f32], x: f32) -> usize {
        let xv = _mm512_set1_ps(x);
        let full = row.len() - row.len() % L;
        let mut j = 0;
        while j < full {
            // SAFETY: j + 16 ≤ row.len().
            let mask = unsafe { _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(_mm512_loadu_ps(row.as_ptr().add(j)), xv) };
            if mask != 0 {
                return j + mask.trailing_zeros() as usize;
            }
            j += L;
        }
        row[full..].iter().position(|&v| v == x).map_or(0, |p| full + p)
    }

    /// The AVX2 fold on sixteen lanes.
    ///
    /// # Safety
    /// The CPU must support AVX-512F, and every `vals[ch]` must be at least `row.len()` long.
    #[target_feature(enable = "avx512f,fma")]
    pub(super) unsafe fn fold<const C: usize, const U: bool>(
        row: &[f32],
        m: f32,
        vals: [&[f32]; C],
    ) -> Folded<[f32; C]> {
        let n = row.len();
        let full = n - n % L;
        let mv = _mm512_set1_ps(m);
        let (mut sum, mut pl) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        let mut acc = [_mm512_setzero_ps(); C];
        let mut max = _mm512_set1_ps(f32::NEG_INFINITY);
        let below_all = _mm512_set1_ps(super::SKIP_BELOW);
        let mut j = 0;
        while j < full {
            // SAFETY: j + 16 ≤ full ≤ row.len() ≤ vals[ch].len().
            unsafe {
                let logits = _mm512_loadu_ps(row.as_ptr().add(j));
                let shifted = _mm512_sub_ps(logits, mv);
                // Sixteen keys that all add nothing skip the exp (see `SKIP_BELOW`).
                if _mm512_cmp_ps_mask::<_CMP_LT_OQ>(shifted, below_all) == 0xFFFF {
                    j += L;
                    continue;
                }
                max = _mm512_max_ps(max, logits);
                let p = exp16(shifted);
                sum = _mm512_add_ps(sum, p);
                if U {
                    pl = _mm512_fmadd_ps(p, shifted, pl);
                }
                for ch in 0..C {
                    acc[ch] = _mm512_fmadd_ps(p, _mm512_loadu_ps(vals[ch].as_ptr().add(j)), acc[ch]);
                }
            }
            j += L;
        }
        let mut out = Folded {
            sum: _mm512_reduce_add_ps(sum),
            pl: _mm512_reduce_add_ps(pl),
            acc: [0f32; C],
            max: _mm512_reduce_max_ps(max),
        };
        for ch in 0..C {
            out.acc[ch] = _mm512_reduce_add_ps(acc[ch]);
        }
        fold_tail::<true, C, U>(&mut out, row, m, &vals, full);
        out
    }
}

#[cfg(target_arch = "aarch64")]
mod neon {
    use super::{EXP2_POLY, Folded, LOG2E_HI, LOG2E_LO, MAGIC, fold_tail};
    use std::arch::aarch64::*;

    const L: usize = 4;

    /// [`super::exp`] on four lanes (the same operations, NEON's fused multiply-add).
    #[inline]
    #[target_feature(enable = "neon")]
    pub(super) fn exp4(x: float32x4_t) -> float32x4_t {
        let x = vmaxq_f32(x, vdupq_n_f32(-87.0));
        let t = vfmaq_f32(vdupq_n_f32(MAGIC), x, vdupq_n_f32(LOG2E_HI));
        let n = vsubq_f32(t, vdupq_n_f32(MAGIC));
        // x·log2e − n, then + x·log2e_lo: vfmsq computes a − b·c, so negate.
        let f = vnegq_f32(vfmsq_f32(n, x, vdupq_n_f32(LOG2E_HI)));
        let f = vfmaq_f32(f, x, vdupq_n_f32(LOG2E_LO));
        let mut p = vdupq_n_f32(EXP2_POLY[5]);
        for &c in EXP2_POLY[..5].iter().rev() {
            p = vfmaq_f32(vdupq_n_f32(c), p, f);
        }
        let bias = vdupq_n_u32(127u32.wrapping_sub(MAGIC.to_bits()));
        let two_n = vreinterpretq_f32_u32(vshlq_n_u32::<23>(vaddq_u32(vreinterpretq_u32_f32(t), bias)));
        vmulq_f32(p, two_n)
    }

    /// # Safety
    /// NEON.
    #[target_feature(enable = "neon")]
    pub(super) unsafe fn position(row: &[f32], x: f32) -> usize {
        let xv = vdupq_n_f32(x);
        let full = row.len() - row.len() % L;
        let mut j = 0;
        while j < full {
            // SAFETY: j + 4 ≤ row.len().
            let eq = unsafe { vceqq_f32(vld1q_f32(row.as_ptr().add(j)), xv) };
            if vmaxvq_u32(eq) != 0 {
                return j + row[j..j + L].iter().position(|&v| v == x).unwrap_or(0);
            }
            j += L;
        }
        row[full..].iter().position(|&v| v == x).map_or(0, |p| full + p)
    }

    /// The AVX2 fold's algorithm on four lanes.
    ///
    /// # Safety
    /// The CPU must support NEON, and every `vals[ch]` must be at least `row.len()` long.
    #[target_feature(enable = "neon")]
    pub(super) unsafe fn fold<const C: usize, const U: bool>(
        row: &[f32],
        m: f32,
        vals: [&[f32]; C],
    ) -> Folded<[f32; C]> {
        let n = row.len();
        let full = n - n % L;
        let mv = vdupq_n_f32(m);
        let (mut sum, mut pl) = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
        let mut acc = [vdupq_n_f32(0.0); C];
        let mut max = vdupq_n_f32(f32::NEG_INFINITY);
        let below_all = vdupq_n_f32(super::SKIP_BELOW);
        let mut j = 0;
        while j < full {
            // SAFETY: j + 4 ≤ full ≤ row.len() ≤ vals[ch].len().
            unsafe {
                let logits = vld1q_f32(row.as_ptr().add(j));
                let shifted = vsubq_f32(logits, mv);
                // Four keys that all add nothing skip the exp (see `SKIP_BELOW`).
                if vminvq_u32(vcltq_f32(shifted, below_all)) != 0 {
                    j += L;
                    continue;
                }
                max = vmaxq_f32(max, logits);
                let p = exp4(shifted);
                sum = vaddq_f32(sum, p);
                if U {
                    pl = vfmaq_f32(pl, p, shifted);
                }
                for ch in 0..C {
                    acc[ch] = vfmaq_f32(acc[ch], p, vld1q_f32(vals[ch].as_ptr().add(j)));
                }
            }
            j += L;
        }
        let mut out = Folded { sum: vaddvq_f32(sum), pl: vaddvq_f32(pl), acc: [0f32; C], max: vmaxvq_f32(max) };
        for ch in 0..C {
            out.acc[ch] = vaddvq_f32(acc[ch]);
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

/// A portable helper compiled once per x86 instruction set (LLVM vectorises it to that
/// width) and dispatched on [`Isa::current`]. On AArch64 the baseline build already has
/// NEON, so the portable body is the NEON one.
macro_rules! multiversion {
    ($name:ident, $avx512:ident, $avx:ident, $imp:ident, ($($arg:ident: $ty:ty),*) -> $ret:ty) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f,avx2,fma")]
        fn $avx512($($arg: $ty),*) -> $ret {
            $imp($($arg),*)
        }

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        fn $avx($($arg: $ty),*) -> $ret {
            $imp($($arg),*)
        }

        pub fn $name($($arg: $ty),*) -> $ret {
            match Isa::current() {
                // SAFETY (each arm): the CPU supports the features (detected at run time).
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => unsafe { $avx512($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => unsafe { $avx($($arg),*) },
                _ => $imp($($arg),*),
            }
        }
    };
}

multiversion!(max, max_avx512, max_avx2, max_impl, (row: &[f32]) -> f32);
multiversion!(exp_shift_sum_with_logit, exp_shift_sum_with_logit_avx512, exp_shift_sum_with_logit_avx2, exp_shift_sum_with_logit_impl, (row: &mut [f32], m: f32) -> (f32, f32));
multiversion!(dot, dot_avx512, dot_avx2, dot_impl, (a: &[f32], b: &[f32]) -> f32);
multiversion!(tile_logits, tile_logits_avx512, tile_logits_avx2, tile_logits_impl, (q: &[f32], keys_t: &[f32], stride: usize, k0: usize, out: &mut [f32]) -> ());

/// Lanes of one [`strip_dots_impl`] accumulator: a row of window columns is padded to a
/// multiple. Eight, not sixteen: LLVM keeps these loops at 256 bits even on AVX-512, and
/// MNIST's rows of 14 to 22 key columns waste less padding.
pub const STRIP_LANES: usize = 8;

/// One row strip of a query image against one of a training image, for every pair of
/// window columns ([`super::strips`], which compiles it per instruction set): `out[pc·w + s]
/// (+)= Σ_oj x[pc + oj]·y[s + oj]` for pc < `rows` and s < w = `out.len() / rows` (a multiple
/// of [`STRIP_LANES`]). `x` holds at least rows + p − 1 values and `y` at least w + p − 1.
/// Eight query columns share each load of `y`, and each sum runs over oj in order, so equal
/// strips give equal sums wherever they lie.
#[inline(always)]
pub(crate) fn strip_dots_impl<const FMA: bool>(
    x: &[f32],
    y: &[f32],
    p: usize,
    rows: usize,
    out: &mut [f32],
    add: bool,
) {
    let w = out.len() / rows.max(1);
    for s0 in (0..w).step_by(STRIP_LANES) {
        let mut pc = 0;
        while pc + 8 <= rows {
            strip_block::<FMA, 8>(x, y, p, pc, s0, w, out, add);
            pc += 8;
        }
        while pc + 4 <= rows {
            strip_block::<FMA, 4>(x, y, p, pc, s0, w, out, add);
            pc += 4;
        }
        while pc < rows {
            strip_block::<FMA, 1>(x, y, p, pc, s0, w, out, add);
            pc += 1;
        }
    }
}

/// R query columns from `pc` against the [`STRIP_LANES`] key columns from `s0`, in
/// registers across oj.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn strip_block<const FMA: bool, const R: usize>(
    x: &[f32],
    y: &[f32],
    p: usize,
    pc: usize,
    s0: usize,
    w: usize,
    out: &mut [f32],
    add: bool,
) {
    let mut acc = [[0f32; STRIP_LANES]; R];
    if add {
        for r in 0..R {
            acc[r].copy_from_slice(&out[(pc + r) * w + s0..][..STRIP_LANES]);
        }
    }
    // Index loops on purpose: iterator adaptors (zip, windows) were left as calls inside
    // the per-instruction-set copies.
    let (x, y) = (&x[pc..pc + R + p - 1], &y[s0..s0 + STRIP_LANES + p - 1]);
    for oj in 0..p {
        let yv: &[f32; STRIP_LANES] = y[oj..oj + STRIP_LANES].try_into().expect("8 lanes");
        let xv: &[f32; R] = x[oj..oj + R].try_into().expect("R rows");
        for r in 0..R {
            for l in 0..STRIP_LANES {
                acc[r][l] = madd::<FMA>(xv[r], yv[l], acc[r][l]);
            }
        }
    }
    for r in 0..R {
        out[(pc + r) * w + s0..][..STRIP_LANES].copy_from_slice(&acc[r]);
    }
}

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
        // Each instruction set's vector exp over the same range.
        for &isa in super::Isa::supported() {
            let lanes = match isa {
                super::Isa::Avx512 => 16,
                super::Isa::Avx2 => 8,
                super::Isa::Neon => 4,
                super::Isa::Portable => continue,
            };
            let mut worst = 0f64;
            for i in (-64_000..=86_984).step_by(lanes) {
                let xs: Vec<f32> = (0..lanes).map(|l| -((i + l as i32) as f32) / 1000.0).collect();
                for (x, e) in xs.iter().zip(vector_exp(isa, &xs)) {
                    worst = worst.max(((e as f64) / (*x as f64).exp() - 1.0).abs());
                }
            }
            assert!(worst < 5e-7, "{isa:?} exp: worst relative error {worst}");
        }
        // The largest weight of a softmax is exactly 1.
        assert_eq!((super::exp::<false>(0.0), super::exp::<true>(0.0)), (1.0, 1.0));
        assert_eq!(super::max(&[1.0, 7.0, -3.0, 2.0, 0.0, 1.0, 1.0, 1.0, 6.5, 9.5]), 9.5);
    }

    /// The vector exp of `isa` on `xs` (one vector's worth).
    fn vector_exp(isa: super::Isa, xs: &[f32]) -> Vec<f32> {
        let mut out = vec![0f32; xs.len()];
        match isa {
            // SAFETY (each arm): `isa` is supported here (the caller took it from
            // `supported`), and `xs` and `out` hold exactly one vector.
            #[cfg(target_arch = "x86_64")]
            super::Isa::Avx512 => unsafe {
                use std::arch::x86_64::*;
                _mm512_storeu_ps(out.as_mut_ptr(), super::avx512::exp16(_mm512_loadu_ps(xs.as_ptr())))
            },
            #[cfg(target_arch = "x86_64")]
            super::Isa::Avx2 => unsafe {
                use std::arch::x86_64::*;
                _mm256_storeu_ps(out.as_mut_ptr(), super::avx2::exp8(_mm256_loadu_ps(xs.as_ptr())))
            },
            #[cfg(target_arch = "aarch64")]
            super::Isa::Neon => unsafe {
                use std::arch::aarch64::*;
                vst1q_f32(out.as_mut_ptr(), super::neon::exp4(vld1q_f32(xs.as_ptr())))
            },
            _ => unreachable!("no vector exp for {isa:?}"),
        }
        out
    }

    /// The instruction set in use is the best this CPU has, unless the environment asks for
    /// a lesser one; every CPU can run the portable loops.
    #[test]
    fn the_best_supported_instruction_set_is_used() {
        let supported = super::Isa::supported();
        assert_eq!(supported.last(), Some(&super::Isa::Portable));
        assert!(supported.contains(&super::Isa::current()));
        if std::env::var("MORPHOGEN_SIMD").is_err() {
            assert_eq!(super::Isa::current(), supported[0]);
        }
        assert_eq!(super::Isa::parse("AVX-512"), Some(super::Isa::Avx512));
        assert_eq!(super::Isa::parse("sse9"), None);
    }

    /// Every fused variant of every instruction set this CPU has (and the in-place
    /// fallback) against f64, on rows whose length is not a multiple of any lane count, with
    /// values that differ per channel.
    #[test]
    fn fused_folds_match_f64() {
        let isas = super::Isa::supported();
        for &isa in isas {
            folds_match_f64(isa, 37);
            folds_match_f64(isa, 77);
        }
        // A row every vector of which is far below the max: the skip test, which only the
        // vector loops have, must leave the same sums (zero, bar the tail) as the portable one.
        let row: Vec<f32> = (0..53).map(|i| if i == 52 { 0.0 } else { -200.0 - i as f32 }).collect();
        let vals = vec![1.0f32; 53];
        for &isa in isas {
            let f = super::fold_with::<1, true>(isa, &row, 0.0, [&vals]);
            assert_eq!((f.sum, f.acc[0], f.max), (1.0, 1.0, 0.0), "{isa:?}");
        }
        eprintln!("folds checked on {isas:?}");
    }

    fn folds_match_f64(isa: super::Isa, len: usize) {
        let row: Vec<f32> = (0..len).map(|i| -((i * 7 % 11) as f32) * 0.31 + 0.2).collect();
        let vals: Vec<Vec<f32>> = (0..3).map(|ch| (0..len).map(|j| ((j + ch) % 5) as f32 - 1.5).collect()).collect();
        let m = 0.5f32;
        let p: Vec<f64> = row.iter().map(|&l| ((l - m) as f64).exp()).collect();
        let sum: f64 = p.iter().sum();
        let pl: f64 = p.iter().zip(&row).map(|(p, &l)| p * (l - m) as f64).sum();
        let acc = |ch: usize| p.iter().zip(&vals[ch]).map(|(p, &v)| p * v as f64).sum::<f64>();
        let close = |got: f32, want: f64| (got as f64 - want).abs() < 1e-5 * (1.0 + want.abs());
        let f = super::fold_with::<3, true>(isa, &row, m, [&vals[0], &vals[1], &vals[2]]);
        assert!(close(f.sum, sum) && close(f.pl, pl), "{isa:?}: {} {}", f.sum, f.pl);
        assert_eq!(f.max, row.iter().copied().fold(f32::NEG_INFINITY, f32::max), "{isa:?}");
        // The first of equal values, in the vector part (twice in one vector, and in the
        // second half of a 16-lane one) and in the tail.
        let mut ties = vec![0f32; len];
        (ties[11], ties[13], ties[len - 3], ties[len - 1]) = (5.0, 5.0, 7.0, 7.0);
        let pos = |x| super::position_with(isa, &ties, x);
        assert_eq!((pos(5.0), pos(7.0), pos(9.0)), (11, len - 3, 0), "{isa:?}");
        assert!((0..3).all(|ch| close(f.acc[ch], acc(ch))), "{isa:?}: {:?}", f.acc);
        let f = super::fold_with::<1, true>(isa, &row, m, [&vals[1]]);
        assert!(close(f.sum, sum) && close(f.pl, pl) && close(f.acc[0], acc(1)), "{isa:?}");
        let f = super::fold_with::<3, false>(isa, &row, m, [&vals[0], &vals[1], &vals[2]]);
        assert!(close(f.sum, sum) && (0..3).all(|ch| close(f.acc[ch], acc(ch))), "{isa:?}");
        let f = super::fold_with::<1, false>(isa, &row, m, [&vals[2]]);
        assert!(close(f.sum, sum) && close(f.acc[0], acc(2)), "{isa:?}");
        if isa != super::Isa::Portable {
            return;
        }
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
