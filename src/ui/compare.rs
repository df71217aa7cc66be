//! Compare mode: a second column that runs another machine, patch schedule or dataset from
//! the same seed (so the same initial noise) and the same time grid, on a worker of its own,
//! shown beside the main run at the same step, with the Pearson r of the two x̂₀ per step.
//!
//! Its worker is a second [`WorkerHandle`]: the two runs compute side by side and neither
//! waits for the other. Compare settings live in [`CompareSettings`]; a fresh start of the
//! main run restarts the comparison with the same seed and grid.

use egui::{Context, TextureHandle, TextureOptions, Ui};
use serde::{Deserialize, Serialize};

use crate::data::{DatasetSource, LoadOptions};
use crate::engine::{MachineKind, StepRecord};
use crate::recipe::Recipe;
use crate::worker::{Command, Event, RunId, WorkerHandle};

use super::texture::color_image;
pub use crate::engine::analysis::stats::pearson;

/// What the second column changes; `None` keeps the main run's value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CompareSettings {
    pub machine: MachineKind,
    /// A patch-schedule preset name.
    pub preset: Option<String>,
    /// A bundled dataset name.
    pub dataset: Option<String>,
    /// Keep the main run as it was before its wounds: the same settings without the edits
    /// (the studio turns this on with the first stroke on x_t, to show the healing).
    pub unedited: bool,
}

impl Default for CompareSettings {
    /// The paper's contrast: the ideal machine memorises where ELS creates.
    fn default() -> Self {
        Self { machine: MachineKind::Ideal, preset: None, dataset: None, unedited: false }
    }
}

impl CompareSettings {
    /// The main recipe with this column's changes: same seed, steps, schedule and t grid.
    pub fn recipe(&self, main: &Recipe) -> Recipe {
        let mut r = main.clone();
        r.branched_from = None;
        if self.unedited {
            // The very run, unwounded: every setting of the main run but its edits.
            r.sampler.edits.clear();
            return r;
        }
        r.sampler.machine = self.machine;
        if let Some(p) = &self.preset {
            r.sampler.patch = crate::engine::PatchSchedule::Preset { name: p.clone() };
        }
        if let Some(d) = &self.dataset {
            r.dataset = DatasetSource::Bundled(d.clone());
            r.dataset_hash = None;
            r.load = LoadOptions { subset_seed: r.load.subset_seed, ..LoadOptions::default() };
        }
        r
    }

    /// A short label for the column's title.
    pub fn label(&self) -> String {
        if self.unedited {
            return "unedited".into();
        }
        let mut parts = vec![self.machine.title().to_string()];
        if let Some(p) = &self.preset {
            parts.push(p.clone());
        }
        if let Some(d) = &self.dataset {
            parts.push(d.clone());
        }
        parts.join(", ")
    }
}

/// One step of the second column.
pub struct CompareStep {
    pub record: StepRecord,
    pub x0: TextureHandle,
}

/// The second column's worker and what it has computed.
#[derive(Default)]
pub struct Compare {
    /// Spawned on first use (tests put a detached handle here).
    pub worker: Option<WorkerHandle>,
    pub run: Option<RunId>,
    pub label: String,
    pub steps: Vec<CompareStep>,
    pub error: Option<String>,
    /// The column's image shape (its dataset may differ from the main run's).
    pub shape: Option<crate::engine::ImageShape>,
    /// The column's canvas, when not its training images' size.
    canvas: Option<[usize; 2]>,
    next_run: RunId,
    /// The column's recipe (its machine and schedule give each step's call).
    pub recipe: Option<Recipe>,
    /// Sensitivity maps the column's worker sent since the last frame: (step, y, x, map).
    pub sensitivity: Vec<(usize, usize, usize, Option<Vec<f64>>)>,
    /// r per (main run, step), computed once when both columns have that step.
    r_cache: std::cell::RefCell<std::collections::HashMap<(RunId, usize), f64>>,
}

impl Compare {
    /// Starts the column for the main run `main` (cancelling whatever it was computing).
    pub fn start(&mut self, ctx: &Context, settings: &CompareSettings, main: &Recipe) {
        let worker = self.worker.get_or_insert_with(|| WorkerHandle::spawn_secondary(super::pacing::waker(ctx)));
        self.next_run += 1;
        let run = self.next_run;
        self.run = Some(run);
        self.label = settings.label();
        let recipe = settings.recipe(main);
        self.canvas = recipe.sampler.canvas;
        self.steps.clear();
        self.error = None;
        self.r_cache.get_mut().clear();
        self.sensitivity.clear();
        self.recipe = Some(recipe.clone());
        worker.send(Command::Start { run, recipe });
    }

    /// Stops the column.
    pub fn stop(&mut self) {
        if let Some(w) = &self.worker {
            w.send(Command::Cancel);
        }
        self.run = None;
        self.steps.clear();
        self.error = None;
    }

    pub fn is_on(&self) -> bool {
        self.run.is_some()
    }

