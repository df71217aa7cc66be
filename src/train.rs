//! `morphogen train`: trains the convolutional ε-predictor on a dataset on the CPU, with a
//! progress bar and a loss curve, and writes the weights file the CNN machine loads.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;

use crate::data::{Dataset, DatasetSource, LoadOptions};
use crate::engine::NoiseSchedule;
use crate::engine::training::network::{Arch, Cnn, CnnHeader, CnnShape};
use crate::engine::training::train::{TrainConfig, train};
use crate::files;

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// A bundled name, a folder of images or an .npy.
    #[arg(long, default_value = "mnist")]
    pub dataset: String,
    /// The weights file to write (see `assets/models/` for the shipped ones).
    #[arg(long)]
    pub out: PathBuf,
    /// Optimiser steps.
    #[arg(long, default_value_t = 8000)]
    pub steps: usize,
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Feature channels inside the network.
    #[arg(long, default_value_t = CnnShape::SMALL.channels)]
    pub channels: usize,
    /// Residual blocks (a UNet's per stage: two down, the bottom, two up).
    #[arg(long, default_value_t = CnnShape::SMALL.blocks)]
    pub blocks: usize,
    /// The network: the paper's two architectures, a ResNet at full size or a UNet two levels
    /// deep with skips.
    #[arg(long, default_value = "resnet", value_parser = Arch::parse)]
    pub arch: Arch,
    /// Peak learning rate.
    #[arg(long, default_value_t = 2e-3)]
    pub lr: f64,
    /// Clip each parameter's gradient to this norm (default: no clipping).
    #[arg(long)]
    pub grad_clip: Option<f32>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop after this many minutes, whatever `--steps` says (the weights so far are written).
    #[arg(long)]
    pub minutes: Option<f64>,
    /// Replace an existing weights file.
    #[arg(long)]
    pub force: bool,
}

/// A mean ε-MSE over the last 100 steps above this (ten times what predicting no noise
/// scores) stops training as diverged.
const DIVERGED: f32 = 10.0;

pub fn run(args: &TrainArgs) -> Result<(), String> {
    for (flag, value, max) in [
        ("--steps", args.steps, 10_000_000),
        ("--batch", args.batch, 4096),
        ("--channels", args.channels, 512),
        ("--blocks", args.blocks, 64),
    ] {
        if value == 0 && flag != "--blocks" || value > max {
            return Err(format!("{flag} must be between {} and {max}, not {value}", usize::from(flag != "--blocks")));
        }
    }
    // A zero budget would write a one-step model and call it trained; a week is the most a
    // run here is worth.
    if let Some(m) = args.minutes
        && !(m > 0.0 && m <= 10_080.0)
    {
        return Err(format!("--minutes must be more than 0 and at most 10080 (a week), not {m}"));
    }
    if !(args.lr > 0.0 && args.lr < 1.0) {
        return Err(format!("--lr must be in (0, 1), not {}", args.lr));
    }
    if let Some(c) = args.grad_clip
        && !(c > 0.0 && c.is_finite())
    {
        return Err(format!("--grad-clip must be a positive norm, not {c}"));
    }
    // All three files are checked before an hour of training, not after it.
    let (curve, plot) = (files::beside(&args.out, "loss.csv"), files::beside(&args.out, "loss.png"));
    if let Some(there) = [&args.out, &curve, &plot].into_iter().find(|p| !args.force && p.exists()) {
        return Err(format!("{} already exists (use --force to overwrite)", there.display()));
    }
    let dataset =
        Dataset::load(&DatasetSource::parse(&args.dataset), &LoadOptions::default()).map_err(|e| e.to_string())?;
    let image = dataset.shape;
    let shape = CnnShape { image_channels: image.c, channels: args.channels, blocks: args.blocks, arch: args.arch };
    let schedule = NoiseSchedule::cosine();
    let cfg = TrainConfig {
        shape,
        steps: args.steps,
        batch: args.batch,
        lr: args.lr,
        seed: args.seed,
        schedule,
        clip: args.grad_clip,
    };
    eprintln!(
        "training a {} ({} block{}{}, {} channels), an ε-predictor ({} parameters, receptive field {} px) on {} {}×{}×{} images: \
         {} steps of {}",
        shape.arch.title(),
        shape.blocks,
        if shape.blocks == 1 { "" } else { "s" },
        if shape.arch == Arch::UNet { " a stage" } else { "" },
        shape.channels,
        shape.parameters(),
        shape.receptive_field(),
        dataset.len(),
        image.c,
        image.h,
        image.w,
        args.steps,
        args.batch
    );
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(args.steps as u64),
        indicatif::ProgressDrawTarget::stderr_with_hz(4),
    );
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} steps  loss {msg}  {elapsed_precise}  ETA {eta}")
            .expect("a valid template"),
    );
    let started = Instant::now();
    let deadline = args.minutes.map(|m| m * 60.0);
    let mut recent = Vec::new();
    let mut diverged = None;
    let (net, losses) = train(&dataset.images, dataset.len(), image, &cfg, &mut |step, loss| {
        recent.push(loss);
        if recent.len() > 100 {
            recent.remove(0);
        }
        bar.set_position(step as u64 + 1);
        bar.set_message(format!("{:.4}", recent.iter().sum::<f32>() / recent.len() as f32));
        // A line every 500 steps for logs, where the bar does not draw.
        if bar.is_hidden() && (step + 1) % 500 == 0 {
            eprintln!(
                "step {}: loss {:.4} ({:.0} s)",
                step + 1,
                recent.iter().sum::<f32>() / recent.len() as f32,
                started.elapsed().as_secs_f64()
            );
        }
        // Predicting no noise at all scores 1: a mean ten times that, or a NaN, is a network
        // that has diverged, and the rest of the hour would be spent on nothing.
        let mean = recent.iter().sum::<f32>() / recent.len() as f32;
        if mean.is_nan() || mean > DIVERGED {
            diverged = Some((step + 1, mean));
            return false;
        }
        deadline.is_none_or(|d| started.elapsed().as_secs_f64() < d)
    });
    bar.finish_and_clear();
    if let Some((step, mean)) = diverged {
        return Err(format!(
            "training diverged at step {step} (mean loss {mean} over the last 100 steps; predicting no noise \
             scores 1): nothing was written; try a lower --lr or --grad-clip 1"
        ));
    }
    let tail = &losses[losses.len().saturating_sub(100)..];
    let final_loss = tail.iter().sum::<f32>() / tail.len().max(1) as f32;
    let header = CnnHeader {
        shape,
        image: [image.c, image.h, image.w],
        dataset: args.dataset.clone(),
        schedule: schedule.name().into(),
        steps: losses.len(),
        batch: args.batch,
        final_loss,
    };
    let bytes = Cnn::to_bytes(&header, net)?;
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: cannot create folder: {e}", dir.display()))?;
    }
    files::write_bytes(&args.out, args.force, &bytes).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let csv: String = std::iter::once("step,loss\n".to_string())
        .chain(losses.iter().enumerate().map(|(i, l)| format!("{},{l}\n", i + 1)))
        .collect();
    files::write_bytes(&curve, args.force, csv.as_bytes()).map_err(|e| format!("{}: {e}", curve.display()))?;
    files::write_bytes(&plot, args.force, &loss_plot(&losses, &args.dataset)?)
        .map_err(|e| format!("{}: {e}", plot.display()))?;
    eprintln!(
        "{} steps in {:.0} s; final loss {final_loss:.4}; wrote {} ({} KB), {} and {}",
        losses.len(),
        started.elapsed().as_secs_f64(),
        args.out.display(),
        bytes.len() / 1024,
        curve.display(),
        plot.display()
    );
    Ok(())
}

