//! The training set on a burn device, and the one store every machine and kernel keeps its
//! per-dataset state in, under one memory budget.
//!
//! This file knows no machine and no kernel: a machine's state (the Gaussian fit, the PCA
//! masks, the CNN's weights, the kernels' key banks) is a [`State`] it puts here and finds
//! again by type, so a new machine adds a state without touching this file.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;

use burn::tensor::{Device, Int, Tensor, TensorData};

use super::geometry::ImageShape;

/// A machine's or kernel's per-dataset state: built lazily by its owner, counted against
/// [`Denoiser::cache_budget_bytes`], and shrunk when another needs the room.
pub trait State: Any + Send + Sync {
    /// Bytes held, as counted against the budget.
    fn bytes(&self) -> usize;
    /// Drops what can be rebuilt, except what belongs to `keep` (a key the owner recognises:
    /// the call in progress still holds it). States that are expensive to rebuild and small
    /// (the Gaussian fit, the CNN's weights) keep everything.
    fn evict(&mut self, _keep: Option<&dyn Any>) {}
}

/// How the local machines are computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElsPath {
    /// The fused CPU kernel on host key banks ([`super::kernels::cpu`]); the CPU default.
    HostKernel,
    /// The fused op ([`super::kernels::op`]): the cubecl kernel on a GPU, the fused CPU kernel
    /// on flex; the GPU default. Keys are cut on the fly, no bank is kept.
    Op,
    /// Plain burn ops (matmul, then a streaming softmax): the reference the others are
    /// tested against ([`super::kernels::burn_ops`]).
    BurnOps,
}

