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

impl BenchResult {
    #[allow(clippy::too_many_arguments)]
    fn new(
        case: String,
        machine: MachineKind,
        boundary: Boundary,
        n: usize,
        shape: ImageShape,
        patch: usize,
        seconds: f64,
        flops: f64,
        matmul_gflops: f64,
    ) -> Self {
        let gflops = flops / seconds / 1e9;
        Self {
            case,
            machine: machine.name().into(),
            boundary: boundary.name().into(),
            n,
            c: shape.c,
            h: shape.h,
            w: shape.w,
            patch,
            seconds,
            gflops,
            tflops: gflops / 1e3,
            matmul_gflops,
        }
    }
}

/// FLOPs of one call, from SCIENCE.md's cost table.
pub fn flops(machine: MachineKind, boundary: Boundary, n: usize, s: ImageShape, p: usize) -> f64 {
    let (n, c, h, w, p) = (n as f64, s.c as f64, s.h as f64, s.w as f64, p as f64);
    let r = (p / 2.0).floor();
    let (h1, w1) = ((h - p + 1.0).max(0.0), (w - p + 1.0).max(0.0));
    match (machine, boundary) {
        (MachineKind::Ideal, _) => 5.0 * n * c * h * w,
        (MachineKind::Equivariant, _) => 2.0 * n * (c * h * w) * (h * w) * 2.0,
        (MachineKind::Local, _) => n * h * w * (5.0 * c + p * p),
        (MachineKind::Els, Boundary::Circular) => 2.0 * c * (p * p + 1.0) * h * w * n * h1 * w1,
        (MachineKind::Els, Boundary::Zeros) => {
            2.0 * c * (p * p + 1.0) * n * ((h1 * w1).powi(2) + 2.0 * r * w1 * w1 + 2.0 * r * h1 * h1 + 4.0 * r * r)
        }
        // Two products with the D×r eigenbasis (r ≤ D).
        (MachineKind::Gaussian, _) => 4.0 * (c * h * w).powi(2),
        // Two passes, each: differences, window sums (2P adds), exp; the second also spreads
        // weights back (2P adds) and accumulates C values.
        (MachineKind::Pspc, _) => n * h * w * (8.0 * c + 8.0 * p + 10.0),
        // The masked distances are one [N, D] × [D, D] product.
        (MachineKind::PcaLocality, _) => 2.0 * n * (c * h * w).powi(2) + 8.0 * n * c * h * w,
        // One forward pass of the shipped network: 2 FLOPs per weight per pixel.
        (MachineKind::Cnn, _) => 2.0 * crate::engine::cnn::CnnShape::SMALL.parameters() as f64 * h * w,
    }
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
    engine::noise::gaussian(12345, 0, n * shape.len()).into_iter().map(|v| (v * 0.5).clamp(-1.0, 1.0)).collect()
}

/// One synthetic x per seed.
fn synthetic_seeded(seed: u64, shape: ImageShape) -> Vec<f32> {
    engine::noise::gaussian(777, seed, shape.len()).into_iter().map(|v| (v * 0.5).clamp(-1.0, 1.0)).collect()
}

