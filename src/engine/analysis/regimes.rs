//! When structure appears: the two transitions Biroli, Bonnaire, de Bortoli & Mézard
//! ("Dynamical regimes of diffusion models", Nat. Commun. 2024) predict from the training set
//! alone, and what an Ideal run measures of them.
//!
//! Their forward process is x(t) = e^{−t} x₀ + √(1 − e^{−2t}) z; ours is
//! x_t = √ᾱ x₀ + √(1 − ᾱ) ε, so ᾱ = e^{−2t} and their Δ_t = 1 − ᾱ.
//!
//! ```text
//! speciation  ᾱ_S Λ = 1 − ᾱ_S                         ᾱ_S = 1 / (1 + Λ)
//! collapse    ½ Σᵢ ln(1 + ᾱ_C λᵢ / (1 − ᾱ_C)) = ln N
//! ```
//!
//! * **Speciation**: going backwards, classes separate when the signal along the covariance's
//!   top direction (variance ᾱΛ) outgrows the noise (1 − ᾱ). Their t_S = ½ ln Λ is this
//!   condition with Δ_t ≈ 1, i.e. ᾱ_S = 1/Λ; we keep the exact balance.
//! * **Collapse**: the run snaps onto one training image when N Gaussians of variance 1 − ᾱ
//!   can no longer cover the noised data, i.e. when ln N equals the noised data's entropy
//!   above the noise's own. That excess entropy is taken in their Gaussian approximation,
//!   from the covariance spectrum λᵢ; it grows with ᾱ, so bisection finds ᾱ_C.
//!
//! The measured counterparts come from the exact empirical posterior of an Ideal run,
//! w_n ∝ exp(−|x_t − √ᾱ φ_n|² / (2(1 − ᾱ))), in float64: the step where the top weight first
//! reaches ½ (collapse), and the step from which the sample's class stays the final one
//! (speciation). A sample's class at a step is the one holding at least half the posterior,
//! or none yet: under DDIM the class with the largest sum is often the final one from the
//! first step, at a posterior barely above uniform, which says more about the seed than about
//! when the class was decided.

use super::super::control::{Cancelled, Control};
use super::super::denoiser::Denoiser;
use super::super::machine::MachineKind;
use super::super::machines::gaussian::{MAX_GAUSSIAN_VALUES, gaussian_model};
use super::super::sampling::sampler::{Sampler, SamplerConfig};

/// The two predicted transitions of a training set, as noise levels ᾱ.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Prediction {
    pub images: usize,
    /// Λ, the largest eigenvalue of the training set's covariance (population, values in
    /// [−1, 1]).
    pub top_eigenvalue: f64,
    pub speciation_alpha_bar: f64,
    pub collapse_alpha_bar: f64,
}

/// Both transitions from the covariance spectrum of `n` images.
pub fn predict(spectrum: &[f64], n: usize) -> Prediction {
    let top = spectrum.iter().fold(0f64, |m, &l| m.max(l));
    let excess = |ab: f64| 0.5 * spectrum.iter().map(|&l| (ab * l.max(0.0) / (1.0 - ab)).ln_1p()).sum::<f64>();
    let target = (n.max(1) as f64).ln();
    // Bisection in logit(ᾱ): the excess entropy rises from 0 (ᾱ → 0) without bound (ᾱ → 1).
    let (mut lo, mut hi) = (-40f64, 40f64);
    let sigmoid = |z: f64| 1.0 / (1.0 + (-z).exp());
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if excess(sigmoid(mid)) < target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Prediction {
        images: n,
        top_eigenvalue: top,
        speciation_alpha_bar: 1.0 / (1.0 + top),
        collapse_alpha_bar: sigmoid(0.5 * (lo + hi)),
    }
}

