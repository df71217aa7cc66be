//! Which closed-form machine computes x̂₀, and how it treats the image border.

use serde::{Deserialize, Serialize};

/// The four optimal denoisers of Kamb & Ganguli, from least to most constrained by
/// locality and equivariance, and three later training-free ones that explain
/// convolutional diffusion models in other ways.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MachineKind {
    /// Softmax over whole training images: memorises.
    Ideal,
    /// Ideal over every circular shift of every training image.
    Equivariant,
    /// Per pixel, softmax over training images seen through a P×P window at the same place.
    Local,
    /// Per pixel, softmax over training patches from any admissible place (the ELS machine).
    Els,
    /// The posterior mean under a Gaussian fit of the training set (a Wiener filter).
    Gaussian,
    /// PSPC-Square: each in-image P×P window's Ideal posterior at its own place, averaged.
    Pspc,
    /// The Local machine with windows read off the Wiener filter instead of squares.
    PcaLocality,
    /// The trained convolutional ε-predictor (not closed-form: the network the others explain).
    Cnn,
}

impl MachineKind {
    pub const ALL: [MachineKind; 7] =
        [Self::Ideal, Self::Equivariant, Self::Local, Self::Els, Self::Gaussian, Self::Pspc, Self::PcaLocality];
    /// Every machine a run can use: the seven closed-form ones ([`MachineKind::ALL`]) and the CNN.
    pub const WITH_CNN: [MachineKind; 8] = [
        Self::Ideal,
        Self::Equivariant,
        Self::Local,
        Self::Els,
        Self::Gaussian,
        Self::Pspc,
        Self::PcaLocality,
        Self::Cnn,
    ];

    pub fn parse(name: &str) -> Result<Self, String> {
        match name.to_ascii_lowercase().as_str() {
            "ideal" | "is" => Ok(Self::Ideal),
            "equivariant" | "es" => Ok(Self::Equivariant),
            "local" | "ls" => Ok(Self::Local),
            "els" => Ok(Self::Els),
            "gaussian" | "wiener" => Ok(Self::Gaussian),
            "pspc" | "pspc-square" => Ok(Self::Pspc),
            "pca-locality" | "pca_locality" | "pca" => Ok(Self::PcaLocality),
            "cnn" => Ok(Self::Cnn),
            other => Err(format!(
                "unknown machine '{other}' (expected ideal, equivariant, local, els, gaussian, pspc, pca-locality or cnn)"
            )),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Ideal => "ideal",
            Self::Equivariant => "equivariant",
            Self::Local => "local",
            Self::Els => "els",
            Self::Gaussian => "gaussian",
            Self::Pspc => "pspc",
            Self::PcaLocality => "pca-locality",
            Self::Cnn => "cnn",
        }
    }

    pub fn title(&self) -> &'static str {
        match self {
            Self::Ideal => "Ideal",
            Self::Equivariant => "Equivariant",
            Self::Local => "Local",
            Self::Els => "ELS",
            Self::Gaussian => "Gaussian",
            Self::Pspc => "PSPC-Square",
            Self::PcaLocality => "PCA-locality",
            Self::Cnn => "CNN",
        }
    }

    /// One line for a tooltip: what it does and what it costs.
    pub fn describe(&self) -> &'static str {
        match self {
            Self::Ideal => "Softmax over whole training images; memorises. Cost ≈ N·C·H·W.",
            Self::Equivariant => {
                "Ideal over every circular shift of every image; outputs shifted training images. Cost ≈ N·(C·H·W)²."
            }
            Self::Local => {
                "Each pixel votes over training images seen through its P×P window, same place only. Cost ≈ N·H·W·(C + P)."
            }
            Self::Els => {
                "Each pixel votes over training patches from every admissible place: new images from old patches. Cost ≈ N·(H·W)²·C·P²."
            }
            Self::Gaussian => {
                "Wiener filter: the posterior mean if the data were Gaussian with the training set's mean and covariance. Linear; blurry. Cost ≈ D² per call after one D³ fit (D = C·H·W)."
            }
            Self::Pspc => {
                "PSPC-Square (Niedoba et al. 2025): each in-image P×P window's Ideal posterior at its own place, averaged over the windows covering a pixel. Cost ≈ N·H·W·(C + P)."
            }
            Self::PcaLocality => {
                "Data-driven locality (Lukoianov et al. 2025): Local with each pixel's window read off the Wiener filter instead of a square. Cost ≈ N·D² per call."
            }
            Self::Cnn => {
                "A trained convolutional ε-predictor (a small ResNet, assets/models): the kind of network the closed-form machines explain. Needs weights for this dataset."
            }
        }
    }

    /// Whether the patch size matters for this machine.
    pub fn uses_patch(&self) -> bool {
        matches!(self, Self::Local | Self::Els | Self::Pspc)
    }
}

/// How ELS treats windows that stick out of the image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Boundary {
    /// Zero padding; a pixel only matches training patches whose window sticks out of the
    /// image by the same amounts (the paper's default).
    #[default]
    Zeros,
    /// Windows wrap around the image; keys are the fully interior training patches.
    Circular,
}

impl Boundary {
    pub fn parse(name: &str) -> Result<Self, String> {
        match name.to_ascii_lowercase().as_str() {
            "zeros" | "zero" => Ok(Self::Zeros),
            "circular" | "wrap" => Ok(Self::Circular),
            other => Err(format!("unknown boundary '{other}' (expected zeros or circular)")),
        }
    }
    pub fn name(&self) -> &'static str {
        match self {
            Self::Zeros => "zeros",
            Self::Circular => "circular",
        }
    }
}

/// The largest patch size that still changes the result for this machine on an H×W image:
/// beyond 2·max(H,W)−1 a zero-padded window covers the whole image from every pixel, and a
/// circular window cannot be larger than the image.
pub fn max_patch(kind: MachineKind, boundary: Boundary, h: usize, w: usize) -> u32 {
    match (kind, boundary) {
        (MachineKind::Els, Boundary::Circular) => {
            let m = h.min(w) as u32;
            if m % 2 == 1 { m } else { m - 1 }
        }
        // The largest square window that fits; at that size PSPC is the Ideal machine.
        (MachineKind::Pspc, _) => h.min(w) as u32,
        _ => (2 * h.max(w) - 1) as u32,
    }
}
