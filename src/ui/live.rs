//! Live editing: when a change to the controls restarts the run, branches it, or waits.
//!
//! Dragging a slider changes a setting on every frame. Restarting on each of those frames
//! would cancel the worker sixty times a second and fill the run list with runs that never
//! computed a step, so a change is applied only once it has settled: the pointer is up, or
//! the value has been still for [`SETTLE`]. With "Branch from this step" on, the step to
//! branch from is fixed when the change begins and kept for the whole drag, so every
//! intermediate application recomputes from the same step instead of from wherever the
//! cursor followed the branch to.
//!
//! Pure state and time passed in: the studio calls [`LiveEdit::decide`] once a frame, and the
//! unit tests below drive it with a fake clock.

use std::time::{Duration, Instant};

use super::settings::Settings;

/// How long a value must stay still under a held pointer before it is applied anyway.
pub const SETTLE: Duration = Duration::from_millis(150);

/// What the studio should do this frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Nothing,
    /// Start a fresh run of the current settings.
    Restart,
    /// Keep the steps before `from_step` and recompute from there with the current settings.
    Branch {
        from_step: usize,
    },
}

/// What the frame knows that the decision depends on.
#[derive(Clone, Copy, Debug)]
pub struct Frame {
    pub now: Instant,
    /// A mouse button or touch is held (a drag may be in progress).
    pub pointer_down: bool,
    /// The step under the timeline cursor, when the current run has computed it.
    pub cursor_step: Option<usize>,
}

#[derive(Default)]
pub struct LiveEdit {
    /// The settings of the run in flight; `None` before the first run.
    pub applied: Option<Settings>,
    /// The settings seen on the last frame and when they last changed.
    seen: Option<(Settings, Instant)>,
    /// With branch on: the step this change branches from, fixed when it began.
    anchor: Option<usize>,
}

impl LiveEdit {
    /// The settings that a run depends on: display and playback settings blanked out.
    fn run_part(s: &Settings) -> Settings {
        Settings {
            fps: 0.0,
            looping: false,
            show_grid: false,
            show_delta: false,
            branch: false,
            map_view: None,
            inspect_top: 0,
            show_nearest: false,
            // The compare column restarts itself; it never restarts the main run.
            compare_on: false,
            compare: Default::default(),
            brush: Default::default(),
            // The memory budget changes what is cached, never what is computed.
            memory_budget_mb: 0,
            ..s.clone()
        }
    }

    /// When only the edits changed: the earliest step whose edits differ (the run branches
    /// there, keeping every step before the wound).
    fn edits_only_change(old: &Settings, new: &Settings) -> Option<usize> {
        let strip = |s: &Settings| Settings { edits: Vec::new(), ..Self::run_part(s) };
        if strip(old) != strip(new) || old.edits == new.edits {
            return None;
        }
        let common = old.edits.iter().zip(&new.edits).take_while(|(a, b)| a == b).count();
        old.edits[common..].iter().chain(&new.edits[common..]).map(|e| e.step).min()
    }

    /// Whether a change is waiting to be applied (the UI says "applying when you let go").
    pub fn is_pending(&self) -> bool {
        self.seen.is_some()
    }

    /// Records that `settings` now run (a restart or branch the studio did on its own, such
    /// as the Restart button or an opened recipe).
    pub fn mark_applied(&mut self, settings: &Settings) {
        self.applied = Some(settings.clone());
        self.seen = None;
        self.anchor = None;
    }

