//! Everything the user set, persisted between launches (`#[serde(default)]`, so old saves
//! and new fields coexist), and the recipe those settings make.

use serde::{Deserialize, Serialize};

use crate::data::{ColorMode, DatasetSource, LoadOptions};
use crate::engine::patch::PRESETS;
use crate::engine::{Boundary, DeviceChoice, MachineKind, NoiseSchedule, PatchSchedule, SamplerConfig};
use crate::recipe::Recipe;

/// How the patch size is chosen in the UI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PatchMode {
    Preset,
    Constant,
    Ramp,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub dataset: DatasetSource,
    pub class: Option<String>,
    /// 0 = all images.
    pub subset: usize,
    pub color: ColorMode,
    pub machine: MachineKind,
    pub boundary: Boundary,
    pub patch_mode: PatchMode,
    pub preset: String,
    pub constant_p: u32,
    pub ramp: (u32, u32),
    pub locality_scale: f64,
    pub schedule: NoiseSchedule,
    pub steps: usize,
    pub t_start: f64,
    pub eta: f64,
    pub seed: u64,
    pub device: DeviceChoice,
    /// When on, a change keeps the steps before the cursor and recomputes from there.
    pub branch: bool,
    pub fps: f64,
    pub looping: bool,
    pub show_grid: bool,
    pub show_delta: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            dataset: DatasetSource::Bundled("mnist".into()),
            class: None,
            subset: 0,
            color: ColorMode::Auto,
            machine: MachineKind::Els,
            boundary: Boundary::Zeros,
            patch_mode: PatchMode::Preset,
            preset: PRESETS[0].0.into(),
            constant_p: 7,
            ramp: (3, 15),
            locality_scale: 1.0,
            schedule: NoiseSchedule::cosine(),
            steps: 20,
            t_start: 1.0,
            eta: 0.0,
            seed: 0,
            device: DeviceChoice::Auto,
            branch: false,
            fps: 8.0,
            looping: false,
            show_grid: true,
            show_delta: true,
        }
    }
}

impl Settings {
    pub fn patch_schedule(&self) -> PatchSchedule {
        match self.patch_mode {
            PatchMode::Preset => PatchSchedule::Preset { name: self.preset.clone() },
            PatchMode::Constant => PatchSchedule::Constant { p: self.constant_p | 1 },
            PatchMode::Ramp => {
                PatchSchedule::Ramp { p_min: self.ramp.0.min(self.ramp.1) | 1, p_max: self.ramp.1.max(self.ramp.0) | 1 }
            }
        }
    }

    pub fn load_options(&self) -> LoadOptions {
        LoadOptions {
            class: self.class.clone(),
            subset: (self.subset > 0).then_some(self.subset),
            subset_seed: 0,
            size: None,
            color: self.color,
        }
    }

    pub fn sampler(&self) -> SamplerConfig {
        SamplerConfig {
            machine: self.machine,
            boundary: self.boundary,
            schedule: self.schedule,
            patch: self.patch_schedule(),
            locality_scale: self.locality_scale,
            steps: self.steps,
            t_start: self.t_start,
            eta: self.eta,
            seed: self.seed,
        }
    }

    pub fn recipe(&self, dataset_hash: Option<String>) -> Recipe {
        Recipe {
            dataset: self.dataset.clone(),
            dataset_hash,
            load: self.load_options(),
            sampler: self.sampler(),
            device: self.device,
            ..Recipe::default()
        }
    }

    /// Takes over a recipe's settings (Open recipe…).
    pub fn apply_recipe(&mut self, r: &Recipe) {
        self.dataset = r.dataset.clone();
        self.class = r.load.class.clone();
        self.subset = r.load.subset.unwrap_or(0);
        self.color = r.load.color;
        let s = &r.sampler;
        self.machine = s.machine;
        self.boundary = s.boundary;
        match &s.patch {
            PatchSchedule::Preset { name } => {
                self.patch_mode = PatchMode::Preset;
                self.preset = name.clone();
            }
            PatchSchedule::Constant { p } => {
                self.patch_mode = PatchMode::Constant;
                self.constant_p = *p;
            }
            PatchSchedule::Ramp { p_min, p_max } => {
                self.patch_mode = PatchMode::Ramp;
                self.ramp = (*p_min, *p_max);
            }
            PatchSchedule::List { per_step } => {
                // The UI has no list editor: take the middle entry as a constant.
                self.patch_mode = PatchMode::Constant;
                self.constant_p = per_step.get(per_step.len() / 2).copied().unwrap_or(7);
            }
        }
        self.locality_scale = s.locality_scale;
        self.schedule = s.schedule;
        self.steps = s.steps;
        self.t_start = s.t_start;
        self.eta = s.eta;
        self.seed = s.seed;
        self.device = r.device;
    }

    /// Whether a change from `old` to `self` can branch (same time grid and data), or must
    /// restart from noise.
    pub fn can_branch_from(&self, old: &Settings) -> bool {
        self.dataset == old.dataset
            && self.load_options() == old.load_options()
            && self.schedule == old.schedule
            && self.steps == old.steps
            && self.t_start == old.t_start
            && self.seed == old.seed
            && self.device == old.device
    }

    /// One line naming what a run segment used, for the run history.
    pub fn segment_label(&self) -> String {
        let locality = if self.machine.uses_patch() {
            format!(" · {} ×{:.2}", self.patch_schedule().label(), self.locality_scale)
        } else {
            String::new()
        };
        let boundary =
            if self.machine == MachineKind::Els { format!(" {}", self.boundary.name()) } else { String::new() };
        format!("{}{boundary}{locality} · {} · η {:.2}", self.machine.title(), self.schedule.name(), self.eta)
    }
}