/// The PCA-locality machine's default mask threshold τ: a value belongs to a window when its
/// normalised filter weight is at least 2% of the largest (Lukoianov et al.).
pub const PCA_THRESHOLD: f64 = 0.02;

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
    /// The PCA-locality machine's mask threshold τ ([`PCA_THRESHOLD`]; tests set 0, which
    /// makes every window the whole image and the machine the Ideal one).
    pub pca_threshold: f64,
    /// Logit entries one chunk may hold; bounds memory whatever N is. 2¹⁸ (1 MB of f32)
    /// keeps each temporary in L2 and under the allocator's mmap threshold: with 16 MB
    /// chunks a third of a call went to page faults on fresh buffers.
    pub chunk_logits: usize,
    /// Everything cached between calls (pixel groups, key banks, the equivariant machine's
    /// shift tables, PCA masks, the Gaussian fit) is kept while it fits in this many bytes
    /// together. 1.5 GB holds every P of the bundled 2000-image sets and keeps a 20-step
    /// N = 10000 run under 2 GB resident. The studio's and CLI's workers set it to their
    /// share of one budget (the app's memory pool) before every command and step.
    pub cache_budget_bytes: usize,
    /// Which implementation the local machines (ELS, LS, Local) run through; tests switch it
    /// to check one path against another.
    pub els_path: ElsPath,
    /// Every machine's and kernel's state, by type.
    states: HashMap<TypeId, Box<dyn State>>,
    /// Whether repeated keys are merged into one with a multiplicity: the fused CPU kernel's
    /// kept banks ([`super::kernels::cpu::merge`]) and the fused op's pixel groups
    /// ([`super::kernels::op_merge`]); off only to measure what it saves.
    pub merge_keys: bool,
    /// Whether the fused CPU kernel's kept banks are sorted into tiles and skip the keys that
    /// cannot move a float32 result ([`super::kernels::cpu::skip`]); off to measure what it
    /// saves and for the tests' dense twin.
    pub skip_keys: bool,
    /// Whether the fused CPU kernel sums the large rectangular groups' distances from row
    /// strips instead of the dense sweep ([`super::kernels::cpu::strips`]); read when a
    /// geometry's groups are built. Off to measure what it saves and for the tests' dense twin.
    pub strip_sums: bool,
    /// What skipping did: (query, key) pairs folded and pairs held, over every call whose
    /// group took the skip path. For tests (that skipping happened, and how much) and `bench`.
    #[doc(hidden)]
    pub skip_work: SkipWork,
    /// The fused op's (query, key) pairs swept and as many before duplicate keys were merged
    /// ([`super::kernels::op_merge`]), summed over calls until taken.
    pub merge_work: SkipWork,
    /// The (query, key) pairs whose distances were summed from row strips, and all the pairs
    /// of those calls ([`super::kernels::cpu::strips`]), summed until taken.
    #[doc(hidden)]
    pub strip_work: SkipWork,
    /// What the caller should tell the user and has not yet (a fall back to the CPU).
    notices: Vec<String>,
    /// The adapter limits the fused op plans its launches by, in place of the device's own:
    /// the tests shrink them to force many launches, or a refusal, on any device.
    #[doc(hidden)]
    pub adapter_limits: Option<super::kernels::gpu::AdapterLimits>,
    /// Fault injection: the fused op's next launch fails as a device out of memory would.
    #[doc(hidden)]
    pub fail_next_launch: bool,
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
            pca_threshold: PCA_THRESHOLD,
            chunk_logits: 1 << 18,
            cache_budget_bytes: 3 << 29,
            els_path: if *device == Device::flex() { ElsPath::HostKernel } else { ElsPath::Op },
            states: HashMap::new(),
            merge_keys: true,
            skip_keys: true,
            strip_sums: true,
            skip_work: SkipWork::default(),
            merge_work: SkipWork::default(),
            strip_work: SkipWork::default(),
            notices: Vec::new(),
            adapter_limits: None,
            fail_next_launch: false,
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

    /// Notices since the last call, oldest first: one line each, for the CLI's stderr or the
    /// studio's message area.
    pub fn take_notices(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notices)
    }

    pub(crate) fn notice(&mut self, line: String) {
        if !self.notices.contains(&line) {
            self.notices.push(line);
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

    /// Adds the per-channel mean back to a centred flat image.
    pub(crate) fn uncentre(&self, mut v: Vec<f32>) -> Vec<f32> {
        let hw = self.shape.pixels();
        for (i, x) in v.iter_mut().enumerate() {
            *x += self.mean[i / hw];
        }
        v
    }

    /// x̂₀ = the mean at `pixels`: they have no admissible training patch (circular windows
    /// larger than the image), so every path answers with the training set's mean there.
    pub(crate) fn fill_mean(&self, x0: &mut [f32], pixels: &[usize]) {
        let hw = self.shape.pixels();
        for &px in pixels {
            for (ch, &m) in self.mean.iter().enumerate() {
                x0[ch * hw + px] = m;
            }
        }
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

/// The state store and the budget.
impl Denoiser {
    /// The state of type `T`, if its owner has made one.
    pub(crate) fn state<T: State>(&self) -> Option<&T> {
        self.states.get(&TypeId::of::<T>()).and_then(|s| (&**s as &dyn Any).downcast_ref())
    }

    /// The state of type `T`, made empty first if there is none yet.
    pub(crate) fn state_mut<T: State + Default>(&mut self) -> &mut T {
        let s = self.states.entry(TypeId::of::<T>()).or_insert_with(|| Box::new(T::default()));
        (&mut **s as &mut dyn Any).downcast_mut().expect("states are stored under their own type")
    }

    /// Replaces the state of type `T`.
    pub(crate) fn set_state<T: State>(&mut self, state: T) {
        self.states.insert(TypeId::of::<T>(), Box::new(state));
    }

    /// Bytes of the training set itself: the device copy ([N, C·H·W + 1]) and the two host
    /// copies. Not a cache (it is held while the dataset is loaded), but part of what a
    /// worker holds.
    pub fn data_bytes(&self) -> usize {
        let len = self.shape.len();
        4 * (self.n * (len + 1) + self.host_centred.len() + self.host_images.len())
    }

    /// Bytes held by every state together: what `cache_budget_bytes` bounds.
    pub fn cache_bytes(&self) -> usize {
        self.states.values().map(|s| s.bytes()).sum()
    }

    /// Shrinks every state, keeping what belongs to `keep` (see [`State::evict`]).
    pub(crate) fn evict(&mut self, keep: Option<&dyn Any>) {
        self.states.values_mut().for_each(|s| s.evict(keep));
    }

    /// Makes room for `bytes` more: if they would not fit beside what is held, every state is
    /// shrunk (keeping `keep`'s).
    pub(crate) fn make_room(&mut self, bytes: usize, keep: Option<&dyn Any>) {
        if self.cache_bytes() + bytes > self.cache_budget_bytes {
            self.evict(keep);
        }
    }
}

/// Reads a small tensor back to the host as f32.
pub(crate) fn to_host(t: Tensor<2>) -> Vec<f32> {
    t.try_into_vec_as::<f32>().expect("a float tensor reads back as f32")
}

/// A pair of work counters, what was done and what the dense path would have done
/// ([`Denoiser::skip_work`], [`Denoiser::merge_work`]), atomic so the kernel can add to them
/// through a shared reference.
#[derive(Debug, Default)]
pub struct SkipWork {
    pub folded: std::sync::atomic::AtomicU64,
    pub held: std::sync::atomic::AtomicU64,
}

impl SkipWork {
    pub fn add(&self, folded: u64, held: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.folded.fetch_add(folded, Relaxed);
        self.held.fetch_add(held, Relaxed);
    }

    /// (folded, held) so far, and the counters back to zero.
    pub fn take(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.folded.swap(0, Relaxed), self.held.swap(0, Relaxed))
    }
}
