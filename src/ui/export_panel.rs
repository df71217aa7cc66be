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

use super::dialogs::{Ask, Dialogs};
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
    /// The per-step curves as figures ([`export::curves`]).
    Plots,
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
            Self::Frames | Self::Trajectory | Self::Plots => None,
        }
    }
    fn is_folder(&self) -> bool {
        matches!(self, Self::Frames | Self::Trajectory | Self::Plots)
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
    /// What the run was compared with, for [`ExportKind::Plots`].
    pub curves: export::curves::Curves,
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
    /// When no file dialog can open: the folder exports go to and the recipe file "Open
    /// recipe" reads, as the user typed them.
    pub fallback: Option<(String, String)>,
}

/// Where exports go when no file dialog can open: a folder under the user's home.
pub fn fallback_dir() -> PathBuf {
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    home.join("morphogen").join("exports")
}

impl ExportPanel {
    /// No file dialog can open: from now on exports go to `dir` (shown, and editable).
    pub fn use_fallback(&mut self, dir: PathBuf) {
        self.fallback = Some((dir.display().to_string(), String::new()));
        self.paths = PathSource::Fixed(dir);
    }

    pub fn is_running(&self) -> bool {
        self.job.is_some()
    }

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
        ExportKind::Plots => format!("{base}_plots"),
        ExportKind::Recipe | ExportKind::OpenRecipe => format!("{base}_recipe.json"),
    }
}

/// What the export panel needs from the rest of the studio this frame.
pub struct ExportContext<'a> {
    /// The run in view.
    pub run: Option<&'a Run>,
    /// The step under the timeline cursor.
    pub cursor: usize,
    /// Playback rate, used for animations.
    pub fps: f64,
    pub dialogs: &'a mut Dialogs,
    /// Lets export threads wake the UI when they finish.
    pub wake: Option<egui::Context>,
    /// The run's comparisons as the timeline plots them (compare r, healing, sensitivity cosine).
    pub curves: export::curves::Curves,
}

/// What the export panel asks of the studio.
pub enum ExportAction {
    /// A recipe was opened: apply it (with the warnings its parser gave).
    OpenRecipe(Box<Recipe>, Vec<String>),
    /// Something the user must see.
    Error(String),
}

