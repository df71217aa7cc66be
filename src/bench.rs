//! `morphogen bench`: seconds per denoiser call and effective GFLOP/s for a fixed set of
//! cases, next to the device's own matmul rate measured in the same run.

use std::time::Instant;

use burn::tensor::{Distribution, Tensor};
use clap::Args;
use serde::Serialize;

use crate::data::{Dataset, DatasetSource, LoadOptions};
use crate::engine::{
    self, Boundary, Call, CancelToken, Control, Denoiser, DeviceChoice, ImageShape, MachineKind, PatchSchedule,
    SamplerConfig,
};

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[arg(long, default_value = "auto", value_parser = DeviceChoice::parse)]
    pub device: DeviceChoice,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Timed calls per case (median reported), after one warm-up call.
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Only run cases whose name contains this.
    #[arg(long)]
    pub only: Option<String>,
    /// Images for the MNIST cases (the paper-scale GPU case uses 10000).
    #[arg(long, default_value_t = 2000)]
    pub n: usize,
    /// Images for the RGB 32×32 cases.
    #[arg(long, default_value_t = 1000)]
    pub n_rgb: usize,
    /// Logit entries per key chunk (default: the engine's).
    #[arg(long)]
    pub chunk: Option<usize>,
    /// Keep every key, repeated ones too, in the CPU kernel's banks and the GPU op's groups
    /// (to measure what merging them saves).
    #[arg(long)]
    pub no_merge: bool,
    /// Fold every key in the CPU kernel's banks, none skipped (to measure what exact
    /// skipping saves).
    #[arg(long)]
    pub no_skip: bool,
    /// Compute every distance with the dense sweep, none summed from row strips (to measure
    /// what the strip sums save).
    #[arg(long)]
    pub no_strips: bool,
}

/// One row of the results.
#[derive(Clone, Debug, Serialize)]
pub struct BenchResult {
    pub case: String,
    pub machine: String,
    pub boundary: String,
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub patch: usize,
    pub seconds: f64,
    pub gflops: f64,
    /// The same rate in TFLOP/s, the unit GPU figures are quoted in.
    pub tflops: f64,
    pub matmul_gflops: f64,
}

/// What one timed case measured: the call it made and how long it took.
struct Timed {
    case: String,
    call: Call,
    n: usize,
    shape: ImageShape,
    seconds: f64,
    flops: f64,
}

impl BenchResult {
    fn new(t: Timed, matmul_gflops: f64) -> Self {
        let gflops = t.flops / t.seconds / 1e9;
        Self {
            case: t.case,
            machine: t.call.machine.name().into(),
            boundary: t.call.boundary.name().into(),
            n: t.n,
            c: t.shape.c,
            h: t.shape.h,
            w: t.shape.w,
            patch: t.call.patch,
            seconds: t.seconds,
            gflops,
            tflops: gflops / 1e3,
            matmul_gflops,
        }
    }
}

