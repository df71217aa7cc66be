//! The studio's state and its frame: events in, panels drawn, commands out.

use std::collections::VecDeque;
use std::time::Instant;

use egui::{Key, TextureHandle, TextureOptions, Ui};

use crate::engine::{Call, Inspection};
use crate::worker::{Command, DatasetInfo, Event, RunId, WorkerHandle};

use super::canvas::{self, CanvasState};
use super::export_panel::ExportPanel;
use super::history::{History, Run, Segment, color_image};
use super::settings::Settings;
use super::timeline::{self, StepMark, TimeCommand, TimeControl};

/// A pixel's votes as the inspector shows them.
pub struct InspectView {
    pub run: RunId,
    pub step: usize,
    pub y: usize,
    pub x: usize,
    pub result: Inspection,
    pub crops: Vec<TextureHandle>,
}

/// Frame-time statistics for the debug overlay (the UI must stay at 60 fps while a step runs).
#[derive(Default)]
pub struct FrameStats {
    last: Option<Instant>,
    times_ms: VecDeque<f64>,
}

impl FrameStats {
    fn tick(&mut self) -> f64 {
        let now = Instant::now();
        let dt = self.last.map(|l| (now - l).as_secs_f64()).unwrap_or(0.0);
        self.last = Some(now);
        if dt > 0.0 {
            self.times_ms.push_back(dt * 1000.0);
            if self.times_ms.len() > 240 {
                self.times_ms.pop_front();
            }
        }
        dt
    }
    /// 95th-percentile frame time over the last ~4 seconds, in ms.
    pub fn p95_ms(&self) -> f64 {
        let mut v: Vec<f64> = self.times_ms.iter().copied().collect();
        if v.is_empty() {
            return 0.0;
        }
        v.sort_by(|a, b| a.total_cmp(b));
        v[(v.len() * 95 / 100).min(v.len() - 1)]
    }
}

pub struct StudioApp {
    pub settings: Settings,
    /// The settings of the run in flight: a difference means the user moved a control.
    pub applied: Option<Settings>,
    pub worker: WorkerHandle,
    pub history: History,
    pub time: TimeControl,
    pub next_run: RunId,
    pub dataset: Option<DatasetInfo>,
    pub thumbnails: Vec<TextureHandle>,
    pub device_text: String,
    pub device_notice: Option<String>,
    /// (step, chunks done, chunks total) of the step being computed.
    pub progress: Option<(usize, usize, usize)>,
    pub computing: bool,
    pub errors: Vec<String>,
    pub inspect: Option<InspectView>,
    pub canvas: CanvasState,
    pub frames: FrameStats,
    pub show_debug: bool,
    pub export: ExportPanel,
    /// Which past run is shown (None = the current one).
    pub viewing: Option<RunId>,
    pub(crate) folder_pick: Option<crossbeam_channel::Receiver<Option<std::path::PathBuf>>>,
    /// Lets export threads wake the UI when they finish.
    pub(crate) export_wake: Option<egui::Context>,
}

impl StudioApp {
    pub fn new(settings: Settings, worker: WorkerHandle) -> Self {
        Self {
            settings,
            applied: None,
            worker,
            history: History::default(),
            time: TimeControl::default(),
            next_run: 1,
            dataset: None,
            thumbnails: Vec::new(),
            device_text: "starting…".into(),
            device_notice: None,
            progress: None,
            computing: false,
            errors: Vec::new(),
            inspect: None,
            canvas: CanvasState::default(),
            frames: FrameStats::default(),
            show_debug: false,
            export: ExportPanel::default(),
            viewing: None,
            folder_pick: None,
            export_wake: None,
        }
    }

    /// The run the timeline and canvas show.
    pub fn shown_run(&self) -> Option<&Run> {
        match self.viewing {
            Some(id) => self.history.runs.iter().find(|r| r.id == id).or(self.history.current()),
            None => self.history.current(),
        }
    }

    fn dataset_hash(&self) -> Option<String> {
        self.dataset
            .as_ref()
            .filter(|d| d.source == self.settings.dataset && d.options == self.settings.load_options())
            .map(|d| d.hash.clone())
    }

    /// Starts a fresh run of the current settings.
    pub fn restart(&mut self) {
        let run = self.next_run;
        self.next_run += 1;
        let recipe = self.settings.recipe(self.dataset_hash());
        self.history.start(Run {
            id: run,
            shape: self.dataset.as_ref().map(|d| d.shape).unwrap_or(crate::engine::ImageShape { c: 1, h: 1, w: 1 }),
            total_steps: self.settings.steps,
            steps: Vec::new(),
            segments: vec![Segment { from_step: 0, label: self.settings.segment_label() }],
            finished: false,
            recipe: recipe.clone(),
        });
        self.viewing = None;
        self.time = TimeControl::default();
        self.progress = None;
        self.computing = true;
        self.inspect = None;
        self.applied = Some(self.settings.clone());
        self.worker.send(Command::Start { run, recipe });
    }

