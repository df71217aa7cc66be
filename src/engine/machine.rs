//! What a machine is: the [`Machine`] trait every denoiser implements, the [`MachineKind`]
//! handle runs and recipes name one by, and the [`Call`] / [`Denoised`] it takes and gives.
//!
//! The machines themselves, one per file, and the registry that lists them are in
//! [`super::machines`]; this file knows none of them.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

use serde::Serialize;

use super::analysis::inspect::Inspection;
use super::analysis::jacobian::Jacobian;
use super::control::{Cancelled, Control};
use super::denoiser::Denoiser;
use super::geometry::{Boundary, ImageShape, PixelGroup, PixelWindows};

/// What a machine needs from a run's settings and from its training set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    /// The patch size (P) changes its output.
    pub patch: bool,
    /// The boundary setting (zeros or circular) changes its output.
    pub boundary: bool,
    /// It only runs on images of the training images' own size.
    pub training_size: bool,
    /// It needs trained weights for the dataset.
    pub weights: bool,
    /// Its output at a pixel depends only on that pixel's own P×P window, so a patch size per
    /// pixel (a painted locality map) is defined: pixel by pixel, the uniform call at that
    /// pixel's P.
    pub pixel_patch: bool,
}

impl Needs {
    /// Needs nothing beyond the training set (the base of each machine's `Needs { .. }`).
    pub const NONE: Needs =
        Needs { patch: false, boundary: false, training_size: false, weights: false, pixel_patch: false };
}

/// What a machine says about itself; each machine's file holds one as a constant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Info {
    /// The name the CLI and recipes use (kebab-case, stable: recipes store it).
    pub name: &'static str,
    /// Other names `--machine` accepts.
    pub aliases: &'static [&'static str],
    /// The name the studio shows.
    pub title: &'static str,
    /// One line for a tooltip: what it does and what it costs.
    pub describe: &'static str,
    pub needs: Needs,
}

/// The patch sizes `bench` times a machine at, on 28×28 gray (MNIST) and 32×32 RGB images
/// (0 for a machine without a patch; empty: not timed on that set).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BenchPatches {
    pub gray: &'static [usize],
    pub rgb: &'static [usize],
}

/// Where the inspector looks: pixel (y, x) of x̂₀, and how many votes to keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    pub y: usize,
    pub x: usize,
    pub top: usize,
}

