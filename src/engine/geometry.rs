//! Geometry of images and windows: the image shape, how windows treat the border
//! ([`Boundary`]), the host-side index tables that turn a flat image into patches, the pixel
//! groups that share keys, and the learned windows of the PCA-locality machine ([`PixelWindows`]).
//!
//! Every image is stored flat as `[C·H·W + 1]` with a trailing zero, so a patch tap that falls
//! outside the image points at that zero slot. One `select` with these indices then cuts all
//! the patches of a pixel group out of a batch of images, for zero padding and wrap-around alike.

use serde::{Deserialize, Serialize};

/// How ELS treats windows that stick out of the image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Boundary {
    /// Zero padding; a pixel only matches training patches whose window sticks out of the
    /// image by the same amounts (the paper's default).
    #[default]
    Zeros,
    /// Windows wrap around the image; keys are the fully interior training patches.
    Circular,
}

impl Boundary {
    pub fn parse(name: &str) -> Result<Self, String> {
        match name.to_ascii_lowercase().as_str() {
            "zeros" | "zero" => Ok(Self::Zeros),
            "circular" | "wrap" => Ok(Self::Circular),
            other => Err(format!("unknown boundary '{other}' (expected zeros or circular)")),
        }
    }
    pub fn name(&self) -> &'static str {
        match self {
            Self::Zeros => "zeros",
            Self::Circular => "circular",
        }
    }
}

/// Image layout shared by the training set and every x.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ImageShape {
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

