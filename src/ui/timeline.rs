//! Time control, after Rerun's time panel: playback state plus a command enum that is
//! applied once per frame, and the scrubber that shows computed and pending steps.

use egui::{Color32, Rect, Sense, Stroke, StrokeKind, Ui, pos2, vec2};

use super::history::Run;

/// Something the user asked the playhead to do this frame.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TimeCommand {
    TogglePlay,
    Play,
    Pause,
    StepBack,
    StepForward,
    First,
    Last,
    /// Jump to a step (and stop following the newest).
    Seek(usize),
    /// Follow the newest step while the run computes.
    Follow,
}

/// What the timeline panel shows and may change, besides its own state.
pub struct TimelineView<'a> {
    pub run: &'a Run,
    /// The run in view is the one being computed.
    pub live: bool,
    /// (step, chunks done, chunks total) of the step being computed.
    pub progress: Option<(usize, usize, usize)>,
    pub looping: &'a mut bool,
    pub fps: &'a mut f64,
    /// Compare mode's Pearson r of the two columns' x̂₀ per step ([step, r]).
    pub compare_r: Option<Vec<[f64; 2]>>,
    /// RMS of x̂₀ wounded − unedited, inside and outside the wound, per step.
    pub healing: Option<[Vec<[f64; 2]>; 2]>,
}

/// What the user asked of the timeline this frame.
#[derive(Default)]
pub struct TimelineOutput {
    pub commands: Vec<TimeCommand>,
    /// The Stop button: cancel the run in flight.
    pub stop: bool,
}

/// Playback state of the timeline.
#[derive(Clone, Debug, PartialEq)]
pub struct TimeControl {
    /// The step under the cursor.
    pub cursor: usize,
    pub playing: bool,
    /// While true, the cursor jumps to each new step as it arrives.
    pub follow: bool,
    /// Fractional frames accumulated by playback.
    accumulator: f64,
}

impl Default for TimeControl {
    fn default() -> Self {
        Self { cursor: 0, playing: false, follow: true, accumulator: 0.0 }
    }
}

