//! The paper's experiment from the command line.
//!
//! `morphogen compare`: for each seed, the trained CNN and the ELS, Local and Ideal machines
//! sample from the same initial noise on the same time grid; the Pearson r of each machine's
//! final image with the CNN's is collected and its median printed (Kamb & Ganguli, Table 1:
//! MNIST ResNet ELS 0.94, LS 0.82, Ideal 0.61).
//!
//! `morphogen calibrate`: the patch size per step fitted to the CNN ([`engine::analysis::calibrate`]),
//! written as a recipe the studio opens, with a plot against the paper's presets.

use clap::Args;

use crate::data::{Dataset, DatasetSource, LoadOptions};
use std::path::PathBuf;

use crate::engine::sampling::patch::{family_presets, preset_family};
use crate::engine::training::network::Arch;
use crate::engine::{
    self, Boundary, CancelToken, Control, Denoiser, DeviceChoice, MachineKind, PatchSchedule, SamplerConfig,
};
use crate::files;
use crate::recipe::Recipe;
use crate::sweep::{CalibrationExperiment, CalibrationSeed, Experiment, SeedResult, Shard, ShardArgs};

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// A bundled name, a folder of images or an .npy.
    #[arg(long, default_value = "mnist")]
    pub dataset: String,
    /// Seeds 0, 1, … (each one initial noise shared by the CNN and every machine).
    #[arg(long, default_value_t = 50)]
    pub seeds: u64,
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Patch schedule of the ELS and Local machines: a preset name or a list. Default: the
    /// P(t) calibrated to the shipped CNN where one ships (MNIST and FashionMNIST, 20 steps), else the paper's
    /// "MNIST ResNet" preset; compare says which it used.
    #[arg(long, value_parser = PatchSchedule::parse)]
    pub patch_schedule: Option<PatchSchedule>,
    /// Weights for the CNN (default: the shipped ones of a bundled dataset).
    #[arg(long)]
    pub cnn: Option<std::path::PathBuf>,
    #[arg(long, default_value = "auto", value_parser = DeviceChoice::parse)]
    pub device: DeviceChoice,
    /// Print `{"els": r, "local": r, "ideal": r, "seeds": n}` (medians) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Grow on an HxW canvas instead of the training images' size (the theory's prediction
    /// out of the training geometry): only ELS runs there beside the fully convolutional CNN.
    #[arg(long, value_parser = crate::data::paint::parse_canvas)]
    pub canvas: Option<[usize; 2]>,
    /// Also draw every seed's r per machine, sorted, as a PNG (never over an existing file).
    #[arg(long)]
    pub figure: Option<PathBuf>,
    #[command(flatten)]
    pub sweep: ShardArgs,
}

/// The machines compared with the CNN, in the paper's order.
pub const AGAINST: [MachineKind; 3] = [MachineKind::Els, MachineKind::Local, MachineKind::Ideal];

/// The paper's medians for its ResNets (Table 1), for the printed table.
const PAPER_MNIST: [f64; 3] = [0.94, 0.82, 0.61];
const PAPER_FASHION: [f64; 3] = [0.94, 0.88, 0.68];

