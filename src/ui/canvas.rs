//! The canvas: x_t, x̂₀ and |Δx̂₀| side by side, crisp (nearest-neighbour), each image as
//! large as its panel allows (square pixels), with shared zoom and pan, a pixel grid at high
//! zoom, a hover readout and click-to-inspect. Any panel can be enlarged to the whole area
//! (double-click, or F over it; Esc or double-click again to return), and with the brush on,
//! dragging on a paintable panel paints a stroke (right-drag: the eraser) instead of panning.

use egui::{Color32, Rect, Sense, Stroke, TextureHandle, Ui, Vec2, pos2, vec2};

use crate::engine::ImageShape;

/// Zoom and pan shared by all panels, which panel is enlarged, and the stroke being painted.
#[derive(Clone, Debug, PartialEq)]
pub struct CanvasState {
    /// Extra zoom on top of fit-to-panel (1 = fit).
    pub zoom: f32,
    /// Offset of the image centre from the panel centre, in image pixels.
    pub pan: Vec2,
    /// The panel (by title) shown alone over the whole canvas area.
    pub enlarged: Option<String>,
    /// The stroke in progress: its pixels (y, x), and whether it is the eraser's.
    pub stroke: Vec<(usize, usize)>,
    pub stroke_erase: bool,
    /// The panel under the pointer last frame (for the F key).
    pub hovered_panel: Option<String>,
}

impl Default for CanvasState {
    fn default() -> Self {
        Self {
            zoom: 1.0,
            pan: Vec2::ZERO,
            enlarged: None,
            stroke: Vec::new(),
            stroke_erase: false,
            hovered_panel: None,
        }
    }
}

