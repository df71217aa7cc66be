//! A recipe: everything that defines a run, so an export can be replayed bit for bit.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::{DatasetSource, LoadOptions};
use crate::engine::{DeviceChoice, Sampler, SamplerConfig, StepRecord};

/// Where a branched run came from: its steps before `from_step` follow `recipe`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Branch {
    pub from_step: usize,
    pub recipe: Recipe,
}

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
    /// Set when the run was branched in the studio: the steps before the branch follow an
    /// earlier recipe (which may itself be a branch), so a replay reproduces the whole run.
    pub branched_from: Option<Box<Branch>>,
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
            branched_from: None,
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
        recipe.validate().map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(recipe)
    }

    /// Checks the sampler settings, and that every branch point lies inside both runs.
    pub fn validate(&self) -> Result<(), String> {
        self.sampler.validate()?;
        if let Some(b) = &self.branched_from {
            b.recipe.validate()?;
            if b.from_step >= self.sampler.steps || b.recipe.sampler.steps != self.sampler.steps {
                return Err(format!(
                    "the branch at step {} does not fit runs of {} and {} steps",
                    b.from_step, b.recipe.sampler.steps, self.sampler.steps
                ));
            }
        }
        Ok(())
    }

    /// The sampler that replays this recipe. For a branch, the earlier recipe is run up to the
    /// branch step first (each of its records goes to `sink`) and the new settings resume
    /// from its state there.
    pub fn start_sampler(
        &self,
        len: usize,
        init: Option<Vec<f32>>,
        run_step: &mut dyn FnMut(&mut Sampler) -> Result<StepRecord, String>,
        sink: &mut dyn FnMut(StepRecord),
    ) -> Result<Sampler, String> {
        match &self.branched_from {
            None => Ok(Sampler::new(self.sampler.clone(), len, init)),
            Some(b) => {
                let mut parent = b.recipe.start_sampler(len, init, run_step, sink)?;
                while parent.next_step() < b.from_step && !parent.is_done() {
                    sink(run_step(&mut parent)?);
                }
                Ok(Sampler::resume(self.sampler.clone(), b.from_step, parent.state().to_vec()))
            }
        }
    }

    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: cannot read recipe: {e}", path.display()))?;
        Self::from_json(&text, path)
    }
}
