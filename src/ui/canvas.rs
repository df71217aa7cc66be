//! The canvas: x_t, x̂₀ and |Δx̂₀| side by side, crisp (nearest-neighbour), with shared zoom
//! and pan, a pixel grid at high zoom, a hover readout and click-to-inspect.

use egui::{Color32, Rect, Sense, Stroke, TextureHandle, Ui, Vec2, pos2, vec2};

use crate::engine::ImageShape;

/// Zoom and pan shared by all panels.
#[derive(Clone, Debug, PartialEq)]
pub struct CanvasState {
    /// Extra zoom on top of fit-to-panel (1 = fit).
    pub zoom: f32,
    /// Offset of the image centre from the panel centre, in image pixels.
    pub pan: Vec2,
}

impl Default for CanvasState {
    fn default() -> Self {
        Self { zoom: 1.0, pan: Vec2::ZERO }
    }
}

/// One panel to draw.
pub struct Panel<'a> {
    pub title: &'a str,
    pub texture: &'a TextureHandle,
    /// [C, H, W] values for the hover readout.
    pub values: Option<&'a [f32]>,
    /// Multiplies the image's colours: white as is, grey to dim an out-of-date view.
    pub tint: Color32,
    /// An arrow drawn over the image, from one pixel's centre to another's ((y, x) each):
    /// where the hovered pixel's winning patch was taken from.
    pub arrow: Option<((usize, usize), (usize, usize))>,
    /// Pixels (y·W + x) to shade: the hovered pixel's learned window (PCA-locality).
    pub window: Option<&'a [usize]>,
}

#[derive(Default)]
pub struct CanvasOutput {
    pub hovered: Option<(usize, usize)>,
    pub clicked: Option<(usize, usize)>,
}

/// Draws `panels` filling the available space, leaving `footer_lines` lines below them.
pub fn show(
    ui: &mut Ui,
    state: &mut CanvasState,
    shape: ImageShape,
    panels: &[Panel],
    grid: bool,
    marker: Option<(usize, usize)>,
    footer_lines: usize,
) -> CanvasOutput {
    let mut out = CanvasOutput::default();
    let avail = ui.available_size();
    let n = panels.len().max(1) as f32;
    let gap = 8.0;
    let title_h = 18.0;
    let panel_w = ((avail.x - gap * (n - 1.0)) / n).max(32.0);
    // Room under the panels for the hover line and `footer_lines` more (a map's legend).
    let panel_h = (avail.y - title_h - 24.0 * (1 + footer_lines) as f32).max(32.0);
    let fit = (panel_w / shape.w as f32).min(panel_h / shape.h as f32).max(0.1);
    let scale = fit * state.zoom;
    let mut hover_text = None;
    ui.horizontal(|ui| {
        for (i, panel) in panels.iter().enumerate() {
            if i > 0 {
                ui.add_space(gap);
            }
            ui.vertical(|ui| {
                ui.set_width(panel_w);
                ui.label(egui::RichText::new(panel.title).strong());
                let (rect, response) = ui.allocate_exact_size(vec2(panel_w, panel_h), Sense::click_and_drag());
                let painter = ui.painter_at(rect);
                painter.rect_filled(rect, 2.0, ui.visuals().extreme_bg_color);
                let size = vec2(shape.w as f32, shape.h as f32) * scale;
                let centre = rect.center() + state.pan * scale;
                let img_rect = Rect::from_center_size(centre, size);
                painter.image(
                    panel.texture.id(),
                    img_rect,
                    Rect::from_min_max(pos2(0.0, 0.0), pos2(1.0, 1.0)),
                    panel.tint,
                );
                if grid && scale >= 8.0 {
                    let stroke = Stroke::new(1.0, Color32::from_black_alpha(70));
                    for x in 0..=shape.w {
                        let px = img_rect.left() + x as f32 * scale;
                        painter.line_segment([pos2(px, img_rect.top()), pos2(px, img_rect.bottom())], stroke);
                    }
                    for y in 0..=shape.h {
                        let py = img_rect.top() + y as f32 * scale;
                        painter.line_segment([pos2(img_rect.left(), py), pos2(img_rect.right(), py)], stroke);
                    }
                }
                if let Some((my, mx)) = marker {
                    let r = Rect::from_min_size(img_rect.min + vec2(mx as f32, my as f32) * scale, Vec2::splat(scale));
                    painter.rect_stroke(
                        r,
                        0.0,
                        Stroke::new(2.0, Color32::from_rgb(255, 80, 80)),
                        egui::StrokeKind::Outside,
                    );
                }
                if let Some(window) = panel.window {
                    let fill = Color32::from_rgba_unmultiplied(0, 200, 255, 90);
                    for &p in window {
                        let (y, x) = ((p / shape.w) as f32, (p % shape.w) as f32);
                        let r = Rect::from_min_size(img_rect.min + vec2(x, y) * scale, Vec2::splat(scale));
                        painter.rect_filled(r, 0.0, fill);
                    }
                }
                if let Some(((fy, fx), (ty, tx))) = panel.arrow {
                    let at = |y: usize, x: usize| img_rect.min + vec2(x as f32 + 0.5, y as f32 + 0.5) * scale;
                    let (from, to) = (at(fy, fx), at(ty, tx));
                    let stroke = Stroke::new(2.0, Color32::from_rgb(255, 80, 80));
                    if from == to {
                        painter.circle_stroke(to, (scale * 0.4).max(3.0), stroke);
                    } else {
                        painter.arrow(from, to - from, stroke);
                    }
                }
                // zoom about the pointer, pan by dragging
                if response.hovered() {
                    let scroll = ui.input(|i| i.smooth_scroll_delta.y);
                    if scroll != 0.0 {
                        let factor = (scroll / 200.0).exp();
                        let new_zoom = (state.zoom * factor).clamp(0.5, 64.0);
                        if let Some(p) = response.hover_pos() {
                            // keep the image point under the pointer fixed
                            let before = (p - centre) / scale;
                            let new_scale = fit * new_zoom;
                            state.pan = (p - rect.center()) / new_scale - before;
                        }
                        state.zoom = new_zoom;
                    }
                }
                if response.dragged() {
                    state.pan += response.drag_delta() / scale;
                }
                if response.double_clicked() {
                    *state = CanvasState::default();
                }
                if let Some(p) = response.hover_pos() {
                    let local = (p - img_rect.min) / scale;
                    if local.x >= 0.0 && local.y >= 0.0 && (local.x as usize) < shape.w && (local.y as usize) < shape.h
                    {
                        let (y, x) = (local.y as usize, local.x as usize);
                        out.hovered = Some((y, x));
                        if let Some(v) = panel.values {
                            let hw = shape.pixels();
                            let vals: Vec<String> =
                                (0..shape.c).map(|c| format!("{:+.3}", v[c * hw + y * shape.w + x])).collect();
                            hover_text = Some(format!("{}  ({x}, {y}) = {}", panel.title, vals.join(" ")));
                        }
                        if response.clicked() && !response.dragged() {
                            out.clicked = Some((y, x));
                        }
                    }
                }
            });
        }
    });
    ui.label(hover_text.unwrap_or_else(|| "Hover a pixel to read it; click to see which training patches made it. Scroll zooms, drag pans, double-click resets.".into()));
    out
}