/// FLOPs of one call, from SCIENCE.md's cost table (each machine's [`crate::engine::Machine::flops`]).
pub fn flops(machine: MachineKind, boundary: Boundary, n: usize, s: ImageShape, p: usize) -> f64 {
    machine.flops(n, s, p, boundary)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// GFLOP/s of a plain 1024³ burn matmul on `device` (median of 5 after a warm-up).
///
/// Each timed product has a left operand of new values (a + k), made and read before the
/// clock starts, and the whole product is summed and read back: repeating one product on
/// wgpu was answered from a cache (34 TFLOP/s on lavapipe), and reading one element let the
/// lazy backend compute only that element.
pub fn matmul_gflops(device: &burn::tensor::Device) -> f64 {
    let n = 1024;
    let a = Tensor::<2>::random([n, n], Distribution::Uniform(-1.0, 1.0), device);
    let b = Tensor::<2>::random([n, n], Distribution::Uniform(-1.0, 1.0), device);
    let mut k = 0.0;
    let mut run = || {
        k += 1e-3;
        let ak = a.clone().add_scalar(k);
        let _ = ak.clone().sum().into_scalar::<f32>();
        let t = Instant::now();
        let _ = ak.matmul(b.clone()).sum().into_scalar::<f32>();
        t.elapsed().as_secs_f64()
    };
    run();
    let secs = median((0..5).map(|_| run()).collect());
    2.0 * (n as f64).powi(3) / secs / 1e9
}

fn synthetic(n: usize, shape: ImageShape) -> Vec<f32> {
    engine::sampling::noise::gaussian(12345, 0, n * shape.len())
        .into_iter()
        .map(|v| (v * 0.5).clamp(-1.0, 1.0))
        .collect()
}

/// One synthetic x per seed.
fn synthetic_seeded(seed: u64, shape: ImageShape) -> Vec<f32> {
    engine::sampling::noise::gaussian(777, seed, shape.len()).into_iter().map(|v| (v * 0.5).clamp(-1.0, 1.0)).collect()
}

/// The two training sets every case runs on: MNIST (repeated with jitter up to `--n`) and a
/// synthetic RGB 32×32 set, each on the device with its denoiser.
struct Sets {
    gray: Set,
    rgb: Set,
}

struct Set {
    images: Vec<f32>,
    n: usize,
    shape: ImageShape,
    denoiser: Denoiser,
}

impl Sets {
    fn load(args: &BenchArgs, device: &burn::tensor::Device) -> Result<Self, String> {
        let mnist = Dataset::load(&DatasetSource::Bundled("mnist".into()), &LoadOptions::default())
            .map_err(|e| e.to_string())?;
        let gray_shape = mnist.shape;
        let mut gray = mnist.images.clone();
        // More images than bundled: repeat with a small seeded jitter so no two are identical.
        while gray.len() < args.n * gray_shape.len() {
            let jitter = engine::sampling::noise::gaussian(gray.len() as u64, 1, mnist.images.len());
            gray.extend(mnist.images.iter().zip(jitter).map(|(&v, j)| (v + 0.05 * j).clamp(-1.0, 1.0)));
        }
        gray.truncate(args.n * gray_shape.len());
        let rgb_shape = ImageShape { c: 3, h: 32, w: 32 };
        let rgb = synthetic(args.n_rgb, rgb_shape);
        let set = |images: Vec<f32>, n: usize, shape: ImageShape| {
            let mut denoiser = Denoiser::new(&images, n, shape, device);
            if let Some(chunk) = args.chunk {
                denoiser.chunk_logits = chunk;
            }
            denoiser.merge_keys = !args.no_merge;
            denoiser.skip_keys = !args.no_skip;
            denoiser.strip_sums = !args.no_strips;
            Set { images, n, shape, denoiser }
        };
        Ok(Self { gray: set(gray, args.n, gray_shape), rgb: set(rgb, args.n_rgb, rgb_shape) })
    }

    fn get(&mut self, rgb: bool) -> &mut Set {
        if rgb { &mut self.rgb } else { &mut self.gray }
    }
}

/// A case's name: machine, boundary where it matters, image, P where it matters.
fn case_name(machine: MachineKind, shape: ImageShape, p: usize) -> String {
    let boundary = if machine.needs().boundary { "-zeros" } else { "" };
    let colour = if shape.c == 1 { "gray" } else { "rgb" };
    let patch = if machine.uses_patch() { format!("-P{p}") } else { String::new() };
    format!("{}{boundary}-{}x{}-{colour}{patch}", machine.name(), shape.h, shape.w)
}

pub fn run(args: &BenchArgs) -> Result<(), String> {
    validate(args)?;
    let device = engine::device::resolve(args.device)?;
    if let Some(n) = &device.notice {
        eprintln!("note: {n}");
    }
    eprintln!("device: {}", device.description);
    let matmul = matmul_gflops(&device.device);
    eprintln!("plain burn matmul (1024³): {matmul:.1} GFLOP/s");
    let mut sets = Sets::load(args, &device.device)?;
    if !args.json {
        println!("{:<28} {:>6} {:>10} {:>10} {:>10} {:>7}", "case", "N", "s/call", "GFLOP/s", "matmul", "ratio");
    }
    let mut results = Vec::new();
    let mut report = |t: Timed| {
        let r = BenchResult::new(t, matmul);
        print_row(&r, args.json);
        results.push(r);
    };
    calls(args, &mut sets, &mut report);
    low_noise(args, &mut sets, &mut report);
    grow(args, &mut sets, &mut report);
    gaussian_fits(args, &sets, &mut report);
    samples(args, &mut sets, device.kind == DeviceChoice::Gpu, &mut report)?;
    background(args)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results).expect("serialises"));
    }
    Ok(())
}

