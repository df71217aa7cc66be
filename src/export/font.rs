//! Sheet labels ("12  t=0.40", "seed 7", "ELS · seed 3") in egui's bundled Ubuntu Light
//! through ab_glyph, so labels need no font files and every character reads. (A 3×5 pixel
//! font drew only digits and a few signs: "seed 7" came out as a lone "7".)

use std::sync::OnceLock;

use ab_glyph::{Font, FontRef, PxScale, ScaleFont, point};
use image::{Rgba, RgbaImage};

fn font() -> &'static FontRef<'static> {
    static FONT: OnceLock<FontRef<'static>> = OnceLock::new();
    FONT.get_or_init(|| {
        FontRef::try_from_slice(epaint_default_fonts::UBUNTU_LIGHT).expect("egui's bundled font parses")
    })
}

/// The text height, ascent to descent, for label size `size`: 8·size pixels fills a label
/// strip of 9·size drawn from one `size` down (see `sheet`).
pub fn label_px(size: u32) -> f32 {
    8.0 * size.max(1) as f32
}

/// Width in pixels of `text`, `px` high.
pub fn text_width(text: &str, px: f32) -> u32 {
    let f = font().as_scaled(PxScale::from(px));
    let mut width = 0.0;
    let mut prev = None;
    for ch in text.chars() {
        let id = f.glyph_id(ch);
        if let Some(p) = prev {
            width += f.kern(p, id);
        }
        width += f.h_advance(id);
        prev = Some(id);
    }
    width.ceil() as u32
}

/// Each pixel `text` covers, `px` high with its baseline at `baseline` and its caret starting
/// at 0: (x, y, coverage in 0..=1), each glyph at its caret plus its own side bearing.
pub fn glyph_coverage(text: &str, px: f32, baseline: f32, mut pixel: impl FnMut(i32, i32, f32)) {
    let scale = PxScale::from(px);
    let f = font().as_scaled(scale);
    let mut caret = 0.0;
    let mut prev = None;
    for ch in text.chars() {
        let id = f.glyph_id(ch);
        if let Some(p) = prev {
            caret += f.kern(p, id);
        }
        prev = Some(id);
        let glyph = id.with_scale_and_position(scale, point(caret, baseline));
        caret += f.h_advance(id);
        let Some(outline) = font().outline_glyph(glyph) else { continue };
        let bounds = outline.px_bounds();
        outline.draw(|gx, gy, c| pixel(bounds.min.x as i32 + gx as i32, bounds.min.y as i32 + gy as i32, c));
    }
}

/// Draws `text`, `px` high, with the top-left corner of its line at (x, y), blended over what
/// is there.
pub fn draw_text(img: &mut RgbaImage, text: &str, x: u32, y: u32, px: f32, colour: Rgba<u8>) {
    let baseline = font().as_scaled(PxScale::from(px)).ascent();
    glyph_coverage(text, px, baseline, |gx, gy, coverage| {
        let (px, py) = (x as i64 + gx as i64, y as i64 + gy as i64);
        if px < 0 || py < 0 || px >= img.width() as i64 || py >= img.height() as i64 {
            return;
        }
        let under = img.get_pixel_mut(px as u32, py as u32);
        let a = coverage.clamp(0.0, 1.0);
        for k in 0..3 {
            under[k] = (colour[k] as f32 * a + under[k] as f32 * (1.0 - a)).round() as u8;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Light put down by `text` drawn at size 2 on black.
    fn ink(text: &str) -> u64 {
        let mut img = RgbaImage::from_pixel(text_width(text, 16.0) + 4, 24, Rgba([0, 0, 0, 255]));
        draw_text(&mut img, text, 2, 2, 16.0, Rgba([255, 255, 255, 255]));
        img.pixels().map(|p| p[0] as u64).sum()
    }

    /// Every character the seed grid, the zoo and the step labels write leaves ink, and a
    /// whole label leaves about the sum of its characters' (nothing dropped).
    #[test]
    fn every_label_character_draws() {
        for text in ["seed 17", "Ideal · seed 3", "PCA-locality", "12  t=0.40", "P=7 #3"] {
            let mut each = 0;
            for ch in text.chars().filter(|c| *c != ' ') {
                let i = ink(&ch.to_string());
                assert!(i > 255, "'{ch}' of '{text}' drew nothing ({i})");
                each += i;
            }
            let whole = ink(text);
            assert!(whole * 10 > each * 9 && whole * 10 < each * 11, "'{text}': {whole} against {each} by character");
            assert!(text_width(text, 16.0) > 4 * text.chars().count() as u32, "'{text}' is too narrow");
        }
    }
}
