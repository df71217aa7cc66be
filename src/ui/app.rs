//! The studio's state and its frame: events in, panels drawn, commands out.

use std::collections::VecDeque;
use std::time::Instant;

use egui::{Key, TextureHandle, TextureOptions, Ui};

use crate::engine::{Call, ImageShape};
use crate::worker::{Command, DatasetInfo, Event, RunId, WorkerHandle};

use super::canvas::{self, CanvasState};
use super::export_panel::ExportPanel;
use super::history::{History, Run, StepView};
use super::inspector::{InspectView, Inspector};
use super::live::{Decision, Frame, LiveEdit};
use super::settings::Settings;
use super::texture::color_image;
use super::timeline::{TimeCommand, TimeControl, TimelineView};

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

/// The last images of a run that a restart replaced, shown dimmed until the new run's first
/// step arrives: at a large locality scale that takes seconds, and a blank canvas in the
/// middle of a drag loses the picture the user was comparing against.
pub struct StaleView {
    pub step: StepView,
    pub shape: crate::engine::ImageShape,
    /// What the old run used (its segment label).
    pub label: String,
}

/// The call that computed pixel (y, x) of step `r` under `cfg`: with a painted locality map,
/// the pixel's own P at that step.
fn pixel_call(
    cfg: &crate::engine::SamplerConfig,
    r: &crate::engine::StepRecord,
    train: Option<ImageShape>,
    canvas: ImageShape,
    y: usize,
    x: usize,
) -> Call {
    let patch =
        train.and_then(|t| cfg.patches_at(r.step, t)).and_then(|p| p.get(y * canvas.w + x).copied()).unwrap_or(r.patch);
    let mut call = Call::new(cfg.machine, cfg.boundary, patch as usize, r.alpha_bar);
    call.canvas = cfg.canvas;
    call
}

/// The run in view: `viewing`, or the current run.
pub(crate) fn shown(history: &History, viewing: Option<RunId>) -> Option<&Run> {
    match viewing {
        Some(id) => history.runs.iter().find(|r| r.id == id).or(history.current()),
        None => history.current(),
    }
}

pub struct StudioApp {
    pub settings: Settings,
    /// Turns control changes into restarts and branches (debounced; see `live`).
    pub live: LiveEdit,
    pub stale: Option<StaleView>,
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
    /// The pixel inspector's state (the votes of the last clicked pixel).
    pub inspector: Inspector,
    pub canvas: CanvasState,
    pub frames: FrameStats,
    pub show_debug: bool,
    pub export: ExportPanel,
    /// Which past run is shown (None = the current one).
    pub viewing: Option<RunId>,
    pub(crate) folder_pick: Option<crossbeam_channel::Receiver<Option<std::path::PathBuf>>>,
    /// File dialogs asked for this frame; opened with the window as parent in `App::ui`.
    pub dialogs: super::dialogs::Dialogs,
    /// Lets export threads wake the UI when they finish.
    pub(crate) export_wake: Option<egui::Context>,
    /// The provenance-map panel's textures and hover.
    pub maps_view: super::maps_view::MapsView,
    /// Compare mode's second column.
    pub compare: super::compare::Compare,
    /// The seed grid window.
    pub seed_grid: super::seed_grid::SeedGrid,
    /// The calibration window (P(t) fitted to the CNN).
    pub calibration: super::calibration::Calibration,
    /// Undo and redo of brush strokes.
    pub paint: super::brush::PaintHistory,
    /// The locality map's overlay texture, with the map it shows.
    overlay: Option<(crate::engine::LocalityMap, TextureHandle)>,
    /// The path typed for saving the locality map.
    pub grow_map_path: Option<String>,
    /// A one-line note of the last thing done (a file saved).
    pub notice: Option<String>,
    /// The CNN weights path being typed, and a pending "Load weights…" dialog.
    pub cnn_typed: Option<String>,
    pub(crate) cnn_pick: Option<crossbeam_channel::Receiver<Option<std::path::PathBuf>>>,
    /// The current run's error, when it could not start (shown in place of its images).
    pub run_error: Option<(RunId, String)>,
    /// The process's resident memory and when it was read.
    resident: Option<(Instant, usize)>,
    /// `studio --stats FILE`: frame times and memory, once a second.
    pub stats_log: Option<super::stats_log::StatsLog>,
    /// The loaded set's predicted speciation and collapse, with its dataset hash.
    pub regimes: Option<(String, crate::engine::analysis::regimes::Prediction)>,
    /// In compare mode, both columns' sensitivity maps of the clicked pixel at every step.
    pub sensitivity_pair: Option<super::sensitivity_pair::SensitivityPair>,
    /// The comparisons the timeline last plotted for the run in view, for "Plots…".
    pub curves: crate::export::curves::Curves,
}