impl ImageShape {
    pub fn pixels(&self) -> usize {
        self.h * self.w
    }
    pub fn len(&self) -> usize {
        self.c * self.h * self.w
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Index of the zero slot appended to every flat image.
    pub fn zero_slot(&self) -> usize {
        self.len()
    }
}

/// Flat indices of the P×P patch around pixel (i, j), channel-major: `[c][dy][dx]`.
pub fn patch_indices(shape: ImageShape, p: usize, i: usize, j: usize, wrap: bool, out: &mut Vec<i64>) {
    let r = (p / 2) as isize;
    let (h, w) = (shape.h as isize, shape.w as isize);
    for c in 0..shape.c {
        let base = (c * shape.pixels()) as isize;
        for dy in 0..p as isize {
            for dx in 0..p as isize {
                let (mut y, mut x) = (i as isize + dy - r, j as isize + dx - r);
                if wrap {
                    y = y.rem_euclid(h);
                    x = x.rem_euclid(w);
                } else if y < 0 || y >= h || x < 0 || x >= w {
                    out.push(shape.zero_slot() as i64);
                    continue;
                }
                out.push((base + y * w + x) as i64);
            }
        }
    }
}

/// How far the P×P window at (i, j) sticks out of the image: (top, bottom, left, right).
pub fn overhang(shape: ImageShape, p: usize, i: usize, j: usize) -> [usize; 4] {
    let r = p / 2;
    [r.saturating_sub(i), (i + r).saturating_sub(shape.h - 1), r.saturating_sub(j), (j + r).saturating_sub(shape.w - 1)]
}

/// Pixels that share one softmax over one set of key positions.
#[derive(Clone, Debug)]
pub struct PixelGroup {
    /// Output pixels (i·W + j), one query each, in query order.
    pub pixels: Vec<usize>,
    /// Flat patch indices of the queries, `pixels.len() · D`.
    pub query_idx: Vec<i64>,
    /// Flat patch indices of the key positions within one training image, `key_positions · D`.
    pub key_idx: Vec<i64>,
    /// Training-image positions (i·W + j) each image contributes keys from, in key order.
    pub key_pixels: Vec<usize>,
}

impl PixelGroup {
    pub fn keys_per_image(&self) -> usize {
        self.key_pixels.len()
    }
}

/// Splits the image into the ELS groups for patch size `p`.
///
/// Zeros boundary: pixels whose windows overhang the image identically form a group, and
/// their keys are the training patches at exactly those positions (so interior pixels see
/// every interior patch, corners only the same corner). With `equivariant = false` every
/// pixel is its own group, which is the LS machine. Circular boundary: one group of all
/// pixels with wrapped windows, keyed by every fully interior training patch.
pub fn els_groups(shape: ImageShape, p: usize, boundary: Boundary, equivariant: bool) -> Vec<PixelGroup> {
    els_groups_cancellable(shape, p, boundary, equivariant, &|| false).expect("never cancelled")
}

/// [`els_groups`] that asks `cancelled` once per image row (circular) or group (zeros) and
/// gives up with `None`: at large P on a large image the tables take a while to build.
pub fn els_groups_cancellable(
    shape: ImageShape,
    p: usize,
    boundary: Boundary,
    equivariant: bool,
    cancelled: &dyn Fn() -> bool,
) -> Option<Vec<PixelGroup>> {
    let d = shape.c * p * p;
    match boundary {
        Boundary::Circular => {
            let r = p / 2;
            let mut group = PixelGroup {
                pixels: (0..shape.pixels()).collect(),
                query_idx: Vec::with_capacity(shape.pixels() * d),
                key_idx: Vec::new(),
                key_pixels: Vec::new(),
            };
            for i in 0..shape.h {
                if cancelled() {
                    return None;
                }
                for j in 0..shape.w {
                    patch_indices(shape, p, i, j, true, &mut group.query_idx);
                }
            }
            if p <= shape.h && p <= shape.w {
                for i in r..shape.h - r {
                    if cancelled() {
                        return None;
                    }
                    for j in r..shape.w - r {
                        patch_indices(shape, p, i, j, false, &mut group.key_idx);
                        group.key_pixels.push(i * shape.w + j);
                    }
                }
            }
            Some(vec![group])
        }
        Boundary::Zeros => {
            let mut by_mask: std::collections::BTreeMap<[usize; 4], Vec<usize>> = Default::default();
            for i in 0..shape.h {
                for j in 0..shape.w {
                    let key = if equivariant { overhang(shape, p, i, j) } else { [i, j, usize::MAX, usize::MAX] };
                    by_mask.entry(key).or_default().push(i * shape.w + j);
                }
            }
            by_mask
                .into_values()
                .map(|pixels| {
                    if cancelled() {
                        return None;
                    }
                    let mut idx = Vec::with_capacity(pixels.len() * d);
                    for &px in &pixels {
                        patch_indices(shape, p, px / shape.w, px % shape.w, false, &mut idx);
                    }
                    Some(PixelGroup { key_pixels: pixels.clone(), pixels, key_idx: idx.clone(), query_idx: idx })
                })
                .collect()
        }
    }
}

/// Offsets of the centre tap of each channel within a patch vector.
pub fn centre_offsets(c: usize, p: usize) -> Vec<i64> {
    let r = p / 2;
    (0..c).map(|ch| (ch * p * p + r * p + r) as i64).collect()
}

/// Which pixels each pixel's window holds, as bits: row m, bit j. Channels are merged (a
/// pixel is in the window when any of its values is in the window of any of m's values), which
/// is what an overlay on the image can show.
#[derive(Clone, Debug, PartialEq)]
pub struct PixelWindows {
    pub hw: usize,
    words: usize,
    bits: Vec<u64>,
}

impl PixelWindows {
    /// No pixel in any window yet.
    pub fn new(hw: usize) -> Self {
        let words = hw.div_ceil(64);
        Self { hw, words, bits: vec![0; hw * words] }
    }
    /// Puts pixel j in pixel m's window.
    pub fn set(&mut self, m: usize, j: usize) {
        self.bits[m * self.words + j / 64] |= 1 << (j % 64);
    }
    pub fn contains(&self, m: usize, j: usize) -> bool {
        self.bits[m * self.words + j / 64] & (1 << (j % 64)) != 0
    }
    /// The pixels in pixel m's window, ascending.
    pub fn window(&self, m: usize) -> Vec<usize> {
        (0..self.hw).filter(|&j| self.contains(m, j)).collect()
    }
    pub fn size(&self, m: usize) -> usize {
        self.bits[m * self.words..(m + 1) * self.words].iter().map(|w| w.count_ones() as usize).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_cover_every_pixel_once() {
        let shape = ImageShape { c: 2, h: 7, w: 9 };
        for boundary in [Boundary::Zeros, Boundary::Circular] {
            for p in [1, 3, 5, 9, 15] {
                let groups = els_groups(shape, p, boundary, true);
                let mut seen: Vec<usize> = groups.iter().flat_map(|g| g.pixels.clone()).collect();
                seen.sort();
                assert_eq!(seen, (0..63).collect::<Vec<_>>(), "{boundary:?} P={p}");
            }
        }
        // interior, 2r top values, 2r bottom..: (2r+1)^2 groups when the image is big enough
        assert_eq!(els_groups(shape, 3, Boundary::Zeros, true).len(), 9);
    }

    #[test]
    fn zero_padding_points_at_the_zero_slot() {
        let shape = ImageShape { c: 1, h: 4, w: 4 };
        let mut idx = Vec::new();
        patch_indices(shape, 3, 0, 0, false, &mut idx);
        assert_eq!(idx, vec![16, 16, 16, 16, 0, 1, 16, 4, 5]);
        idx.clear();
        patch_indices(shape, 3, 0, 0, true, &mut idx);
        assert_eq!(idx, vec![15, 12, 13, 3, 0, 1, 7, 4, 5]);
    }
}
