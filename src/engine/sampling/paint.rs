//! What a person paints on a run: a locality map (a per-pixel multiplier of the step's patch
//! size) and edits of the state x_t at a step (a wound: fresh noise, ink or background, or a
//! stamp of a training image), after which the run regrows by the same local rules.
//!
//! Both are stored inline in the run's settings (and so in recipes), losslessly: a recipe file
//! alone replays a painted run byte for byte.

use serde::{Deserialize, Serialize};

use super::noise::gaussian;
use super::patch::round_to_odd;

/// Largest locality multiplier a map may hold: ×8 of a P = 15 schedule already covers any
/// canvas the CPU finishes.
pub const MAX_LOCALITY: f32 = 8.0;

/// A per-pixel multiplier of the patch size: at step k pixel i uses
/// `clamp(round_to_odd(P_k · locality_scale · m_i), 1, max P)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LocalityMap {
    pub h: usize,
    pub w: usize,
    /// Row-major, [H·W], each in (0, [`MAX_LOCALITY`]].
    pub values: Vec<f32>,
}

impl LocalityMap {
    /// A map of `h`×`w` with every multiplier 1 (the uniform schedule).
    pub fn uniform(h: usize, w: usize) -> Self {
        Self { h, w, values: vec![1.0; h * w] }
    }

    /// One line naming the first problem: wrong size, or a multiplier that is not finite or
    /// outside (0, [`MAX_LOCALITY`]].
    pub fn validate(&self, h: usize, w: usize) -> Result<(), String> {
        if (self.h, self.w) != (h, w) || self.values.len() != h * w {
            return Err(format!(
                "the locality map is {}×{} ({} values), but the canvas is {h}×{w}",
                self.h,
                self.w,
                self.values.len()
            ));
        }
        if let Some((i, v)) = self.values.iter().enumerate().find(|(_, v)| !(**v > 0.0 && **v <= MAX_LOCALITY)) {
            return Err(format!(
                "the locality map's value at row {}, column {} is {v}: each must be a number in (0, {MAX_LOCALITY}]",
                i / w,
                i % w
            ));
        }
        Ok(())
    }

    /// The patch size of every pixel for a step whose schedule gives `raw` (before rounding),
    /// under `scale`, at most `max_p`.
    pub fn patches(&self, raw: f64, scale: f64, max_p: u32) -> Vec<u32> {
        let max_odd = if max_p % 2 == 1 { max_p } else { max_p.saturating_sub(1).max(1) };
        self.values.iter().map(|&m| round_to_odd(raw * scale * m as f64).clamp(1, max_odd)).collect()
    }
}

/// Which pixels an edit changes: one string per row, `#` edited and `.` kept.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Mask(pub Vec<String>);

impl Mask {
    /// From a row-major H×W selection.
    pub fn from_bits(h: usize, w: usize, bits: &[bool]) -> Self {
        Self((0..h).map(|i| bits[i * w..(i + 1) * w].iter().map(|&b| if b { '#' } else { '.' }).collect()).collect())
    }
    /// The row-major selection, checked to be H×W of `#` and `.` only.
    pub fn bits(&self, h: usize, w: usize) -> Result<Vec<bool>, String> {
        if self.0.len() != h || self.0.iter().any(|r| r.chars().count() != w) {
            let rw = self.0.first().map(|r| r.chars().count()).unwrap_or(0);
            return Err(format!("the mask is {}×{rw}, but the canvas is {h}×{w}", self.0.len()));
        }
        let mut bits = Vec::with_capacity(h * w);
        for (i, row) in self.0.iter().enumerate() {
            for (j, ch) in row.chars().enumerate() {
                bits.push(match ch {
                    '#' => true,
                    '.' => false,
                    other => {
                        return Err(format!(
                            "the mask has '{other}' at row {i}, column {j} (only # and . are allowed)"
                        ));
                    }
                });
            }
        }
        Ok(bits)
    }
}

/// What an edit writes inside its mask.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum EditOp {
    /// x_t = value in every channel (ink or background painted straight onto the state).
    Set { value: f32 },
    /// x_t = √(1 − ᾱ)·z: a wound erased to fresh noise at the step's level (the state of a
    /// mean-grey image there), z seeded.
    Noise {
        #[serde(default)]
        seed: u64,
    },
    /// x_t = √ᾱ·φ + √(1 − ᾱ)·z: training image `image` placed with its top-left pixel at
    /// (`row`, `col`) of the canvas, noised to the step's level; mask pixels the placed image
    /// does not cover are left as they are.
    Stamp {
        image: usize,
        #[serde(default)]
        row: i64,
        #[serde(default)]
        col: i64,
        #[serde(default)]
        seed: u64,
    },
}

/// How far outside the canvas a stamp may be placed (well past the largest canvas).
pub const MAX_STAMP_OFFSET: u64 = 4096;

/// One change of the state, made before step `step` is denoised (0 = the first step).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Edit {
    pub step: usize,
    #[serde(flatten)]
    pub op: EditOp,
    pub mask: Mask,
}

/// The noise stream of an edit at step k: far from the initial noise (0) and the η noise of
/// each step (k + 1), so an edit's noise is its own.
fn edit_stream(step: usize) -> u64 {
    u64::MAX - step as u64
}