fn validate(args: &BenchArgs) -> Result<(), String> {
    for (flag, value, max) in [("--n", args.n, 100_000), ("--n-rgb", args.n_rgb, 100_000), ("--reps", args.reps, 1000)]
    {
        if value == 0 || value > max {
            return Err(format!("{flag} must be between 1 and {max}, not {value}"));
        }
    }
    if args.chunk.is_some_and(|c| c == 0 || c > 1 << 28) {
        return Err(format!("--chunk must be between 1 and {}, not {}", 1 << 28, args.chunk.unwrap_or(0)));
    }
    Ok(())
}

fn wanted(args: &BenchArgs, name: &str) -> bool {
    args.only.as_deref().is_none_or(|o| name.contains(o))
}

/// One denoiser call per case: every registered machine at the patch sizes it asks to be
/// timed at ([`crate::engine::Machine::bench_patches`]), on gray 28×28 and RGB 32×32.
fn calls(args: &BenchArgs, sets: &mut Sets, report: &mut dyn FnMut(Timed)) {
    for rgb in [false, true] {
        for machine in MachineKind::all() {
            let plan = machine.bench_patches();
            for &p in if rgb { plan.rgb } else { plan.gray } {
                let set = sets.get(rgb);
                let name = case_name(machine, set.shape, p);
                if !wanted(args, &name) {
                    continue;
                }
                let call = Call::new(machine, Boundary::Zeros, p.max(1), 0.5);
                let (n, shape) = (set.n, set.shape);
                // A new x for every call, so no backend can answer a repeated call from a cache.
                let mut seed = 0;
                let mut time = || {
                    seed += 1;
                    let x = synthetic_seeded(seed, shape);
                    let t = Instant::now();
                    set.denoiser.denoise(&x, &call, &mut Control::none()).expect("no cancel");
                    t.elapsed().as_secs_f64()
                };
                time();
                let seconds = median((0..args.reps.max(1)).map(|_| time()).collect());
                let flops = flops(machine, Boundary::Zeros, n, shape, p.max(1));
                report(Timed { case: name, call: Call { patch: p, ..call }, n, shape, seconds, flops });
            }
        }
    }
}

/// ELS on MNIST late in a sample, where exact skipping rules most keys out: P = 3 at
/// t = 0.1 and P = 7 at t = 0.3 of the cosine schedule. x is a training digit noised to t
/// (a late sample is a mosaic of training patches, so its windows sit as near their keys),
/// a different digit and noise each call. FLOPs are the dense call's, so the rate shows what
/// skipping saves.
fn low_noise(args: &BenchArgs, sets: &mut Sets, report: &mut dyn FnMut(Timed)) {
    let set = sets.get(false);
    let (n, shape) = (set.n, set.shape);
    let schedule = engine::NoiseSchedule::cosine();
    for (p, t) in [(3usize, 0.1f64), (7, 0.3)] {
        let name = format!("{}-t{t}", case_name(MachineKind::Els, shape, p));
        if !wanted(args, &name) {
            continue;
        }
        let alpha_bar = schedule.alpha_bar(t);
        let call = Call::new(MachineKind::Els, Boundary::Zeros, p, alpha_bar);
        let (a, s) = (alpha_bar.sqrt() as f32, (1.0 - alpha_bar).sqrt() as f32);
        let mut seed = 0;
        let mut time = || {
            seed += 1;
            let x0 = &set.images[(seed * 7919 % n) * shape.len()..][..shape.len()];
            let noise = engine::sampling::noise::gaussian(4242, seed as u64, shape.len());
            let x: Vec<f32> = x0.iter().zip(noise).map(|(&v, e)| a * v + s * e).collect();
            let t = Instant::now();
            set.denoiser.denoise(&x, &call, &mut Control::none()).expect("no cancel");
            t.elapsed().as_secs_f64()
        };
        time();
        let seconds = median((0..args.reps.max(1)).map(|_| time()).collect());
        let flops = flops(MachineKind::Els, Boundary::Zeros, n, shape, p);
        report(Timed { case: name, call, n, shape, seconds, flops });
    }
}