/// One denoiser: how it names and describes itself, what it needs, and x̂₀ for a call.
///
/// A machine is a unit struct in its own file under `engine/machines/`, with its [`Info`]
/// constant and its per-dataset state (a [`crate::engine::denoiser::State`]) beside it; one line in
/// [`super::machines::REGISTRY`] puts it in the CLI, recipes, both studio pickers, the zoo
/// and `bench`.
pub trait Machine: Send + Sync + 'static {
    /// Who it is: names, description and needs, as one constant.
    fn info(&self) -> &'static Info;
    /// The name the CLI and recipes use (kebab-case, stable: recipes store it).
    fn name(&self) -> &'static str {
        self.info().name
    }
    /// Other names `--machine` accepts.
    fn aliases(&self) -> &'static [&'static str] {
        self.info().aliases
    }
    /// The name the studio shows.
    fn title(&self) -> &'static str {
        self.info().title
    }
    /// One line for a tooltip: what it does and what it costs.
    fn describe(&self) -> &'static str {
        self.info().describe
    }
    fn needs(&self) -> Needs {
        self.info().needs
    }
    /// The largest patch size that still changes the result on an H×W image: beyond
    /// 2·max(H,W)−1 a zero-padded window covers the whole image from every pixel.
    fn max_patch(&self, _boundary: Boundary, h: usize, w: usize) -> u32 {
        (2 * h.max(w) - 1) as u32
    }
    /// Whether `call` can run on this training set (fits in memory, has weights), checked
    /// before anything is allocated, so a large image is refused with a message instead of
    /// aborting on an allocation.
    fn check(&self, _den: &Denoiser, _call: &Call) -> Result<(), String> {
        Ok(())
    }
    /// x̂₀(x, t), `x` laid out [C, H, W]. Cancellable between chunks through `ctl`.
    fn denoise(&self, den: &mut Denoiser, x: &[f32], call: &Call, ctl: &mut Control) -> Result<Denoised, Cancelled>;
    /// x̂₀ with one patch size per canvas pixel (`patches`, [H·W], each already odd and within
    /// [`Call::effective_patch`]), for machines with [`Needs::pixel_patch`]. By default each
    /// distinct P is one whole uniform call, kept at its pixels (the Local machine's window
    /// sums cost the same at any pixel count); ELS runs each P on just its pixels.
    fn denoise_patch_map(
        &self,
        den: &mut Denoiser,
        x: &[f32],
        call: &Call,
        patches: &[u32],
        ctl: &mut Control,
    ) -> Result<Denoised, Cancelled> {
        compose_patch_map(den, x, call, patches, &mut |den, part, _only| self.denoise(den, x, part, ctl))
    }
    /// The candidates that vote for one pixel, ranked (machines without votes return their
    /// x̂₀ at the pixel and what they have instead: a filter row, nothing).
    fn inspect(
        &self,
        den: &mut Denoiser,
        x: &[f32],
        call: &Call,
        at: Probe,
        ctl: &Control,
    ) -> Result<Inspection, Cancelled>;
    /// ∂x̂₀ at one pixel with respect to every value of x_t ([`Jacobian`]): what the pixel is
    /// sensitive to. None for a machine whose Jacobian is not written yet.
    fn jacobian(
        &self,
        _den: &mut Denoiser,
        _x: &[f32],
        _call: &Call,
        _at: Probe,
        _ctl: &Control,
    ) -> Result<Option<Jacobian>, Cancelled> {
        Ok(None)
    }
    /// FLOPs of one call on N images of `shape` at patch size `p` (SCIENCE.md's cost table):
    /// what `bench` divides by the time.
    fn flops(&self, n: usize, shape: ImageShape, p: usize, boundary: Boundary) -> f64;
    /// Why a machine without a vote over training candidates has no provenance map, and what
    /// it has instead (the studio shows this where the map would be); None for the others.
    fn without_votes(&self) -> Option<&'static str> {
        None
    }
    /// Where `bench` times it: by default once on MNIST (at P = 7 where P matters), and not
    /// at all when it needs trained weights.
    fn bench_patches(&self) -> BenchPatches {
        let needs = self.needs();
        let gray: &'static [usize] = if needs.weights {
            &[]
        } else if needs.patch {
            &[7]
        } else {
            &[0]
        };
        BenchPatches { gray, rgb: &[] }
    }
}

/// A handle to one registered machine: copied into settings, calls and recipes, compared and
/// stored by name.
#[derive(Clone, Copy)]
pub struct MachineKind(pub(crate) &'static dyn Machine);

impl MachineKind {
    /// Whether the patch size matters for this machine.
    pub fn uses_patch(&self) -> bool {
        self.0.needs().patch
    }
}

impl Deref for MachineKind {
    type Target = dyn Machine;
    fn deref(&self) -> &Self::Target {
        self.0
    }
}

impl PartialEq for MachineKind {
    fn eq(&self, other: &Self) -> bool {
        self.0.name() == other.0.name()
    }
}
impl Eq for MachineKind {}
impl Hash for MachineKind {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.name().hash(state)
    }
}
impl fmt::Debug for MachineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.title())
    }
}
impl Serialize for MachineKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.name())
    }
}

/// One denoiser evaluation: which machine, where in time, how local.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Call {
    pub machine: MachineKind,
    pub boundary: Boundary,
    /// Patch size (odd); ignored by the ideal and equivariant machines.
    pub patch: usize,
    /// ᾱ at the time of x.
    pub alpha_bar: f64,
    /// Also compute the mean entropy of the softmax weights (costs one more pass per chunk).
    pub entropy: bool,
    /// Also return the per-pixel provenance maps ([`PixelMaps`]; implies `entropy`).
    pub maps: bool,
    /// The canvas x lives on, [H, W], when it is not the training images' size: ELS is local
    /// and translation-equivariant, so it is defined on a canvas of any size (as is the
    /// fully convolutional CNN). None: the training images' own size.
    pub canvas: Option<[usize; 2]>,
}

