//! The per-step curves the studio plots under its timeline, as figures a reader can read
//! without the studio (the chart font has no combining hat, so they say "estimate" where the
//! studio writes x̂₀): the softmax entropy, the distance to the nearest training image and,
//! when the run was compared, r with the second column, the healing of a wound and the
//! cosine of the two columns' sensitivity maps. One PNG per curve in a folder, each with its
//! title, titled axes and a legend ([`super::chart`]).

use std::path::{Path, PathBuf};

use super::chart::{Chart, Corner, Series};
use crate::trajectory::Trajectory;

/// A curve over the steps: [step, value] per point.
pub type PerStep = Vec<[f64; 2]>;

/// What the run was measured against besides itself.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Curves {
    /// Pearson r of x̂₀ with the second column, and that column's label.
    pub compare_r: Option<(String, PerStep)>,
    /// RMS of x̂₀ wounded − unedited, inside and outside the wound.
    pub healing: Option<[PerStep; 2]>,
    /// Cosine of the two columns' sensitivity maps of pixel (y, x).
    pub sensitivity_cosine: Option<((usize, usize), PerStep)>,
}

/// The corner whose quarter of the plot the series cross least, for the legend: a curve
/// rises in one run and falls in another.
fn free_corner(series: &[Series], x: (f64, f64), y: (f64, f64)) -> Corner {
    let frac = |v: f64, (lo, hi): (f64, f64)| if hi > lo { (v - lo) / (hi - lo) } else { 0.5 };
    let count = |right: bool, top: bool| {
        series
            .iter()
            .flat_map(|s| &s.points)
            .filter(|&&(px, py)| {
                let (fx, fy) = (frac(px, x), frac(py, y));
                (if right { fx >= 0.5 } else { fx <= 0.5 }) && (if top { fy >= 0.7 } else { fy <= 0.3 })
            })
            .count()
    };
    [
        (Corner::UpperRight, count(true, true)),
        (Corner::LowerRight, count(true, false)),
        (Corner::UpperLeft, count(false, true)),
    ]
    .into_iter()
    .min_by_key(|&(_, n)| n)
    .map_or(Corner::UpperRight, |(c, _)| c)
}

