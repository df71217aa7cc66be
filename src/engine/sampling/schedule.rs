//! Noise schedules ᾱ(t) of the variance-preserving forward process
//! x_t = √ᾱ(t)·x₀ + √(1−ᾱ(t))·ε, with t ∈ [0, 1].

use serde::{Deserialize, Serialize};

/// How signal fades into noise as t goes from 0 to 1.
///
/// Each variant carries its shape parameters so a recipe records exactly what
/// was run; the defaults are the ones SCIENCE.md names.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum NoiseSchedule {
    /// ᾱ(t) = cos²(π·t / (2·(1+s))): the paper's schedule with s = 0.008 (no offset at t = 0).
    Cosine { s: f64 },
    /// 1−ᾱ(t) = start + (end − start)·t, linear in the noise fraction.
    Linear { start: f64, end: f64 },
    /// 1−ᾱ(t) = 1 − e^(−rate·t).
    Exponential { rate: f64 },
}

impl Default for NoiseSchedule {
    fn default() -> Self {
        Self::cosine()
    }
}

impl NoiseSchedule {
    pub const NAMES: [&'static str; 3] = ["cosine", "linear", "exponential"];

    pub fn cosine() -> Self {
        Self::Cosine { s: 0.008 }
    }
    pub fn linear() -> Self {
        Self::Linear { start: 0.01, end: 0.98 }
    }
    pub fn exponential() -> Self {
        Self::Exponential { rate: 2.0 }
    }

    /// The schedule with its default parameters, by name (`cosine`, `linear`, `exponential`).
    pub fn by_name(name: &str) -> Result<Self, String> {
        match name.to_ascii_lowercase().as_str() {
            "cosine" => Ok(Self::cosine()),
            "linear" => Ok(Self::linear()),
            "exponential" | "exp" => Ok(Self::exponential()),
            other => Err(format!("unknown noise schedule '{other}' (expected cosine, linear or exponential)")),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Cosine { .. } => "cosine",
            Self::Linear { .. } => "linear",
            Self::Exponential { .. } => "exponential",
        }
    }

    /// ᾱ(t), the fraction of signal power left at time t.
    pub fn alpha_bar(&self, t: f64) -> f64 {
        let t = t.clamp(0.0, 1.0);
        match *self {
            Self::Cosine { s } => (std::f64::consts::FRAC_PI_2 * t / (1.0 + s)).cos().powi(2),
            Self::Linear { start, end } => 1.0 - (start + (end - start) * t),
            Self::Exponential { rate } => (-rate * t).exp(),
        }
    }

    /// Signal scale a = √ᾱ and noise scale σ = √(1−ᾱ) at time t.
    pub fn scales(&self, t: f64) -> (f64, f64) {
        let ab = self.alpha_bar(t);
        (ab.sqrt(), (1.0 - ab).max(0.0).sqrt())
    }

    /// Checks the parameters give a valid schedule: ᾱ in (0, 1] and never increasing.
    pub fn validate(&self) -> Result<(), String> {
        let mut prev = f64::INFINITY;
        for i in 0..=100 {
            let ab = self.alpha_bar(i as f64 / 100.0);
            if !(ab > 0.0 && ab <= 1.0 && ab.is_finite()) {
                return Err(format!(
                    "noise schedule {self:?} gives ᾱ = {ab} at t = {}; it must stay in (0, 1]",
                    i as f64 / 100.0
                ));
            }
            if ab > prev + 1e-12 {
                return Err(format!("noise schedule {self:?} is not decreasing in t"));
            }
            prev = ab;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_matches_science_md() {
        let s = NoiseSchedule::cosine();
        assert_eq!(s.alpha_bar(0.0), 1.0);
        assert!((s.alpha_bar(1.0) - 1.55e-4).abs() < 0.01e-4, "{}", s.alpha_bar(1.0));
        let t: f64 = 0.3;
        let want = (std::f64::consts::PI * t / 2.016).cos().powi(2);
        assert!((s.alpha_bar(t) - want).abs() < 1e-15);
    }

    #[test]
    fn linear_and_exponential_endpoints() {
        let l = NoiseSchedule::linear();
        assert!((l.alpha_bar(0.0) - 0.99).abs() < 1e-12);
        assert!((l.alpha_bar(1.0) - 0.02).abs() < 1e-12);
        let e = NoiseSchedule::exponential();
        assert!((1.0 - e.alpha_bar(0.5) - (1.0 - (-1.0f64).exp())).abs() < 1e-12);
        for s in [l, e, NoiseSchedule::cosine()] {
            s.validate().unwrap();
        }
        assert!(NoiseSchedule::Linear { start: 0.5, end: 1.2 }.validate().is_err());
    }
}