impl Call {
    pub fn new(machine: MachineKind, boundary: Boundary, patch: usize, alpha_bar: f64) -> Self {
        Self { machine, boundary, patch, alpha_bar, entropy: false, maps: false, canvas: None }
    }
    /// This call on an H×W canvas (None when that is the training images' size, so a call
    /// on the training size is one thing however it was made).
    pub fn on_canvas(self, train: ImageShape, h: usize, w: usize) -> Self {
        Self { canvas: ((h, w) != (train.h, train.w)).then_some([h, w]), ..self }
    }
    /// The shape of x (and x̂₀) for this call on a training set of `train`'s shape.
    pub fn canvas_shape(&self, train: ImageShape) -> ImageShape {
        match self.canvas {
            Some([h, w]) => ImageShape { c: train.c, h, w },
            None => train,
        }
    }
    /// The odd patch size this call really uses on `shape` (the training images'): beyond the
    /// machine's largest meaningful P (see [`Machine::max_patch`]) a window changes nothing but
    /// the cost, and an absurd P would otherwise size index tables by P². On another canvas a
    /// zero-padded window reaches as far as the larger of the two images, and a circular one
    /// wraps the canvas.
    pub fn effective_patch(&self, shape: ImageShape) -> usize {
        let canvas = self.canvas_shape(shape);
        let (h, w) = match self.boundary {
            Boundary::Circular => (canvas.h, canvas.w),
            Boundary::Zeros => (canvas.h.max(shape.h), canvas.w.max(shape.w)),
        };
        (self.patch.max(1) | 1).min(self.machine.max_patch(self.boundary, h, w) as usize)
    }

    /// a = √ᾱ and σ² = 1 − ᾱ, kept away from exactly zero so the softmax stays defined.
    pub(crate) fn scales(&self) -> (f64, f64) {
        let ab = self.alpha_bar.clamp(0.0, 1.0);
        (ab.sqrt(), (1.0 - ab).max(1e-12))
    }
}

/// What a machine returns for one call.
#[derive(Clone, Debug, PartialEq)]
pub struct Denoised {
    /// x̂₀, laid out like x: [C, H, W].
    pub x0: Vec<f32>,
    /// Mean over pixels of the softmax weights' entropy in nats (0 when not asked for):
    /// e^H is roughly how many training candidates vote.
    pub entropy: f32,
    /// Per-pixel provenance, when the call asked for it.
    pub maps: Option<PixelMaps>,
}

/// One patch size's call of a patch map, for the pixels it marks.
pub(crate) type PartCall<'a> = dyn FnMut(&mut Denoiser, &Call, &[bool]) -> Result<Denoised, Cancelled> + 'a;

/// x̂₀ of a per-pixel patch map, one distinct P at a time: `part` computes the call at that P
/// (asked for per-pixel maps, which carry the entropy) for at least the pixels `only` marks,
/// and each pixel keeps its own P's values.
pub(crate) fn compose_patch_map(
    den: &mut Denoiser,
    x: &[f32],
    call: &Call,
    patches: &[u32],
    part: &mut PartCall<'_>,
) -> Result<Denoised, Cancelled> {
    let hw = call.canvas_shape(den.shape).pixels();
    let mut out = Denoised::blank(x.len(), hw, call.maps);
    for (p, only) in pixels_by_patch(patches) {
        let computed = part(den, &Call { patch: p, maps: call.maps || call.entropy, ..*call }, &only)?;
        out.take_pixels(&computed, &only, hw);
    }
    out.entropy = if call.entropy { out.entropy / hw as f32 } else { 0.0 };
    Ok(out)
}

/// The distinct patch sizes of a per-pixel map, each with the pixels that use it, ascending.
pub fn pixels_by_patch(patches: &[u32]) -> Vec<(usize, Vec<bool>)> {
    let mut by: std::collections::BTreeMap<usize, Vec<bool>> = Default::default();
    for (px, &p) in patches.iter().enumerate() {
        by.entry(p as usize).or_insert_with(|| vec![false; patches.len()])[px] = true;
    }
    by.into_iter().collect()
}

impl Denoised {
    /// An x̂₀ of `len` values over `hw` pixels, all zero, to be filled part by part.
    pub(crate) fn blank(len: usize, hw: usize, maps: bool) -> Self {
        Self { x0: vec![0.0; len], entropy: 0.0, maps: maps.then(|| PixelMaps::empty(hw)) }
    }

    /// Copies `part`'s values at the pixels `only` marks (of `hw`) into self, and adds their
    /// entropy to `self.entropy` as a sum (the caller divides by the pixel count). `part`
    /// carries per-pixel entropy in its maps when it has any.
    pub(crate) fn take_pixels(&mut self, part: &Denoised, only: &[bool], hw: usize) {
        let c = self.x0.len() / hw;
        let mut entropy = 0f64;
        for px in (0..hw).filter(|&px| only[px]) {
            for ch in 0..c {
                self.x0[ch * hw + px] = part.x0[ch * hw + px];
            }
            if let Some(pm) = &part.maps {
                entropy += pm.entropy[px] as f64;
                if let Some(m) = self.maps.as_mut() {
                    (m.winner[px], m.source[px], m.entropy[px]) = (pm.winner[px], pm.source[px], pm.entropy[px]);
                }
            }
        }
        self.entropy += entropy as f32;
    }
}

