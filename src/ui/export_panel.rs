//! The export panel: save the current frame, a PNG sequence, GIF/APNG animations, a contact
//! sheet, the trajectory (.npy) and the recipe; open a recipe. Long exports run on their own
//! thread with a progress bar and a cancel button; nothing is overwritten without asking.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crossbeam_channel::{Receiver, TryRecvError, bounded};
use egui::Ui;

use crate::export::{self, ExportOptions, View, default_scale};
use crate::recipe::Recipe;
use crate::trajectory::Trajectory;

use super::app::StudioApp;
use super::dialogs::Ask;
use super::history::Run;

/// What a file dialog was opened for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportKind {
    Frame,
    Frames,
    Gif,
    Apng,
    Sheet,
    Trajectory,
    Recipe,
    OpenRecipe,
}

impl ExportKind {
    fn extension(&self) -> Option<&'static str> {
        match self {
            Self::Frame | Self::Sheet => Some("png"),
            Self::Gif => Some("gif"),
            Self::Apng => Some("apng"),
            Self::Recipe | Self::OpenRecipe => Some("json"),
            Self::Frames | Self::Trajectory => None,
        }
    }
    fn is_folder(&self) -> bool {
        matches!(self, Self::Frames | Self::Trajectory)
    }
}

/// Where paths come from: a native dialog, or (in tests) a fixed folder, so no test ever
/// opens a dialog.
#[derive(Clone, Debug, Default)]
pub enum PathSource {
    #[default]
    Dialog,
    Fixed(PathBuf),
}

struct Job {
    done: Arc<AtomicUsize>,
    total: Arc<AtomicUsize>,
    cancel: Arc<AtomicBool>,
    result: Receiver<Result<Vec<PathBuf>, String>>,
}

/// What an export writes, taken when its button is clicked: the dialog may stay open while
/// the run moves on, and the file must hold what was on screen at the click.
#[derive(Clone)]
pub struct Snapshot {
    pub traj: Trajectory,
    pub cursor: usize,
    pub options: ExportOptions,
}

#[derive(Default)]
pub struct ExportPanel {
    pub view: View,
    /// 0 = the default for the image size.
    pub scale: u32,
    pub hold_seconds: f64,
    pub sheet_count: usize,
    /// Inclusive step range for sequences, animations and sheets (clamped to the run).
    pub range: (usize, usize),
    pub paths: PathSource,
    pick: Option<(ExportKind, Option<Snapshot>, Receiver<Option<PathBuf>>)>,
    /// A target that exists, waiting for "Overwrite?".
    pub confirm: Option<(ExportKind, Option<Snapshot>, PathBuf)>,
    job: Option<Job>,
    pub message: Option<String>,
}

impl ExportPanel {
    pub fn is_running(&self) -> bool {
        self.job.is_some()
    }

    /// Collects a finished export.
    /// Collects a finished export. An export thread that ended without an answer (it
    /// panicked past its guard, or was killed) is reported, never left looking busy.
    pub fn poll(&mut self, ctx: &egui::Context) {
        if let Some(job) = &self.job {
            match job.result.try_recv() {
                Ok(Ok(files)) => {
                    self.message = Some(match files.first() {
                        Some(first) => format!("wrote {} file(s): {}", files.len(), first.display()),
                        None => "nothing written".into(),
                    });
                    self.job = None;
                }
                Ok(Err(e)) => {
                    self.message = Some(format!("export failed: {e}"));
                    self.job = None;
                }
                Err(TryRecvError::Disconnected) => {
                    self.message = Some("export failed: the export stopped without finishing".into());
                    self.job = None;
                }
                Err(TryRecvError::Empty) => ctx.request_repaint_after(std::time::Duration::from_millis(100)),
            }
        }
    }
}