impl StudioApp {
    pub fn new(settings: Settings, worker: WorkerHandle) -> Self {
        Self {
            settings,
            live: LiveEdit::default(),
            stale: None,
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
            inspector: Inspector::default(),
            canvas: CanvasState::default(),
            frames: FrameStats::default(),
            show_debug: false,
            export: ExportPanel::default(),
            viewing: None,
            folder_pick: None,
            dialogs: Default::default(),
            export_wake: None,
            maps_view: Default::default(),
            compare: Default::default(),
            seed_grid: Default::default(),
            calibration: Default::default(),
            paint: Default::default(),
            overlay: None,
            grow_map_path: None,
            notice: None,
            cnn_typed: None,
            cnn_pick: None,
            run_error: None,
            resident: None,
            stats_log: None,
            regimes: None,
            sensitivity_pair: None,
            curves: Default::default(),
        }
    }

    /// The run the timeline and canvas show.
    pub fn shown_run(&self) -> Option<&Run> {
        shown(&self.history, self.viewing)
    }

    fn dataset_hash(&self) -> Option<String> {
        self.dataset
            .as_ref()
            .filter(|d| d.source == self.settings.dataset && d.options == self.settings.load_options())
            .map(|d| d.hash.clone())
    }

    /// Starts a fresh run of the current settings.
    pub fn restart(&mut self) {
        let recipe = self.settings.recipe(self.dataset_hash());
        self.start_recipe(recipe);
    }

    /// Starts a run of `recipe` exactly as given: a recipe opened from a file keeps its
    /// branch history and initial state, which the settings cannot express.
    pub fn start_recipe(&mut self, recipe: crate::recipe::Recipe) {
        let run = self.next_run;
        self.next_run += 1;
        self.keep_stale_view();
        let shape = self.dataset.as_ref().map(|d| d.shape).unwrap_or(crate::engine::ImageShape { c: 1, h: 1, w: 1 });
        self.history.start_fresh(run, &recipe, recipe.sampler.canvas_shape(shape));
        self.time = TimeControl::default();
        self.run_started();
        self.worker.send(Command::Start { run, recipe });
        if let Some(ctx) = self.export_wake.clone() {
            self.restart_compare(&ctx);
        }
    }

    /// The seed grid's window, its clicks (open a seed, export the sheet) and its save dialog.
    /// The calibration window; "Use as patch schedule" makes the fit the run's schedule.
    fn calibration_window(&mut self, ctx: &egui::Context) {
        let mut open = self.calibration.open;
        let base = self.dataset.as_ref().map(|_| self.settings.recipe(self.dataset_hash()));
        let mut action = None;
        // Each call costs about one step of the main run.
        self.calibration.seconds_per_call = self
            .history
            .current()
            .filter(|r| !r.steps.is_empty())
            .map(|r| r.steps.iter().map(|s| s.seconds).sum::<f64>() / r.steps.len() as f64);
        egui::Window::new("Calibrate P(t) to the CNN")
            .open(&mut open)
            .resizable(true)
            .default_pos(egui::pos2(340.0, 60.0))
            .show(ctx, |ui| {
                action = self.calibration.ui(ui, base.as_ref());
            });
        self.calibration.open = open;
        // A job runs for what it was started for, while its window is open.
        if !open {
            self.calibration.stop("stopped: its window was closed");
        } else if base.as_ref().is_some_and(|b| !self.calibration.started_for(b)) {
            self.calibration.stop("stopped: the dataset or the time grid changed");
        }
        if let Some(super::calibration::CalibrationAction::Use(list)) = action {
            self.settings.patch_mode = super::settings::PatchMode::List;
            self.settings.steps = list.len();
            self.settings.patch_list = list;
            self.restart();
        }
    }

    fn seed_grid_window(&mut self, ctx: &egui::Context) {
        let mut open = self.seed_grid.open;
        let base = self.settings.recipe(self.dataset_hash());
        let mut action = None;
        let title = match self.seed_grid.mode {
            super::seed_grid::GridMode::Seeds => "Seed grid",
            super::seed_grid::GridMode::Zoo => "Machine zoo",
        };
        egui::Window::new(title)
            .id(egui::Id::unique("seed_grid_window"))
            .open(&mut open)
            .resizable(true)
            .default_pos(egui::pos2(340.0, 60.0))
            .show(ctx, |ui| {
                action = self.seed_grid.ui(ui, Some(&base));
            });
        self.seed_grid.open = open;
        if !open {
            self.seed_grid.stop("stopped: its window was closed");
        } else if !self.seed_grid.started_for(&base) {
            self.seed_grid.stop("stopped: the settings changed");
        }
        match action {
            Some(super::seed_grid::GridAction::Open(seed, machine)) => {
                self.settings.seed = seed;
                self.settings.machine = machine;
                self.restart();
            }
            Some(super::seed_grid::GridAction::Export) => match &self.export.paths {
                super::export_panel::PathSource::Fixed(dir) => {
                    let path = dir.join(self.seed_grid.sheet_name());
                    self.write_seed_grid(path, false);
                }
                super::export_panel::PathSource::Dialog => {
                    let ask = super::dialogs::Ask::SaveFile {
                        title: "Export the seed grid".into(),
                        name: self.seed_grid.sheet_name().into(),
                        extension: Some("png"),
                    };
                    self.seed_grid.save = Some(self.dialogs.ask(ask));
                }
            },
            None => {}
        }
        if let Some(rx) = &self.seed_grid.save
            && let Ok(answer) = rx.try_recv()
        {
            self.seed_grid.save = None;
            // The native save dialog has already asked before replacing a file.
            if let Some(path) = answer {
                self.write_seed_grid(path, true);
            }
        }
    }

