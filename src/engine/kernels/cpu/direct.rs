//! Small ELS groups computed straight from the training images, without a key bank.
//!
//! Under the zeros boundary a group is the pixels whose P×P windows overhang the image the
//! same way, and its keys are the windows at those same positions in every training image.
//! Once P nears the image side the groups that remain (after the Local shortcut) hold only a
//! few pixels, and their keys, P² long and mostly zeros, were cut into a bank larger than the
//! work they serve: at P = 27 on MNIST, 1.2 GB read per call for 105 groups of two to four
//! pixels. Here each key is instead read from its image as `rows × cols` contiguous row
//! segments of the window's in-image part (identical for every key and query of the group),
//! so the work is the multiply-adds themselves on data that sits in cache. Which groups go
//! this way is decided when the groups are built ([`super::super::groups::DIRECT_MAX_KEYS`]).

use rayon::prelude::*;

use super::super::super::control::{CancelToken, Cancelled};
use super::super::super::geometry::ImageShape;
use super::super::groups::DeviceGroup;
use super::fused::RowState;
use super::simd::window_dots;

/// Keys per block of logits: enough for the vectorised fold to run long rows, few enough that
/// a block's logits stay in L1.
const BLOCK_KEYS: usize = 256;

/// Per group: x̂₀ − m ([Q, C]), each pixel's entropy and winning (image, key pixel), or
/// `None` for groups not taken.
pub(crate) struct GroupResult {
    pub out: Vec<f32>,
    pub entropy: Vec<f32>,
    pub winner: Vec<(u32, u32)>,
}
type Solved = Vec<Option<GroupResult>>;

/// The in-image part of a group's windows, relative to each pixel: rows dy0..=dy1 and
/// columns dx0..=dx1 (the same for every pixel of a zeros-boundary group).
#[derive(Clone, Copy, Debug)]
struct Window {
    dy0: isize,
    dy1: isize,
    dx0: isize,
    dx1: isize,
}

impl Window {
    fn of(shape: ImageShape, p: usize, pixel: usize) -> Self {
        let r = (p / 2) as isize;
        let (i, j) = ((pixel / shape.w) as isize, (pixel % shape.w) as isize);
        let (h, w) = (shape.h as isize, shape.w as isize);
        Self { dy0: (-r).max(-i), dy1: r.min(h - 1 - i), dx0: (-r).max(-j), dx1: r.min(w - 1 - j) }
    }
    fn cols(&self) -> usize {
        (self.dx1 - self.dx0 + 1) as usize
    }
    fn len(&self, c: usize) -> usize {
        c * (self.dy1 - self.dy0 + 1) as usize * self.cols()
    }
    /// Offsets in a [C, H, W] image of the window's row segments at `pixel`, each
    /// `cols()` long, in (channel, row) order.
    fn row_starts(&self, shape: ImageShape, pixel: usize) -> Vec<usize> {
        let (i, j) = ((pixel / shape.w) as isize, (pixel % shape.w) as isize);
        let hw = shape.pixels();
        (0..shape.c)
            .flat_map(|ch| {
                (self.dy0..=self.dy1).map(move |dy| ch * hw + ((i + dy) as usize) * shape.w + (j + self.dx0) as usize)
            })
            .collect()
    }
    /// Copies the window at `pixel` of a [C, H, W] image into `out` (channel, row, column).
    fn gather(&self, shape: ImageShape, img: &[f32], pixel: usize, out: &mut Vec<f32>) {
        out.clear();
        for start in self.row_starts(shape, pixel) {
            out.extend_from_slice(&img[start..start + self.cols()]);
        }
    }
}

