//! The left panel: dataset, machine, locality, noise, seed and device. Every change is
//! applied live by the app (restart, or branch when that toggle is on).

use egui::Ui;

use crate::data::{BUNDLED, ColorMode, DatasetSource};
use crate::engine::sampling::patch::PRESETS;
use crate::engine::sampling::sampler::LOCALITY_SCALE;
use crate::engine::{Boundary, DeviceChoice, MachineKind, NoiseSchedule};

use super::app::StudioApp;
use super::plots;
use super::settings::{COSINE_OFFSET, EXP_RATE, LINEAR_END, LINEAR_START, PatchMode, SIZES, STEPS, T_START};

impl StudioApp {
    pub(crate) fn controls(&mut self, ui: &mut Ui) {
        self.dataset_controls(ui);
        ui.separator();
        self.machine_controls(ui);
        ui.separator();
        self.locality_controls(ui);
        ui.separator();
        self.grow_controls(ui);
        ui.separator();
        self.noise_controls(ui);
        ui.separator();
        self.run_controls(ui);
        ui.separator();
        ui.heading("Compare");
        if super::compare::Compare::controls(ui, &mut self.settings.compare_on, &mut self.settings.compare) {
            self.restart_compare(ui.ctx());
        }
        ui.separator();
        self.history_list(ui);
    }

    fn dataset_controls(&mut self, ui: &mut Ui) {
        ui.heading("Dataset");
        let s = &mut self.settings;
        let current = s.dataset.label();
        egui::ComboBox::from_id_salt("dataset").selected_text(&current).width(200.0).show_ui(ui, |ui| {
            for b in &BUNDLED {
                let source = DatasetSource::Bundled(b.name.into());
                let r = ui
                    .selectable_label(s.dataset == source, b.name)
                    .on_hover_text(format!("{}\nLicense: {}", b.about, b.license));
                if r.clicked() && s.dataset != source {
                    s.dataset = source;
                    s.class = None;
                    s.preset = b.preset.into();
                }
            }
        });
        ui.horizontal(|ui| {
            if ui
                .button("Open folder…")
                .on_hover_text("A folder of images; the file-name prefix before the first _ is the class")
                .clicked()
            {
                self.pick_folder();
            }
            ui.label(egui::RichText::new("or drop a folder / files / .npy").weak());
        });
        let classes: Vec<String> = self.dataset.as_ref().map(|d| d.classes.clone()).unwrap_or_default();
        let s = &mut self.settings;
        let class_text = s.class.clone().unwrap_or_else(|| "all classes".into());
        egui::ComboBox::from_id_salt("class").selected_text(class_text).show_ui(ui, |ui| {
            if ui.selectable_label(s.class.is_none(), "all classes").clicked() {
                s.class = None;
            }
            for c in classes.iter().filter(|c| !c.is_empty()) {
                if ui.selectable_label(s.class.as_deref() == Some(c.as_str()), c).clicked() {
                    s.class = Some(c.clone());
                }
            }
        });
        ui.horizontal(|ui| {
            ui.label("Subset N");
            ui.add(egui::DragValue::new(&mut s.subset).range(0..=100_000).speed(10))
                .on_hover_text("0 = every image; otherwise a seeded random subset");
        });
        ui.horizontal(|ui| {
            ui.label("Size");
            let text = |size: Option<(u32, u32)>| match size {
                None => "as loaded".to_string(),
                Some((w, h)) => format!("{w}×{h}"),
            };
            egui::ComboBox::from_id_salt("size")
                .selected_text(text(s.size))
                .show_ui(ui, |ui| {
                    ui.selectable_value(&mut s.size, None, text(None))
                        .on_hover_text("The most common size among the images; larger photos are shrunk to fit 64×64");
                    for side in SIZES {
                        ui.selectable_value(&mut s.size, Some((side, side)), text(Some((side, side))));
                    }
                })
                .response
                .on_hover_text("Resize every image while loading (ELS cost grows with the square of the pixel count)");
            ui.label("Colour");
            for (mode, name) in [(ColorMode::Auto, "auto"), (ColorMode::Gray, "gray"), (ColorMode::Rgb, "RGB")] {
                ui.radio_value(&mut s.color, mode, name);
            }
        });
        if let Some(d) = &self.dataset {
            ui.label(format!(
                "{}, {}×{} {}",
                crate::data::count(d.len, "image"),
                d.shape.w,
                d.shape.h,
                if d.shape.c == 3 { "RGB" } else { "gray" }
            ));
            ui.label(egui::RichText::new(&d.summary).weak());
            if !d.skipped.is_empty() {
                egui::CollapsingHeader::new(format!("{} files skipped", d.skipped.len())).show(ui, |ui| {
                    for s in d.skipped.iter().take(50) {
                        ui.label(egui::RichText::new(s).small());
                    }
                });
            }
        }
        if !self.thumbnails.is_empty() {
            ui.horizontal_wrapped(|ui| {
                ui.spacing_mut().item_spacing = egui::vec2(2.0, 2.0);
                for t in &self.thumbnails {
                    ui.add(egui::Image::new(t).fit_to_exact_size(egui::vec2(28.0, 28.0)));
                }
            });
        }
    }

