//! The provenance-map panel: the mosaic, source-offset or entropy map of the step under the
//! cursor (textures made once per step and map), its legend, and what the hovered pixel's
//! winning patch was: which training image, from where, and how many patches voted.

use std::collections::HashMap;

use egui::{Color32, ColorImage, Rect, Sense, TextureHandle, TextureOptions, Ui, pos2, vec2};

use crate::engine::{ImageShape, PixelMaps};
use crate::export::maps::{MapKind, heat, render, scale_max};
use crate::worker::{DatasetInfo, RunId};

use super::texture::color_image;

/// Textures of maps and training images, uploaded once and kept for a while.
#[derive(Default)]
pub struct MapsView {
    maps: HashMap<(RunId, usize, MapKind), TextureHandle>,
    images: HashMap<usize, TextureHandle>,
    /// Per (run, step, map): the legend's summary (distinct images, or the mean value).
    summaries: HashMap<(RunId, usize, MapKind), f32>,
    /// The pixel hovered last frame (the arrow and readout follow it).
    pub hovered: Option<(usize, usize)>,
}

/// Textures kept before the caches are emptied (a few KB each).
const CACHE: usize = 256;

impl MapsView {
    /// The map texture of (run, step), made on first use.
    pub fn texture(
        &mut self,
        ctx: &egui::Context,
        key: (RunId, usize, MapKind),
        maps: &PixelMaps,
        shape: ImageShape,
        n_train: usize,
    ) -> TextureHandle {
        if self.maps.len() > CACHE {
            self.maps.clear();
        }
        self.maps
            .entry(key)
            .or_insert_with(|| {
                let img = render(maps, key.2, shape, scale_max(key.2, shape, n_train));
                let colour = ColorImage::from_rgba_unmultiplied([shape.w, shape.h], img.as_raw());
                ctx.load_texture(format!("map{}-{}-{}", key.0, key.1, key.2.name()), colour, TextureOptions::NEAREST)
            })
            .clone()
    }

    /// Training image `n` as a texture, when the dataset shipped its images to the UI.
    pub fn image(&mut self, ctx: &egui::Context, info: &DatasetInfo, n: usize) -> Option<TextureHandle> {
        let images = info.images.as_ref()?;
        let len = info.shape.len();
        let img = images.get(n * len..(n + 1) * len)?;
        if self.images.len() > CACHE {
            self.images.clear();
        }
        Some(
            self.images
                .entry(n)
                .or_insert_with(|| {
                    ctx.load_texture(format!("train{n}"), color_image(img, info.shape), TextureOptions::NEAREST)
                })
                .clone(),
        )
    }

    /// The arrow from the hovered pixel's winning patch centre to the pixel (image coords).
    pub fn arrow(&self, maps: &PixelMaps, shape: ImageShape) -> Option<((usize, usize), (usize, usize))> {
        let (y, x) = self.hovered?;
        let src = *maps.source.get(y * shape.w + x)? as usize;
        (maps.winner[y * shape.w + x] != u32::MAX).then_some(((src / shape.w, src % shape.w), (y, x)))
    }

    /// The hovered pixel's learned window, when the machine learns them (PCA-locality).
    pub fn window(&self, maps: &PixelMaps, shape: ImageShape) -> Option<Vec<usize>> {
        let (y, x) = self.hovered?;
        Some(maps.windows.as_ref()?.window(y * shape.w + x))
    }