fn default_name(run: &Run, kind: ExportKind, step: usize, view: View) -> String {
    let r = &run.recipe;
    let base = format!("{}_{}_seed{}", r.dataset.short_name(), r.sampler.machine.name(), r.sampler.seed);
    match kind {
        ExportKind::Frame => format!("{base}_step{step:02}_{}.png", view.name()),
        ExportKind::Frames => format!("{base}_frames"),
        ExportKind::Gif => format!("{base}_{}.gif", view.name()),
        ExportKind::Apng => format!("{base}_{}.apng", view.name()),
        ExportKind::Sheet => format!("{base}_sheet.png"),
        ExportKind::Trajectory => format!("{base}_trajectory"),
        ExportKind::Recipe | ExportKind::OpenRecipe => format!("{base}_recipe.json"),
    }
}

impl StudioApp {
    fn trajectory_of_shown(&self) -> Option<Trajectory> {
        let run = self.shown_run()?;
        Some(Trajectory {
            recipe: run.recipe.clone(),
            shape: run.shape,
            steps: run.steps.iter().map(|s| s.record.clone()).collect(),
        })
    }

    pub(crate) fn export_ui(&mut self, ui: &mut Ui) {
        ui.heading("Export");
        let has_run = self.shown_run().is_some_and(|r| !r.steps.is_empty());
        let shape = self.shown_run().map(|r| r.shape);
        let e = &mut self.export;
        ui.horizontal(|ui| {
            ui.label("View");
            ui.selectable_value(&mut e.view, View::X0, "x̂₀");
            ui.selectable_value(&mut e.view, View::Xt, "x_t");
            ui.selectable_value(&mut e.view, View::Both, "both");
        });
        let default = shape.map(default_scale).unwrap_or(8);
        if e.scale == 0 {
            e.scale = default;
        }
        ui.add(egui::Slider::new(&mut e.scale, 1..=32).text("scale ×"));
        ui.add(egui::Slider::new(&mut e.hold_seconds, 0.0..=5.0).text("hold last (s)"));
        if e.sheet_count == 0 {
            e.sheet_count = 8;
        }
        ui.add(egui::Slider::new(&mut e.sheet_count, 1..=100).text("sheet steps"));
        let last = self.shown_run().map(|r| r.total_steps.saturating_sub(1)).unwrap_or(0);
        let e = &mut self.export;
        if e.range == (0, 0) || e.range.1 > last {
            e.range = (0, last);
        }
        ui.horizontal(|ui| {
            ui.label("steps");
            ui.add(egui::DragValue::new(&mut e.range.0).range(0..=e.range.1));
            ui.label("to");
            ui.add(egui::DragValue::new(&mut e.range.1).range(e.range.0..=last));
        });
        let mut clicked = None;
        ui.add_enabled_ui(has_run && !self.export.is_running(), |ui| {
            ui.horizontal_wrapped(|ui| {
                for (kind, label) in [
                    (ExportKind::Frame, "Frame PNG…"),
                    (ExportKind::Frames, "PNG sequence…"),
                    (ExportKind::Gif, "GIF…"),
                    (ExportKind::Apng, "APNG…"),
                    (ExportKind::Sheet, "Contact sheet…"),
                    (ExportKind::Trajectory, "Trajectory .npy…"),
                    (ExportKind::Recipe, "Recipe…"),
                ] {
                    if ui.button(label).clicked() {
                        clicked = Some(kind);
                    }
                }
                if ui.button("Copy image").on_hover_text("The current frame to the clipboard").clicked() {
                    self.copy_frame(ui.ctx());
                }
            });
        });
        if ui.button("Open recipe…").clicked() {
            clicked = Some(ExportKind::OpenRecipe);
        }
        if let Some(kind) = clicked {
            self.ask_path(kind);
        }
        self.poll_path();
        if let Some(job) = &self.export.job {
            let total = job.total.load(Ordering::Relaxed).max(1);
            let done = job.done.load(Ordering::Relaxed);
            ui.horizontal(|ui| {
                ui.add(
                    egui::ProgressBar::new(done as f32 / total as f32)
                        .desired_width(160.0)
                        .text(format!("{done}/{total}")),
                );
                if ui.button("Cancel").clicked() {
                    job.cancel.store(true, Ordering::Relaxed);
                }
            });
        }
        if let Some(m) = &self.export.message {
            ui.label(egui::RichText::new(m).small());
        }
        self.confirm_overwrite(ui.ctx());
    }