/// The figures `write_plots` writes for this run and these curves: (file name, chart).
fn charts(traj: &Trajectory, curves: &Curves) -> Vec<(&'static str, Chart)> {
    let steps = traj.steps.len();
    let x_range = (0.0, steps.saturating_sub(1).max(1) as f64);
    let chart = |title: String, y_label: &str, y_range: (f64, f64), series: Vec<Series>| Chart {
        title,
        x_label: format!("sampling step (0 = pure noise, {steps} steps)"),
        y_label: y_label.into(),
        x_range,
        y_range,
        y_log: false,
        legend: free_corner(&series, x_range, y_range),
        series,
        size: (720, 400),
    };
    let line = |name: &str, points: Vec<(f64, f64)>, colour: [u8; 3]| Series {
        name: name.into(),
        points,
        colour,
        steps: false,
    };
    let span = |v: &[f64], lo_floor: f64| {
        let (lo, hi) = v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
        if lo.is_finite() && hi > lo {
            ((lo - 0.05 * (hi - lo)).max(lo_floor), hi + 0.05 * (hi - lo))
        } else {
            (lo_floor, lo_floor + 1.0)
        }
    };
    let machine = traj.recipe.sampler.machine.title();
    let mut out = Vec::new();
    let entropy: Vec<(f64, f64)> = traj.steps.iter().enumerate().map(|(k, s)| (k as f64, s.entropy as f64)).collect();
    let ys: Vec<f64> = entropy.iter().map(|p| p.1).collect();
    out.push((
        "entropy.png",
        chart(
            format!("How many training patches vote: {machine}'s softmax entropy per step"),
            "weight entropy, mean over pixels (nats)",
            span(&ys, 0.0),
            vec![line("entropy of each pixel's weights", entropy, [40, 90, 200])],
        ),
    ));
    let nearest: Vec<(f64, f64)> =
        traj.steps.iter().enumerate().filter_map(|(k, s)| s.nearest.map(|n| (k as f64, n.1 as f64))).collect();
    if !nearest.is_empty() {
        let ys: Vec<f64> = nearest.iter().map(|p| p.1).collect();
        out.push((
            "nearest.png",
            chart(
                "Novelty: RMS distance of the denoiser's estimate to its nearest training image".into(),
                "RMS distance (pixel values in [−1, 1])",
                span(&ys, 0.0),
                vec![line("estimate to its nearest training image", nearest, [220, 50, 40])],
            ),
        ));
    }
    let points = |v: &[[f64; 2]]| v.iter().map(|p| (p[0], p[1])).collect::<Vec<_>>();
    if let Some((label, r)) = curves.compare_r.as_ref().filter(|(_, r)| !r.is_empty()) {
        let ys: Vec<f64> = r.iter().map(|p| p[1]).collect();
        let (lo, _) = span(&ys, -1.0);
        out.push((
            "compare-r.png",
            chart(
                format!("{machine} against {label}: Pearson r of the two columns' estimates"),
                "Pearson r",
                (lo.min(0.0), 1.0),
                vec![line(&format!("r({machine}, {label})"), points(r), [60, 160, 90])],
            ),
        ));
    }
    if let Some([inside, outside]) = curves.healing.as_ref().filter(|h| !h[0].is_empty()) {
        let ys: Vec<f64> = inside.iter().chain(outside).map(|p| p[1]).collect();
        out.push((
            "healing.png",
            chart(
                "Healing: RMS of the estimate, wounded run − unedited run".into(),
                "RMS difference (pixel values in [−1, 1])",
                span(&ys, 0.0),
                vec![
                    line("inside the wound", points(inside), [220, 50, 40]),
                    line("outside it", points(outside), [40, 90, 200]),
                ],
            ),
        ));
    }
    if let Some(((y, x), cos)) = curves.sensitivity_cosine.as_ref().filter(|(_, c)| !c.is_empty()) {
        out.push((
            "sensitivity-cosine.png",
            chart(
                format!("Sensitivity of pixel ({x}, {y}): cosine of the two columns' maps"),
                "cosine similarity",
                (-1.0, 1.0),
                vec![line("cosine of the two sensitivity maps", points(cos), [200, 120, 30])],
            ),
        ));
    }
    out
}

/// Writes every figure of `charts` into `dir` (made if missing), none over an existing file
/// unless `overwrite`; checked before the first is written, so nothing is half-done.
pub fn write_plots(traj: &Trajectory, curves: &Curves, dir: &Path, overwrite: bool) -> Result<Vec<PathBuf>, String> {
    if traj.steps.is_empty() {
        return Err("the run has no steps to plot".into());
    }
    let charts = charts(traj, curves);
    if !overwrite && let Some(there) = charts.iter().map(|(n, _)| dir.join(n)).find(|p| p.exists()) {
        return Err(crate::files::exists_error(&there).to_string());
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: cannot create the folder: {e}", dir.display()))?;
    let mut written = Vec::new();
    for (name, chart) in charts {
        let path = dir.join(name);
        crate::files::write_bytes(&path, overwrite, &chart.png()?).map_err(|e| e.to_string())?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_legend_goes_where_the_curve_is_not() {
        let line = |f: &dyn Fn(f64) -> f64| Series {
            name: "s".into(),
            points: (0..20).map(|k| (k as f64, f(k as f64))).collect(),
            colour: [0, 0, 0],
            steps: false,
        };
        let (x, y) = ((0.0, 19.0), (0.0, 1.0));
        // Rising to the top right (a run moving away from its nearest training image).
        assert_eq!(free_corner(&[line(&|k| k / 19.0)], x, y), Corner::LowerRight);
        // Falling to the bottom right (the entropy).
        assert_eq!(free_corner(&[line(&|k| 1.0 - k / 19.0)], x, y), Corner::UpperRight);
        // Swinging top to bottom on the right, low on the left: only the upper left is free.
        let swing = |k: f64| if k > 9.0 && (k as usize).is_multiple_of(2) { 0.95 } else { 0.05 };
        assert_eq!(free_corner(&[line(&swing)], x, y), Corner::UpperLeft);
    }
}
