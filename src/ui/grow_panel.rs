//! The left panel's "Grow and paint" section: the canvas size (with its cost before it
//! starts), the brush and its tools, undo and redo, the wounds made, and the locality map's
//! export.

use std::path::PathBuf;

use egui::Ui;

use super::app::StudioApp;
use super::brush::Tool;
use crate::engine::sampling::paint::MAX_LOCALITY;
use crate::engine::{ImageShape, LocalityMap};

/// Where the locality map is saved unless the user types another path.
pub fn default_map_path() -> PathBuf {
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    home.join("morphogen").join("locality-map.png")
}

/// The locality map as an 8-bit gray PNG: 0 is no multiplier, 255 is ×8 ([`MAX_LOCALITY`]),
/// so ×1 is 32.
pub fn map_png(map: &LocalityMap) -> Vec<u8> {
    let gray: Vec<u8> =
        map.values.iter().map(|&m| (m / MAX_LOCALITY * 255.0).round().clamp(0.0, 255.0) as u8).collect();
    let img = image::GrayImage::from_raw(map.w as u32, map.h as u32, gray).expect("H·W values");
    let mut bytes = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).expect("PNG encodes to memory");
    bytes
}

/// Writes the map as PNG or (for a `.npy` path) float32 (H, W), which `sample --locality-map`
/// reads back exactly. Never overwrites.
pub fn save_map(map: &LocalityMap, path: &std::path::Path) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: cannot create the folder: {e}", dir.display()))?;
    }
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy")) {
        if path.exists() {
            return Err(format!("{} already exists; choose another name", path.display()));
        }
        crate::data::write_npy_f32(path, &[map.h, map.w], &map.values)
    } else {
        crate::files::write_bytes(path, false, &map_png(map))
    }
    .map_err(|e| format!("{}: {e}", path.display()))
}

/// Seconds a run on an H×W canvas should take, from the current run's measured seconds on
/// its own canvas: the closed-form machines' cost grows with the canvas's pixels.
pub fn eta_seconds(measured: f64, from: ImageShape, h: usize, w: usize) -> f64 {
    measured * (h * w) as f64 / from.pixels().max(1) as f64
}

impl StudioApp {
    pub(crate) fn grow_controls(&mut self, ui: &mut Ui) {
        ui.heading("Grow and paint");
        let Some(train) = self.dataset.as_ref().map(|d| d.shape) else {
            ui.label("(loading the dataset…)");
            return;
        };
        self.canvas_size_controls(ui, train);
        self.brush_controls(ui);
    }

    fn canvas_size_controls(&mut self, ui: &mut Ui, train: ImageShape) {
        let current = self.settings.canvas_shape(train);
        // The last finished run's seconds, to size the others from.
        let measured = self
            .history
            .current()
            .filter(|r| r.finished && !r.steps.is_empty())
            .map(|r| (r.steps.iter().map(|s| s.seconds).sum::<f64>(), r.shape));
        let mut pick = None;
        ui.horizontal_wrapped(|ui| {
            ui.label("Canvas");
            for k in 1..=3 {
                let (h, w) = (train.h * k, train.w * k);
                let selected = (current.h, current.w) == (h, w);
                let mut tip = format!("{h}×{w} pixels ({}× the training images' pixels)", k * k);
                if let Some((secs, from)) = measured {
                    tip += &format!(
                        "; about {:.0} s a run at this machine's measured rate",
                        eta_seconds(secs, from, h, w)
                    );
                }
                if ui.selectable_label(selected, format!("×{k}")).on_hover_text(tip).clicked() && !selected {
                    pick = Some([h, w]);
                }
            }
            let mut hw = [current.h, current.w];
            let max = crate::engine::machine::MAX_CANVAS;
            let a = ui.add(egui::DragValue::new(&mut hw[0]).range(1..=max).suffix(" H"));
            let b = ui.add(egui::DragValue::new(&mut hw[1]).range(1..=max).suffix(" W"));
            if (a.lost_focus() || a.drag_stopped() || b.lost_focus() || b.drag_stopped())
                && hw != [current.h, current.w]
            {
                pick = Some(hw);
            }
        });
        if (current.h, current.w) != (train.h, train.w) {
            let mut note = format!("Growing on {}×{}: ELS and the CNN only.", current.h, current.w);
            if let Some((secs, from)) = measured {
                note += &format!(" A run takes about {:.0} s here.", eta_seconds(secs, from, current.h, current.w));
            }
            ui.label(egui::RichText::new(note).small());
        }
        if let Some([h, w]) = pick {
            if let Some((secs, from)) = measured {
                let eta = eta_seconds(secs, from, h, w);
                // Said before it runs, beside the control (not as a problem: it is the user's choice).
                self.notice = (eta > 60.0).then(|| {
                    format!("a {h}×{w} canvas takes about {eta:.0} s a run here; Stop (below the timeline) cancels it")
                });
            }
            self.settings.canvas = ((h, w) != (train.h, train.w)).then_some([h, w]);
            if self.settings.fit_paint_to(train) {
                self.paint.clear();
            }
        }
    }

