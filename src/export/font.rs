//! A 3×5 pixel font for contact-sheet labels ("12  t=0.40"), so labels need no font files.

use image::{Rgba, RgbaImage};

fn glyph(ch: char) -> Option<[u8; 5]> {
    // Each row is 3 bits, most significant = left.
    Some(match ch {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        '.' => [0, 0, 0, 0, 2],
        '=' => [0, 7, 0, 7, 0],
        't' => [2, 7, 2, 2, 3],
        'P' => [6, 5, 6, 4, 4],
        '#' => [5, 7, 5, 7, 5],
        ' ' => [0, 0, 0, 0, 0],
        _ => return None,
    })
}

/// Width in pixels of `text` at `size` pixels per font pixel.
pub fn text_width(text: &str, size: u32) -> u32 {
    (text.chars().count() as u32 * 4).saturating_sub(1) * size
}

/// Draws `text` with its top-left corner at (x, y).
pub fn draw_text(img: &mut RgbaImage, text: &str, x: u32, y: u32, size: u32, colour: Rgba<u8>) {
    for (k, ch) in text.chars().enumerate() {
        let Some(rows) = glyph(ch) else { continue };
        for (ry, bits) in rows.iter().enumerate() {
            for rx in 0..3 {
                if bits & (4 >> rx) != 0 {
                    for dy in 0..size {
                        for dx in 0..size {
                            let px = x + (k as u32 * 4 + rx) * size + dx;
                            let py = y + ry as u32 * size + dy;
                            if px < img.width() && py < img.height() {
                                img.put_pixel(px, py, colour);
                            }
                        }
                    }
                }
            }
        }
    }
}