impl ExportPanel {
    /// The panel: options, one button per export, progress and the overwrite question.
    pub fn ui(&mut self, ui: &mut Ui, mut cx: ExportContext<'_>) -> Vec<ExportAction> {
        ui.heading("Export");
        let has_run = cx.run.is_some_and(|r| !r.steps.is_empty());
        let shape = cx.run.map(|r| r.shape);
        ui.horizontal(|ui| {
            ui.label("View");
            ui.selectable_value(&mut self.view, View::X0, "x̂₀");
            ui.selectable_value(&mut self.view, View::Xt, "x_t");
            ui.selectable_value(&mut self.view, View::Both, "both");
        });
        if self.scale == 0 {
            self.scale = shape.map(default_scale).unwrap_or(8);
        }
        ui.add(egui::Slider::new(&mut self.scale, 1..=32).text("scale ×"));
        ui.add(egui::Slider::new(&mut self.hold_seconds, 0.0..=5.0).text("hold last (s)"));
        if self.sheet_count == 0 {
            self.sheet_count = 8;
        }
        ui.add(egui::Slider::new(&mut self.sheet_count, 1..=100).text("sheet steps"));
        let last = cx.run.map(|r| r.total_steps.saturating_sub(1)).unwrap_or(0);
        if self.range == (0, 0) || self.range.1 > last {
            self.range = (0, last);
        }
        ui.horizontal(|ui| {
            ui.label("steps");
            ui.add(egui::DragValue::new(&mut self.range.0).range(0..=self.range.1));
            ui.label("to");
            ui.add(egui::DragValue::new(&mut self.range.1).range(self.range.0..=last));
        });
        let mut clicked = None;
        let mut copy = false;
        ui.add_enabled_ui(has_run && !self.is_running(), |ui| {
            ui.horizontal_wrapped(|ui| {
                for (kind, label) in [
                    (ExportKind::Frame, "Frame PNG…"),
                    (ExportKind::Frames, "PNG sequence…"),
                    (ExportKind::Gif, "GIF…"),
                    (ExportKind::Apng, "APNG…"),
                    (ExportKind::Sheet, "Contact sheet…"),
                    (ExportKind::Trajectory, "Trajectory .npy…"),
                    (ExportKind::Plots, "Plots…"),
                    (ExportKind::Recipe, "Recipe…"),
                ] {
                    if ui.button(label).clicked() {
                        clicked = Some(kind);
                    }
                }
                copy = ui.button("Copy image").on_hover_text("The current frame to the clipboard").clicked();
            });
        });
        if copy {
            self.copy_frame(ui.ctx(), &cx);
        }
        if let Some((dir, recipe)) = &mut self.fallback {
            // No file dialog here: the paths are typed instead.
            ui.label(egui::RichText::new("No file dialog can open here; exports go to this folder:").small());
            if ui.add(egui::TextEdit::singleline(dir).desired_width(240.0)).changed() {
                self.paths = PathSource::Fixed(PathBuf::from(dir.as_str()));
            }
            ui.horizontal(|ui| {
                ui.add(egui::TextEdit::singleline(recipe).desired_width(170.0).hint_text("path/to/recipe.json"));
                if ui.button("Open recipe").clicked() {
                    clicked = Some(ExportKind::OpenRecipe);
                }
            });
        } else if ui.button("Open recipe…").clicked() {
            clicked = Some(ExportKind::OpenRecipe);
        }
        let mut actions = Vec::new();
        if let Some(kind) = clicked {
            actions.extend(self.ask_path(kind, &mut cx));
        }
        actions.extend(self.poll_path(&cx));
        if let Some(job) = &self.job {
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
        if let Some(m) = &self.message {
            ui.label(egui::RichText::new(m).small());
        }
        self.confirm_overwrite(ui.ctx(), &cx);
        actions
    }

    fn copy_frame(&mut self, ctx: &egui::Context, cx: &ExportContext<'_>) {
        let Some(run) = cx.run else { return };
        let Some(step) = run.steps.get(cx.cursor) else { return };
        let img = export::step_frame(&step.record, run.shape, self.view, self.scale.max(1));
        ctx.copy_image(egui::ColorImage::from_rgba_unmultiplied(
            [img.width() as usize, img.height() as usize],
            img.as_raw(),
        ));
        self.message = Some("frame copied to the clipboard".into());
    }

    /// What an export of the shown run would write now.
    fn snapshot(&self, cx: &ExportContext<'_>) -> Option<Snapshot> {
        let run = cx.run?;
        let traj = Trajectory {
            recipe: run.recipe.clone(),
            shape: run.shape,
            steps: run.steps.iter().map(|s| s.record.clone()).collect(),
        };
        let last = traj.steps.len().checked_sub(1)?;
        let cursor = cx.cursor.min(last);
        let range = (self.range.0.min(last), self.range.1.min(last));
        let options = ExportOptions {
            view: self.view,
            scale: self.scale.max(1),
            steps: Some((range.0.min(range.1), range.1)),
            fps: cx.fps,
            hold_seconds: self.hold_seconds,
            sheet_count: self.sheet_count,
            ..ExportOptions::default()
        };
        Some(Snapshot { traj, cursor, options, curves: cx.curves.clone() })
    }

    /// Gets a path for `kind`, from a dialog (off the UI thread) or the fixed test folder.
    /// The run is captured now, at the click.
    pub fn ask_path(&mut self, kind: ExportKind, cx: &mut ExportContext<'_>) -> Option<ExportAction> {
        let snapshot = if kind == ExportKind::OpenRecipe { None } else { self.snapshot(cx) };
        let name = cx.run.map(|r| default_name(r, kind, cx.cursor, self.view)).unwrap_or_else(|| "recipe.json".into());
        match &self.paths {
            PathSource::Fixed(dir) => {
                let typed = self.fallback.as_ref().map(|f| f.1.trim()).filter(|p| !p.is_empty()).map(PathBuf::from);
                let path = match kind {
                    ExportKind::OpenRecipe => typed.unwrap_or_else(|| dir.join("recipe.json")),
                    _ => dir.join(name),
                };
                if kind != ExportKind::OpenRecipe
                    && let Err(e) = std::fs::create_dir_all(dir)
                {
                    self.message = Some(format!("{}: cannot create the folder: {e}", dir.display()));
                    return None;
                }
                self.path_chosen(kind, snapshot, path, cx)
            }
            PathSource::Dialog => {
                let ask = if kind == ExportKind::OpenRecipe {
                    Ask::OpenFile { title: "Open a recipe".into(), extension: kind.extension() }
                } else if kind.is_folder() {
                    Ask::OpenFolder { title: format!("Choose a folder to create {name} in") }
                } else {
                    Ask::SaveFile { title: "Export".into(), name: name.clone(), extension: kind.extension() }
                };
                let rx = cx.dialogs.ask(ask);
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
                self.pick = Some((kind, snapshot, joined));
                None
            }
        }
    }

    fn poll_path(&mut self, cx: &ExportContext<'_>) -> Option<ExportAction> {
        let (_, _, rx) = self.pick.as_ref()?;
        match rx.try_recv() {
            Ok(choice) => {
                let (kind, snapshot, _) = self.pick.take().expect("checked");
                self.path_chosen(kind, snapshot, choice?, cx)
            }
            Err(TryRecvError::Disconnected) => {
                self.pick = None;
                None
            }
            Err(TryRecvError::Empty) => None,
        }
    }

    fn path_chosen(
        &mut self,
        kind: ExportKind,
        snapshot: Option<Snapshot>,
        path: PathBuf,
        cx: &ExportContext<'_>,
    ) -> Option<ExportAction> {
        if kind == ExportKind::OpenRecipe {
            return Some(match Recipe::read(&path) {
                Ok((recipe, warnings)) => {
                    self.message = Some(format!("opened {}", path.display()));
                    ExportAction::OpenRecipe(Box::new(recipe), warnings)
                }
                Err(e) => ExportAction::Error(e),
            });
        }
        let snapshot = snapshot?;
        if path.exists() {
            self.confirm = Some((kind, Some(snapshot), path));
        } else {
            self.start_export(kind, snapshot, path, false, cx.wake.clone());
        }
        None
    }

    fn confirm_overwrite(&mut self, ctx: &egui::Context, cx: &ExportContext<'_>) {
        let Some((kind, _, path)) = &self.confirm else { return };
        let (kind, path) = (*kind, path.clone());
        let mut answer = None;
        let modal = egui::Modal::new(egui::Id::unique("overwrite")).show(ctx, |ui| {
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
        // Esc or a click beside the question is "Cancel": a modal that only a button can
        // close held up everything else (the scripted soak sat behind one for 8 minutes).
        if answer.is_none() && modal.should_close() {
            answer = Some(false);
        }
        if let Some(yes) = answer {
            let (_, snapshot, _) = self.confirm.take().expect("checked");
            if yes && let Some(snapshot) = snapshot {
                self.start_export(kind, snapshot, path, true, cx.wake.clone());
            }
        }
    }

    /// Runs an export on its own thread. A panic in there becomes an error message.
    pub fn start_export(
        &mut self,
        kind: ExportKind,
        snapshot: Snapshot,
        path: PathBuf,
        overwrite: bool,
        wake: Option<egui::Context>,
    ) {
        let Snapshot { traj, cursor, mut options, curves } = snapshot;
        options.overwrite = overwrite;
        let done = Arc::new(AtomicUsize::new(0));
        let total = Arc::new(AtomicUsize::new(1));
        let cancel = Arc::new(AtomicBool::new(false));
        let (tx, rx) = bounded(1);
        let (d, t, c) = (done.clone(), total.clone(), cancel.clone());
        std::thread::spawn(move || {
            let mut progress = |a: usize, b: usize| {
                d.store(a, Ordering::Relaxed);
                t.store(b, Ordering::Relaxed);
                !c.load(Ordering::Relaxed)
            };
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                write_export(kind, &traj, cursor, &mut options, &curves, &path, &mut progress)
            }))
            .unwrap_or_else(|panic| Err(format!("the export crashed: {}", crate::worker::panic_text(&panic))));
            let _ = tx.send(result);
            if let Some(wake) = wake {
                wake.request_repaint();
            }
        });
        self.message = None;
        self.job = Some(Job { done, total, cancel, result: rx });
    }