impl CanvasState {
    /// Enlarges the panel titled `title`, or returns to all panels when it already is.
    pub fn toggle_enlarged(&mut self, title: &str) {
        self.enlarged = if self.enlarged.as_deref() == Some(title) { None } else { Some(title.to_string()) };
        self.zoom = 1.0;
        self.pan = Vec2::ZERO;
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
    /// The brush paints on this panel.
    pub paintable: bool,
    /// Drawn over the image (the locality map).
    pub overlay: Option<&'a TextureHandle>,
}

impl<'a> Panel<'a> {
    /// A plain image panel: no readout, arrow, window, brush or overlay.
    pub fn image(title: &'a str, texture: &'a TextureHandle, tint: Color32) -> Self {
        Self { title, texture, values: None, tint, arrow: None, window: None, paintable: false, overlay: None }
    }
}

#[derive(Default)]
pub struct CanvasOutput {
    pub hovered: Option<(usize, usize)>,
    pub clicked: Option<(usize, usize)>,
    /// A stroke the user just finished: its pixels, and whether it was the eraser's.
    pub stroke: Option<(Vec<(usize, usize)>, bool)>,
}

/// Keeps at least this many screen pixels of the image inside its panel when panning.
const MIN_VISIBLE: f32 = 24.0;

/// `pan` (image pixels) limited so that the image, `size` on screen at `scale`, keeps
/// [`MIN_VISIBLE`] pixels inside a panel of `panel` size on each axis.
fn clamp_pan(pan: Vec2, panel: Vec2, size: Vec2, scale: f32) -> Vec2 {
    let limit = |p: f32, s: f32| ((p + s) / 2.0 - MIN_VISIBLE.min(s / 2.0)).max(0.0) / scale;
    let (lx, ly) = (limit(panel.x, size.x), limit(panel.y, size.y));
    vec2(pan.x.clamp(-lx, lx), pan.y.clamp(-ly, ly))
}

/// Title line of a panel (one line of strong text).
const TITLE_H: f32 = 18.0;

/// The grid of `n` panels in `room` that shows the images largest (square pixels): how many
/// columns, and each panel's image area (width, height). Five panels in one row are tall
/// narrow strips with the image in a third of each; two rows of three give every image more.
fn panel_grid(n: usize, room: Vec2, shape: ImageShape, gap: f32) -> (usize, f32, f32) {
    let n = n.max(1);
    (1..=n)
        .map(|rows| {
            let cols = n.div_ceil(rows);
            let w = ((room.x - gap * (cols - 1) as f32) / cols as f32).max(32.0);
            let h = ((room.y - gap * (rows - 1) as f32) / rows as f32 - TITLE_H).max(32.0);
            (cols, w, h)
        })
        .max_by(|a, b| {
            let fit = |(_, w, h): &(usize, f32, f32)| (w / shape.w as f32).min(h / shape.h as f32);
            // On a tie, fewer rows.
            fit(a).total_cmp(&fit(b)).then(a.0.cmp(&b.0))
        })
        .expect("at least one layout")
}

/// Draws `panels` filling the available space, leaving `footer_lines` lines below them.
/// `brush`: the brush's radius in pixels when painting is on.
#[allow(clippy::too_many_arguments)]
pub fn show(
    ui: &mut Ui,
    state: &mut CanvasState,
    shape: ImageShape,
    panels: &[Panel],
    grid: bool,
    marker: Option<(usize, usize)>,
    footer_lines: usize,
    brush: Option<u32>,
) -> CanvasOutput {
    let mut out = CanvasOutput::default();
    if state.enlarged.as_ref().is_some_and(|t| !panels.iter().any(|p| p.title == t)) {
        state.enlarged = None;
    }
    let panels: Vec<&Panel> = match &state.enlarged {
        Some(t) => panels.iter().filter(|p| p.title == t).collect(),
        None => panels.iter().collect(),
    };
    let avail = ui.available_size();
    let gap = 8.0;
    // Room under the panels for the hover line and `footer_lines` more (a map's legend).
    let height = avail.y - 24.0 * (1 + footer_lines) as f32;
    let (cols, panel_w, panel_h) = panel_grid(panels.len(), vec2(avail.x, height), shape, gap);
    let fit = (panel_w / shape.w as f32).min(panel_h / shape.h as f32).max(0.1);
    let scale = fit * state.zoom;
    let mut hover_text = None;
    for (r, row) in panels.chunks(cols).enumerate() {
        if r > 0 {
            ui.add_space(gap);
        }
        ui.horizontal(|ui| {
            for (i, panel) in row.iter().enumerate() {
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
                    let uv = Rect::from_min_max(pos2(0.0, 0.0), pos2(1.0, 1.0));
                    painter.image(panel.texture.id(), img_rect, uv, panel.tint);
                    if let Some(overlay) = panel.overlay {
                        painter.image(overlay.id(), img_rect, uv, Color32::WHITE);
                    }
                    let painting = brush.is_some() && panel.paintable;
                    if painting && !state.stroke.is_empty() {
                        let radius = brush.unwrap_or(0) as f32;
                        let fill = if state.stroke_erase {
                            Color32::from_rgba_unmultiplied(255, 255, 255, 60)
                        } else {
                            Color32::from_rgba_unmultiplied(255, 60, 200, 90)
                        };
                        for &(y, x) in &state.stroke {
                            let c = img_rect.min + vec2(x as f32 + 0.5, y as f32 + 0.5) * scale;
                            painter.circle_filled(c, (radius + 0.5) * scale, fill);
                        }
                    }
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
                        let r =
                            Rect::from_min_size(img_rect.min + vec2(mx as f32, my as f32) * scale, Vec2::splat(scale));
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
                    if painting && response.dragged() {
                        // Paint: every pixel the pointer crosses joins the stroke (drawn above, no
                        // compute until the button is let go).
                        if let Some(p) = response.interact_pointer_pos() {
                            let local = (p - img_rect.min) / scale;
                            if local.x >= 0.0 && local.y >= 0.0 && local.x < shape.w as f32 && local.y < shape.h as f32
                            {
                                let px = (local.y as usize, local.x as usize);
                                if state.stroke.last() != Some(&px) {
                                    state.stroke.push(px);
                                }
                            }
                        }
                        state.stroke_erase = response.dragged_by(egui::PointerButton::Secondary);
                    } else if response.dragged() {
                        state.pan += response.drag_delta() / scale;
                        // A stray drag cannot push the image out of sight: some of it stays in
                        // the panel (and Reset view brings it back).
                        state.pan = clamp_pan(state.pan, vec2(panel_w, panel_h), size, scale);
                    }
                    if painting && response.drag_stopped() && !state.stroke.is_empty() {
                        out.stroke = Some((std::mem::take(&mut state.stroke), state.stroke_erase));
                    }
                    if response.double_clicked() {
                        state.toggle_enlarged(panel.title);
                    }
                    if response.hovered() {
                        state.hovered_panel = Some(panel.title.to_string());
                    }
                    if let Some(p) = response.hover_pos() {
                        let local = (p - img_rect.min) / scale;
                        if local.x >= 0.0
                            && local.y >= 0.0
                            && (local.x as usize) < shape.w
                            && (local.y as usize) < shape.h
                        {
                            let (y, x) = (local.y as usize, local.x as usize);
                            out.hovered = Some((y, x));
                            if let Some(v) = panel.values {
                                let hw = shape.pixels();
                                let vals: Vec<String> =
                                    (0..shape.c).map(|c| format!("{:+.3}", v[c * hw + y * shape.w + x])).collect();
                                hover_text = Some(format!("{}  ({x}, {y}) = {}", panel.title, vals.join(" ")));
                            }
                            if response.clicked() && !response.dragged() && !painting {
                                out.clicked = Some((y, x));
                            }
                        }
                    }
                });
            }
        });
    }
    let hint = if brush.is_some() {
        "Brush on: drag on x_t (or the locality overlay) to paint, right-drag erases the map. Scroll zooms; double-click or F enlarges a panel, Esc returns."
    } else {
        "Hover a pixel to read it; click to see which training patches made it. Scroll zooms, drag pans; double-click or F enlarges a panel, Esc returns."
    };
    ui.horizontal_wrapped(|ui| {
        if state.zoom != 1.0 || state.pan != Vec2::ZERO {
            let view = format!("zoom ×{:.1}, moved", state.zoom);
            if ui.small_button("Reset view").on_hover_text(format!("{view}: back to fit (key 0)")).clicked() {
                (state.zoom, state.pan) = (1.0, Vec2::ZERO);
            }
        }
        ui.label(hover_text.unwrap_or_else(|| hint.into()));
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panels_wrap_into_rows_when_that_shows_the_images_larger() {
        let digit = ImageShape { c: 1, h: 28, w: 28 };
        // The studio's canvas area with five panels: two rows of three beat one row of five.
        let (cols, w, h) = panel_grid(5, vec2(700.0, 420.0), digit, 8.0);
        assert_eq!(cols, 3);
        assert!(w.min(h) > 700.0 / 5.0, "each image wider than a fifth of the area: {w}×{h}");
        // A wide, low area keeps one row; one panel fills the area.
        assert_eq!(panel_grid(3, vec2(1200.0, 300.0), digit, 8.0).0, 3);
        let (cols, w, h) = panel_grid(1, vec2(700.0, 420.0), digit, 8.0);
        assert_eq!((cols, w, h), (1, 700.0, 420.0 - TITLE_H));
    }

    #[test]
    fn a_stray_drag_cannot_pan_the_image_out_of_sight() {
        // A 200 px image in a 300 px panel at 4 screen px per image px.
        let (panel, size, scale) = (vec2(300.0, 300.0), vec2(200.0, 200.0), 4.0);
        let far = clamp_pan(vec2(1e4, -1e4), panel, size, scale);
        // The image centre is at most (300 + 200)/2 − 24 = 226 px from the panel centre.
        assert_eq!(far, vec2(226.0 / 4.0, -226.0 / 4.0));
        let near = vec2(3.0, -2.0);
        assert_eq!(clamp_pan(near, panel, size, scale), near, "small pans are left alone");
    }
}