    /// Keeps the steps before the cursor and recomputes from the cursor with new settings.
    pub fn branch(&mut self) {
        let cursor = self.time.cursor;
        let Some(cur) = self.history.current() else { return self.restart() };
        let Some(step) = cur.steps.get(cursor) else { return self.restart() };
        let x_t = step.record.x_t.clone();
        let shape = cur.shape;
        let mut steps: Vec<_> = Vec::new();
        let mut segments = cur.segments.clone();
        segments.retain(|s| s.from_step < cursor);
        segments.push(Segment { from_step: cursor, label: self.settings.segment_label() });
        let run = self.next_run;
        self.next_run += 1;
        let mut recipe = self.settings.recipe(self.dataset_hash());
        let parent = self.history.current().map(|r| r.recipe.clone()).unwrap_or_default();
        recipe.branched_from = Some(Box::new(crate::recipe::Branch { from_step: cursor, recipe: parent }));
        // The new run shares the kept steps' records and textures.
        if let Some(cur) = self.history.current() {
            for s in cur.steps.iter().take(cursor) {
                steps.push(super::history::StepView {
                    record: s.record.clone(),
                    x_t: s.x_t.clone(),
                    x0: s.x0.clone(),
                    delta: s.delta.clone(),
                    seconds: s.seconds,
                });
            }
        }
        self.history.start(Run {
            id: run,
            shape,
            total_steps: self.settings.steps,
            steps,
            segments,
            finished: false,
            recipe: recipe.clone(),
        });
        self.viewing = None;
        self.time.follow = true;
        self.progress = None;
        self.computing = true;
        self.applied = Some(self.settings.clone());
        self.worker.send(Command::Branch { run, recipe, from_step: cursor, x_t });
    }

    /// Called once per frame after the controls: a changed setting restarts or branches.
    fn apply_changes(&mut self) {
        let Some(old) = self.applied.clone() else { return self.restart() };
        if old == self.settings {
            return;
        }
        let run_relevant = {
            let mut a = old.clone();
            let mut b = self.settings.clone();
            // Playback and display settings do not change the run.
            for s in [&mut a, &mut b] {
                s.fps = 0.0;
                s.looping = false;
                s.show_grid = false;
                s.show_delta = false;
                s.branch = false;
            }
            a != b
        };
        if !run_relevant {
            self.applied = Some(self.settings.clone());
            return;
        }
        let has_cursor_step = self.history.current().is_some_and(|r| self.time.cursor < r.steps.len());
        if self.settings.branch && self.settings.can_branch_from(&old) && has_cursor_step {
            self.branch();
        } else {
            self.restart();
        }
    }

    pub fn handle_event(&mut self, ctx: &egui::Context, event: Event) {
        let current = self.history.current().map(|r| r.id);
        match event {
            Event::Device { description, notice } => {
                self.device_text = description;
                self.device_notice = notice;
            }
            Event::Dataset(info) => {
                self.thumbnails = info
                    .thumbnails
                    .iter()
                    .enumerate()
                    .map(|(k, img)| {
                        ctx.load_texture(format!("thumb{k}"), color_image(img, info.shape), TextureOptions::NEAREST)
                    })
                    .collect();
                if let Some(run) = self.history.current_mut()
                    && run.steps.is_empty()
                {
                    run.shape = info.shape;
                    run.recipe.dataset_hash = Some(info.hash.clone());
                }
                self.dataset = Some(*info);
            }
            Event::Progress { run, step, done, total } if Some(run) == current => {
                self.progress = Some((step, done, total))
            }
            Event::Step { run, record, seconds } if Some(run) == current => {
                if self.history.push_step(ctx, run, *record, seconds) {
                    let n = self.history.current().map(|r| r.steps.len()).unwrap_or(0);
                    if self.viewing.is_none() {
                        self.time.on_new_step(n);
                    }
                }
                self.progress = None;
            }
            Event::Finished { run } if Some(run) == current => {
                if let Some(r) = self.history.current_mut() {
                    r.finished = true;
                }
                self.computing = false;
                self.progress = None;
            }
            Event::Inspected { run, step, y, x, result, crops } => {
                let crops = crops
                    .iter()
                    .enumerate()
                    .map(|(k, (shape, img))| {
                        ctx.load_texture(format!("vote{k}"), color_image(img, *shape), TextureOptions::NEAREST)
                    })
                    .collect();
                self.inspect = Some(InspectView { run, step, y, x, result: *result, crops });
            }
            Event::Error { run, message } => {
                if run.is_none() || run == current {
                    self.computing = false;
                    self.progress = None;
                }
                self.errors.push(message);
            }
            // Events of runs that were replaced.
            Event::Progress { .. } | Event::Step { .. } | Event::Finished { .. } => {}
        }
    }

