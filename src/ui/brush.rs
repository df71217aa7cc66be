//! The brush: painting locality onto the canvas and wounds onto x_t, with undo and redo.
//!
//! A stroke is drawn by the canvas without touching the settings; when the mouse is let go it
//! becomes one change of the settings (a locality map, or one more [`Edit`] at the scrubbed
//! step), so painting never blocks the UI and each stroke restarts or branches the run once.

use crate::engine::{Edit, EditOp, ImageShape, LocalityMap, Mask};

pub use super::brush_settings::{BrushSettings, GLOBAL_FACTOR, LOCAL_FACTOR, Tool};
use super::settings::Settings;

/// The pixels a stroke covers: a disc of `radius` around each of its points.
pub fn stroke_mask(h: usize, w: usize, points: &[(usize, usize)], radius: u32) -> Vec<bool> {
    let mut bits = vec![false; h * w];
    let r = radius as isize;
    for &(y, x) in points {
        for dy in -r..=r {
            for dx in -r..=r {
                let (yy, xx) = (y as isize + dy, x as isize + dx);
                if dy * dy + dx * dx <= r * r + r / 2 && yy >= 0 && xx >= 0 && (yy as usize) < h && (xx as usize) < w {
                    bits[yy as usize * w + xx as usize] = true;
                }
            }
        }
    }
    bits
}

/// What the painted part of the settings was before a stroke: undo restores it.
#[derive(Clone, Debug, PartialEq)]
pub struct Paint {
    pub locality_map: Option<LocalityMap>,
    pub edits: Vec<Edit>,
}

impl Paint {
    fn of(s: &Settings) -> Self {
        Self { locality_map: s.locality_map.clone(), edits: s.edits.clone() }
    }
    fn put(self, s: &mut Settings) {
        s.locality_map = self.locality_map;
        s.edits = self.edits;
    }
}

/// Undo and redo of strokes.
#[derive(Default)]
pub struct PaintHistory {
    undo: Vec<Paint>,
    redo: Vec<Paint>,
}

/// A finished stroke and where it was painted.
pub struct Stroke {
    pub points: Vec<(usize, usize)>,
    /// Painted with the secondary button: erases the locality map there.
    pub erase: bool,
    /// The scrubbed step an x_t stroke wounds.
    pub step: usize,
    /// The training image a stamp copies (the inspector's top vote, when there is one).
    pub stamp_image: Option<usize>,
}

impl PaintHistory {
    pub fn can_undo(&self) -> bool {
        !self.undo.is_empty()
    }
    pub fn can_redo(&self) -> bool {
        !self.redo.is_empty()
    }

    /// Applies `stroke` to the settings (on a canvas of `canvas`'s shape over training images of
    /// `train`'s shape); false when it changed nothing.
    pub fn apply(&mut self, s: &mut Settings, stroke: &Stroke, canvas: ImageShape, train: ImageShape) -> bool {
        let before = Paint::of(s);
        let bits = stroke_mask(canvas.h, canvas.w, &stroke.points, s.brush.radius);
        if !bits.contains(&true) {
            return false;
        }
        let tool = s.brush.tool;
        if tool.paints_map() || stroke.erase {
            let mut map = s.locality_map.clone().unwrap_or_else(|| LocalityMap::uniform(canvas.h, canvas.w));
            let value = match (stroke.erase, tool) {
                (true, _) => 1.0,
                (false, Tool::Local) => LOCAL_FACTOR,
                _ => GLOBAL_FACTOR,
            };
            for (v, _) in map.values.iter_mut().zip(&bits).filter(|(_, b)| **b) {
                *v = value;
            }
            s.locality_map = (!map.values.iter().all(|&v| v == 1.0)).then_some(map);
        } else {
            let seed = s.seed.wrapping_mul(31).wrapping_add(s.edits.len() as u64 + 1);
            let op = match tool {
                Tool::Noise => EditOp::Noise { seed },
                Tool::Ink => EditOp::Set { value: 1.0 },
                Tool::Background => EditOp::Set { value: -1.0 },
                _ => {
                    // Centre the training image on the stroke's first point.
                    let (y0, x0) = stroke.points[0];
                    EditOp::Stamp {
                        image: stroke.stamp_image.unwrap_or(s.brush.stamp_image),
                        row: y0 as i64 - (train.h / 2) as i64,
                        col: x0 as i64 - (train.w / 2) as i64,
                        seed,
                    }
                }
            };
            s.edits.push(Edit { step: stroke.step, op, mask: Mask::from_bits(canvas.h, canvas.w, &bits) });
        }
        if Paint::of(s) == before {
            return false;
        }
        self.undo.push(before);
        self.redo.clear();
        true
    }

