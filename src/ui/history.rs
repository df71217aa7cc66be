//! The runs the studio has seen: every step of the current run as textures uploaded once,
//! earlier runs kept until a byte cap drops the oldest.

use std::collections::VecDeque;

use egui::{ColorImage, Context, TextureHandle, TextureOptions};

use crate::engine::{ImageShape, StepRecord};
use crate::recipe::{Branch, Recipe};
use crate::worker::RunId;

use super::settings::segment_label;
use super::texture::color_image;

/// One computed step with its textures (cloning shares the textures).
#[derive(Clone)]
pub struct StepView {
    pub record: StepRecord,
    pub x_t: TextureHandle,
    pub x0: TextureHandle,
    /// |x̂₀ − previous x̂₀|: where the image changed at this step.
    pub delta: TextureHandle,
    pub seconds: f64,
}

/// A stretch of steps computed with one set of settings (a branch starts a new one).
#[derive(Clone, Debug, PartialEq)]
pub struct Segment {
    pub from_step: usize,
    pub label: String,
}

pub struct Run {
    pub id: RunId,
    pub shape: ImageShape,
    pub total_steps: usize,
    pub steps: Vec<StepView>,
    pub segments: Vec<Segment>,
    pub finished: bool,
    pub recipe: Recipe,
    /// For a branch: the state x_t its first own step starts from, so a later branch from
    /// the same step works before that step has been recomputed.
    pub branch_state: Option<Vec<f32>>,
}

impl Run {
    /// The first step this run computes itself (0, or the step it branched from).
    pub fn first_own_step(&self) -> usize {
        self.segments.last().map(|s| s.from_step).unwrap_or(0)
    }
    /// Whether it has not computed a step of its own yet (a restart may replace it).
    pub fn computed_nothing(&self) -> bool {
        self.steps.len() <= self.first_own_step()
    }
    /// The state x_t at the start of step `k`, if the run knows it.
    pub fn state_at(&self, k: usize) -> Option<&[f32]> {
        match self.steps.get(k) {
            Some(s) => Some(&s.record.x_t),
            None if k == self.first_own_step() => self.branch_state.as_deref(),
            None => None,
        }
    }
    pub fn bytes(&self) -> usize {
        self.steps.len() * self.shape.len() * 4 * 6
    }
    /// Index of the segment step `k` belongs to.
    pub fn segment_of(&self, k: usize) -> usize {
        self.segments.iter().rposition(|s| s.from_step <= k).unwrap_or(0)
    }
}

/// A heat image of |a − b| summed over channels (black = unchanged, bright = changed).
fn delta_image(a: &[f32], b: Option<&[f32]>, shape: ImageShape) -> ColorImage {
    let hw = shape.pixels();
    let pixels = (0..hw)
        .map(|i| {
            let d: f32 = match b {
                Some(b) => (0..shape.c).map(|c| (a[c * hw + i] - b[c * hw + i]).abs()).sum::<f32>() / shape.c as f32,
                None => 0.0,
            };
            let v = (d.min(1.0) * 255.0) as u8;
            egui::Color32::from_rgb(v, (v as f32 * 0.6) as u8, (v as f32 * 0.2) as u8)
        })
        .collect();
    ColorImage::new([shape.w, shape.h], pixels)
}

pub struct History {
    pub runs: VecDeque<Run>,
    pub cap_bytes: usize,
}

impl Default for History {
    fn default() -> Self {
        Self { runs: VecDeque::new(), cap_bytes: 512 << 20 }
    }
}

impl History {
    pub fn current(&self) -> Option<&Run> {
        self.runs.back()
    }
    pub fn current_mut(&mut self) -> Option<&mut Run> {
        self.runs.back_mut()
    }

    /// Makes `run` the current run. A current run that has not computed a step of its own is
    /// replaced in place rather than kept: it holds nothing to go back to, and a burst of
    /// restarts must not fill the list with empty runs (they cost no bytes, so the byte cap
    /// would never drop them).
    pub fn start(&mut self, run: Run) {
        if self.current().is_some_and(Run::computed_nothing) {
            self.runs.pop_back();
        }
        self.runs.push_back(run);
        self.enforce_cap();
    }

    /// Makes a fresh run of `recipe` (id `id`) the current run. A branched recipe (one opened
    /// from a file) gets one segment per branch point.
    pub fn start_fresh(&mut self, id: RunId, recipe: &Recipe, shape: ImageShape) {
        let segments = recipe
            .segments()
            .iter()
            .map(|(from_step, cfg)| Segment { from_step: *from_step, label: segment_label(cfg) })
            .collect();
        self.start(Run {
            id,
            shape,
            total_steps: recipe.sampler.steps,
            steps: Vec::new(),
            segments,
            finished: false,
            recipe: recipe.clone(),
            branch_state: None,
        });
    }

