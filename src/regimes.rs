//! `morphogen regimes`: when does structure appear? Biroli et al.'s speciation and collapse
//! predicted from the training set alone ([`engine::analysis::regimes`]), beside what Ideal
//! runs measure of them over many seeds: the step where the top weight first reaches ½ and the
//! step from which the class stops changing. A table, JSON, or a figure.

use std::path::PathBuf;

use clap::Args;

use crate::data::{Dataset, DatasetSource, LoadOptions};
use crate::engine::analysis::regimes::{Prediction, Trace, predict_for, step_of, trace};
use crate::engine::{self, CancelToken, Control, Denoiser, DeviceChoice, NoiseSchedule, SamplerConfig};
use crate::experiment::median;
use crate::files;

#[derive(Args, Debug)]
pub struct RegimesArgs {
    /// A bundled name, a folder of images or an .npy.
    #[arg(long, default_value = "mnist")]
    pub dataset: String,
    /// Seeds 0, 1, …: the Ideal runs whose posterior measures both transitions.
    #[arg(long, default_value_t = 20)]
    pub seeds: u64,
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    #[arg(long, default_value = "cosine", value_parser = NoiseSchedule::by_name)]
    pub schedule: NoiseSchedule,
    #[arg(long, default_value = "auto", value_parser = DeviceChoice::parse)]
    pub device: DeviceChoice,
    /// Print the prediction, every seed's measured steps and their medians as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also draw the median top weight and the share of seeds already in their final class
    /// per step, with the predicted transitions, as a PNG (never over an existing file).
    #[arg(long)]
    pub figure: Option<PathBuf>,
}

/// One transition: predicted and measured.
#[derive(Debug, serde::Serialize)]
pub struct Transition {
    pub predicted_alpha_bar: f64,
    /// Where the run's ᾱ reaches it, in fractional steps (None: the run never gets there).
    pub predicted_step: Option<f64>,
    /// The first step at or past it: what a measured step compares with.
    pub first_step_past: Option<usize>,
    /// Each seed's measured step (None where the run never showed it).
    pub measured_steps: Vec<Option<usize>>,
    pub measured_median_step: Option<f64>,
    /// The median over seeds of ᾱ at each one's measured step.
    pub measured_median_alpha_bar: Option<f64>,
}

/// What `regimes` prints.
#[derive(Debug, serde::Serialize)]
pub struct Report {
    pub dataset: String,
    pub images: usize,
    pub steps: usize,
    pub seeds: usize,
    pub top_eigenvalue: f64,
    pub speciation: Transition,
    pub collapse: Transition,
    /// Why speciation was not measured (a set without classes).
    pub speciation_unmeasured: Option<String>,
}

