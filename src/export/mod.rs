//! Getting runs out of the app: frames, PNG sequences, GIF/APNG animations, contact sheets,
//! trajectories and recipes. Every file is written atomically and never overwrites without
//! being told to.

pub mod animation;
pub mod chart;
pub mod curves;
mod font;
pub mod frame;
pub mod maps;
pub mod sheet;

use crate::files as atomic;
use std::path::{Path, PathBuf};

use image::RgbaImage;
use serde::{Deserialize, Serialize};

use crate::engine::{ImageShape, StepRecord};
use crate::trajectory::Trajectory;

/// Which image of a step to export.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum View {
    /// The denoiser's estimate x̂₀.
    #[default]
    X0,
    /// The noisy state x_t.
    Xt,
    /// x_t and x̂₀ side by side.
    Both,
}

impl View {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "x0" | "x0hat" => Ok(Self::X0),
            "xt" => Ok(Self::Xt),
            "both" => Ok(Self::Both),
            _ => Err(format!("'{s}' is not a view (x0, xt or both)")),
        }
    }
    pub fn name(&self) -> &'static str {
        match self {
            Self::X0 => "x0",
            Self::Xt => "xt",
            Self::Both => "both",
        }
    }
}

/// Parses an inclusive step range `a..b` (or a single step `a`).
pub fn parse_range(s: &str) -> Result<(usize, usize), String> {
    let bad = || format!("'{s}' is not a step range like 0..19");
    let (a, b) = match s.split_once("..") {
        Some((a, b)) => {
            (a.trim().parse().map_err(|_| bad())?, b.trim().trim_start_matches('=').parse().map_err(|_| bad())?)
        }
        None => {
            let v = s.trim().parse().map_err(|_| bad())?;
            (v, v)
        }
    };
    if a > b {
        return Err(format!("step range {s} runs backwards"));
    }
    Ok((a, b))
}

/// Integer scale that makes a frame about 224 pixels tall (8× for 28-pixel images).
pub fn default_scale(shape: ImageShape) -> u32 {
    (224 / shape.h.max(1) as u32).clamp(1, 32)
}

/// Largest side of an exported frame or sheet, in pixels.
pub const MAX_FRAME_SIDE: u64 = 16_384;
/// Most bytes the rendered frames of one export may take in memory.
pub const MAX_EXPORT_BYTES: u64 = 2_000_000_000;
/// Longest the last frame of an animation may be held.
pub const MAX_HOLD_SECONDS: f64 = 600.0;

/// Checks the numbers of an export before anything is rendered: a scale that would make
/// frames larger than [`MAX_FRAME_SIDE`], a hold or frame rate that is not a sane duration.
pub fn check_options(options: &ExportOptions, shape: ImageShape) -> Result<(), String> {
    let side = shape.h.max(shape.w) as u64 * options.scale.max(1) as u64 * 2 + 8;
    if options.scale == 0 || side > MAX_FRAME_SIDE {
        let max = (MAX_FRAME_SIDE - 8) / 2 / shape.h.max(shape.w).max(1) as u64;
        return Err(format!(
            "--scale {} is out of range for {}×{} images: 1 to {max}",
            options.scale, shape.w, shape.h
        ));
    }
    if !(0.0..=MAX_HOLD_SECONDS).contains(&options.hold_seconds) {
        return Err(format!("--hold must be between 0 and {MAX_HOLD_SECONDS} seconds, not {}", options.hold_seconds));
    }
    if !(options.fps > 0.0 && options.fps <= 100.0) {
        return Err(format!("--fps must be above 0 and at most 100, not {}", options.fps));
    }
    Ok(())
}

/// What to write, and where.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExportOptions {
    pub view: View,
    pub scale: u32,
    /// Inclusive step range; `None` = every step.
    pub steps: Option<(usize, usize)>,
    pub fps: f64,
    pub hold_seconds: f64,
    pub gif: Option<PathBuf>,
    pub apng: Option<PathBuf>,
    pub sheet: Option<PathBuf>,
    pub sheet_count: usize,
    pub frames: Option<PathBuf>,
    pub overwrite: bool,
}

/// The frame of one step in a view.
pub fn step_frame(step: &StepRecord, shape: ImageShape, view: View, scale: u32) -> RgbaImage {
    match view {
        View::X0 => frame::render(&step.x0_hat, shape, scale),
        View::Xt => frame::render(&step.x_t, shape, scale),
        View::Both => frame::side_by_side(
            &[frame::render(&step.x_t, shape, scale), frame::render(&step.x0_hat, shape, scale)],
            scale.max(2),
        ),
    }
}

/// A run folder: `final.png` (x̂₀ of the last step) and everything
/// [`Trajectory::write_dir`] writes, so `morphogen export --run` can read it back.
pub fn write_run(traj: &Trajectory, dir: &Path, overwrite: bool) -> Result<Vec<PathBuf>, String> {
    let mut written = Vec::new();
    if let Some(img) = traj.final_image() {
        let p = dir.join("final.png");
        let png = frame::encode_png(&frame::render(img, traj.shape, 1));
        atomic::write_bytes(&p, overwrite, &png).map_err(|e| e.to_string())?;
        written.push(p);
    }
    written.extend(traj.write_dir(dir, overwrite)?);
    Ok(written)
}

