//! The ELS softmax-accumulate fused into one pass on the CPU.
//!
//! burn's CPU ops run the streaming softmax as separate passes (matmul, max, subtract, exp,
//! sum, weighted sum), each over the whole logit chunk, with a scalar `expf`; profiling showed
//! a third of a call in `expf` and most of the rest moving logits through memory. Here each
//! thread takes a block of queries and walks the keys tile by tile: a small gemm writes a
//! [queries × 512] score tile that stays in L1/L2, and one vectorised sweep per row does the
//! max, a polynomial exp, the sum and the value dot products. The math is the same as
//! [`super::softmax::OnlineSoftmax`]; the golden fixtures and a test against the burn path
//! pin it.

use rayon::prelude::*;

/// Keys per score tile: 64 queries × 512 keys × 4 bytes = 128 KB, an L2-sized tile (256 and
/// 1024 measured the same within 5% at P = 7; 512 × 64 was 17% faster at P = 15).
const TILE: usize = 512;
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
    /// Column (over all chunks so far) of each row's largest logit: its winning key.
    arg: Vec<u64>,
    /// Columns folded in so far.
    seen: u64,
    s: Vec<f64>,
    u: Vec<f64>,
    acc: Vec<f64>,
    want_entropy: bool,
}

impl RowState {
    pub fn new(q: usize, c: usize, want_entropy: bool) -> Self {
        Self {
            q,
            c,
            m: vec![f32::NEG_INFINITY; q],
            arg: vec![0; q],
            seen: 0,
            s: vec![0.0; q],
            u: vec![0.0; q],
            acc: vec![0.0; q * c],
            want_entropy,
        }
    }