    /// The legend and the hovered pixel's provenance, under the canvas. `dataset` is given
    /// only when the run's training set is the one loaded (so image numbers mean the same).
    pub fn legend(
        &mut self,
        ui: &mut Ui,
        key: (RunId, usize, MapKind),
        maps: &PixelMaps,
        shape: ImageShape,
        n_train: usize,
        dataset: Option<&DatasetInfo>,
    ) {
        let kind = key.2;
        if self.summaries.len() > CACHE {
            self.summaries.clear();
        }
        // Computed once per step and map, not every frame.
        let summary = *self.summaries.entry(key).or_insert_with(|| match kind {
            MapKind::Mosaic => {
                let mut distinct: Vec<u32> = maps.winner.iter().copied().filter(|&w| w != u32::MAX).collect();
                distinct.sort_unstable();
                distinct.dedup();
                distinct.len() as f32
            }
            MapKind::Offset => maps.offset(shape.w).iter().sum::<f32>() / shape.pixels() as f32,
            MapKind::Entropy => maps.entropy.iter().sum::<f32>() / shape.pixels() as f32,
        });
        ui.horizontal(|ui| {
            ui.label(egui::RichText::new(kind.title()).strong());
            match kind {
                MapKind::Mosaic => {
                    ui.label(format!(
                        "one colour per training image: this step draws on {summary} of the {n_train} images"
                    ));
                }
                MapKind::Offset | MapKind::Entropy => {
                    let max = scale_max(kind, shape, n_train);
                    let unit = if kind == MapKind::Offset { "px" } else { "nats" };
                    ui.label(format!("0 {unit}"));
                    let (rect, _) = ui.allocate_exact_size(vec2(160.0, 12.0), Sense::hover());
                    let painter = ui.painter_at(rect);
                    let n = 32;
                    for i in 0..n {
                        let c = heat(i as f32 / (n - 1) as f32);
                        let x0 = rect.left() + rect.width() * i as f32 / n as f32;
                        let r = Rect::from_min_max(
                            pos2(x0, rect.top()),
                            pos2(x0 + rect.width() / n as f32 + 0.5, rect.bottom()),
                        );
                        painter.rect_filled(r, 0.0, Color32::from_rgb(c[0], c[1], c[2]));
                    }
                    ui.label(format!("{max:.1} {unit}"));
                    ui.label(format!("(mean {summary:.2} {unit})"));
                }
            }
        });
        let Some((y, x)) = self.hovered else {
            ui.label(
                egui::RichText::new("Hover a pixel to see which training image its largest weight comes from.").weak(),
            );
            return;
        };
        let px = y * shape.w + x;
        if let Some(w) = &maps.windows {
            ui.label(format!(
                "({x}, {y}) compares over a learned window of {} (shaded), read off the Wiener filter \
                 at this noise level — ELS and Local use a square instead",
                match w.size(px) {
                    1 => "1 pixel".to_string(),
                    n => format!("{n} pixels"),
                }
            ));
        }
        let (Some(&n), Some(&src)) = (maps.winner.get(px), maps.source.get(px)) else { return };
        ui.horizontal(|ui| {
            if n == u32::MAX {
                ui.label(format!("({x}, {y}): no training patch fits this window (x̂₀ is the mean)"));
                return;
            }
            let (sy, sx) = (src as usize / shape.w, src as usize % shape.w);
            let moved = ((sy as f32 - y as f32).powi(2) + (sx as f32 - x as f32).powi(2)).sqrt();
            let h = maps.entropy[px];
            if let Some(tex) = dataset.and_then(|info| self.image(ui.ctx(), info, n as usize)) {
                let size = vec2(56.0, 56.0 * shape.h as f32 / shape.w as f32);
                let (rect, _) = ui.allocate_exact_size(size, Sense::hover());
                ui.painter().image(tex.id(), rect, Rect::from_min_max(pos2(0.0, 0.0), pos2(1.0, 1.0)), Color32::WHITE);
                // The winning patch's centre in its image.
                let cell = rect.width() / shape.w as f32;
                let c = rect.min + vec2((sx as f32 + 0.5) * cell, (sy as f32 + 0.5) * cell);
                ui.painter().circle_stroke(c, cell.max(3.0), egui::Stroke::new(2.0, Color32::from_rgb(255, 80, 80)));
            }
            // Beside the thumbnail a horizontal layout does not wrap by itself: this line
            // would run under the inspector.
            ui.add(
                egui::Label::new(format!(
                    "({x}, {y}): largest weight from training image #{n}, patch centred at ({sx}, {sy}) — moved \
                     {moved:.1} px; entropy {h:.2} nats (≈ {:.0} patches vote)",
                    h.exp()
                ))
                .wrap(),
            );
        });
    }
}