    /// Ctrl+Z: the painted part as it was before the last stroke.
    pub fn undo(&mut self, s: &mut Settings) -> bool {
        let Some(prev) = self.undo.pop() else { return false };
        self.redo.push(Paint::of(s));
        prev.put(s);
        true
    }

    /// Ctrl+Shift+Z: the stroke undone last, again.
    pub fn redo(&mut self, s: &mut Settings) -> bool {
        let Some(next) = self.redo.pop() else { return false };
        self.undo.push(Paint::of(s));
        next.put(s);
        true
    }

    /// Forgets every stroke (a new dataset or canvas).
    pub fn clear(&mut self) {
        self.undo.clear();
        self.redo.clear();
    }
}

/// The RGBA overlay of a locality map: blue where local (m < 1), orange where global, clear at 1.
pub fn overlay_image(map: &LocalityMap) -> egui::ColorImage {
    let pixels = map
        .values
        .iter()
        .map(|&m| {
            if m < 1.0 {
                egui::Color32::from_rgba_unmultiplied(40, 140, 255, 110)
            } else if m > 1.0 {
                egui::Color32::from_rgba_unmultiplied(255, 150, 30, 110)
            } else {
                egui::Color32::TRANSPARENT
            }
        })
        .collect();
    egui::ColorImage::new([map.w, map.h], pixels)
}

/// The union of every edit's mask: the wound the healing plot measures inside.
pub fn wound(edits: &[Edit], h: usize, w: usize) -> Option<Vec<bool>> {
    let mut bits = vec![false; h * w];
    for e in edits {
        for (b, m) in bits.iter_mut().zip(e.mask.bits(h, w).ok()?) {
            *b |= m;
        }
    }
    bits.contains(&true).then_some(bits)
}

/// RMS of a − b over the pixels `inside` marks (or the others), per channel plane of `hw`.
pub fn rms_split(a: &[f32], b: &[f32], inside: &[bool], want_inside: bool) -> f64 {
    let hw = inside.len();
    let (mut sum, mut n) = (0f64, 0usize);
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        if inside[i % hw] == want_inside {
            sum += (x as f64 - y as f64).powi(2);
            n += 1;
        }
    }
    if n == 0 { 0.0 } else { (sum / n as f64).sqrt() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(h: usize, w: usize) -> ImageShape {
        ImageShape { c: 1, h, w }
    }

    #[test]
    fn strokes_paint_undo_and_redo() {
        let mut s = Settings::default();
        let mut h = PaintHistory::default();
        let canvas = shape(8, 8);
        s.brush.radius = 1;
        s.brush.tool = Tool::Local;
        let stroke = Stroke { points: vec![(4, 4)], erase: false, step: 3, stamp_image: None };
        assert!(h.apply(&mut s, &stroke, canvas, canvas));
        let map = s.locality_map.clone().unwrap();
        assert_eq!(map.values.iter().filter(|&&v| v == LOCAL_FACTOR).count(), 5, "a plus of radius 1");
        s.brush.tool = Tool::Ink;
        assert!(h.apply(&mut s, &stroke, canvas, canvas));
        assert_eq!(s.edits.len(), 1);
        assert_eq!((s.edits[0].step, &s.edits[0].op), (3, &EditOp::Set { value: 1.0 }));
        assert!(h.undo(&mut s));
        assert!(s.edits.is_empty() && s.locality_map.is_some());
        assert!(h.undo(&mut s));
        assert!(s.locality_map.is_none());
        assert!(!h.undo(&mut s));
        assert!(h.redo(&mut s) && h.redo(&mut s));
        assert_eq!(s.edits.len(), 1);
        // Erasing the whole map back to 1 leaves no map at all.
        let erase = Stroke { points: vec![(4, 4)], erase: true, step: 0, stamp_image: None };
        s.brush.tool = Tool::Global;
        assert!(h.apply(&mut s, &erase, canvas, canvas));
        assert!(s.locality_map.is_none());
    }

    #[test]
    fn wounds_and_their_rms_split() {
        let bits = stroke_mask(4, 4, &[(0, 0)], 0);
        assert_eq!(bits.iter().filter(|&&b| b).count(), 1);
        let e = Edit { step: 0, op: EditOp::Noise { seed: 0 }, mask: Mask::from_bits(4, 4, &bits) };
        let w = wound(&[e], 4, 4).unwrap();
        let a = vec![1.0f32; 16];
        let mut b = vec![1.0f32; 16];
        b[0] = 0.0;
        assert_eq!(rms_split(&a, &b, &w, true), 1.0);
        assert_eq!(rms_split(&a, &b, &w, false), 0.0);
        assert!(wound(&[], 4, 4).is_none());
    }
}
