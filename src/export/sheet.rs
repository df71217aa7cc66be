//! Contact sheets: a labelled grid of chosen steps in one PNG, for papers and slides.

use image::{Rgba, RgbaImage};

use super::font::{draw_text, label_px, text_width};
use super::frame::GAP_COLOUR;

/// `count` step indices spread evenly over `first..=last`, always including both ends
/// (all of them when `count` is 0 or covers the range).
pub fn evenly_spaced(first: usize, last: usize, count: usize) -> Vec<usize> {
    let n = last - first + 1;
    if count == 0 || count >= n {
        return (first..=last).collect();
    }
    if count == 1 {
        return vec![last];
    }
    let mut out: Vec<usize> = (0..count).map(|i| first + (i * (n - 1) + (count - 1) / 2) / (count - 1)).collect();
    out.dedup();
    out
}

/// Where a sheet puts things, for tiles of tw × th pixels.
struct Layout {
    /// Label text size (font pixels per dot).
    size: u32,
    label_h: u32,
    pad: u32,
    cell_w: u32,
    cell_h: u32,
}

impl Layout {
    fn of(tw: u32, th: u32) -> Self {
        // Label size grows with the tile so it stays readable at any scale.
        let size = (tw / 40).clamp(1, 4);
        let label_h = 5 * size + 4 * size.max(1);
        let pad = 2 * size.max(2);
        Self { size, label_h, pad, cell_w: tw + pad, cell_h: th + label_h + pad }
    }
}

/// The (width, height) of a sheet of `n` tiles of tw × th in `cols` columns, before drawing it
/// (to choose a scale that fits).
pub fn sheet_size(tw: u32, th: u32, n: usize, cols: usize) -> (u32, u32) {
    let l = Layout::of(tw, th);
    let cols = cols.clamp(1, n.max(1)) as u64;
    let rows = (n.max(1) as u64).div_ceil(cols);
    let side = |k: u64, cell: u32| (k * u64::from(cell) + u64::from(l.pad)).min(u64::from(u32::MAX)) as u32;
    (side(cols, l.cell_w), side(rows, l.cell_h))
}

/// Lays `tiles` out in a grid (at most 8 columns) with a label strip above each.
pub fn contact_sheet(tiles: &[(RgbaImage, String)]) -> RgbaImage {
    contact_sheet_with_columns(tiles, tiles.len().clamp(1, 8))
}

/// [`contact_sheet`] with `cols` columns (a seed grid keeps its own shape).
pub fn contact_sheet_with_columns(tiles: &[(RgbaImage, String)], cols: usize) -> RgbaImage {
    let Some((first, _)) = tiles.first() else {
        return RgbaImage::new(1, 1);
    };
    let (tw, th) = (first.width(), first.height());
    let cols = cols.clamp(1, tiles.len()) as u32;
    let Layout { size, label_h, pad, cell_w, cell_h } = Layout::of(tw, th);
    let (w, h) = sheet_size(tw, th, tiles.len(), cols as usize);
    let mut sheet = RgbaImage::from_pixel(w, h, GAP_COLOUR);
    for (k, (tile, label)) in tiles.iter().enumerate() {
        let (cx, cy) = ((k as u32 % cols) * cell_w + pad, (k as u32 / cols) * cell_h + pad);
        // A label wider than its tile ("PCA-locality · seed 12" over a 28-pixel digit) is set
        // smaller until it fits, so neighbours' labels never run into each other.
        let full = label_px(size);
        let px = match text_width(label, full) {
            w if w > tw => full * tw as f32 / w as f32,
            _ => full,
        };
        let text_x = cx + tw.saturating_sub(text_width(label, px)) / 2;
        draw_text(&mut sheet, label, text_x, cy + size, px, Rgba([230, 230, 230, 255]));
        image::imageops::replace(&mut sheet, tile, cx as i64, (cy + label_h) as i64);
    }
    sheet
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Long labels over narrow tiles are set smaller: no label ink crosses into the gap
    /// between two tiles, and each label still puts light down.
    #[test]
    fn labels_stay_over_their_own_tile() {
        let tile = RgbaImage::from_pixel(28, 28, Rgba([0, 0, 0, 255]));
        let labels = ["PCA-locality · seed 12", "PSPC-Square · seed 12", "seed 3"];
        let tiles: Vec<_> = labels.iter().map(|l| (tile.clone(), l.to_string())).collect();
        let sheet = contact_sheet_with_columns(&tiles, 3);
        assert_eq!((sheet.width(), sheet.height()), sheet_size(28, 28, 3, 3));
        let l = Layout::of(28, 28);
        for k in 0..3u32 {
            let cx = k * l.cell_w + l.pad;
            // The label strip: rows pad .. pad + label_h.
            let lit = |x0: u32, x1: u32| {
                (x0..x1)
                    .flat_map(|x| (l.pad..l.pad + l.label_h).map(move |y| (x, y)))
                    .filter(|&(x, y)| sheet.get_pixel(x, y) != &GAP_COLOUR)
                    .count()
            };
            assert!(lit(cx, cx + 28) > 0, "label {k} drew nothing");
            if k < 2 {
                assert_eq!(lit(cx + 28, cx + l.cell_w), 0, "label {k} runs into the gap after its tile");
            }
            if k > 0 {
                assert_eq!(lit(cx - l.pad, cx), 0, "label {k} runs into the gap before its tile");
            }
        }
    }
}