/// Growing on MNIST: ELS at P = 7 on a canvas twice the side (about 4× the ×1 call, as the
/// theory's cost per pixel says), and a patch map of three sizes in vertical thirds (3, 7, 11)
/// against the pixel-weighted sum of the three uniform calls. Each row prints its ratio.
fn grow(args: &BenchArgs, sets: &mut Sets, report: &mut dyn FnMut(Timed)) {
    let set = sets.get(false);
    let (n, shape) = (set.n, set.shape);
    let els = MachineKind::Els;
    let mut seed = 100;
    let mut time = |den: &mut Denoiser, call: &Call, map: Option<&[u32]>| {
        let canvas = call.canvas_shape(shape);
        let mut once = || {
            seed += 1;
            let x = synthetic_seeded(seed, canvas);
            let t = Instant::now();
            match map {
                Some(m) => den.denoise_patch_map(&x, call, m, &mut Control::none()),
                None => den.denoise(&x, call, &mut Control::none()),
            }
            .expect("no cancel");
            t.elapsed().as_secs_f64()
        };
        once();
        median((0..args.reps.max(1)).map(|_| once()).collect())
    };
    let uniform = |p: usize| Call::new(els, Boundary::Zeros, p, 0.5);
    let name = "els-zeros-56x56-canvas-gray-P7";
    if wanted(args, name) {
        let one = time(&mut set.denoiser, &uniform(7), None);
        let call = uniform(7).on_canvas(shape, 2 * shape.h, 2 * shape.w);
        let seconds = time(&mut set.denoiser, &call, None);
        let canvas = call.canvas_shape(shape);
        let (pairs, pairs_one) = (key_pairs(shape, canvas, 7, None), key_pairs(shape, shape, 7, None));
        eprintln!(
            "{name}: {:.2}× the 28×28 call ({one:.3} s); {:.2}× the (pixel, key) pairs, {:.0}× the pixels",
            seconds / one,
            pairs / pairs_one,
            canvas.pixels() as f64 / shape.pixels() as f64
        );
        let flops = 2.0 * shape.c as f64 * 50.0 * n as f64 * pairs;
        report(Timed { case: name.into(), call, n, shape: call.canvas_shape(shape), seconds, flops });
    }
    let name = "els-zeros-28x28-gray-patchmap-3-7-11";
    if wanted(args, name) {
        let w = shape.w;
        let map: Vec<u32> = (0..shape.pixels()).map(|i| [3, 7, 11][(i % w) * 3 / w]).collect();
        let mut weighted = 0.0;
        let mut flops_sum = 0.0;
        for p in [3usize, 7, 11] {
            let share = map.iter().filter(|&&q| q as usize == p).count() as f64 / map.len() as f64;
            weighted += share * time(&mut set.denoiser, &uniform(p), None);
            let only: Vec<bool> = map.iter().map(|&q| q as usize == p).collect();
            flops_sum += 2.0 * (p * p + 1) as f64 * n as f64 * key_pairs(shape, shape, p, Some(&only));
        }
        let call = uniform(7);
        let seconds = time(&mut set.denoiser, &call, Some(&map));
        eprintln!("{name}: {:.2}× the pixel-weighted sum of the uniform calls ({weighted:.3} s)", seconds / weighted);
        report(Timed { case: name.into(), call, n, shape, seconds, flops: flops_sum });
    }
}

