//! Images as egui textures: a flat [C, H, W] image in [−1, 1] to a `ColorImage`.

use egui::ColorImage;

use crate::engine::ImageShape;
use crate::export::frame::to_byte;

/// Converts [C, H, W] in [−1, 1] to an egui image.
pub fn color_image(img: &[f32], shape: ImageShape) -> ColorImage {
    let hw = shape.pixels();
    let pixels = (0..hw)
        .map(|i| {
            if shape.c == 1 {
                let g = to_byte(img[i]);
                egui::Color32::from_gray(g)
            } else {
                egui::Color32::from_rgb(to_byte(img[i]), to_byte(img[hw + i]), to_byte(img[2 * hw + i]))
            }
        })
        .collect();
    ColorImage::new([shape.w, shape.h], pixels)
}
