//! From decoded images to a training set: class filter, seeded subset, common size, colour.

use std::collections::HashMap;

use image::{ImageBuffer, Luma, imageops};

use super::{ColorMode, DataError, Dataset, DatasetSource, LoadOptions, MAX_SIDE, RawImage, RawSet};
use crate::engine::ImageShape;
use crate::engine::sampling::noise::splitmix;

pub(crate) fn apply(raw: RawSet, source: DatasetSource, options: &LoadOptions) -> Result<Dataset, DataError> {
    let RawSet { mut images, mut report, origin } = raw;
    report.total = images.len();
    let all_classes = distinct(images.iter().map(|i| i.label.as_str()));

    if let Some(class) = options.class.as_deref().filter(|c| !c.is_empty()) {
        let classes = &all_classes;
        images.retain(|img| img.label == class);
        if images.is_empty() {
            return Err(DataError::new(
                &origin,
                format!(
                    "no image has class '{class}'; classes here: {}",
                    if classes.is_empty() {
                        "(none: file names have no LABEL_ prefix)".into()
                    } else {
                        classes.join(", ")
                    }
                ),
            ));
        }
    }

    if let Some(n) = options.subset.filter(|&n| n > 0 && n < images.len()) {
        // Seeded partial Fisher–Yates, then restore file order so labels stay grouped.
        let mut state = options.subset_seed ^ 0x5EED_5EED;
        let mut order: Vec<usize> = (0..images.len()).collect();
        for i in 0..n {
            let j = i + (splitmix(&mut state) % (order.len() - i) as u64) as usize;
            order.swap(i, j);
        }
        let mut keep = order[..n].to_vec();
        keep.sort_unstable();
        let mut slots: Vec<Option<RawImage>> = images.into_iter().map(Some).collect();
        images = keep.into_iter().map(|k| slots[k].take().expect("distinct indices")).collect();
    }

    let (width, height) = options.size.unwrap_or_else(|| most_common_size(&images));
    if width == 0 || height == 0 {
        return Err(DataError::new(&origin, format!("target size {width}×{height} has no pixels")));
    }
    if width > MAX_SIDE || height > MAX_SIDE {
        let example = images.iter().find(|i| i.width == width && i.height == height).unwrap_or(&images[0]);
        return Err(DataError::new(
            &example.path,
            format!(
                "images of {width}×{height} are too large (the limit is {MAX_SIDE}×{MAX_SIDE}; ELS cost grows with the square of the pixel count); choose a smaller size"
            ),
        ));
    }
    let channels = match options.color {
        ColorMode::Gray => 1,
        ColorMode::Rgb => 3,
        ColorMode::Auto => images.iter().map(|i| i.channels).max().unwrap_or(1),
    };

    let shape = ImageShape { c: channels, h: height as usize, w: width as usize };
    let mut data = Vec::with_capacity(images.len() * shape.len());
    let mut labels = Vec::with_capacity(images.len());
    for img in &images {
        let mut pixels = img.data.clone();
        let mut c = img.channels;
        if c != channels {
            pixels = convert_channels(&pixels, c, channels, (img.width * img.height) as usize);
            c = channels;
            report.converted += 1;
        }
        if (img.width, img.height) != (width, height) {
            pixels = resize(&pixels, c, (img.width, img.height), (width, height));
            report.resized += 1;
        }
        data.extend(pixels);
        labels.push(img.label.clone());
    }
    Ok(Dataset { source, shape, images: data, labels, all_classes, report })
}

fn distinct<'a>(labels: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for l in labels.filter(|l| !l.is_empty()) {
        if !out.iter().any(|o| o == l) {
            out.push(l.to_string());
        }
    }
    out
}

/// The (width, height) most images share; ties go to the larger size.
fn most_common_size(images: &[RawImage]) -> (u32, u32) {
    let mut counts: HashMap<(u32, u32), usize> = HashMap::new();
    for img in images {
        *counts.entry((img.width, img.height)).or_default() += 1;
    }
    counts.into_iter().max_by_key(|&(size, n)| (n, size)).map(|(s, _)| s).unwrap_or((1, 1))
}

fn convert_channels(pixels: &[f32], from: usize, to: usize, hw: usize) -> Vec<f32> {
    match (from, to) {
        (1, 3) => pixels.repeat(3),
        (3, 1) => (0..hw).map(|i| 0.299 * pixels[i] + 0.587 * pixels[hw + i] + 0.114 * pixels[2 * hw + i]).collect(),
        _ => pixels.to_vec(),
    }
}

/// Resizes each channel plane with a triangle filter (area-like when shrinking).
pub(crate) fn resize(pixels: &[f32], c: usize, from: (u32, u32), to: (u32, u32)) -> Vec<f32> {
    let hw = (from.0 * from.1) as usize;
    let mut out = Vec::with_capacity(c * (to.0 * to.1) as usize);
    for ch in 0..c {
        let plane: ImageBuffer<Luma<f32>, Vec<f32>> =
            ImageBuffer::from_raw(from.0, from.1, pixels[ch * hw..(ch + 1) * hw].to_vec()).expect("plane size");
        let resized = imageops::resize(&plane, to.0, to.1, imageops::FilterType::Triangle);
        out.extend(resized.into_raw().into_iter().map(|v| v.clamp(-1.0, 1.0)));
    }
    out
}
