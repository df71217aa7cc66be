//! The headless command line: `morphogen studio | denoise | sample | export | inspect | bench | train |
//! compare | calibrate | regimes` (and the maintainers' hidden `pack-dataset`); `main.rs` dispatches here.

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::data::{self, Dataset, DatasetSource, LoadOptions};
use crate::engine::{
    self, Call, CancelToken, Control, Denoiser, DeviceChoice, MachineKind, NoiseSchedule, PatchSchedule, SamplerConfig,
};
use crate::export::{self, ExportOptions};
use crate::recipe::Recipe;
use crate::trajectory::Trajectory;

#[derive(Parser, Debug)]
#[command(
    name = "morphogen",
    version,
    about = "Watch a training-free diffusion model invent an image. With no command, opens the studio."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Opens the studio (the default when no command is given).
    Studio(StudioArgs),
    /// One denoiser call: x̂₀ for a noisy image at time t.
    Denoise(DenoiseArgs),
    /// A full DDIM run; writes the final image, both trajectories and the recipe.
    Sample(Box<SampleArgs>),
    /// Frames, animations and contact sheets from a `sample` output folder.
    Export(ExportArgs),
    /// Which training patches vote for one pixel of x̂₀, and how much (JSON on stdout).
    Inspect(InspectArgs),
    /// Times each machine and compares with the device's own matmul rate.
    Bench(crate::bench::BenchArgs),
    /// Trains the convolutional ε-predictor (the CNN machine) on a dataset, on the CPU.
    Train(crate::train::TrainArgs),
    /// The paper's experiment: median Pearson r of ELS, Local and Ideal samples with the CNN's.
    Compare(crate::experiment::CompareArgs),
    /// The seed grid (or machine zoo) of a recipe as one labelled sheet; shards like compare.
    Grid(crate::grid::GridArgs),
    /// Fits the patch size per step to the CNN (as the paper calibrated its presets).
    Calibrate(crate::experiment::CalibrateArgs),
    /// When classes separate and when a run snaps to one training image: Biroli et al.'s
    /// prediction from the data beside what Ideal runs measure.
    Regimes(crate::regimes::RegimesArgs),
    /// Redraws a loss curve from the `.loss.csv` a training run wrote (for maintainers: the
    /// shipped curves in assets/models were drawn this way).
    #[command(hide = true)]
    PlotLoss {
        csv: PathBuf,
        out: PathBuf,
        /// Replace an existing picture.
        #[arg(long)]
        force: bool,
    },
    /// Packs a folder of same-sized images into an embedded-dataset atlas (for maintainers).
    #[command(hide = true)]
    PackDataset {
        folder: PathBuf,
        name: String,
        #[arg(long, default_value = "assets/datasets")]
        out: PathBuf,
        /// Replace an existing atlas of that name.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Args, Debug)]
pub struct DatasetArgs {
    /// A bundled dataset (mnist, fashion, digits8, textures, emoji, photos), a folder of images or an .npy file.
    #[arg(long, default_value = "mnist")]
    pub dataset: String,
    /// Keep only this class (the file-name prefix before the first `_`).
    #[arg(long)]
    pub class: Option<String>,
    /// Keep a seeded random subset of this many images.
    #[arg(long)]
    pub subset: Option<usize>,
    /// Resize every image to WxH (e.g. 16x16).
    #[arg(long, value_parser = parse_size)]
    pub size: Option<(u32, u32)>,
    /// Colour handling: auto, gray or rgb.
    #[arg(long, default_value = "auto", value_parser = parse_color)]
    pub color: data::ColorMode,
    /// Weights for the CNN machine (default: the shipped ones of a bundled dataset).
    #[arg(long)]
    pub cnn: Option<PathBuf>,
}

impl DatasetArgs {
    /// Gives `denoiser` its CNN: `--cnn`, or the shipped weights of a bundled set.
    fn attach_cnn(&self, denoiser: &mut Denoiser) {
        let source = DatasetSource::parse(&self.dataset);
        let bundled = source.bundled_name();
        engine::machines::cnn::attach(denoiser, bundled, self.cnn.as_deref());
    }
    fn options(&self, seed: u64) -> LoadOptions {
        LoadOptions {
            class: self.class.clone(),
            subset: self.subset,
            subset_seed: seed,
            size: self.size,
            color: self.color,
        }
    }
}

#[derive(Args, Debug, Default, Clone)]
pub struct StudioArgs {
    /// Start on this dataset (a bundled name, folder or .npy) instead of the saved one.
    #[arg(long)]
    pub dataset: Option<String>,
    /// Ignore saved settings and start from the defaults.
    #[arg(long)]
    pub fresh: bool,
    /// Weights for the CNN machine (a file from `morphogen train`), instead of the shipped ones.
    #[arg(long)]
    pub cnn: Option<PathBuf>,
    /// Write the UI's frame times and the process's memory to this new CSV once a second
    /// (for soaks and profiling; an existing file is refused).
    #[arg(long, value_name = "FILE")]
    pub stats: Option<PathBuf>,
}

/// What one denoiser call needs: the noisy image, the time and the machine.
#[derive(Args, Debug)]
pub struct CallArgs {
    /// Noisy image, (C,H,W) or (H,W) float32 .npy.
    #[arg(long)]
    pub input: PathBuf,
    #[arg(long)]
    pub t: f64,
    /// ideal, equivariant, local, els, gaussian, pspc, pca-locality or cnn.
    #[arg(long, value_parser = MachineKind::parse)]
    pub machine: MachineKind,
    #[arg(long, default_value = "zeros", value_parser = engine::Boundary::parse)]
    pub boundary: engine::Boundary,
    #[arg(long, default_value_t = 3)]
    pub patch: usize,
    #[arg(long, default_value = "cosine", value_parser = NoiseSchedule::by_name)]
    pub schedule: NoiseSchedule,
}

impl CallArgs {
    /// Refuses a time outside (0, 1] before anything is loaded.
    fn check_time(&self) -> Result<(), String> {
        if self.t > 0.0 && self.t <= 1.0 { Ok(()) } else { Err(format!("--t must be in (0, 1], not {}", self.t)) }
    }
    fn call(&self) -> Call {
        Call::new(self.machine, self.boundary, self.patch, self.schedule.alpha_bar(self.t))
    }
}

#[derive(Args, Debug)]
pub struct DenoiseArgs {
    #[command(flatten)]
    pub data: DatasetArgs,
    #[command(flatten)]
    pub call: CallArgs,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value = "auto", value_parser = DeviceChoice::parse)]
    pub device: DeviceChoice,
    /// Overwrite --out if it exists.
    #[arg(long)]
    pub force: bool,
    /// A patch size per pixel: an integer (H, W) .npy of odd P (ELS and Local); overrides --patch.
    #[arg(long)]
    pub patch_map: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    #[command(flatten)]
    pub data: DatasetArgs,
    #[command(flatten)]
    pub call: CallArgs,
    /// The pixel, as ROW,COL (0-based).
    #[arg(long, value_parser = parse_pixel)]
    pub pixel: (usize, usize),
    /// How many of the largest weights to list.
    #[arg(long, default_value_t = 12)]
    pub top: usize,
    /// Also write the pixel's Jacobian here as a (C, C, H, W) float32 .npy:
    /// J[o, c, h, w] = ∂x̂₀[o, ROW, COL] / ∂x_t[c, h, w] (ELS, Local, Ideal, Gaussian and
    /// PCA-locality).
    #[arg(long)]
    pub jacobian: Option<PathBuf>,
    /// Replace an existing --jacobian file.
    #[arg(long)]
    pub force: bool,
}

