//! egui_plot views: the patch schedule P(t), the noise schedule ᾱ(t) and σ(t), and per-step
//! statistics of the run (click a point to jump to its step).

use egui::Ui;
use egui_plot::{Legend, Line, Plot, PlotPoints, Points, VLine};

use crate::engine::{ImageShape, NoiseSchedule, SamplerConfig};

use super::history::Run;

/// P at every step of `cfg`, with the step under the cursor marked.
pub fn patch_plot(ui: &mut Ui, cfg: &SamplerConfig, shape: ImageShape, cursor_step: Option<usize>) {
    let pts: Vec<[f64; 2]> =
        (0..cfg.steps).map(|k| [cfg.t_of_step(k), cfg.patch_at(k, shape.h, shape.w) as f64]).collect();
    Plot::new("patch_schedule")
        .height(110.0)
        .allow_zoom(false)
        .allow_drag(false)
        .allow_scroll(false)
        .include_y(1.0)
        .include_x(0.0)
        .include_x(1.0)
        .x_axis_label("t")
        .y_axis_label("P")
        .show(ui, |p| {
            p.line(Line::new("P(t)", PlotPoints::from(pts.clone())));
            p.points(Points::new("steps", PlotPoints::from(pts.clone())).radius(2.0));
            if let Some(k) = cursor_step.filter(|&k| k < cfg.steps) {
                p.vline(VLine::new("current step", cfg.t_of_step(k)));
            }
        });
}

/// ᾱ(t) and σ(t) over [0, 1].
pub fn noise_plot(ui: &mut Ui, schedule: &NoiseSchedule, cursor_t: Option<f64>) {
    let ts: Vec<f64> = (0..=100).map(|i| i as f64 / 100.0).collect();
    let alpha: Vec<[f64; 2]> = ts.iter().map(|&t| [t, schedule.alpha_bar(t)]).collect();
    let sigma: Vec<[f64; 2]> = ts.iter().map(|&t| [t, schedule.scales(t).1]).collect();
    Plot::new("noise_schedule")
        .height(110.0)
        .allow_zoom(false)
        .allow_drag(false)
        .allow_scroll(false)
        .include_y(0.0)
        .include_y(1.0)
        .legend(Legend::default())
        .x_axis_label("t")
        .show(ui, |p| {
            p.line(Line::new("ᾱ(t)", PlotPoints::from(alpha)));
            p.line(Line::new("σ(t)", PlotPoints::from(sigma)));
            if let Some(t) = cursor_t {
                p.vline(VLine::new("current step", t));
            }
        });
}

/// One per-step quantity: its title, unit and value.
struct Stat {
    id: &'static str,
    title: &'static str,
    unit: &'static str,
    value: fn(&super::history::StepView) -> f64,
}

const STATS: [Stat; 4] = [
    Stat { id: "stat_p", title: "patch size P", unit: "pixels", value: |s| s.record.patch as f64 },
    Stat { id: "stat_h", title: "weight entropy", unit: "nats", value: |s| s.record.entropy as f64 },
    Stat {
        id: "stat_d",
        title: "RMS to nearest training image",
        unit: "images in [−1, 1]",
        value: |s| s.record.nearest.map_or(f64::NAN, |n| n.1 as f64),
    },
    Stat { id: "stat_a", title: "ᾱ (signal fraction)", unit: "0 to 1", value: |s| s.record.alpha_bar },
];

/// One line of a plot: its name and its (step, value) points.
type Series = (String, Vec<[f64; 2]>);

/// The colours of a plot's lines when it has several (orange, then blue).
const LINE_COLOURS: [egui::Color32; 2] = [egui::Color32::from_rgb(255, 150, 30), egui::Color32::from_rgb(90, 160, 255)];

/// Per-step P, weight entropy, distance to the nearest training image and ᾱ, each in a small
/// plot with its own axis and unit (on one axis all but P lay flat near zero); the x axes are
/// linked. Returns a step to jump to when the user hovers a point or clicks a plot.
/// With `compare_r` (compare mode), a fifth plot: the Pearson r of the two columns' x̂₀;
/// with `healing` (a wounded run beside its unedited self), the RMS difference of their x̂₀
/// inside and outside the wound per step.
pub fn stats_plot(
    ui: &mut Ui,
    run: &Run,
    cursor: usize,
    compare_r: Option<&[[f64; 2]]>,
    healing: Option<&[Vec<[f64; 2]>; 2]>,
) -> Option<usize> {
    let mut jump = None;
    let link = ui.scope_id().with("run_stats");
    // Each plot: id, title, and its lines (name, points).
    let mut series: Vec<(&str, String, Vec<Series>)> = STATS
        .iter()
        // No distance on a grown canvas (no training image of its size); no P for a machine
        // without a window.
        .filter(|stat| stat.id != "stat_d" || run.steps.iter().all(|s| s.record.nearest.is_some()))
        .filter(|stat| stat.id != "stat_p" || run.recipe.sampler.machine.uses_patch())
        .map(|stat| {
            let pts = run.steps.iter().map(|s| [s.record.step as f64, (stat.value)(s)]).collect();
            let title = format!("{} ({})", stat.title, stat.unit);
            (stat.id, title.clone(), vec![(title, pts)])
        })
        .collect();
    match (healing, compare_r) {
        (Some([inside, outside]), _) => series.push((
            "stat_heal",
            "healing: RMS of x̂₀ wounded − unedited (orange: inside the wound, blue: outside)".into(),
            vec![("inside the wound".into(), inside.clone()), ("outside".into(), outside.clone())],
        )),
        (None, Some(r)) => {
            let title = "r of the two columns' x̂₀ (Pearson)".to_string();
            series.push(("stat_r", title.clone(), vec![(title, r.to_vec())]));
        }
        (None, None) => {}
    }
    ui.columns(series.len(), |cols| {
        for (col, (id, title, lines)) in cols.iter_mut().zip(series) {
            col.label(egui::RichText::new(&title).small());
            // Several lines: each its own colour, named in the title (a legend would cover a
            // plot this small).
            let many = lines.len() > 1;
            let response = Plot::new(id)
                .height(120.0)
                .allow_zoom(false)
                .allow_drag(false)
                .allow_scroll(false)
                .link_axis(link, [true, false])
                .include_x(0.0)
                .include_x(run.total_steps.saturating_sub(1) as f64)
                .include_y(0.0)
                .x_axis_label("step")
                .show(col, |p| {
                    for (i, (name, pts)) in lines.into_iter().enumerate() {
                        let (mut line, mut points) = (
                            Line::new(name.as_str(), PlotPoints::from(pts.clone())),
                            Points::new(name.as_str(), PlotPoints::from(pts)),
                        );
                        if many {
                            line = line.color(LINE_COLOURS[i % 2]);
                            points = points.color(LINE_COLOURS[i % 2]);
                        }
                        p.line(line);
                        p.points(points.radius(2.5));
                    }
                    p.vline(VLine::new("current step", cursor as f64));
                    p.pointer_coordinate()
                });
            // Hovering a point (or clicking anywhere) jumps to that step.
            let Some(pos) = response.inner else { continue };
            let k = pos.x.round();
            let near_point = response.response.hovered() && (pos.x - k).abs() < 0.25;
            if (near_point || response.response.clicked()) && !run.steps.is_empty() {
                let k = (k.max(0.0) as usize).min(run.steps.len() - 1);
                if k != cursor {
                    jump = Some(k);
                }
            }
        }
    });
    jump
}
