//! The seed grid: rows × columns of samples with the current settings and consecutive seeds,
//! filled in as each finishes (on a worker of its own, one sample after another). Clicking a
//! sample opens its seed in the main view; the grid exports as one labelled PNG sheet.
//!
//! The machine zoo is the same grid with one column per machine: all seven closed-form
//! machines from the same noise, each column labelled, one row per seed.

use std::path::PathBuf;

use crossbeam_channel::Receiver;
use egui::{Context, TextureHandle, TextureOptions, Ui};

use crate::engine::{ImageShape, MachineKind};
use crate::export::{frame, sheet};
use crate::recipe::Recipe;
use crate::worker::{Command, Event, RunId, WorkerHandle};

use super::texture::color_image;

/// One sample of the grid.
pub struct Cell {
    pub seed: u64,
    pub machine: MachineKind,
    /// The final x̂₀ once computed, and its texture.
    pub image: Option<(Vec<f32>, TextureHandle)>,
    /// Why this sample could not be made (the grid goes on with the next).
    pub error: Option<String>,
}

/// What the grid varies along its columns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GridMode {
    /// Consecutive seeds, the current machine.
    #[default]
    Seeds,
    /// Every machine, one per column; rows are consecutive seeds.
    Zoo,
}

/// What the grid asks of the app this frame.
#[derive(Debug, PartialEq)]
pub enum GridAction {
    /// Open this seed, with this machine, in the main view.
    Open(u64, MachineKind),
    /// Ask where to save the sheet.
    Export,
}

pub struct SeedGrid {
    pub open: bool,
    pub mode: GridMode,
    pub rows: usize,
    pub cols: usize,
    /// Spawned on first use (tests put a detached handle here).
    pub worker: Option<WorkerHandle>,
    pub cells: Vec<Cell>,
    base: Option<Recipe>,
    /// The run in flight and the cell it fills.
    running: Option<(RunId, usize)>,
    next_run: RunId,
    shape: Option<ImageShape>,
    /// A pending save dialog's answer.
    pub save: Option<Receiver<Option<PathBuf>>>,
    pub message: Option<String>,
}

impl Default for SeedGrid {
    fn default() -> Self {
        Self {
            open: false,
            mode: GridMode::Seeds,
            rows: 3,
            cols: 3,
            worker: None,
            cells: Vec::new(),
            base: None,
            running: None,
            next_run: 0,
            shape: None,
            save: None,
            message: None,
        }
    }
}

impl SeedGrid {
    /// Starts the grid: `base` with seeds base.seed, base.seed + 1, …
    pub fn start(&mut self, ctx: &Context, base: Recipe) {
        let first = base.sampler.seed;
        let cell = |seed: u64, machine| Cell { seed, machine, image: None, error: None };
        self.cells = match self.mode {
            GridMode::Seeds => {
                (0..self.rows * self.cols).map(|i| cell(first.wrapping_add(i as u64), base.sampler.machine)).collect()
            }
            GridMode::Zoo => {
                self.cols = MachineKind::closed_form().len();
                (0..self.rows)
                    .flat_map(|r| {
                        MachineKind::closed_form().into_iter().map(move |m| cell(first.wrapping_add(r as u64), m))
                    })
                    .collect()
            }
        };
        self.base = Some(base);
        self.message = None;
        self.worker.get_or_insert_with(|| WorkerHandle::spawn_secondary(super::pacing::waker(ctx)));
        self.run_cell(0);
    }

    fn run_cell(&mut self, i: usize) {
        let (Some(worker), Some(base)) = (&self.worker, &self.base) else { return };
        let Some(cell) = self.cells.get(i) else {
            self.running = None;
            return;
        };
        self.next_run += 1;
        let mut recipe = base.clone();
        recipe.sampler.seed = cell.seed;
        recipe.sampler.machine = cell.machine;
        recipe.branched_from = None;
        self.running = Some((self.next_run, i));
        worker.send(Command::Start { run: self.next_run, recipe });
    }

    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Stops the grid in flight (its window closed, its tab or its inputs changed, or Stop),
    /// saying why; the cells already done stay.
    pub fn stop(&mut self, why: &str) {
        if self.running.take().is_some() {
            if let Some(w) = &self.worker {
                w.send(Command::Cancel);
            }
            self.message = Some(why.into());
        }
    }

    /// Whether `current` (the studio's settings now) is still the run the grid was started
    /// for.
    pub fn started_for(&self, current: &Recipe) -> bool {
        self.base
            .as_ref()
            .is_none_or(|b| b.dataset == current.dataset && b.load == current.load && b.sampler == current.sampler)
    }

    /// Takes the worker's events: a run's last step fills its cell and starts the next.
    pub fn drain(&mut self, ctx: &Context) {
        let Some(worker) = &self.worker else { return };
        let events: Vec<Event> = worker.events.try_iter().collect();
        for event in events {
            let Some((run, i)) = self.running else { break };
            match event {
                Event::Dataset(info) => self.shape = Some(info.shape),
                Event::Step { run: r, record, .. } if r == run => {
                    let steps = self.base.as_ref().map_or(0, |b| b.sampler.steps);
                    if let Some(shape) = self.shape.filter(|s| s.len() == record.x0_hat.len())
                        && record.step + 1 == steps
                    {
                        let tex = ctx.load_texture(
                            format!("grid{run}"),
                            color_image(&record.x0_hat, shape),
                            TextureOptions::NEAREST,
                        );
                        self.cells[i].image = Some((record.x0_hat, tex));
                    }
                }
                Event::Finished { run: r } if r == run => self.run_cell(i + 1),
                // One sample refused (a machine too large for these images, say): note it
                // on its cell and go on.
                Event::Error { run: Some(r), message } if r == run => {
                    self.cells[i].error = Some(message);
                    self.run_cell(i + 1);
                }
                Event::Error { run: None, message } => {
                    self.message = Some(message);
                    self.running = None;
                }
                Event::Notice { message } => self.message = Some(format!("note: {message}")),
                _ => {}
            }
        }
    }

