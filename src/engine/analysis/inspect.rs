//! "Which training patches made this pixel?": the full softmax of one pixel, ranked.
//!
//! One pixel is cheap enough to do on the host in float64, which also makes it an
//! independent check of the device path. Each machine lists its candidates in its own
//! `inspect` ([`crate::engine::machine::Machine::inspect`]); the ranking and summary are here.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};

use super::super::control::{Cancelled, Control};
use super::super::denoiser::Denoiser;
use super::super::geometry::ImageShape;

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

/// Every window candidate of one pixel, for the inspector and the Jacobian alike: for each
/// training image n and each key window k (`keys`: flat [K, D] indices into an image, its
/// zero slot outside), `visit(n, k, logit, values)` with logit −‖q − a·k‖²/2σ² and the key's
/// D values. Checks `ctl` once per training image.
pub(crate) fn visit_windows(
    den: &Denoiser,
    query: &[f64],
    keys: &[i64],
    (a, s2): (f64, f64),
    ctl: &Control,
    mut visit: impl FnMut(usize, usize, f64, &[f64]),
) -> Result<(), Cancelled> {
    let d = query.len().max(1);
    let mut values = vec![0f64; query.len()];
    for n in 0..den.n {
        ctl.check()?;
        for (k, key) in keys.chunks_exact(d).enumerate() {
            let mut dist = 0f64;
            for ((v, &i), &qv) in values.iter_mut().zip(key).zip(query) {
                *v = centred_value(den, n, i as usize);
                dist += (qv - a * *v).powi(2);
            }
            visit(n, k, -dist / (2.0 * s2), &values);
        }
    }
    Ok(())
}

/// Ranks a pixel's candidates as they are made, in memory independent of how many there are
/// (one click on 128×128 RGB with 2000 images is 33 million of them: ranking a list of them all
/// took 2.4 GB): the `top` largest in a heap; the softmax's normaliser, entropy and x̂₀ folded
/// online against the running largest logit; and the 90% count from a histogram of the logits
/// (1024 bins per nat, so exact for ties and within 0.1% of one weight otherwise). Bins more
/// than 64 nats below the largest logit are dropped: all of them together weigh less than
/// e⁻³⁶ of the total, for any number of candidates a machine can have.
pub(crate) struct Ranker {
    top: usize,
    /// The `top` largest so far, smallest first out.
    heap: BinaryHeap<Reverse<Ranked>>,
    /// The largest logit so far, and against it: Σ e^(l − max), Σ e^(l − max)·(l − max) and
    /// each channel's Σ e^(l − max)·value.
    max: f64,
    s0: f64,
    s1: f64,
    xs: Vec<f64>,
    candidates: usize,
    /// Bin ⌊1024·l⌋ → (count, Σ e^(l − bin's lower edge)).
    bins: HashMap<i64, (u64, f64)>,
    /// Vote values are read from here: the centred training images, [C, H, W] each.
    shape: ImageShape,
}

/// A vote with its logit; the later of two equal logits ranks lower (deterministic ties).
struct Ranked {
    logit: f64,
    order: usize,
    vote: Vote,
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Ranked {}
impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        self.logit.total_cmp(&other.logit).then(other.order.cmp(&self.order))
    }
}

const BINS_PER_NAT: f64 = 1024.0;
const KEEP_NATS: f64 = 64.0;

impl Ranker {
    pub(crate) fn new(den: &Denoiser, top: usize) -> Self {
        Self {
            top: top.max(1),
            heap: BinaryHeap::new(),
            max: f64::NEG_INFINITY,
            s0: 0.0,
            s1: 0.0,
            xs: vec![0.0; den.shape.c],
            candidates: 0,
            bins: HashMap::new(),
            shape: den.shape,
        }
    }

    /// One candidate: training image `vote.image` at (y, x) (its patch centre, the pixel
    /// itself, or the shifted source), with its logit.
    pub(crate) fn push(&mut self, den: &Denoiser, vote: Vote, logit: f64) {
        if logit > self.max {
            // Rescale what is folded so far to the new largest logit.
            if self.s0 > 0.0 {
                let f = (self.max - logit).exp();
                self.s1 = f * (self.s1 + (self.max - logit) * self.s0);
                self.s0 *= f;
                self.xs.iter_mut().for_each(|v| *v *= f);
            }
            self.max = logit;
            if self.bins.len() > 1 << 17 {
                let floor = ((logit - KEEP_NATS) * BINS_PER_NAT).floor() as i64;
                self.bins.retain(|&b, _| b >= floor);
            }
        }
        let e = (logit - self.max).exp();
        self.s0 += e;
        self.s1 += e * (logit - self.max);
        let (hw, w) = (self.shape.pixels(), self.shape.w);
        for (ch, v) in self.xs.iter_mut().enumerate() {
            *v += e * centred_value(den, vote.image, ch * hw + vote.y * w + vote.x);
        }
        if logit >= self.max - KEEP_NATS {
            let bin = (logit * BINS_PER_NAT).floor();
            let entry = self.bins.entry(bin as i64).or_insert((0, 0.0));
            entry.0 += 1;
            entry.1 += (logit - bin / BINS_PER_NAT).exp();
        }
        let ranked = Ranked { logit, order: self.candidates, vote };
        self.candidates += 1;
        if self.heap.len() < self.top {
            self.heap.push(Reverse(ranked));
        } else if self.heap.peek().is_some_and(|Reverse(low)| ranked > *low) {
            self.heap.pop();
            self.heap.push(Reverse(ranked));
        }
    }

    /// The ranked votes and their summary.
    pub(crate) fn finish(self, den: &Denoiser) -> Inspection {
        let z = self.s0;
        let x0 = den.mean.iter().zip(&self.xs).map(|(&m, &v)| m as f64 + v / z).collect();
        let entropy = if z > 0.0 { z.ln() - self.s1 / z } else { 0.0 };
        // Each bin's share of the weight, largest logits first.
        let mut bins: Vec<(i64, u64, f64)> = self
            .bins
            .into_iter()
            .map(|(b, (count, sum))| (b, count, (b as f64 / BINS_PER_NAT - self.max).exp() * sum / z))
            .collect();
        bins.sort_by_key(|b| Reverse(b.0));
        let total: f64 = bins.iter().map(|b| b.2).sum();
        let (mut acc, mut count_90) = (0.0, 0usize);
        for &(_, count, mass) in &bins {
            if acc + mass >= 0.9 * total {
                // Within the bin the weights agree to 0.1%: as many as the rest needs.
                let need = ((0.9 * total - acc) / (mass / count as f64)).ceil();
                count_90 += (need.max(1.0) as u64).min(count) as usize;
                break;
            }
            acc += mass;
            count_90 += count as usize;
        }
        let votes = self
            .heap
            .into_sorted_vec()
            .into_iter()
            .map(|Reverse(r)| Vote { weight: (r.logit - self.max).exp() / z, ..r.vote })
            .collect();
        Inspection {
            votes,
            candidates: self.candidates,
            weight_sum: total,
            entropy,
            x0,
            count_90: count_90.max(1),
            filter: None,
            window: None,
        }
    }
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