impl Edit {
    /// One line naming the first problem with this edit on a run of `steps` steps over an
    /// H×W canvas and a training set of `n` images.
    pub fn validate(&self, steps: usize, h: usize, w: usize, n: usize) -> Result<(), String> {
        if self.step >= steps {
            return Err(format!("an edit at step {} is past the run's last step ({})", self.step, steps - 1));
        }
        self.mask.bits(h, w)?;
        match self.op {
            EditOp::Set { value } if !value.is_finite() || value.abs() > 1e3 => {
                Err(format!("an edit's value {value} is not a number between -1000 and 1000"))
            }
            EditOp::Stamp { image, .. } if image >= n => {
                Err(format!("an edit stamps training image {image}, but the set has {n} images (0 to {})", n - 1))
            }
            // Beyond this no pixel of any image can land on any canvas; the bound also keeps
            // `pixel − row` far from overflow.
            EditOp::Stamp { row, col, .. } if row.unsigned_abs().max(col.unsigned_abs()) > MAX_STAMP_OFFSET => {
                Err(format!("an edit stamps at row {row}, column {col}: each must be within ±{MAX_STAMP_OFFSET}"))
            }
            _ => Ok(()),
        }
    }

    /// Applies the edit to `x` ([C, H, W] on an H×W canvas) at ᾱ = `alpha_bar`; `image`
    /// gives training image k ([C, Ht, Wt]) and the training size.
    pub fn apply(
        &self,
        x: &mut [f32],
        h: usize,
        w: usize,
        alpha_bar: f64,
        image: &dyn Fn(usize) -> (Vec<f32>, usize, usize),
    ) {
        let bits = self.mask.bits(h, w).expect("edits are validated before a run");
        let hw = h * w;
        let c = x.len() / hw;
        let (a, s) = (alpha_bar.sqrt(), (1.0 - alpha_bar).max(0.0).sqrt());
        match self.op {
            EditOp::Set { value } => {
                for px in (0..hw).filter(|&px| bits[px]) {
                    for ch in 0..c {
                        x[ch * hw + px] = value;
                    }
                }
            }
            EditOp::Noise { seed } => {
                let z = gaussian(seed, edit_stream(self.step), x.len());
                for px in (0..hw).filter(|&px| bits[px]) {
                    for ch in 0..c {
                        x[ch * hw + px] = (s * z[ch * hw + px] as f64) as f32;
                    }
                }
            }
            EditOp::Stamp { image: k, row, col, seed } => {
                let (phi, th, tw) = image(k);
                let z = gaussian(seed, edit_stream(self.step), x.len());
                for px in (0..hw).filter(|&px| bits[px]) {
                    let (i, j) = ((px / w) as i64 - row, (px % w) as i64 - col);
                    if i < 0 || j < 0 || i >= th as i64 || j >= tw as i64 {
                        continue;
                    }
                    let src = i as usize * tw + j as usize;
                    for ch in 0..c {
                        let v = a * phi[ch * th * tw + src] as f64 + s * z[ch * hw + px] as f64;
                        x[ch * hw + px] = v as f32;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_round_trip_and_refuse_bad_rows() {
        let bits = vec![true, false, false, true, true, false];
        let m = Mask::from_bits(2, 3, &bits);
        assert_eq!(m.0, vec!["#..", "##."]);
        assert_eq!(m.bits(2, 3).unwrap(), bits);
        assert!(m.bits(3, 2).unwrap_err().contains("2×3"));
        assert!(Mask(vec!["#x".into()]).bits(1, 2).unwrap_err().contains("'x'"));
    }

    #[test]
    fn locality_patches_round_scale_and_clamp() {
        let m = LocalityMap { h: 1, w: 4, values: vec![0.1, 1.0, 2.0, 8.0] };
        assert_eq!(m.patches(7.0, 1.0, 27), vec![1, 7, 15, 27]);
        assert_eq!(m.patches(7.0, 0.5, 27), vec![1, 3, 7, 27]);
        assert!(m.validate(1, 4).is_ok());
        let bad = LocalityMap { values: vec![1.0, f32::NAN, 1.0, 1.0], ..m.clone() };
        assert!(bad.validate(1, 4).unwrap_err().contains("column 1"));
        assert!(m.validate(2, 2).unwrap_err().contains("1×4"));
    }

    #[test]
    fn edits_change_only_their_mask() {
        let mut x = vec![0.5f32; 2 * 6]; // C = 2, 2×3
        let e = Edit { step: 0, op: EditOp::Set { value: -1.0 }, mask: Mask(vec!["#..".into(), "..#".into()]) };
        e.apply(&mut x, 2, 3, 0.3, &|_| unreachable!());
        assert_eq!(x, vec![-1.0, 0.5, 0.5, 0.5, 0.5, -1.0, -1.0, 0.5, 0.5, 0.5, 0.5, -1.0]);
        // A stamp at (1, 1) of a 1×1 image covers one pixel only.
        let mut y = vec![0.0f32; 6];
        let stamp = Edit {
            step: 2,
            op: EditOp::Stamp { image: 0, row: 1, col: 1, seed: 3 },
            mask: Mask(vec!["###".into(), "###".into()]),
        };
        stamp.apply(&mut y, 2, 3, 1.0, &|_| (vec![0.25], 1, 1));
        assert_eq!(y, vec![0.0, 0.0, 0.0, 0.0, 0.25, 0.0]);
        assert!(stamp.validate(2, 2, 3, 5).unwrap_err().contains("past the run's last step"));
        assert!(stamp.validate(3, 2, 3, 1).is_ok());
        let far = Edit { op: EditOp::Stamp { image: 5, row: 0, col: 0, seed: 0 }, ..stamp };
        assert!(far.validate(3, 2, 3, 5).unwrap_err().contains("training image 5"));
    }
}
