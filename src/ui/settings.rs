//! Everything the user set, persisted between launches (`#[serde(default)]`, so old saves
//! and new fields coexist), and the recipe those settings make.

use serde::{Deserialize, Serialize};

use crate::data::{ColorMode, DatasetSource, LoadOptions};
use crate::engine::sampling::patch::PRESETS;
use crate::engine::{
    Boundary, DeviceChoice, Edit, ImageShape, LocalityMap, MachineKind, NoiseSchedule, PatchSchedule, SamplerConfig,
};
use crate::recipe::Recipe;

/// How the patch size is chosen in the UI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PatchMode {
    Preset,
    Constant,
    Ramp,
    /// One P per step, as a recipe or the CLI's `--patch-schedule 15,13,…` gives it.
    List,
}

/// The ranges of the studio's controls. A recipe outside them is refused when opened rather
/// than clamped by a slider into a different run.
pub const STEPS: (usize, usize) = (1, 1000);
pub const T_START: (f64, f64) = (0.01, 1.0);
pub const COSINE_OFFSET: (f64, f64) = (0.0, 0.1);
pub const LINEAR_START: (f64, f64) = (0.0, 0.5);
pub const LINEAR_END: (f64, f64) = (0.5, 0.999);
pub const EXP_RATE: (f64, f64) = (0.5, 10.0);
/// Largest side offered by the size control (the loaders accept up to `data::MAX_SIDE`).
pub const SIZES: [u32; 7] = [8, 16, 28, 32, 48, 64, 128];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub dataset: DatasetSource,
    pub class: Option<String>,
    /// 0 = all images.
    pub subset: usize,
    pub color: ColorMode,
    /// Resize every image to (width, height) while loading; None = the most common size.
    pub size: Option<(u32, u32)>,
    pub machine: MachineKind,
    pub boundary: Boundary,
    pub patch_mode: PatchMode,
    pub preset: String,
    pub constant_p: u32,
    pub ramp: (u32, u32),
    /// Per-step sizes when `patch_mode` is `List`.
    pub patch_list: Vec<u32>,
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
    /// The provenance map shown beside the images, if any.
    pub map_view: Option<crate::export::maps::MapKind>,
    /// Votes the pixel inspector lists.
    pub inspect_top: usize,
    /// Show x̂₀'s nearest training image beside it (novelty at a glance).
    pub show_nearest: bool,
    /// Compare mode: whether the second column runs, and what it changes.
    pub compare_on: bool,
    pub compare: super::compare::CompareSettings,
    /// The canvas [H, W] when it is not the training images' size.
    pub canvas: Option<[usize; 2]>,
    /// The painted locality map (a multiplier of P per canvas pixel).
    pub locality_map: Option<LocalityMap>,
    /// The wounds painted on x_t, in the order they were made.
    pub edits: Vec<Edit>,
    /// The CNN's weights file (None: the shipped weights of a bundled dataset).
    pub cnn_weights: Option<std::path::PathBuf>,
    /// The brush: which tool and how large (display only: it changes no run).
    pub brush: super::brush_settings::BrushSettings,
    /// The budget every worker's caches share, in MiB ([`crate::memory::Pool`]).
    pub memory_budget_mb: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            dataset: DatasetSource::Bundled("mnist".into()),
            class: None,
            subset: 0,
            color: ColorMode::Auto,
            size: None,
            machine: MachineKind::Els,
            boundary: Boundary::Zeros,
            patch_mode: PatchMode::Preset,
            preset: PRESETS[0].0.into(),
            constant_p: 7,
            ramp: (3, 15),
            patch_list: Vec::new(),
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
            map_view: Some(crate::export::maps::MapKind::Mosaic),
            inspect_top: 12,
            show_nearest: true,
            compare_on: false,
            compare: Default::default(),
            canvas: None,
            locality_map: None,
            edits: Vec::new(),
            cnn_weights: None,
            brush: Default::default(),
            memory_budget_mb: crate::memory::DEFAULT_BUDGET >> 20,
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
            PatchMode::List => PatchSchedule::List { per_step: self.patch_list.clone() },
        }
    }

    pub fn load_options(&self) -> LoadOptions {
        LoadOptions {
            class: self.class.clone(),
            subset: (self.subset > 0).then_some(self.subset),
            subset_seed: 0,
            size: self.size,
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
            canvas: self.canvas,
            locality_map: self.locality_map.clone(),
            edits: self.edits.clone(),
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

    /// The settings that reproduce `r` (Open recipe…), keeping this window's display
    /// preferences. Refused, naming the field, when a value lies outside what the controls
    /// can show: a slider would clamp it and silently run something else.
    pub fn from_recipe(&self, r: &Recipe) -> Result<Settings, String> {
        r.validate()?;
        let s = &r.sampler;
        let within = |name: &str, v: f64, (lo, hi): (f64, f64)| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(format!(
                    "{name} = {v} is outside the studio's range {lo} to {hi}; replay it with `morphogen sample --recipe`"
                ))
            }
        };
        if !(STEPS.0..=STEPS.1).contains(&s.steps) {
            return Err(format!(
                "sampler.steps = {} is outside the studio's range {} to {}; replay it with `morphogen sample --recipe`",
                s.steps, STEPS.0, STEPS.1
            ));
        }
        within("sampler.t_start", s.t_start, T_START)?;
        match s.schedule {
            NoiseSchedule::Cosine { s: offset } => within("sampler.schedule.s", offset, COSINE_OFFSET)?,
            NoiseSchedule::Linear { start, end } => {
                within("sampler.schedule.start", start, LINEAR_START)?;
                within("sampler.schedule.end", end, LINEAR_END)?;
            }
            NoiseSchedule::Exponential { rate } => within("sampler.schedule.rate", rate, EXP_RATE)?,
        }
        let mut out = Settings {
            dataset: r.dataset.clone(),
            class: r.load.class.clone(),
            subset: r.load.subset.unwrap_or(0),
            color: r.load.color,
            size: r.load.size,
            machine: s.machine,
            boundary: s.boundary,
            locality_scale: s.locality_scale,
            schedule: s.schedule,
            steps: s.steps,
            t_start: s.t_start,
            eta: s.eta,
            seed: s.seed,
            device: r.device,
            canvas: s.canvas,
            locality_map: s.locality_map.clone(),
            edits: s.edits.clone(),
            ..self.clone()
        };
        match &s.patch {
            PatchSchedule::Preset { name } => {
                out.patch_mode = PatchMode::Preset;
                out.preset = name.clone();
            }
            PatchSchedule::Constant { p } => {
                out.patch_mode = PatchMode::Constant;
                out.constant_p = *p;
            }
            PatchSchedule::Ramp { p_min, p_max } => {
                out.patch_mode = PatchMode::Ramp;
                out.ramp = (*p_min, *p_max);
            }
            PatchSchedule::List { per_step } => {
                out.patch_mode = PatchMode::List;
                out.patch_list = per_step.clone();
            }
        }
        Ok(out)
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
            && self.canvas == old.canvas
    }

    /// The canvas of a run of these settings on training images of `train`'s shape.
    pub fn canvas_shape(&self, train: ImageShape) -> ImageShape {
        match self.canvas {
            Some([h, w]) => ImageShape { c: train.c, h, w },
            None => train,
        }
    }

    /// Drops a locality map and edits painted for another canvas (after a dataset or canvas
    /// change); true when something was dropped.
    pub fn fit_paint_to(&mut self, train: ImageShape) -> bool {
        let s = self.canvas_shape(train);
        let map_off = self.locality_map.as_ref().is_some_and(|m| (m.h, m.w) != (s.h, s.w));
        let edits_off = self.edits.iter().any(|e| e.mask.bits(s.h, s.w).is_err());
        if map_off {
            self.locality_map = None;
        }
        if edits_off {
            self.edits.clear();
        }
        map_off || edits_off
    }
}