fn parse_pixel(s: &str) -> Result<(usize, usize), String> {
    let bad = || format!("--pixel takes ROW,COL (two whole numbers), not '{s}'");
    let (r, c) = s.split_once(',').ok_or_else(bad)?;
    Ok((r.trim().parse().map_err(|_| bad())?, c.trim().parse().map_err(|_| bad())?))
}

#[derive(Args, Debug)]
pub struct SampleArgs {
    #[command(flatten)]
    pub data: DatasetArgs,
    /// ideal, equivariant, local, els, gaussian, pspc, pca-locality or cnn.
    #[arg(long, default_value = "els", value_parser = MachineKind::parse)]
    pub machine: MachineKind,
    #[arg(long, default_value = "zeros", value_parser = engine::Boundary::parse)]
    pub boundary: engine::Boundary,
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    #[arg(long, default_value_t = 1.0)]
    pub t_start: f64,
    #[arg(long, default_value_t = 0.0)]
    pub eta: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value = "cosine", value_parser = NoiseSchedule::by_name)]
    pub schedule: NoiseSchedule,
    /// Constant patch size (overrides --patch-schedule).
    #[arg(long)]
    pub patch: Option<u32>,
    /// A preset name (e.g. "MNIST ResNet") or one odd P per step, in sampling order: 15,13,...
    #[arg(long, default_value = "MNIST ResNet", value_parser = PatchSchedule::parse)]
    pub patch_schedule: PatchSchedule,
    /// Multiplies every P (0.25 to 3), rounded to odd.
    #[arg(long, default_value_t = 1.0)]
    pub locality_scale: f64,
    /// Start from this x at t_start instead of seeded noise ((C,H,W) or (H,W) .npy, of the
    /// canvas's size).
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Grow on a canvas of HxW pixels instead of the training images' size (ELS and CNN).
    #[arg(long, value_parser = data::paint::parse_canvas)]
    pub canvas: Option<[usize; 2]>,
    /// A float (H, W) .npy multiplying each pixel's P (ELS and Local): paint locality.
    #[arg(long)]
    pub locality_map: Option<PathBuf>,
    /// Edits of the state at chosen steps: {"edits": [{"step": K, "op": "set"|"noise"|"stamp", ..., "mask": "m.png"}]}.
    #[arg(long)]
    pub edit: Option<PathBuf>,
    /// Replay a recipe.json (its settings replace the flags above).
    #[arg(long)]
    pub recipe: Option<PathBuf>,
    #[arg(long)]
    pub out_dir: PathBuf,
    /// Also write the provenance maps per step: maps_{winner,offset,entropy}.npy (steps, H, W)
    /// and maps/{mosaic,offset,entropy}_NNN.png.
    #[arg(long)]
    pub maps: bool,
    #[arg(long, default_value = "auto", value_parser = DeviceChoice::parse)]
    pub device: DeviceChoice,
    #[command(flatten)]
    pub export: ExportFlags,
}

