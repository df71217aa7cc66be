//! Patch size as a function of time, P(t): the locality of the machine at each step.

use serde::{Deserialize, Serialize};

/// The ten schedules Kamb & Ganguli fitted to trained networks (SCIENCE.md), 20 entries for
/// t = 0.05, 0.10, …, 1.00 (low noise → high noise).
pub const PRESETS: [(&str, [u32; 20]); 10] = [
    ("MNIST ResNet", [3, 3, 5, 5, 5, 7, 7, 7, 9, 9, 11, 11, 11, 11, 13, 15, 15, 15, 15, 15]),
    ("MNIST ResNet circular", [3, 3, 5, 5, 5, 7, 7, 9, 9, 9, 11, 11, 11, 11, 9, 9, 7, 7, 3, 3]),
    ("MNIST UNet", [3, 3, 3, 5, 5, 7, 7, 7, 9, 9, 9, 11, 13, 15, 17, 21, 23, 23, 25, 27]),
    ("FashionMNIST ResNet", [3, 3, 5, 5, 7, 7, 9, 9, 9, 11, 11, 11, 13, 13, 13, 15, 15, 15, 17, 17]),
    ("FashionMNIST UNet", [3, 3, 5, 5, 7, 7, 7, 9, 11, 11, 11, 13, 15, 15, 21, 23, 25, 25, 25, 25]),
    ("CIFAR10 ResNet", [3, 3, 3, 3, 5, 5, 5, 7, 7, 7, 7, 9, 9, 11, 11, 13, 15, 17, 17, 17]),
    ("CIFAR10 ResNet circular", [3, 3, 3, 3, 5, 5, 5, 5, 7, 7, 7, 9, 9, 11, 11, 13, 13, 15, 15, 15]),
    ("CIFAR10 UNet", [3, 3, 3, 3, 5, 5, 5, 5, 7, 7, 7, 7, 9, 9, 11, 13, 13, 15, 17, 25]),
    ("CelebA ResNet", [3, 3, 3, 5, 5, 5, 5, 5, 7, 7, 9, 9, 9, 11, 11, 11, 13, 15, 19, 19]),
    ("CelebA UNet", [3, 3, 3, 3, 3, 3, 3, 5, 5, 5, 5, 5, 7, 7, 9, 9, 9, 13, 19, 27]),
];

/// The family of [`PRESETS`] a dataset's calibration is shown beside: the paper's dataset
/// nearest to it (FashionMNIST for fashion, CIFAR10 for the colour sets of 32×32), and MNIST
/// for every other set, folders included.
pub fn preset_family(dataset: &str) -> &'static str {
    match dataset {
        "fashion" => "FashionMNIST",
        "emoji" | "photos" => "CIFAR10",
        _ => "MNIST",
    }
}

/// The names of `family`'s presets, in [`PRESETS`] order. The family is the name's first word,
/// so "FashionMNIST ResNet" is not of the MNIST family.
pub fn family_presets(family: &str) -> impl Iterator<Item = &'static str> + '_ {
    PRESETS.iter().map(|(n, _)| *n).filter(move |n| n.split(' ').next() == Some(family))
}

/// How the patch size P is chosen at each step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum PatchSchedule {
    /// The same P at every step.
    Constant { p: u32 },
    /// P_min at t = 0 rising linearly to P_max at t = 1, rounded to the nearest odd size.
    Ramp { p_min: u32, p_max: u32 },
    /// One of the calibrated [`PRESETS`], looked up by t on its 20-point grid.
    Preset { name: String },
    /// One P per step, in sampling order (first entry = the noisiest step).
    List { per_step: Vec<u32> },
}

/// The largest patch size any schedule may name: 2·256 − 1 covers the largest image whole.
pub const MAX_P: u32 = 511;

impl Default for PatchSchedule {
    fn default() -> Self {
        Self::Preset { name: "MNIST ResNet".into() }
    }
}

/// Nearest odd integer ≥ 1 to `v`.
pub fn round_to_odd(v: f64) -> u32 {
    if !v.is_finite() || v <= 1.0 {
        return 1;
    }
    (2.0 * ((v - 1.0) / 2.0).round() + 1.0) as u32
}

/// Finds a preset by name, ignoring case, spaces, dashes and underscores.
pub fn preset(name: &str) -> Option<(&'static str, &'static [u32; 20])> {
    let key = |s: &str| s.chars().filter(|c| c.is_ascii_alphanumeric()).collect::<String>().to_ascii_lowercase();
    let want = key(name);
    PRESETS.iter().find(|(n, _)| key(n) == want).map(|(n, p)| (*n, p))
}