/// One line naming what a run segment used, for the run history and the timeline.
pub fn segment_label(s: &SamplerConfig) -> String {
    let locality = if s.machine.uses_patch() {
        format!(" · {} ×{:.2}", s.patch.label(), s.locality_scale)
    } else {
        String::new()
    };
    let boundary = if s.machine.needs().boundary { format!(" {}", s.boundary.name()) } else { String::new() };
    let mut grown = String::new();
    if let Some([h, w]) = s.canvas {
        grown += &format!(" · {h}×{w} canvas");
    }
    if s.locality_map.is_some() {
        grown += " · painted locality";
    }
    if !s.edits.is_empty() {
        let steps: Vec<String> = s.edits.iter().map(|e| e.step.to_string()).collect();
        grown += &format!(" · {} wound(s) at step {}", s.edits.len(), steps.join(", "));
    }
    format!("{}{boundary}{locality} · {} · η {:.2}{grown}", s.machine.title(), s.schedule.name(), s.eta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{EditOp, Mask};

    /// A recipe that carries a canvas, a locality map and edits opens in the studio with all
    /// three, and the studio's recipe of those settings carries them again unchanged.
    #[test]
    fn painted_recipes_open_in_the_studio_and_round_trip() {
        let map = LocalityMap { h: 2, w: 3, values: vec![1.0, 3.0, 0.5, 1.0, 1.0, 1.0] };
        let edit = Edit { step: 4, op: EditOp::Noise { seed: 9 }, mask: Mask(vec!["#..".into(), "..#".into()]) };
        let mut recipe = Settings::default().recipe(None);
        recipe.sampler.canvas = Some([2, 3]);
        recipe.sampler.locality_map = Some(map.clone());
        recipe.sampler.edits = vec![edit.clone()];
        let text = recipe.to_json();
        let (back, warnings) = crate::recipe::Recipe::parse(&text, std::path::Path::new("r.json")).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let s = Settings::default().from_recipe(&back).unwrap();
        assert_eq!((s.canvas, s.locality_map.as_ref(), s.edits.as_slice()), (Some([2, 3]), Some(&map), &[edit][..]));
        assert_eq!(s.recipe(None).sampler, recipe.sampler);
        // Another training size than the map was painted for: the paint is dropped, by name.
        let mut s = s;
        s.canvas = None;
        assert!(s.fit_paint_to(ImageShape { c: 1, h: 28, w: 28 }));
        assert!(s.locality_map.is_none() && s.edits.is_empty());
    }
}
