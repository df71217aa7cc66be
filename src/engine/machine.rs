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
}

impl Needs {
    /// Needs nothing beyond the training set (the base of each machine's `Needs { .. }`).
    pub const NONE: Needs = Needs { patch: false, boundary: false, training_size: false, weights: false };
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
}

impl Call {
    pub fn new(machine: MachineKind, boundary: Boundary, patch: usize, alpha_bar: f64) -> Self {
        Self { machine, boundary, patch, alpha_bar, entropy: false, maps: false }
    }
    /// The odd patch size this call really uses on `shape`: beyond the machine's largest
    /// meaningful P (see [`Machine::max_patch`]) a window changes nothing but the cost, and an
    /// absurd P would otherwise size index tables by P².
    pub fn effective_patch(&self, shape: ImageShape) -> usize {
        (self.patch.max(1) | 1).min(self.machine.max_patch(self.boundary, shape.h, shape.w) as usize)
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
    /// Whether `call` fits in memory and can run on this training set ([`Machine::check`]).
    pub fn check_call(&self, call: &Call) -> Result<(), String> {
        call.machine.check(self, call)
    }

    /// x̂₀(x, t) for the machine named in `call`. `x` is [C, H, W].
    ///
    /// Panics when `call` fails [`Denoiser::check_call`]: callers check first (the worker turns
    /// a panic into an error message, but an allocation failure would abort the process).
    pub fn denoise(&mut self, x: &[f32], call: &Call, ctl: &mut Control) -> Result<Denoised, Cancelled> {
        assert_eq!(x.len(), self.shape.len(), "x does not have the training images' shape");
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
        assert!(y < self.shape.h && px < self.shape.w, "pixel ({y}, {px}) is outside the image");
        call.machine.inspect(self, x, call, Probe { y, x: px, top }, ctl)
    }
}

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
    let s = den.shape;
    let p = call.effective_patch(s) as f64;
    check_bytes(den, call, 2.0 * 8.0 * s.pixels() as f64 * s.c as f64 * p * p, "the patch index tables")
}