/// The recipe path written beside an export file: `name.gif` → `name.gif.recipe.json`.
pub fn recipe_path_for(path: &Path) -> PathBuf {
    let name = path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "export".into());
    path.with_file_name(format!("{name}.recipe.json"))
}

/// Writes everything `options` asks for; `progress(done, total)` returns false to cancel.
/// Returns the files written. Refuses, before writing anything, to overwrite existing files
/// unless `options.overwrite`.
pub fn export_all(
    traj: &Trajectory,
    options: &ExportOptions,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<Vec<PathBuf>, String> {
    if traj.steps.is_empty() {
        return Err("the run has no steps to export".into());
    }
    check_options(options, traj.shape)?;
    let last = traj.steps.len() - 1;
    let (a, b) = options.steps.unwrap_or((0, last));
    if b > last {
        return Err(format!("step range {a}..{b} is outside the run's steps 0..{last}"));
    }
    let chosen: Vec<&StepRecord> = traj.steps[a..=b].iter().collect();
    let scale = options.scale.max(1);
    let panels = if options.view == View::Both { 2 } else { 1 };
    let frame_bytes = (traj.shape.h as u64 * scale as u64 + 8) * (traj.shape.w as u64 * scale as u64 * panels + 8) * 4;
    if frame_bytes.saturating_mul(chosen.len() as u64) > MAX_EXPORT_BYTES {
        return Err(format!(
            "{} frames at scale {scale} would take {:.1} GB in memory (the limit is {:.0} GB): use a smaller scale or fewer steps",
            chosen.len(),
            (frame_bytes * chosen.len() as u64) as f64 / 1e9,
            MAX_EXPORT_BYTES as f64 / 1e9
        ));
    }
    let frame_name = |k: usize| format!("frame_{k:04}.png");

    // Everything that would be written, checked up front so nothing is half-done.
    let mut targets: Vec<PathBuf> = Vec::new();
    for p in [&options.gif, &options.apng, &options.sheet].into_iter().flatten() {
        targets.push(p.clone());
        targets.push(recipe_path_for(p));
    }
    if let Some(dir) = &options.frames {
        targets.extend(chosen.iter().map(|s| dir.join(frame_name(s.step))));
        targets.push(dir.join("recipe.json"));
    }
    if !options.overwrite
        && let Some(existing) = targets.iter().find(|p| p.exists())
    {
        return Err(atomic::exists_error(existing).to_string());
    }

    let total = chosen.len() * (options.frames.is_some() as usize + 1) + 3;
    let mut done = 0;
    let mut tick = |n: usize| {
        done += n;
        if progress(done, total) { Ok(()) } else { Err("export cancelled".to_string()) }
    };
    let mut frames = Vec::with_capacity(chosen.len());
    for s in &chosen {
        frames.push(step_frame(s, traj.shape, options.view, scale));
        tick(1)?;
    }
    let recipe_json = traj.recipe.to_json();
    let io = |e: std::io::Error| e.to_string();
    let mut written = Vec::new();
    let write_recipe = |p: &Path, written: &mut Vec<PathBuf>| -> Result<(), String> {
        let rp = recipe_path_for(p);
        atomic::write_bytes(&rp, options.overwrite, recipe_json.as_bytes()).map_err(io)?;
        written.push(rp);
        Ok(())
    };
    let delays = animation::delays_ms(frames.len(), options.fps, options.hold_seconds);
    type Encoder = fn(&[RgbaImage], &[u32], &mut std::io::BufWriter<&mut std::fs::File>) -> Result<(), String>;
    let animations: [(&Option<PathBuf>, Encoder); 2] = [
        (&options.gif, |f, d, w| animation::encode_gif(f, d, w)),
        (&options.apng, |f, d, w| animation::encode_apng(f, d, w)),
    ];
    for (target, encode) in animations {
        if let Some(p) = target {
            atomic::write_with(p, options.overwrite, |f| {
                encode(&frames, &delays, &mut std::io::BufWriter::new(f)).map_err(std::io::Error::other)
            })
            .map_err(io)?;
            written.push(p.clone());
            write_recipe(p, &mut written)?;
        }
        tick(1)?;
    }
    if let Some(p) = &options.sheet {
        let picks = sheet::evenly_spaced(0, chosen.len() - 1, options.sheet_count);
        let tiles: Vec<(RgbaImage, String)> =
            picks.iter().map(|&i| (frames[i].clone(), format!("{} t={:.2}", chosen[i].step, chosen[i].t))).collect();
        let png = frame::encode_png(&sheet::contact_sheet(&tiles));
        atomic::write_bytes(p, options.overwrite, &png).map_err(io)?;
        written.push(p.clone());
        write_recipe(p, &mut written)?;
    }
    tick(1)?;
    if let Some(dir) = &options.frames {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: cannot create folder: {e}", dir.display()))?;
        for (s, f) in chosen.iter().zip(&frames) {
            let p = dir.join(frame_name(s.step));
            atomic::write_bytes(&p, options.overwrite, &frame::encode_png(f)).map_err(io)?;
            written.push(p);
            tick(1)?;
        }
        let rp = dir.join("recipe.json");
        atomic::write_bytes(&rp, options.overwrite, recipe_json.as_bytes()).map_err(io)?;
        written.push(rp);
    }
    Ok(written)
}