#[derive(Args, Debug, Clone, Default)]
pub struct ExportFlags {
    /// Which image to export: x0, xt or both (side by side).
    #[arg(long, default_value = "x0", value_parser = export::View::parse)]
    pub view: export::View,
    /// Integer upscaling (nearest neighbour); default 8× for 28-pixel images.
    #[arg(long)]
    pub scale: Option<u32>,
    /// Steps to include, e.g. 0..19 (inclusive, 0 = first step). `export` also takes it as --steps.
    #[arg(long = "range", value_parser = export::parse_range)]
    pub range: Option<(usize, usize)>,
    #[arg(long, default_value_t = 10.0)]
    pub fps: f64,
    /// Hold the last frame this many seconds.
    #[arg(long, default_value_t = 0.0)]
    pub hold: f64,
    #[arg(long)]
    pub gif: Option<PathBuf>,
    #[arg(long)]
    pub apng: Option<PathBuf>,
    /// Contact sheet PNG.
    #[arg(long)]
    pub sheet: Option<PathBuf>,
    /// How many steps the contact sheet shows (evenly spaced; 0 = all).
    #[arg(long, default_value_t = 8)]
    pub sheet_count: usize,
    /// Folder for a numbered PNG per step.
    #[arg(long)]
    pub frames: Option<PathBuf>,
    /// Folder for the per-step curves as figures: entropy.png and nearest.png, each with
    /// titled axes and a legend.
    #[arg(long)]
    pub plots: Option<PathBuf>,
    /// Overwrite files that already exist.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// An output folder of `morphogen sample`.
    #[arg(long)]
    pub run: PathBuf,
    /// Steps to include, e.g. 0..19 (inclusive).
    #[arg(long = "steps", value_parser = export::parse_range)]
    pub steps: Option<(usize, usize)>,
    #[command(flatten)]
    pub export: ExportFlags,
}

fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s.split_once(['x', 'X']).unwrap_or((s, s));
    let w = w.trim().parse().map_err(|_| format!("'{s}' is not a size like 16x16"))?;
    let h = h.trim().parse().map_err(|_| format!("'{s}' is not a size like 16x16"))?;
    Ok((w, h))
}

fn parse_color(s: &str) -> Result<data::ColorMode, String> {
    match s {
        "auto" => Ok(data::ColorMode::Auto),
        "gray" | "grey" => Ok(data::ColorMode::Gray),
        "rgb" | "color" | "colour" => Ok(data::ColorMode::Rgb),
        _ => Err(format!("'{s}' is not a colour mode (auto, gray, rgb)")),
    }
}

/// Runs a command; errors come back as one clear line for stderr.
pub fn run(command: Command) -> Result<(), String> {
    match command {
        // The binary opens the studio itself, so this layer does not depend on the UI.
        Command::Studio(_) => Err("the studio is opened by the morphogen binary, not by cli::run".into()),
        Command::Denoise(args) => denoise(args),
        Command::Sample(args) => sample(*args),
        Command::Export(args) => {
            let traj = Trajectory::read_dir(&args.run)?;
            let mut options = args.export.to_options(&traj);
            options.steps = args.steps.or(options.steps);
            let images = [&options.gif, &options.apng, &options.sheet, &options.frames].iter().any(|o| o.is_some());
            if !images && args.export.plots.is_none() {
                return Err("nothing to export: give --gif, --apng, --sheet, --frames or --plots".into());
            }
            let mut written = Vec::new();
            if let Some(dir) = &args.export.plots {
                let curves = export::curves::Curves::default();
                written.extend(export::curves::write_plots(&traj, &curves, dir, args.export.force)?);
            }
            if images {
                written.extend(export::export_all(&traj, &options, &mut |_, _| true)?);
            }
            for p in written {
                eprintln!("wrote {}", p.display());
            }
            Ok(())
        }
        Command::Inspect(args) => inspect(args),
        Command::Bench(args) => crate::bench::run(&args),
        Command::Train(args) => crate::train::run(&args),
        Command::Compare(args) => crate::experiment::run(&args),
        Command::Calibrate(args) => crate::experiment::calibrate(&args),
        Command::Grid(args) => crate::grid::run(&args),
        Command::Regimes(args) => crate::regimes::run(&args),
        Command::PlotLoss { csv, out, force } => {
            let losses = crate::train::read_loss_csv(&csv)?;
            // `mnist.loss.csv` (and the UNet's `mnist-unet.loss.csv`) → "mnist": the name of
            // the set the weights were trained on, as `train` titles the figure.
            let stem = csv.file_name().map(|n| n.to_string_lossy().replace(".loss.csv", "")).unwrap_or_default();
            let name = stem.strip_suffix("-unet").unwrap_or(&stem);
            let png = crate::train::loss_plot(&losses, name)?;
            crate::files::write_bytes(&out, force, &png).map_err(|e| e.to_string())?;
            eprintln!("wrote {} ({} steps)", out.display(), losses.len());
            Ok(())
        }
        Command::PackDataset { folder, name, out, force } => {
            let n = data::pack_atlas(&folder, &name, &out, force).map_err(|e| e.to_string())?;
            eprintln!("packed {n} images into {}", out.join(format!("{name}.png")).display());
            Ok(())
        }
    }
}

