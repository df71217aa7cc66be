//! The DDIM sampler loop: from t_start down to 0, one denoiser call per step, yielding a
//! record for every step so callers can stream the whole trajectory.

use serde::{Deserialize, Serialize};

use super::super::control::{Cancelled, Control};
use super::super::denoiser::Denoiser;
use super::super::geometry::{Boundary, ImageShape};
use super::super::machine::{Call, MAX_CANVAS, MachineKind, PixelMaps};
use super::noise::gaussian;
use super::paint::{Edit, LocalityMap};
use super::patch::PatchSchedule;
use super::schedule::NoiseSchedule;

/// Most steps a run may have (the studio's slider and the CLI share it).
pub const MAX_STEPS: usize = 10_000;
/// Range of the locality scale: every P of the schedule is multiplied by it.
pub const LOCALITY_SCALE: (f64, f64) = (0.25, 3.0);

/// Everything that decides a trajectory once the training set is fixed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplerConfig {
    pub machine: MachineKind,
    pub boundary: Boundary,
    pub schedule: NoiseSchedule,
    pub patch: PatchSchedule,
    /// Multiplies every P of the patch schedule (then rounded to odd and clamped).
    pub locality_scale: f64,
    pub steps: usize,
    pub t_start: f64,
    /// 0 = deterministic DDIM; 1 = DDPM-like fresh noise each step.
    pub eta: f64,
    pub seed: u64,
    /// The canvas [H, W] when it is not the training images' size (ELS and the CNN).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canvas: Option<[usize; 2]>,
    /// A painted per-pixel multiplier of every step's P (ELS and Local).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locality_map: Option<LocalityMap>,
    /// Changes of the state before their steps are denoised, in the order they are made.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub edits: Vec<Edit>,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        Self {
            machine: MachineKind::Els,
            boundary: Boundary::Zeros,
            schedule: NoiseSchedule::cosine(),
            patch: PatchSchedule::default(),
            locality_scale: 1.0,
            steps: 20,
            t_start: 1.0,
            eta: 0.0,
            seed: 0,
            canvas: None,
            locality_map: None,
            edits: Vec::new(),
        }
    }
}

impl SamplerConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.steps == 0 || self.steps > MAX_STEPS {
            return Err(format!("steps must be between 1 and {MAX_STEPS}, not {}", self.steps));
        }
        if !(self.t_start > 0.0 && self.t_start <= 1.0) {
            return Err(format!("t_start must be in (0, 1], not {}", self.t_start));
        }
        if !(0.0..=1.0).contains(&self.eta) {
            return Err(format!("eta (η) must be in [0, 1], not {}", self.eta));
        }
        if !(LOCALITY_SCALE.0..=LOCALITY_SCALE.1).contains(&self.locality_scale) {
            return Err(format!(
                "locality_scale must be between {} and {}, not {}",
                LOCALITY_SCALE.0, LOCALITY_SCALE.1, self.locality_scale
            ));
        }
        self.schedule.validate().map_err(|e| format!("schedule: {e}"))?;
        self.patch.validate(self.steps).map_err(|e| format!("patch: {e}"))?;
        if let Some([h, w]) = self.canvas
            && (h == 0 || w == 0 || h > MAX_CANVAS || w > MAX_CANVAS)
        {
            return Err(format!("canvas {h}×{w} is out of range: each side must be 1 to {MAX_CANVAS} pixels"));
        }
        Ok(())
    }

    /// Why a run from seeded noise (no init) that starts at `t_start` can only end as noise,
    /// or None. The seed is read as x at t_start: at t = 1 it is pure noise, as it should be;
    /// below t ≈ 0.7 (ᾱ > 0.2 on the cosine schedule) the sampler takes the noise for a
    /// mostly-clean image and only polishes it.
    pub fn noise_start_warning(&self) -> Option<String> {
        let ab = self.schedule.alpha_bar(self.t_start);
        (ab > 0.2).then(|| {
            format!(
                "t start {:.2} on pure noise: the noise is read as x at t = {:.2}, {:.0}% signal, so the result can only \
                 be noise; start from t = 1, or give a starting image (--init, or a recipe's init)",
                self.t_start,
                self.t_start,
                100.0 * ab
            )
        })
    }

    /// The shape of x on a training set of `train`'s shape: the canvas, or the training size.
    pub fn canvas_shape(&self, train: ImageShape) -> ImageShape {
        match self.canvas {
            Some([h, w]) => ImageShape { c: train.c, h, w },
            None => train,
        }
    }

    /// What the painted parts need from the training set, checked before a run: the map and
    /// every edit fit the canvas, the steps and the `n` training images, and the machine takes
    /// a locality map.
    pub fn validate_paint(&self, train: ImageShape, n: usize) -> Result<(), String> {
        let s = self.canvas_shape(train);
        if let Some(map) = &self.locality_map {
            map.validate(s.h, s.w)?;
            if !self.machine.needs().pixel_patch {
                return Err(format!(
                    "the {} machine takes no locality map (ELS and Local do: their pixels each see only their own window)",
                    self.machine.title()
                ));
            }
        }
        self.edits.iter().try_for_each(|e| e.validate(self.steps, s.h, s.w, n))
    }

    /// The call of step `k` on a training set of `train`'s shape: its time, machine, P and
    /// canvas.
    pub fn call_at(&self, k: usize, train: ImageShape) -> Call {
        let s = self.canvas_shape(train);
        // A zero-padded window reaches as far as the larger of canvas and training images.
        let patch = self.patch_at(k, s.h.max(train.h), s.w.max(train.w));
        Call::new(self.machine, self.boundary, patch as usize, self.schedule.alpha_bar(self.t_of_step(k)))
            .on_canvas(train, s.h, s.w)
    }

    /// Step `k`'s patch size per canvas pixel under the locality map (None without one).
    pub fn patches_at(&self, k: usize, train: ImageShape) -> Option<Vec<u32>> {
        let map = self.locality_map.as_ref()?;
        let s = self.canvas_shape(train);
        let max_p = self.machine.max_patch(self.boundary, s.h.max(train.h), s.w.max(train.w));
        Some(map.patches(self.patch.raw_at(k, self.t_of_step(k)), self.locality_scale, max_p))
    }

    /// t at the start of step `k` (0 = the first, noisiest step): t_start·(n − k)/n.
    pub fn t_of_step(&self, k: usize) -> f64 {
        self.t_start * (self.steps - k) as f64 / self.steps as f64
    }

    /// Patch size used at step `k` on an h×w image.
    pub fn patch_at(&self, k: usize, h: usize, w: usize) -> u32 {
        let max_p = self.machine.max_patch(self.boundary, h, w);
        self.patch.at(k, self.t_of_step(k), self.locality_scale, max_p)
    }
}