    /// Waits for a running export (tests use it; the UI polls instead).
    pub fn wait_for_export(&mut self) -> Option<String> {
        let job = self.job.take()?;
        let result = job.result.recv().unwrap_or_else(|_| Err("the export stopped without finishing".into()));
        let message = match result {
            Ok(files) => format!("wrote {} file(s)", files.len()),
            Err(e) => format!("export failed: {e}"),
        };
        self.message = Some(message.clone());
        Some(message)
    }
}

/// Writes one export of `traj` to `path` (and its recipe beside it).
fn write_export(
    kind: ExportKind,
    traj: &Trajectory,
    cursor: usize,
    options: &mut ExportOptions,
    curves: &export::curves::Curves,
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
        ExportKind::Plots => {
            let mut written = export::curves::write_plots(traj, curves, path, overwrite)?;
            let rp = path.join("recipe.json");
            crate::files::write_bytes(&rp, overwrite, traj.recipe.to_json().as_bytes()).map_err(|e| e.to_string())?;
            written.push(rp);
            Ok(written)
        }
        ExportKind::Recipe => crate::files::write_bytes(path, overwrite, traj.recipe.to_json().as_bytes())
            .map(|_| vec![path.to_path_buf()])
            .map_err(|e| e.to_string()),
        ExportKind::OpenRecipe => Ok(Vec::new()),
    }
}