/// x̂₀ − m (per channel, [Q, C] per group, in group order) and per-pixel entropy of every
/// group `take(g)` selects. `xc` is x − a·m ([C, H, W]), `images` the centred training set
/// ([N, C, H, W]); logits are (a/σ²)·q·k − (a²/2σ²)·‖k‖², as in the other paths. `cancel`
/// is checked once per block of keys.
/// What every small group of one call reads: the query image, the training images and the
/// logit's two coefficients.
pub(crate) struct Inputs<'a> {
    /// The training images' shape (the keys').
    pub shape: ImageShape,
    /// The queries' canvas (the training shape, or another size: a zeros-boundary window
    /// overhangs its canvas as its keys' windows overhang theirs, so one [`Window`] fits both).
    pub canvas: ImageShape,
    pub patch: usize,
    /// x − a·m, [C, H, W].
    pub xc: &'a [f32],
    /// The centred training set, [N, C, H, W].
    pub images: &'a [f32],
    pub n: usize,
    /// a/σ², the coefficient of q·k.
    pub scale: f64,
    /// −a²/(2σ²), the coefficient of ‖k‖².
    pub tail: f64,
}

pub(crate) fn solve(
    inputs: &Inputs<'_>,
    groups: &[DeviceGroup],
    take: impl Fn(&DeviceGroup) -> bool + Sync,
    cancel: Option<CancelToken>,
) -> Result<Solved, Cancelled> {
    let Inputs { shape, canvas, patch: p, xc, images, n, scale, tail } = *inputs;
    let cancelled = || cancel.as_ref().is_some_and(|t| t.is_cancelled());
    let (c, len, hw) = (shape.c, shape.len(), shape.pixels());
    groups
        .par_iter()
        .map(|g| {
            if !take(g) {
                return Ok(None);
            }
            let pixels = &g.host.pixels;
            let keys = &g.host.key_pixels;
            let window = Window::of(canvas, p, pixels[0]);
            let d = window.len(c);
            let mut queries = Vec::with_capacity(pixels.len() * d);
            let mut buf = Vec::with_capacity(d);
            for &px in pixels {
                window.gather(canvas, xc, px, &mut buf);
                queries.extend_from_slice(&buf);
            }
            // Logits of a block of images' keys per query row, then one vectorised fold per
            // row (the fused kernel's): the exps are the bulk of the work here at large P.
            let q = pixels.len();
            let kg = keys.len();
            let per_block = (BLOCK_KEYS / kg).max(1);
            let mut state = RowState::new(q, c, true);
            // Each key is read in place, row segment by row segment.
            let starts: Vec<Vec<usize>> = keys.iter().map(|&kp| window.row_starts(shape, kp)).collect();
            let cols = window.cols();
            let mut qdots = vec![0f32; q];
            let mut logits = vec![0f32; q * per_block * kg]; // [Q, K_block]
            let mut values = vec![0f32; c * per_block * kg]; // [C, K_block]
            let mut n0 = 0;
            while n0 < n {
                if cancelled() {
                    return Err(Cancelled);
                }
                let nb = per_block.min(n - n0);
                let kb = nb * kg;
                for (b, img) in images[n0 * len..(n0 + nb) * len].chunks_exact(len).enumerate() {
                    for (j, &kp) in keys.iter().enumerate() {
                        let col = b * kg + j;
                        let norm = window_dots(img, &starts[j], cols, &queries, &mut qdots) as f64;
                        for (qi, &qd) in qdots.iter().enumerate() {
                            logits[qi * kb + col] = (scale * qd as f64 + tail * norm) as f32;
                        }
                        for ch in 0..c {
                            values[ch * kb + col] = img[ch * hw + kp];
                        }
                    }
                }
                for qi in 0..q {
                    let vals = |ch: usize| &values[ch * kb..(ch + 1) * kb];
                    state.fold_logits(qi, &mut logits[qi * kb..(qi + 1) * kb], (n0 * kg) as u64, vals);
                }
                n0 += nb;
            }
            let winner = state
                .argmax()
                .iter()
                .map(|&col| ((col as usize / kg) as u32, keys[col as usize % kg] as u32))
                .collect();
            let (out, entropy) = state.finish();
            Ok(Some(GroupResult { out, entropy, winner }))
        })
        .collect()
}