    fn copy_frame(&mut self, ctx: &egui::Context) {
        let Some(run) = self.shown_run() else { return };
        let Some(step) = run.steps.get(self.time.cursor) else { return };
        let img = export::step_frame(&step.record, run.shape, self.export.view, self.export.scale.max(1));
        ctx.copy_image(egui::ColorImage::from_rgba_unmultiplied(
            [img.width() as usize, img.height() as usize],
            img.as_raw(),
        ));
        self.export.message = Some("frame copied to the clipboard".into());
    }

    /// What an export of the shown run would write now.
    fn snapshot(&self) -> Option<Snapshot> {
        let traj = self.trajectory_of_shown()?;
        let e = &self.export;
        let last = traj.steps.len().checked_sub(1)?;
        let cursor = self.time.cursor.min(last);
        let range = (e.range.0.min(last), e.range.1.min(last));
        let options = ExportOptions {
            view: e.view,
            scale: e.scale.max(1),
            steps: Some((range.0.min(range.1), range.1)),
            fps: self.settings.fps,
            hold_seconds: e.hold_seconds,
            sheet_count: e.sheet_count,
            ..ExportOptions::default()
        };
        Some(Snapshot { traj, cursor, options })
    }

    /// Gets a path for `kind`, from a dialog (off the UI thread) or the fixed test folder.
    /// The run is captured now, at the click.
    pub fn ask_path(&mut self, kind: ExportKind) {
        let snapshot = if kind == ExportKind::OpenRecipe { None } else { self.snapshot() };
        let name = self
            .shown_run()
            .map(|r| default_name(r, kind, self.time.cursor, self.export.view))
            .unwrap_or_else(|| "recipe.json".into());
        match &self.export.paths {
            PathSource::Fixed(dir) => {
                let path = if kind == ExportKind::OpenRecipe { dir.join("recipe.json") } else { dir.join(name) };
                self.path_chosen(kind, snapshot, path);
            }
            PathSource::Dialog => {
                let ask = if kind == ExportKind::OpenRecipe {
                    Ask::OpenFile { title: "Open a recipe".into(), extension: kind.extension() }
                } else if kind.is_folder() {
                    Ask::OpenFolder { title: format!("Choose a folder to create {name} in") }
                } else {
                    Ask::SaveFile { title: "Export".into(), name: name.clone(), extension: kind.extension() }
                };
                let rx = self.dialogs.ask(ask);
                let folder_name = kind.is_folder().then_some(name);
                let (tx, joined) = bounded(1);
                // Folder exports are created inside the chosen folder.
                std::thread::spawn(move || {
                    let path = rx.recv().ok().flatten();
                    let _ = tx.send(match (path, folder_name) {
                        (Some(dir), Some(name)) => Some(dir.join(name)),
                        (path, _) => path,
                    });
                });
                self.export.pick = Some((kind, snapshot, joined));
            }
        }
    }

    fn poll_path(&mut self) {
        if let Some((_, _, rx)) = &self.export.pick {
            match rx.try_recv() {
                Ok(choice) => {
                    let (kind, snapshot, _) = self.export.pick.take().expect("checked");
                    if let Some(path) = choice {
                        self.path_chosen(kind, snapshot, path);
                    }
                }
                Err(TryRecvError::Disconnected) => self.export.pick = None,
                Err(TryRecvError::Empty) => {}
            }
        }
    }

    fn path_chosen(&mut self, kind: ExportKind, snapshot: Option<Snapshot>, path: PathBuf) {
        if kind == ExportKind::OpenRecipe {
            match Recipe::read(&path) {
                Ok((recipe, warnings)) => {
                    self.export.message = Some(format!("opened {}", path.display()));
                    self.open_recipe(recipe, warnings);
                }
                Err(e) => self.errors.push(e),
            }
            return;
        }
        let Some(snapshot) = snapshot else { return };
        if path.exists() {
            self.export.confirm = Some((kind, Some(snapshot), path));
        } else {
            self.start_export(kind, snapshot, path, false);
        }
    }

