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
    let rows = (tiles.len() as u32).div_ceil(cols);
    // Label size grows with the tile so it stays readable at any scale.
    let size = (tw / 40).clamp(1, 4);
    let label_h = 5 * size + 4 * size.max(1);
    let pad = 2 * size.max(2);
    let (cell_w, cell_h) = (tw + pad, th + label_h + pad);
    let mut sheet = RgbaImage::from_pixel(cols * cell_w + pad, rows * cell_h + pad, GAP_COLOUR);
    for (k, (tile, label)) in tiles.iter().enumerate() {
        let (cx, cy) = ((k as u32 % cols) * cell_w + pad, (k as u32 / cols) * cell_h + pad);
        let text_x = cx + tw.saturating_sub(text_width(label, size)) / 2;
        draw_text(&mut sheet, label, text_x, cy + size, size, Rgba([230, 230, 230, 255]));
        image::imageops::replace(&mut sheet, tile, cx as i64, (cy + label_h) as i64);
    }
    sheet
}
