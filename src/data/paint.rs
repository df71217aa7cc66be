//! The files a grown or painted run reads: an x on a canvas of any size, a per-pixel patch
//! map, a locality map and an edits file with its mask PNGs. Each problem is one line naming
//! the file; nothing is allocated beyond what the file itself holds.

use std::path::Path;

use crate::engine::machine::MAX_CANVAS;
use crate::engine::sampling::patch::MAX_P;
use crate::engine::{Edit, ImageShape, LocalityMap, Mask};

use super::{DataError, read_npy_f32, read_npy_numbers};

/// x as (H, W) (gray), (C, H, W) or (1, C, H, W) with the training images' `c` channels, on a
/// canvas of any size up to [`MAX_CANVAS`]: its shape and values.
pub fn read_canvas_npy(path: &Path, c: usize) -> Result<(ImageShape, Vec<f32>), DataError> {
    let (dims, values) = read_npy_f32(path)?;
    let shape = match dims[..] {
        [h, w] if c == 1 => ImageShape { c: 1, h, w },
        [ch, h, w] | [1, ch, h, w] if ch == c => ImageShape { c, h, w },
        _ => {
            return Err(DataError::new(
                path,
                format!(
                    "shape {dims:?} is not an image with the training images' {c} channel(s): use (C, H, W){}",
                    if c == 1 { " or (H, W)" } else { "" }
                ),
            ));
        }
    };
    check_side(path, shape.h, shape.w)?;
    Ok((shape, values))
}

fn check_side(path: &Path, h: usize, w: usize) -> Result<(), DataError> {
    if h == 0 || w == 0 || h > MAX_CANVAS || w > MAX_CANVAS {
        return Err(DataError::new(
            path,
            format!("a {h}×{w} canvas is out of range: each side must be 1 to {MAX_CANVAS}"),
        ));
    }
    Ok(())
}

/// `--canvas HxW` (rows × columns), e.g. 56x56.
pub fn parse_canvas(s: &str) -> Result<[usize; 2], String> {
    let bad = || format!("--canvas takes HxW (two whole numbers, e.g. 56x56), not '{s}'");
    let (h, w) = s.split_once(['x', 'X', '×']).ok_or_else(bad)?;
    let (h, w): (usize, usize) = (h.trim().parse().map_err(|_| bad())?, w.trim().parse().map_err(|_| bad())?);
    let max = MAX_CANVAS;
    if h == 0 || w == 0 || h > max || w > max {
        return Err(format!("--canvas {h}x{w} is out of range: each side must be 1 to {max}"));
    }
    Ok([h, w])
}

/// An (H, W) array of `what` over an H×W canvas.
fn read_map(path: &Path, h: usize, w: usize, what: &str) -> Result<Vec<f32>, DataError> {
    let (dims, values) = read_npy_numbers(path)?;
    if dims != [h, w] {
        return Err(DataError::new(path, format!("{what} has shape {dims:?}, but the canvas is ({h}, {w})")));
    }
    Ok(values)
}

/// A per-pixel patch map: an integer (H, W) array of odd P from 1 to [`MAX_P`].
pub fn read_patch_map(path: &Path, h: usize, w: usize) -> Result<Vec<u32>, DataError> {
    let values = read_map(path, h, w, "the patch map")?;
    values
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            if v.fract() == 0.0 && v >= 1.0 && v <= MAX_P as f32 && (v as u32) % 2 == 1 {
                Ok(v as u32)
            } else {
                Err(DataError::new(
                    path,
                    format!(
                        "P at row {}, column {} is {v}: each must be an odd whole number from 1 to {MAX_P}",
                        i / w,
                        i % w
                    ),
                ))
            }
        })
        .collect()
}

/// A locality map: a float (H, W) array of multipliers in (0, 8].
pub fn read_locality_map(path: &Path, h: usize, w: usize) -> Result<LocalityMap, DataError> {
    let values = read_map(path, h, w, "the locality map")?;
    let map = LocalityMap { h, w, values };
    map.validate(h, w).map_err(|e| DataError::new(path, e))?;
    Ok(map)
}

/// A mask PNG over an H×W canvas: white (luma ≥ 128) is edited.
pub fn read_mask_png(path: &Path, h: usize, w: usize) -> Result<Mask, DataError> {
    let img = image::ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .map_err(|e| DataError::new(path, format!("cannot read the mask: {e}")))?;
    let (mw, mh) = img.into_dimensions().map_err(|e| DataError::new(path, format!("not an image: {e}")))?;
    if (mh as usize, mw as usize) != (h, w) {
        return Err(DataError::new(path, format!("the mask is {mh}×{mw}, but the canvas is {h}×{w}")));
    }
    let img = image::open(path).map_err(|e| DataError::new(path, format!("cannot decode the mask: {e}")))?.into_luma8();
    let bits: Vec<bool> = img.pixels().map(|p| p.0[0] >= 128).collect();
    Ok(Mask::from_bits(h, w, &bits))
}

/// An edits file, `{"edits": [{"step": K, "op": "set" | "noise" | "stamp", ..., "mask": "m.png"}]}`,
/// with each mask path relative to the file, as edits with their masks inline.
pub fn read_edits(path: &Path, h: usize, w: usize) -> Result<Vec<Edit>, DataError> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::new(path, format!("cannot read: {e}")))?;
    let doc: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| DataError::new(path, format!("not valid JSON: {e}")))?;
    let list = doc
        .get("edits")
        .and_then(|e| e.as_array())
        .ok_or_else(|| DataError::new(path, "expected {\"edits\": [ ... ]}"))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    list.iter()
        .enumerate()
        .map(|(i, entry)| {
            let mut entry = entry.clone();
            let mask_name = entry
                .get("mask")
                .and_then(|m| m.as_str())
                .ok_or_else(|| {
                    DataError::new(path, format!("edit {i} has no \"mask\" (a PNG path relative to this file)"))
                })?
                .to_string();
            let mask = read_mask_png(&dir.join(&mask_name), h, w)?;
            entry["mask"] = serde_json::to_value(&mask).expect("a mask serialises");
            serde_json::from_value::<Edit>(entry).map_err(|e| DataError::new(path, format!("edit {i}: {e}")))
        })
        .collect()
}
