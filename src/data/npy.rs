//! .npy arrays of images, read and written through `npyz`.

use std::io::BufWriter;

use npyz::WriterBuilder;
use std::path::Path;

use super::{DataError, LoadReport, RawImage, RawSet};

/// The shape a version 1–3 .npy header declares, read straight from its text; `None` when
/// the header is not in the usual form (npyz then gives the error).
fn declared_shape(bytes: &[u8]) -> Option<Vec<u64>> {
    let (len, start): (usize, usize) = match (bytes.get(..6)?, *bytes.get(6)?) {
        (b"\x93NUMPY", 1) => (u16::from_le_bytes([*bytes.get(8)?, *bytes.get(9)?]) as usize, 10),
        (b"\x93NUMPY", 2 | 3) => (u32::from_le_bytes(bytes.get(8..12)?.try_into().ok()?) as usize, 12),
        _ => return None,
    };
    let header = std::str::from_utf8(bytes.get(start..start.checked_add(len)?)?).ok()?;
    let tuple = header.split_once("'shape'")?.1.split_once('(')?.1.split_once(')')?.0;
    tuple.split(',').map(str::trim).filter(|d| !d.is_empty()).map(|d| d.trim_end_matches('L').parse().ok()).collect()
}

/// Refuses a declared shape whose element count overflows or needs more bytes than the file
/// has (at least 4 per value), before anything is allocated for it.
fn check_count(path: &Path, shape: &[u64], file_len: usize) -> Result<(), DataError> {
    let count = shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
    if count.is_none_or(|n| n.saturating_mul(4) > file_len as u64) {
        return Err(DataError::new(
            path,
            format!("the header claims shape {shape:?}, more values than the file holds"),
        ));
    }
    Ok(())
}

/// Reads a float32 or float64 .npy into (shape, values as f32).
pub fn read_npy_f32(path: &Path) -> Result<(Vec<usize>, Vec<f32>), DataError> {
    read_npy(path, false)
}

/// [`read_npy_f32`] that also takes whole numbers (an integer patch map), as f32.
pub fn read_npy_numbers(path: &Path) -> Result<(Vec<usize>, Vec<f32>), DataError> {
    read_npy(path, true)
}

fn read_npy(path: &Path, ints: bool) -> Result<(Vec<usize>, Vec<f32>), DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::new(path, format!("cannot read: {e}")))?;
    // npyz multiplies the declared shape without checking for overflow (a panic in debug
    // builds, a wrapped count in release), so a hostile header is refused here first.
    if let Some(shape) = declared_shape(&bytes) {
        check_count(path, &shape, bytes.len())?;
    }
    let npy =
        npyz::NpyFile::new(&bytes[..]).map_err(|e| DataError::new(path, format!("not a valid .npy file: {e}")))?;
    // Headers in a form `declared_shape` does not read are checked once npyz has parsed them.
    check_count(path, npy.shape(), bytes.len())?;
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    if npy.order() == npyz::Order::Fortran {
        return Err(DataError::new(path, "Fortran-ordered arrays are not supported; save with np.ascontiguousarray"));
    }
    let dtype = npy.dtype();
    let descr = dtype.descr().trim_matches(|c| c == '\'' || c == '"').to_string();
    let values: Vec<f32> = match descr.as_str() {
        "<f4" => npy.into_vec::<f32>().map_err(|e| DataError::new(path, format!("cannot decode float32 data: {e}")))?,
        "<f8" => npy
            .into_vec::<f64>()
            .map_err(|e| DataError::new(path, format!("cannot decode float64 data: {e}")))?
            .into_iter()
            .map(|v| v as f32)
            .collect(),
        // Whole numbers (a patch map): exact in f32 up to 2²⁴, far past any patch size.
        "<i8" if ints => read_ints(path, npy.into_vec::<i64>())?,
        "<i4" if ints => read_ints(path, npy.into_vec::<i32>())?,
        "<i2" if ints => read_ints(path, npy.into_vec::<i16>())?,
        "|i1" if ints => read_ints(path, npy.into_vec::<i8>())?,
        "<u8" if ints => read_ints(path, npy.into_vec::<u64>())?,
        "<u4" if ints => read_ints(path, npy.into_vec::<u32>())?,
        "<u2" if ints => read_ints(path, npy.into_vec::<u16>())?,
        "|u1" if ints => read_ints(path, npy.into_vec::<u8>())?,
        other => {
            return Err(DataError::new(
                path,
                format!("dtype {other} is not supported; save float32 (or float64) values in [-1, 1]"),
            ));
        }
    };
    if values.len() != shape.iter().product::<usize>() {
        return Err(DataError::new(path, "the data is shorter than its header says"));
    }
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(DataError::new(path, format!("value #{i} is {} (every value must be finite)", values[i])));
    }
    Ok((shape, values))
}

/// Whole numbers read from an integer .npy, as f32 (callers check their range).
fn read_ints<T: Copy + Into<i128>>(path: &Path, values: std::io::Result<Vec<T>>) -> Result<Vec<f32>, DataError> {
    let values = values.map_err(|e| DataError::new(path, format!("cannot decode integer data: {e}")))?;
    Ok(values.into_iter().map(|v| v.into() as f32).collect())
}

/// Writes a float32 .npy, atomically (temporary file, then rename).
pub fn write_npy_f32(path: &Path, shape: &[usize], values: &[f32]) -> std::io::Result<()> {
    assert_eq!(shape.iter().product::<usize>(), values.len());
    crate::files::write_with(path, true, |file| {
        let mut w = BufWriter::new(file);
        let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
        let mut writer = npyz::WriteOptions::<f32>::new().default_dtype().shape(&shape).writer(&mut w).begin_nd()?;
        writer.extend(values.iter().copied())?;
        writer.finish()?;
        Ok(())
    })
}

/// A training set stored as (N,H,W) or (N,C,H,W) with C = 1 or 3.
pub(crate) fn load(path: &Path) -> Result<RawSet, DataError> {
    let (shape, values) = read_npy_f32(path)?;
    let (n, c, h, w) = match shape[..] {
        [n, h, w] => (n, 1, h, w),
        [n, c, h, w] if c == 1 || c == 3 => (n, c, h, w),
        _ => {
            return Err(DataError::new(
                path,
                format!("shape {shape:?} is not a training set; expected (N,H,W) or (N,C,H,W) with C = 1 or 3"),
            ));
        }
    };
    if n == 0 || h == 0 || w == 0 {
        return Err(DataError::new(path, format!("shape {shape:?} holds no images")));
    }
    if let Some(bad) = values.iter().find(|v| !v.is_finite() || v.abs() > 1.001) {
        return Err(DataError::new(path, format!("values must lie in [-1, 1]; found {bad}")));
    }
    let len = c * h * w;
    let images = values
        .chunks_exact(len)
        .enumerate()
        .map(|(k, img)| RawImage {
            path: path.join(format!("[{k}]")),
            label: String::new(),
            width: w as u32,
            height: h as u32,
            channels: c,
            data: img.to_vec(),
        })
        .collect();
    Ok(RawSet { images, report: LoadReport::default(), origin: path.to_path_buf() })
}