fn resolve_device(choice: DeviceChoice) -> Result<engine::ResolvedDevice, String> {
    let resolved = engine::device::resolve(choice)?;
    if let Some(notice) = &resolved.notice {
        eprintln!("note: {notice}");
    }
    Ok(resolved)
}

/// Reads x as (C,H,W) or (H,W) and checks it fits the training images.
fn read_image_npy(path: &Path, dataset: &Dataset) -> Result<Vec<f32>, String> {
    data::read_image_npy(path, dataset.shape).map_err(|e| e.to_string())
}

/// The patch check a single denoiser call gets from the command line: odd, and the P the call
/// is computed at. A zero-padded window larger than any that still changes the result gives
/// the largest one's answer, so it is computed there with a note (however large P is, it costs
/// no more); a circular window larger than the image has no training patch to compare with,
/// and is refused.
fn check_patch_arg(
    patch: usize,
    machine: MachineKind,
    boundary: engine::Boundary,
    shape: engine::ImageShape,
) -> Result<usize, String> {
    if patch.is_multiple_of(2) {
        return Err(format!("--patch {patch} must be odd"));
    }
    let max = machine.max_patch(boundary, shape.h, shape.w) as usize;
    if !machine.uses_patch() || patch <= max {
        return Ok(patch);
    }
    if machine == MachineKind::Els && boundary == engine::Boundary::Circular {
        return Err(format!(
            "--patch {patch} is too large for {}×{} images: at most {max} for els with the circular boundary (a \
             circular window cannot be larger than the image)",
            shape.w, shape.h
        ));
    }
    let why = if machine == MachineKind::Pspc {
        "the largest square that fits, where PSPC is the Ideal machine"
    } else {
        "larger windows cover the whole image from every pixel, so the answer is the same"
    };
    eprintln!("note: --patch {patch} is larger than {}×{} images need; computing at {max} ({why})", shape.w, shape.h);
    Ok(max)
}

fn denoise(args: DenoiseArgs) -> Result<(), String> {
    // Before loading anything: a bad time needs no dataset to be refused.
    args.call.check_time()?;
    let source = DatasetSource::parse(&args.data.dataset);
    let dataset = Dataset::load(&source, &args.data.options(0)).map_err(|e| e.to_string())?;
    // x may be a canvas of any size: ELS and the CNN compute on it, the others refuse by name.
    let (canvas, x) = data::paint::read_canvas_npy(&args.call.input, dataset.shape.c).map_err(|e| e.to_string())?;
    let (in_shape, _) = data::read_npy_f32(&args.call.input).map_err(|e| e.to_string())?;
    let mut call = args.call.call().on_canvas(dataset.shape, canvas.h, canvas.w);
    let patches = match &args.patch_map {
        Some(p) => Some(data::paint::read_patch_map(p, canvas.h, canvas.w).map_err(|e| e.to_string())?),
        None => {
            call.patch =
                check_patch_arg(args.call.patch, args.call.machine, args.call.boundary, reach(&call, dataset.shape))?;
            None
        }
    };
    if !args.force && args.out.exists() {
        return Err(format!("{} already exists (use --force to overwrite)", args.out.display()));
    }
    let device = resolve_device(args.device)?;
    let mut denoiser = Denoiser::new(&dataset.images, dataset.len(), dataset.shape, &device.device);
    args.data.attach_cnn(&mut denoiser);
    let out = match &patches {
        Some(patches) => {
            denoiser.check_patch_map(&call, patches)?;
            denoiser.denoise_patch_map(&x, &call, patches, &mut Control::none())
        }
        None => {
            denoiser.check_call(&call)?;
            denoiser.denoise(&x, &call, &mut Control::none())
        }
    }
    .map_err(|e| e.to_string())?;
    for n in denoiser.take_notices() {
        eprintln!("note: {n}");
    }
    data::write_npy_f32(&args.out, &in_shape, &out.x0).map_err(|e| e.to_string())
}

