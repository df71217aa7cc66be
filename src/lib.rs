//! Morphogen: watch a training-free diffusion model (the ELS machine of Kamb & Ganguli)
//! invent an image, step by step.
//!
//! Layers, arrows pointing down only: `ui` → `worker` → `engine`; `cli` → `engine`; `data`,
//! `export`, `recipe` and `trajectory` beside them, and `files` (atomic writes) under all
//! that write. The binary (`main.rs`) dispatches to the studio or the command line, so
//! neither of those two imports the other. The engine knows nothing of the UI.

pub mod bench;
pub mod cli;
pub mod data;
pub mod engine;
pub mod experiment;
pub mod export;
pub mod files;
pub mod grid;
pub mod memory;
pub mod recipe;
pub mod regimes;
pub mod sweep;
pub mod train;
pub mod trajectory;
pub mod ui;
pub mod worker;