/// The per-step losses of a `.loss.csv` (`step,loss` lines after a header), or one line
/// naming the file and the first bad line.
pub fn read_loss_csv(path: &Path) -> Result<Vec<f32>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: cannot read it: {e}", path.display()))?;
    let mut lines = text.lines();
    if lines.next().map(str::trim) != Some("step,loss") {
        return Err(format!("{}: not a loss curve (the first line is not 'step,loss')", path.display()));
    }
    let losses = lines
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            l.split(',').nth(1).and_then(|v| v.trim().parse::<f32>().ok()).filter(|v| v.is_finite()).ok_or_else(|| {
                format!("{}: line {} is not 'step,loss' with a finite loss: {l:?}", path.display(), i + 2)
            })
        })
        .collect::<Result<Vec<f32>, String>>()?;
    if losses.is_empty() {
        return Err(format!("{}: no losses after the header", path.display()));
    }
    Ok(losses)
}

/// The loss curve of a network trained on `dataset` as a PNG: the per-step loss and its
/// running mean over 50 steps, on a log scale, with titled axes and a legend.
pub fn loss_plot(losses: &[f32], dataset: &str) -> Result<Vec<u8>, String> {
    use crate::export::chart::{Chart, Series};
    let raw: Vec<(f64, f64)> = losses
        .iter()
        .enumerate()
        .map(|(i, &l)| ((i + 1) as f64, l as f64))
        .filter(|(_, l)| l.is_finite() && *l > 0.0)
        .collect();
    let smooth: Vec<(f64, f64)> = (0..losses.len())
        .map(|i| {
            let from = i.saturating_sub(49);
            ((i + 1) as f64, losses[from..=i].iter().map(|&l| l as f64).sum::<f64>() / (i + 1 - from) as f64)
        })
        .filter(|(_, l)| l.is_finite() && *l > 0.0)
        .collect();
    let (lo, hi) = raw.iter().fold((f64::INFINITY, 0f64), |(a, b), &(_, l)| (a.min(l), b.max(l)));
    let (lo, hi) = if lo < hi { (lo * 0.9, hi * 1.1) } else { (0.01, 10.0) };
    Chart {
        title: format!("CNN training loss on {dataset}"),
        x_label: "training step".into(),
        y_label: "ε-MSE (mean squared error of the predicted noise)".into(),
        x_range: (1.0, losses.len().max(2) as f64),
        y_range: (lo, hi),
        y_log: true,
        series: vec![
            Series { name: "per step".into(), points: raw, colour: [170, 190, 230], steps: false },
            Series { name: "running mean of 50".into(), points: smooth, colour: [40, 90, 200], steps: false },
        ],
        size: (720, 400),
        legend: crate::export::chart::Corner::UpperRight,
    }
    .png()
}