    fn drain_events(&mut self, ctx: &egui::Context) {
        while let Ok(event) = self.worker.events.try_recv() {
            self.handle_event(ctx, event);
        }
        if self.worker.is_finished() && self.computing {
            self.computing = false;
            self.errors.push("the worker thread stopped; restart Morphogen".into());
        }
    }

    /// Keyboard shortcuts for the timeline (ignored while typing in a field).
    fn keyboard(&mut self, ui: &Ui) -> Vec<TimeCommand> {
        if ui.ctx().egui_wants_keyboard_input() {
            return Vec::new();
        }
        ui.input(|i| {
            let mut cmds = Vec::new();
            if i.key_pressed(Key::Space) {
                cmds.push(TimeCommand::TogglePlay);
            }
            if i.key_pressed(Key::ArrowLeft) {
                cmds.push(TimeCommand::StepBack);
            }
            if i.key_pressed(Key::ArrowRight) {
                cmds.push(TimeCommand::StepForward);
            }
            if i.key_pressed(Key::Home) {
                cmds.push(TimeCommand::First);
            }
            if i.key_pressed(Key::End) {
                cmds.push(TimeCommand::Last);
            }
            cmds
        })
    }

    /// Asks the worker for the votes behind pixel (y, x) at the step under the cursor.
    pub fn request_inspect(&mut self, y: usize, x: usize) {
        let Some(run) = self.shown_run() else { return };
        let Some(step) = run.steps.get(self.time.cursor) else { return };
        let r = &step.record;
        let mut call =
            Call::new(run.recipe.sampler.machine, run.recipe.sampler.boundary, r.patch as usize, r.alpha_bar);
        call.entropy = false;
        let cmd = Command::Inspect { run: run.id, step: r.step, x_t: r.x_t.clone(), call, y, x };
        self.worker.send(cmd);
    }

    /// The whole studio inside `ui` (the eframe app and the UI tests both call this).
    pub fn ui_contents(&mut self, ui: &mut Ui) {
        let ctx = ui.ctx().clone();
        self.export_wake.get_or_insert_with(|| ctx.clone());
        let dt = self.frames.tick();
        self.drain_events(&ctx);
        self.poll_folder_pick();
        self.handle_drops(&ctx);

        let mut cmds = self.keyboard(ui);

        egui::Panel::top("menu").show(ui, |ui| self.top_bar(ui));
        egui::Panel::bottom("status").show(ui, |ui| self.status_bar(ui));
        egui::Panel::left("controls").resizable(true).default_size(300.0).show(ui, |ui| {
            egui::ScrollArea::vertical().show(ui, |ui| self.controls(ui));
        });
        egui::Panel::right("inspector").resizable(true).default_size(280.0).show(ui, |ui| {
            egui::ScrollArea::vertical().show(ui, |ui| {
                self.inspector(ui);
                ui.separator();
                self.export_ui(ui);
            });
        });
        egui::Panel::bottom("timeline")
            .resizable(true)
            .default_size(250.0)
            .show(ui, |ui| self.timeline_ui(ui, &mut cmds));
        egui::CentralPanel::default().show(ui, |ui| self.canvas_ui(ui));

        let available = self.shown_run().map(|r| r.steps.len()).unwrap_or(0);
        for cmd in cmds {
            self.time.apply(cmd, available);
        }
        if self.time.tick(dt, self.settings.fps, available, self.settings.looping) {
            ctx.request_repaint();
        }
        self.apply_changes();
        self.export.poll(&ctx);
        self.show_errors(&ctx);
    }

