//! Datasets: the six bundled sets, folders of images and .npy arrays, turned into training
//! images in [−1, 1] with a report of everything that was skipped or changed on the way.

mod bundled;
mod folder;
mod npy;
pub mod paint;
mod transform;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use bundled::{BUNDLED, bundled_source, pack_atlas};
pub use npy::{read_npy_f32, read_npy_numbers, write_npy_f32};

use crate::engine::ImageShape;

/// Largest image side the machines are meant for; ELS cost grows with (H·W)².
pub const MAX_SIDE: u32 = 256;

/// Where a dataset comes from, as a recipe records it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "lowercase")]
pub enum DatasetSource {
    /// One of [`BUNDLED`], embedded in the binary.
    Bundled(String),
    /// A folder of image files.
    Folder(PathBuf),
    /// An .npy array shaped (N,H,W) or (N,C,H,W) with values in [−1, 1].
    Npy(PathBuf),
    /// Image files picked or dropped one by one.
    Files(Vec<PathBuf>),
}

impl DatasetSource {
    /// The bundled set's name, for the things that ship with it (its CNN weights).
    pub fn bundled_name(&self) -> Option<&str> {
        match self {
            Self::Bundled(name) => Some(name.as_str()),
            _ => None,
        }
    }

    /// A bundled name, a folder, or an .npy file, the way the CLI's `--dataset` reads it.
    pub fn parse(text: &str) -> Self {
        if BUNDLED.iter().any(|b| b.name == text) && !Path::new(text).exists() {
            return Self::Bundled(text.to_string());
        }
        let path = PathBuf::from(text);
        if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy")) {
            Self::Npy(path)
        } else if path.is_dir() || !BUNDLED.iter().any(|b| b.name == text) {
            Self::Folder(path)
        } else {
            Self::Bundled(text.to_string())
        }
    }

    pub fn label(&self) -> String {
        match self {
            Self::Bundled(name) => name.clone(),
            Self::Folder(p) | Self::Npy(p) => p.display().to_string(),
            Self::Files(files) => format!("{} files", files.len()),
        }
    }

    /// A short name for file names.
    pub fn short_name(&self) -> String {
        match self {
            Self::Bundled(name) => name.clone(),
            Self::Folder(p) | Self::Npy(p) => {
                p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "dataset".into())
            }
            Self::Files(_) => "files".into(),
        }
    }
}

/// Grayscale or colour, or whatever the source has.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColorMode {
    #[default]
    Auto,
    Gray,
    Rgb,
}

/// How to cut a training set out of a source.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct LoadOptions {
    /// Keep only images whose label (file-name prefix before the first `_`) is this.
    pub class: Option<String>,
    /// Keep a seeded random subset of this many images.
    pub subset: Option<usize>,
    pub subset_seed: u64,
    /// Resize everything to (width, height); default: the most common size.
    pub size: Option<(u32, u32)>,
    pub color: ColorMode,
}

/// What happened while loading: nothing is dropped silently.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadReport {
    /// Files that could not be used, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
    /// Images resized to the common size.
    pub resized: usize,
    /// Images over the size limit shrunk while loading.
    pub downscaled: usize,
    /// Images converted between gray and colour.
    pub converted: usize,
    /// Images before the class filter and subset.
    pub total: usize,
}

/// "1 image", "2 images": a count with its noun, singular or plural.
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 { format!("1 {noun}") } else { format!("{n} {noun}s") }
}

impl LoadReport {
    pub fn summary(&self) -> String {
        let mut parts = vec![format!("{} read", count(self.total, "image"))];
        if self.downscaled > 0 {
            parts.push(format!("{} large images downscaled", self.downscaled));
        }
        if self.resized > 0 {
            parts.push(format!("{} resized", self.resized));
        }
        if self.converted > 0 {
            parts.push(format!("{} colour-converted", self.converted));
        }
        if !self.skipped.is_empty() {
            parts.push(format!("{} skipped", self.skipped.len()));
        }
        parts.join(", ")
    }
}