    pub fn decide(&mut self, settings: &Settings, frame: Frame) -> Decision {
        let Some(applied) = &self.applied else {
            self.mark_applied(settings);
            return Decision::Restart;
        };
        if Self::run_part(applied) == Self::run_part(settings) {
            // Only display settings moved, or a drag came back to where it started.
            self.applied = Some(settings.clone());
            self.seen = None;
            if !frame.pointer_down {
                self.anchor = None;
            }
            return Decision::Nothing;
        }
        if let Some(from_step) = Self::edits_only_change(applied, settings) {
            // A finished stroke: branch at once from the wounded step (the stroke itself was
            // drawn without touching the settings, so there is nothing to settle).
            self.applied = Some(settings.clone());
            self.seen = None;
            self.anchor = None;
            return Decision::Branch { from_step };
        }
        let branchable = settings.branch && settings.can_branch_from(applied);
        if branchable && self.anchor.is_none() {
            self.anchor = frame.cursor_step;
        }
        let changed_at = match &self.seen {
            Some((seen, at)) if seen == settings => *at,
            _ => {
                self.seen = Some((settings.clone(), frame.now));
                frame.now
            }
        };
        let settled = !frame.pointer_down || frame.now.duration_since(changed_at) >= SETTLE;
        if !settled {
            return Decision::Nothing;
        }
        self.applied = Some(settings.clone());
        self.seen = None;
        let anchor = self.anchor;
        if !frame.pointer_down {
            // The gesture is over: the next change picks its own step.
            self.anchor = None;
        }
        match anchor {
            Some(from_step) if branchable => Decision::Branch { from_step },
            _ => Decision::Restart,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(t0: Instant, ms: u64, down: bool, cursor: Option<usize>) -> Frame {
        Frame { now: t0 + Duration::from_millis(ms), pointer_down: down, cursor_step: cursor }
    }

    #[test]
    fn first_frame_restarts_and_display_changes_do_nothing() {
        let t0 = Instant::now();
        let mut live = LiveEdit::default();
        let mut s = Settings::default();
        assert_eq!(live.decide(&s, frame(t0, 0, false, None)), Decision::Restart);
        assert_eq!(live.decide(&s, frame(t0, 16, false, None)), Decision::Nothing);
        s.fps = 30.0;
        s.show_grid = !s.show_grid;
        s.memory_budget_mb /= 2;
        assert_eq!(live.decide(&s, frame(t0, 32, false, None)), Decision::Nothing);
        assert!(!live.is_pending());
    }

    #[test]
    fn a_drag_applies_once_when_released() {
        let t0 = Instant::now();
        let mut live = LiveEdit::default();
        let mut s = Settings::default();
        live.decide(&s, frame(t0, 0, false, None));
        let mut decisions = Vec::new();
        for k in 1..=30 {
            s.locality_scale = 1.0 + k as f64 * 0.02;
            decisions.push(live.decide(&s, frame(t0, k * 16, true, Some(5))));
        }
        assert!(decisions.iter().all(|d| *d == Decision::Nothing), "{decisions:?}");
        assert!(live.is_pending());
        assert_eq!(live.decide(&s, frame(t0, 31 * 16, false, Some(5))), Decision::Restart);
        assert_eq!(live.decide(&s, frame(t0, 32 * 16, false, Some(5))), Decision::Nothing);
    }

    #[test]
    fn a_held_still_value_applies_after_the_settle_time() {
        let t0 = Instant::now();
        let mut live = LiveEdit::default();
        let mut s = Settings::default();
        live.decide(&s, frame(t0, 0, false, None));
        s.locality_scale = 2.0;
        assert_eq!(live.decide(&s, frame(t0, 10, true, None)), Decision::Nothing);
        assert_eq!(live.decide(&s, frame(t0, 100, true, None)), Decision::Nothing);
        assert_eq!(live.decide(&s, frame(t0, 10 + 150, true, None)), Decision::Restart);
    }

    #[test]
    fn a_branching_drag_keeps_its_step_for_the_whole_gesture() {
        let t0 = Instant::now();
        let mut live = LiveEdit::default();
        let mut s = Settings { branch: true, ..Settings::default() };
        live.decide(&s, frame(t0, 0, false, None));
        // The drag starts with the cursor on step 6, pauses (applies), then moves on while
        // the cursor follows the branch's new steps to 9.
        s.locality_scale = 1.5;
        assert_eq!(live.decide(&s, frame(t0, 10, true, Some(6))), Decision::Nothing);
        assert_eq!(live.decide(&s, frame(t0, 200, true, Some(6))), Decision::Branch { from_step: 6 });
        s.locality_scale = 1.7;
        assert_eq!(live.decide(&s, frame(t0, 216, true, Some(9))), Decision::Nothing);
        assert_eq!(live.decide(&s, frame(t0, 232, false, Some(9))), Decision::Branch { from_step: 6 });
        // A new gesture takes the cursor where it is now.
        s.locality_scale = 2.0;
        assert_eq!(live.decide(&s, frame(t0, 400, false, Some(9))), Decision::Branch { from_step: 9 });
    }

    #[test]
    fn a_change_that_cannot_branch_restarts() {
        let t0 = Instant::now();
        let mut live = LiveEdit::default();
        let mut s = Settings { branch: true, ..Settings::default() };
        live.decide(&s, frame(t0, 0, false, None));
        s.seed += 1; // a new seed is a new run from noise
        assert_eq!(live.decide(&s, frame(t0, 16, false, Some(3))), Decision::Restart);
        s.locality_scale = 2.0; // no computed step under the cursor
        assert_eq!(live.decide(&s, frame(t0, 32, false, None)), Decision::Restart);
    }
}