impl PatchSchedule {
    /// Parses the CLI's `--patch-schedule` value: a preset name or a comma-separated list.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.contains(',') || text.trim().parse::<u32>().is_ok() {
            let per_step = text
                .split(',')
                .map(|s| {
                    let p: u32 =
                        s.trim().parse().map_err(|_| format!("'{s}' in the patch list is not a whole number"))?;
                    if p.is_multiple_of(2) {
                        return Err(format!("patch size {p} must be odd and at least 1"));
                    }
                    Ok(p)
                })
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(Self::List { per_step });
        }
        match preset(text) {
            Some((name, _)) => Ok(Self::Preset { name: name.into() }),
            None => {
                Err(format!("unknown patch schedule '{text}'; presets are: {}", PRESETS.map(|(n, _)| n).join(", ")))
            }
        }
    }

    /// Checks the schedule can be run for `steps` steps.
    pub fn validate(&self, steps: usize) -> Result<(), String> {
        let too_big = |p: u32| p > MAX_P;
        match self {
            Self::Constant { p } if too_big(*p) => Err(format!("patch size {p} is above the largest, {MAX_P}")),
            Self::Ramp { p_max, .. } if too_big(*p_max) => {
                Err(format!("patch size {p_max} is above the largest, {MAX_P}"))
            }
            Self::List { per_step } if per_step.iter().any(|&p| too_big(p) || p == 0) => {
                Err(format!("every patch size in the list must be between 1 and {MAX_P}"))
            }
            Self::Constant { p } if p % 2 == 0 => Err(format!("patch size {p} must be odd")),
            Self::Ramp { p_min, p_max } if p_min > p_max || *p_min == 0 => {
                Err(format!("patch ramp {p_min}..{p_max} must have 1 ≤ P_min ≤ P_max"))
            }
            Self::Preset { name } if preset(name).is_none() => Err(format!("unknown patch preset '{name}'")),
            Self::List { per_step } if per_step.len() != steps => {
                Err(format!("the patch list has {} entries but the run has {steps} steps", per_step.len()))
            }
            Self::List { per_step } if per_step.iter().any(|p| p % 2 == 0) => {
                Err("every patch size in the list must be odd".into())
            }
            _ => Ok(()),
        }
    }

    /// The unscaled P for step `step` (0 = first, noisiest) taken at time t.
    pub fn raw_at(&self, step: usize, t: f64) -> f64 {
        match self {
            Self::Constant { p } => *p as f64,
            Self::Ramp { p_min, p_max } => *p_min as f64 + (*p_max as f64 - *p_min as f64) * t.clamp(0.0, 1.0),
            Self::Preset { name } => {
                let table = preset(name).map(|(_, t)| t).unwrap_or(&PRESETS[0].1);
                let idx = ((t * 20.0).round() as i64).clamp(1, 20) as usize - 1;
                table[idx] as f64
            }
            Self::List { per_step } => per_step.get(step).or(per_step.last()).copied().unwrap_or(3) as f64,
        }
    }

    /// P at step `step`, time t: the raw schedule times `scale`, rounded to odd and clamped to
    /// `max_p` (the largest size that still means something for the image and boundary).
    pub fn at(&self, step: usize, t: f64, scale: f64, max_p: u32) -> u32 {
        let p = round_to_odd(self.raw_at(step, t) * scale);
        let max_odd = if max_p % 2 == 1 { max_p } else { max_p.saturating_sub(1).max(1) };
        p.clamp(1, max_odd)
    }

    pub fn label(&self) -> String {
        match self {
            Self::Constant { p } => format!("P = {p}"),
            Self::Ramp { p_min, p_max } => format!("ramp {p_min}→{p_max}"),
            Self::Preset { name } => name.clone(),
            Self::List { per_step } => format!("list of {}", per_step.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_rounding() {
        assert_eq!(round_to_odd(0.2), 1);
        assert_eq!(round_to_odd(2.9), 3);
        assert_eq!(round_to_odd(4.1), 5);
        assert_eq!(round_to_odd(5.9), 5);
        assert_eq!(round_to_odd(6.1), 7);
    }

    #[test]
    fn presets_look_up_by_t() {
        let s = PatchSchedule::parse("mnist-resnet").unwrap();
        assert_eq!(s.at(0, 1.0, 1.0, 99), 15);
        assert_eq!(s.at(0, 0.05, 1.0, 99), 3);
        assert_eq!(s.at(0, 0.5, 1.0, 99), 9);
        // locality scale multiplies and rounds to odd, then clamps to the image
        assert_eq!(s.at(0, 0.5, 2.0, 99), 19); // 18 is a tie: rounds up
        assert_eq!(s.at(0, 1.0, 3.0, 28), 27);
        assert_eq!(s.at(0, 0.05, 0.25, 99), 1);
    }

    #[test]
    fn ramp_and_list() {
        let r = PatchSchedule::Ramp { p_min: 3, p_max: 15 };
        assert_eq!(r.at(0, 0.0, 1.0, 99), 3);
        assert_eq!(r.at(0, 1.0, 1.0, 99), 15);
        assert_eq!(r.at(0, 0.5, 1.0, 99), 9);
        let l = PatchSchedule::parse("15,13,3").unwrap();
        assert_eq!(l.at(1, 0.0, 1.0, 99), 13);
        assert!(l.validate(3).is_ok());
        assert!(l.validate(4).is_err());
        assert!(PatchSchedule::parse("3,4").is_err());
        assert!(PatchSchedule::parse("nope").is_err());
    }
}
