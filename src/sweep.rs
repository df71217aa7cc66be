//! Sweeps beyond one machine: `compare` split into shards that run anywhere and merge.
//!
//! A shard (`--shard I/K --out-dir DIR`) takes the seeds s with s mod K = I and writes one
//! small JSON file per seed, named by the hash of what defines that seed's result (for
//! `compare`: the training data's content hash, the CNN weights' hash, steps, patch schedule,
//! canvas, device kind, Morphogen version, and the seed). A rerun finds a seed's file and
//! skips the seed, so a preempted array job just runs again. `--from DIR…` reads any set of
//! shard folders and gives what one process would, to the bit: every number is stored as the
//! shortest decimal that reads back to the same f64. `compare` ([`SeedResult`]) and
//! `calibrate` ([`CalibrationSeed`]) are the two kinds of record.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::engine::training::network::Arch;
use crate::engine::{Boundary, DeviceChoice, PatchSchedule};
use crate::files;

/// Which seeds this process runs: `index` of `count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl Shard {
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// `I/K` with 0 ≤ I < K ≤ 100000.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("'{text}' is not a shard: write I/K with 0 ≤ I < K (e.g. 0/4)");
        let (i, k) = text.split_once('/').ok_or_else(bad)?;
        let (index, count): (u64, u64) = (i.trim().parse().map_err(|_| bad())?, k.trim().parse().map_err(|_| bad())?);
        if count == 0 || index >= count || count > 100_000 {
            return Err(bad());
        }
        Ok(Self { index, count })
    }

    pub fn takes(&self, seed: u64) -> bool {
        seed % self.count == self.index
    }
}

/// The three flags every batch command shares (`compare`, `calibrate`, `grid`).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ShardArgs {
    /// Run only the seeds s with s mod K = I (`I/K`), for an array job; needs --out-dir.
    #[arg(long, value_parser = Shard::parse)]
    pub shard: Option<Shard>,
    /// Write one record per seed here, named by the hash of what defines it; a seed whose
    /// record is there already is not run again.
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Merge the records of these folders (shards of one run) instead of running anything.
    /// Repeat for more folders.
    #[arg(long)]
    pub from: Vec<PathBuf>,
}

/// Everything a seed's r values depend on besides the seed: results that share it merge.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Experiment {
    /// SHA-256 of the training images as loaded ([`crate::data::Dataset::content_hash`]).
    pub dataset_hash: String,
    /// SHA-256 of the CNN weights file's bytes.
    pub cnn_hash: String,
    pub steps: usize,
    pub patch_schedule: PatchSchedule,
    pub canvas: Option<[usize; 2]>,
    /// `cpu` or `gpu`: the same run on the two differs in the last bits.
    pub device: DeviceChoice,
    pub version: String,
}

/// One seed's result, as written to its file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeedResult {
    pub experiment: Experiment,
    /// The dataset's short name, for the table's label (not part of the identity: the same
    /// data under another path merges).
    pub dataset: String,
    pub seed: u64,
    /// Pearson r of each machine's final image with the CNN's, by machine name.
    pub r: BTreeMap<String, f64>,
    /// The compared network's architecture (absent in results written before there was a
    /// choice, which were all ResNets): the paper's column is its ResNet row.
    #[serde(default)]
    pub network: Arch,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// One seed's record of a sweep: what defines it besides the seed, and how to tell two
/// results of one seed apart.
pub trait SeedRecord: Serialize + DeserializeOwned + Sized {
    type Experiment: Serialize + PartialEq + Clone;
    /// What the record says it is ("a compare result").
    const WHAT: &'static str;
    fn experiment(&self) -> &Self::Experiment;
    fn seed(&self) -> u64;
    /// Whether two records of one seed agree (the same numbers).
    fn agrees(&self, other: &Self) -> bool;
}

impl SeedRecord for SeedResult {
    type Experiment = Experiment;
    const WHAT: &'static str = "a compare result";
    fn experiment(&self) -> &Experiment {
        &self.experiment
    }
    fn seed(&self) -> u64 {
        self.seed
    }
    fn agrees(&self, other: &Self) -> bool {
        self.r == other.r
    }
}

/// The file a seed's record lives in: the first 16 hex digits of the hash of its experiment
/// and seed.
pub fn file_name<E: Serialize>(experiment: &E, seed: u64) -> String {
    let key = serde_json::json!({ "experiment": experiment, "seed": seed });
    format!("{}.json", &sha256_hex(key.to_string().as_bytes())[..16])
}

/// Reads one record file; errors name the file.
pub fn read<R: SeedRecord>(path: &Path) -> Result<R, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: not {}: {e}", path.display(), R::WHAT))
}

/// Writes a record atomically into `dir`; never over another file.
pub fn write<R: SeedRecord>(record: &R, dir: &Path) -> Result<PathBuf, String> {
    let path = dir.join(file_name(record.experiment(), record.seed()));
    let text = serde_json::to_string_pretty(record).expect("a record serialises");
    files::write_bytes(&path, false, text.as_bytes()).map_err(|e| e.to_string())?;
    Ok(path)
}

