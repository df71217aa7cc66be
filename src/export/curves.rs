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

/// The figures `write_plots` writes for this run and these curves: (file name, chart).
fn charts(traj: &Trajectory, curves: &Curves) -> Vec<(&'static str, Chart)> {
    let steps = traj.steps.len();
    let x_range = (0.0, steps.saturating_sub(1).max(1) as f64);
    let chart = |title: String, y_label: &str, y_range: (f64, f64), series: Vec<Series>, legend: Corner| Chart {
        title,
        x_label: format!("sampling step (0 = pure noise, {steps} steps)"),
        y_label: y_label.into(),
        x_range,
        y_range,
        y_log: false,
        series,
        size: (720, 400),
        legend,
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
            Corner::UpperRight,
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
                Corner::UpperRight,
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
                Corner::LowerRight,
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
                Corner::UpperRight,
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
                Corner::LowerRight,
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
