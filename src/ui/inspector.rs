//! The pixel inspector: which training patches voted for the clicked pixel, and how much.

use egui::{TextureHandle, Ui};

use crate::engine::Inspection;
use crate::worker::RunId;

/// A pixel's votes as the inspector shows them.
pub struct InspectView {
    pub run: RunId,
    pub step: usize,
    pub y: usize,
    pub x: usize,
    pub result: Inspection,
    /// The voting patches (or images), uploaded once.
    pub crops: Vec<TextureHandle>,
}

#[derive(Default)]
pub struct Inspector {
    pub view: Option<InspectView>,
}

impl Inspector {
    /// Where to mark the inspected pixel on the canvas, when it belongs to `step`.
    pub fn marker(&self, step: usize) -> Option<(usize, usize)> {
        self.view.as_ref().filter(|v| v.step == step).map(|v| (v.y, v.x))
    }

    pub fn ui(&self, ui: &mut Ui) {
        ui.heading("Pixel inspector");
        let Some(iv) = &self.view else {
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
                ui.label(format!("#{}", vote.image));
                ui.label(format!("({}, {})", vote.x, vote.y));
                ui.add(
                    egui::ProgressBar::new(vote.weight as f32).desired_width(80.0).text(format!("{:.3}", vote.weight)),
                );
                ui.end_row();
            }
        });
    }
}