/// (pixel, key position) pairs of one training image that an ELS call at `p` on `canvas`
/// scores, over the pixels `only` marks: its FLOPs are 2·C·(P² + 1)·N times this.
fn key_pairs(train: ImageShape, canvas: ImageShape, p: usize, only: Option<&[bool]>) -> f64 {
    let groups = engine::geometry::els_groups_cancellable(train, canvas, p, Boundary::Zeros, true, &|| false)
        .expect("never cancelled");
    groups
        .iter()
        .map(|g| {
            let pixels = g.pixels.iter().filter(|&&px| only.is_none_or(|o| o[px])).count();
            (pixels * g.key_pixels.len()) as f64
        })
        .sum()
}

/// The main run beside a background job, through the studio's own workers: a 20-step MNIST
/// run alone, then while a secondary worker (what the compare column, seed grid, zoo and
/// calibration use) computes a long run. Prints both times and the background's progress.
/// Only when `--only background` names it: it takes about a minute.
fn background(args: &BenchArgs) -> Result<(), String> {
    use crate::worker::{Command, Event, WorkerHandle};
    if !args.only.as_deref().is_some_and(|o| o.contains("background")) {
        return Ok(());
    }
    let recipe = |steps| {
        let mut r = crate::recipe::Recipe {
            dataset: DatasetSource::Bundled("mnist".into()),
            device: args.device,
            ..crate::recipe::Recipe::default()
        };
        r.sampler.steps = steps;
        r
    };
    let run = |w: &WorkerHandle, run| -> Result<f64, String> {
        let t = Instant::now();
        w.send(Command::Start { run, recipe: recipe(20) });
        loop {
            match w.events.recv_timeout(std::time::Duration::from_secs(600)).map_err(|e| e.to_string())? {
                Event::Finished { run: r } if r == run => return Ok(t.elapsed().as_secs_f64()),
                Event::Error { message, .. } => return Err(message),
                _ => {}
            }
        }
    };
    let main = WorkerHandle::spawn(|| {});
    run(&main, 1)?; // loads the data and builds the key banks
    let alone = run(&main, 2)?;
    let bg = WorkerHandle::spawn_secondary(|| {});
    bg.send(Command::Start { run: 1, recipe: recipe(1000) });
    std::thread::sleep(std::time::Duration::from_secs(8));
    let before = bg.events.try_iter().filter(|e| matches!(e, Event::Step { .. })).count();
    let beside = run(&main, 3)?;
    let during = bg.events.try_iter().filter(|e| matches!(e, Event::Step { .. })).count();
    bg.send(Command::Cancel);
    eprintln!(
        "background: a 20-step MNIST run takes {alone:.2} s alone and {beside:.2} s beside a background run \
         ({:.2}×); the background run did {during} steps meanwhile ({before} in its first 8 s alone)",
        beside / alone
    );
    Ok(())
}

/// The Gaussian machines' fit: mean, covariance (or Gram matrix) and its eigendecomposition,
/// once per dataset, in float64 on the host.
fn gaussian_fits(args: &BenchArgs, sets: &Sets, report: &mut dyn FnMut(Timed)) {
    // The largest fit the machines accept (D = 4096, N > D: the D×D covariance path), on
    // synthetic 64×64 images; tens of seconds, so only when `--only` names it.
    let big = args.only.as_deref().is_some_and(|o| o.contains("gaussian-fit-64x64")).then(|| {
        let shape = ImageShape { c: 1, h: 64, w: 64 };
        (4200, shape, synthetic(4200, shape))
    });
    let cases = [
        ("gaussian-fit-28x28-gray", Some((sets.gray.n, sets.gray.shape, &sets.gray.images[..]))),
        ("gaussian-fit-32x32-rgb", Some((sets.rgb.n, sets.rgb.shape, &sets.rgb.images[..]))),
        ("gaussian-fit-64x64-gray", big.as_ref().map(|(n, shape, images)| (*n, *shape, &images[..]))),
    ];
    for (name, set) in cases {
        let Some((n, shape, images)) = set.filter(|_| wanted(args, name)) else { continue };
        let d = shape.len();
        let t = Instant::now();
        let model = engine::machines::gaussian::GaussianModel::fit(images, n, d, &Control::none()).expect("no cancel");
        let seconds = t.elapsed().as_secs_f64();
        // Covariance or Gram product, then ~9 m³ for a symmetric eigendecomposition with
        // vectors (m = its side; the classic count, whatever the algorithm).
        let m = n.min(d) as f64;
        let flops = 2.0 * (n * d) as f64 * m + 9.0 * m.powi(3);
        eprintln!("{name}: rank {}", model.lambda.len());
        let call = Call::new(MachineKind::Gaussian, Boundary::Zeros, 0, 0.5);
        report(Timed { case: name.into(), call, n, shape, seconds, flops });
    }
}