/// The image a call's windows are measured against for `check_patch_arg`: the canvas for a
/// circular window (it wraps the canvas), else the larger of canvas and training images.
fn reach(call: &Call, train: engine::ImageShape) -> engine::ImageShape {
    let s = call.canvas_shape(train);
    match call.boundary {
        engine::Boundary::Circular => s,
        engine::Boundary::Zeros => engine::ImageShape { c: s.c, h: s.h.max(train.h), w: s.w.max(train.w) },
    }
}

fn inspect(args: InspectArgs) -> Result<(), String> {
    args.call.check_time()?;
    if args.top == 0 || args.top > 1_000_000 {
        return Err(format!("--top must be between 1 and 1000000, not {}", args.top));
    }
    let source = DatasetSource::parse(&args.data.dataset);
    let dataset = Dataset::load(&source, &args.data.options(0)).map_err(|e| e.to_string())?;
    let x = read_image_npy(&args.call.input, &dataset)?;
    let s = dataset.shape;
    let (row, col) = args.pixel;
    if row >= s.h || col >= s.w {
        return Err(format!(
            "--pixel {row},{col} is outside the {}×{} image (rows 0–{}, columns 0–{})",
            s.h,
            s.w,
            s.h - 1,
            s.w - 1
        ));
    }
    let patch = check_patch_arg(args.call.patch, args.call.machine, args.call.boundary, s)?;
    // One pixel is ranked on the host in float64: no device needed.
    let mut denoiser = Denoiser::new(&dataset.images, dataset.len(), s, &burn::tensor::Device::flex());
    args.data.attach_cnn(&mut denoiser);
    let call = Call { patch, ..args.call.call() };
    denoiser.check_call(&call)?;
    if let Some(path) = &args.jacobian {
        if path.exists() && !args.force {
            return Err(format!("{}: already exists; pass --force to replace it", path.display()));
        }
        let j =
            denoiser.jacobian(&x, &call, row, col, &Control::none()).map_err(|e| e.to_string())?.ok_or_else(|| {
                format!(
                    "the {} machine has no Jacobian yet (ELS, Local, Ideal, Gaussian and PCA-locality have one)",
                    call.machine.title()
                )
            })?;
        let values: Vec<f32> = j.values.iter().map(|&v| v as f32).collect();
        crate::data::write_npy_f32(path, &[s.c, s.c, s.h, s.w], &values)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!(
            "wrote {} ({}, {}, {}, {}): ∂x̂₀[o, {row}, {col}] / ∂x_t[c, h, w]",
            path.display(),
            s.c,
            s.c,
            s.h,
            s.w
        );
    }
    let ins = denoiser.inspect(&x, &call, row, col, args.top, &Control::none()).map_err(|e| e.to_string())?;
    // Ideal votes are whole images: they come from no particular place.
    let located = args.call.machine != MachineKind::Ideal;
    let weights: Vec<serde_json::Value> = ins
        .votes
        .iter()
        .map(|v| {
            serde_json::json!({
                "image": v.image,
                "row": located.then_some(v.y),
                "col": located.then_some(v.x),
                "weight": v.weight,
            })
        })
        .collect();
    let mut out = serde_json::json!({
        "x0": ins.x0,
        "entropy": ins.entropy,
        "candidates": ins.candidates,
        "weights": weights,
    });
    // The Gaussian machine reads z − μ through one row of its Wiener filter (no votes); the
    // PCA-locality machine compares over a learned window, listed as (row, col) pairs.
    if let Some(filter) = &ins.filter {
        out["filter"] = serde_json::json!(filter.chunks(s.w).collect::<Vec<_>>());
    }
    if let Some(window) = &ins.window {
        out["window"] = serde_json::json!(window.iter().map(|&p| [p / s.w, p % s.w]).collect::<Vec<_>>());
    }
    println!("{}", serde_json::to_string_pretty(&out).expect("serialises"));
    Ok(())
}