/// Where each pixel of x̂₀ came from: the largest of its softmax weights, and how spread the
/// weights are. One value per pixel, [H·W] each.
#[derive(Clone, Debug, PartialEq)]
pub struct PixelMaps {
    /// The training image whose patch has the pixel's largest weight.
    pub winner: Vec<u32>,
    /// Centre of that patch in its image, as y·W + x (for the ideal and local machines, the
    /// pixel itself; for the equivariant machine, the shifted source).
    pub source: Vec<u32>,
    /// Entropy of the pixel's weights in nats (the ideal and equivariant machines share one
    /// softmax over the whole image, so every pixel holds the same value).
    pub entropy: Vec<f32>,
    /// The PCA-locality machine's learned window of every pixel (None for the others, whose
    /// windows are squares).
    pub windows: Option<Arc<PixelWindows>>,
}

impl PixelMaps {
    /// Maps for `hw` pixels before any is filled: no winner (`u32::MAX`, also what a pixel
    /// with no admissible training patch keeps), each pixel its own source.
    pub(crate) fn empty(hw: usize) -> Self {
        Self { winner: vec![u32::MAX; hw], source: (0..hw as u32).collect(), entropy: vec![0.0; hw], windows: None }
    }

    /// Fills a pixel group's entries from each query's winning column (image-major over the
    /// group's key positions: column = image·K + position) and entropy.
    pub(crate) fn set_group(&mut self, g: &PixelGroup, cols: &[u64], entropy: &[f32]) {
        let kg = g.keys_per_image().max(1) as u64;
        for (i, &px) in g.pixels.iter().enumerate() {
            self.winner[px] = (cols[i] / kg) as u32;
            self.source[px] = g.key_pixels[(cols[i] % kg) as usize] as u32;
            self.entropy[px] = entropy[i];
        }
    }

    /// How far, in pixels, each winning patch was taken from: |source − pixel| (Euclidean).
    pub fn offset(&self, w: usize) -> Vec<f32> {
        self.source
            .iter()
            .enumerate()
            .map(|(px, &src)| {
                let (dy, dx) =
                    ((px / w) as f32 - (src as usize / w) as f32, (px % w) as f32 - (src as usize % w) as f32);
                (dy * dy + dx * dx).sqrt()
            })
            .collect()
    }
}

impl Denoiser {
    /// Whether a per-pixel patch map can run: the machine takes one, the map has one odd
    /// P ≥ 1 per canvas pixel, and every distinct P fits ([`Denoiser::check_call`]).
    pub fn check_patch_map(&self, call: &Call, patches: &[u32]) -> Result<(), String> {
        if !call.machine.needs().pixel_patch {
            return Err(format!(
                "the {} machine takes no per-pixel patch map (ELS and Local do: their pixels each see only their own window)",
                call.machine.title()
            ));
        }
        let s = call.canvas_shape(self.shape);
        if patches.len() != s.pixels() {
            return Err(format!(
                "the patch map has {} values, not one per pixel of the {}×{} image",
                patches.len(),
                s.h,
                s.w
            ));
        }
        if let Some((px, p)) = patches.iter().enumerate().find(|(_, p)| *p % 2 == 0) {
            return Err(format!(
                "the patch map's P at row {}, column {} is {p}: every P must be odd and at least 1",
                px / s.w,
                px % s.w
            ));
        }
        for (p, _) in pixels_by_patch(patches) {
            self.check_call(&Call { patch: p, ..*call })?;
        }
        Ok(())
    }

    /// x̂₀ with a patch size per canvas pixel ([`Machine::denoise_patch_map`]); each P is
    /// first brought within [`Call::effective_patch`]. Panics when the map fails
    /// [`Denoiser::check_patch_map`].
    pub fn denoise_patch_map(
        &mut self,
        x: &[f32],
        call: &Call,
        patches: &[u32],
        ctl: &mut Control,
    ) -> Result<Denoised, Cancelled> {
        assert_eq!(x.len(), call.canvas_shape(self.shape).len(), "x does not have the call's canvas shape");
        if let Err(message) = self.check_patch_map(call, patches) {
            panic!("{message}");
        }
        let shape = self.shape;
        let patches: Vec<u32> =
            patches.iter().map(|&p| Call { patch: p as usize, ..*call }.effective_patch(shape) as u32).collect();
        call.machine.denoise_patch_map(self, x, call, &patches, ctl)
    }

