//! Contact sheets: a labelled grid of chosen steps in one PNG, for papers and slides.

use image::{Rgba, RgbaImage};

use super::font::{draw_text, text_width};
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
        let text_x = cx + tw.saturating_sub(text_width(label, size)) / 2;
        draw_text(&mut sheet, label, text_x, cy + size, size, Rgba([230, 230, 230, 255]));
        image::imageops::replace(&mut sheet, tile, cx as i64, (cy + label_h) as i64);
    }
    sheet
}
