//! Turning [C, H, W] images in [−1, 1] into crisp, integer-scaled RGBA frames.

use image::{Rgba, RgbaImage};

use crate::engine::ImageShape;

/// Background between panels and around labels.
pub const GAP_COLOUR: Rgba<u8> = Rgba([32, 32, 36, 255]);

/// One value in [−1, 1] as a byte.
pub fn to_byte(v: f32) -> u8 {
    ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8
}

/// Renders an image scaled up `scale`× with nearest neighbour (every pixel a crisp block).
pub fn render(img: &[f32], shape: ImageShape, scale: u32) -> RgbaImage {
    let scale = scale.max(1);
    let (w, h) = (shape.w as u32, shape.h as u32);
    let hw = shape.pixels();
    RgbaImage::from_fn(w * scale, h * scale, |x, y| {
        let i = ((y / scale) * w + x / scale) as usize;
        if shape.c == 1 {
            let g = to_byte(img[i]);
            Rgba([g, g, g, 255])
        } else {
            Rgba([to_byte(img[i]), to_byte(img[hw + i]), to_byte(img[2 * hw + i]), 255])
        }
    })
}

/// Places panels left to right with a gap of `gap` pixels.
pub fn side_by_side(panels: &[RgbaImage], gap: u32) -> RgbaImage {
    let w: u32 = panels.iter().map(|p| p.width()).sum::<u32>() + gap * panels.len().saturating_sub(1) as u32;
    let h = panels.iter().map(|p| p.height()).max().unwrap_or(0);
    let mut out = RgbaImage::from_pixel(w, h, GAP_COLOUR);
    let mut x = 0;
    for p in panels {
        image::imageops::replace(&mut out, p, x as i64, 0);
        x += p.width() + gap;
    }
    out
}

/// PNG bytes of an RGBA image.
pub fn encode_png(img: &RgbaImage) -> Vec<u8> {
    let mut bytes = Vec::new();
    image::DynamicImage::ImageRgba8(img.clone())
        .write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)
        .expect("PNG encoding to memory cannot fail");
    bytes
}
