//! Pixel groups on the device: which training patches every pixel competes over, per
//! geometry (P, boundary, equivariance), built once and shared by the three kernel paths.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use burn::tensor::{Int, Tensor};

use super::super::control::{Cancelled, Control};
use super::super::denoiser::{Denoiser, State};
use super::super::geometry::{Boundary, ImageShape, PixelGroup, els_groups_cancellable, restrict_group};
use super::super::machine::Call;
use super::cpu::strips::Layout;

/// Zeros-boundary groups with at most this many key positions per image are computed straight
/// from the images on the CPU ([`super::cpu::direct`]); larger ones (the interior group at
/// small P) are matrix products and stay on the gemm kernel.
pub const DIRECT_MAX_KEYS: usize = 16;

/// The geometry a set of pixel groups, key banks and op tables belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct GeometryKey {
    pub patch: usize,
    pub boundary: Boundary,
    /// Keys from every admissible place (ELS) rather than the pixel's own (LS).
    pub equivariant: bool,
    /// The canvas the queries live on, when it is not the training images' size.
    pub canvas: Option<[usize; 2]>,
}

impl GeometryKey {
    /// The geometry of `call` at patch size `patch`.
    pub fn of(call: &Call, patch: usize, equivariant: bool) -> Self {
        Self { patch, boundary: call.boundary, equivariant, canvas: call.canvas }
    }
    /// The query canvas's shape on a training set of shape `train`.
    pub fn canvas_shape(&self, train: ImageShape) -> ImageShape {
        match self.canvas {
            Some([h, w]) => ImageShape { c: train.c, h, w },
            None => train,
        }
    }
}

pub(crate) struct DeviceGroup {
    pub host: PixelGroup,
    /// The index tables on the device ([Q·D] queries, [Kpos·D] keys), made the first time a
    /// path asks: only the burn-ops reference path reads them (the fused CPU kernel and the
    /// fused op read the host tables), so the others never pay for the copy.
    tensors: OnceLock<(Tensor<1, Int>, Tensor<1, Int>)>,
    /// Training images per key chunk, so a chunk's logits stay near `chunk_logits` entries.
    pub images_per_chunk: usize,
    /// A pixel whose window overhang no other pixel shares: its only keys are the same
    /// location in every training image, which is exactly the Local machine there. Such
    /// pixels (almost all of them once P nears the image side) are computed by the Local
    /// machine's window sums instead of cutting P²-long keys that are mostly zeros.
    pub via_local: bool,
    /// A zeros-boundary group with few key positions: the fused CPU path computes it straight
    /// from the training images ([`super::cpu::direct`]) instead of cutting a key bank.
    pub direct: bool,
    /// A large group whose windows lie over two rectangles: the fused CPU path sums its
    /// distances from row strips read in place ([`super::cpu::strips`]), with no key bank.
    pub strips: Option<Arc<Layout>>,
}

impl DeviceGroup {
    /// The (query, key) index tables on `den`'s device, uploaded on first use.
    pub fn index_tensors(&self, den: &Denoiser) -> &(Tensor<1, Int>, Tensor<1, Int>) {
        self.tensors.get_or_init(|| (den.int_tensor(&self.host.query_idx), den.int_tensor(&self.host.key_idx)))
    }

    /// Whether the group is computed by streaming its keys through the kernel.
    pub fn streams(&self) -> bool {
        !self.via_local && !self.host.key_pixels.is_empty()
    }
    /// Whether the fused CPU path keeps a key bank for it.
    pub fn banked_on_host(&self) -> bool {
        self.streams() && !self.direct && self.strips.is_none()
    }
    /// The group with only the pixels `only` marks (see [`restrict_group`]), for the fused CPU
    /// path, which reads the host tables (the device index tensors are the whole group's).
    pub fn restricted(&self, only: &[bool]) -> Self {
        Self {
            host: restrict_group(&self.host, only),
            tensors: OnceLock::new(),
            images_per_chunk: self.images_per_chunk,
            via_local: self.via_local,
            direct: self.direct,
            strips: self.strips.clone(),
        }
    }
}

/// Every geometry's pixel groups. Eviction keeps the geometry of the call in progress.
#[derive(Default)]
pub(crate) struct PixelGroups(HashMap<GeometryKey, Arc<Vec<DeviceGroup>>>);

impl PixelGroups {
    pub(crate) fn get(&self, key: &GeometryKey) -> Option<&Arc<Vec<DeviceGroup>>> {
        self.0.get(key)
    }
}

impl State for PixelGroups {
    fn bytes(&self) -> usize {
        self.0.values().map(|g| groups_bytes(g)).sum()
    }
    fn evict(&mut self, keep: Option<&dyn Any>) {
        let keep = keep.and_then(|k| k.downcast_ref::<GeometryKey>());
        self.0.retain(|k, _| Some(k) == keep);
    }
}