    fn machine_controls(&mut self, ui: &mut Ui) {
        ui.heading("Machine");
        let s = &mut self.settings;
        ui.horizontal_wrapped(|ui| {
            for m in MachineKind::all() {
                ui.radio_value(&mut s.machine, m, m.title()).on_hover_text(m.describe());
            }
        });
        if s.machine == MachineKind::Cnn {
            self.cnn_weights_controls(ui);
        }
        let s = &mut self.settings;
        ui.add_enabled_ui(s.machine.needs().boundary, |ui| {
            ui.horizontal(|ui| {
                ui.label("Boundary");
                ui.radio_value(&mut s.boundary, Boundary::Zeros, "zeros")
                    .on_hover_text("Zero padding; edge pixels only match patches at the same distance from the edge (the paper's default)");
                ui.radio_value(&mut s.boundary, Boundary::Circular, "circular")
                    .on_hover_text("Windows wrap around; every interior training patch is a candidate for every pixel");
            });
        });
    }

    /// Which weights the CNN runs: the shipped ones, or a file (typed, or picked with a dialog).
    fn cnn_weights_controls(&mut self, ui: &mut Ui) {
        let current = match &self.settings.cnn_weights {
            Some(p) => p.display().to_string(),
            None => "the shipped ResNet (mnist, fashion, emoji)".into(),
        };
        ui.label(egui::RichText::new(format!("CNN weights: {current}")).small());
        ui.horizontal_wrapped(|ui| {
            let typed = self.cnn_typed.get_or_insert_with(String::new);
            ui.add(egui::TextEdit::singleline(typed).desired_width(150.0).hint_text("path/to/weights.mgcnn"));
            if ui.button("Use").clicked() && !typed.trim().is_empty() {
                self.settings.cnn_weights = Some(std::path::PathBuf::from(typed.trim()));
            }
            if ui.button("Load weights…").on_hover_text("A file written by `morphogen train`").clicked() {
                let ask = super::dialogs::Ask::OpenFile { title: "CNN weights".into(), extension: Some("mgcnn") };
                self.cnn_pick = Some(self.dialogs.ask(ask));
            }
            if self.settings.cnn_weights.is_some() && ui.button("Shipped ResNet").clicked() {
                self.settings.cnn_weights = None;
            }
            let unet = self.settings.dataset.bundled_name().and_then(crate::engine::training::network::shipped_unet);
            if let Some(unet) = unet.filter(|u| self.settings.cnn_weights.as_ref() != Some(u)) {
                let tip = "The paper's other architecture, two levels down and up with skips: its receptive field \
                           covers the whole image (assets/models)";
                if ui.button("Shipped UNet").on_hover_text(tip).clicked() {
                    self.settings.cnn_weights = Some(unet);
                }
            }
        });
        if let Some(rx) = &self.cnn_pick
            && let Ok(answer) = rx.try_recv()
        {
            self.cnn_pick = None;
            if let Some(path) = answer {
                self.settings.cnn_weights = Some(path);
            }
        }
    }

