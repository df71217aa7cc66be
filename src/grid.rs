//! The seed grid from the command line: one recipe run with many seeds (or, as the machine
//! zoo, every closed-form machine per seed), drawn as one labelled sheet. It is the studio's
//! seed grid made batch, so it shards like `compare` (see [`crate::sweep`]): each shard
//! writes one record per seed holding its final images, a rerun skips what is there, and
//! `grid --from DIR…` draws the sheet from any set of shard folders, the same bytes one
//! process would have drawn.

use std::path::PathBuf;

use clap::Args;
use serde::{Deserialize, Serialize};

use crate::data::Dataset;
use crate::engine::{self, Denoiser, DeviceChoice, ImageShape, MachineKind, SamplerConfig};
use crate::export::{self, frame, sheet};
use crate::recipe::Recipe;
use crate::sweep::{SeedRecord, Shard, ShardArgs, sha256_hex};

#[derive(Args, Debug, Clone)]
pub struct GridArgs {
    /// The run's settings: a recipe.json (the studio's Export → "Recipe…", or any `sample` output).
    #[arg(long)]
    pub recipe: Option<PathBuf>,
    /// How many seeds, counting up from the recipe's own.
    #[arg(long, default_value_t = 9)]
    pub seeds: u64,
    /// One column per closed-form machine (the studio's machine zoo), one row per seed.
    #[arg(long)]
    pub zoo: bool,
    /// Columns of a seed grid (default: as square as the seeds allow).
    #[arg(long)]
    pub cols: Option<usize>,
    /// Integer upscaling of each sample (default: about 224 pixels tall, less where the
    /// sheet would pass 16384 pixels a side).
    #[arg(long)]
    pub scale: Option<u32>,
    /// The sheet (PNG).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Replace an existing sheet.
    #[arg(long)]
    pub force: bool,
    /// Weights for the CNN machine (default: the shipped ones of a bundled set).
    #[arg(long)]
    pub cnn: Option<PathBuf>,
    /// A JSON summary on stdout: seeds, machines, shape, sheet.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub sweep: ShardArgs,
}

/// Everything a grid seed's images depend on besides the seed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GridExperiment {
    pub dataset_hash: String,
    /// SHA-256 of the sampler settings as JSON, with the seed and machine taken out.
    pub settings_hash: String,
    pub cnn_hash: String,
    /// The columns of one seed's row (the recipe's machine, or the zoo's).
    pub machines: Vec<String>,
    pub device: DeviceChoice,
    pub version: String,
}

/// One seed's final images, one per machine, at full f32 precision (serde writes each as the
/// shortest decimal that reads back to the same bits).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GridSeed {
    pub experiment: GridExperiment,
    /// The dataset's short name, for the summary (not part of the identity).
    pub dataset: String,
    pub seed: u64,
    /// (C, H, W) of every image.
    pub shape: [usize; 3],
    /// Whether the sheet is the zoo (labels name the machine).
    pub zoo: bool,
    pub images: Vec<Vec<f32>>,
}

impl SeedRecord for GridSeed {
    type Experiment = GridExperiment;
    const WHAT: &'static str = "a grid seed";
    fn experiment(&self) -> &GridExperiment {
        &self.experiment
    }
    fn seed(&self) -> u64 {
        self.seed
    }
    fn agrees(&self, other: &Self) -> bool {
        self.shape == other.shape
            && self.images.len() == other.images.len()
            && self
                .images
                .iter()
                .zip(&other.images)
                .all(|(a, b)| a.iter().map(|v| v.to_bits()).eq(b.iter().map(|v| v.to_bits())))
    }
}

