//! Morphogen: watch a training-free diffusion model (the ELS machine of Kamb & Ganguli)
//! invent an image, step by step.
//!
//! Layers, arrows pointing down only: `ui` and `cli` → `worker` → `engine`; `data`,
//! `export`, `recipe` and `trajectory` beside them. The engine knows nothing of the UI.

pub mod bench;
pub mod cli;
pub mod data;
pub mod engine;
pub mod export;
pub mod recipe;
pub mod trajectory;
pub mod ui;
pub mod worker;
