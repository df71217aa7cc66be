//! The training set on a burn device, with the caches that depend only on (dataset, P), and
//! the entry point every machine is reached through.

use std::collections::HashMap;
use std::sync::Arc;

use burn::tensor::{Device, Int, Tensor, TensorData};

use super::control::{Cancelled, Control};
use super::gaussian::{GaussianModel, MAX_GAUSSIAN_VALUES};
use super::geometry::{ImageShape, PixelGroup};
use super::machine::{Boundary, MachineKind, max_patch};
use super::pca_locality::{LocalityMasks, PCA_THRESHOLD, PixelWindows};

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
    /// meaningful P (see [`max_patch`]) a window changes nothing but the cost, and an absurd P
    /// would otherwise size index tables by P².
    pub fn effective_patch(&self, shape: ImageShape) -> usize {
        (self.patch.max(1) | 1).min(max_patch(self.machine, self.boundary, shape.h, shape.w) as usize)
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

/// Precomputed keys of one pixel group, one entry per chunk of training images.
pub(crate) struct KeyChunk {
    /// [Kc, D+1]: centred patches with their squared norm appended, transposed to [D+1, Kc].
    pub keys_aug_t: Tensor<2>,
    /// [Kc, C]: centred centre pixels.
    pub values: Tensor<2>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct GeometryKey {
    pub patch: usize,
    pub boundary: Boundary,
    pub equivariant: bool,
}

pub(crate) struct DeviceGroup {
    pub host: PixelGroup,
    pub query_idx: Tensor<1, Int>,
    pub key_idx: Tensor<1, Int>,
    /// Training images per key chunk, so a chunk's logits stay near `chunk_logits` entries.
    pub images_per_chunk: usize,
    /// A pixel whose window overhang no other pixel shares: its only keys are the same
    /// location in every training image, which is exactly the Local machine there. Such
    /// pixels (almost all of them once P nears the image side) are computed by the Local
    /// machine's window sums instead of cutting P²-long keys that are mostly zeros.
    pub via_local: bool,
    /// A zeros-boundary group with few key positions: the fused CPU path computes it straight
    /// from the training images ([`super::direct`]) instead of cutting a key bank.
    pub direct: bool,
}

impl DeviceGroup {
    /// Whether the group is computed by streaming its keys through the kernel.
    pub fn streams(&self) -> bool {
        !self.via_local && !self.host.key_pixels.is_empty()
    }
    /// Whether the fused CPU path keeps a key bank for it.
    pub fn banked_on_host(&self) -> bool {
        self.streams() && !self.direct
    }
}

/// How the local machines are computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElsPath {
    /// The fused CPU kernel on host key banks ([`super::fused_cpu`]); the CPU default.
    HostKernel,
    /// The fused op ([`super::els_op`]): the cubecl kernel on a GPU, the fused CPU kernel on
    /// flex; the GPU default. Keys are cut on the fly, no bank is kept.
    Op,
    /// Plain burn ops (matmul, then a streaming softmax): the reference the others are
    /// tested against.
    BurnOps,
}

/// The fused op's index tables for one geometry, on the device.
pub(crate) struct OpTables {
    /// [Q·D]: flat indices into x's row of every query patch, block by block.
    pub query_idx: Tensor<1, Int>,
    /// [Kpos, D]: flat indices into an image row of every key position.
    pub key_idx: Tensor<2, Int>,
    /// [B, 5]: the blocks (see [`super::els_op::Block`]).
    pub blocks: Tensor<2, Int>,
    /// Output pixel of each query row.
    pub pixels: Vec<usize>,
    /// Pixels with no admissible training patch (circular windows larger than the image).
    pub empty: Vec<usize>,
    pub n_blocks: usize,
    /// Per query row: its first key row and how many it has (for decoding winners).
    pub query_keys: Vec<(u32, u32)>,
    /// Training-image pixel (patch centre) of each key row.
    pub key_row_pixel: Vec<u32>,
    /// Key positions in the largest block (its keys are N times that).
    pub max_positions: usize,
    pub bytes: usize,
}

/// The training set as the machines see it, plus everything cached between calls.
pub struct Denoiser {
    pub(crate) device: Device,
    pub(crate) n: usize,
    pub(crate) shape: ImageShape,
    /// Per-channel mean pixel m; machines work on φ − m and x − a·m, which leaves every
    /// distance unchanged but keeps float32 accurate at small t (SCIENCE.md).
    pub(crate) mean: Vec<f32>,
    /// [N, C·H·W + 1]: centred training images, flat, with a trailing zero slot.
    pub(crate) images: Tensor<2>,
    /// Host copy of the centred images, for stats and inspection.
    pub(crate) host_centred: Arc<Vec<f32>>,
    /// The images as given ([N, C·H·W]): the Gaussian machines fit their float64 covariance
    /// to these, not to a float32 re-centring of them.
    pub(crate) host_images: Arc<Vec<f32>>,
    /// The Gaussian machines' model of the training set, fitted on first use and kept for the
    /// dataset's lifetime (its eigendecomposition is the expensive part).
    pub(crate) gaussian: Option<Arc<GaussianModel>>,
    /// PCA-locality masks per (ᾱ, threshold), oldest first.
    pub(crate) pca_masks: Vec<((u64, u64), Arc<LocalityMasks>)>,
    /// The PCA-locality machine's mask threshold τ ([`PCA_THRESHOLD`]; tests set 0, which
    /// makes every window the whole image and the machine the Ideal one).
    pub pca_threshold: f64,
    /// The trained network the CNN machine runs, or why there is none for this training set.
    pub(crate) cnn: Result<Arc<super::cnn::Cnn>, String>,
    /// Logit entries one chunk may hold; bounds memory whatever N is. 2¹⁸ (1 MB of f32)
    /// keeps each temporary in L2 and under the allocator's mmap threshold: with 16 MB
    /// chunks a third of a call went to page faults on fresh buffers.
    pub chunk_logits: usize,
    /// Everything cached between calls (pixel groups, key banks, the equivariant machine's
    /// shift tables) is kept while it fits in this many bytes together. 1.5 GB holds every P
    /// of the bundled 2000-image sets and keeps a 20-step N = 10000 run under 2 GB resident.
    pub cache_budget_bytes: usize,
    pub(crate) groups: HashMap<GeometryKey, Arc<Vec<DeviceGroup>>>,
    pub(crate) banks: HashMap<GeometryKey, Arc<Vec<Vec<KeyChunk>>>>,
    pub(crate) es_index: Option<(Tensor<1, Int>, Tensor<3, Int>)>,
    /// Which implementation the local machines (ELS, LS, Local) run through; tests switch it
    /// to check one path against another.
    pub els_path: ElsPath,
    /// The fused op's tables per geometry (see [`super::els_op`]).
    pub(crate) op_tables: HashMap<GeometryKey, Arc<OpTables>>,
    pub(crate) host_banks: HashMap<GeometryKey, Arc<Vec<Vec<super::fused_cpu::HostChunk>>>>,
}

impl Denoiser {
    /// Puts `images` ([N, C, H, W], values in [−1, 1]) on `device`.
    pub fn new(images: &[f32], n: usize, shape: ImageShape, device: &Device) -> Self {
        assert_eq!(images.len(), n * shape.len(), "training images do not match their shape");
        assert!(n > 0, "a training set needs at least one image");
        let hw = shape.pixels();
        let mut mean = vec![0f64; shape.c];
        for img in images.chunks_exact(shape.len()) {
            for (c, plane) in img.chunks_exact(hw).enumerate() {
                mean[c] += plane.iter().map(|&v| v as f64).sum::<f64>();
            }
        }
        let mean: Vec<f32> = mean.iter().map(|s| (s / (n * hw) as f64) as f32).collect();
        let stride = shape.len() + 1;
        let mut centred = vec![0f32; n * stride];
        let mut host = Vec::with_capacity(n * shape.len());
        for (k, img) in images.chunks_exact(shape.len()).enumerate() {
            for (idx, &v) in img.iter().enumerate() {
                let cv = v - mean[idx / hw];
                centred[k * stride + idx] = cv;
                host.push(cv);
            }
        }
        let host_images = Arc::new(images.to_vec());
        let images = Tensor::<2>::from_data(TensorData::new(centred, [n, stride]), device);
        Self {
            device: device.clone(),
            n,
            shape,
            mean,
            images,
            host_centred: Arc::new(host),
            host_images,
            gaussian: None,
            pca_masks: Vec::new(),
            pca_threshold: PCA_THRESHOLD,
            cnn: Err("no trained CNN is loaded for this training set (train one with `morphogen train`)".into()),
            chunk_logits: 1 << 18,
            cache_budget_bytes: 3 << 29,
            groups: HashMap::new(),
            banks: HashMap::new(),
            es_index: None,
            els_path: if *device == Device::flex() { ElsPath::HostKernel } else { ElsPath::Op },
            op_tables: HashMap::new(),
            host_banks: HashMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.n
    }
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
    pub fn shape(&self) -> ImageShape {
        self.shape
    }
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Whether `call` fits in memory on this training set: the index tables of the local
    /// machines grow as H·W·C·P² and the equivariant machine's as C·(H·W)², so a large image
    /// is refused here with a message instead of aborting on an allocation.
    pub fn check_call(&self, call: &Call) -> Result<(), String> {
        let s = self.shape;
        let hw = s.pixels() as f64;
        let (bytes, what) = match call.machine {
            MachineKind::Ideal => return Ok(()),
            MachineKind::Equivariant => (ES_BYTES_PER_ENTRY * s.c as f64 * hw * hw, "the equivariant machine"),
            MachineKind::Local | MachineKind::Els => {
                let p = call.effective_patch(s) as f64;
                (2.0 * 8.0 * hw * s.c as f64 * p * p, "the patch index tables")
            }
            MachineKind::Pspc => return Ok(()),
            MachineKind::Cnn => {
                return self.cnn.as_ref().map(|_| ()).map_err(|e| format!("the CNN machine cannot run: {e}"));
            }
            MachineKind::Gaussian | MachineKind::PcaLocality => {
                if s.len() > MAX_GAUSSIAN_VALUES {
                    return Err(format!(
                        "{} works on the D×D covariance of all C·H·W = {} values of an image in float64; \
                         it is limited to D ≤ {MAX_GAUSSIAN_VALUES} (64×64 gray, 36×36 RGB); use smaller images",
                        call.machine.title(),
                        s.len()
                    ));
                }
                return Ok(());
            }
        };
        let limit = self.cache_budget_bytes.max(MIN_CALL_BYTES) as f64;
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

    /// [`Denoiser::check_call`] for every step of a run: the patch size changes per step.
    pub fn check_run(&self, cfg: &super::sampler::SamplerConfig) -> Result<(), String> {
        let s = self.shape;
        (0..cfg.steps).try_for_each(|k| {
            self.check_call(&Call::new(cfg.machine, cfg.boundary, cfg.patch_at(k, s.h, s.w) as usize, 0.5))
        })
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
        match call.machine {
            MachineKind::Ideal => self.ideal(x, call, ctl),
            MachineKind::Equivariant => self.equivariant(x, call, ctl),
            MachineKind::Local => self.local(x, call, ctl),
            MachineKind::Els => self.els(x, call, true, ctl),
            MachineKind::Gaussian => self.gaussian_machine(x, call, ctl),
            MachineKind::Pspc => self.pspc(x, call, ctl),
            MachineKind::PcaLocality => self.pca_locality(x, call, ctl),
            MachineKind::Cnn => self.cnn_machine(x, call, ctl),
        }
    }

    /// x − a·m, flat, with the trailing zero slot: [1, C·H·W + 1].
    pub(crate) fn centred_query(&self, x: &[f32], a: f64) -> Tensor<2> {
        let hw = self.shape.pixels();
        let mut v: Vec<f32> =
            x.iter().enumerate().map(|(i, &xv)| (xv as f64 - a * self.mean[i / hw] as f64) as f32).collect();
        v.push(0.0);
        let len = v.len();
        Tensor::from_data(TensorData::new(v, [1, len]), &self.device)
    }

    pub(crate) fn int_tensor(&self, idx: &[i64]) -> Tensor<1, Int> {
        Tensor::from_data(TensorData::new(idx.to_vec(), [idx.len()]), &self.device)
    }

    /// Index of the nearest training image to `y` ([C, H, W]) and the RMS distance to it.
    pub fn nearest_training(&self, y: &[f32]) -> (usize, f32) {
        let hw = self.shape.pixels();
        let len = self.shape.len();
        let yc: Vec<f32> = y.iter().enumerate().map(|(i, &v)| v - self.mean[i / hw]).collect();
        let mut best = (0, f64::INFINITY);
        for (k, img) in self.host_centred.chunks_exact(len).enumerate() {
            let d: f64 = img.iter().zip(&yc).map(|(&a, &b)| ((a - b) as f64).powi(2)).sum();
            if d < best.1 {
                best = (k, d);
            }
        }
        (best.0, (best.1 / len as f64).sqrt() as f32)
    }

    /// Training image `k` in [−1, 1] ([C, H, W]).
    pub fn training_image(&self, k: usize) -> Vec<f32> {
        let hw = self.shape.pixels();
        let len = self.shape.len();
        self.host_centred[k * len..(k + 1) * len].iter().enumerate().map(|(i, &v)| v + self.mean[i / hw]).collect()
    }
}

impl Denoiser {
    /// Fills x̂₀ and sums the entropy of the groups computed by the Local machine (see
    /// [`DeviceGroup::via_local`]); returns that entropy sum.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn fill_via_local(
        &mut self,
        x: &[f32],
        call: &Call,
        patch: usize,
        groups: &[DeviceGroup],
        x0: &mut [f32],
        maps: &mut Option<PixelMaps>,
        ctl: &mut Control,
    ) -> Result<f64, Cancelled> {
        if !groups.iter().any(|g| g.via_local) {
            return Ok(0.0);
        }
        let local = Call { machine: MachineKind::Local, patch, ..*call };
        let (lx0, entropy, winner) = self.local_parts(x, &local, ctl)?;
        let (c, hw) = (self.shape.c, self.shape.pixels());
        let mut entropy_sum = 0f64;
        for px in groups.iter().filter(|g| g.via_local).map(|g| g.host.pixels[0]) {
            for ch in 0..c {
                x0[ch * hw + px] = lx0[ch * hw + px];
            }
            entropy_sum += entropy.as_ref().map(|e| e[px] as f64).unwrap_or(0.0);
            if let (Some(m), Some(w), Some(e)) = (maps.as_mut(), &winner, &entropy) {
                (m.winner[px], m.source[px], m.entropy[px]) = (w[px] as u32, px as u32, e[px]);
            }
        }
        Ok(entropy_sum)
    }
}

/// Bytes per (C·(H·W)²) entry of the equivariant machine: two i64 index tables plus two f32
/// temporaries of that size.
const ES_BYTES_PER_ENTRY: f64 = 24.0;
/// The smallest budget a single call is allowed, whatever `cache_budget_bytes` says (tests
/// set the budget to 0 to turn caching off).
const MIN_CALL_BYTES: usize = 3 << 29;

impl Denoiser {
    pub(crate) fn groups_bytes(groups: &[DeviceGroup]) -> usize {
        // Host and device copies of both index tables.
        groups.iter().map(|g| (g.host.query_idx.len() + g.host.key_idx.len()) * 8 * 2 + g.host.pixels.len() * 16).sum()
    }

    /// Bytes of a geometry's key bank: every key with its norm, plus its values (the fused
    /// CPU path's bank leaves out the groups it computes directly).
    fn bank_bytes(&self, key: GeometryKey) -> usize {
        let c = self.shape.c;
        let d = c * key.patch * key.patch;
        let kept =
            |g: &&DeviceGroup| if self.els_path == ElsPath::HostKernel { g.banked_on_host() } else { g.streams() };
        self.groups
            .get(&key)
            .map(|gs| gs.iter().filter(kept).map(|g| self.n * g.host.keys_per_image() * (d + 1 + c) * 4).sum())
            .unwrap_or(0)
    }

    /// Bytes held by every cache together: what `cache_budget_bytes` bounds.
    pub fn cache_bytes(&self) -> usize {
        let groups: usize = self.groups.values().map(|g| Self::groups_bytes(g)).sum();
        let banks: usize = self.banks.keys().chain(self.host_banks.keys()).map(|&k| self.bank_bytes(k)).sum();
        let es = self.es_index.as_ref().map(|_| self.shape.c * self.shape.pixels().pow(2) * 16).unwrap_or(0);
        let tables: usize = self.op_tables.values().map(|t| t.bytes).sum();
        let gaussian = self.gaussian.as_ref().map(|g| g.bytes()).unwrap_or(0);
        let masks = self.pca_masks.len() * self.shape.len().pow(2) * 4;
        groups + banks + es + tables + gaussian + masks
    }

    /// Drops every key bank, the equivariant tables and every geometry's pixel groups but
    /// `keep`'s (the call in progress holds on to those).
    fn evict_all_but(&mut self, keep: GeometryKey) {
        self.pca_masks.clear();
        self.groups.retain(|k, _| *k == keep);
        self.op_tables.retain(|k, _| *k == keep);
        self.banks.clear();
        self.drop_host_banks();
        self.es_index = None;
    }

    /// Host key banks run to a gigabyte, and handing that back to the OS takes ~0.3 ms a MB:
    /// a fifth of a second the next step would wait for. They are dropped on a thread of
    /// their own (still counted out of the budget at once: nothing else holds them).
    fn drop_host_banks(&mut self) {
        let banks = std::mem::take(&mut self.host_banks);
        if !banks.is_empty() {
            std::thread::spawn(move || drop(banks));
        }
    }

    /// Drops everything cached (before new pixel groups or equivariant tables move in).
    pub(crate) fn evict_everything(&mut self) {
        self.pca_masks.clear();
        self.groups.clear();
        self.op_tables.clear();
        self.banks.clear();
        self.drop_host_banks();
        self.es_index = None;
    }

    /// Makes room under the one budget for a bank of `key`; false when the bank alone would
    /// not fit, so the caller streams its keys instead of caching them.
    pub(crate) fn make_room(&mut self, key: GeometryKey) -> bool {
        let need = self.bank_bytes(key);
        let groups = self.groups.get(&key).map(|g| Self::groups_bytes(g)).unwrap_or(0);
        if need + groups > self.cache_budget_bytes {
            return false;
        }
        if self.cache_bytes() + need > self.cache_budget_bytes {
            self.evict_all_but(key);
        }
        true
    }

    /// Makes room for new pixel groups of `bytes` (they are always kept: every call needs them).
    pub(crate) fn make_room_for_groups(&mut self, bytes: usize) {
        if self.cache_bytes() + bytes > self.cache_budget_bytes {
            self.evict_everything();
        }
    }
}

/// Reads a small tensor back to the host as f32.
pub(crate) fn to_host(t: Tensor<2>) -> Vec<f32> {
    t.try_into_vec_as::<f32>().expect("a float tensor reads back as f32")
}