/// 20-step samples: MNIST with the paper's MNIST ResNet schedule; RGB 32×32 with the CIFAR10
/// one (on a GPU, or when `--only` names it: on a CPU it takes minutes).
fn samples(args: &BenchArgs, sets: &mut Sets, on_gpu: bool, report: &mut dyn FnMut(Timed)) -> Result<(), String> {
    let rgb_by_default = on_gpu || args.only.as_deref().is_some_and(|o| o.contains("sample"));
    let cases = [
        ("sample-20-steps-28x28-gray", "MNIST ResNet", false, true),
        ("sample-20-steps-32x32-rgb", "CIFAR10 ResNet", true, rgb_by_default),
    ];
    for (name, preset, rgb, by_default) in cases {
        if !wanted(args, name) || !by_default {
            continue;
        }
        let set = sets.get(rgb);
        let (n, shape) = (set.n, set.shape);
        let cfg = SamplerConfig { patch: PatchSchedule::Preset { name: preset.into() }, ..SamplerConfig::default() };
        let flops: f64 = (0..cfg.steps)
            .map(|k| flops(cfg.machine, cfg.boundary, n, shape, cfg.patch_at(k, shape.h, shape.w) as usize))
            .sum();
        let cancel = CancelToken::new();
        let t = Instant::now();
        let mut sampler = engine::Sampler::new(cfg.clone(), shape, None);
        // Seconds per step with its P, so a slow step (a key bank being cut) shows up.
        let mut per_step = Vec::with_capacity(cfg.steps);
        let mut last = Instant::now();
        while let Some(step) = sampler.step(&mut set.denoiser, &mut Control::new(&cancel, None)) {
            step.map_err(|e| e.to_string())?;
            let k = per_step.len();
            per_step.push(format!("P{} {:.2}", cfg.patch_at(k, shape.h, shape.w), last.elapsed().as_secs_f64()));
            last = Instant::now();
        }
        let seconds = t.elapsed().as_secs_f64();
        eprintln!("{name} steps (P, s): {}", per_step.join(", "));
        let call = Call::new(MachineKind::Els, Boundary::Zeros, 0, 0.5);
        report(Timed { case: name.into(), call, n, shape, seconds, flops });
    }
    Ok(())
}

fn print_row(r: &BenchResult, json: bool) {
    if json {
        eprintln!("{}: {:.4} s, {:.1} GFLOP/s", r.case, r.seconds, r.gflops);
    } else {
        println!(
            "{:<28} {:>6} {:>10.4} {:>10.1} {:>10.1} {:>6.0}%",
            r.case,
            r.n,
            r.seconds,
            r.gflops,
            r.matmul_gflops,
            100.0 * r.gflops / r.matmul_gflops
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_model_matches_science_md_example() {
        // zeros ELS, 28×28 gray, N = 2000, P = 7: 4.8e10 FLOPs a call.
        let f = flops(MachineKind::Els, Boundary::Zeros, 2000, ImageShape { c: 1, h: 28, w: 28 }, 7);
        assert!((f / 4.8e10 - 1.0).abs() < 0.01, "{f}");
    }
}