/// A training set ready for the engine.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub source: DatasetSource,
    pub shape: ImageShape,
    /// [N, C, H, W], values in [−1, 1].
    pub images: Vec<f32>,
    /// One label per image ("" when the source has none).
    pub labels: Vec<String>,
    /// Every label of the source, before the class filter.
    pub all_classes: Vec<String>,
    pub report: LoadReport,
}

/// A load failure that names the file or folder and the problem.
#[derive(Clone, Debug, PartialEq)]
pub struct DataError {
    pub path: PathBuf,
    pub problem: String,
}

impl std::fmt::Display for DataError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.problem)
    }
}
impl std::error::Error for DataError {}

impl DataError {
    pub fn new(path: impl Into<PathBuf>, problem: impl Into<String>) -> Self {
        Self { path: path.into(), problem: problem.into() }
    }
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Loads `source` and applies `options` (class, subset, size, colour), in that order.
    pub fn load(source: &DatasetSource, options: &LoadOptions) -> Result<Self, DataError> {
        Self::load_cancellable(source, options, &|| false)
    }

    /// [`Dataset::load`] that gives up (with an error) as soon as `cancelled()` says so; it
    /// is asked between files, so a folder of large photos never holds up a slider move.
    pub fn load_cancellable(
        source: &DatasetSource,
        options: &LoadOptions,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Self, DataError> {
        let raw = match source {
            DatasetSource::Bundled(name) => bundled::load(name)?,
            DatasetSource::Folder(path) => folder::load(path, options, cancelled)?,
            DatasetSource::Npy(path) => npy::load(path)?,
            DatasetSource::Files(paths) => folder::load_files(paths, options, cancelled)?,
        };
        if cancelled() {
            return Err(DataError::new(raw.origin, "loading was cancelled"));
        }
        transform::apply(raw, source.clone(), options)
    }

    /// Distinct labels in first-seen order.
    pub fn classes(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for l in &self.labels {
            if !out.contains(l) {
                out.push(l.clone());
            }
        }
        out
    }

    /// SHA-256 of the images' f32 bytes and shape: two runs with the same hash saw the same data.
    pub fn content_hash(&self) -> String {
        let mut h = Sha256::new();
        h.update(format!("{}x{}x{}x{}", self.len(), self.shape.c, self.shape.h, self.shape.w).as_bytes());
        for v in &self.images {
            h.update(v.to_le_bytes());
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Image `k` as [C, H, W].
    pub fn image(&self, k: usize) -> &[f32] {
        let len = self.shape.len();
        &self.images[k * len..(k + 1) * len]
    }
}

/// Reads one image x as (C,H,W), (H,W) or (1,C,H,W) .npy and checks it fits `shape` (a
/// `--input`, an `--init`, a recipe's `init`); non-finite values are refused by the reader.
pub fn read_image_npy(path: &Path, shape: ImageShape) -> Result<Vec<f32>, DataError> {
    let (dims, values) = read_npy_f32(path)?;
    let s = shape;
    let ok = match dims[..] {
        [h, w] => s.c == 1 && (h, w) == (s.h, s.w),
        [c, h, w] => (c, h, w) == (s.c, s.h, s.w),
        [1, c, h, w] => (c, h, w) == (s.c, s.h, s.w),
        _ => false,
    };
    if !ok {
        return Err(DataError::new(
            path,
            format!("shape {dims:?} does not match the training images ({}, {}, {})", s.c, s.h, s.w),
        ));
    }
    Ok(values)
}

/// Images as decoded, before options: each may have its own size and colour.
pub(crate) struct RawImage {
    pub path: PathBuf,
    pub label: String,
    pub width: u32,
    pub height: u32,
    pub channels: usize,
    /// [C, H, W] in [−1, 1].
    pub data: Vec<f32>,
}

pub(crate) struct RawSet {
    pub images: Vec<RawImage>,
    pub report: LoadReport,
    /// The folder or file, for error messages.
    pub origin: PathBuf,
}

/// The label of a file: its name's prefix before the first `_` ("" when there is none).
pub fn label_of(path: &Path) -> String {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    match stem.split_once('_') {
        Some((label, _)) => label.to_string(),
        None => String::new(),
    }
}