    fn top_bar(&mut self, ui: &mut Ui) {
        ui.horizontal(|ui| {
            ui.heading("Morphogen");
            ui.label("watch a closed-form diffusion model invent an image");
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                ui.toggle_value(&mut self.show_debug, "Frame times");
                if ui
                    .button("Reset to defaults")
                    .on_hover_text("Every setting back to its default; restarts the run")
                    .clicked()
                {
                    self.settings = Settings::default();
                }
            });
        });
    }

    fn status_bar(&mut self, ui: &mut Ui) {
        ui.horizontal(|ui| {
            ui.label(format!("Device: {}", self.device_text));
            if let Some(n) = &self.device_notice {
                ui.label(egui::RichText::new(n).weak());
            }
            if let Some(d) = &self.dataset {
                ui.separator();
                ui.label(format!("{}: {} images, {}×{}×{}", d.source.label(), d.len, d.shape.c, d.shape.h, d.shape.w));
            }
            ui.separator();
            ui.label(format!("history {:.1} MB", self.history.total_bytes() as f64 / 1e6));
            if self.show_debug {
                ui.separator();
                ui.label(format!("frame p95 {:.1} ms", self.frames.p95_ms()));
            }
        });
    }

    fn timeline_ui(&mut self, ui: &mut Ui, cmds: &mut Vec<TimeCommand>) {
        let Some(run) = self.shown_run() else {
            ui.label("Waiting for the first step…");
            return;
        };
        // Everything the widgets below need, read before they borrow `self` mutably.
        let total = run.total_steps.max(1);
        let cfg = &run.recipe.sampler;
        let shape = run.shape;
        let marks: Vec<StepMark> = (0..total)
            .map(|k| {
                let computed = k < run.steps.len();
                let (t, p) = match run.steps.get(k) {
                    Some(s) => (s.record.t, s.record.patch),
                    None => (cfg.t_of_step(k), cfg.patch_at(k, shape.h, shape.w)),
                };
                let seg = run.segment_of(k);
                let state = if computed { "computed" } else { "pending" };
                StepMark {
                    computed,
                    segment: seg,
                    hover: format!("step {k}  t = {t:.3}  P = {p}  ({state})\n{}", run.segments[seg].label),
                }
            })
            .collect();
        let live = self.viewing.is_none() && self.computing;
        let done = run.steps.len();
        let finished = run.finished;
        let total_seconds: f64 = run.steps.iter().map(|s| s.seconds).sum();
        let readout = run.steps.get(self.time.cursor).map(|s| {
            format!(
                "step {} / {}   t = {:.3}   ᾱ = {:.4}   P = {}",
                s.record.step,
                total - 1,
                s.record.t,
                s.record.alpha_bar,
                s.record.patch
            )
        });
        let computing = if live {
            self.progress.map(|(k, d, t)| (k, d as f32 / t.max(1) as f32)).or(Some((done, 0.0)))
        } else {
            None
        };

        ui.horizontal(|ui| {
            if ui.button("First").on_hover_text("First step (Home)").clicked() {
                cmds.push(TimeCommand::First);
            }
            if ui.button("Back").on_hover_text("Step back (←)").clicked() {
                cmds.push(TimeCommand::StepBack);
            }
            let play = if self.time.playing { "Pause" } else { "Play" };
            if ui.button(play).on_hover_text("Play or pause (Space)").clicked() {
                cmds.push(TimeCommand::TogglePlay);
            }
            if ui.button("Next").on_hover_text("Step forward (→)").clicked() {
                cmds.push(TimeCommand::StepForward);
            }
            if ui.button("Last").on_hover_text("Last step (End)").clicked() {
                cmds.push(TimeCommand::Last);
            }
            ui.checkbox(&mut self.settings.looping, "Loop");
            ui.add(egui::Slider::new(&mut self.settings.fps, 1.0..=60.0).text("fps").logarithmic(true));
            let mut follow = self.time.follow;
            if ui.checkbox(&mut follow, "Follow").on_hover_text("Show each new step as it arrives").changed() {
                cmds.push(if follow { TimeCommand::Follow } else { TimeCommand::Seek(self.time.cursor) });
            }
            ui.separator();
            if let Some(text) = readout {
                ui.label(text);
            }
        });
        if let Some(k) = timeline::scrubber(ui, &marks, self.time.cursor, computing) {
            cmds.push(TimeCommand::Seek(k));
        }
        ui.horizontal(|ui| {
            if live {
                let avg = if done > 0 { total_seconds / done as f64 } else { 0.0 };
                let frac = self.progress.map(|(_, d, t)| d as f64 / t.max(1) as f64).unwrap_or(0.0);
                let eta = avg * ((total - done) as f64 - frac).max(0.0);
                let chunks = self
                    .progress
                    .map(|(k, d, t)| format!("step {k}: chunk {d}/{t}"))
                    .unwrap_or_else(|| "starting…".into());
                ui.add(
                    egui::ProgressBar::new(((done as f64 + frac) / total as f64) as f32)
                        .desired_width(240.0)
                        .text(chunks),
                );
                if done > 0 {
                    ui.label(format!("ETA {eta:.1} s  ({avg:.2} s/step)"));
                }
                if ui.button("Stop").clicked() {
                    self.worker.send(Command::Cancel);
                    self.computing = false;
                }
            } else if finished {
                ui.label(format!("done: {done} steps in {total_seconds:.2} s"));
            }
        });
        let cursor = self.time.cursor;
        if let Some(run) = self.shown_run()
            && let Some(k) = super::plots::stats_plot(ui, run, cursor)
        {
            cmds.push(TimeCommand::Seek(k));
        }
    }

    fn canvas_ui(&mut self, ui: &mut Ui) {
        let cursor = self.time.cursor;
        let grid = self.settings.show_grid;
        let show_delta = self.settings.show_delta;
        let marker = self.inspect.as_ref().filter(|i| i.step == cursor).map(|i| (i.y, i.x));
        let Some(run) = self.shown_run() else {
            ui.centered_and_justified(|ui| ui.label("Loading the dataset and starting the first run…"));
            return;
        };
        let Some(step) = run.steps.get(cursor).or(run.steps.last()) else {
            ui.centered_and_justified(|ui| ui.spinner());
            return;
        };
        // Texture handles are reference-counted; the value arrays are a few KB.
        let (x_t, x0, delta) = (step.x_t.clone(), step.x0.clone(), step.delta.clone());
        let (xv, x0v) = (step.record.x_t.clone(), step.record.x0_hat.clone());
        let shape = run.shape;
        let mut panels = vec![
            canvas::Panel { title: "x_t (noisy state)", texture: &x_t, values: Some(&xv) },
            canvas::Panel { title: "x̂₀ (denoiser's estimate)", texture: &x0, values: Some(&x0v) },
        ];
        if show_delta {
            panels.push(canvas::Panel { title: "|Δx̂₀| since previous step", texture: &delta, values: None });
        }
        let out = canvas::show(ui, &mut self.canvas, shape, &panels, grid, marker);
        if let Some((y, x)) = out.clicked {
            self.request_inspect(y, x);
        }
    }

    fn inspector(&mut self, ui: &mut Ui) {
        ui.heading("Pixel inspector");
        let Some(iv) = &self.inspect else {
            ui.label("Click a pixel of x̂₀ to see which training patches voted for it.");
            return;
        };
        ui.label(format!(
            "pixel ({}, {}) at step {}: {} candidates, entropy {:.2} nats (≈{:.0} effective voters), weights sum to {:.6}",
            iv.x,
            iv.y,
            iv.step,
            iv.result.candidates,
            iv.result.entropy,
            iv.result.entropy.exp(),
            iv.result.weight_sum
        ));
        egui::Grid::new("votes").striped(true).show(ui, |ui| {
            ui.strong("patch");
            ui.strong("image");
            ui.strong("at");
            ui.strong("weight");
            ui.end_row();
            for (vote, tex) in iv.result.votes.iter().zip(&iv.crops).take(12) {
                ui.add(egui::Image::new(tex).fit_to_exact_size(egui::vec2(40.0, 40.0)));
                let label = self.dataset.as_ref().map(|_| format!("#{}", vote.image)).unwrap_or_default();
                ui.label(label);
                ui.label(format!("({}, {})", vote.x, vote.y));
                ui.add(
                    egui::ProgressBar::new(vote.weight as f32).desired_width(80.0).text(format!("{:.3}", vote.weight)),
                );
                ui.end_row();
            }
        });
    }

    fn show_errors(&mut self, ctx: &egui::Context) {
        if self.errors.is_empty() {
            return;
        }
        let mut dismiss = false;
        egui::Window::new("Problem")
            .collapsible(false)
            .resizable(true)
            .anchor(egui::Align2::CENTER_TOP, egui::vec2(0.0, 40.0))
            .show(ctx, |ui| {
                for e in &self.errors {
                    ui.label(egui::RichText::new(e).color(ui.visuals().error_fg_color));
                }
                if ui.button("Dismiss").clicked() {
                    dismiss = true;
                }
            });
        if dismiss {
            self.errors.clear();
        }
    }
}

impl eframe::App for StudioApp {
    fn ui(&mut self, ui: &mut Ui, _frame: &mut eframe::Frame) {
        self.ui_contents(ui);
        if self.computing || self.export.is_running() {
            // Keep the frame clock honest while work is in flight (events also wake us).
            ui.ctx().request_repaint_after(std::time::Duration::from_millis(250));
        }
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, eframe::APP_KEY, &self.settings);
    }
}
