//! The pixel inspector: which training patches voted for the clicked pixel, and how much.

use egui::{Color32, ColorImage, Rect, Sense, Stroke, TextureHandle, Ui, pos2, vec2};

use crate::engine::{ImageShape, Inspection};
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
    /// Each vote's whole training image.
    pub images: Vec<TextureHandle>,
    /// x_t's window around the pixel: what the votes were compared with.
    pub query: Option<TextureHandle>,
    /// Image shape and the patch size the votes were cut at (0: whole images).
    pub shape: ImageShape,
    pub patch: usize,
    /// The square outlined on the sensitivity map (0: none): the patch machines' window, the
    /// CNN's receptive field.
    pub outline: usize,
    /// The Gaussian machine's Wiener-filter row as a red/blue image ([`filter_image`]).
    pub filter: Option<TextureHandle>,
    /// The PCA-locality machine's learned window over x_t ([`window_image`]).
    pub window: Option<TextureHandle>,
    /// ∂x̂₀(pixel)/∂x_t over the canvas as a red/blue image ([`filter_image`]), with the
    /// canvas's shape: what the pixel is sensitive to.
    pub sensitivity: Option<(TextureHandle, ImageShape)>,
}

/// A filter row ([H·W]) as an image: red where the pixel adds to x̂₀, blue where it
/// subtracts, black where it is not read; scaled to the largest |weight|. The inspected
/// pixel's own weight is usually the largest.
pub fn filter_image(f: &[f64], shape: ImageShape) -> ColorImage {
    let max = f.iter().fold(1e-300f64, |m, v| m.max(v.abs()));
    let pixels = f
        .iter()
        .map(|&v| {
            // A square root lifts the faint tails into view without changing the sign.
            let t = ((v.abs() / max).sqrt() * 255.0) as u8;
            if v >= 0.0 { Color32::from_rgb(t, t / 5, t / 8) } else { Color32::from_rgb(t / 8, t / 3, t) }
        })
        .collect();
    ColorImage::new([shape.w, shape.h], pixels)
}