fn sample(args: SampleArgs) -> Result<(), String> {
    let recipe = match &args.recipe {
        Some(path) => {
            let (recipe, warnings) = Recipe::read(path)?;
            for w in warnings {
                eprintln!("warning: {w}");
            }
            recipe
        }
        None => {
            let patch = match args.patch {
                Some(p) if p % 2 == 1 => PatchSchedule::Constant { p },
                Some(p) => return Err(format!("--patch {p} must be odd")),
                None => args.patch_schedule.clone(),
            };
            Recipe {
                dataset: DatasetSource::parse(&args.data.dataset),
                load: args.data.options(args.seed),
                sampler: SamplerConfig {
                    machine: args.machine,
                    boundary: args.boundary,
                    schedule: args.schedule,
                    patch,
                    locality_scale: args.locality_scale,
                    steps: args.steps,
                    t_start: args.t_start,
                    eta: args.eta,
                    seed: args.seed,
                    canvas: args.canvas,
                    ..SamplerConfig::default()
                },
                device: args.device,
                init: args.init.clone(),
                ..Recipe::default()
            }
        }
    };
    recipe.validate()?;
    if recipe.root().init.is_none()
        && let Some(why) = recipe.sampler.noise_start_warning()
    {
        eprintln!("warning: {why}");
    }
    let out_dir = &args.out_dir;
    if !args.export.force
        && let Ok(mut entries) = std::fs::read_dir(out_dir)
        && entries.next().is_some()
    {
        return Err(format!(
            "{} is not empty: choose a new folder, or give --force to write into it (existing files are replaced)",
            out_dir.display()
        ));
    }
    let dataset = Dataset::load(&recipe.dataset, &recipe.load).map_err(|e| e.to_string())?;
    let hash = dataset.content_hash();
    if let Some(expected) = &recipe.dataset_hash
        && *expected != hash
    {
        // validate() guarantees 64 hex digits, so slicing is safe.
        return Err(format!(
            "{}: the dataset {} no longer matches the recipe (content hash {} ≠ {})",
            args.recipe.as_deref().unwrap_or(Path::new("recipe")).display(),
            recipe.dataset.label(),
            &hash[..12],
            &expected[..12]
        ));
    }
    if !dataset.report.skipped.is_empty() {
        eprintln!(
            "note: skipped {} unreadable files (first: {})",
            dataset.report.skipped.len(),
            dataset.report.skipped[0].0.display()
        );
    }
    // The canvas: the recipe's, or the training images' size.
    let canvas = recipe.sampler.canvas_shape(dataset.shape);
    // A recipe's own map and edits are checked against the data now, naming the recipe
    // (those given by flags name their files below).
    if let Some(path) = &args.recipe {
        for (_, cfg) in recipe.segments() {
            cfg.validate_paint(dataset.shape, dataset.len()).map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    let recipe = with_paint(recipe, &args, canvas)?;
    let init = recipe.init.as_deref().map(|p| read_init(p, canvas)).transpose()?;
    let device = resolve_device(recipe.device)?;
    let recipe = Recipe { dataset_hash: Some(hash), device: device.kind, ..recipe };

    let mut denoiser = Denoiser::new(&dataset.images, dataset.len(), dataset.shape, &device.device);
    let bundled = recipe.dataset.bundled_name();
    engine::machines::cnn::attach(&mut denoiser, bundled, args.data.cnn.as_deref());
    let shape = dataset.shape;
    for (_, cfg) in recipe.segments() {
        denoiser.check_run(&cfg)?;
    }
    std::fs::create_dir_all(out_dir).map_err(|e| format!("{}: cannot create folder: {e}", out_dir.display()))?;
    let mut traj = Trajectory::new(recipe.clone(), canvas);
    let started = std::time::Instant::now();
    let cancel = CancelToken::new();
    let steps = recipe.sampler.steps;
    // Progress in thousandths of a step, so the bar moves within a long step; indicatif
    // draws nothing when stderr is not a terminal.
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(steps as u64 * 1000),
        indicatif::ProgressDrawTarget::stderr_with_hz(10),
    );
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} step {msg}  {elapsed_precise}  ETA {eta}  {per_sec}")
            .expect("a valid template")
            .with_key("per_sec", |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.2} steps/s", s.per_sec() / 1000.0);
            }),
    );
    let mut run_step = |sampler: &mut engine::Sampler| {
        let k = sampler.next_step();
        bar.set_message(format!("{}/{steps}", k + 1));
        let mut progress = |done: usize, total: usize| {
            bar.set_position(k as u64 * 1000 + (done * 1000 / total.max(1)) as u64);
        };
        let mut ctl = Control::new(&cancel, Some(&mut progress));
        sampler.set_maps(args.maps);
        let record = sampler.step(&mut denoiser, &mut ctl).expect("not done").map_err(|e| e.to_string());
        for n in denoiser.take_notices() {
            bar.suspend(|| eprintln!("note: {n}"));
        }
        record
    };
    let mut sampler = recipe.start_sampler(shape, init, &mut run_step, &mut |r| traj.push(r))?;
    while !sampler.is_done() {
        traj.push(run_step(&mut sampler)?);
    }
    bar.finish_and_clear();
    export::write_run(&traj, out_dir, args.export.force)?;
    if args.maps {
        export::maps::write_maps(&traj, out_dir, dataset.len(), args.export.force)?;
    }
    eprintln!("{} steps in {:.2}s; wrote {}", steps, started.elapsed().as_secs_f64(), args.out_dir.display());
    let flags = &args.export;
    if flags.gif.is_some() || flags.apng.is_some() || flags.sheet.is_some() || flags.frames.is_some() {
        for p in export::export_all(&traj, &flags.to_options(&traj), &mut |_, _| true)? {
            eprintln!("wrote {}", p.display());
        }
    }
    if let Some(dir) = &flags.plots {
        for p in export::curves::write_plots(&traj, &export::curves::Curves::default(), dir, flags.force)? {
            eprintln!("wrote {}", p.display());
        }
    }
    Ok(())
}