    /// A cell's caption: its seed, or in the zoo its machine and seed.
    fn label(&self, cell: &Cell) -> String {
        match self.mode {
            GridMode::Seeds => format!("seed {}", cell.seed),
            GridMode::Zoo => format!("{} · seed {}", cell.machine.title(), cell.seed),
        }
    }

    /// The grid window's contents.
    pub fn ui(&mut self, ui: &mut Ui, can_start: Option<&Recipe>) -> Option<GridAction> {
        let mut action = None;
        let mode = self.mode;
        ui.horizontal(|ui| {
            ui.selectable_value(&mut self.mode, GridMode::Seeds, "seeds")
                .on_hover_text("the current settings, seeds counting up from the seed");
            ui.selectable_value(&mut self.mode, GridMode::Zoo, "machine zoo")
                .on_hover_text("all seven machines from the same noise, one column each");
        });
        if self.mode != mode {
            // The other tab's cells are not this tab's: stop and clear them.
            self.stop("stopped: switched tabs");
            self.cells.clear();
            self.message = None;
        }
        ui.horizontal(|ui| {
            ui.add(egui::DragValue::new(&mut self.rows).range(1..=6));
            match self.mode {
                GridMode::Seeds => {
                    ui.label("rows ×");
                    ui.add(egui::DragValue::new(&mut self.cols).range(1..=8));
                    ui.label("columns");
                }
                GridMode::Zoo => {
                    ui.label(format!(
                        "seed{} × {} machines",
                        if self.rows > 1 { "s" } else { "" },
                        MachineKind::closed_form().len()
                    ));
                }
            }
            if let Some(base) = can_start
                && ui
                    .button("Run grid")
                    .on_hover_text("the current settings, seeds counting up from the seed")
                    .clicked()
            {
                self.start(ui.ctx(), base.clone());
            }
            let done = self.cells.iter().filter(|c| c.image.is_some() || c.error.is_some()).count();
            if !self.cells.is_empty() {
                ui.label(format!("{done} / {} done", self.cells.len()));
            }
            if self.is_running() && ui.button("Stop grid").clicked() {
                self.stop("stopped");
            }
            if self.cells.iter().any(|c| c.image.is_some()) && ui.button("Export sheet…").clicked() {
                action = Some(GridAction::Export);
            }
        });
        if let Some(m) = &self.message {
            ui.colored_label(ui.visuals().error_fg_color, m);
        }
        let cols = self.cols.max(1);
        egui::Grid::new("seed_grid").spacing([6.0, 6.0]).show(ui, |ui| {
            for (i, cell) in self.cells.iter().enumerate() {
                ui.vertical(|ui| {
                    let label = self.label(cell);
                    match (&cell.image, &cell.error) {
                        (Some((_, tex)), _) => {
                            let img = egui::Image::new(tex).fit_to_exact_size(egui::vec2(72.0, 72.0));
                            if ui.add(egui::Button::image(img)).on_hover_text("open in the main view").clicked() {
                                action = Some(GridAction::Open(cell.seed, cell.machine));
                            }
                        }
                        (None, Some(err)) => {
                            ui.add_sized([72.0, 72.0], egui::Label::new("refused").wrap()).on_hover_text(err);
                        }
                        (None, None) => {
                            ui.add_sized([72.0, 72.0], egui::Spinner::new());
                        }
                    }
                    // One line per caption: a wrapped "PSPC-Square · seed 0" reads as three.
                    let caption = ui.add(
                        egui::Button::new(egui::RichText::new(&label).small()).wrap_mode(egui::TextWrapMode::Extend),
                    );
                    let caption = if self.mode == GridMode::Zoo {
                        caption.on_hover_text(cell.machine.describe())
                    } else {
                        caption
                    };
                    if caption.clicked() && cell.image.is_some() {
                        action = Some(GridAction::Open(cell.seed, cell.machine));
                    }
                });
                if (i + 1) % cols == 0 {
                    ui.end_row();
                }
            }
        });
        action
    }

    /// The file name the sheet is offered under.
    pub fn sheet_name(&self) -> &'static str {
        match self.mode {
            GridMode::Seeds => "seed-grid.png",
            GridMode::Zoo => "machine-zoo.png",
        }
    }

    /// The finished samples as one labelled PNG (columns as in the grid).
    pub fn sheet_png(&self, scale: u32) -> Option<Vec<u8>> {
        let shape = self.shape?;
        let tiles: Vec<_> = self
            .cells
            .iter()
            .filter_map(|c| c.image.as_ref().map(|(img, _)| (frame::render(img, shape, scale), self.label(c))))
            .collect();
        (!tiles.is_empty()).then(|| frame::encode_png(&sheet::contact_sheet_with_columns(&tiles, self.cols)))
    }
}
