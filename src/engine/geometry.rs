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
    els_groups_cancellable(shape, shape, p, boundary, equivariant, &|| false).expect("never cancelled")
}

/// [`els_groups`] for queries on a `canvas` of another size than the training images
/// (`train`): a canvas pixel's group holds the training positions whose window overhangs
/// *their* image exactly as the pixel's overhangs the canvas (zeros), or every fully interior
/// training position (circular, windows wrapping the canvas). `query_idx` and `pixels` index
/// the canvas, `key_idx` and `key_pixels` the training images. A group no training position
/// fits has no keys (its pixels get the mean pixel).
///
/// Asks `cancelled` once per image row (circular) or group (zeros) and gives up with `None`:
/// at large P on a large image the tables take a while to build.
pub fn els_groups_cancellable(
    train: ImageShape,
    canvas: ImageShape,
    p: usize,
    boundary: Boundary,
    equivariant: bool,
    cancelled: &dyn Fn() -> bool,
) -> Option<Vec<PixelGroup>> {
    assert_eq!(train.c, canvas.c, "the canvas has the training images' channels");
    assert!(equivariant || train == canvas, "the LS machine needs the training images' own size");
    let d = train.c * p * p;
    match boundary {
        Boundary::Circular => {
            let r = p / 2;
            let mut group = PixelGroup {
                pixels: (0..canvas.pixels()).collect(),
                query_idx: Vec::with_capacity(canvas.pixels() * d),
                key_idx: Vec::new(),
                key_pixels: Vec::new(),
            };
            for i in 0..canvas.h {
                if cancelled() {
                    return None;
                }
                for j in 0..canvas.w {
                    patch_indices(canvas, p, i, j, true, &mut group.query_idx);
                }
            }
            if p <= train.h && p <= train.w {
                for i in r..train.h - r {
                    if cancelled() {
                        return None;
                    }
                    for j in r..train.w - r {
                        patch_indices(train, p, i, j, false, &mut group.key_idx);
                        group.key_pixels.push(i * train.w + j);
                    }
                }
            }
            Some(vec![group])
        }
        Boundary::Zeros => {
            let mask =
                |s: ImageShape, i, j| if equivariant { overhang(s, p, i, j) } else { [i, j, usize::MAX, usize::MAX] };
            let mut by_mask: std::collections::BTreeMap<[usize; 4], Vec<usize>> = Default::default();
            for i in 0..canvas.h {
                for j in 0..canvas.w {
                    by_mask.entry(mask(canvas, i, j)).or_default().push(i * canvas.w + j);
                }
            }
            let mut keys_by_mask: std::collections::BTreeMap<[usize; 4], Vec<usize>> = Default::default();
            if train != canvas {
                for i in 0..train.h {
                    for j in 0..train.w {
                        keys_by_mask.entry(mask(train, i, j)).or_default().push(i * train.w + j);
                    }
                }
            }
            by_mask
                .into_iter()
                .map(|(m, pixels)| {
                    if cancelled() {
                        return None;
                    }
                    let mut query_idx = Vec::with_capacity(pixels.len() * d);
                    for &px in &pixels {
                        patch_indices(canvas, p, px / canvas.w, px % canvas.w, false, &mut query_idx);
                    }
                    if train == canvas {
                        return Some(PixelGroup {
                            key_pixels: pixels.clone(),
                            pixels,
                            key_idx: query_idx.clone(),
                            query_idx,
                        });
                    }
                    let key_pixels = keys_by_mask.remove(&m).unwrap_or_default();
                    let mut key_idx = Vec::with_capacity(key_pixels.len() * d);
                    for &kp in &key_pixels {
                        patch_indices(train, p, kp / train.w, kp % train.w, false, &mut key_idx);
                    }
                    Some(PixelGroup { pixels, query_idx, key_idx, key_pixels })
                })
                .collect()
        }
    }
}

/// Keeps only the pixels `only` marks (indexed by canvas pixel), with their query rows; the
/// keys stay as they are, so a group's key bank serves the restricted group too. A per-pixel
/// patch map runs each patch size's pixels this way through the same fused path.
pub fn restrict_group(g: &PixelGroup, only: &[bool]) -> PixelGroup {
    let d = if g.pixels.is_empty() { 0 } else { g.query_idx.len() / g.pixels.len() };
    let mut out = PixelGroup {
        pixels: Vec::new(),
        query_idx: Vec::new(),
        key_idx: g.key_idx.clone(),
        key_pixels: g.key_pixels.clone(),
    };
    for (i, &px) in g.pixels.iter().enumerate() {
        if only[px] {
            out.pixels.push(px);
            out.query_idx.extend_from_slice(&g.query_idx[i * d..(i + 1) * d]);
        }
    }
    out
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