pub fn run(args: &RegimesArgs) -> Result<(), String> {
    if args.seeds == 0 || args.seeds > 100_000 {
        return Err(format!("--seeds must be between 1 and 100000, not {}", args.seeds));
    }
    if args.steps < 2 || args.steps > engine::sampling::sampler::MAX_STEPS {
        return Err(format!(
            "--steps must be between 2 and {}, not {}",
            engine::sampling::sampler::MAX_STEPS,
            args.steps
        ));
    }
    let source = DatasetSource::parse(&args.dataset);
    let dataset = Dataset::load(&source, &LoadOptions::default()).map_err(|e| e.to_string())?;
    let device = engine::device::resolve(args.device)?;
    let mut den = Denoiser::new(&dataset.images, dataset.len(), dataset.shape, &device.device);
    let cancel = CancelToken::new();
    let prediction = predict_for(&mut den, &Control::new(&cancel, None)).map_err(|e| e.to_string())??;
    let (labels, unmeasured) = class_indices(&dataset);
    let cfg = SamplerConfig { steps: args.steps, schedule: args.schedule, ..SamplerConfig::default() };
    den.check_run(&SamplerConfig { machine: engine::MachineKind::Ideal, ..cfg.clone() })?;
    let started = std::time::Instant::now();
    let mut traces = Vec::new();
    for seed in 0..args.seeds {
        let t = trace(
            &mut den,
            &SamplerConfig { seed, ..cfg.clone() },
            labels.as_deref(),
            None,
            &mut Control::new(&cancel, None),
        )
        .map_err(|e| e.to_string())?;
        eprintln!(
            "seed {seed}: collapse at step {}, class settled at step {}  ({:.0} s)",
            show(t.collapse_step()),
            show(t.speciation_step()),
            started.elapsed().as_secs_f64()
        );
        traces.push(t);
    }
    let report = report(source.short_name(), &prediction, &cfg, &traces, unmeasured);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).expect("serialises"));
    } else {
        print_table(&report);
    }
    if let Some(path) = &args.figure {
        let png = figure(&report, &traces)?;
        files::write_bytes(path, false, &png).map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn show(step: Option<usize>) -> String {
    step.map_or("never".into(), |k| k.to_string())
}

/// Each image's class as an index, or why classes cannot be measured.
fn class_indices(dataset: &Dataset) -> (Option<Vec<usize>>, Option<String>) {
    let classes = &dataset.all_classes;
    let index: Option<Vec<usize>> = dataset.labels.iter().map(|l| classes.iter().position(|c| c == l)).collect();
    match index {
        Some(ix) if classes.len() >= 2 => (Some(ix), None),
        _ => (None, Some("the set has no classes (file names without a `label_` prefix)".into())),
    }
}

/// The prediction beside the medians of `traces`.
pub fn report(
    dataset: String,
    p: &Prediction,
    cfg: &SamplerConfig,
    traces: &[Trace],
    speciation_unmeasured: Option<String>,
) -> Report {
    let transition = |ab: f64, measured: Vec<Option<usize>>| {
        let hits: Vec<(usize, f64)> =
            traces.iter().zip(&measured).filter_map(|(t, k)| k.map(|k| (k, t.steps[k].alpha_bar))).collect();
        Transition {
            predicted_alpha_bar: ab,
            predicted_step: step_of(cfg, ab),
            first_step_past: step_of(cfg, ab).map(|s| s.ceil() as usize),
            measured_median_step: (!hits.is_empty()).then(|| median(hits.iter().map(|h| h.0 as f64).collect())),
            measured_median_alpha_bar: (!hits.is_empty()).then(|| median(hits.iter().map(|h| h.1).collect())),
            measured_steps: measured,
        }
    };
    let speciation = traces.iter().map(|t| t.speciation_step()).collect();
    let collapse = traces.iter().map(|t| t.collapse_step()).collect();
    Report {
        dataset,
        images: p.images,
        steps: cfg.steps,
        seeds: traces.len(),
        top_eigenvalue: p.top_eigenvalue,
        speciation: transition(p.speciation_alpha_bar, speciation),
        collapse: transition(p.collapse_alpha_bar, collapse),
        speciation_unmeasured,
    }
}

fn print_table(r: &Report) {
    println!(
        "speciation and collapse on {} ({} images, {} steps; measured over {} Ideal runs):",
        r.dataset, r.images, r.steps, r.seeds
    );
    println!(
        "{:<11} {:>12} {:>15} {:>11} {:>22} {:>12}",
        "", "predicted ᾱ", "predicted step", "first past", "measured median step", "measured ᾱ"
    );
    for (name, t) in [("speciation", &r.speciation), ("collapse", &r.collapse)] {
        let step = t.predicted_step.map_or("not reached".into(), |s| format!("{s:.2}"));
        let past = t.first_step_past.map_or("—".into(), |s| s.to_string());
        let measured = t.measured_median_step.map_or("—".into(), |s| format!("{s:.1}"));
        let ab = t.measured_median_alpha_bar.map_or("—".into(), |a| format!("{a:.4}"));
        println!("{name:<11} {:>12.4} {step:>15} {past:>11} {measured:>22} {ab:>12}", t.predicted_alpha_bar);
    }
    println!("Λ (top covariance eigenvalue) = {:.3}, ln N = {:.3}", r.top_eigenvalue, (r.images as f64).ln());
    if let Some(why) = &r.speciation_unmeasured {
        println!("speciation not measured: {why}");
    }
}

/// Per step: the median top weight and the share of seeds already in their final class, with
/// the predicted transitions as vertical lines.
fn figure(r: &Report, traces: &[Trace]) -> Result<Vec<u8>, String> {
    use crate::export::chart::{Chart, Corner, Series};
    let steps = r.steps;
    let mut series = vec![Series {
        name: "median top weight of one training image".into(),
        points: (0..steps)
            .map(|k| (k as f64, median(traces.iter().map(|t| t.steps[k].top_weight).collect())))
            .collect(),
        colour: [40, 90, 200],
        steps: false,
    }];
    if r.speciation_unmeasured.is_none() {
        let settled = |k: usize| {
            let n = traces.iter().filter(|t| t.speciation_step().is_some_and(|s| s <= k)).count();
            n as f64 / traces.len() as f64
        };
        series.push(Series {
            name: "share of seeds already in their final class".into(),
            points: (0..steps).map(|k| (k as f64, settled(k))).collect(),
            colour: [60, 160, 90],
            steps: false,
        });
    }
    for (name, t, colour) in [("speciation", &r.speciation, [200, 120, 30]), ("collapse", &r.collapse, [220, 50, 40])] {
        if let Some(at) = t.predicted_step {
            series.push(Series {
                name: format!("predicted {name} (ᾱ = {:.3}, step {at:.2})", t.predicted_alpha_bar),
                points: vec![(at, 0.0), (at, 1.0)],
                colour,
                steps: false,
            });
        }
    }
    // Past the step where every line has reached its end nothing moves: show up to a few
    // steps beyond it, so the transitions are not squeezed into the left edge.
    let settled = series.iter().filter(|s| s.points.len() > 2).filter_map(|s| {
        let end = s.points.last()?.1;
        s.points.iter().position(|p| (p.1 - end).abs() < 1e-3).map(|k| k as f64)
    });
    let predicted = [&r.speciation, &r.collapse].into_iter().filter_map(|t| t.predicted_step);
    let last = settled.chain(predicted).fold(0f64, f64::max).ceil() + 3.0;
    let x_max = last.clamp(1.0, (steps - 1) as f64);
    let shown =
        if x_max < (steps - 1) as f64 { format!(", steps 0–{x_max} of {steps} shown") } else { String::new() };
    Chart {
        title: format!("When structure appears: {}, {} Ideal runs of {} steps", r.dataset, r.seeds, steps),
        x_label: format!("sampling step (0 = pure noise{shown})"),
        y_label: "weight / share of seeds (0–1)".into(),
        x_range: (0.0, x_max),
        y_range: (0.0, 1.02),
        y_log: false,
        series,
        size: (760, 440),
        legend: Corner::LowerRight,
    }
    .png()
}
