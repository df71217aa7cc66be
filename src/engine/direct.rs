//! Small ELS groups computed straight from the training images, without a key bank.
//!
//! Under the zeros boundary a group is the pixels whose P×P windows overhang the image the
//! same way, and its keys are the windows at those same positions in every training image.
//! Once P nears the image side the groups that remain (after the Local shortcut) hold only a
//! few pixels, and their keys, P² long and mostly zeros, were cut into a bank larger than the
//! work they serve: at P = 27 on MNIST, 1.2 GB read per call for 105 groups of two to four
//! pixels. Here each key is instead read from its image as `rows × cols` contiguous row
//! segments of the window's in-image part (identical for every key and query of the group),
//! so the work is the multiply-adds themselves on data that sits in cache.

use rayon::prelude::*;

use super::control::{CancelToken, Cancelled};
use super::denoiser::DeviceGroup;
use super::fused_cpu::simd::dot;
use super::geometry::ImageShape;

/// Groups with at most this many key positions per image go this way; larger ones (the
/// interior group at small P) are matrix products and stay on the gemm kernel.
pub const MAX_KEYS: usize = 16;

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
    /// Copies the window at `pixel` of a [C, H, W] image into `out` (channel, row, column).
    fn gather(&self, shape: ImageShape, img: &[f32], pixel: usize, out: &mut Vec<f32>) {
        out.clear();
        let (i, j) = ((pixel / shape.w) as isize, (pixel % shape.w) as isize);
        let hw = shape.pixels();
        for ch in 0..shape.c {
            for dy in self.dy0..=self.dy1 {
                let start = ch * hw + ((i + dy) as usize) * shape.w + (j + self.dx0) as usize;
                out.extend_from_slice(&img[start..start + self.cols()]);
            }
        }
    }
}

/// Online softmax of one query row, relative to its running max (see `fused_cpu::RowState`).
struct Row {
    m: f64,
    s: f64,
    u: f64,
    acc: Vec<f64>,
    /// (image, key pixel) of the largest logit so far.
    best: (u32, u32),
}

impl Row {
    fn new(c: usize) -> Self {
        Self { m: f64::NEG_INFINITY, s: 0.0, u: 0.0, acc: vec![0.0; c], best: (0, 0) }
    }
    fn add(&mut self, logit: f64, source: (u32, u32), value: impl Fn(usize) -> f64) {
        if logit > self.m {
            self.best = source;
            if self.m.is_finite() {
                super::fused_cpu::rebase(&mut self.s, &mut self.u, &mut self.acc, self.m - logit);
            }
            self.m = logit;
        }
        let shifted = logit - self.m;
        let p = shifted.exp();
        self.s += p;
        self.u += p * shifted;
        for (ch, a) in self.acc.iter_mut().enumerate() {
            *a += p * value(ch);
        }
    }
    fn entropy(&self) -> f64 {
        (self.s.ln() - self.u / self.s).max(0.0)
    }
}

/// x̂₀ − m (per channel, [Q, C] per group, in group order) and per-pixel entropy of every
/// group `take(g)` selects. `xc` is x − a·m ([C, H, W]), `images` the centred training set
/// ([N, C, H, W]); logits are (a/σ²)·q·k − (a²/2σ²)·‖k‖², as in the other paths. `cancel`
/// is checked every 16 images of every group.
#[allow(clippy::too_many_arguments)]
pub(crate) fn solve(
    shape: ImageShape,
    p: usize,
    groups: &[DeviceGroup],
    take: impl Fn(&DeviceGroup) -> bool + Sync,
    xc: &[f32],
    images: &[f32],
    n: usize,
    scale: f64,
    tail: f64,
    cancel: Option<CancelToken>,
) -> Result<Solved, Cancelled> {
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
            let window = Window::of(shape, p, pixels[0]);
            let d = window.len(c);
            let mut queries = Vec::with_capacity(pixels.len() * d);
            let mut buf = Vec::with_capacity(d);
            for &px in pixels {
                window.gather(shape, xc, px, &mut buf);
                queries.extend_from_slice(&buf);
            }
            let mut rows: Vec<Row> = (0..pixels.len()).map(|_| Row::new(c)).collect();
            let mut key = Vec::with_capacity(d);
            for (k, img) in images.chunks_exact(len).take(n).enumerate() {
                if k % 16 == 0 && cancelled() {
                    return Err(Cancelled);
                }
                for &kp in keys {
                    window.gather(shape, img, kp, &mut key);
                    let norm = dot(&key, &key) as f64;
                    for (q, row) in queries.chunks_exact(d).zip(rows.iter_mut()) {
                        let logit = scale * dot(q, &key) as f64 + tail * norm;
                        row.add(logit, (k as u32, kp as u32), |ch| img[ch * hw + kp] as f64);
                    }
                }
            }
            let mut out = Vec::with_capacity(pixels.len() * c);
            let mut entropy = Vec::with_capacity(pixels.len());
            for row in &rows {
                out.extend(row.acc.iter().map(|a| (a / row.s) as f32));
                entropy.push(row.entropy() as f32);
            }
            let winner = rows.iter().map(|r| r.best).collect();
            Ok(Some(GroupResult { out, entropy, winner }))
        })
        .collect()
}