/// The prediction for the denoiser's training set. Its covariance is decomposed once and kept
/// for the Gaussian machines, which decompose the same one.
pub fn predict_for(den: &mut Denoiser, ctl: &Control) -> Result<Result<Prediction, String>, Cancelled> {
    let d = den.shape.len();
    if den.n < 2 {
        return Ok(Err("speciation and collapse need at least two training images".into()));
    }
    if d.min(den.n) > MAX_GAUSSIAN_VALUES {
        return Ok(Err(format!(
            "speciation and collapse need the covariance spectrum of {} images of {d} values; \
             decomposing it is limited to min(N, C·H·W) ≤ {MAX_GAUSSIAN_VALUES}",
            den.n
        )));
    }
    let model = gaussian_model(den, ctl)?;
    Ok(Ok(predict(&model.lambda, den.n)))
}

/// Where a run's ᾱ reaches `alpha_bar`, in steps: k + f means between step k and k + 1, at the
/// fraction f of the way in log signal-to-noise ratio. 0 when the run starts past it (a
/// branch or a late t_start); None when even the last denoised step is short of it.
pub fn step_of(cfg: &SamplerConfig, alpha_bar: f64) -> Option<f64> {
    let ab = |k: usize| cfg.schedule.alpha_bar(cfg.t_of_step(k));
    let snr = |a: f64| (a / (1.0 - a)).ln();
    if ab(0) >= alpha_bar {
        return Some(0.0);
    }
    (1..cfg.steps).find(|&k| ab(k) >= alpha_bar).map(|k| {
        let (lo, hi) = (snr(ab(k - 1)), snr(ab(k)));
        let f = if hi > lo { (snr(alpha_bar) - lo) / (hi - lo) } else { 1.0 };
        (k - 1) as f64 + f.clamp(0.0, 1.0)
    })
}

/// What the exact empirical posterior says at one step.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StepPosterior {
    pub alpha_bar: f64,
    /// The largest weight of one training image.
    pub top_weight: f64,
    /// The class with the largest summed weight and that sum (None without labels).
    pub class: Option<(usize, f64)>,
}

/// The posterior over the `n` training `images` ([N, D], as given) of x_t at ᾱ, reduced to
/// its top weight and (with `labels`, one class index per image) its top class.
pub fn posterior(images: &[f32], n: usize, labels: Option<&[usize]>, x_t: &[f32], alpha_bar: f64) -> StepPosterior {
    let d = x_t.len();
    assert_eq!(images.len(), n * d, "images do not match N×D");
    let a = alpha_bar.sqrt();
    let two_s2 = 2.0 * (1.0 - alpha_bar);
    let logits: Vec<f64> = images
        .chunks_exact(d)
        .map(|phi| -phi.iter().zip(x_t).map(|(&p, &x)| (x as f64 - a * p as f64).powi(2)).sum::<f64>() / two_s2)
        .collect(); // [N]
    let max = logits.iter().fold(f64::NEG_INFINITY, |m, &l| m.max(l));
    let w: Vec<f64> = logits.iter().map(|&l| (l - max).exp()).collect();
    let total: f64 = w.iter().sum();
    let top_weight = w.iter().fold(0f64, |m, &v| m.max(v)) / total;
    let class = labels.filter(|l| !l.is_empty()).map(|labels| {
        let mut sums = vec![0f64; labels.iter().max().map_or(0, |&m| m + 1)];
        for (&c, &v) in labels.iter().zip(&w) {
            sums[c] += v / total;
        }
        // First class of the largest sum: deterministic on ties.
        sums.iter().enumerate().fold((0, f64::NEG_INFINITY), |best, (c, &s)| if s > best.1 { (c, s) } else { best })
    });
    StepPosterior { alpha_bar, top_weight, class }
}

/// One seed's run through the eyes of the posterior.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Trace {
    pub seed: u64,
    pub steps: Vec<StepPosterior>,
}

impl Trace {
    /// The first step whose top weight reaches ½.
    pub fn collapse_step(&self) -> Option<usize> {
        self.steps.iter().position(|s| s.top_weight >= 0.5)
    }

    /// The first step from which the final class holds at least half the posterior at every
    /// later step (None without labels, or when no class holds half at the end).
    pub fn speciation_step(&self) -> Option<usize> {
        let decided = |s: &StepPosterior| s.class.filter(|c| c.1 >= 0.5).map(|c| c.0);
        let last = decided(self.steps.last()?)?;
        let changed = self.steps.iter().rposition(|s| decided(s) != Some(last));
        Some(changed.map_or(0, |k| k + 1))
    }
}