/// x_t in gray with the pixels of a learned window shaded cyan.
pub fn window_image(x: &[f32], shape: ImageShape, window: &[usize]) -> ColorImage {
    let hw = shape.pixels();
    let mut inside = vec![false; hw];
    window.iter().filter(|&&p| p < hw).for_each(|&p| inside[p] = true);
    let pixels = (0..hw)
        .map(|i| {
            let g = (0..shape.c).map(|c| x[c * hw + i]).sum::<f32>() / shape.c as f32;
            let g = (((g.clamp(-1.0, 1.0) + 1.0) * 0.5) * 160.0) as u8;
            if inside[i] { Color32::from_rgb(g / 3, 120 + g / 2, 160 + g / 3) } else { Color32::from_gray(g) }
        })
        .collect();
    ColorImage::new([shape.w, shape.h], pixels)
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

    /// The inspector panel. `top` is how many votes to list (the user can change it); returns
    /// true when it changed, so the pixel is asked for again.
    pub fn ui(&self, ui: &mut Ui, top: &mut usize) -> bool {
        ui.heading("Pixel inspector");
        let changed = ui
            .horizontal(|ui| {
                ui.label("show the top");
                let r = ui.add(egui::DragValue::new(top).range(1..=crate::worker::MAX_INSPECT_TOP));
                ui.label("votes");
                r.changed()
            })
            .inner;
        let Some(iv) = &self.view else {
            ui.label("Click a pixel of x̂₀ to see which training patches voted for it.");
            return changed;
        };
        let r = &iv.result;
        if let Some(tex) = &iv.filter {
            // The Gaussian machine: no votes, one linear filter. Image above, text below, so the
            // text wraps to the panel instead of widening it.
            ui.add(egui::Image::new(tex).fit_to_exact_size(vec2(120.0, 120.0 * iv.shape.h as f32 / iv.shape.w as f32)))
                .on_hover_text("red: adds to x̂₀, blue: subtracts; brightness ∝ √|weight|");
            let own = r.filter.as_ref().map_or(0.0, |f| f[iv.y * iv.shape.w + iv.x]);
            ui.label(format!(
                "pixel ({}, {}) at step {}: the Gaussian machine computes x̂₀ = μ + W(z − μ), one fixed linear \
                 filter; this is the pixel's row of W (its Wiener filter). It reads {} pixels for 90% of its \
                 absolute weight; its own weight is {own:.3}; the row sums to {:.3}. x̂₀ here = {}",
                iv.x,
                iv.y,
                iv.step,
                r.count_90,
                r.weight_sum,
                r.x0.iter().map(|v| format!("{v:+.3}")).collect::<Vec<_>>().join(" ")
            ));
            return changed;
        }
        if r.candidates == 0 {
            // The CNN: nothing voted, the weights made it.
            ui.label(format!(
                "pixel ({}, {}) at step {}: the CNN has no vote over training patches; its x̂₀ here = {}",
                iv.x,
                iv.y,
                iv.step,
                r.x0.iter().map(|v| format!("{v:+.3}")).collect::<Vec<_>>().join(" ")
            ));
            if let Some((tex, canvas)) = &iv.sensitivity {
                self.sensitivity(ui, tex, *canvas, iv);
            }
            return changed;
        }
        if let (Some(tex), Some(w)) = (&iv.window, &r.window) {
            ui.add(egui::Image::new(tex).fit_to_exact_size(vec2(96.0, 96.0 * iv.shape.h as f32 / iv.shape.w as f32)))
                .on_hover_text("x_t with the pixel's learned window shaded: the values every image is compared on");
            ui.label(format!(
                "PCA-locality compares each training image with x_t over this learned window of {} pixels \
                 (|W[j, p]/W[j, j]| ≥ 2% of its largest), not a square.",
                w.len()
            ));
        }
        ui.horizontal(|ui| {
            if let Some(q) = &iv.query {
                ui.add(egui::Image::new(q).fit_to_exact_size(vec2(48.0, 48.0)))
                    .on_hover_text("the query: x_t around the pixel, which every candidate is compared with");
            }
            ui.add(
                egui::Label::new(format!(
                    "pixel ({}, {}) at step {}: {} candidates; {} carry 90% of the weight; entropy {:.2} nats \
                 (≈{:.0} effective voters); weights sum to {:.6}",
                    iv.x,
                    iv.y,
                    iv.step,
                    r.candidates,
                    r.count_90,
                    r.entropy,
                    r.entropy.exp(),
                    r.weight_sum
                ))
                .wrap(),
            );
        });
        if let Some((tex, canvas)) = &iv.sensitivity {
            self.sensitivity(ui, tex, *canvas, iv);
        }
        egui::Grid::new("votes").striped(true).show(ui, |ui| {
            ui.strong("patch");
            ui.strong("from");
            ui.strong("image");
            ui.strong("at");
            ui.strong("weight");
            ui.end_row();
            for (k, (vote, tex)) in r.votes.iter().zip(&iv.crops).enumerate().take(*top) {
                ui.add(egui::Image::new(tex).fit_to_exact_size(vec2(40.0, 40.0)));
                match iv.images.get(k) {
                    Some(img) => self.image_with_patch(ui, img, iv, vote.y, vote.x),
                    None => {
                        ui.label("");
                    }
                }
                ui.label(format!("#{}", vote.image));
                ui.label(format!("({}, {})", vote.x, vote.y));
                ui.add(
                    egui::ProgressBar::new(vote.weight as f32).desired_width(80.0).text(format!("{:.3}", vote.weight)),
                );
                ui.end_row();
            }
        });
        changed
    }

    /// The sensitivity map: ∂x̂₀ at the pixel over every x_t pixel, signed, with the machine's
    /// window outlined (a patch machine's map lives inside it; Ideal's spreads over the image).
    fn sensitivity(&self, ui: &mut Ui, tex: &TextureHandle, canvas: ImageShape, iv: &InspectView) {
        let side = 96.0;
        let size = vec2(side, side * canvas.h as f32 / canvas.w.max(1) as f32);
        ui.horizontal(|ui| {
            let (rect, response) = ui.allocate_exact_size(size, Sense::hover());
            ui.painter().image(tex.id(), rect, Rect::from_min_max(pos2(0.0, 0.0), pos2(1.0, 1.0)), Color32::WHITE);
            let cell = rect.width() / canvas.w as f32;
            if iv.outline > 0 {
                let side = iv.outline as f32;
                let r = (iv.outline / 2) as f32;
                let min = rect.min + vec2((iv.x as f32 - r) * cell, (iv.y as f32 - r) * cell);
                let window = Rect::from_min_size(min, vec2(side * cell, side * cell));
                ui.painter().with_clip_rect(rect).rect_stroke(
                    window,
                    0.0,
                    Stroke::new(1.0, Color32::from_rgb(255, 220, 60)),
                    egui::StrokeKind::Outside,
                );
            }
            let dot = rect.min + vec2((iv.x as f32 + 0.5) * cell, (iv.y as f32 + 0.5) * cell);
            ui.painter().circle_stroke(dot, cell.max(2.0), Stroke::new(1.0, Color32::WHITE));
            response.on_hover_text(
                "∂x̂₀(pixel)/∂x_t: red where raising x_t raises the pixel's x̂₀, blue where it lowers it; \
                 brightness ∝ √|J|. Yellow: the machine's window.",
            );
            let how = if iv.result.candidates == 0 {
                format!(
                    "through the network's autodiff; yellow: its {0}×{0} receptive field, the map inside it the \
                     field it uses",
                    iv.outline
                )
            } else {
                "(a/σ²)·the votes' covariance of centres and windows".to_string()
            };
            ui.add(
                egui::Label::new(format!(
                    "Sensitivity of pixel ({}, {}): how x̂₀ there moves with each pixel of x_t (the Jacobian, {how}).",
                    iv.x, iv.y
                ))
                .wrap(),
            );
        });
    }

    /// A training image with the voting patch's window outlined (the window may hang over
    /// the edge: the outline is clipped to the image).
    fn image_with_patch(&self, ui: &mut Ui, tex: &TextureHandle, iv: &InspectView, y: usize, x: usize) {
        let s = iv.shape;
        let size = vec2(40.0, 40.0 * s.h as f32 / s.w.max(1) as f32);
        let (rect, _) = ui.allocate_exact_size(size, Sense::hover());
        ui.painter().image(tex.id(), rect, Rect::from_min_max(pos2(0.0, 0.0), pos2(1.0, 1.0)), Color32::WHITE);
        if iv.patch == 0 {
            return;
        }
        let cell = rect.width() / s.w as f32;
        let r = (iv.patch / 2) as f32;
        let min = rect.min + vec2((x as f32 - r) * cell, (y as f32 - r) * cell);
        let window = Rect::from_min_size(min, vec2(iv.patch as f32 * cell, iv.patch as f32 * cell));
        ui.painter().with_clip_rect(rect).rect_stroke(
            window,
            0.0,
            Stroke::new(1.5, Color32::from_rgb(255, 80, 80)),
            egui::StrokeKind::Inside,
        );
    }
}