    fn locality_controls(&mut self, ui: &mut Ui) {
        ui.heading("Locality");
        let shape = self.dataset.as_ref().map(|d| d.shape);
        let s = &mut self.settings;
        let max_p = shape.map(|sh| s.machine.max_patch(s.boundary, sh.h, sh.w)).unwrap_or(63);
        ui.add_enabled_ui(s.machine.uses_patch(), |ui| {
            ui.horizontal(|ui| {
                ui.label("Patch schedule");
                ui.selectable_value(&mut s.patch_mode, PatchMode::Preset, "preset");
                ui.selectable_value(&mut s.patch_mode, PatchMode::Constant, "constant");
                ui.selectable_value(&mut s.patch_mode, PatchMode::Ramp, "ramp");
                if !s.patch_list.is_empty() {
                    ui.selectable_value(&mut s.patch_mode, PatchMode::List, "per step")
                        .on_hover_text("One P per step, from an opened recipe");
                }
            });
            match s.patch_mode {
                PatchMode::Preset => {
                    egui::ComboBox::from_id_salt("preset").selected_text(&s.preset).width(200.0).show_ui(ui, |ui| {
                        for (name, table) in PRESETS {
                            let tip = table.map(|p| p.to_string()).join(" ");
                            ui.selectable_value(&mut s.preset, name.to_string(), name).on_hover_text(format!("P at t = 0.05 … 1.00: {tip}"));
                        }
                    });
                }
                PatchMode::Constant => {
                    ui.add(egui::Slider::new(&mut s.constant_p, 1..=max_p).step_by(2.0).text("P"));
                }
                PatchMode::Ramp => {
                    ui.add(egui::Slider::new(&mut s.ramp.0, 1..=max_p).step_by(2.0).text("P at t = 0"));
                    ui.add(egui::Slider::new(&mut s.ramp.1, 1..=max_p).step_by(2.0).text("P at t = 1"));
                }
                PatchMode::List => {
                    let list = s.patch_list.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(" ");
                    ui.label(format!("P per step (first = noisiest): {list}"));
                }
            }
            ui.add(egui::Slider::new(&mut s.locality_scale, LOCALITY_SCALE.0..=LOCALITY_SCALE.1).logarithmic(true).text("locality scale"))
                .on_hover_text("Multiplies every P of the schedule (rounded to odd, clamped to the image): below 1 is more local, above 1 less");
        });
        match shape {
            // A machine without a window draws no P(t): it has none.
            Some(shape) if self.settings.machine.uses_patch() => {
                let cursor = self.time.cursor;
                plots::patch_plot(ui, &self.settings.sampler(), shape, Some(cursor));
            }
            Some(_) => {
                ui.label(
                    egui::RichText::new(format!(
                        "{} has no patch size: P(t) does not apply.",
                        self.settings.machine.title()
                    ))
                    .weak(),
                );
            }
            None => {}
        }
    }

    fn noise_controls(&mut self, ui: &mut Ui) {
        ui.heading("Noise");
        let s = &mut self.settings;
        ui.horizontal(|ui| {
            ui.label("Schedule");
            for name in NoiseSchedule::NAMES {
                if ui.selectable_label(s.schedule.name() == name, name).clicked() && s.schedule.name() != name {
                    s.schedule = NoiseSchedule::by_name(name).expect("known name");
                }
            }
        });
        match &mut s.schedule {
            NoiseSchedule::Cosine { s: offset } => {
                ui.add(egui::Slider::new(offset, COSINE_OFFSET.0..=COSINE_OFFSET.1).text("offset s"));
            }
            NoiseSchedule::Linear { start, end } => {
                ui.add(egui::Slider::new(start, LINEAR_START.0..=LINEAR_START.1).text("1−ᾱ at t = 0"));
                ui.add(egui::Slider::new(end, LINEAR_END.0..=LINEAR_END.1).text("1−ᾱ at t = 1"));
            }
            NoiseSchedule::Exponential { rate } => {
                ui.add(egui::Slider::new(rate, EXP_RATE.0..=EXP_RATE.1).text("rate"));
            }
        }
        let steps_before = s.steps;
        ui.add(egui::Slider::new(&mut s.steps, STEPS.0..=STEPS.1).logarithmic(true).text("steps"));
        // The common step counts in one click (the slider's 1 to 1000 jumps by tens near 100).
        ui.horizontal(|ui| {
            for n in [10, 20, 50, 100, 200] {
                if ui.selectable_label(s.steps == n, n.to_string()).clicked() {
                    s.steps = n;
                }
            }
        });
        if s.steps != steps_before && !s.patch_list.is_empty() {
            // A per-step list follows the step count: stretch it by nearest index.
            let old = std::mem::take(&mut s.patch_list);
            s.patch_list = (0..s.steps).map(|k| old[k * old.len() / s.steps]).collect();
        }
        ui.add(egui::Slider::new(&mut s.t_start, T_START.0..=T_START.1).text("t start")).on_hover_text(
            "The time of the starting state. Runs here start from seeded noise, which is pure noise only at t = 1: \
             below that the noise is read as a partly clean image.",
        );
        if let Some(why) = s.sampler().noise_start_warning() {
            ui.label(egui::RichText::new(why).small().color(ui.visuals().warn_fg_color));
        }
        ui.add(egui::Slider::new(&mut s.eta, 0.0..=1.0).text("η"))
            .on_hover_text("0 = deterministic DDIM; 1 = fresh noise every step (DDPM-like)");
        let cursor_t = self.shown_run().and_then(|r| r.steps.get(self.time.cursor)).map(|s| s.record.t);
        plots::noise_plot(ui, &self.settings.schedule, cursor_t);
    }