/// The recipe with `--locality-map` and `--edit` read in (inline: the recipe then replays
/// the run alone). A replayed recipe keeps its own.
fn with_paint(mut recipe: Recipe, args: &SampleArgs, canvas: engine::ImageShape) -> Result<Recipe, String> {
    if args.recipe.is_some() {
        return Ok(recipe);
    }
    if let Some(p) = &args.locality_map {
        recipe.sampler.locality_map =
            Some(data::paint::read_locality_map(p, canvas.h, canvas.w).map_err(|e| e.to_string())?);
    }
    if let Some(p) = &args.edit {
        recipe.sampler.edits = data::paint::read_edits(p, canvas.h, canvas.w).map_err(|e| e.to_string())?;
    }
    Ok(recipe)
}

/// `--init` on the run's canvas.
fn read_init(path: &Path, canvas: engine::ImageShape) -> Result<Vec<f32>, String> {
    let (shape, x) = data::paint::read_canvas_npy(path, canvas.c).map_err(|e| e.to_string())?;
    if shape != canvas {
        return Err(format!(
            "{}: x is {}×{}, but the run's canvas is {}×{}",
            path.display(),
            shape.h,
            shape.w,
            canvas.h,
            canvas.w
        ));
    }
    Ok(x)
}

impl ExportFlags {
    pub fn to_options(&self, traj: &Trajectory) -> ExportOptions {
        ExportOptions {
            view: self.view,
            scale: self.scale.unwrap_or_else(|| export::default_scale(traj.shape)),
            steps: self.range,
            fps: self.fps,
            hold_seconds: self.hold,
            gif: self.gif.clone(),
            apng: self.apng.clone(),
            sheet: self.sheet.clone(),
            sheet_count: self.sheet_count,
            frames: self.frames.clone(),
            overwrite: self.force,
        }
    }
}