    /// Makes a branch of the current run the current run: it shares the steps before
    /// `from_step` (records and textures) and continues with `recipe`. Returns the recipe as
    /// sent to the worker (with `branched_from` set) and the state x_t at `from_step`, or
    /// `None` when the current run does not know that state.
    pub fn start_branch(&mut self, id: RunId, from_step: usize, mut recipe: Recipe) -> Option<(Recipe, Vec<f32>)> {
        let cur = self.current()?;
        let x_t = cur.state_at(from_step)?.to_vec();
        let mut segments = cur.segments.clone();
        segments.retain(|s| s.from_step < from_step);
        segments.push(Segment { from_step, label: segment_label(&recipe.sampler) });
        // The parent is the recipe that computed the kept steps: for a run that is itself an
        // unstarted branch from the same step, that is its own parent.
        let parent = match &cur.recipe.branched_from {
            Some(b) if b.from_step == from_step && cur.computed_nothing() => b.recipe.clone(),
            _ => cur.recipe.clone(),
        };
        recipe.branched_from = Some(Box::new(Branch { from_step, recipe: parent }));
        let run = Run {
            id,
            shape: cur.shape,
            total_steps: recipe.sampler.steps,
            steps: cur.steps.iter().take(from_step).cloned().collect(),
            segments,
            finished: false,
            recipe: recipe.clone(),
            branch_state: Some(x_t.clone()),
        };
        self.start(run);
        Some((recipe, x_t))
    }

    pub fn total_bytes(&self) -> usize {
        self.runs.iter().map(Run::bytes).sum()
    }

    /// Drops the oldest runs (never the current one) until under the cap.
    pub fn enforce_cap(&mut self) {
        while self.runs.len() > 1 && self.total_bytes() > self.cap_bytes {
            self.runs.pop_front();
        }
    }

    /// Adds a step to the current run (if `run` is current) and uploads its textures once.
    pub fn push_step(&mut self, ctx: &Context, run: RunId, record: StepRecord, seconds: f64) -> bool {
        let Some(cur) = self.runs.back_mut().filter(|r| r.id == run) else {
            return false;
        };
        let k = record.step;
        cur.steps.truncate(k);
        if cur.steps.len() != k {
            return false; // a gap: the step belongs to a branch we do not have the start of
        }
        let shape = cur.shape;
        let name = |what: &str| format!("run{run}-step{k}-{what}");
        let prev = cur.steps.last().map(|s| s.record.x0_hat.as_slice());
        let delta = ctx.load_texture(name("delta"), delta_image(&record.x0_hat, prev, shape), TextureOptions::NEAREST);
        let x_t = ctx.load_texture(name("xt"), color_image(&record.x_t, shape), TextureOptions::NEAREST);
        let x0 = ctx.load_texture(name("x0"), color_image(&record.x0_hat, shape), TextureOptions::NEAREST);
        cur.steps.push(StepView { record, x_t, x0, delta, seconds });
        self.enforce_cap();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::MachineKind;

    const SHAPE: ImageShape = ImageShape { c: 1, h: 2, w: 2 };

    fn record(k: usize) -> StepRecord {
        StepRecord {
            step: k,
            t: 1.0,
            alpha_bar: 0.5,
            patch: 3,
            x_t: vec![k as f32; 4],
            x0_hat: vec![0.0; 4],
            entropy: 0.0,
            nearest: Some((0, 0.0)),
            maps: None,
            nearest_shifted: None,
        }
    }

    fn with_steps(ctx: &Context, history: &mut History, id: RunId, recipe: &Recipe, n: usize) {
        history.start_fresh(id, recipe, SHAPE);
        for k in 0..n {
            assert!(history.push_step(ctx, id, record(k), 0.1));
        }
    }

    #[test]
    fn a_restart_replaces_a_run_that_computed_nothing() {
        let ctx = Context::default();
        let mut h = History::default();
        let recipe = Recipe::default();
        with_steps(&ctx, &mut h, 1, &recipe, 2);
        h.start_fresh(2, &recipe, SHAPE);
        h.start_fresh(3, &recipe, SHAPE);
        h.start_fresh(4, &recipe, SHAPE);
        assert_eq!(h.runs.iter().map(|r| r.id).collect::<Vec<_>>(), vec![1, 4]);
    }

    #[test]
    fn branches_keep_their_steps_and_rebranching_before_computing_keeps_the_parent() {
        let ctx = Context::default();
        let mut h = History::default();
        let parent = Recipe::default();
        with_steps(&ctx, &mut h, 1, &parent, 5);
        let mut local = Recipe::default();
        local.sampler.machine = MachineKind::Local;
        let (sent, x_t) = h.start_branch(2, 3, local.clone()).unwrap();
        assert_eq!(x_t, vec![3.0; 4]);
        assert_eq!(sent.branched_from.as_ref().unwrap().recipe, parent);
        let cur = h.current().unwrap();
        assert_eq!((cur.steps.len(), cur.first_own_step()), (3, 3));
        assert!(cur.computed_nothing());
        // Branching again from step 3 before the branch computed it: same state, same
        // parent, and the unstarted branch is replaced rather than kept.
        let mut ideal = Recipe::default();
        ideal.sampler.machine = MachineKind::Ideal;
        let (sent, x_t) = h.start_branch(3, 3, ideal).unwrap();
        assert_eq!(x_t, vec![3.0; 4]);
        assert_eq!(sent.branched_from.as_ref().unwrap().recipe, parent);
        assert_eq!(h.runs.iter().map(|r| r.id).collect::<Vec<_>>(), vec![1, 3]);
        // A state the run does not know gives no branch.
        assert!(h.start_branch(4, 4, local).is_none());
    }
}