    fn run_controls(&mut self, ui: &mut Ui) {
        ui.heading("Run");
        ui.horizontal(|ui| {
            ui.label("Seed");
            ui.add(egui::DragValue::new(&mut self.settings.seed));
            if ui.button("New seed").clicked() {
                self.settings.seed = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64 % 1_000_000)
                    .unwrap_or(1);
            }
        });
        ui.horizontal(|ui| {
            ui.label("Device");
            for d in [DeviceChoice::Auto, DeviceChoice::Cpu, DeviceChoice::Gpu] {
                ui.radio_value(&mut self.settings.device, d, d.name());
            }
        });
        ui.checkbox(&mut self.settings.branch, "Branch from this step")
            .on_hover_text("On: a change keeps the steps before the cursor and recomputes from there. Off: a change restarts from noise.");
        ui.horizontal(|ui| {
            ui.checkbox(&mut self.settings.show_grid, "Pixel grid");
            ui.checkbox(&mut self.settings.show_delta, "|Δx̂₀| view");
            ui.checkbox(&mut self.settings.show_nearest, "nearest image")
                .on_hover_text("Beside x̂₀, the training image nearest to it: is this step's estimate new, or a copy?");
        });
        ui.horizontal(|ui| {
            use crate::export::maps::MapKind;
            ui.label("Provenance map");
            let name = |m: Option<MapKind>| m.map_or("none", |k| k.name());
            egui::ComboBox::from_id_salt("map_view").selected_text(name(self.settings.map_view)).show_ui(ui, |ui| {
                ui.selectable_value(&mut self.settings.map_view, None, "none");
                for k in MapKind::ALL {
                    ui.selectable_value(&mut self.settings.map_view, Some(k), k.name()).on_hover_text(k.title());
                }
            });
        })
        .response
        .on_hover_text("Beside x̂₀: where each pixel's largest weight comes from (mosaic), how far that patch moved (offset), or how many patches vote (entropy).");
        ui.horizontal_wrapped(|ui| {
            if ui.button("Restart").clicked() {
                self.restart();
            }
            if ui.button("Seed grid…").on_hover_text("many samples of these settings, one per seed").clicked() {
                self.seed_grid.mode = super::seed_grid::GridMode::Seeds;
                self.seed_grid.open = !self.seed_grid.open;
            }
            if ui.button("Calibrate…").on_hover_text("fit P(t) to the trained CNN, as the paper did").clicked() {
                self.calibration.open = !self.calibration.open;
            }
            if ui.button("Machine zoo…").on_hover_text("all seven machines from the same seed, side by side").clicked()
            {
                if self.seed_grid.mode != super::seed_grid::GridMode::Zoo {
                    // Seven samples a row: one seed is the usual zoo.
                    self.seed_grid.rows = 1;
                }
                self.seed_grid.mode = super::seed_grid::GridMode::Zoo;
                self.seed_grid.open = !self.seed_grid.open;
            }
        });
    }

    fn history_list(&mut self, ui: &mut Ui) {
        egui::CollapsingHeader::new(format!("Run history ({})", self.history.runs.len())).default_open(false).show(
            ui,
            |ui| {
                let current = self.history.current().map(|r| r.id);
                let mut view = None;
                for run in self.history.runs.iter().rev() {
                    ui.horizontal(|ui| {
                        let shown = self.viewing.unwrap_or(current.unwrap_or(0)) == run.id;
                        if ui
                            .selectable_label(
                                shown,
                                format!("run {}: {}/{} steps", run.id, run.steps.len(), run.total_steps),
                            )
                            .clicked()
                        {
                            view = Some(run.id);
                        }
                    });
                    for seg in &run.segments {
                        ui.label(egui::RichText::new(format!("  from step {}: {}", seg.from_step, seg.label)).small());
                    }
                }
                if let Some(id) = view {
                    self.viewing = if Some(id) == current { None } else { Some(id) };
                    self.time = Default::default();
                }
            },
        );
    }

    /// Opens the folder dialog off the UI thread.
    pub(crate) fn pick_folder(&mut self) {
        let ask = super::dialogs::Ask::OpenFolder { title: "Open a folder of images".into() };
        self.folder_pick = Some(self.dialogs.ask(ask));
    }

    pub(crate) fn poll_folder_pick(&mut self) {
        if let Some(rx) = &self.folder_pick
            && let Ok(choice) = rx.try_recv()
        {
            self.folder_pick = None;
            if let Some(dir) = choice {
                self.settings.dataset = DatasetSource::Folder(dir);
                self.settings.class = None;
            }
        }
    }

    /// A dropped folder, .npy file or set of image files becomes the dataset.
    pub(crate) fn handle_drops(&mut self, ctx: &egui::Context) {
        let dropped: Vec<std::path::PathBuf> =
            ctx.input(|i| i.raw.dropped_files.iter().map(|f| f.path().to_path_buf()).collect());
        if dropped.is_empty() {
            return;
        }
        let source = match &dropped[..] {
            [one] if one.is_dir() => DatasetSource::Folder(one.clone()),
            [one] if one.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy")) => DatasetSource::Npy(one.clone()),
            many => DatasetSource::Files(many.to_vec()),
        };
        self.settings.dataset = source;
        self.settings.class = None;
    }
}
