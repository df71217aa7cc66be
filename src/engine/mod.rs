//! The engine: schedules, the four closed-form machines and the sampler, on burn tensors.
//!
//! It knows nothing of the UI, threads, files or the clock: pure functions and small structs,
//! so it runs the same under the studio, the CLI and the tests.
//!
//! Where things are: the ELS kernel is [`els`], the streaming softmax [`softmax`], the sampler
//! loop [`sampler`], patch-size schedules [`patch`], noise schedules [`schedule`]. The machines
//! beyond Kamb & Ganguli's four: [`gaussian`] (Wiener), [`pspc`] (PSPC-Square) and
//! [`pca_locality`] (data-driven windows).

pub mod calibrate;
pub mod cnn;
pub mod cnn_train;
pub mod control;
pub mod denoiser;
pub mod device;
mod direct;
mod els;
pub mod els_kernel;
pub mod els_op;
mod equivariant;
pub mod fused_cpu;
pub mod gaussian;
pub mod geometry;
mod ideal;
pub mod inspect;
pub mod linalg;
mod local;
pub mod machine;
pub mod noise;
pub mod patch;
pub mod pca_locality;
mod pspc;
pub mod sampler;
pub mod schedule;
pub mod softmax;
pub mod stats;

pub use control::{CancelToken, Cancelled, Control};
pub use denoiser::{Call, Denoised, Denoiser, ElsPath, PixelMaps};
pub use device::{DeviceChoice, ResolvedDevice};
pub use geometry::ImageShape;
pub use inspect::{Inspection, Vote};
pub use machine::{Boundary, MachineKind};
pub use patch::PatchSchedule;
pub use sampler::{Sampler, SamplerConfig, StepRecord};
pub use schedule::NoiseSchedule;
