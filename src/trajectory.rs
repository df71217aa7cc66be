//! A finished (or growing) run: its recipe and every step, with the files `sample` writes.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::{read_npy_f32, write_npy_f32};
use crate::engine::{ImageShape, StepRecord};
use crate::files as atomic;
use crate::recipe::Recipe;

/// Per-step numbers written as `steps.json` beside the arrays.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepMeta {
    pub step: usize,
    pub t: f64,
    pub alpha_bar: f64,
    pub patch: u32,
    pub entropy: f32,
    /// None on a canvas of another size than the training images (no nearest image there).
    pub nearest_index: Option<usize>,
    pub nearest_rms: Option<f32>,
    /// Last step only: (image, RMS, (dy, dx)) of the nearest training image under any
    /// circular shift.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nearest_shifted: Option<(usize, f32, (usize, usize))>,
}

#[derive(Clone, Debug)]
pub struct Trajectory {
    pub recipe: Recipe,
    pub shape: ImageShape,
    pub steps: Vec<StepRecord>,
}

impl Trajectory {
    pub fn new(recipe: Recipe, shape: ImageShape) -> Self {
        Self { recipe, shape, steps: Vec::new() }
    }

    pub fn push(&mut self, record: StepRecord) {
        self.steps.push(record);
    }

    /// The final image: x̂₀ of the last step (the run lands on t = 0).
    pub fn final_image(&self) -> Option<&[f32]> {
        self.steps.last().map(|s| s.x0_hat.as_slice())
    }

    fn stacked(&self, pick: impl Fn(&StepRecord) -> &[f32]) -> Vec<f32> {
        self.steps.iter().flat_map(|s| pick(s).iter().copied()).collect()
    }

    /// Writes `trajectory_x0.npy`, `trajectory_xt.npy` (steps, C, H, W), `steps.json` and
    /// `recipe.json` into `dir` (the data; `export::write_run` adds the pictures).
    pub fn write_dir(&self, dir: &Path, overwrite: bool) -> Result<Vec<PathBuf>, String> {
        let s = self.shape;
        let shape = [self.steps.len(), s.c, s.h, s.w];
        let mut written = Vec::new();
        let err = |p: &Path, e: std::io::Error| {
            if e.to_string().contains(&p.display().to_string()) {
                e.to_string()
            } else {
                format!("{}: {e}", p.display())
            }
        };
        for (name, data) in
            [("trajectory_x0.npy", self.stacked(|r| &r.x0_hat)), ("trajectory_xt.npy", self.stacked(|r| &r.x_t))]
        {
            let p = dir.join(name);
            write_npy_f32(&p, &shape, &data).map_err(|e| err(&p, e))?;
            written.push(p);
        }
        let meta: Vec<StepMeta> = self
            .steps
            .iter()
            .map(|r| StepMeta {
                step: r.step,
                t: r.t,
                alpha_bar: r.alpha_bar,
                patch: r.patch,
                entropy: r.entropy,
                nearest_index: r.nearest.map(|n| n.0),
                nearest_rms: r.nearest.map(|n| n.1),
                nearest_shifted: r.nearest_shifted,
            })
            .collect();
        let p = dir.join("steps.json");
        atomic::write_bytes(&p, overwrite, serde_json::to_string_pretty(&meta).expect("serialises").as_bytes())
            .map_err(|e| err(&p, e))?;
        written.push(p);
        let p = dir.join("recipe.json");
        atomic::write_bytes(&p, overwrite, self.recipe.to_json().as_bytes()).map_err(|e| err(&p, e))?;
        written.push(p);
        Ok(written)
    }

    /// Reads back a folder written by [`Trajectory::write_dir`].
    pub fn read_dir(dir: &Path) -> Result<Self, String> {
        let recipe = Recipe::load(&dir.join("recipe.json"))?;
        let meta_path = dir.join("steps.json");
        let meta: Vec<StepMeta> = serde_json::from_str(
            &std::fs::read_to_string(&meta_path).map_err(|e| format!("{}: cannot read: {e}", meta_path.display()))?,
        )
        .map_err(|e| format!("{}: not valid step metadata: {e}", meta_path.display()))?;
        let (shape0, x0) = read_npy_f32(&dir.join("trajectory_x0.npy")).map_err(|e| e.to_string())?;
        let (shape1, xt) = read_npy_f32(&dir.join("trajectory_xt.npy")).map_err(|e| e.to_string())?;
        if shape0.len() != 4 || shape0 != shape1 || shape0[0] != meta.len() {
            return Err(format!(
                "{}: trajectory arrays {shape0:?} and {shape1:?} do not match {} steps",
                dir.display(),
                meta.len()
            ));
        }
        let shape = ImageShape { c: shape0[1], h: shape0[2], w: shape0[3] };
        let side = (crate::data::MAX_SIDE as usize).max(crate::engine::machine::MAX_CANVAS);
        if !(shape.c == 1 || shape.c == 3) || shape.h == 0 || shape.w == 0 || shape.h > side || shape.w > side {
            return Err(format!(
                "{}: trajectory images are {}×{}×{} (C×H×W); C must be 1 or 3 and each side 1 to {side}",
                dir.display(),
                shape.c,
                shape.h,
                shape.w
            ));
        }
        if let Some((k, m)) = meta.iter().enumerate().find(|(k, m)| m.step != *k) {
            return Err(format!("{}: entry {k} of steps.json is step {}, expected {k}", meta_path.display(), m.step));
        }
        let len = shape.len();
        let steps = meta
            .into_iter()
            .enumerate()
            .map(|(k, m)| StepRecord {
                step: m.step,
                t: m.t,
                alpha_bar: m.alpha_bar,
                patch: m.patch,
                x_t: xt[k * len..(k + 1) * len].to_vec(),
                x0_hat: x0[k * len..(k + 1) * len].to_vec(),
                entropy: m.entropy,
                nearest: m.nearest_index.zip(m.nearest_rms),
                nearest_shifted: m.nearest_shifted,
                maps: None,
            })
            .collect();
        Ok(Self { recipe, shape, steps })
    }
}