/// Runs the Ideal machine from `cfg`'s seed and reads its posterior at every step.
pub fn trace(
    den: &mut Denoiser,
    cfg: &SamplerConfig,
    labels: Option<&[usize]>,
    init: Option<Vec<f32>>,
    ctl: &mut Control,
) -> Result<Trace, Cancelled> {
    let cfg = SamplerConfig { machine: MachineKind::Ideal, canvas: None, ..cfg.clone() };
    let images = den.host_images.clone();
    let mut sampler = Sampler::new(cfg.clone(), den.shape, init);
    let mut steps = Vec::with_capacity(cfg.steps);
    while let Some(step) = sampler.step(den, ctl) {
        let step = step?;
        steps.push(posterior(&images, den.n, labels, &step.x_t, step.alpha_bar));
    }
    Ok(Trace { seed: cfg.seed, steps })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::NoiseSchedule;

    #[test]
    fn the_collapse_balances_ln_n_and_speciation_the_top_direction() {
        let spectrum = [9.0, 4.0, 1.0, 0.25, 0.0];
        let p = predict(&spectrum, 50);
        assert_eq!(p.top_eigenvalue, 9.0);
        assert!((p.speciation_alpha_bar - 0.1).abs() < 1e-15, "{}", p.speciation_alpha_bar);
        let ab = p.collapse_alpha_bar;
        let excess: f64 = spectrum.iter().map(|&l| 0.5 * (1.0 + ab * l / (1.0 - ab)).ln()).sum();
        assert!((excess - 50f64.ln()).abs() < 1e-9, "excess {excess} at ᾱ {ab}");
        // More images need more signal before one of them can be singled out.
        assert!(predict(&spectrum, 5000).collapse_alpha_bar > ab);
    }

    #[test]
    fn step_of_interpolates_in_log_snr_and_says_when_a_run_never_gets_there() {
        let cfg = SamplerConfig { steps: 20, schedule: NoiseSchedule::cosine(), ..SamplerConfig::default() };
        let ab = |k: usize| cfg.schedule.alpha_bar(cfg.t_of_step(k));
        assert_eq!(step_of(&cfg, ab(5)), Some(5.0));
        let between = step_of(&cfg, (ab(7) * ab(8)).sqrt()).unwrap();
        assert!(between > 7.0 && between < 8.0, "{between}");
        assert_eq!(step_of(&cfg, 0.0), Some(0.0));
        assert_eq!(step_of(&cfg, 0.999_999), None);
    }

    #[test]
    fn the_posterior_weighs_the_nearer_image_and_sums_classes() {
        // Two 1-pixel images at ±1 and a third at +1: x_t near +1 at small noise.
        let images = [1.0f32, -1.0, 1.0];
        let p = posterior(&images, 3, Some(&[0, 1, 1]), &[0.9], 0.9);
        assert!((p.top_weight - 0.5).abs() < 1e-6, "two equal images share the weight: {}", p.top_weight);
        let (class, mass) = p.class.unwrap();
        // Class 1 holds one of the two near images and the far one, class 0 the other.
        let w_far = (-(0.9f64 + 0.9f64.sqrt()).powi(2) / 0.2 + (0.9f64 - 0.9f64.sqrt()).powi(2) / 0.2).exp();
        let expected = (1.0 + w_far) / (2.0 + w_far);
        assert_eq!(class, 1);
        assert!((mass - expected).abs() < 1e-12, "{mass} vs {expected}");
        let t = Trace {
            seed: 0,
            steps: [(0, 0.9), (1, 0.6), (0, 0.4), (0, 0.7), (0, 0.8)]
                .iter()
                .zip([0.1, 0.4, 0.6, 0.9, 1.0])
                .map(|(&c, w)| StepPosterior { alpha_bar: 0.0, top_weight: w, class: Some(c) })
                .collect(),
        };
        assert_eq!(t.collapse_step(), Some(2));
        // Class 0 at step 2 holds under half: undecided, so it settles at step 3.
        assert_eq!(t.speciation_step(), Some(3));
    }
}