/// Host copies of both index tables, and the device copies where they were made.
pub(crate) fn groups_bytes(groups: &[DeviceGroup]) -> usize {
    groups
        .iter()
        .map(|g| {
            let copies = if g.tensors.get().is_some() { 2 } else { 1 };
            (g.host.query_idx.len() + g.host.key_idx.len()) * 8 * copies + g.host.pixels.len() * 16
        })
        .sum()
}

/// The pixel groups of a geometry with their index tensors, built once (cancellable: at large
/// P on a large image the tables take a while).
pub(crate) fn device_groups(
    den: &mut Denoiser,
    key: GeometryKey,
    ctl: &Control,
) -> Result<Arc<Vec<DeviceGroup>>, Cancelled> {
    if let Some(g) = den.state::<PixelGroups>().and_then(|s| s.get(&key)) {
        return Ok(g.clone());
    }
    let cancelled = || ctl.check().is_err();
    let canvas = key.canvas_shape(den.shape);
    let host = els_groups_cancellable(den.shape, canvas, key.patch, key.boundary, key.equivariant, &cancelled)
        .ok_or(Cancelled)?;
    let groups: Vec<DeviceGroup> = host
        .into_iter()
        .map(|host| {
            let per_image = host.keys_per_image().max(1);
            let images_per_chunk = (den.chunk_logits / (host.pixels.len() * per_image)).clamp(1, den.n);
            let via_local = key.equivariant
                && key.canvas.is_none()
                && key.boundary == Boundary::Zeros
                && host.pixels.len() == 1
                && host.key_pixels == host.pixels;
            let direct =
                !via_local && key.boundary == Boundary::Zeros && (1..=DIRECT_MAX_KEYS).contains(&host.keys_per_image());
            let strips = (den.strip_sums && key.equivariant && !via_local && !direct)
                .then(|| Layout::of(&host, den.shape, canvas, key.patch))
                .flatten();
            DeviceGroup { tensors: OnceLock::new(), host, images_per_chunk, via_local, direct, strips }
        })
        .collect();
    den.make_room(groups_bytes(&groups), None);
    let groups = Arc::new(groups);
    den.state_mut::<PixelGroups>().0.insert(key, groups.clone());
    Ok(groups)
}

/// Bytes of a geometry's key bank: every key the groups `kept` selects, with its norm, plus
/// its values.
pub(crate) fn bank_bytes(den: &Denoiser, key: GeometryKey, kept: impl Fn(&DeviceGroup) -> bool) -> usize {
    let d = den.shape.c * key.patch * key.patch;
    den.state::<PixelGroups>()
        .and_then(|s| s.get(&key))
        .map(|gs| {
            gs.iter().filter(|g| kept(g)).map(|g| den.n * g.host.keys_per_image() * (d + 1 + den.shape.c) * 4).sum()
        })
        .unwrap_or(0)
}

/// Makes room under the one budget for a key bank of `bytes` for `key`; false when the bank
/// alone would not fit, so the caller streams its keys instead of caching them.
pub(crate) fn make_room_for_bank(den: &mut Denoiser, key: GeometryKey, bytes: usize) -> bool {
    let groups = den.state::<PixelGroups>().and_then(|s| s.get(&key)).map(|g| groups_bytes(g)).unwrap_or(0);
    if bytes + groups > den.cache_budget_bytes {
        return false;
    }
    den.make_room(bytes, Some(&key));
    true
}

/// Every geometry's key bank on one kernel path (one `G` per pixel group), with its size
/// in bytes. Evicted whole, and freed on a thread of its own: banks run to a gigabyte, and
/// handing that back to the OS takes ~0.3 ms a MB, a fifth of a second the next step would
/// wait for (they are counted out of the budget at once: nothing else holds them).
pub(crate) struct KeyBanks<G>(HashMap<GeometryKey, (Bank<G>, usize)>);

/// One geometry's key bank: per pixel group, its keys (a path's own type: the burn path's
/// chunks, the fused path's chunks with their skip index).
pub(crate) type Bank<G> = Arc<Vec<G>>;

impl<G> Default for KeyBanks<G> {
    fn default() -> Self {
        Self(HashMap::new())
    }
}

impl<G> KeyBanks<G> {
    pub(crate) fn get(&self, key: &GeometryKey) -> Option<Bank<G>> {
        self.0.get(key).map(|b| b.0.clone())
    }
    pub(crate) fn insert(&mut self, key: GeometryKey, bank: Bank<G>, bytes: usize) {
        self.0.insert(key, (bank, bytes));
    }
}

impl<G: Send + Sync + 'static> State for KeyBanks<G> {
    fn bytes(&self) -> usize {
        self.0.values().map(|b| b.1).sum()
    }
    fn evict(&mut self, _keep: Option<&dyn Any>) {
        let banks = std::mem::take(&mut self.0);
        if !banks.is_empty() {
            std::thread::spawn(move || drop(banks));
        }
    }
}