/// One finished sampler step.
#[derive(Clone, Debug, PartialEq)]
pub struct StepRecord {
    /// 0 = the first (noisiest) step.
    pub step: usize,
    pub t: f64,
    pub alpha_bar: f64,
    pub patch: u32,
    /// The state the denoiser saw (after the step's edits), [C, H, W].
    pub x_t: Vec<f32>,
    /// The denoiser's estimate of the clean image, [C, H, W].
    pub x0_hat: Vec<f32>,
    /// Mean softmax entropy over pixels (nats).
    pub entropy: f32,
    /// Nearest training image to x̂₀ and the RMS distance to it (None on a canvas of another
    /// size than the training images).
    pub nearest: Option<(usize, f32)>,
    /// On the last step: the nearest training image under any circular shift, the RMS
    /// distance and the shift (dy, dx) (see [`Denoiser::nearest_training_shifted`]).
    pub nearest_shifted: Option<(usize, f32, (usize, usize))>,
    /// Where each pixel of x̂₀ came from (when the sampler was asked for maps).
    pub maps: Option<PixelMaps>,
}

/// A DDIM run in progress. Call [`Sampler::step`] until it returns `None`.
pub struct Sampler {
    cfg: SamplerConfig,
    x: Vec<f32>,
    next: usize,
    maps: bool,
}

impl Sampler {
    /// Starts at step 0 from `init` (x at t_start) or from seeded Gaussian noise, on the
    /// run's canvas over a training set of `train`'s shape.
    pub fn new(cfg: SamplerConfig, train: ImageShape, init: Option<Vec<f32>>) -> Self {
        let x = init.unwrap_or_else(|| gaussian(cfg.seed, 0, cfg.canvas_shape(train).len()));
        Self { cfg, x, next: 0, maps: false }
    }

    /// Also record each step's provenance maps ([`PixelMaps`]).
    pub fn with_maps(mut self, maps: bool) -> Self {
        self.maps = maps;
        self
    }

    /// [`Sampler::with_maps`] on a sampler already made (a replayed branch builds its own).
    pub fn set_maps(&mut self, maps: bool) {
        self.maps = maps;
    }