    fn write_seed_grid(&mut self, path: std::path::PathBuf, overwrite: bool) {
        let scale = self.seed_grid.cells.first().map(|_| 4).unwrap_or(1);
        let result = match self.seed_grid.sheet_png(scale) {
            Some(png) => {
                crate::files::write_bytes(&path, overwrite, &png).map_err(|e| format!("{}: {e}", path.display()))
            }
            None => Err("the seed grid has no finished sample to export yet".into()),
        };
        self.seed_grid.message = Some(match result {
            Ok(()) => format!("wrote {}", path.display()),
            Err(e) => e,
        });
    }

    /// Starts (or stops) the second column for the current run's recipe: same seed and grid.
    pub fn restart_compare(&mut self, ctx: &egui::Context) {
        self.sensitivity_pair = None;
        match (self.settings.compare_on, self.history.current().map(|r| r.recipe.clone())) {
            (true, Some(main)) => self.compare.start(ctx, &self.settings.compare, &main),
            _ => self.compare.stop(),
        }
    }

    /// What every restart and branch resets: the view returns to the current run.
    fn run_started(&mut self) {
        self.viewing = None;
        self.progress = None;
        self.computing = true;
        self.inspector.view = None;
        self.sensitivity_pair = None;
        self.live.mark_applied(&self.settings);
    }

    /// Remembers the images on screen before a restart replaces them.
    fn keep_stale_view(&mut self) {
        let Some(run) = self.shown_run() else { return };
        let Some(step) = run.steps.get(self.time.cursor).or(run.steps.last()) else { return };
        let label = run.segments.get(run.segment_of(step.record.step)).map(|s| s.label.clone()).unwrap_or_default();
        self.stale = Some(StaleView { step: step.clone(), shape: run.shape, label });
    }

    /// Keeps the current run's steps before `from_step` and recomputes from there with the
    /// current settings (restarts when the run does not know the state at that step).
    pub fn branch(&mut self, from_step: usize) {
        let run = self.next_run;
        let recipe = self.settings.recipe(self.dataset_hash());
        let Some((recipe, x_t)) = self.history.start_branch(run, from_step, recipe) else { return self.restart() };
        self.next_run += 1;
        self.time.follow = true;
        self.run_started();
        self.worker.send(Command::Branch { run, recipe, from_step, x_t });
    }

    /// Called once per frame after the controls: a settled change restarts or branches.
    fn apply_changes(&mut self, ctx: &egui::Context) {
        // Every worker attaches the CNN from the file named here when it next runs, and keeps
        // its caches to its share of the budget set here. Set after this frame's controls and
        // before the run they restart: set before them, a run started by picking other
        // weights ran the weights picked before.
        crate::worker::set_studio_cnn(self.settings.cnn_weights.clone());
        crate::memory::Pool::global().set_budget(self.settings.memory_budget_mb << 20);
        let k = self.time.cursor;
        let cursor_step =
            self.history.current().filter(|r| self.viewing.is_none() && r.state_at(k).is_some()).map(|_| k);
        let frame = Frame { now: Instant::now(), pointer_down: ctx.input(|i| i.pointer.any_down()), cursor_step };
        match self.live.decide(&self.settings, frame) {
            Decision::Nothing => {}
            Decision::Restart => self.restart(),
            Decision::Branch { from_step } => self.branch(from_step),
        }
        if self.live.is_pending() {
            // Come back when the settle time has passed even if nothing else moves.
            ctx.request_repaint_after(super::live::SETTLE);
        }
    }

