//! The fused op on the GPU, for any cubecl runtime (wgpu included): [`kernel`] is the cubecl
//! kernel, [`launch`] the launcher burn's extension calls.

pub mod kernel;
pub mod launch;
pub mod limits;

pub use launch::tile_keys;
pub use limits::AdapterLimits;
