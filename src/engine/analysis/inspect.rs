//! "Which training patches made this pixel?": the full softmax of one pixel, ranked.
//!
//! One pixel is cheap enough to do on the host in float64, which also makes it an
//! independent check of the device path. Each machine lists its candidates in its own
//! `inspect` ([`crate::engine::machine::Machine::inspect`]); the ranking and summary are here.

use super::super::denoiser::Denoiser;

/// One training candidate's share of a pixel's vote.
#[derive(Clone, Debug, PartialEq)]
pub struct Vote {
    pub image: usize,
    /// Centre of the training patch (for the equivariant machine: the shift's source pixel).
    pub y: usize,
    pub x: usize,
    pub weight: f64,
}

/// A pixel's ranked votes plus how spread out they are.
#[derive(Clone, Debug, PartialEq)]
pub struct Inspection {
    /// Highest weight first, at most `top` of them.
    pub votes: Vec<Vote>,
    pub candidates: usize,
    /// Sum of all weights (1 up to rounding): a check, shown in tests.
    pub weight_sum: f64,
    /// Entropy of the weights in nats.
    pub entropy: f64,
    /// x̂₀ at the pixel (C values): every candidate's value weighted, not only the top ones.
    pub x0: Vec<f64>,
    /// How many of the largest weights it takes to reach 90% of the total (for the Gaussian
    /// machine: input pixels carrying 90% of the filter's absolute weight).
    pub count_90: usize,
    /// The Gaussian machine's Wiener-filter row for the pixel, per input pixel ([H·W]; summed
    /// over input channels, averaged over the pixel's channels): which pixels of z − μ it
    /// reads, and how much. None for the other machines.
    pub filter: Option<Vec<f64>>,
    /// The PCA-locality machine's learned window of the pixel (pixel indices y·W + x,
    /// ascending). None for the machines with square windows.
    pub window: Option<Vec<usize>>,
}

/// A candidate before ranking: its vote (weight still 0) and its logit.
pub(crate) type Candidate = (Vote, f64);

/// x − a·m in float64, flat, with the trailing zero slot.
pub(crate) fn centred_x(den: &Denoiser, x: &[f32], a: f64) -> Vec<f64> {
    // x is [C, H, W] on its canvas, whatever its size: one plane per channel.
    let hw = x.len() / den.shape.c;
    x.iter().enumerate().map(|(i, &v)| v as f64 - a * den.mean[i / hw] as f64).chain([0.0]).collect()
}

/// Value `i` of centred training image `n` (0 at the trailing zero slot, i = C·H·W).
pub(crate) fn centred_value(den: &Denoiser, n: usize, i: usize) -> f64 {
    let len = den.shape.len();
    if i == len { 0.0 } else { den.host_centred[n * len + i] as f64 }
}

/// Softmax over the candidates' logits, ranked. Each vote's value is training image `image`
/// at (y, x): its patch centre, the pixel itself (ideal, local) or the shifted source
/// (equivariant).
pub(crate) fn rank_candidates(den: &Denoiser, cands: Vec<Candidate>, top: usize) -> Inspection {
    let s = den.shape;
    let hw = s.pixels();
    let weights = softmax(&cands.iter().map(|c| c.1).collect::<Vec<_>>());
    let mut x0: Vec<f64> = den.mean.iter().map(|&m| m as f64).collect();
    let votes: Vec<Vote> = cands
        .into_iter()
        .zip(weights)
        .map(|((vote, _), weight)| {
            for (ch, v) in x0.iter_mut().enumerate() {
                *v += weight * centred_value(den, vote.image, ch * hw + vote.y * s.w + vote.x);
            }
            Vote { weight, ..vote }
        })
        .collect();
    ranked(votes, x0, top)
}

/// Ranked votes for a pixel whose value is Σₙ qₙ φₙ at the pixel itself.
pub(crate) fn pixel_votes(
    den: &Denoiser,
    q: &[f64],
    (y, px): (usize, usize),
    top: usize,
    window: Option<Vec<usize>>,
) -> Inspection {
    let s = den.shape;
    let (hw, len) = (s.pixels(), s.len());
    let pixel = y * s.w + px;
    let x0 = (0..s.c)
        .map(|ch| {
            den.mean[ch] as f64
                + q.iter().enumerate().map(|(n, w)| w * den.host_centred[n * len + ch * hw + pixel] as f64).sum::<f64>()
        })
        .collect();
    let votes = q.iter().enumerate().map(|(image, &weight)| Vote { image, y, x: px, weight }).collect();
    Inspection { window, ..ranked(votes, x0, top) }
}

/// Softmax of float64 logits.
pub(crate) fn softmax(logits: &[f64]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
    let z: f64 = e.iter().sum();
    e.into_iter().map(|v| v / z).collect()
}

/// Sorts weighted votes, highest first, and summarises them: entropy, 90% count, the top few.
fn ranked(mut votes: Vec<Vote>, x0: Vec<f64>, top: usize) -> Inspection {
    let sum: f64 = votes.iter().map(|v| v.weight).sum();
    let entropy = -votes.iter().filter(|v| v.weight > 0.0).map(|v| v.weight * v.weight.ln()).sum::<f64>();
    let candidates = votes.len();
    votes.sort_by(|a, b| b.weight.total_cmp(&a.weight));
    let mut acc = 0.0;
    let count_90 = votes.iter().take_while(|v| (acc < 0.9 * sum, acc += v.weight).0).count().max(1);
    votes.truncate(top);
    Inspection { votes, candidates, weight_sum: sum, entropy, x0, count_90, filter: None, window: None }
}
