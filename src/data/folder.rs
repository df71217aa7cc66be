//! A folder of image files: every format the `image` crate reads, decoded with limits.
//!
//! A header is read before any pixel: a side over [`MAX_DECODE_SIDE`] is refused without
//! allocating, and the decoder may not allocate more than [`MAX_DECODE_BYTES`]. A photo larger
//! than [`super::MAX_SIDE`] is downscaled right after decoding (to the requested size, or to
//! fit [`FIT_SIDE`]), so a folder of 4K photos costs one photo of memory at a time and loads
//! as small images instead of being refused after the fact.

use std::path::Path;

use image::{DynamicImage, imageops::FilterType};

use super::{DataError, LoadOptions, LoadReport, MAX_SIDE, RawImage, RawSet, label_of};

/// Largest image side whose header is accepted (a 16384² RGBA image is 1 GiB decoded).
pub const MAX_DECODE_SIDE: u32 = 16_384;
/// Most bytes one decoder may allocate.
pub const MAX_DECODE_BYTES: u64 = 512 << 20;
/// Images larger than [`MAX_SIDE`] are shrunk to fit this square when no size was asked for.
pub const FIT_SIDE: u32 = 64;

const EXTENSIONS: [&str; 10] = ["png", "jpg", "jpeg", "bmp", "gif", "tif", "tiff", "webp", "pgm", "ppm"];

fn is_image(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn reader(path: &Path) -> Result<image::ImageReader<std::io::BufReader<std::fs::File>>, String> {
    image::ImageReader::open(path)
        .map_err(|e| format!("cannot open: {e}"))?
        .with_guessed_format()
        .map_err(|e| format!("cannot read: {e}"))
}

/// Decodes one file into [C, H, W] in [−1, 1]; gray stays one channel, colour becomes RGB.
/// Returns whether it had to be downscaled.
pub(crate) fn decode(path: &Path, size: Option<(u32, u32)>) -> Result<(RawImage, bool), String> {
    let (w, h) = reader(path)?.into_dimensions().map_err(|e| format!("not a readable image: {e}"))?;
    if w == 0 || h == 0 {
        return Err("image has no pixels".into());
    }
    if w > MAX_DECODE_SIDE || h > MAX_DECODE_SIDE {
        return Err(format!("the image claims {w}×{h} pixels; the limit is {MAX_DECODE_SIDE} on a side"));
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_DECODE_SIDE);
    limits.max_image_height = Some(MAX_DECODE_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    let mut r = reader(path)?;
    r.limits(limits);
    let img = r.decode().map_err(|e| format!("not a readable image: {e}"))?;
    let (img, downscaled) = shrink(img, size);
    let (width, height) = (img.width(), img.height());
    let color = img.color().has_color();
    let (channels, data) = if color {
        let rgb = img.to_rgb8();
        let mut planes = vec![0f32; 3 * (width * height) as usize];
        let hw = (width * height) as usize;
        for (i, px) in rgb.pixels().enumerate() {
            for c in 0..3 {
                planes[c * hw + i] = px.0[c] as f32 / 127.5 - 1.0;
            }
        }
        (3, planes)
    } else {
        let gray = img.to_luma8();
        (1, gray.pixels().map(|p| p.0[0] as f32 / 127.5 - 1.0).collect())
    };
    Ok((RawImage { path: path.to_path_buf(), label: label_of(path), width, height, channels, data }, downscaled))
}

/// An image larger than [`MAX_SIDE`] shrunk right away: to `size` when one was asked for,
/// else to fit [`FIT_SIDE`] with its aspect ratio kept.
fn shrink(img: DynamicImage, size: Option<(u32, u32)>) -> (DynamicImage, bool) {
    if img.width() <= MAX_SIDE && img.height() <= MAX_SIDE {
        return (img, false);
    }
    let resized = match size {
        Some((w, h)) => img.resize_exact(w.max(1), h.max(1), FilterType::Triangle),
        None => img.resize(FIT_SIDE, FIT_SIDE, FilterType::Triangle),
    };
    (resized, true)
}

pub(crate) fn load(dir: &Path, options: &LoadOptions, cancelled: &dyn Fn() -> bool) -> Result<RawSet, DataError> {
    if !dir.exists() {
        return Err(DataError::new(dir, "no such folder or file"));
    }
    if !dir.is_dir() {
        return Err(DataError::new(dir, "not a folder (give a folder of images, an .npy file or a bundled name)"));
    }
    let entries = std::fs::read_dir(dir).map_err(|e| DataError::new(dir, format!("cannot list folder: {e}")))?;
    let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()).collect();
    paths.sort();
    let files = paths.len();
    let paths: Vec<_> = paths.into_iter().filter(|p| is_image(p)).collect();
    if paths.is_empty() {
        let problem = if files == 0 {
            "the folder is empty".to_string()
        } else {
            format!("the folder has {files} files but none with an image extension ({})", EXTENSIONS.join(", "))
        };
        return Err(DataError::new(dir, problem));
    }
    decode_all(dir, paths, options, cancelled)
}

/// Loads a list of image files (dropped or picked one by one).
pub(crate) fn load_files(
    paths: &[std::path::PathBuf],
    options: &LoadOptions,
    cancelled: &dyn Fn() -> bool,
) -> Result<RawSet, DataError> {
    let origin = paths.first().and_then(|p| p.parent()).map(|p| p.to_path_buf()).unwrap_or_default();
    if paths.is_empty() {
        return Err(DataError::new(origin, "no files were given"));
    }
    let mut report = LoadReport::default();
    let mut images_paths = Vec::new();
    for p in paths {
        if is_image(p) {
            images_paths.push(p.clone());
        } else {
            report.skipped.push((p.clone(), "not an image file".into()));
        }
    }
    let mut set = decode_all(&origin, images_paths, options, cancelled)?;
    report.skipped.append(&mut set.report.skipped);
    report.downscaled = set.report.downscaled;
    set.report = report;
    Ok(set)
}

fn decode_all(
    dir: &Path,
    paths: Vec<std::path::PathBuf>,
    options: &LoadOptions,
    cancelled: &dyn Fn() -> bool,
) -> Result<RawSet, DataError> {
    let mut report = LoadReport::default();
    let mut images = Vec::with_capacity(paths.len());
    for path in paths {
        if cancelled() {
            return Err(DataError::new(dir, "loading was cancelled"));
        }
        match decode(&path, options.size) {
            Ok((img, downscaled)) => {
                report.downscaled += downscaled as usize;
                images.push(img)
            }
            Err(problem) => report.skipped.push((path, problem)),
        }
    }
    if images.is_empty() {
        return Err(DataError::new(
            dir,
            format!(
                "no readable image among {} files (first problem: {})",
                report.skipped.len(),
                report.skipped.first().map(|(p, e)| format!("{}: {e}", p.display())).unwrap_or_default()
            ),
        ));
    }
    Ok(RawSet { images, report, origin: dir.to_path_buf() })
}
