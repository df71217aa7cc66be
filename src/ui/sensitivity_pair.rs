//! Compare mode's sensitivity maps: the clicked pixel's ∂x̂₀/∂x_t for both columns at every
//! step, side by side at the scrubbed step, and the cosine similarity of the two maps over the
//! run, so the CNN's effective receptive field can be read against ELS's square at each step.
//!
//! Each column's worker streams its maps ([`crate::worker::Event::Sensitivity`]); a map becomes a
//! texture once, and a step's cosine is taken once, when both columns have it.

use std::collections::BTreeMap;

use egui::{Context, TextureHandle, TextureOptions, Ui, vec2};
use egui_plot::{Line, Plot, PlotPoints, VLine};

use super::inspector::filter_image;
use crate::engine::ImageShape;
use crate::worker::RunId;

/// Which column a map belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Column {
    Main,
    Second,
}

/// The two columns' maps of one pixel.
pub struct SensitivityPair {
    /// The pixel, (y, x).
    pub pixel: (usize, usize),
    /// The main run the maps were asked for.
    pub run: RunId,
    /// The machines' titles, for the labels.
    pub titles: [String; 2],
    main: BTreeMap<usize, (Vec<f64>, TextureHandle)>,
    second: BTreeMap<usize, (Vec<f64>, TextureHandle)>,
    /// Machines without a Jacobian (PSPC-Square) send no map: say so instead of waiting.
    missing: [bool; 2],
    /// Cosine of the two maps per step, once both are in.
    pub cosine: BTreeMap<usize, f64>,
}

/// cos(a, b) = a·b / (|a||b|); NaN when a map is all zero (nothing to compare).
pub fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let (na, nb) = (a.iter().map(|x| x * x).sum::<f64>().sqrt(), b.iter().map(|x| x * x).sum::<f64>().sqrt());
    if na == 0.0 || nb == 0.0 { f64::NAN } else { dot / (na * nb) }
}

impl SensitivityPair {
    pub fn new(run: RunId, pixel: (usize, usize), titles: [String; 2]) -> Self {
        Self {
            pixel,
            run,
            titles,
            main: BTreeMap::new(),
            second: BTreeMap::new(),
            missing: [false; 2],
            cosine: BTreeMap::new(),
        }
    }

    /// A map arrived for `column` at `step` (None: that machine has no Jacobian).
    pub fn insert(&mut self, ctx: &Context, column: Column, step: usize, map: Option<Vec<f64>>, canvas: ImageShape) {
        let Some(map) = map.filter(|m| m.len() == canvas.pixels()) else {
            self.missing[column as usize] = true;
            return;
        };
        let name = format!("sens-{column:?}-{step}");
        let tex = ctx.load_texture(name, filter_image(&map, canvas), TextureOptions::NEAREST);
        let (mine, theirs) = match column {
            Column::Main => (&mut self.main, &self.second),
            Column::Second => (&mut self.second, &self.main),
        };
        if let Some((other, _)) = theirs.get(&step).filter(|(o, _)| o.len() == map.len()) {
            let c = cosine(&map, other);
            if c.is_finite() {
                self.cosine.insert(step, c);
            }
        }
        mine.insert(step, (map, tex));
    }

    /// The two maps at `step` and the cosine over the run.
    pub fn ui(&self, ui: &mut Ui, step: usize) {
        let (y, x) = self.pixel;
        ui.strong(format!("Both columns' sensitivity of pixel ({x}, {y})"));
        ui.horizontal(|ui| {
            for (k, side) in [&self.main, &self.second].into_iter().enumerate() {
                ui.vertical(|ui| {
                    ui.label(&self.titles[k]);
                    match side.get(&step) {
                        Some((_, tex)) => {
                            ui.add(egui::Image::new(tex).fit_to_exact_size(vec2(110.0, 110.0)))
                                .on_hover_text("∂x̂₀(pixel)/∂x_t: red raises the pixel's x̂₀, blue lowers it");
                        }
                        None if self.missing[k] => {
                            ui.label("no Jacobian for this machine");
                        }
                        None => {
                            ui.label("computing…");
                        }
                    }
                });
            }
        });
        match self.cosine.get(&step) {
            Some(c) => ui.label(format!("cosine of the two maps at step {step}: {c:.3}")),
            None => ui.label(format!("cosine at step {step}: waiting for both maps")),
        };
        if self.cosine.is_empty() {
            return;
        }
        let points: PlotPoints = self.cosine.iter().map(|(&k, &c)| [k as f64, c]).collect();
        Plot::new("sensitivity-cosine")
            .height(90.0)
            .include_y(0.0)
            .include_y(1.0)
            .x_axis_label("step")
            .y_axis_label("cosine")
            .allow_drag(false)
            .allow_zoom(false)
            .allow_scroll(false)
            .show(ui, |plot| {
                plot.line(Line::new("cosine of the two maps", points));
                plot.vline(VLine::new("step", step as f64));
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cosine_is_scale_free_signed_and_refuses_an_empty_map() {
        assert!((cosine(&[1.0, 2.0, 0.0], &[2.0, 4.0, 0.0]) - 1.0).abs() < 1e-15);
        assert!((cosine(&[1.0, 0.0], &[-3.0, 0.0]) + 1.0).abs() < 1e-15);
        assert!(cosine(&[1.0, 0.0], &[0.0, 5.0]).abs() < 1e-15);
        assert!(cosine(&[0.0, 0.0], &[1.0, 1.0]).is_nan());
    }

    #[test]
    fn a_steps_cosine_is_taken_once_both_columns_have_it() {
        let ctx = Context::default();
        let canvas = ImageShape { c: 1, h: 1, w: 3 };
        let mut pair = SensitivityPair::new(1, (0, 1), ["ELS".into(), "CNN".into()]);
        pair.insert(&ctx, Column::Main, 2, Some(vec![1.0, 1.0, 0.0]), canvas);
        assert!(pair.cosine.is_empty(), "one column is not a comparison");
        pair.insert(&ctx, Column::Second, 2, Some(vec![1.0, 0.0, 0.0]), canvas);
        let c = pair.cosine[&2];
        assert!((c - 0.5f64.sqrt()).abs() < 1e-12, "{c}");
        // A map of the wrong size (another canvas) or none at all is not compared.
        pair.insert(&ctx, Column::Second, 3, Some(vec![1.0]), canvas);
        pair.insert(&ctx, Column::Main, 3, Some(vec![1.0, 0.0, 0.0]), canvas);
        assert_eq!(pair.cosine.len(), 1);
        assert!(pair.missing[1]);
    }
}
