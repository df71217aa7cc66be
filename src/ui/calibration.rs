//! The calibration window: fits P(t) to the trained CNN the way the paper calibrated its
//! presets (on a worker of its own, with progress), plots the fit against the paper's presets,
//! and can make it the run's patch schedule.

use egui::{Context, Ui};
use egui_plot::{Corner, Legend, Line, Plot, PlotPoints, Points};

use crate::engine::analysis::calibrate::StepFit;
use crate::engine::sampling::patch::{MAX_P, family_presets, preset_family};
use crate::engine::{MachineKind, PatchSchedule};
use crate::recipe::Recipe;
use crate::worker::{Command, Event, RunId, WorkerHandle};

/// What the window asks of the app this frame.
#[derive(Debug, PartialEq)]
pub enum CalibrationAction {
    /// Make the fitted P per step the patch schedule (a list).
    Use(Vec<u32>),
}

/// "40 s", "12 min", "3.5 h".
fn duration(seconds: f64) -> String {
    if seconds < 90.0 {
        format!("{seconds:.0} s")
    } else if seconds < 5400.0 {
        format!("{:.0} min", seconds / 60.0)
    } else {
        format!("{:.1} h", seconds / 3600.0)
    }
}

/// The paper's presets a fit is drawn beside: those of the paper's dataset nearest the one
/// calibrated (`calibrate`'s figure draws the same), not MNIST's for every set.
fn shown_presets(bundled: Option<&str>) -> Vec<&'static str> {
    family_presets(preset_family(bundled.unwrap_or(""))).collect()
}

pub struct Calibration {
    pub open: bool,
    pub seeds: u64,
    pub max_p: u32,
    /// Spawned on first use (tests put a detached handle here).
    pub worker: Option<WorkerHandle>,
    running: Option<RunId>,
    next_run: RunId,
    pub progress: Option<(usize, usize)>,
    pub fits: Option<Vec<StepFit>>,
    pub message: Option<String>,
    /// The recipe the calibration in flight was started for.
    started_for: Option<Recipe>,
    /// Seconds one denoiser call takes at the main run's measured rate (its cost estimate).
    pub seconds_per_call: Option<f64>,
}

impl Default for Calibration {
    fn default() -> Self {
        Self {
            open: false,
            seeds: 3,
            max_p: 27,
            worker: None,
            running: None,
            next_run: 0,
            progress: None,
            fits: None,
            message: None,
            started_for: None,
            seconds_per_call: None,
        }
    }
}

impl Calibration {
    /// Starts fitting to the CNN with `base`'s dataset and time grid.
    pub fn start(&mut self, ctx: &Context, base: &Recipe) {
        let worker = self.worker.get_or_insert_with(|| WorkerHandle::spawn_secondary(super::pacing::waker(ctx)));
        self.next_run += 1;
        let mut recipe = base.clone();
        recipe.sampler.machine = MachineKind::Cnn;
        recipe.branched_from = None;
        worker.send(Command::Calibrate { run: self.next_run, recipe, seeds: self.seeds, max_p: self.max_p });
        self.running = Some(self.next_run);
        self.started_for = Some(base.clone());
        (self.progress, self.fits, self.message) = (Some((0, 1)), None, None);
    }

    /// Stops the calibration in flight (window closed, inputs changed, or Stop), saying why.
    pub fn stop(&mut self, why: &str) {
        if self.running.take().is_some() {
            if let Some(w) = &self.worker {
                w.send(Command::Cancel);
            }
            (self.progress, self.message) = (None, Some(why.into()));
        }
    }

    /// Whether `current` still has the dataset and time grid the calibration was started for.
    pub fn started_for(&self, current: &Recipe) -> bool {
        self.started_for.as_ref().is_none_or(|b| {
            let (s, c) = (&b.sampler, &current.sampler);
            b.dataset == current.dataset
                && b.load == current.load
                && (s.steps, s.schedule, s.t_start, s.boundary, s.canvas)
                    == (c.steps, c.schedule, c.t_start, c.boundary, c.canvas)
        })
    }

    /// Denoiser calls a calibration makes: per seed and step, the CNN's and one ELS call per
    /// odd P up to `max_p`.
    pub fn calls(&self, steps: usize) -> u64 {
        self.seeds * steps as u64 * (self.max_p.div_ceil(2) as u64 + 1)
    }

    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    pub fn drain(&mut self) {
        let Some(worker) = &self.worker else { return };
        let events: Vec<Event> = worker.events.try_iter().collect();
        for event in events {
            let Some(run) = self.running else { break };
            match event {
                Event::Progress { run: r, done, total, .. } if r == run => self.progress = Some((done, total)),
                Event::Calibrated { run: r, fits } if r == run => {
                    self.fits = Some(fits);
                    (self.running, self.progress) = (None, None);
                }
                Event::Error { run: r, message } if r.is_none() || r == Some(run) => {
                    self.message = Some(message);
                    (self.running, self.progress) = (None, None);
                }
                _ => {}
            }
        }
    }

