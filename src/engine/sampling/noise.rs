//! Seeded Gaussian noise that is identical on every device and platform.
//!
//! The noise is drawn on the host from a counter-based generator keyed by (seed, stream), so a
//! run branched at step k draws the same fresh noise for step k+1 as the original run did.

/// SplitMix64: tiny, fast, and good enough to feed Box–Muller and subset shuffles.
pub fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `len` standard normal samples for `seed`, in independent `stream`s (0 = the initial x_T,
/// k = the fresh noise of step k when η > 0).
pub fn gaussian(seed: u64, stream: u64, len: usize) -> Vec<f32> {
    let mut state = seed ^ stream.wrapping_mul(0xD6E8_FEB8_6659_FD93);
    splitmix(&mut state);
    let mut out = Vec::with_capacity(len + 1);
    while out.len() < len {
        let u1 = ((splitmix(&mut state) >> 11) as f64 + 1.0) / (1u64 << 53) as f64; // (0, 1]
        let u2 = (splitmix(&mut state) >> 11) as f64 / (1u64 << 53) as f64;
        let radius = (-2.0 * u1.ln()).sqrt();
        let angle = std::f64::consts::TAU * u2;
        out.push((radius * angle.cos()) as f32);
        out.push((radius * angle.sin()) as f32);
    }
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn standard_normal_and_reproducible() {
        let a = super::gaussian(7, 0, 100_000);
        assert_eq!(a, super::gaussian(7, 0, 100_000));
        assert_ne!(a[..10], super::gaussian(7, 1, 10)[..]);
        let mean = a.iter().map(|&v| v as f64).sum::<f64>() / a.len() as f64;
        let var = a.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / a.len() as f64;
        assert!(mean.abs() < 0.01, "{mean}");
        assert!((var - 1.0).abs() < 0.02, "{var}");
    }
}
