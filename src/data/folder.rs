//! A folder of image files: every format the `image` crate reads.

use std::path::Path;

use super::{DataError, LoadReport, RawImage, RawSet, label_of};

const EXTENSIONS: [&str; 10] = ["png", "jpg", "jpeg", "bmp", "gif", "tif", "tiff", "webp", "pgm", "ppm"];

fn is_image(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Decodes one file into [C, H, W] in [−1, 1]; gray stays one channel, colour becomes RGB.
pub(crate) fn decode(path: &Path) -> Result<RawImage, String> {
    let img = image::ImageReader::open(path)
        .map_err(|e| format!("cannot open: {e}"))?
        .with_guessed_format()
        .map_err(|e| format!("cannot read: {e}"))?
        .decode()
        .map_err(|e| format!("not a readable image: {e}"))?;
    let (width, height) = (img.width(), img.height());
    if width == 0 || height == 0 {
        return Err("image has no pixels".into());
    }
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
    Ok(RawImage { path: path.to_path_buf(), label: label_of(path), width, height, channels, data })
}

pub(crate) fn load(dir: &Path) -> Result<RawSet, DataError> {
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
    decode_all(dir, paths)
}

/// Loads a list of image files (dropped or picked one by one).
pub(crate) fn load_files(paths: &[std::path::PathBuf]) -> Result<RawSet, DataError> {
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
    let mut set = decode_all(&origin, images_paths)?;
    report.skipped.append(&mut set.report.skipped);
    set.report = report;
    Ok(set)
}

fn decode_all(dir: &Path, paths: Vec<std::path::PathBuf>) -> Result<RawSet, DataError> {
    let mut report = LoadReport::default();
    let mut images = Vec::with_capacity(paths.len());
    for path in paths {
        match decode(&path) {
            Ok(img) => images.push(img),
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