/// The record of `seed` already in `dir`, if its file is there. A file under the seed's name
/// that is not that record (corrupt, or another experiment's) is an error naming it: it is
/// never overwritten.
pub fn done<R: SeedRecord>(dir: &Path, experiment: &R::Experiment, seed: u64) -> Result<Option<R>, String> {
    let path = dir.join(file_name(experiment, seed));
    if !path.exists() {
        return Ok(None);
    }
    let found: R = read(&path)?;
    if found.experiment() != experiment || found.seed() != seed {
        return Err(format!("{}: holds another run's result (seed {}); move it away", path.display(), found.seed()));
    }
    Ok(Some(found))
}

/// Every record in `dirs` (each folder's `*.json`), one per seed in seed order, all of one
/// experiment. A file of another experiment, or two files that disagree on a seed, is an
/// error naming the file.
pub fn gather<R: SeedRecord>(dirs: &[PathBuf]) -> Result<Vec<R>, String> {
    let mut by_seed: BTreeMap<u64, (R, PathBuf)> = BTreeMap::new();
    let mut first: Option<(R::Experiment, PathBuf)> = None;
    for dir in dirs {
        let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: cannot read the folder: {e}", dir.display()))?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .filter(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
            .collect();
        paths.sort();
        for path in paths {
            let record: R = read(&path)?;
            match &first {
                None => first = Some((record.experiment().clone(), path.clone())),
                Some((e, at)) if e != record.experiment() => {
                    return Err(format!(
                        "{}: a different experiment from {} ({}); merge one experiment at a time",
                        path.display(),
                        at.display(),
                        difference(e, record.experiment())
                    ));
                }
                Some(_) => {}
            }
            if let Some((other, at)) = by_seed.get(&record.seed()) {
                if !other.agrees(&record) {
                    return Err(format!("{}: seed {} disagrees with {}", path.display(), record.seed(), at.display()));
                }
                continue;
            }
            by_seed.insert(record.seed(), (record, path));
        }
    }
    if by_seed.is_empty() {
        let list: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        return Err(format!("{}: no results (*.json) found", list.join(", ")));
    }
    Ok(by_seed.into_values().map(|(r, _)| r).collect())
}

/// Everything a calibration seed's fit depends on besides the seed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CalibrationExperiment {
    pub dataset_hash: String,
    pub cnn_hash: String,
    pub steps: usize,
    /// The candidates: every odd P from 1 up to this.
    pub max_p: u32,
    pub boundary: Boundary,
    pub device: DeviceChoice,
    pub version: String,
}

/// One seed's calibration: per step of the CNN's run, every candidate's score cosine and the
/// best P.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CalibrationSeed {
    pub experiment: CalibrationExperiment,
    /// `--dataset` as given, for the merged outputs (not part of the identity).
    pub dataset: String,
    pub seed: u64,
    pub candidates: Vec<u32>,
    pub t: Vec<f64>,
    pub best: Vec<u32>,
    pub cosine: Vec<Vec<f64>>,
}

impl SeedRecord for CalibrationSeed {
    type Experiment = CalibrationExperiment;
    const WHAT: &'static str = "a calibration seed";
    fn experiment(&self) -> &CalibrationExperiment {
        &self.experiment
    }
    fn seed(&self) -> u64 {
        self.seed
    }
    fn agrees(&self, other: &Self) -> bool {
        self.best == other.best && self.cosine == other.cosine
    }
}

/// The first field where two experiments differ, for the error line.
fn difference<E: Serialize>(a: &E, b: &E) -> String {
    let (a, b) = (serde_json::to_value(a).expect("serialises"), serde_json::to_value(b).expect("serialises"));
    let (a, b) = (a.as_object().expect("an object"), b.as_object().expect("an object"));
    a.iter()
        .find(|(k, v)| b.get(*k) != Some(v))
        .map(|(k, v)| format!("{k}: {v} vs {}", b.get(k).cloned().unwrap_or_default()))
        .unwrap_or_else(|| "fields differ".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_split_the_seeds() {
        let s = Shard::parse("2/5").unwrap();
        assert_eq!(s, Shard { index: 2, count: 5 });
        let taken: Vec<u64> = (0..12).filter(|&seed| s.takes(seed)).collect();
        assert_eq!(taken, vec![2, 7]);
        // Every seed in exactly one shard.
        for seed in 0..40 {
            assert_eq!((0..5).filter(|&i| Shard { index: i, count: 5 }.takes(seed)).count(), 1);
        }
        for bad in ["5/5", "0/0", "a/b", "3", "-1/4", "1/100001", ""] {
            let e = Shard::parse(bad).unwrap_err();
            assert!(e.contains(&format!("'{bad}'")), "{e}");
        }
    }
}