impl TimeControl {
    /// The timeline panel: transport buttons, the scrubber, progress and ETA of the run in
    /// flight, and the statistics plot.
    pub fn ui(&mut self, ui: &mut Ui, view: TimelineView<'_>) -> TimelineOutput {
        let TimelineView { run, live, progress, looping, fps, compare_r: view_r, healing } = view;
        let mut out = TimelineOutput::default();
        let cmds = &mut out.commands;
        let total = run.total_steps.max(1);
        let cfg = &run.recipe.sampler;
        let shape = run.shape;
        // P only means something to the machines with windows.
        let patch_text = |p: u32| if cfg.machine.uses_patch() { format!("  P = {p}") } else { String::new() };
        let marks: Vec<StepMark> = (0..total)
            .map(|k| {
                let computed = k < run.steps.len();
                let (t, p) = match run.steps.get(k) {
                    Some(s) => (s.record.t, s.record.patch),
                    None => (cfg.t_of_step(k), cfg.patch_at(k, shape.h, shape.w)),
                };
                let seg = run.segment_of(k);
                let state = if computed { "computed" } else { "pending" };
                StepMark {
                    computed,
                    segment: seg,
                    hover: format!("step {k}  t = {t:.3}{}  ({state})\n{}", patch_text(p), run.segments[seg].label),
                }
            })
            .collect();
        let done = run.steps.len();
        let total_seconds: f64 = run.steps.iter().map(|s| s.seconds).sum();
        let readout = run.steps.get(self.cursor).map(|s| {
            format!(
                "step {} / {}   t = {:.3}   ᾱ = {:.4}{}",
                s.record.step,
                total - 1,
                s.record.t,
                s.record.alpha_bar,
                patch_text(s.record.patch).replace("  ", "   ")
            )
        });
        let computing =
            if live { progress.map(|(k, d, t)| (k, d as f32 / t.max(1) as f32)).or(Some((done, 0.0))) } else { None };

        // Wrapped: on a narrow central panel the readout goes to a second line instead of
        // widening the panel under the inspector (which hid the last cells and plots).
        ui.horizontal_wrapped(|ui| {
            if ui.button("First").on_hover_text("First step (Home)").clicked() {
                cmds.push(TimeCommand::First);
            }
            if ui.button("Back").on_hover_text("Step back (←)").clicked() {
                cmds.push(TimeCommand::StepBack);
            }
            let play = if self.playing { "Pause" } else { "Play" };
            if ui.button(play).on_hover_text("Play or pause (Space)").clicked() {
                cmds.push(TimeCommand::TogglePlay);
            }
            if ui.button("Next").on_hover_text("Step forward (→)").clicked() {
                cmds.push(TimeCommand::StepForward);
            }
            if ui.button("Last").on_hover_text("Last step (End)").clicked() {
                cmds.push(TimeCommand::Last);
            }
            ui.checkbox(looping, "Loop");
            ui.add(egui::Slider::new(fps, 1.0..=60.0).text("fps").logarithmic(true));
            let mut follow = self.follow;
            if ui.checkbox(&mut follow, "Follow").on_hover_text("Show each new step as it arrives").changed() {
                cmds.push(if follow { TimeCommand::Follow } else { TimeCommand::Seek(self.cursor) });
            }
            ui.separator();
            if let Some(text) = readout {
                // Whole onto the next line when it does not fit, not broken inside "P = 3".
                ui.add(egui::Label::new(text).extend());
            }
        });
        if let Some(k) = scrubber(ui, &marks, self.cursor, computing) {
            cmds.push(TimeCommand::Seek(k));
        }
        ui.horizontal(|ui| {
            if live {
                let avg = if done > 0 { total_seconds / done as f64 } else { 0.0 };
                let frac = progress.map(|(_, d, t)| d as f64 / t.max(1) as f64).unwrap_or(0.0);
                let eta = avg * ((total - done) as f64 - frac).max(0.0);
                let chunks = progress.map(|(k, d, t)| format!("step {k}: chunk {d}/{t}")).unwrap_or_else(|| {
                    // Machines that report no chunks (PCA-locality, the CNN) still say which step.
                    if done == 0 { "starting…".into() } else { format!("step {done}: computing…") }
                });
                ui.add(
                    egui::ProgressBar::new(((done as f64 + frac) / total as f64) as f32)
                        .desired_width(240.0)
                        .text(chunks),
                );
                if done > 0 {
                    ui.label(format!("ETA {eta:.1} s  ({avg:.2} s/step)"));
                }
                if ui.button("Stop").clicked() {
                    out.stop = true;
                }
            } else if run.finished {
                ui.label(format!("done: {} in {total_seconds:.2} s", crate::data::count(done, "step")));
            }
        });
        if let Some(k) = super::plots::stats_plot(ui, run, self.cursor, view_r.as_deref(), healing.as_ref()) {
            out.commands.push(TimeCommand::Seek(k));
        }
        out
    }

    /// Applies `cmd` given `available` computed steps.
    pub fn apply(&mut self, cmd: TimeCommand, available: usize) {
        let last = available.saturating_sub(1);
        match cmd {
            TimeCommand::TogglePlay => {
                self.playing = !self.playing;
                if self.playing && self.cursor >= last {
                    self.cursor = 0;
                }
                self.follow = false;
            }
            TimeCommand::Play => self.playing = true,
            TimeCommand::Pause => self.playing = false,
            TimeCommand::StepBack => {
                self.cursor = self.cursor.saturating_sub(1).min(last);
                self.follow = false;
                self.playing = false;
            }
            TimeCommand::StepForward => {
                self.cursor = (self.cursor + 1).min(last);
                self.follow = false;
                self.playing = false;
            }
            TimeCommand::First => {
                self.cursor = 0;
                self.follow = false;
            }
            TimeCommand::Last => {
                self.cursor = last;
                self.follow = true;
            }
            TimeCommand::Seek(k) => {
                self.cursor = k.min(last);
                self.follow = false;
            }
            TimeCommand::Follow => {
                self.follow = true;
                self.cursor = last;
            }
        }
    }

    /// A new step arrived.
    pub fn on_new_step(&mut self, available: usize) {
        if self.follow {
            self.cursor = available.saturating_sub(1);
        }
    }

    /// Advances playback by `dt` seconds at `fps`; returns whether a repaint is needed.
    pub fn tick(&mut self, dt: f64, fps: f64, available: usize, looping: bool) -> bool {
        if !self.playing || available == 0 {
            self.accumulator = 0.0;
            return false;
        }
        self.accumulator += dt * fps;
        while self.accumulator >= 1.0 {
            self.accumulator -= 1.0;
            if self.cursor + 1 < available {
                self.cursor += 1;
            } else if looping {
                self.cursor = 0;
            } else {
                self.playing = false;
                break;
            }
        }
        true
    }
}

