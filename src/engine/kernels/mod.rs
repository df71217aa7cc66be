//! The ELS kernel family: per pixel, a softmax over a bank of training patches (one head of
//! attention with a streaming softmax), which the ELS, LS and Local machines all compute.
//!
//! [`run`] is the entry: it picks one of three paths by [`ElsPath`], all on the same pixel
//! groups ([`groups`]) and all tested against each other.
//!
//! | path | where | what |
//! |---|---|---|
//! | [`ElsPath::HostKernel`] (CPU default) | [`cpu`] | key banks on the host, one fused AVX2 pass per score tile ([`cpu::fused`], [`cpu::simd`]), small groups straight from the images ([`cpu::direct`]) |
//! | [`ElsPath::Op`] (GPU default) | [`op_call`] → [`op`] | one launch per part of a burn backend extension: the cubecl kernel on a GPU ([`gpu`]), the fused CPU body on flex; repeated keys merged first ([`op_merge`]) |
//! | [`ElsPath::BurnOps`] (reference) | [`burn_ops`] | a matmul per key chunk and [`softmax::OnlineSoftmax`] |
//!
//! [`window_sums`] computes the Local machine's softmax and the ELS pixels that reduce to it.

pub mod burn_ops;
pub mod cpu;
pub mod gpu;
pub mod groups;
pub mod op;
pub mod op_call;
pub mod op_merge;
pub mod op_plan;
pub mod op_skip;
pub mod softmax;
pub mod window_sums;

use super::control::{Cancelled, Control};
use super::denoiser::{Denoiser, ElsPath};
use super::machine::{Call, Denoised};
use groups::GeometryKey;

/// x̂₀ of the patch softmax for `call` on geometry `key`, through the denoiser's path.
///
/// A canvas of another size than the training images runs on the fused CPU kernel whatever
/// the path (it reads the host copy of the training set, which every device keeps): the
/// device paths index queries and keys in one image layout.
pub(crate) fn run(
    den: &mut Denoiser,
    x: &[f32],
    call: &Call,
    key: GeometryKey,
    ctl: &mut Control,
) -> Result<Denoised, Cancelled> {
    match den.els_path {
        _ if key.canvas.is_some() => cpu::run(den, x, call, key, None, ctl),
        ElsPath::HostKernel => cpu::run(den, x, call, key, None, ctl),
        ElsPath::Op => match op_call::try_run(den, x, call, key, ctl)? {
            Some(done) => Ok(done),
            None => cpu::run(den, x, call, key, None, ctl),
        },
        ElsPath::BurnOps => burn_ops::run(den, x, call, key, ctl),
    }
}

impl Denoiser {
    /// The patch softmax of `call` with keys from every admissible place (`equivariant`: the
    /// ELS machine) or only from the pixel's own place (LS, which the tests hold equal to the
    /// Local machine).
    pub fn els(&mut self, x: &[f32], call: &Call, equivariant: bool, ctl: &mut Control) -> Result<Denoised, Cancelled> {
        let key = GeometryKey::of(call, call.effective_patch(self.shape), equivariant);
        run(self, x, call, key, ctl)
    }
}