    /// Whether `call` fits in memory and can run on this training set ([`Machine::check`]).
    pub fn check_call(&self, call: &Call) -> Result<(), String> {
        if let Some([h, w]) = call.canvas {
            if h == 0 || w == 0 || h > MAX_CANVAS || w > MAX_CANVAS {
                return Err(format!("a {h}×{w} canvas is out of range: each side must be 1 to {MAX_CANVAS} pixels"));
            }
            if call.machine.needs().training_size {
                let s = self.shape;
                return Err(format!(
                    "the {} machine needs the training images' own size ({}×{}), not a {h}×{w} canvas; \
                     ELS and the CNN run on a canvas of any size",
                    call.machine.title(),
                    s.h,
                    s.w
                ));
            }
        }
        call.machine.check(self, call)
    }

    /// x̂₀(x, t) for the machine named in `call`. `x` is [C, H, W].
    ///
    /// Panics when `call` fails [`Denoiser::check_call`]: callers check first (the worker turns
    /// a panic into an error message, but an allocation failure would abort the process).
    pub fn denoise(&mut self, x: &[f32], call: &Call, ctl: &mut Control) -> Result<Denoised, Cancelled> {
        assert_eq!(x.len(), call.canvas_shape(self.shape).len(), "x does not have the call's canvas shape");
        if let Err(message) = self.check_call(call) {
            panic!("{message}");
        }
        call.machine.denoise(self, x, call, ctl)
    }

    /// Ranks the candidates that vote for pixel (y, x) of x̂₀(x) under `call`. Checks `ctl`
    /// once per training image: the equivariant machine's ranking can take seconds.
    pub fn inspect(
        &mut self,
        x: &[f32],
        call: &Call,
        y: usize,
        px: usize,
        top: usize,
        ctl: &Control,
    ) -> Result<Inspection, Cancelled> {
        let s = call.canvas_shape(self.shape);
        assert!(y < s.h && px < s.w, "pixel ({y}, {px}) is outside the image");
        call.machine.inspect(self, x, call, Probe { y, x: px, top }, ctl)
    }

    /// ∂x̂₀[·, y, px] / ∂x_t under `call` ([`Machine::jacobian`]); None for machines without
    /// one yet. Checks `ctl` once per training image.
    pub fn jacobian(
        &mut self,
        x: &[f32],
        call: &Call,
        y: usize,
        px: usize,
        ctl: &Control,
    ) -> Result<Option<Jacobian>, Cancelled> {
        let s = call.canvas_shape(self.shape);
        assert!(y < s.h && px < s.w, "pixel ({y}, {px}) is outside the image");
        call.machine.jacobian(self, x, call, Probe { y, x: px, top: 0 }, ctl)
    }
}

/// The largest canvas side: 1024 pixels, four times the largest training image and far
/// beyond what a CPU run finishes in a session; every index table stays far from overflow.
pub const MAX_CANVAS: usize = 1024;

/// The smallest budget a single call is allowed, whatever `cache_budget_bytes` says (tests
/// set the budget to 0 to turn caching off).
const MIN_CALL_BYTES: usize = 3 << 29;

/// Refuses a call whose tables would need more than the budget: `bytes` for `what`.
pub(crate) fn check_bytes(den: &Denoiser, call: &Call, bytes: f64, what: &str) -> Result<(), String> {
    let s = den.shape;
    let limit = den.cache_budget_bytes.max(MIN_CALL_BYTES) as f64;
    if bytes > limit {
        return Err(format!(
            "{} {}×{}×{} images would need {:.1} GB for {what} (the limit is {:.1} GB); use smaller images{}",
            call.machine.title(),
            s.c,
            s.h,
            s.w,
            bytes / 1e9,
            limit / 1e9,
            if call.machine.uses_patch() { " or a smaller patch" } else { "" }
        ));
    }
    Ok(())
}

/// The local machines' check: their index tables grow as H·W·C·P².
pub(crate) fn check_patch_tables(den: &Denoiser, call: &Call) -> Result<(), String> {
    let s = call.canvas_shape(den.shape);
    let p = call.effective_patch(den.shape) as f64;
    let pixels = (s.pixels() + den.shape.pixels()) as f64;
    check_bytes(den, call, 8.0 * pixels * s.c as f64 * p * p, "the patch index tables")
}