/// What the scrubber needs per step: computed or not, and hover text.
pub struct StepMark {
    pub computed: bool,
    /// Index of the history segment the step belongs to (colours the band).
    pub segment: usize,
    pub hover: String,
}

pub const SEGMENT_COLOURS: [Color32; 4] = [
    Color32::from_rgb(90, 150, 230),
    Color32::from_rgb(230, 150, 70),
    Color32::from_rgb(120, 200, 120),
    Color32::from_rgb(200, 110, 200),
];

/// Draws the scrubber and returns a seek target when clicked or dragged.
pub fn scrubber(ui: &mut Ui, marks: &[StepMark], cursor: usize, computing: Option<(usize, f32)>) -> Option<usize> {
    let height = 28.0;
    let (rect, response) = ui.allocate_exact_size(vec2(ui.available_width(), height), Sense::click_and_drag());
    let painter = ui.painter_at(rect);
    painter.rect_filled(rect, 3.0, ui.visuals().extreme_bg_color);
    let n = marks.len().max(1);
    let cell = rect.width() / n as f32;
    let cell_rect = |k: usize| Rect::from_min_size(pos2(rect.left() + k as f32 * cell, rect.top()), vec2(cell, height));
    for (k, m) in marks.iter().enumerate() {
        let r = cell_rect(k).shrink2(vec2(if cell > 4.0 { 1.0 } else { 0.0 }, 4.0));
        let colour = SEGMENT_COLOURS[m.segment % SEGMENT_COLOURS.len()];
        if m.computed {
            painter.rect_filled(r, 2.0, colour);
        } else {
            painter.rect_stroke(r, 2.0, Stroke::new(1.0, colour.gamma_multiply(0.5)), StrokeKind::Inside);
        }
    }
    if let Some((k, frac)) = computing
        && k < n
    {
        let r = cell_rect(k).shrink2(vec2(1.0, 4.0));
        let mut filled = r;
        filled.set_width(r.width() * frac.clamp(0.0, 1.0));
        painter.rect_filled(filled, 2.0, ui.visuals().selection.bg_fill);
    }
    if !marks.is_empty() {
        let r = cell_rect(cursor.min(n - 1));
        painter.rect_stroke(r.shrink(1.0), 2.0, Stroke::new(2.0, ui.visuals().strong_text_color()), StrokeKind::Inside);
    }
    let step_at = |x: f32| (((x - rect.left()) / cell).floor().max(0.0) as usize).min(n - 1);
    if let Some(pos) = response.hover_pos()
        && let Some(m) = marks.get(step_at(pos.x))
    {
        response.clone().on_hover_text_at_pointer(&m.hover);
    }
    if (response.clicked() || response.dragged())
        && let Some(pos) = response.interact_pointer_pos()
    {
        let k = step_at(pos.x);
        if marks.get(k).is_some_and(|m| m.computed) {
            return Some(k);
        }
        // Clicking a pending step goes to the newest computed one.
        return marks.iter().rposition(|m| m.computed);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follow_until_the_user_scrubs() {
        let mut tc = TimeControl::default();
        tc.on_new_step(1);
        tc.on_new_step(2);
        assert_eq!(tc.cursor, 1);
        tc.apply(TimeCommand::Seek(0), 2);
        tc.on_new_step(3);
        assert_eq!(tc.cursor, 0);
        tc.apply(TimeCommand::Last, 3);
        tc.on_new_step(4);
        assert_eq!(tc.cursor, 3);
    }

    #[test]
    fn playback_advances_and_loops() {
        let mut tc = TimeControl::default();
        tc.apply(TimeCommand::Seek(0), 5);
        tc.apply(TimeCommand::Play, 5);
        tc.tick(0.5, 4.0, 5, false);
        assert_eq!(tc.cursor, 2);
        tc.tick(1.0, 4.0, 5, true);
        assert_eq!(tc.cursor, 1); // 2 → 3 → 4 → 0 → 1
        tc.tick(10.0, 4.0, 5, false);
        assert_eq!(tc.cursor, 4);
        assert!(!tc.playing);
    }
}
