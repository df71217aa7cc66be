//! Pictures and arrays of the provenance maps ([`PixelMaps`]): the mosaic (each pixel
//! coloured by the training image its largest weight comes from), the source offset (how far
//! that patch was moved) and the weight entropy. The studio's overlays and `sample --maps`
//! draw with the same functions.

use std::path::{Path, PathBuf};

use image::{Rgba, RgbaImage};

use crate::data::write_npy_f32;
use crate::engine::{ImageShape, PixelMaps};
use crate::files as atomic;
use crate::trajectory::Trajectory;

/// A stable, well-spread colour for training image `n`: the golden-angle hue walk, so
/// neighbouring indices differ and the same image has the same colour in every step.
pub fn image_colour(n: u32) -> [u8; 3] {
    if n == u32::MAX {
        return [40, 40, 40]; // no admissible patch
    }
    let hue = (n as f64 * 137.507_764) % 360.0;
    let sat = 0.55 + 0.35 * ((n / 7) % 2) as f64;
    let val = 0.95 - 0.25 * ((n / 3) % 2) as f64;
    hsv(hue, sat, val)
}

fn hsv(h: f64, s: f64, v: f64) -> [u8; 3] {
    let c = v * s;
    let x = c * (1.0 - ((h / 60.0) % 2.0 - 1.0).abs());
    let (r, g, b) = match (h / 60.0) as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = v - c;
    [((r + m) * 255.0) as u8, ((g + m) * 255.0) as u8, ((b + m) * 255.0) as u8]
}

/// A perceptually ordered heat colour for v in [0, 1] (dark blue → teal → yellow, after
/// viridis, in five stops).
pub fn heat(v: f32) -> [u8; 3] {
    const STOPS: [[f32; 3]; 5] =
        [[68.0, 1.0, 84.0], [59.0, 82.0, 139.0], [33.0, 145.0, 140.0], [94.0, 201.0, 98.0], [253.0, 231.0, 37.0]];
    let v = if v.is_finite() { v.clamp(0.0, 1.0) } else { 0.0 } * 4.0;
    let i = (v as usize).min(3);
    let f = v - i as f32;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    [0, 1, 2].map(|k| (a[k] + (b[k] - a[k]) * f).round() as u8)
}

/// Which map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum MapKind {
    Mosaic,
    Offset,
    Entropy,
}

impl MapKind {
    pub const ALL: [MapKind; 3] = [MapKind::Mosaic, MapKind::Offset, MapKind::Entropy];
    pub fn name(&self) -> &'static str {
        match self {
            Self::Mosaic => "mosaic",
            Self::Offset => "offset",
            Self::Entropy => "entropy",
        }
    }
    pub fn title(&self) -> &'static str {
        match self {
            Self::Mosaic => "Mosaic (training image of the largest weight)",
            Self::Offset => "Source offset (pixels the winning patch moved)",
            Self::Entropy => "Weight entropy (nats)",
        }
    }
}

/// The largest value a heat map's scale runs to: the image diagonal for offsets, ln N for
/// entropies (every candidate equal), so one run's steps share a scale.
pub fn scale_max(kind: MapKind, shape: ImageShape, n_train: usize) -> f32 {
    match kind {
        MapKind::Mosaic => 1.0,
        MapKind::Offset => ((shape.h * shape.h + shape.w * shape.w) as f32).sqrt(),
        MapKind::Entropy => (n_train.max(2) as f32 * shape.pixels() as f32).ln(),
    }
}

/// One map as an H×W picture.
pub fn render(maps: &PixelMaps, kind: MapKind, shape: ImageShape, max: f32) -> RgbaImage {
    let values: Vec<[u8; 3]> = match kind {
        MapKind::Mosaic => maps.winner.iter().map(|&n| image_colour(n)).collect(),
        MapKind::Offset => maps.offset(shape.w).iter().map(|&o| heat(o / max)).collect(),
        MapKind::Entropy => maps.entropy.iter().map(|&e| heat(e / max)).collect(),
    };
    let mut img = RgbaImage::new(shape.w as u32, shape.h as u32);
    for (px, c) in values.into_iter().enumerate() {
        img.put_pixel((px % shape.w) as u32, (px / shape.w) as u32, Rgba([c[0], c[1], c[2], 255]));
    }
    img
}

/// `maps_winner.npy`, `maps_offset.npy`, `maps_entropy.npy` (steps, H, W; a winner of −1
/// means no admissible patch) and `maps/{mosaic,offset,entropy}_NNN.png` per step.
pub fn write_maps(traj: &Trajectory, dir: &Path, n_train: usize, overwrite: bool) -> Result<Vec<PathBuf>, String> {
    let s = traj.shape;
    let all: Vec<&PixelMaps> = traj.steps.iter().filter_map(|r| r.maps.as_ref()).collect();
    if all.len() != traj.steps.len() {
        return Err("this run has no provenance maps for every step (sample with --maps)".into());
    }
    let shape = [all.len(), s.h, s.w];
    let mut written = Vec::new();
    let winner: Vec<f32> =
        all.iter().flat_map(|m| m.winner.iter().map(|&w| if w == u32::MAX { -1.0 } else { w as f32 })).collect();
    let offset: Vec<f32> = all.iter().flat_map(|m| m.offset(s.w)).collect();
    let entropy: Vec<f32> = all.iter().flat_map(|m| m.entropy.iter().copied()).collect();
    for (name, data) in [("maps_winner.npy", winner), ("maps_offset.npy", offset), ("maps_entropy.npy", entropy)] {
        let p = dir.join(name);
        if !overwrite && p.exists() {
            return Err(format!("{} already exists (use --force to overwrite)", p.display()));
        }
        write_npy_f32(&p, &shape, &data).map_err(|e| format!("{}: {e}", p.display()))?;
        written.push(p);
    }
    let pics = dir.join("maps");
    std::fs::create_dir_all(&pics).map_err(|e| format!("{}: cannot create folder: {e}", pics.display()))?;
    for (k, m) in all.iter().enumerate() {
        for kind in MapKind::ALL {
            let p = pics.join(format!("{}_{k:03}.png", kind.name()));
            let img = render(m, kind, s, scale_max(kind, s, n_train));
            atomic::write_bytes(&p, overwrite, &super::frame::encode_png(&img)).map_err(|e| e.to_string())?;
            written.push(p);
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_are_stable_and_distinct_for_neighbours() {
        assert_eq!(image_colour(17), image_colour(17));
        for n in 0..200 {
            assert_ne!(image_colour(n), image_colour(n + 1), "{n}");
        }
        assert_eq!(heat(0.0), [68, 1, 84]);
        assert_eq!(heat(1.0), [253, 231, 37]);
        assert_eq!(heat(f32::NAN), heat(0.0));
    }
}
