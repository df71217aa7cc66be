//! The brush's tools and settings, kept with the studio's settings (the strokes themselves and
//! their undo history are in [`super::brush`]).

use serde::{Deserialize, Serialize};

/// What the brush paints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Tool {
    /// Erase x_t to fresh noise at the step's level: a wound that regrows.
    Noise,
    /// Paint ink (+1) on x_t.
    Ink,
    /// Paint background (−1) on x_t.
    Background,
    /// Stamp a training image (the inspector's top vote, or the chosen index) onto x_t.
    Stamp,
    /// Paint locality: small P here (more local, more "creative").
    Local,
    /// Paint globality: large P here (closer to memorising).
    Global,
}

impl Tool {
    pub const ALL: [Tool; 6] = [Tool::Noise, Tool::Ink, Tool::Background, Tool::Stamp, Tool::Local, Tool::Global];

    pub fn label(self) -> &'static str {
        match self {
            Tool::Noise => "Wound (noise)",
            Tool::Ink => "Ink",
            Tool::Background => "Background",
            Tool::Stamp => "Stamp image",
            Tool::Local => "Local (small P)",
            Tool::Global => "Global (large P)",
        }
    }
    /// Paints the locality map rather than x_t.
    pub fn paints_map(self) -> bool {
        matches!(self, Tool::Local | Tool::Global)
    }
}

/// The multipliers the locality tools paint: a third and three times the schedule's P.
pub const LOCAL_FACTOR: f32 = 1.0 / 3.0;
pub const GLOBAL_FACTOR: f32 = 3.0;

/// The brush's settings (kept between launches, never part of a run).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BrushSettings {
    /// Whether dragging on the canvas paints (off: dragging pans).
    pub on: bool,
    pub tool: Tool,
    /// Radius in canvas pixels (0 = one pixel).
    pub radius: u32,
    /// The training image a stamp copies when the inspector has none.
    pub stamp_image: usize,
    /// Show the locality map over the images.
    pub overlay: bool,
}

impl Default for BrushSettings {
    fn default() -> Self {
        Self { on: false, tool: Tool::Noise, radius: 2, stamp_image: 0, overlay: true }
    }
}