pub fn run(args: &GridArgs) -> Result<(), String> {
    if !args.sweep.from.is_empty() {
        if args.sweep.shard.is_some() || args.sweep.out_dir.is_some() || args.recipe.is_some() {
            return Err("--from draws finished seeds: it takes no --recipe, --shard or --out-dir".into());
        }
        let out = args.out.as_ref().ok_or("--from needs --out: the sheet's file (PNG)")?;
        let seeds: Vec<GridSeed> = crate::sweep::gather(&args.sweep.from)?;
        return finish(args, &seeds, Some(out));
    }
    let path = args.recipe.as_ref().ok_or("grid needs --recipe FILE (a recipe.json), or --from DIR to merge shards")?;
    match (args.sweep.shard, &args.out, &args.sweep.out_dir) {
        (Some(_), _, None) => {
            return Err("--shard needs --out-dir: a shard's seeds are files that `grid --from` draws".into());
        }
        (Some(_), Some(_), _) => {
            return Err(
                "--shard writes its seeds to --out-dir; --out takes the sheet (`grid --from DIR --out SHEET`)".into()
            );
        }
        (None, None, None) => return Err("grid needs --out SHEET.png (or --out-dir DIR for the seeds' records)".into()),
        _ => {}
    }
    if args.seeds == 0 || args.seeds > 100_000 {
        return Err(format!("--seeds must be between 1 and 100000, not {}", args.seeds));
    }
    if let Some(out) = &args.out
        && !args.force
        && out.exists()
    {
        return Err(crate::files::exists_error(out).to_string());
    }
    let (recipe, warnings) = Recipe::read(path)?;
    for w in warnings {
        eprintln!("warning: {w}");
    }
    recipe.validate()?;
    if recipe.root().init.is_some() {
        return Err(format!(
            "{}: this run starts from a given x (init), not from seeded noise, so every seed would give the same image",
            path.display()
        ));
    }
    if recipe.branched_from.is_some() {
        eprintln!("note: {} is a branch; the grid runs its latest settings from the first step", path.display());
    }
    let dataset = Dataset::load(&recipe.dataset, &recipe.load).map_err(|e| format!("{}: {e}", path.display()))?;
    let hash = dataset.content_hash();
    if let Some(expected) = &recipe.dataset_hash
        && *expected != hash
    {
        return Err(format!(
            "{}: the dataset {} no longer matches the recipe (content hash {} ≠ {})",
            path.display(),
            recipe.dataset.label(),
            &hash[..12.min(hash.len())],
            &expected[..12.min(expected.len())]
        ));
    }
    let device = engine::device::resolve(recipe.device)?;
    if let Some(n) = &device.notice {
        eprintln!("note: {n}");
    }
    let mut den = Denoiser::new(&dataset.images, dataset.len(), dataset.shape, &device.device);
    let bundled = recipe.dataset.bundled_name();
    engine::machines::cnn::attach(&mut den, bundled, args.cnn.as_deref());
    let base = SamplerConfig { seed: 0, ..recipe.sampler.clone() };
    let wanted = if args.zoo { MachineKind::closed_form() } else { vec![base.machine] };
    let mut machines = Vec::new();
    for m in wanted {
        match den.check_run(&SamplerConfig { machine: m, ..base.clone() }) {
            Ok(()) => machines.push(m),
            // The zoo goes on without a machine these settings cannot run; one machine cannot.
            Err(e) if args.zoo => eprintln!("note: the zoo leaves out {}: {e}", m.title()),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
    }
    if machines.is_empty() {
        return Err(format!("{}: no machine can run these settings", path.display()));
    }
    let settings = serde_json::to_string(&SamplerConfig { machine: MachineKind::Els, ..base.clone() })
        .expect("settings serialise");
    let experiment = GridExperiment {
        dataset_hash: hash,
        settings_hash: sha256_hex(settings.as_bytes()),
        cnn_hash: crate::experiment::cnn_hash(bundled, args.cnn.as_deref())?,
        machines: machines.iter().map(|m| m.name().to_string()).collect(),
        device: device.kind,
        version: env!("CARGO_PKG_VERSION").into(),
    };
    if let Some(dir) = &args.sweep.out_dir {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: cannot make the folder: {e}", dir.display()))?;
    }
    let canvas = base.canvas_shape(dataset.shape);
    let shard = args.sweep.shard.unwrap_or(Shard::ALL);
    let first = recipe.sampler.seed;
    let seeds: Vec<u64> = (0..args.seeds).map(|i| first.wrapping_add(i)).filter(|&s| shard.takes(s)).collect();
    if seeds.is_empty() {
        return Err(format!("shard {}/{} has no seeds of the {} asked for", shard.index, shard.count, args.seeds));
    }
    let started = std::time::Instant::now();
    let mut done = Vec::new();
    for seed in seeds {
        if let Some(dir) = &args.sweep.out_dir
            && let Some(found) = crate::sweep::done::<GridSeed>(dir, &experiment, seed)?
        {
            eprintln!("seed {seed}: done before ({})", crate::sweep::file_name(&experiment, seed));
            done.push(found);
            continue;
        }
        let mut images = Vec::new();
        for &m in &machines {
            images.push(crate::experiment::final_image(&mut den, SamplerConfig { machine: m, seed, ..base.clone() })?);
        }
        eprintln!("seed {seed}: done ({:.1} s)", started.elapsed().as_secs_f64());
        let record = GridSeed {
            experiment: experiment.clone(),
            dataset: recipe.dataset.short_name(),
            seed,
            shape: [canvas.c, canvas.h, canvas.w],
            zoo: args.zoo,
            images,
        };
        if let Some(dir) = &args.sweep.out_dir {
            crate::sweep::write(&record, dir)?;
        }
        done.push(record);
    }
    if args.sweep.shard.is_some() {
        eprintln!(
            "shard {}/{}: {} seed(s) in {}; draw the sheet with `morphogen grid --from DIR … --out SHEET.png`",
            shard.index,
            shard.count,
            done.len(),
            args.sweep.out_dir.as_ref().map(|d| d.display().to_string()).unwrap_or_default()
        );
    }
    finish(args, &done, args.out.as_ref())
}

/// Draws the sheet (when asked) and prints the summary.
fn finish(args: &GridArgs, seeds: &[GridSeed], out: Option<&PathBuf>) -> Result<(), String> {
    let first = seeds.first().ok_or("no seeds")?;
    let [c, h, w] = first.shape;
    let shape = ImageShape { c, h, w };
    if let Some(bad) = seeds.iter().find(|s| s.shape != first.shape || s.images.iter().any(|i| i.len() != shape.len()))
    {
        return Err(format!("seed {}: its images are not {c}×{h}×{w} like seed {}'s", bad.seed, first.seed));
    }
    let gaps = missing(seeds.iter().map(|s| s.seed));
    if !gaps.is_empty() {
        eprintln!(
            "note: {} seed(s) missing between the first and last (a shard not run yet?): {}",
            gaps.len(),
            list(&gaps)
        );
    }
    let mut sheet_size = None;
    if let Some(out) = out {
        let per_row = first.images.len();
        let tiles = seeds.len() * per_row;
        let cols = if first.zoo { per_row } else { args.cols.unwrap_or_else(|| square_columns(tiles)) };
        let wanted = args.scale.unwrap_or_else(|| export::default_scale(shape));
        let scale = fit_scale(shape, tiles, cols, wanted)?;
        if scale < wanted {
            eprintln!("note: samples drawn at {scale}× (not {wanted}×) so the sheet stays within 16384 pixels a side");
        }
        let names: Vec<String> = first
            .experiment
            .machines
            .iter()
            .map(|n| MachineKind::parse(n).map(|m| m.title().to_string()).unwrap_or_else(|_| n.clone()))
            .collect();
        let drawn: Vec<_> = seeds
            .iter()
            .flat_map(|s| {
                s.images.iter().zip(&names).map(move |(img, name)| {
                    let label = if s.zoo { format!("{name} · seed {}", s.seed) } else { format!("seed {}", s.seed) };
                    (frame::render(img, shape, scale), label)
                })
            })
            .collect();
        let image = sheet::contact_sheet_with_columns(&drawn, cols);
        sheet_size = Some([image.width(), image.height()]);
        crate::files::write_bytes(out, args.force, &frame::encode_png(&image)).map_err(|e| e.to_string())?;
        eprintln!("wrote {} ({} seeds, {} columns, {scale}×)", out.display(), seeds.len(), cols);
    }
    if args.json {
        let summary = serde_json::json!({
            "dataset": first.dataset,
            "seeds": seeds.len(),
            "first_seed": first.seed,
            "machines": first.experiment.machines,
            "shape": first.shape,
            "sheet": out.map(|p| p.display().to_string()),
            "sheet_size": sheet_size,
        });
        println!("{summary}");
    }
    Ok(())
}

/// Columns for `n` tiles: the smallest count whose square holds them.
fn square_columns(n: usize) -> usize {
    (1..=n.max(1)).find(|c| c * c >= n).unwrap_or(1)
}

/// The largest scale ≤ `wanted` whose sheet fits [`export::MAX_FRAME_SIDE`] on both sides.
fn fit_scale(shape: ImageShape, tiles: usize, cols: usize, wanted: u32) -> Result<u32, String> {
    let fits = |s: u32| {
        let (w, h) = sheet::sheet_size(shape.w as u32 * s, shape.h as u32 * s, tiles, cols);
        u64::from(w) <= export::MAX_FRAME_SIDE && u64::from(h) <= export::MAX_FRAME_SIDE
    };
    (1..=wanted.max(1)).rev().find(|&s| fits(s)).ok_or_else(|| {
        format!(
            "{tiles} samples of {}×{} do not fit one sheet of at most {} pixels a side even at 1×; draw fewer seeds per sheet",
            shape.h,
            shape.w,
            export::MAX_FRAME_SIDE
        )
    })
}

/// The seeds between the smallest and largest of `seeds` that are not among them.
fn missing(seeds: impl Iterator<Item = u64>) -> Vec<u64> {
    let have: std::collections::BTreeSet<u64> = seeds.collect();
    match (have.first(), have.last()) {
        (Some(&a), Some(&b)) => (a..=b).filter(|s| !have.contains(s)).collect(),
        _ => Vec::new(),
    }
}

/// At most ten seeds, then a count.
fn list(seeds: &[u64]) -> String {
    let shown: Vec<String> = seeds.iter().take(10).map(|s| s.to_string()).collect();
    if seeds.len() > 10 { format!("{} and {} more", shown.join(", "), seeds.len() - 10) } else { shown.join(", ") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn square_columns_hold_every_tile() {
        for (n, c) in [(1, 1), (2, 2), (4, 2), (5, 3), (9, 3), (10, 4), (10_000, 100)] {
            assert_eq!(square_columns(n), c, "{n} tiles");
        }
    }

    #[test]
    fn the_scale_shrinks_until_the_sheet_fits() {
        let mnist = ImageShape { c: 1, h: 28, w: 28 };
        assert_eq!(fit_scale(mnist, 9, 3, 8).unwrap(), 8);
        // 10,000 digits in 100 columns: 8× would be 100 × 240 pixels wide.
        let s = fit_scale(mnist, 10_000, 100, 8).unwrap();
        let (w, h) = sheet::sheet_size(28 * s, 28 * s, 10_000, 100);
        let (w1, h1) = sheet::sheet_size(28 * (s + 1), 28 * (s + 1), 10_000, 100);
        assert!(s < 8 && w <= 16_384 && h <= 16_384, "{s}: {w}×{h}");
        assert!(w1 > 16_384 || h1 > 16_384, "{} would fit too", s + 1);
        let e = fit_scale(mnist, 1_000_000, 1000, 8).unwrap_err();
        assert!(e.contains("1000000 samples of 28×28"), "{e}");
    }

    #[test]
    fn gaps_are_named() {
        assert_eq!(missing([4u64, 1, 2, 7].into_iter()), vec![3, 5, 6]);
        assert!(missing(std::iter::empty()).is_empty());
        assert_eq!(list(&(0..12).collect::<Vec<_>>()), "0, 1, 2, 3, 4, 5, 6, 7, 8, 9 and 2 more");
    }
}
