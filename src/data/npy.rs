//! .npy arrays of images, read and written through `npyz`.

use std::io::BufWriter;

use npyz::WriterBuilder;
use std::path::Path;

use super::{DataError, LoadReport, RawImage, RawSet};

/// Reads a float32 or float64 .npy into (shape, values as f32).
pub fn read_npy_f32(path: &Path) -> Result<(Vec<usize>, Vec<f32>), DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::new(path, format!("cannot read: {e}")))?;
    let npy =
        npyz::NpyFile::new(&bytes[..]).map_err(|e| DataError::new(path, format!("not a valid .npy file: {e}")))?;
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
    Ok((shape, values))
}

/// Writes a float32 .npy, atomically (temporary file, then rename).
pub fn write_npy_f32(path: &Path, shape: &[usize], values: &[f32]) -> std::io::Result<()> {
    assert_eq!(shape.iter().product::<usize>(), values.len());
    crate::export::atomic::write_with(path, true, |file| {
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