/// The final x̂₀ of a 20-step (or `cfg.steps`) run.
pub fn final_image(den: &mut Denoiser, cfg: SamplerConfig) -> Result<Vec<f32>, String> {
    let cancel = CancelToken::new();
    let mut sampler = engine::Sampler::new(cfg, den.shape(), None);
    let mut last = None;
    while let Some(step) = sampler.step(den, &mut Control::new(&cancel, None)) {
        last = Some(step.map_err(|e| e.to_string())?.x0_hat);
        for n in den.take_notices() {
            eprintln!("note: {n}");
        }
    }
    last.ok_or_else(|| "the run had no steps".into())
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub fn run(args: &CompareArgs) -> Result<(), String> {
    if !args.sweep.from.is_empty() {
        if args.sweep.shard.is_some() || args.sweep.out_dir.is_some() {
            return Err("--from merges finished results: it takes no --shard or --out-dir".into());
        }
        return merge(args);
    }
    if args.sweep.shard.is_some() && args.sweep.out_dir.is_none() {
        return Err("--shard needs --out-dir: a shard's results are files that `compare --from` merges".into());
    }
    if args.seeds == 0 || args.seeds > 100_000 {
        return Err(format!("--seeds must be between 1 and 100000, not {}", args.seeds));
    }
    if args.steps == 0 || args.steps > engine::sampling::sampler::MAX_STEPS {
        return Err(format!(
            "--steps must be between 1 and {}, not {}",
            engine::sampling::sampler::MAX_STEPS,
            args.steps
        ));
    }
    let source = DatasetSource::parse(&args.dataset);
    let (schedule, which) =
        compare_schedule(source.bundled_name(), args.cnn.as_deref(), args.patch_schedule.as_ref(), args.steps)?;
    schedule.validate(args.steps).map_err(|e| format!("--patch-schedule: {e}"))?;
    eprintln!("patch schedule: {which}");
    let dataset = Dataset::load(&source, &LoadOptions::default()).map_err(|e| e.to_string())?;
    let device = engine::device::resolve(args.device)?;
    if let Some(n) = &device.notice {
        eprintln!("note: {n}");
    }
    if let Some(dir) = &args.sweep.out_dir {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: cannot make the folder: {e}", dir.display()))?;
    }
    let mut den = Denoiser::new(&dataset.images, dataset.len(), dataset.shape, &device.device);
    let bundled = source.bundled_name();
    engine::machines::cnn::attach(&mut den, bundled, args.cnn.as_deref());
    let base = SamplerConfig {
        steps: args.steps,
        patch: schedule.clone(),
        canvas: args.canvas.filter(|&[h, w]| (h, w) != (dataset.shape.h, dataset.shape.w)),
        ..SamplerConfig::default()
    };
    // On another canvas only the machines defined there (ELS) are compared.
    let against: Vec<MachineKind> =
        AGAINST.into_iter().filter(|m| base.canvas.is_none() || !m.needs().training_size).collect();
    for &m in std::iter::once(&MachineKind::Cnn).chain(&against) {
        den.check_run(&SamplerConfig { machine: m, ..base.clone() })?;
    }
    if let Some([h, w]) = base.canvas {
        eprintln!("note: on a {h}×{w} canvas only ELS is compared (Local and Ideal need the training images' size)");
    }
    let experiment = Experiment {
        dataset_hash: dataset.content_hash(),
        cnn_hash: cnn_hash(bundled, args.cnn.as_deref())?,
        steps: args.steps,
        patch_schedule: schedule.clone(),
        canvas: base.canvas,
        device: device.kind,
        version: env!("CARGO_PKG_VERSION").into(),
    };
    let shard = args.sweep.shard.unwrap_or(Shard::ALL);
    let started = std::time::Instant::now();
    let mut results = Vec::new();
    for seed in (0..args.seeds).filter(|&s| shard.takes(s)) {
        if let Some(dir) = &args.sweep.out_dir
            && let Some(found) = crate::sweep::done::<SeedResult>(dir, &experiment, seed)?
        {
            eprintln!("seed {seed}: done before ({})", crate::sweep::file_name(&experiment, seed));
            results.push(found);
            continue;
        }
        let cnn = final_image(&mut den, SamplerConfig { machine: MachineKind::Cnn, seed, ..base.clone() })?;
        let mut r = std::collections::BTreeMap::new();
        for &m in &against {
            let img = final_image(&mut den, SamplerConfig { machine: m, seed, ..base.clone() })?;
            r.insert(m.name().to_string(), engine::analysis::stats::pearson(&cnn, &img));
        }
        let each: Vec<String> = against.iter().map(|m| format!("r(CNN, {}) {:.3}", m.title(), r[m.name()])).collect();
        eprintln!("seed {seed}: {}  ({:.0} s)", each.join("  "), started.elapsed().as_secs_f64());
        let network = den.cnn().map(|c| c.header.shape.arch).unwrap_or_default();
        let result = SeedResult { experiment: experiment.clone(), dataset: source.short_name(), seed, r, network };
        if let Some(dir) = &args.sweep.out_dir {
            crate::sweep::write(&result, dir)?;
        }
        results.push(result);
    }
    if results.is_empty() {
        return Err(format!("shard {}/{} has no seeds of the {} asked for", shard.index, shard.count, args.seeds));
    }
    report(&results, args.json);
    figure(&results, args.figure.as_deref())
}

/// The ELS and Local machines' patch schedule for `compare`, and what it is: the one asked
/// for; else the P(t) calibrated to the network compared against (the paper's protocol: each
/// network against the schedule fitted to it), when it is for this many steps: for weights
/// given with `--cnn W.mgcnn`, the `W.calibration.json` beside them, and for the shipped
/// network of a bundled set, its shipped calibration; else the paper's MNIST ResNet preset.
/// A calibration file beside the weights that cannot be read is an error naming it.
pub fn compare_schedule(
    bundled: Option<&str>,
    cnn: Option<&std::path::Path>,
    asked: Option<&PatchSchedule>,
    steps: usize,
) -> Result<(PatchSchedule, String), String> {
    if let Some(s) = asked {
        return Ok((s.clone(), "as asked (--patch-schedule)".into()));
    }
    let preset = PatchSchedule::Preset { name: "MNIST ResNet".into() };
    let (name, fitted) = match cnn {
        Some(weights) => {
            let path = files::beside(weights, "calibration.json");
            let Ok(text) = std::fs::read_to_string(&path) else {
                return Ok((
                    preset,
                    format!(
                        "the paper's MNIST ResNet preset (no {} beside the weights: `morphogen calibrate --cnn {}` \
                         writes one)",
                        path.display(),
                        weights.display()
                    ),
                ));
            };
            let fitted = engine::training::network::fitted_patch_sizes(&text)
                .map_err(|e| format!("{}: not a calibration: {e}", path.display()))?;
            (path.display().to_string(), fitted)
        }
        None => match bundled.and_then(|b| engine::training::network::bundled_calibration(b).map(|p| (b, p))) {
            Some((b, fitted)) => (format!("assets/models/{b}.calibration.json"), fitted),
            None => {
                let why = "the paper's MNIST ResNet preset (no calibration ships for this dataset)";
                return Ok((preset, why.into()));
            }
        },
    };
    if fitted.len() != steps {
        let why = format!("the paper's MNIST ResNet preset ({name} is for {} steps, not {steps})", fitted.len());
        return Ok((preset, why));
    }
    let list = fitted.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(" ");
    Ok((PatchSchedule::List { per_step: fitted }, format!("calibrated to the network ({name}): {list}")))
}

/// `compare --from DIR…`: the table of every result the folders hold.
fn merge(args: &CompareArgs) -> Result<(), String> {
    let results: Vec<SeedResult> = crate::sweep::gather(&args.sweep.from)?;
    let seeds: Vec<u64> = results.iter().map(|r| r.seed).collect();
    let top = seeds.iter().copied().max().unwrap_or(0);
    let missing = top + 1 - seeds.len() as u64;
    if missing > 0 {
        eprintln!("note: {} seeds up to {top}; {missing} of 0..={top} are not among the results", seeds.len());
    }
    report(&results, args.json);
    figure(&results, args.figure.as_deref())
}

/// `--figure`: each machine's r over the seeds, sorted, so the median and the spread read off
/// one picture.
fn figure(results: &[SeedResult], path: Option<&std::path::Path>) -> Result<(), String> {
    use crate::export::chart::{Chart, Series};
    let Some(path) = path else { return Ok(()) };
    let colours = [[220, 50, 40], [40, 90, 200], [60, 160, 90]];
    let mut series = Vec::new();
    for (m, colour) in AGAINST.into_iter().zip(colours) {
        let mut rs: Vec<f64> = results.iter().filter_map(|r| r.r.get(m.name()).copied()).collect();
        if rs.is_empty() {
            continue;
        }
        rs.sort_by(f64::total_cmp);
        let n = rs.len();
        let points = rs.iter().enumerate().map(|(i, &r)| ((i as f64 + 0.5) / n as f64, r)).collect();
        series.push(Series {
            name: format!("{} (median {:.3})", m.title(), median(rs.clone())),
            points,
            colour,
            steps: false,
        });
    }
    let lo = series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).fold(1.0, f64::min);
    let e = &results[0].experiment;
    let png = Chart {
        title: format!(
            "Pearson r with the CNN's final image on {}, {} seeds, {} steps",
            results[0].dataset,
            results.len(),
            e.steps
        ),
        x_label: "share of seeds (sorted by r)".into(),
        y_label: "Pearson r of final images".into(),
        x_range: (0.0, 1.0),
        y_range: ((lo - 0.05).max(-1.0), 1.0),
        y_log: false,
        series,
        size: (720, 420),
        legend: crate::export::chart::Corner::LowerRight,
    }
    .png()?;
    files::write_bytes(path, false, &png).map_err(|e| format!("{}: {e}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

/// SHA-256 of the CNN's weights: the file's, or the shipped ones of a bundled set.
pub fn cnn_hash(bundled: Option<&str>, path: Option<&std::path::Path>) -> Result<String, String> {
    match (path, bundled.and_then(engine::training::network::bundled_weights)) {
        (Some(p), _) => {
            let bytes = std::fs::read(p).map_err(|e| format!("{}: cannot read the weights: {e}", p.display()))?;
            Ok(crate::sweep::sha256_hex(&bytes))
        }
        (None, Some(bytes)) => Ok(crate::sweep::sha256_hex(bytes)),
        (None, None) => Ok("none".into()),
    }
}

/// Prints the medians of `results` (one experiment, one per seed): a table, or JSON.
fn report(results: &[SeedResult], json: bool) {
    let e = &results[0].experiment;
    let med = |m: MachineKind| -> Option<f64> {
        let rs: Vec<f64> = results.iter().filter_map(|r| r.r.get(m.name()).copied()).collect();
        (!rs.is_empty()).then(|| median(rs))
    };
    if json {
        let out = serde_json::json!({
            "els": med(MachineKind::Els),
            "local": med(MachineKind::Local),
            "ideal": med(MachineKind::Ideal),
            "seeds": results.len(),
            "canvas": e.canvas,
            "patch_schedule": e.patch_schedule,
        });
        println!("{}", serde_json::to_string_pretty(&out).expect("serialises"));
    } else {
        let on = e.canvas.map(|[h, w]| format!(" on a {h}×{w} canvas")).unwrap_or_default();
        let network = results[0].network;
        println!(
            "median Pearson r of final images with the CNN's ({}){on}, {} seeds, {} steps:",
            network.title(),
            results.len(),
            e.steps
        );
        // The paper's Table 1 row for this set and network, where it is here (its colour
        // sets, CIFAR10 and CelebA, are not ours: another set gets no paper column rather
        // than MNIST's; its UNet rows are not among the figures this build carries).
        let name = results[0].dataset.to_ascii_lowercase();
        let paper = if network != Arch::ResNet {
            None
        } else if name.contains("fashion") {
            Some(("paper (FashionMNIST ResNet)", PAPER_FASHION))
        } else if name.contains("mnist") {
            Some(("paper (MNIST ResNet)", PAPER_MNIST))
        } else {
            None
        };
        match paper {
            Some((label, _)) => println!("{:<8} {:>8} {:>8} {:>29}", "machine", "r", "r²", label),
            None if network != Arch::ResNet => {
                println!(
                    "{:<8} {:>8} {:>8}   (no paper column: its {} rows are not carried here)",
                    "machine",
                    "r",
                    "r²",
                    network.title()
                )
            }
            None => println!("{:<8} {:>8} {:>8}   (the paper has no row for this set)", "machine", "r", "r²"),
        }
        for (i, m) in AGAINST.into_iter().enumerate() {
            if let Some(r) = med(m) {
                match paper {
                    Some((_, row)) => println!("{:<8} {:>8.3} {:>8.3} {:>29.2}", m.title(), r, r * r, row[i]),
                    None => println!("{:<8} {:>8.3} {:>8.3}", m.title(), r, r * r),
                }
            }
        }
    }
}

#[derive(Args, Debug)]
pub struct CalibrateArgs {
    /// A bundled name, a folder of images or an .npy.
    #[arg(long, default_value = "mnist")]
    pub dataset: String,
    /// Seeds 0, 1, …: the CNN's runs the fit follows (the median P over them is kept).
    #[arg(long, default_value_t = 5)]
    pub seeds: u64,
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Largest odd P tried (every odd P from 1 up to it).
    #[arg(long, default_value_t = 27)]
    pub max_p: u32,
    #[arg(long, default_value = "zeros", value_parser = engine::Boundary::parse)]
    pub boundary: Boundary,
    /// Weights for the CNN (default: the shipped ones of a bundled dataset).
    #[arg(long)]
    pub cnn: Option<PathBuf>,
    #[arg(long, default_value = "auto", value_parser = DeviceChoice::parse)]
    pub device: DeviceChoice,
    /// Folder for calibration.json, calibration.png and recipe.json (new or empty). Not with
    /// --shard, whose seeds go to --out-dir; merge the shards with --from … --out.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub sweep: ShardArgs,
}

pub fn calibrate(args: &CalibrateArgs) -> Result<(), String> {
    if args.seeds == 0 || args.seeds > 1000 {
        return Err(format!("--seeds must be between 1 and 1000, not {}", args.seeds));
    }
    if args.steps == 0 || args.steps > 1000 {
        return Err(format!("--steps must be between 1 and 1000, not {}", args.steps));
    }
    if args.max_p == 0 || args.max_p > engine::sampling::patch::MAX_P {
        return Err(format!("--max-p must be between 1 and {}, not {}", engine::sampling::patch::MAX_P, args.max_p));
    }
    let started = std::time::Instant::now();
    let new_folder = |out: &PathBuf| {
        if out.exists() && std::fs::read_dir(out).map(|mut d| d.next().is_some()).unwrap_or(true) {
            return Err(format!("{} exists and is not an empty folder", out.display()));
        }
        Ok(())
    };
    if !args.sweep.from.is_empty() {
        if args.sweep.shard.is_some() || args.sweep.out_dir.is_some() {
            return Err("--from merges finished seeds: it takes no --shard or --out-dir".into());
        }
        let out = args
            .out
            .as_ref()
            .ok_or("--from needs --out: the folder for calibration.json, calibration.png and recipe.json")?;
        new_folder(out)?;
        let seeds: Vec<CalibrationSeed> = crate::sweep::gather(&args.sweep.from)?;
        return write_calibration(out, &seeds, started);
    }
    let out = match (args.sweep.shard, &args.out, &args.sweep.out_dir) {
        (Some(_), _, None) => {
            return Err("--shard needs --out-dir: a shard's seeds are files that `calibrate --from` merges".into());
        }
        (Some(_), Some(_), _) => {
            return Err(
                "--shard writes its seeds to --out-dir; --out takes the merge (`calibrate --from DIR --out FOLDER`)"
                    .into(),
            );
        }
        (Some(_), None, _) => None,
        (None, Some(out), _) => Some(out),
        (None, None, _) => {
            return Err("--out is needed: the folder for calibration.json, calibration.png and recipe.json".into());
        }
    };
    if let Some(out) = out {
        new_folder(out)?;
    }
    let source = DatasetSource::parse(&args.dataset);
    let dataset = Dataset::load(&source, &LoadOptions::default()).map_err(|e| e.to_string())?;
    let device = engine::device::resolve(args.device)?;
    if let Some(dir) = &args.sweep.out_dir {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: cannot make the folder: {e}", dir.display()))?;
    }
    let mut den = Denoiser::new(&dataset.images, dataset.len(), dataset.shape, &device.device);
    let bundled = source.bundled_name();
    engine::machines::cnn::attach(&mut den, bundled, args.cnn.as_deref());
    let s = dataset.shape;
    let max = MachineKind::Els.max_patch(args.boundary, s.h, s.w).min(args.max_p);
    let candidates: Vec<u32> = (1..=max).step_by(2).collect();
    let reference = SamplerConfig { machine: MachineKind::Cnn, steps: args.steps, ..SamplerConfig::default() };
    den.check_run(&reference)?;
    let experiment = CalibrationExperiment {
        dataset_hash: dataset.content_hash(),
        cnn_hash: cnn_hash(bundled, args.cnn.as_deref())?,
        steps: args.steps,
        max_p: max,
        boundary: args.boundary,
        device: device.kind,
        version: env!("CARGO_PKG_VERSION").into(),
    };
    let shard = args.sweep.shard.unwrap_or(Shard::ALL);
    let seeds: Vec<u64> = (0..args.seeds).filter(|&s| shard.takes(s)).collect();
    if seeds.is_empty() {
        return Err(format!("shard {}/{} has no seeds of the {} asked for", shard.index, shard.count, args.seeds));
    }
    let cancel = CancelToken::new();
    let per_seed = args.steps * (1 + candidates.len());
    let total = per_seed * seeds.len();
    let mut last = 0;
    let mut records = Vec::new();
    for (i, &seed) in seeds.iter().enumerate() {
        if let Some(dir) = &args.sweep.out_dir
            && let Some(found) = crate::sweep::done(dir, &experiment, seed)?
        {
            eprintln!("seed {seed}: done before ({})", crate::sweep::file_name(&experiment, seed));
            records.push(found);
            continue;
        }
        let mut progress = |done: usize, _: usize| {
            let done = i * per_seed + done;
            if done * 10 / total != last {
                last = done * 10 / total;
                eprintln!("{}% ({:.0} s)", last * 10, started.elapsed().as_secs_f64());
            }
        };
        let fits = engine::analysis::calibrate::calibrate(
            &mut den,
            &reference,
            &[seed],
            &candidates,
            args.boundary,
            &mut Control::new(&cancel, None),
            &mut progress,
        )
        .map_err(|e| e.to_string())?;
        let record = CalibrationSeed {
            experiment: experiment.clone(),
            dataset: args.dataset.clone(),
            seed,
            candidates: candidates.clone(),
            t: fits.iter().map(|f| f.t).collect(),
            best: fits.iter().map(|f| f.best[0]).collect(),
            cosine: fits.iter().map(|f| f.cosine[0].clone()).collect(),
        };
        if let Some(dir) = &args.sweep.out_dir {
            crate::sweep::write(&record, dir)?;
        }
        records.push(record);
    }
    match out {
        Some(out) => write_calibration(out, &records, started),
        None => {
            eprintln!(
                "shard {}/{}: {} seed(s) in {}; merge the shards with `morphogen calibrate --from DIR … --out FOLDER`",
                shard.index,
                shard.count,
                records.len(),
                args.sweep.out_dir.as_ref().map(|d| d.display().to_string()).unwrap_or_default()
            );
            Ok(())
        }
    }
}

/// The fit of `records` (one per seed, one experiment) printed as a table and written to
/// `out`: calibration.json, recipe.json (ELS with the fitted P) and calibration.png.
fn write_calibration(
    out: &std::path::Path,
    records: &[CalibrationSeed],
    started: std::time::Instant,
) -> Result<(), String> {
    use engine::analysis::calibrate::{StepFit, combine};
    let first = &records[0];
    let e = &first.experiment;
    let parts: Vec<Vec<StepFit>> = records
        .iter()
        .map(|r| {
            (0..r.t.len())
                .map(|k| StepFit {
                    t: r.t[k],
                    best: vec![r.best[k]],
                    cosine: vec![r.cosine[k].clone()],
                    median: r.best[k],
                })
                .collect()
        })
        .collect();
    let fits = combine(&parts);
    let fitted: Vec<u32> = fits.iter().map(|f| f.median).collect();
    let reference = SamplerConfig { machine: MachineKind::Cnn, steps: e.steps, ..SamplerConfig::default() };
    let preset_at = |name: &str, k: usize| {
        PatchSchedule::Preset { name: name.into() }.at(k, reference.t_of_step(k), 1.0, engine::sampling::patch::MAX_P)
    };
    let family = preset_family(&first.dataset);
    let (resnet, unet) = (format!("{family} ResNet"), format!("{family} UNet"));
    println!("{:>6} {:>7} {:>20} {:>18} {:>12}", "t", "fitted", resnet, unet, "best cos");
    for (k, f) in fits.iter().enumerate() {
        let best_cos = median(f.cosine.iter().map(|c| c.iter().copied().fold(f64::MIN, f64::max)).collect());
        println!(
            "{:>6.3} {:>7} {:>20} {:>18} {:>12.4}",
            f.t,
            f.median,
            preset_at(&resnet, k),
            preset_at(&unet, k),
            best_cos
        );
    }
    std::fs::create_dir_all(out).map_err(|e| format!("{}: cannot create folder: {e}", out.display()))?;
    let json = serde_json::json!({
        "about": "patch size per step fitted to the CNN: at each step of its DDIM run, the odd P whose ELS score has the highest cosine similarity with the CNN's; median over seeds",
        "dataset": first.dataset,
        "boundary": e.boundary.name(),
        "seeds": records.len(),
        "candidates": first.candidates,
        "t": fits.iter().map(|f| f.t).collect::<Vec<_>>(),
        "fitted": fitted,
        "per_seed": fits.iter().map(|f| f.best.clone()).collect::<Vec<_>>(),
        "cosine": fits.iter().map(|f| f.cosine.clone()).collect::<Vec<_>>(),
    });
    let write = |name: &str, bytes: &[u8]| {
        let path = out.join(name);
        files::write_bytes(&path, false, bytes).map_err(|e| format!("{}: {e}", path.display()))
    };
    write("calibration.json", serde_json::to_string_pretty(&json).expect("serialises").as_bytes())?;
    let recipe = Recipe {
        dataset: DatasetSource::parse(&first.dataset),
        dataset_hash: Some(e.dataset_hash.clone()),
        sampler: SamplerConfig {
            machine: MachineKind::Els,
            boundary: e.boundary,
            steps: e.steps,
            patch: PatchSchedule::List { per_step: fitted.clone() },
            ..SamplerConfig::default()
        },
        ..Recipe::default()
    };
    write("recipe.json", recipe.to_json().as_bytes())?;
    write("calibration.png", &calibration_chart(&fits, e.steps, family, &preset_at)?)?;
    eprintln!(
        "wrote {}/calibration.json, calibration.png and recipe.json (open it in the studio: \"Open recipe…\"; \
         or `morphogen sample --recipe`) in {:.0} s",
        out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// P against t as a PNG: the fit to the CNN beside the paper's presets of `family`, each
/// step's P held over its stretch of t, with titled axes, ticks and a legend.
fn calibration_chart(
    fits: &[engine::analysis::calibrate::StepFit],
    steps: usize,
    family: &str,
    preset_at: &dyn Fn(&str, usize) -> u32,
) -> Result<Vec<u8>, String> {
    use crate::export::chart::{Chart, Series};
    let ts: Vec<f64> = fits.iter().map(|f| f.t).collect();
    // Each step holds from its t to the next step's (the last one down to t = 0).
    let held = |ps: Vec<u32>| -> Vec<(f64, f64)> {
        let mut points: Vec<(f64, f64)> = ts.iter().zip(&ps).map(|(&t, &p)| (t, p as f64)).collect();
        if let Some(&(_, p)) = points.last() {
            points.push((0.0, p));
        }
        points
    };
    let mut series = vec![Series {
        name: "fitted to the CNN (median over seeds)".into(),
        points: held(fits.iter().map(|f| f.median).collect()),
        colour: [220, 50, 40],
        steps: true,
    }];
    for (i, name) in family_presets(family).enumerate() {
        let colour = [[40, 90, 200], [60, 160, 90], [150, 110, 200]][i % 3];
        let points = held((0..steps).map(|k| preset_at(name, k)).collect());
        series.push(Series { name: format!("paper: {name}"), points, colour, steps: true });
    }
    let top = series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).fold(1.0, f64::max);
    Chart {
        title: "Patch size per step, fitted to the CNN".into(),
        x_label: "t (diffusion time; a run goes from 1 to 0)".into(),
        y_label: "P (patch side, pixels)".into(),
        x_range: (0.0, 1.0),
        y_range: (0.0, top + 2.0),
        y_log: false,
        series,
        size: (760, 440),
        legend: crate::export::chart::Corner::UpperLeft,
    }
    .png()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::sampling::patch::PRESETS;

    /// A calibration is drawn beside the paper's presets for the nearest of its datasets, and
    /// each family has both networks' presets to draw.
    #[test]
    fn calibrations_are_drawn_beside_their_own_datasets_presets() {
        let names: Vec<&str> = PRESETS.iter().map(|(n, _)| *n).collect();
        let mut families = 0;
        for (set, family) in [
            ("mnist", "MNIST"),
            ("fashion", "FashionMNIST"),
            ("emoji", "CIFAR10"),
            ("photos", "CIFAR10"),
            ("/some/folder", "MNIST"),
        ] {
            assert_eq!(preset_family(set), family, "{set}");
            for net in ["ResNet", "UNet"] {
                assert!(names.contains(&format!("{family} {net}").as_str()), "{family} {net}");
            }
            families += 1;
        }
        assert_eq!(families, 5);
        // "FashionMNIST ResNet" is not of the MNIST family, though it contains "MNIST".
        assert_eq!(
            family_presets("MNIST").collect::<Vec<_>>(),
            ["MNIST ResNet", "MNIST ResNet circular", "MNIST UNet"]
        );
    }

    /// compare's default schedule: MNIST's shipped calibration at 20 steps (odd sizes, the
    /// largest first as the noise falls), the paper's preset otherwise, and what was asked
    /// for whenever something was.
    #[test]
    fn compare_uses_the_shipped_calibration_and_says_so() {
        let schedule = |b, asked, steps| compare_schedule(b, None, asked, steps).unwrap();
        let (s, which) = schedule(Some("mnist"), None, 20);
        let PatchSchedule::List { per_step } = &s else { panic!("{s:?}") };
        assert_eq!(per_step.len(), 20);
        assert!(per_step.iter().all(|p| p % 2 == 1 && (1..=27).contains(p)), "{per_step:?}");
        assert!(per_step[0] > per_step[19], "locality shrinks as the noise falls: {per_step:?}");
        assert!(which.contains("calibrated to the network (assets/models/mnist.calibration.json)"), "{which}");
        let preset = PatchSchedule::Preset { name: "MNIST ResNet".into() };
        let (s, which) = schedule(Some("mnist"), None, 10);
        assert_eq!(s, preset);
        assert!(which.contains("for 20 steps, not 10"), "{which}");
        let (s, which) = schedule(Some("digits8"), None, 20);
        assert_eq!(s, preset);
        assert!(which.contains("no calibration ships"), "{which}");
        let asked = PatchSchedule::List { per_step: vec![3; 20] };
        assert_eq!(schedule(Some("mnist"), Some(&asked), 20).0, asked);
        // FashionMNIST's network has its own fit (5 seeds, `calibrate --dataset fashion --max-p 21`).
        let (s, which) = schedule(Some("fashion"), None, 20);
        let fitted = vec![11, 13, 13, 13, 11, 11, 11, 9, 9, 9, 7, 7, 7, 5, 5, 5, 5, 3, 3, 3];
        assert_eq!(s, PatchSchedule::List { per_step: fitted });
        assert!(which.contains("assets/models/fashion.calibration.json"), "{which}");
        // And the emoji network (5 seeds, `calibrate --dataset emoji --max-p 21`).
        let (s, which) = schedule(Some("emoji"), None, 20);
        let fitted = vec![1, 9, 9, 9, 7, 7, 7, 5, 5, 5, 5, 5, 3, 3, 3, 3, 3, 3, 3, 1];
        assert_eq!(s, PatchSchedule::List { per_step: fitted });
        assert!(which.contains("assets/models/emoji.calibration.json"), "{which}");
    }

    /// Weights given with --cnn are compared under the calibration beside them, never under
    /// the shipped network's: without one, the preset, and the message says how to make one.
    /// A calibration that is not one is refused by name.
    #[test]
    fn other_weights_use_the_calibration_beside_them() {
        let dir = tempfile::tempdir().unwrap();
        let weights = dir.path().join("net.mgcnn");
        let (s, which) = compare_schedule(Some("mnist"), Some(&weights), None, 20).unwrap();
        assert_eq!(s, PatchSchedule::Preset { name: "MNIST ResNet".into() }, "not the shipped MNIST fit");
        assert!(which.contains("net.calibration.json") && which.contains("morphogen calibrate --cnn"), "{which}");
        let cal = dir.path().join("net.calibration.json");
        let fitted: Vec<u32> = (0..20).map(|k| 25 - 2 * (k / 2)).collect();
        std::fs::write(&cal, serde_json::json!({ "fitted": fitted }).to_string()).unwrap();
        let (s, which) = compare_schedule(Some("mnist"), Some(&weights), None, 20).unwrap();
        assert_eq!(s, PatchSchedule::List { per_step: fitted.clone() });
        assert!(which.contains("net.calibration.json") && which.contains("25 25 23"), "{which}");
        let (s, _) = compare_schedule(None, Some(&weights), None, 12).unwrap();
        assert_eq!(s, PatchSchedule::Preset { name: "MNIST ResNet".into() }, "a 20-step fit for 12 steps");
        // The shipped UNet is compared under its own fit (5 seeds, `calibrate --cnn
        // assets/models/mnist-unet.mgcnn --max-p 31`), shipped beside it.
        let unet = engine::training::network::shipped_unet("mnist").unwrap();
        let (s, which) = compare_schedule(Some("mnist"), Some(&unet), None, 20).unwrap();
        let fitted = vec![9, 19, 17, 15, 13, 11, 11, 9, 7, 7, 7, 5, 5, 5, 3, 3, 3, 3, 3, 1];
        assert_eq!(s, PatchSchedule::List { per_step: fitted });
        assert!(which.contains("mnist-unet.calibration.json"), "{which}");
        // And the FashionMNIST UNet under its own (5 seeds, `--max-p 31`).
        let unet = engine::training::network::shipped_unet("fashion").unwrap();
        let (s, which) = compare_schedule(Some("fashion"), Some(&unet), None, 20).unwrap();
        let fitted = vec![21, 23, 19, 17, 15, 15, 13, 11, 11, 9, 9, 7, 7, 5, 5, 5, 3, 3, 3, 1];
        assert_eq!(s, PatchSchedule::List { per_step: fitted });
        assert!(which.contains("fashion-unet.calibration.json"), "{which}");
        // And the emoji UNet under its own (5 seeds, `--max-p 25`).
        let unet = engine::training::network::shipped_unet("emoji").unwrap();
        let (s, which) = compare_schedule(Some("emoji"), Some(&unet), None, 20).unwrap();
        let fitted = vec![21, 15, 13, 11, 9, 7, 7, 7, 5, 5, 5, 5, 5, 3, 3, 3, 3, 3, 3, 1];
        assert_eq!(s, PatchSchedule::List { per_step: fitted });
        assert!(which.contains("emoji-unet.calibration.json"), "{which}");
        // Any odd size `calibrate --max-p` can fit reads back; one past it does not.
        let big: Vec<u32> = vec![engine::sampling::patch::MAX_P; 20];
        std::fs::write(&cal, serde_json::json!({ "fitted": big }).to_string()).unwrap();
        assert_eq!(compare_schedule(None, Some(&weights), None, 20).unwrap().0, PatchSchedule::List { per_step: big });
        let over = format!(r#"{{"fitted": [{}]}}"#, engine::sampling::patch::MAX_P + 2);
        for bad in ["{}", "[1, 2]", r#"{"fitted": [3, 4]}"#, r#"{"fitted": []}"#, "not json", over.as_str()] {
            std::fs::write(&cal, bad).unwrap();
            let err = compare_schedule(Some("mnist"), Some(&weights), None, 20).unwrap_err();
            assert!(err.contains("net.calibration.json: not a calibration"), "{bad}: {err}");
        }
    }
}
