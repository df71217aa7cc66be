//! The engine: the machines, the kernels they run on and the sampler, on burn tensors.
//!
//! It knows nothing of the UI, threads, files or the clock: pure functions and small structs,
//! so it runs the same under the studio, the CLI and the tests.
//!
//! Where things are:
//! - [`machine`]: what a machine is (the [`Machine`] trait, [`Call`], [`Denoised`]).
//! - [`machines`]: each machine in its own file, and the registry of them.
//! - [`kernels`]: the ELS kernel family (entry, CPU body, GPU body, streaming softmax).
//! - [`sampling`]: the sampler loop and its noise and patch schedules.
//! - [`analysis`]: inspection, calibration, statistics, float64 linear algebra.
//! - [`training`]: the CNN and its training loop.
//! - [`denoiser`]: the training set on a device and every machine's cached state under one
//!   budget; [`geometry`]: image shapes, windows, pixel groups; [`control`]: cancellation
//!   and progress; [`device`]: CPU or GPU.

pub mod analysis;
pub mod control;
pub mod denoiser;
pub mod device;
pub mod geometry;
pub mod kernels;
pub mod machine;
pub mod machines;
pub mod sampling;
pub mod training;

pub use analysis::inspect::{Inspection, Vote};
pub use control::{CancelToken, Cancelled, Control};
pub use denoiser::{Denoiser, ElsPath};
pub use device::{DeviceChoice, ResolvedDevice};
pub use geometry::{Boundary, ImageShape};
pub use machine::{Call, Denoised, Machine, MachineKind, PixelMaps};
pub use sampling::paint::{Edit, EditOp, LocalityMap, Mask};
pub use sampling::patch::PatchSchedule;
pub use sampling::sampler::{Sampler, SamplerConfig, StepRecord};
pub use sampling::schedule::NoiseSchedule;