    fn brush_controls(&mut self, ui: &mut Ui) {
        let b = &mut self.settings.brush;
        ui.checkbox(&mut b.on, "Brush (drag on x_t to paint)").on_hover_text(
            "Paint wounds onto x_t at the scrubbed step (the run branches there and regrows), or paint locality \
             onto the canvas (the run restarts). Right-drag erases the locality map.",
        );
        ui.add_enabled_ui(b.on, |ui| {
            ui.horizontal_wrapped(|ui| {
                for tool in Tool::ALL {
                    ui.selectable_value(&mut b.tool, tool, tool.label());
                }
            });
            ui.add(egui::Slider::new(&mut b.radius, 0..=12).text("radius (px)"));
            if b.tool == Tool::Stamp {
                ui.add(egui::DragValue::new(&mut b.stamp_image).prefix("training image #"))
                    .on_hover_text("Stamped unless the inspector has a pixel's votes: then its top vote's image");
            }
            ui.checkbox(&mut b.overlay, "show the locality map (blue: local, orange: global)");
        });
        ui.horizontal(|ui| {
            if ui.add_enabled(self.paint.can_undo(), egui::Button::new("Undo")).on_hover_text("Ctrl+Z").clicked() {
                self.paint.undo(&mut self.settings);
            }
            if ui.add_enabled(self.paint.can_redo(), egui::Button::new("Redo")).on_hover_text("Ctrl+Shift+Z").clicked()
            {
                self.paint.redo(&mut self.settings);
            }
        });
        let edits = &self.settings.edits;
        if !edits.is_empty() {
            let steps: Vec<String> = edits.iter().map(|e| e.step.to_string()).collect();
            ui.label(format!("{} wound(s), at steps {}", edits.len(), steps.join(", ")));
        }
        if let Some(map) = self.settings.locality_map.clone() {
            ui.horizontal(|ui| {
                let path = self.grow_map_path.get_or_insert_with(|| default_map_path().display().to_string());
                ui.add(egui::TextEdit::singleline(path).desired_width(170.0))
                    .on_hover_text("Save the locality map: .png (gray, 32 = ×1, 255 = ×8) or .npy (float32, for sample --locality-map)");
                if ui.button("Save map").clicked() {
                    match save_map(&map, std::path::Path::new(path.as_str())) {
                        Ok(()) => self.notice = Some(format!("saved the locality map to {path}")),
                        Err(e) => self.errors.push(e),
                    }
                }
            });
        }
        if let Some(n) = &self.notice {
            ui.label(egui::RichText::new(n).small());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_map_saves_as_png_and_npy_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let map = LocalityMap { h: 2, w: 3, values: vec![1.0, 8.0, 0.5, 1.0, 1.0, 3.0] };
        let npy = dir.path().join("sub/m.npy");
        save_map(&map, &npy).unwrap();
        let (dims, back) = crate::data::read_npy_f32(&npy).unwrap();
        assert_eq!((dims, back), (vec![2, 3], map.values.clone()));
        assert!(save_map(&map, &npy).unwrap_err().contains("already exists"));
        let png = dir.path().join("m.png");
        save_map(&map, &png).unwrap();
        let img = image::open(&png).unwrap().into_luma8();
        assert_eq!(img.as_raw(), &vec![32, 255, 16, 32, 32, 96]);
        assert!(save_map(&map, &png).is_err());
        assert_eq!(eta_seconds(10.0, ImageShape { c: 1, h: 28, w: 28 }, 56, 56), 40.0);
    }
}