pub fn run(args: &BenchArgs) -> Result<(), String> {
    for (flag, value, max) in [("--n", args.n, 100_000), ("--n-rgb", args.n_rgb, 100_000), ("--reps", args.reps, 1000)]
    {
        if value == 0 || value > max {
            return Err(format!("{flag} must be between 1 and {max}, not {value}"));
        }
    }
    if args.chunk.is_some_and(|c| c == 0 || c > 1 << 28) {
        return Err(format!("--chunk must be between 1 and {}, not {}", 1 << 28, args.chunk.unwrap_or(0)));
    }
    let device = engine::device::resolve(args.device)?;
    if let Some(n) = &device.notice {
        eprintln!("note: {n}");
    }
    eprintln!("device: {}", device.description);
    let matmul = matmul_gflops(&device.device);
    eprintln!("plain burn matmul (1024³): {matmul:.1} GFLOP/s");

    let mnist =
        Dataset::load(&DatasetSource::Bundled("mnist".into()), &LoadOptions::default()).map_err(|e| e.to_string())?;
    let gray_shape = mnist.shape;
    let mut gray = mnist.images.clone();
    // More images than bundled: repeat with a small seeded jitter so no two are identical.
    while gray.len() < args.n * gray_shape.len() {
        let jitter = engine::noise::gaussian(gray.len() as u64, 1, mnist.images.len());
        gray.extend(mnist.images.iter().zip(jitter).map(|(&v, j)| (v + 0.05 * j).clamp(-1.0, 1.0)));
    }
    gray.truncate(args.n * gray_shape.len());
    let rgb_shape = ImageShape { c: 3, h: 32, w: 32 };
    let rgb = synthetic(args.n_rgb, rgb_shape);

    let mut cases: Vec<(String, MachineKind, Boundary, usize, bool)> = Vec::new();
    // P = 27 and 45 are the large-patch end a locality scale of 3 reaches on MNIST, where
    // almost every pixel's window overhang is its own: compare them with Local at the same P.
    for p in [3, 7, 11, 15, 27, 45] {
        cases.push((format!("els-zeros-28x28-gray-P{p}"), MachineKind::Els, Boundary::Zeros, p, false));
    }
    for p in [5, 11] {
        cases.push((format!("els-zeros-32x32-rgb-P{p}"), MachineKind::Els, Boundary::Zeros, p, true));
    }
    for p in [7, 27, 45] {
        cases.push((format!("local-28x28-gray-P{p}"), MachineKind::Local, Boundary::Zeros, p, false));
    }
    cases.push(("ideal-28x28-gray".into(), MachineKind::Ideal, Boundary::Zeros, 0, false));
    // The later machines (their one-off float64 fit is timed on its own below).
    cases.push(("gaussian-28x28-gray".into(), MachineKind::Gaussian, Boundary::Zeros, 0, false));
    cases.push(("gaussian-32x32-rgb".into(), MachineKind::Gaussian, Boundary::Zeros, 0, true));
    for p in [3, 7] {
        cases.push((format!("pspc-28x28-gray-P{p}"), MachineKind::Pspc, Boundary::Zeros, p, false));
    }
    cases.push(("pca-locality-28x28-gray".into(), MachineKind::PcaLocality, Boundary::Zeros, 0, false));
    cases.push(("pca-locality-32x32-rgb".into(), MachineKind::PcaLocality, Boundary::Zeros, 0, true));

    let mut gray_denoiser = Denoiser::new(&gray, args.n, gray_shape, &device.device);
    let mut rgb_denoiser = Denoiser::new(&rgb, args.n_rgb, rgb_shape, &device.device);
    if let Some(chunk) = args.chunk {
        gray_denoiser.chunk_logits = chunk;
        rgb_denoiser.chunk_logits = chunk;
    }
    let mut results = Vec::new();
    let wanted = |name: &str| args.only.as_deref().is_none_or(|o| name.contains(o));
    if !args.json {
        println!("{:<28} {:>6} {:>10} {:>10} {:>10} {:>7}", "case", "N", "s/call", "GFLOP/s", "matmul", "ratio");
    }
    for (name, machine, boundary, p, is_rgb) in cases {
        if !wanted(&name) {
            continue;
        }
        let (den, n, shape) =
            if is_rgb { (&mut rgb_denoiser, args.n_rgb, rgb_shape) } else { (&mut gray_denoiser, args.n, gray_shape) };
        let call = Call::new(machine, boundary, p.max(1), 0.5);
        // A new x for every call, so no backend can answer a repeated call from a cache.
        let mut seed = 0;
        let mut time = || {
            seed += 1;
            let x = synthetic_seeded(seed, shape);
            let t = Instant::now();
            den.denoise(&x, &call, &mut Control::none()).expect("no cancel");
            t.elapsed().as_secs_f64()
        };
        time();
        let secs = median((0..args.reps.max(1)).map(|_| time()).collect());
        let f = flops(machine, boundary, n, shape, p.max(1));
        let r = BenchResult::new(name, machine, boundary, n, shape, p, secs, f, matmul);
        print_row(&r, args.json);
        results.push(r);
    }

    // The Gaussian machines' fit: mean, covariance (or Gram matrix) and its eigendecomposition,
    // once per dataset, in float64 on the host.
    for (name, is_rgb) in [("gaussian-fit-28x28-gray", false), ("gaussian-fit-32x32-rgb", true)] {
        if !wanted(name) {
            continue;
        }
        let (images, n, shape) = if is_rgb { (&rgb, args.n_rgb, rgb_shape) } else { (&gray, args.n, gray_shape) };
        let d = shape.len();
        let t = Instant::now();
        let model = engine::gaussian::GaussianModel::fit(images, n, d, &Control::none()).expect("no cancel");
        let secs = t.elapsed().as_secs_f64();
        // Covariance or Gram product, then ~9 m³ for tred2 + tql2 with vectors (m = its side).
        let m = n.min(d) as f64;
        let f = 2.0 * (n * d) as f64 * m + 9.0 * m.powi(3);
        let r = BenchResult::new(name.into(), MachineKind::Gaussian, Boundary::Zeros, n, shape, 0, secs, f, matmul);
        eprintln!("{name}: rank {}", model.lambda.len());
        print_row(&r, args.json);
        results.push(r);
    }

    // 20-step samples: MNIST with the paper's MNIST ResNet schedule; RGB 32×32 with the CIFAR10
    // one (on a GPU, or when `--only` names it: on a CPU it takes minutes).
    let on_gpu = device.kind == DeviceChoice::Gpu;
    let samples = [
        ("sample-20-steps-28x28-gray", "MNIST ResNet", false, true),
        (
            "sample-20-steps-32x32-rgb",
            "CIFAR10 ResNet",
            true,
            on_gpu || args.only.as_deref().is_some_and(|o| o.contains("sample")),
        ),
    ];
    for (name, preset, is_rgb, by_default) in samples {
        if !wanted(name) || !by_default {
            continue;
        }
        let (den, n, shape) =
            if is_rgb { (&mut rgb_denoiser, args.n_rgb, rgb_shape) } else { (&mut gray_denoiser, args.n, gray_shape) };
        let cfg = SamplerConfig { patch: PatchSchedule::Preset { name: preset.into() }, ..SamplerConfig::default() };
        let total_flops: f64 = (0..cfg.steps)
            .map(|k| flops(cfg.machine, cfg.boundary, n, shape, cfg.patch_at(k, shape.h, shape.w) as usize))
            .sum();
        let cancel = CancelToken::new();
        let t = Instant::now();
        let mut sampler = engine::Sampler::new(cfg.clone(), shape.len(), None);
        // Seconds per step with its P, so a slow step (a key bank being cut) shows up.
        let mut per_step = Vec::with_capacity(cfg.steps);
        let mut last = Instant::now();
        while let Some(step) = sampler.step(den, &mut Control::new(&cancel, None)) {
            step.map_err(|e| e.to_string())?;
            let k = per_step.len();
            per_step.push(format!("P{} {:.2}", cfg.patch_at(k, shape.h, shape.w), last.elapsed().as_secs_f64()));
            last = Instant::now();
        }
        let secs = t.elapsed().as_secs_f64();
        eprintln!("{name} steps (P, s): {}", per_step.join(", "));
        let r =
            BenchResult::new(name.into(), MachineKind::Els, Boundary::Zeros, n, shape, 0, secs, total_flops, matmul);
        print_row(&r, args.json);
        results.push(r);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results).expect("serialises"));
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