    /// Takes the worker's events: steps become textures once, errors a message.
    pub fn drain(&mut self, ctx: &Context) {
        let Some(worker) = &self.worker else { return };
        while let Ok(event) = worker.events.try_recv() {
            match event {
                Event::Step { run, record, .. } if Some(run) == self.run => {
                    let k = record.step;
                    self.steps.truncate(k);
                    // The worker names its dataset (and so the shape) before any step.
                    if let Some(shape) = self.shape.filter(|s| s.len() == record.x0_hat.len())
                        && self.steps.len() == k
                    {
                        let x0 = ctx.load_texture(
                            format!("cmp{run}-{k}"),
                            color_image(&record.x0_hat, shape),
                            TextureOptions::NEAREST,
                        );
                        self.steps.push(CompareStep { record: *record, x0 });
                    }
                }
                Event::Sensitivity { run, step, y, x, map } if Some(run) == self.run => {
                    self.sensitivity.push((step, y, x, map));
                }
                Event::Error { run, message } if run.is_none() || run == self.run => {
                    self.error = Some(message);
                }
                // The column's own fall back to the CPU: said where the column is.
                Event::Notice { message } => self.error = Some(format!("note: {message}")),
                Event::Dataset(info) => {
                    let s = info.shape;
                    self.shape = Some(match self.canvas {
                        Some([h, w]) => crate::engine::ImageShape { c: s.c, h, w },
                        None => s,
                    });
                }
                _ => {}
            }
        }
    }

    /// The step at `k`, if computed.
    pub fn step(&self, k: usize) -> Option<&CompareStep> {
        self.steps.get(k)
    }

    /// Pearson r of main run `run`'s step against this column's step of the same index, when
    /// both exist and have the same size (computed once, then remembered).
    pub fn r_at(&self, run: RunId, main: &StepRecord) -> Option<f64> {
        let other = self.steps.get(main.step).filter(|c| c.record.x0_hat.len() == main.x0_hat.len())?;
        let mut cache = self.r_cache.borrow_mut();
        Some(*cache.entry((run, main.step)).or_insert_with(|| pearson(&main.x0_hat, &other.record.x0_hat)))
    }

    /// [`Compare::r_at`] at every step of the main run that has one: ([step, r]).
    pub fn correlations(&self, run: RunId, main: &[&StepRecord]) -> Vec<[f64; 2]> {
        main.iter().filter_map(|m| self.r_at(run, m).map(|r| [m.step as f64, r])).collect()
    }

    /// The controls of the comparison: returns true when the user changed them.
    pub fn controls(ui: &mut Ui, on: &mut bool, s: &mut CompareSettings) -> bool {
        let before = (*on, s.clone());
        ui.checkbox(on, "Compare with a second column").on_hover_text(
            "Runs another machine, patch schedule or dataset from the same seed and time grid, beside this run, \
             with the Pearson r of the two x̂₀ at every step.",
        );
        if *on {
            ui.horizontal_wrapped(|ui| {
                ui.label("machine");
                for m in MachineKind::all() {
                    ui.radio_value(&mut s.machine, m, m.title()).on_hover_text(m.describe());
                }
            });
            ui.horizontal(|ui| {
                ui.label("patch schedule");
                egui::ComboBox::from_id_salt("cmp_preset")
                    .selected_text(s.preset.clone().unwrap_or_else(|| "same".into()))
                    .show_ui(ui, |ui| {
                        ui.selectable_value(&mut s.preset, None, "same");
                        for (name, _) in crate::engine::sampling::patch::PRESETS {
                            ui.selectable_value(&mut s.preset, Some(name.to_string()), name);
                        }
                    });
            });
            ui.horizontal(|ui| {
                ui.label("dataset");
                egui::ComboBox::from_id_salt("cmp_dataset")
                    .selected_text(s.dataset.clone().unwrap_or_else(|| "same".into()))
                    .show_ui(ui, |ui| {
                        ui.selectable_value(&mut s.dataset, None, "same");
                        for b in crate::data::BUNDLED {
                            ui.selectable_value(&mut s.dataset, Some(b.name.to_string()), b.name);
                        }
                    });
            });
        }
        before != (*on, s.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_second_recipe_keeps_seed_and_grid_and_changes_what_was_asked() {
        let main = Recipe::default();
        let s = CompareSettings {
            machine: MachineKind::Ideal,
            preset: Some("MNIST UNet".into()),
            dataset: None,
            unedited: false,
        };
        let r = s.recipe(&main);
        assert_eq!(r.sampler.seed, main.sampler.seed);
        assert_eq!(r.sampler.steps, main.sampler.steps);
        assert_eq!(r.sampler.schedule, main.sampler.schedule);
        assert_eq!(r.sampler.machine, MachineKind::Ideal);
        assert_eq!(r.sampler.patch.label(), "MNIST UNet");
        assert_eq!(r.dataset, main.dataset);
    }
}
