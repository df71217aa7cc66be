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
        Self::parse(text, path).map(|(recipe, _)| recipe)
    }

    /// Parses and validates a recipe. Errors name the file, the field (`sampler.steps`) and
    /// the problem, for a wrong type as for a value out of range. Unknown fields are no error
    /// (a newer Morphogen may write more) but come back as warnings, except a run setting put
    /// at the top level, which would otherwise be silently ignored.
    pub fn parse(text: &str, path: &Path) -> Result<(Self, Vec<String>), String> {
        let file = path.display();
        let mut unknown = Vec::new();
        let mut json = serde_json::Deserializer::from_str(text);
        let recipe: Recipe = {
            let mut note = |field: serde_ignored::Path| unknown.push(field.to_string());
            let tracked = serde_ignored::Deserializer::new(&mut json, &mut note);
            serde_path_to_error::deserialize(tracked).map_err(|e| {
                let field = e.path().to_string();
                if field == "." || field.is_empty() {
                    format!("{file}: not a valid recipe: {}", e.inner())
                } else {
                    format!("{file}: field '{field}': {}", e.inner())
                }
            })?
        };
        json.end().map_err(|e| format!("{file}: not a valid recipe: {e}"))?;
        let sampler_fields =
            ["machine", "boundary", "schedule", "patch", "locality_scale", "steps", "t_start", "eta", "seed"];
        let load_fields = ["class", "subset", "subset_seed", "size", "color"];
        if let Some(f) = unknown.iter().find(|f| sampler_fields.contains(&f.as_str())) {
            return Err(format!(
                "{file}: field '{f}' belongs inside \"sampler\" (as sampler.{f}); it would be ignored here"
            ));
        }
        if let Some(f) = unknown.iter().find(|f| load_fields.contains(&f.as_str())) {
            return Err(format!("{file}: field '{f}' belongs inside \"load\" (as load.{f}); it would be ignored here"));
        }
        recipe.validate().map_err(|e| format!("{file}: {e}"))?;
        let warnings = unknown.into_iter().map(|f| format!("{file}: unknown field '{f}' ignored")).collect();
        Ok((recipe, warnings))
    }

    /// Checks every field's range, and that every branch point lies inside both runs.
    pub fn validate(&self) -> Result<(), String> {
        self.sampler.validate().map_err(|e| format!("sampler: {e}"))?;
        if let Some(hash) = &self.dataset_hash
            && (hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(format!(
                "field 'dataset_hash' must be 64 hexadecimal digits (a SHA-256), not {:?}",
                hash.chars().take(80).collect::<String>()
            ));
        }
        if let crate::data::DatasetSource::Bundled(name) = &self.dataset
            && !crate::data::BUNDLED.iter().any(|b| b.name == name)
        {
            let names: Vec<&str> = crate::data::BUNDLED.iter().map(|b| b.name).collect();
            return Err(format!("field 'dataset': '{name}' is not a bundled dataset ({})", names.join(", ")));
        }
        let max_side = crate::data::MAX_SIDE;
        if let Some((w, h)) = self.load.size
            && (w == 0 || h == 0 || w > max_side || h > max_side)
        {
            return Err(format!("field 'load.size' must be between 1×1 and {max_side}×{max_side}, not {w}×{h}"));
        }
        if self.load.subset == Some(0) {
            return Err("field 'load.subset' must be at least 1 (or absent for every image)".into());
        }
        if let Some(b) = &self.branched_from {
            b.recipe.validate().map_err(|e| format!("branched_from.recipe: {e}"))?;
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
        train: crate::engine::ImageShape,
        init: Option<Vec<f32>>,
        run_step: &mut dyn FnMut(&mut Sampler) -> Result<StepRecord, String>,
        sink: &mut dyn FnMut(StepRecord),
    ) -> Result<Sampler, String> {
        match &self.branched_from {
            None => Ok(Sampler::new(self.sampler.clone(), train, init)),
            Some(b) => {
                let mut parent = b.recipe.start_sampler(train, init, run_step, sink)?;
                while parent.next_step() < b.from_step && !parent.is_done() {
                    sink(run_step(&mut parent)?);
                }
                Ok(Sampler::resume(self.sampler.clone(), b.from_step, parent.state().to_vec()))
            }
        }
    }

    /// The run as segments of settings, oldest first: (first step, settings). A plain
    /// recipe is one segment from step 0; a branch adds one per branch point.
    pub fn segments(&self) -> Vec<(usize, SamplerConfig)> {
        match &self.branched_from {
            None => vec![(0, self.sampler.clone())],
            Some(b) => {
                let mut segments = b.recipe.segments();
                segments.retain(|(from, _)| *from < b.from_step);
                segments.push((b.from_step, self.sampler.clone()));
                segments
            }
        }
    }

    /// The recipe the whole branch chain started from (its `init` is the run's start).
    pub fn root(&self) -> &Recipe {
        match &self.branched_from {
            None => self,
            Some(b) => b.recipe.root(),
        }
    }

    pub fn load(path: &Path) -> Result<Self, String> {
        Self::read(path).map(|(recipe, _)| recipe)
    }

    /// [`Recipe::load`] with the warnings about unknown fields.
    pub fn read(path: &Path) -> Result<(Self, Vec<String>), String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: cannot read recipe: {e}", path.display()))?;
        Self::parse(&text, path)
    }
}