    fn confirm_overwrite(&mut self, ctx: &egui::Context) {
        let Some((kind, _, path)) = &self.export.confirm else { return };
        let (kind, path) = (*kind, path.clone());
        let mut answer = None;
        egui::Modal::new(egui::Id::unique("overwrite")).show(ctx, |ui| {
            ui.label(format!("{} already exists. Overwrite it?", path.display()));
            ui.horizontal(|ui| {
                if ui.button("Overwrite").clicked() {
                    answer = Some(true);
                }
                if ui.button("Cancel").clicked() {
                    answer = Some(false);
                }
            });
        });
        if let Some(yes) = answer {
            let (_, snapshot, _) = self.export.confirm.take().expect("checked");
            if yes && let Some(snapshot) = snapshot {
                self.start_export(kind, snapshot, path, true);
            }
        }
    }

    /// Runs an export on its own thread. A panic in there becomes an error message.
    pub fn start_export(&mut self, kind: ExportKind, snapshot: Snapshot, path: PathBuf, overwrite: bool) {
        let Snapshot { traj, cursor, mut options } = snapshot;
        options.overwrite = overwrite;
        let done = Arc::new(AtomicUsize::new(0));
        let total = Arc::new(AtomicUsize::new(1));
        let cancel = Arc::new(AtomicBool::new(false));
        let (tx, rx) = bounded(1);
        let (d, t, c) = (done.clone(), total.clone(), cancel.clone());
        let ctx_wake = self.export_wake.clone();
        std::thread::spawn(move || {
            let mut progress = |a: usize, b: usize| {
                d.store(a, Ordering::Relaxed);
                t.store(b, Ordering::Relaxed);
                !c.load(Ordering::Relaxed)
            };
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                write_export(kind, &traj, cursor, &mut options, &path, &mut progress)
            }))
            .unwrap_or_else(|panic| Err(format!("the export crashed: {}", crate::worker::panic_text(&panic))));
            let _ = tx.send(result);
            if let Some(wake) = ctx_wake {
                wake.request_repaint();
            }
        });
        self.export.message = None;
        self.export.job = Some(Job { done, total, cancel, result: rx });
    }

    /// Waits for a running export (tests use it; the UI polls instead).
    pub fn wait_for_export(&mut self) -> Option<String> {
        let job = self.export.job.take()?;
        let result = job.result.recv().unwrap_or_else(|_| Err("the export thread stopped".into()));
        let message = match result {
            Ok(files) => format!("wrote {} file(s)", files.len()),
            Err(e) => e,
        };
        self.export.message = Some(message.clone());
        Some(message)
    }
}

/// Writes one export of `traj` to `path` (and its recipe beside it).
fn write_export(
    kind: ExportKind,
    traj: &Trajectory,
    cursor: usize,
    options: &mut ExportOptions,
    path: &std::path::Path,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<Vec<PathBuf>, String> {
    let overwrite = options.overwrite;
    match kind {
        ExportKind::Frame => {
            let img = export::step_frame(&traj.steps[cursor], traj.shape, options.view, options.scale);
            crate::files::write_bytes(path, overwrite, &export::frame::encode_png(&img)).map_err(|e| e.to_string())?;
            let rp = export::recipe_path_for(path);
            crate::files::write_bytes(&rp, overwrite, traj.recipe.to_json().as_bytes()).map_err(|e| e.to_string())?;
            Ok(vec![path.to_path_buf(), rp])
        }
        ExportKind::Frames | ExportKind::Gif | ExportKind::Apng | ExportKind::Sheet => {
            let slot = match kind {
                ExportKind::Frames => &mut options.frames,
                ExportKind::Gif => &mut options.gif,
                ExportKind::Apng => &mut options.apng,
                _ => &mut options.sheet,
            };
            *slot = Some(path.to_path_buf());
            export::export_all(traj, options, progress)
        }
        ExportKind::Trajectory => std::fs::create_dir_all(path)
            .map_err(|e| format!("{}: cannot create folder: {e}", path.display()))
            .and_then(|_| export::write_run(traj, path, overwrite)),
        ExportKind::Recipe => crate::files::write_bytes(path, overwrite, traj.recipe.to_json().as_bytes())
            .map(|_| vec![path.to_path_buf()])
            .map_err(|e| e.to_string()),
        ExportKind::OpenRecipe => Ok(Vec::new()),
    }
}