    /// Resumes at step `step` from the state x_t that step starts from: branching keeps
    /// every earlier step and recomputes only from here.
    pub fn resume(cfg: SamplerConfig, step: usize, x_t: Vec<f32>) -> Self {
        Self { cfg, x: x_t, next: step, maps: false }
    }

    pub fn config(&self) -> &SamplerConfig {
        &self.cfg
    }
    pub fn next_step(&self) -> usize {
        self.next
    }
    pub fn is_done(&self) -> bool {
        self.next >= self.cfg.steps
    }
    /// The current state (x at the next step's t, or the final image when done).
    pub fn state(&self) -> &[f32] {
        &self.x
    }

    /// Runs the next step; `None` once the run has reached t = 0.
    pub fn step(&mut self, denoiser: &mut Denoiser, ctl: &mut Control) -> Option<Result<StepRecord, Cancelled>> {
        if self.is_done() {
            return None;
        }
        let k = self.next;
        let shape = denoiser.shape();
        let t = self.cfg.t_of_step(k);
        let t_prev = self.cfg.t_of_step(k + 1);
        let ab = self.cfg.schedule.alpha_bar(t);
        let ab_prev = if k + 1 == self.cfg.steps { 1.0 } else { self.cfg.schedule.alpha_bar(t_prev) };
        let call = Call { entropy: true, maps: self.maps, ..self.cfg.call_at(k, shape) };
        let patch = call.effective_patch(shape) as u32;
        let canvas = call.canvas_shape(shape);
        for edit in self.cfg.edits.iter().filter(|e| e.step == k) {
            let image = |n: usize| (denoiser.training_image(n), shape.h, shape.w);
            edit.apply(&mut self.x, canvas.h, canvas.w, ab, &image);
        }
        let result = match self.cfg.patches_at(k, shape) {
            Some(patches) => denoiser.denoise_patch_map(&self.x, &call, &patches, ctl),
            None => denoiser.denoise(&self.x, &call, ctl),
        };
        let out = match result {
            Ok(out) => out,
            Err(c) => return Some(Err(c)),
        };
        let (a, s) = (ab.sqrt(), (1.0 - ab).max(1e-12).sqrt());
        let (a_prev, var_prev) = (ab_prev.sqrt(), (1.0 - ab_prev).max(0.0));
        // DDIM with η: σ_η² = η²·(1−ᾱ')/(1−ᾱ)·(1 − ᾱ/ᾱ'), zero on the last step.
        let var_eta = if self.cfg.eta > 0.0 {
            (self.cfg.eta.powi(2) * var_prev / (s * s) * (1.0 - ab / ab_prev)).clamp(0.0, var_prev)
        } else {
            0.0
        };
        let dir = (var_prev - var_eta).max(0.0).sqrt();
        let fresh = (var_eta > 0.0).then(|| gaussian(self.cfg.seed, k as u64 + 1, self.x.len()));
        let x_t = std::mem::take(&mut self.x);
        self.x = x_t
            .iter()
            .zip(&out.x0)
            .enumerate()
            .map(|(i, (&xv, &x0))| {
                let eps = (xv as f64 - a * x0 as f64) / s;
                let mut next = a_prev * x0 as f64 + dir * eps;
                if let Some(z) = &fresh {
                    next += var_eta.sqrt() * z[i] as f64;
                }
                next as f32
            })
            .collect();
        self.next += 1;
        // Novelty against the training set, where x̂₀ has the training images' size.
        let same_size = call.canvas.is_none();
        let nearest = same_size.then(|| denoiser.nearest_training(&out.x0));
        // The final image's novelty up to translation (one matmul; the last step only).
        let nearest_shifted =
            if same_size && self.next == self.cfg.steps { denoiser.nearest_training_shifted(&out.x0) } else { None };
        Some(Ok(StepRecord {
            step: k,
            t,
            alpha_bar: ab,
            patch,
            x_t,
            x0_hat: out.x0,
            entropy: out.entropy,
            nearest,
            nearest_shifted,
            maps: out.maps,
        }))
    }
}

impl Denoiser {
    /// [`Denoiser::check_call`] for every step of a run: the patch size changes per step.
    /// Also checks the painted parts ([`SamplerConfig::validate_paint`]).
    pub fn check_run(&self, cfg: &SamplerConfig) -> Result<(), String> {
        let s = self.shape();
        cfg.validate_paint(s, self.len())?;
        (0..cfg.steps).try_for_each(|k| match cfg.patches_at(k, s) {
            Some(patches) => self.check_patch_map(&cfg.call_at(k, s), &patches),
            None => self.check_call(&cfg.call_at(k, s)),
        })
    }
}