    /// The window's contents; `base` is the current recipe (None while no dataset is loaded).
    pub fn ui(&mut self, ui: &mut Ui, base: Option<&Recipe>) -> Option<CalibrationAction> {
        let mut action = None;
        ui.label(
            "Along the CNN's own DDIM runs, each step's P is the odd size whose ELS score points most nearly \
             where the CNN's does (cosine similarity); the median over seeds is the fit (Kamb & Ganguli's method).",
        );
        ui.horizontal(|ui| {
            ui.add(egui::DragValue::new(&mut self.seeds).range(1..=50));
            ui.label("seeds, P up to");
            ui.add(egui::DragValue::new(&mut self.max_p).range(1..=63));
            if let Some(base) = base
                && ui
                    .add_enabled(!self.is_running(), egui::Button::new("Run calibration"))
                    .on_hover_text("seeds 0, 1, …; the dataset, steps and noise schedule of the current run")
                    .clicked()
            {
                self.start(ui.ctx(), base);
            }
            if self.is_running() && ui.button("Stop calibration").clicked() {
                self.stop("stopped");
            }
        });
        if let Some(base) = base {
            let calls = self.calls(base.sampler.steps);
            let cost = match self.seconds_per_call {
                Some(s) => {
                    format!("{calls} denoiser calls, about {} at the main run's rate", duration(calls as f64 * s))
                }
                None => format!("{calls} denoiser calls"),
            };
            let long = self.seconds_per_call.is_some_and(|s| calls as f64 * s > 60.0);
            let text = egui::RichText::new(cost);
            ui.label(if long { text.color(ui.visuals().warn_fg_color) } else { text.weak() });
        }
        if let Some((done, total)) = self.progress {
            ui.add(egui::ProgressBar::new(done as f32 / total.max(1) as f32).text(format!("{done} / {total} calls")));
        }
        if let Some(m) = &self.message {
            ui.colored_label(ui.visuals().error_fg_color, m);
        }
        let Some(fits) = &self.fits else { return action };
        let fitted: Vec<u32> = fits.iter().map(|f| f.median).collect();
        ui.label(format!(
            "fitted P(t), noisiest step first: {}",
            fitted.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ")
        ));
        let pts: Vec<[f64; 2]> = fits.iter().map(|f| [f.t, f.median as f64]).collect();
        let fit_colour = ui.visuals().strong_text_color();
        Plot::new("calibration_plot")
            .height(200.0)
            // Top left is empty: every schedule starts small at low noise (t near 0).
            .legend(Legend::default().position(Corner::LeftTop))
            .x_axis_label("t")
            .y_axis_label("P")
            .include_x(0.0)
            .include_x(1.0)
            .include_y(1.0)
            .show(ui, |p| {
                for name in shown_presets(self.started_for.as_ref().and_then(|r| r.dataset.bundled_name())) {
                    let preset = PatchSchedule::Preset { name: name.to_string() };
                    let line: Vec<[f64; 2]> =
                        fits.iter().enumerate().map(|(k, f)| [f.t, preset.at(k, f.t, 1.0, MAX_P) as f64]).collect();
                    p.line(Line::new(format!("paper: {name}"), PlotPoints::from(line)));
                }
                // One colour for the fit's line and points, so its legend entry has one too.
                p.line(Line::new("fitted to the CNN", PlotPoints::from(pts.clone())).width(3.0).color(fit_colour));
                p.points(Points::new("fitted to the CNN", PlotPoints::from(pts)).radius(3.0).color(fit_colour));
            });
        if ui.button("Use as patch schedule").on_hover_text("the fitted P per step, as a list").clicked() {
            action = Some(CalibrationAction::Use(fitted));
        }
        action
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each set's fit is drawn beside its own family's presets, both networks' at least.
    #[test]
    fn a_fit_is_drawn_beside_its_own_datasets_presets() {
        let cases = [
            (Some("mnist"), vec!["MNIST ResNet", "MNIST ResNet circular", "MNIST UNet"]),
            (Some("fashion"), vec!["FashionMNIST ResNet", "FashionMNIST UNet"]),
            (Some("emoji"), vec!["CIFAR10 ResNet", "CIFAR10 ResNet circular", "CIFAR10 UNet"]),
            (Some("photos"), vec!["CIFAR10 ResNet", "CIFAR10 ResNet circular", "CIFAR10 UNet"]),
            (None, vec!["MNIST ResNet", "MNIST ResNet circular", "MNIST UNet"]),
        ];
        for (set, want) in &cases {
            assert_eq!(&shown_presets(*set), want, "{set:?}");
        }
        assert_eq!(cases.len(), 5);
    }
}
