//! A recipe: everything that defines a run, so an export can be replayed bit for bit.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::{DatasetSource, LoadOptions};
use crate::engine::{DeviceChoice, SamplerConfig};

/// Written as `recipe.json` beside every export; read back by `--recipe` and "Open recipe…".
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Recipe {
    /// Morphogen version that wrote it.
    pub version: String,
    pub dataset: DatasetSource,
    /// SHA-256 of the training images as loaded; a replay refuses different data.
    pub dataset_hash: Option<String>,
    pub load: LoadOptions,
    pub sampler: SamplerConfig,
    /// The device the run used (`cpu` or `gpu`); replays are bit-identical on the same one.
    pub device: DeviceChoice,
    /// x at t_start when the run did not start from seeded noise (an .npy path).
    pub init: Option<PathBuf>,
}

impl Default for Recipe {
    fn default() -> Self {
        Self {
            version: env!("CARGO_PKG_VERSION").into(),
            dataset: DatasetSource::Bundled("mnist".into()),
            dataset_hash: None,
            load: LoadOptions::default(),
            sampler: SamplerConfig::default(),
            device: DeviceChoice::Cpu,
            init: None,
        }
    }
}

impl Recipe {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a recipe always serialises")
    }

    /// Parses and validates a recipe; errors name the file and what is wrong.
    pub fn from_json(text: &str, path: &Path) -> Result<Self, String> {
        let recipe: Recipe =
            serde_json::from_str(text).map_err(|e| format!("{}: not a valid recipe: {e}", path.display()))?;
        recipe.sampler.validate().map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(recipe)
    }

    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: cannot read recipe: {e}", path.display()))?;
        Self::from_json(&text, path)
    }
}