    /// Folds one chunk in. `queries` is [Q, Da] (already scaled, with the −a/2 column).
    pub fn update(&mut self, queries: &[f32], da: usize, chunk: &HostChunk) {
        let (c, k, want_entropy, seen) = (self.c, chunk.len, self.want_entropy, self.seen);
        self.seen += k as u64;
        let blocks = self
            .m
            .par_chunks_mut(QUERY_BLOCK)
            .zip(self.arg.par_chunks_mut(QUERY_BLOCK))
            .zip(self.s.par_chunks_mut(QUERY_BLOCK))
            .zip(self.u.par_chunks_mut(QUERY_BLOCK))
            .zip(self.acc.par_chunks_mut(QUERY_BLOCK * c))
            .zip(queries.par_chunks(QUERY_BLOCK * da));
        blocks.for_each(|(((((m, arg), s), u), acc), q)| {
            let rows = m.len();
            let mut scores = vec![0f32; rows * TILE];
            for k0 in (0..k).step_by(TILE) {
                let tk = TILE.min(k - k0);
                // scores[i, j] = q_i · key_{k0+j}
                // SAFETY: the pointers cover rows×da, tk×da and rows×tk elements with the
                // strides given; dst does not alias the inputs.
                unsafe {
                    gemm::gemm(
                        rows,
                        tk,
                        da,
                        scores.as_mut_ptr(),
                        1,
                        tk as isize,
                        false,
                        q.as_ptr(),
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
                for i in 0..rows {
                    let row = &mut scores[i * tk..(i + 1) * tk];
                    let vals = |ch: usize| &chunk.values_t[ch * k + k0..ch * k + k0 + tk];
                    let col0 = seen + k0 as u64;
                    let best = (&mut m[i], &mut arg[i], col0);
                    fold_row(row, best, &mut s[i], &mut u[i], &mut acc[i * c..(i + 1) * c], vals, want_entropy);
                }
            }
        });
    }

    /// The raw running state (m, s, u, acc) of every row, for callers that merge partial
    /// states themselves ([`super::els_op`]), and each row's winning column. A row that saw
    /// no key has m = −∞ and s = 0.
    #[allow(clippy::type_complexity)]
    pub fn into_parts(self) -> (Vec<f32>, Vec<f64>, Vec<f64>, Vec<f64>, Vec<u64>) {
        (self.m, self.s, self.u, self.acc, self.arg)
    }

    /// Each row's winning column: the key with its largest weight, counted over all chunks in
    /// the order they were folded in.
    pub fn argmax(&self) -> &[u64] {
        &self.arg
    }

    /// Σ softmax·v per row ([Q, C]) and the entropy of each row's weights.
    pub fn finish(self) -> (Vec<f32>, Vec<f32>) {
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

/// One row of one tile: rescale the running state to the new max, then exponentiate the
/// row in place and accumulate its sum, its values and (for the entropy) Σ p·logit.
#[inline]
fn fold_row<'v>(
    row: &mut [f32],
    (m, arg, col0): (&mut f32, &mut u64, u64),
    s: &mut f64,
    u: &mut f64,
    acc: &mut [f64],
    vals: impl Fn(usize) -> &'v [f32],
    want_entropy: bool,
) {
    let tile_max = simd::max(row);
    let m_new = m.max(tile_max);
    if m_new > *m {
        // A new winner: rare after the first tiles, so the search costs nothing.
        *arg = col0 + row.iter().position(|&v| v == tile_max).unwrap_or(0) as u64;
        if m.is_finite() {
            rebase(s, u, acc, (*m - m_new) as f64);
        }
        *m = m_new;
    }
    if want_entropy {
        // Σ p·(l − m) needs the logits, so take it before they are overwritten by p.
        let (sum, pl) = simd::exp_shift_sum_with_logit(row, m_new);
        *s += sum as f64;
        *u += pl as f64;
    } else {
        *s += simd::exp_shift_sum(row, m_new) as f64;
    }
    for (ch, a) in acc.iter_mut().enumerate() {
        *a += simd::dot(row, vals(ch)) as f64;
    }
}

/// Lane-parallel helpers written so LLVM vectorises them (8 independent accumulators, no
/// branches), compiled twice: for AVX2+FMA when the CPU has it, and for the baseline.
pub(crate) mod simd {
    use std::sync::OnceLock;

    const LANES: usize = 8;

    /// e^x for x ≤ 0 to about 2 ulp: Cephes' polynomial on the reduced argument, with the
    /// power of two put into the exponent bits. Branch-free so it vectorises.
    #[inline(always)]
    fn exp(x: f32) -> f32 {
        const MAGIC: f32 = 12_582_912.0; // 1.5·2²³: adding it rounds to an integer in the low bits
        let x = x.max(-87.0);
        let t = x * std::f32::consts::LOG2_E + MAGIC;
        let n = t - MAGIC; // round(x·log2 e)
        let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
        let mut p = 1.987_569_1e-4_f32;
        p = p * r + 1.398_199_9e-3;
        p = p * r + 8.333_452e-3;
        p = p * r + 4.166_579_6e-2;
        p = p * r + 1.666_666_5e-1;
        p = p * r + 0.5;
        let y = p * r * r + r + 1.0;
        // 2ⁿ straight from t's bits (its low mantissa bits hold n), with integer ops that
        // vectorise: no float→int conversion and no overflow checks.
        let two_n = f32::from_bits(t.to_bits().wrapping_add(127u32.wrapping_sub(MAGIC.to_bits())) << 23);
        y * two_n
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
    fn exp_shift_sum_impl(row: &mut [f32], m: f32) -> f32 {
        let mut lanes = [0f32; LANES];
        let mut chunks = row.chunks_exact_mut(LANES);
        for c in &mut chunks {
            for l in 0..LANES {
                c[l] = exp(c[l] - m);
                lanes[l] += c[l];
            }
        }
        let mut sum: f32 = lanes.iter().sum();
        for v in chunks.into_remainder() {
            *v = exp(*v - m);
            sum += *v;
        }
        sum
    }

    #[inline(always)]
    fn exp_shift_sum_with_logit_impl(row: &mut [f32], m: f32) -> (f32, f32) {
        let mut sums = [0f32; LANES];
        let mut pls = [0f32; LANES];
        let mut chunks = row.chunks_exact_mut(LANES);
        for c in &mut chunks {
            for l in 0..LANES {
                let shifted = c[l] - m;
                c[l] = exp(shifted);
                sums[l] += c[l];
                pls[l] += c[l] * shifted;
            }
        }
        let (mut sum, mut pl): (f32, f32) = (sums.iter().sum(), pls.iter().sum());
        for v in chunks.into_remainder() {
            let shifted = *v - m;
            *v = exp(shifted);
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

    fn has_avx2() -> bool {
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(not(target_arch = "x86_64"))]
            {
                false
            }
        })
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
    multiversion!(exp_shift_sum, exp_shift_sum_avx2, exp_shift_sum_impl, (row: &mut [f32], m: f32) -> f32);
    multiversion!(exp_shift_sum_with_logit, exp_shift_sum_with_logit_avx2, exp_shift_sum_with_logit_impl, (row: &mut [f32], m: f32) -> (f32, f32));
    multiversion!(dot, dot_avx2, dot_impl, (a: &[f32], b: &[f32]) -> f32);

    #[cfg(test)]
    mod tests {
        #[test]
        fn polynomial_exp_is_accurate() {
            let mut worst = 0f64;
            for i in 0..=87_000 {
                let x = -(i as f32) / 1000.0;
                let rel = ((super::exp(x) as f64) / (x as f64).exp() - 1.0).abs();
                worst = worst.max(rel);
            }
            assert!(worst < 5e-7, "worst relative error {worst}");
            let mut row: Vec<f32> = (0..37).map(|i| -(i as f32) * 0.3).collect();
            let want: f32 = row.iter().map(|v| (v - 0.5).exp()).sum();
            let got = super::exp_shift_sum(&mut row, 0.5);
            assert!((got - want).abs() < 1e-5 * want);
            assert_eq!(super::max(&[1.0, 7.0, -3.0, 2.0, 0.0, 1.0, 1.0, 1.0, 6.5, 9.5]), 9.5);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