    /// Opens a recipe: its settings go to the controls and it runs exactly as written.
    pub fn open_recipe(&mut self, recipe: crate::recipe::Recipe, warnings: Vec<String>) {
        match self.settings.from_recipe(&recipe) {
            Ok(settings) => {
                self.settings = settings;
                self.errors.extend(warnings);
                self.start_recipe(recipe);
            }
            Err(e) => self.errors.push(format!("cannot open this recipe: {e}")),
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
                    run.shape = run.recipe.sampler.canvas_shape(info.shape);
                }
                if self.settings.fit_paint_to(info.shape) {
                    self.paint.clear();
                    self.errors.push(
                        "the painted locality map and wounds were for another canvas size, so they were cleared".into(),
                    );
                }
                self.dataset = Some(*info);
            }
            Event::Started { run, device, dataset_hash } => {
                if let Some(r) = self.history.runs.iter_mut().find(|r| r.id == run) {
                    r.recipe.device = device;
                    r.recipe.dataset_hash = Some(dataset_hash);
                }
            }
            Event::Progress { run, step, done, total } if Some(run) == current => {
                self.progress = Some((step, done, total))
            }
            Event::Step { run, record, seconds } if Some(run) == current => {
                self.stale = None;
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
            Event::Inspected { run, step, y, x, result, crops, images, query, sensitivity, reach } => {
                let tex = |name: String, shape: ImageShape, img: &[f32]| {
                    ctx.load_texture(name, color_image(img, shape), TextureOptions::NEAREST)
                };
                let crops =
                    crops.iter().enumerate().map(|(k, (shape, img))| tex(format!("vote{k}"), *shape, img)).collect();
                // The run's canvas, and the training images' shape (the votes' images are
                // training images, whatever the canvas).
                let canvas = self.history.runs.iter().find(|r| r.id == run).map(|r| r.shape).unwrap_or(query.0);
                let shape = self.dataset.as_ref().map(|d| d.shape).unwrap_or(canvas);
                let images = images
                    .iter()
                    .enumerate()
                    .filter(|(_, img)| img.len() == shape.len())
                    .map(|(k, img)| tex(format!("voteimg{k}"), shape, img))
                    .collect();
                // A whole-image query means a whole-image machine: no window to outline.
                let patch = if query.0 == canvas || query.0 == shape { 0 } else { query.0.w };
                let filter = result.filter.as_ref().map(|f| {
                    ctx.load_texture("filter", super::inspector::filter_image(f, shape), TextureOptions::NEAREST)
                });
                let window = result.window.as_ref().filter(|_| query.0 == shape).map(|w| {
                    let img = super::inspector::window_image(&query.1, shape, w);
                    ctx.load_texture("window", img, TextureOptions::NEAREST)
                });
                let query = Some(tex("query".into(), query.0, &query.1));
                let sensitivity = sensitivity.filter(|m| m.len() == canvas.pixels()).map(|m| {
                    let img = super::inspector::filter_image(&m, canvas);
                    (ctx.load_texture("sensitivity", img, TextureOptions::NEAREST), canvas)
                });
                self.inspector.view = Some(InspectView {
                    run,
                    step,
                    y,
                    x,
                    result: *result,
                    crops,
                    images,
                    query,
                    shape,
                    patch,
                    filter,
                    window,
                    sensitivity,
                    outline: reach.unwrap_or(patch),
                });
            }
            Event::Notice { message } => {
                self.device_notice = Some(message.clone());
                if !self.errors.contains(&message) {
                    self.errors.push(message);
                }
            }
            Event::Error { run, message } => {
                if run.is_none() || run == current {
                    self.computing = false;
                    self.progress = None;
                }
                // A run that could not start shows why in place of its images, not the
                // previous run's images under its caption.
                if let Some(id) = run.filter(|&r| Some(r) == current)
                    && self.history.current().is_some_and(|r| r.steps.is_empty())
                {
                    self.stale = None;
                    self.run_error = Some((id, message.clone()));
                }
                // The same refusal again (a machine switched to twice) is said once.
                if !self.errors.contains(&message) {
                    self.errors.push(message);
                }
            }
            // Events of runs that were replaced.
            Event::Sensitivity { run, step, y, x, map } => {
                let canvas = self.history.runs.iter().find(|r| r.id == run).map(|r| r.shape);
                if let (Some(pair), Some(canvas)) = (&mut self.sensitivity_pair, canvas)
                    && pair.run == run
                    && pair.pixel == (y, x)
                {
                    pair.insert(ctx, super::sensitivity_pair::Column::Main, step, map, canvas);
                }
            }
            Event::Regimes { dataset_hash, prediction } => match prediction {
                Ok(p) => self.regimes = Some((dataset_hash, p)),
                // Not an error the user made: the timeline simply has no marks for this set.
                Err(why) => {
                    self.regimes = None;
                    self.notice = Some(format!("no speciation or collapse marks on the timeline: {why}"));
                }
            },
            Event::Progress { .. } | Event::Step { .. } | Event::Finished { .. } | Event::Calibrated { .. } => {}
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

    /// Ctrl+Z / Ctrl+Shift+Z undo and redo strokes; F enlarges the hovered panel, Esc returns.
    fn paint_keys(&mut self, ui: &Ui) {
        if ui.ctx().egui_wants_keyboard_input() {
            return;
        }
        let (undo, redo, enlarge, back) = ui.input(|i| {
            let z = i.key_pressed(Key::Z) && i.modifiers.command;
            (z && !i.modifiers.shift, z && i.modifiers.shift, i.key_pressed(Key::F), i.key_pressed(Key::Escape))
        });
        if undo {
            self.paint.undo(&mut self.settings);
        }
        if redo {
            self.paint.redo(&mut self.settings);
        }
        if enlarge && let Some(title) = self.canvas.hovered_panel.clone() {
            self.canvas.toggle_enlarged(&title);
        }
        if back {
            self.canvas.enlarged = None;
        }
        if ui.input(|i| i.key_pressed(Key::Num0)) {
            (self.canvas.zoom, self.canvas.pan) = (1.0, egui::Vec2::ZERO);
        }
    }

    /// A finished stroke becomes one change of the settings: the run restarts (locality) or
    /// branches from the wounded step (edits), and the first wound turns on the unedited
    /// column beside it.
    fn finish_stroke(&mut self, ctx: &egui::Context, points: Vec<(usize, usize)>, erase: bool, step: usize) {
        let (Some(run), Some(d)) = (self.history.current(), self.dataset.as_ref()) else { return };
        let (canvas, train) = (run.shape, d.shape);
        let stamp_image = self.inspector.view.as_ref().and_then(|v| v.result.votes.first()).map(|v| v.image);
        let stroke = super::brush::Stroke { points, erase, step, stamp_image };
        let had_edits = !self.settings.edits.is_empty();
        if self.paint.apply(&mut self.settings, &stroke, canvas, train) && !had_edits && !self.settings.edits.is_empty()
        {
            self.settings.compare_on = true;
            self.settings.compare.unedited = true;
            self.restart_compare(ctx);
        }
    }

    /// Asks the worker for the votes behind pixel (y, x) at the step under the cursor, and in
    /// compare mode both columns' workers for the pixel's sensitivity at every computed step.
    pub fn request_inspect(&mut self, y: usize, x: usize) {
        let Some(run) = self.shown_run() else { return };
        let Some(step) = run.steps.get(self.time.cursor) else { return };
        let r = &step.record;
        let cfg = &run.recipe.sampler;
        let train = self.dataset.as_ref().map(|d| d.shape);
        let mut call = pixel_call(cfg, r, train, run.shape, y, x);
        call.entropy = false;
        let dataset_hash = run.recipe.dataset_hash.clone();
        let top = self.settings.inspect_top;
        let cmd = Command::Inspect { run: run.id, dataset_hash, step: r.step, x_t: r.x_t.clone(), call, y, x, top };
        self.worker.send(cmd);
        self.request_sensitivity_pair(y, x);
    }

    /// Compare mode: each column's worker computes the pixel's map at each of its steps.
    fn request_sensitivity_pair(&mut self, y: usize, x: usize) {
        self.sensitivity_pair = None;
        let (Some(run), Some(second), Some(worker)) =
            (self.shown_run(), self.compare.recipe.as_ref(), self.compare.worker.as_ref())
        else {
            return;
        };
        // The two columns' pixels line up only on canvases of one shape.
        if !self.compare.is_on() || self.compare.shape != Some(run.shape) {
            return;
        }
        let train = self.dataset.as_ref().map(|d| d.shape);
        let steps = |records: Vec<&crate::engine::StepRecord>, cfg: &crate::engine::SamplerConfig| {
            records.into_iter().map(|r| (r.step, r.x_t.clone(), pixel_call(cfg, r, train, run.shape, y, x))).collect()
        };
        let main = steps(run.steps.iter().map(|s| &s.record).collect(), &run.recipe.sampler);
        let other = steps(self.compare.steps.iter().map(|s| &s.record).collect(), &second.sampler);
        let dataset_hash = run.recipe.dataset_hash.clone();
        self.worker.send(Command::Sensitivity { run: run.id, dataset_hash, y, x, steps: main });
        let second_run = self.compare.run.unwrap_or_default();
        worker.send(Command::Sensitivity { run: second_run, dataset_hash: None, y, x, steps: other });
        let titles = [run.recipe.sampler.machine.title().to_string(), self.compare.label.clone()];
        self.sensitivity_pair = Some(super::sensitivity_pair::SensitivityPair::new(run.id, (y, x), titles));
    }

    /// The whole studio inside `ui` (the eframe app and the UI tests both call this).
    pub fn ui_contents(&mut self, ui: &mut Ui) {
        let ctx = ui.ctx().clone();
        self.export_wake.get_or_insert_with(|| ctx.clone());
        let dt = self.frames.tick();
        self.drain_events(&ctx);
        self.compare.drain(&ctx);
        for (step, y, x, map) in std::mem::take(&mut self.compare.sensitivity) {
            if let (Some(pair), Some(canvas)) = (&mut self.sensitivity_pair, self.compare.shape)
                && pair.pixel == (y, x)
            {
                pair.insert(&ctx, super::sensitivity_pair::Column::Second, step, map, canvas);
            }
        }
        self.seed_grid.drain(&ctx);
        self.seed_grid_window(&ctx);
        self.calibration.drain();
        self.calibration_window(&ctx);
        self.poll_folder_pick();
        self.handle_drops(&ctx);

        if self.dialogs.take_failure() && matches!(self.export.paths, super::export_panel::PathSource::Dialog) {
            let dir = super::export_panel::fallback_dir();
            self.errors.push(format!(
                "No file dialog could open here (is a desktop portal running?). Exports now go to {}, shown in the \
                 Export panel, where you can change it; click the export again.",
                dir.display()
            ));
            self.export.use_fallback(dir);
        }
        self.paint_keys(ui);
        let mut cmds = self.keyboard(ui);

        egui::Panel::top("menu").show(ui, |ui| self.top_bar(ui));
        egui::Panel::bottom("status").show(ui, |ui| self.status_bar(ui));
        // Side panels keep sane widths whatever their text (and whatever width a saved layout
        // remembers): a long line wraps instead of pushing the images off screen.
        egui::Panel::left("controls").resizable(true).default_size(300.0).size_range(240.0..=440.0).show(ui, |ui| {
            egui::ScrollArea::vertical().show(ui, |ui| self.controls(ui));
        });
        egui::Panel::right("inspector").resizable(true).default_size(280.0).size_range(240.0..=420.0).show(ui, |ui| {
            egui::ScrollArea::vertical().show(ui, |ui| {
                if self.inspector.ui(ui, &mut self.settings.inspect_top)
                    && let Some(v) = &self.inspector.view
                {
                    let (y, x) = (v.y, v.x);
                    self.request_inspect(y, x);
                }
                let shown = self.shown_run().map(|r| r.id);
                if let Some(pair) = self.sensitivity_pair.as_ref().filter(|p| Some(p.run) == shown) {
                    ui.separator();
                    pair.ui(ui, self.time.cursor);
                }
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
        self.apply_changes(&ctx);
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
                ui.label(format!(
                    "{}: {}, {}×{}×{}",
                    d.source.label(),
                    crate::data::count(d.len, "image"),
                    d.shape.c,
                    d.shape.h,
                    d.shape.w
                ));
            }
            ui.separator();
            // The whole process, not only the history: read once a second.
            let now = Instant::now();
            if self.resident.is_none_or(|(at, _)| now.duration_since(at).as_secs_f64() >= 1.0) {
                self.resident = crate::memory::resident_bytes().map(|b| (now, b));
            }
            if let Some((_, bytes)) = self.resident {
                ui.label(format!("memory {}", mb(bytes)))
                    .on_hover_text("everything Morphogen holds: data, caches, images and the window");
            }
            let pool = crate::memory::Pool::global();
            let totals = pool.totals();
            ui.menu_button(format!("caches {} of {}", mb(totals.caches), mb(pool.budget())), |ui| {
                self.memory_menu(ui, &totals)
            })
            .response
            .on_hover_text("what the computation keeps between calls; click to see it all and set the budget");
            if self.show_debug {
                ui.separator();
                ui.label(format!("frame p95 {:.1} ms", self.frames.p95_ms()));
            }
        });
    }

    /// Where the memory goes, and the one budget every worker's caches share.
    fn memory_menu(&mut self, ui: &mut Ui, totals: &crate::memory::Totals) {
        ui.set_max_width(360.0);
        ui.horizontal(|ui| {
            ui.label("Cache budget");
            ui.add(
                egui::DragValue::new(&mut self.settings.memory_budget_mb)
                    .range((crate::memory::MIN_BUDGET >> 20)..=(256 << 10))
                    .speed(16)
                    .suffix(" MiB"),
            )
            .on_hover_text(
                "Key banks, pixel groups, PCA masks and Gaussian fits of every worker share it: the main run \
                 has what the compare column, seed grid, zoo and calibration (an eighth each, while open) \
                 leave. Lowered, each drops what is over its share within a second; runs then recut their \
                 keys per call, slower but smaller.",
            );
        });
        egui::Grid::new("memory").num_columns(2).show(ui, |ui| {
            let workers = crate::data::count(totals.workers, "worker");
            ui.label("caches");
            ui.label(format!("{} ({workers}, {} secondary)", mb(totals.caches), totals.secondary));
            ui.end_row();
            ui.label("training data");
            ui.label(format!("{} (each worker's copy)", mb(totals.data)));
            ui.end_row();
            ui.label("run history");
            ui.label(format!(
                "{} of {} (older runs are dropped past it)",
                mb(self.history.total_bytes()),
                mb(self.history.cap_bytes)
            ));
            ui.end_row();
            if let Some((_, bytes)) = self.resident {
                ui.label("everything");
                ui.label(format!("{} resident, with the window and the images on screen", mb(bytes)));
                ui.end_row();
            }
        });
    }

    fn timeline_ui(&mut self, ui: &mut Ui, cmds: &mut Vec<TimeCommand>) {
        let live = self.viewing.is_none() && self.computing;
        let Some(run) = shown(&self.history, self.viewing) else {
            ui.label("Waiting for the first step…");
            return;
        };
        let records: Vec<&crate::engine::StepRecord> = run.steps.iter().map(|s| &s.record).collect();
        let compare_r = self.compare.is_on().then(|| self.compare.correlations(run.id, &records));
        // A wounded run beside its unedited self: how far x̂₀ is from healed, per step.
        let edits = &run.recipe.sampler.edits;
        let wound = super::brush::wound(edits, run.shape.h, run.shape.w)
            .filter(|_| self.compare.is_on() && self.settings.compare.unedited);
        let healing = wound.map(|wound| {
            let mut lines = [Vec::new(), Vec::new()];
            for m in &records {
                let Some(c) = self.compare.step(m.step).filter(|c| c.record.x0_hat.len() == m.x0_hat.len()) else {
                    continue;
                };
                for (line, inside) in lines.iter_mut().zip([true, false]) {
                    let rms = super::brush::rms_split(&m.x0_hat, &c.record.x0_hat, &wound, inside);
                    line.push([m.step as f64, rms]);
                }
            }
            lines
        });
        let cosine = self
            .sensitivity_pair
            .as_ref()
            .filter(|p| p.run == run.id && !p.cosine.is_empty())
            .map(|p| (p.pixel, p.cosine.iter().map(|(&k, &c)| [k as f64, c]).collect()));
        self.curves = crate::export::curves::Curves {
            compare_r: compare_r.clone().map(|r| (self.compare.label.clone(), r)),
            healing: healing.clone(),
            sensitivity_cosine: cosine,
        };
        let view = TimelineView {
            run,
            live,
            compare_r,
            healing,
            progress: self.progress,
            // Only on a run of the set they were predicted for.
            regimes: self
                .regimes
                .as_ref()
                .filter(|(hash, _)| run.recipe.dataset_hash.as_ref() == Some(hash))
                .map(|(_, p)| p),
            looping: &mut self.settings.looping,
            fps: &mut self.settings.fps,
        };
        let out = self.time.ui(ui, view);
        cmds.extend(out.commands);
        if out.stop {
            self.worker.send(Command::Cancel);
            self.computing = false;
        }
    }

    fn canvas_ui(&mut self, ui: &mut Ui) {
        let cursor = self.time.cursor;
        let grid = self.settings.show_grid;
        let show_delta = self.settings.show_delta;
        let marker = self.inspector.marker(cursor);
        // Borrow the history alone, so the map view (another field) can be updated below.
        let Some(run) = shown(&self.history, self.viewing) else {
            ui.centered_and_justified(|ui| ui.label("Loading the dataset and starting the first run…"));
            return;
        };
        let (step, shape, stale) = match (run.steps.get(cursor).or(run.steps.last()), &self.stale) {
            (Some(step), _) => (step, run.shape, None),
            (None, Some(old)) if self.viewing.is_none() => (&old.step, old.shape, Some(old.label.as_str())),
            (None, _) if self.run_error.as_ref().is_some_and(|(id, _)| *id == run.id) => {
                let why = self.run_error.as_ref().map(|(_, m)| m.clone()).unwrap_or_default();
                ui.centered_and_justified(|ui| {
                    ui.label(format!(
                        "This run could not start:\n{why}\n\nChange the machine or its settings, or load what it \
                         needs; Restart (or any change) tries again."
                    ))
                });
                return;
            }
            (None, _) => {
                ui.centered_and_justified(|ui| ui.spinner());
                return;
            }
        };
        if let Some(label) = stale {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label(
                    egui::RichText::new(format!(
                        "computing the new settings… still showing the previous run ({label})"
                    ))
                    .weak(),
                );
            });
        }
        // Texture handles are reference-counted; the value arrays are a few KB.
        let (x_t, x0, delta) = (step.x_t.clone(), step.x0.clone(), step.delta.clone());
        let (xv, x0v) = (step.record.x_t.clone(), step.record.x0_hat.clone());
        let tint = if stale.is_some() { egui::Color32::from_gray(90) } else { egui::Color32::WHITE };
        // The map of the step under the cursor, and the hovered pixel's source as an arrow.
        let run_id = run.id;
        let run_machine = run.recipe.sampler.machine;
        let same_set = self.dataset.as_ref().filter(|d| run.recipe.dataset_hash.as_deref() == Some(d.hash.as_str()));
        let n_train = self.dataset.as_ref().map_or(1, |d| d.len);
        let maps = step.record.maps.clone().filter(|_| stale.is_none());
        // A machine with no vote (the Gaussian machine, the CNN) has no map: only a line saying so.
        let no_vote = run_machine.without_votes().filter(|_| self.settings.map_view.is_some());
        let map = self.settings.map_view.zip(maps.as_ref().filter(|_| no_vote.is_none())).map(|(kind, m)| {
            let tex = self.maps_view.texture(ui.ctx(), (run_id, step.record.step, kind), m, shape, n_train);
            (kind, tex)
        });
        let arrow = maps.as_ref().and_then(|m| self.maps_view.arrow(m, shape)).filter(|_| map.is_some());
        // PCA-locality: the hovered pixel's learned window, shaded on x_t and x̂₀.
        let window = maps.as_ref().and_then(|m| self.maps_view.window(m, shape));
        let window = window.as_deref();
        // The brush: x_t takes wounds; the locality tools paint on x_t and x̂₀ alike, under
        // the overlay. Only the current run at a computed step can be wounded.
        let brush = &self.settings.brush;
        let can_paint = brush.on && stale.is_none() && self.viewing.is_none();
        let map_tool = brush.tool.paints_map();
        let overlay_map =
            self.settings.locality_map.clone().filter(|m| brush.overlay && (m.h, m.w) == (shape.h, shape.w));
        let overlay = match (overlay_map, self.overlay.take()) {
            (Some(m), Some((old, tex))) if old == m => Some((old, tex)),
            (Some(m), _) => {
                let tex =
                    ui.ctx().load_texture("locality-overlay", super::brush::overlay_image(&m), TextureOptions::NEAREST);
                Some((m, tex))
            }
            (None, _) => None,
        };
        self.overlay = overlay;
        let overlay = self.overlay.as_ref().map(|(_, t)| t);
        let mut panels = vec![
            canvas::Panel {
                values: Some(&xv),
                window,
                paintable: can_paint,
                overlay,
                ..canvas::Panel::image("x_t (noisy state)", &x_t, tint)
            },
            canvas::Panel {
                values: Some(&x0v),
                arrow,
                window,
                paintable: can_paint && map_tool,
                overlay,
                ..canvas::Panel::image("x̂₀ (denoiser's estimate)", &x0, tint)
            },
        ];
        if show_delta {
            panels.push(canvas::Panel::image("|Δx̂₀| since previous step", &delta, tint));
        }
        // Compare mode: the second column's x̂₀ at the same step (same seed and time grid).
        let k = step.record.step;
        let cmp_title = format!("x̂₀, {}", self.compare.label);
        let cmp = self
            .compare
            .step(k)
            .filter(|c| self.compare.is_on() && c.record.x0_hat.len() == x0v.len() && stale.is_none())
            .map(|c| (c.x0.clone(), c.record.x0_hat.clone()));
        if let Some((tex, values)) = &cmp {
            panels.insert(2, canvas::Panel { values: Some(values), ..canvas::Panel::image(&cmp_title, tex, tint) });
        }
        // Novelty: the training image nearest to this x̂₀ (from the loaded set only).
        // (None on a canvas of another size than the training images.)
        let (nearest, nearest_rms) = step.record.nearest.unwrap_or((usize::MAX, f32::NAN));
        let nearest_title = format!("nearest training image #{nearest}");
        let nearest_tex = same_set
            .filter(|_| self.settings.show_nearest && stale.is_none() && step.record.nearest.is_some())
            .and_then(|info| self.maps_view.image(ui.ctx(), info, nearest));
        if let Some(tex) = &nearest_tex {
            let at = if cmp.is_some() { 3 } else { 2 };
            panels.insert(at, canvas::Panel::image(&nearest_title, tex, tint));
        }
        let novelty = nearest_tex.as_ref().map(|_| {
            // A shift of 26 on a 28-pixel side reads better as −2.
            let signed = |d: usize, n: usize| if d > n / 2 { d as isize - n as isize } else { d as isize };
            let shifted = step.record.nearest_shifted.map(|(m, rms, (dy, dx))| {
                let (dy, dx) = (signed(dy, shape.h), signed(dx, shape.w));
                format!("; under circular shifts: #{m} moved by ({dx}, {dy}) px, RMS {rms:.3}")
            });
            format!("x̂₀ to its nearest training image #{nearest}: RMS {nearest_rms:.3}{}", shifted.unwrap_or_default())
        });
        if let Some((kind, tex)) = &map {
            panels.push(canvas::Panel { arrow, window, ..canvas::Panel::image(kind.name(), tex, tint) });
        }
        let legend_lines = if map.is_some() { 3 } else { 0 }
            + usize::from(self.compare.is_on())
            + usize::from(novelty.is_some())
            + usize::from(map.is_some() && window.is_some())
            // The note of a machine without votes wraps to two lines at most widths.
            + if no_vote.is_some() { 2 } else { 0 };
        let radius = can_paint.then_some(self.settings.brush.radius);
        let out = canvas::show(ui, &mut self.canvas, shape, &panels, grid, marker, legend_lines, radius);
        self.maps_view.hovered = out.hovered;
        let stroke = out.stroke;
        if let Some(text) = novelty {
            ui.label(text);
        }
        if self.compare.is_on() {
            let text = match (&self.compare.error, &cmp) {
                (Some(e), _) => format!("compare column: {e}"),
                (None, Some(_)) => {
                    let r = self.compare.r_at(run_id, &step.record).unwrap_or(0.0);
                    format!("compare: r(x̂₀, {}) = {r:.3} at this step (r² = {:.3})", self.compare.label, r * r)
                }
                (None, None) if self.compare.shape.is_some_and(|s| s != shape) => {
                    "compare column: its images are another size, so they are not shown side by side".into()
                }
                (None, None) => format!("compare column ({}): computing step {k}…", self.compare.label),
            };
            ui.label(text);
        }
        if let (Some((kind, _)), Some(m)) = (map, maps.as_ref()) {
            self.maps_view.legend(ui, (run_id, k, kind), m, shape, n_train, same_set);
        }
        if let Some(why) = no_vote {
            ui.label(why);
        }
        if let Some((y, x)) = out.clicked
            && stale.is_none()
        {
            self.request_inspect(y, x);
        }
        if let Some((points, erase)) = stroke {
            self.finish_stroke(ui.ctx(), points, erase, k);
        }
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
    fn ui(&mut self, ui: &mut Ui, frame: &mut eframe::Frame) {
        let started = Instant::now();
        self.ui_contents(ui);
        if let Some(log) = &mut self.stats_log {
            let work_ms = started.elapsed().as_secs_f64() * 1e3;
            let caches = crate::memory::Pool::global().totals().caches;
            if let Err(e) = log.frame(work_ms, self.resident.map(|(_, b)| b), caches) {
                self.errors.push(e);
                self.stats_log = None;
            }
        }
        self.dialogs.open_pending(frame);
        if self.computing || self.export.is_running() {
            // Keep the frame clock honest while work is in flight (events also wake us).
            let busy = super::pacing::Pacing::of(ui.ctx()).busy(std::time::Duration::from_millis(250));
            ui.ctx().request_repaint_after(busy);
        }
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, eframe::APP_KEY, &self.settings);
    }
}

/// Bytes as the status bar says them, in the budget's binary units: "540 MiB", "2.0 GiB".
fn mb(bytes: usize) -> String {
    if bytes >= 1 << 30 {
        format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
    } else if bytes >= 10 << 20 {
        format!("{:.0} MiB", bytes as f64 / (1u64 << 20) as f64)
    } else {
        format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
    }
}
