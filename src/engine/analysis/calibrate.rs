//! Fitting the patch size per step to a trained network, the way Kamb & Ganguli calibrated
//! their presets: along the network's own DDIM run, at every step pick the odd P whose ELS
//! score has the highest cosine similarity with the network's score, then take the median P
//! over seeds.
//!
//! The score of a denoiser at x_t is −(x_t − √ᾱ·x̂₀)/(1 − ᾱ); the factor is common to both, so
//! the cosine is that of x_t − √ᾱ·x̂₀.

use super::super::control::{Cancelled, Control};
use super::super::denoiser::Denoiser;
use super::super::geometry::Boundary;
use super::super::machine::{Call, MachineKind};
use super::super::sampling::sampler::{Sampler, SamplerConfig};

/// One step of the fit.
#[derive(Clone, Debug, PartialEq)]
pub struct StepFit {
    pub t: f64,
    /// The best P for each seed.
    pub best: Vec<u32>,
    /// Cosine similarity of every candidate's score with the reference's, per seed.
    pub cosine: Vec<Vec<f64>>,
    /// The median of `best` (the lower one of an even count, so it stays odd).
    pub median: u32,
}

/// Cosine similarity of the two scores at `x` (ᾱ = `ab`), from the two x̂₀.
pub fn score_cosine(x: &[f32], ab: f64, x0_a: &[f32], x0_b: &[f32]) -> f64 {
    let a = ab.sqrt();
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for ((&xv, &p), &q) in x.iter().zip(x0_a).zip(x0_b) {
        let (u, v) = (xv as f64 - a * p as f64, xv as f64 - a * q as f64);
        dot += u * v;
        na += u * u;
        nb += v * v;
    }
    if na == 0.0 || nb == 0.0 { 0.0 } else { dot / (na.sqrt() * nb.sqrt()) }
}

/// Fits P per step of `reference`'s run (its machine, e.g. the CNN, and time grid) for each
/// seed; the candidates are ELS machines with `boundary` at each P in `candidates`.
/// `progress(done, total)` counts denoiser calls.
pub fn calibrate(
    den: &mut Denoiser,
    reference: &SamplerConfig,
    seeds: &[u64],
    candidates: &[u32],
    boundary: Boundary,
    ctl: &mut Control,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<StepFit>, Cancelled> {
    assert!(!seeds.is_empty() && !candidates.is_empty(), "calibration needs seeds and candidate sizes");
    let steps = reference.steps;
    let total = seeds.len() * steps * (1 + candidates.len());
    let mut done = 0;
    let mut fits: Vec<StepFit> = (0..steps)
        .map(|k| StepFit { t: reference.t_of_step(k), best: Vec::new(), cosine: Vec::new(), median: 0 })
        .collect();
    for &seed in seeds {
        let mut sampler = Sampler::new(SamplerConfig { seed, ..reference.clone() }, den.shape(), None);
        while let Some(step) = sampler.step(den, ctl) {
            let record = step?;
            done += 1;
            progress(done, total);
            let cos: Vec<f64> = candidates
                .iter()
                .map(|&p| {
                    let call = Call::new(MachineKind::Els, boundary, p as usize, record.alpha_bar);
                    let x0 = den.denoise(&record.x_t, &call, ctl)?.x0;
                    done += 1;
                    progress(done, total);
                    Ok(score_cosine(&record.x_t, record.alpha_bar, &record.x0_hat, &x0))
                })
                .collect::<Result<_, Cancelled>>()?;
            // The first of equal maxima: the smallest P that fits best.
            let best = (0..cos.len()).fold(0, |b, i| if cos[i] > cos[b] { i } else { b });
            let fit = &mut fits[record.step];
            fit.best.push(candidates[best]);
            fit.cosine.push(cos);
        }
    }
    for fit in &mut fits {
        let mut v = fit.best.clone();
        v.sort_unstable();
        fit.median = v[(v.len() - 1) / 2];
    }
    Ok(fits)
}

/// The fit over several runs of [`calibrate`] on the same grid (one seed each, say, from
/// shards of a sweep), seeds in the order given: the same as one run over all of them.
pub fn combine(parts: &[Vec<StepFit>]) -> Vec<StepFit> {
    let steps = parts.first().map_or(0, |p| p.len());
    (0..steps)
        .map(|k| {
            let mut fit = StepFit { t: parts[0][k].t, best: Vec::new(), cosine: Vec::new(), median: 0 };
            for part in parts {
                fit.best.extend_from_slice(&part[k].best);
                fit.cosine.extend(part[k].cosine.iter().cloned());
            }
            let mut v = fit.best.clone();
            v.sort_unstable();
            fit.median = v[(v.len() - 1) / 2];
            fit
        })
        .collect()
}
