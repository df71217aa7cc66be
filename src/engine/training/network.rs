//! The networks the CNN machine runs and `train` fits, and their weights file: the trained
//! convolutional ε-predictors the paper compares the ELS machine with. Two architectures, one
//! file each, as the paper has: a ResNet ([`super::resnet`]) and a UNet ([`super::unet`]).

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::super::sampling::patch::MAX_P;
use super::super::sampling::schedule::NoiseSchedule;
use super::embedding::time_embedding;
use super::resnet::ResNet;
use super::unet::UNet;

/// Which network a shape describes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// Residual blocks at full size: a receptive field of 5 + 2·blocks pixels.
    #[default]
    ResNet,
    /// Two levels down and up with skips: the receptive field covers the image.
    UNet,
}

impl Arch {
    /// `resnet` or `unet`, as `train --arch` and the weights file's header spell them.
    pub fn parse(s: &str) -> Result<Arch, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "resnet" => Ok(Arch::ResNet),
            "unet" => Ok(Arch::UNet),
            other => Err(format!("'{other}' is not a network this build trains: resnet or unet")),
        }
    }

    fn is_resnet(&self) -> bool {
        *self == Arch::ResNet
    }

    pub fn title(&self) -> &'static str {
        match self {
            Arch::ResNet => "ResNet",
            Arch::UNet => "UNet",
        }
    }
}

/// The shape of a network: enough to build one before its weights are loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CnnShape {
    /// Image channels (1 gray, 3 RGB).
    pub image_channels: usize,
    /// Feature channels inside the network (a UNet's full-size level; its lower levels have
    /// twice as many).
    pub channels: usize,
    /// Residual blocks (a UNet's per stage: two down, the bottom, two up).
    pub blocks: usize,
    /// Absent in ResNet headers, which is how the first weights files were written.
    #[serde(default, skip_serializing_if = "Arch::is_resnet")]
    pub arch: Arch,
}

impl CnnShape {
    /// The shipped MNIST model's shape: small enough to train in well under an hour on two
    /// cores (`morphogen train`), deep enough for a 13-pixel receptive field per side.
    pub const SMALL: CnnShape = CnnShape { image_channels: 1, channels: 32, blocks: 6, arch: Arch::ResNet };

    /// Receptive field of one output pixel, in pixels per side.
    pub fn receptive_field(&self) -> usize {
        match self.arch {
            Arch::ResNet => ResNet::receptive_field(self.blocks),
            Arch::UNet => UNet::receptive_field(self.blocks),
        }
    }

    /// Parameters in the network.
    pub fn parameters(&self) -> usize {
        let (c, f, b) = (self.image_channels, self.channels, self.blocks);
        match self.arch {
            Arch::ResNet => ResNet::parameters(c, f, b),
            Arch::UNet => UNet::parameters(c, f, b),
        }
    }
}

/// ε̂(x_t, t): [B, C, H, W] and [B] times in [0, 1] → [B, C, H, W].
// One network is held per loaded dataset, never a collection of them: the size of the larger
// variant costs nothing, and burn's derive takes the modules as they are, unboxed.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum EpsNet {
    ResNet(ResNet),
    UNet(UNet),
}

impl EpsNet {
    /// A freshly initialised network (seed the device first for a reproducible one).
    pub fn new(shape: CnnShape, device: &Device) -> Self {
        let (c, f, b) = (shape.image_channels, shape.channels, shape.blocks);
        match shape.arch {
            Arch::ResNet => EpsNet::ResNet(ResNet::new(c, f, b, device)),
            Arch::UNet => EpsNet::UNet(UNet::new(c, f, b, device)),
        }
    }

    pub fn forward(&self, x: Tensor<4>, t: &[f64]) -> Tensor<4> {
        let [b, _, _, _] = x.dims();
        assert_eq!(b, t.len(), "one time per image");
        let emb = time_embedding(t, &x.device()); // [B, E]
        match self {
            EpsNet::ResNet(n) => n.forward(x, emb),
            EpsNet::UNet(n) => n.forward(x, emb),
        }
    }

    /// The parameters as a weights file holds them: the inner network's own record, so a
    /// ResNet's file reads as it did before there was a choice.
    fn into_record_bytes(self) -> Result<Vec<u8>, String> {
        let record = match self {
            EpsNet::ResNet(n) => n.into_record(),
            EpsNet::UNet(n) => n.into_record(),
        };
        record.into_bytes().map(|b| b.to_vec()).map_err(|e| format!("could not pack the weights: {e}"))
    }

    /// A network of `shape` with the parameters of `record` (the inverse of `into_record_bytes`).
    fn from_record(shape: CnnShape, record: burn::store::ModuleRecord, device: &Device) -> Result<Self, String> {
        let fail =
            |e: burn::store::RecordError| format!("the weights do not fit the network the header describes: {e}");
        let (c, f, b) = (shape.image_channels, shape.channels, shape.blocks);
        Ok(match shape.arch {
            Arch::ResNet => EpsNet::ResNet(ResNet::new(c, f, b, device).try_load_record(record).map_err(fail)?),
            Arch::UNet => EpsNet::UNet(UNet::new(c, f, b, device).try_load_record(record).map_err(fail)?),
        })
    }
}

/// What a weights file says about itself, ahead of the parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CnnHeader {
    pub shape: CnnShape,
    /// The image size it was trained at ([C, H, W] must match to run it).
    pub image: [usize; 3],
    /// The training set, as `morphogen train --dataset` named it.
    pub dataset: String,
    /// Noise schedule it was trained with (its name; samplers must use the same).
    pub schedule: String,
    pub steps: usize,
    pub batch: usize,
    /// Mean ε-MSE over the last 100 training steps.
    pub final_loss: f32,
}

/// First bytes of a weights file: a line of magic, a line of JSON header, then burnpack.
const MAGIC: &[u8] = b"morphogen-cnn 1\n";

/// A trained network with its header, on the device it runs on.
pub struct Cnn {
    pub header: CnnHeader,
    pub net: EpsNet,
}

impl Cnn {
    /// The weights file: magic, header JSON, newline, the burnpack record.
    pub fn to_bytes(header: &CnnHeader, net: EpsNet) -> Result<Vec<u8>, String> {
        let mut out = MAGIC.to_vec();
        out.extend(serde_json::to_vec(header).map_err(|e| e.to_string())?);
        out.push(b'\n');
        out.extend(net.into_record_bytes()?);
        Ok(out)
    }

    /// Reads a weights file; every way it can be wrong becomes a message (the caller adds the
    /// file's name).
    pub fn from_bytes(bytes: &[u8], device: &Device) -> Result<Self, String> {
        let rest = bytes
            .strip_prefix(MAGIC)
            .ok_or("not a morphogen CNN weights file (it does not start with 'morphogen-cnn 1')")?;
        let end = rest.iter().position(|&b| b == b'\n').ok_or("the header line is cut short")?;
        let header: CnnHeader =
            serde_json::from_slice(&rest[..end]).map_err(|e| format!("the header is not valid: {e}"))?;
        let s = header.shape;
        if s.image_channels == 0 || s.image_channels > 3 || s.channels == 0 || s.channels > 512 || s.blocks > 64 {
            return Err(format!("the header's network shape is out of range: {s:?}"));
        }
        // The image the header promises must be one the network can take: a mismatch loads
        // and then panics inside the first convolution.
        let [c, h, w] = header.image;
        if c != s.image_channels {
            return Err(format!(
                "the header says its images have {c} channels but its network takes {}",
                s.image_channels
            ));
        }
        if !(1..=256).contains(&h) || !(1..=256).contains(&w) {
            return Err(format!("the header's image size {h}×{w} is out of range (1 to 256 a side)"));
        }
        let record =
            burn::store::ModuleRecord::from_bytes(burn::tensor::Bytes::from_bytes_vec(rest[end + 1..].to_vec()))
                .map_err(|e| format!("the weights are unreadable: {e}"))?;
        let net = EpsNet::from_record(s, record, device)?;
        Ok(Self { header, net })
    }

    /// x̂₀ = (x − √(1−ᾱ)·ε̂)/√ᾱ for one image x ([C, H, W] flat), clamped to the data range
    /// [−1, 1] as DDIM samplers of trained models do (at t = 1, √ᾱ ≈ 0.01 would amplify ε̂'s
    /// error a hundredfold). The network is fully convolutional, so x may be a canvas of any
    /// `[h, w]` (None: the training images' size).
    pub fn x0_hat(
        &self,
        x: &[f32],
        canvas: Option<[usize; 2]>,
        t: f64,
        alpha_bar: f64,
        device: &Device,
    ) -> (Vec<f32>, Vec<f32>) {
        let [c, th, tw] = self.header.image;
        let [h, w] = canvas.unwrap_or([th, tw]);
        let xt = Tensor::<4>::from_data(TensorData::new(x.to_vec(), [1, c, h, w]), device);
        let eps = self.net.forward(xt, &[t]).into_data().convert::<f32>().try_into_vec::<f32>().expect("f32 data");
        let (a, s) = (alpha_bar.sqrt(), (1.0 - alpha_bar).max(0.0).sqrt());
        let x0 =
            x.iter().zip(&eps).map(|(&xi, &e)| (((xi as f64 - s * e as f64) / a) as f32).clamp(-1.0, 1.0)).collect();
        (x0, eps)
    }

    /// ∂x̂₀[o, y, px] / ∂x[c, h, w] for every o ([C, C, H, W] flat, in f64): one backward pass
    /// of burn's autodiff per output channel, on a copy of the network forked to the CPU.
    /// x̂₀ = (x − √(1−ᾱ)·ε̂(x))/√ᾱ, so a row is (δ − √(1−ᾱ)·∇ε̂[o, y, px])/√ᾱ, and 0 where
    /// x̂₀ is clamped to [−1, 1] (the clamp does not move there).
    pub fn x0_jacobian(
        &self,
        x: &[f32],
        canvas: Option<[usize; 2]>,
        t: f64,
        alpha_bar: f64,
        y: usize,
        px: usize,
    ) -> Vec<f64> {
        let [c, th, tw] = self.header.image;
        let [h, w] = canvas.unwrap_or([th, tw]);
        let (hw, len) = (h * w, c * h * w);
        assert_eq!(x.len(), len, "x is not C×H×W");
        assert!(y < h && px < w, "pixel ({y}, {px}) is outside the image");
        let device = Device::flex().autodiff();
        let net = self.net.clone().fork(&device);
        let (a, s) = (alpha_bar.sqrt(), (1.0 - alpha_bar).max(0.0).sqrt());
        let mut out = vec![0f64; c * len];
        for o in 0..c {
            let xt = Tensor::<4>::from_data(TensorData::new(x.to_vec(), [1, c, h, w]), &device).require_grad();
            let eps = net.forward(xt.clone(), &[t]).slice([0..1, o..o + 1, y..y + 1, px..px + 1]).sum(); // [1]
            let e = eps.clone().into_scalar::<f32>() as f64;
            let x0 = (x[o * hw + y * w + px] as f64 - s * e) / a;
            if !(-1.0..=1.0).contains(&x0) {
                continue;
            }
            let grads = eps.backward();
            let g = xt.grad(&grads).expect("x_t requires its gradient");
            let g = g.into_data().convert::<f32>().try_into_vec::<f32>().expect("f32 data"); // [C·H·W]
            let row = &mut out[o * len..(o + 1) * len];
            for (r, &gi) in row.iter_mut().zip(&g) {
                *r = -s * gi as f64 / a;
            }
            row[o * hw + y * w + px] += 1.0 / a;
        }
        out
    }
}

/// The shipped weights for a bundled dataset, embedded in the binary.
pub fn bundled_weights(dataset: &str) -> Option<&'static [u8]> {
    match dataset {
        "mnist" => Some(include_bytes!("../../../assets/models/mnist.mgcnn")),
        "fashion" => Some(include_bytes!("../../../assets/models/fashion.mgcnn")),
        "emoji" => Some(include_bytes!("../../../assets/models/emoji.mgcnn")),
        _ => None,
    }
}

/// Bundled sets with a shipped UNet beside their ResNet. The UNets ship as files, not in the
/// binary: `assets/models/{set}-unet.mgcnn`, with `{set}-unet.calibration.json` beside it,
/// which `compare --cnn` reads as it would for any weights file.
pub const SHIPPED_UNETS: &[&str] = &["emoji", "fashion", "mnist"];

/// Where a bundled set's shipped UNet is (see [`SHIPPED_UNETS`]), in this source tree.
pub fn shipped_unet(dataset: &str) -> Option<std::path::PathBuf> {
    SHIPPED_UNETS.contains(&dataset).then(|| {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models").join(format!("{dataset}-unet.mgcnn"))
    })
}

/// The patch size per step fitted to a bundled dataset's shipped CNN (`morphogen calibrate`,
/// 20 steps; its `calibration.json`, shipped beside the weights), or None where none ships.
pub fn bundled_calibration(dataset: &str) -> Option<Vec<u32>> {
    let text = match dataset {
        "mnist" => include_str!("../../../assets/models/mnist.calibration.json"),
        "fashion" => include_str!("../../../assets/models/fashion.calibration.json"),
        "emoji" => include_str!("../../../assets/models/emoji.calibration.json"),
        _ => return None,
    };
    Some(fitted_patch_sizes(text).expect("the shipped calibration is a calibration"))
}

/// The `fitted` list of a `calibration.json` that `morphogen calibrate` wrote: one odd patch
/// size per step, up to the largest `calibrate --max-p` takes, or what is wrong with it.
pub fn fitted_patch_sizes(text: &str) -> Result<Vec<u32>, String> {
    let json: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let fitted = json["fitted"].as_array().ok_or("it has no \"fitted\" list of patch sizes")?;
    let sizes: Vec<u32> = fitted
        .iter()
        .map(|p| p.as_u64().filter(|p| p % 2 == 1 && *p <= MAX_P as u64).map(|p| p as u32))
        .collect::<Option<_>>()
        .ok_or(format!("its \"fitted\" list holds something other than odd patch sizes up to {MAX_P}"))?;
    if sizes.is_empty() {
        return Err("its \"fitted\" list is empty".into());
    }
    Ok(sizes)
}

/// t under the cosine schedule the networks are trained with, from ᾱ: the network is told the
/// noise level, whatever schedule the sampler walks.
pub fn cosine_time(alpha_bar: f64) -> f64 {
    let s = match NoiseSchedule::cosine() {
        NoiseSchedule::Cosine { s } => s,
        _ => unreachable!("cosine() is the cosine schedule"),
    };
    (alpha_bar.clamp(0.0, 1.0).sqrt().acos() * 2.0 * (1.0 + s) / std::f64::consts::PI).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shipped network loads and is for its own set's images: 1×28×28 digits and
    /// clothes, 3×32×32 emoji.
    #[test]
    fn every_shipped_network_is_for_its_sets_images() {
        for (set, image) in [("mnist", [1, 28, 28]), ("fashion", [1, 28, 28]), ("emoji", [3, 32, 32])] {
            let bytes = bundled_weights(set).unwrap_or_else(|| panic!("{set}: no weights ship"));
            let rest = &bytes[MAGIC.len()..];
            let end = rest.iter().position(|&b| b == b'\n').unwrap();
            let header: CnnHeader = serde_json::from_slice(&rest[..end]).unwrap();
            assert_eq!(header.image, image, "{set}");
            assert!(Cnn::from_bytes(bytes, &Device::flex()).is_ok(), "{set}: the shipped weights load");
        }
        assert!(bundled_weights("photos").is_none());
    }

    /// Every UNet in assets/models is listed, and every listed one is there, loads, is a UNet
    /// for its set's images and has its calibration beside it.
    #[test]
    fn every_shipped_unet_is_listed_and_loads() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models");
        let mut found: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.unwrap().file_name().to_str()?.strip_suffix("-unet.mgcnn").map(String::from))
            .collect();
        found.sort();
        assert_eq!(found, SHIPPED_UNETS, "the UNets in {}", dir.display());
        for set in SHIPPED_UNETS {
            let path = shipped_unet(set).unwrap();
            let cnn = Cnn::from_bytes(&std::fs::read(&path).unwrap(), &Device::flex()).unwrap();
            assert_eq!(cnn.header.shape.arch, Arch::UNet, "{set}");
            assert_eq!(cnn.header.dataset, *set);
            let cal = std::fs::read_to_string(crate::files::beside(&path, "calibration.json")).unwrap();
            assert_eq!(fitted_patch_sizes(&cal).unwrap().len(), 20, "{set}: a 20-step calibration");
        }
        assert!(shipped_unet("photos").is_none());
    }

    /// Every header field the network depends on is checked before the weights are used.
    #[test]
    fn a_header_that_disagrees_with_its_network_is_refused() {
        let bytes = bundled_weights("mnist").expect("shipped");
        let rest = &bytes[MAGIC.len()..];
        let end = rest.iter().position(|&b| b == b'\n').unwrap();
        let good: CnnHeader = serde_json::from_slice(&rest[..end]).unwrap();
        assert!(Cnn::from_bytes(bytes, &Device::flex()).is_ok(), "the shipped weights load");
        let with = |header: &CnnHeader| {
            let mut b = MAGIC.to_vec();
            b.extend(serde_json::to_vec(header).unwrap());
            b.push(b'\n');
            b.extend(&rest[end + 1..]);
            Cnn::from_bytes(&b, &Device::flex()).err().unwrap_or_else(|| panic!("{header:?} loaded"))
        };
        for (image, says) in [([3, 28, 28], "3 channels"), ([1, 0, 28], "0×28"), ([1, 28, 100_000], "out of range")] {
            let err = with(&CnnHeader { image, ..good.clone() });
            assert!(err.contains(says), "{image:?}: {err}");
        }
        let wide = CnnShape { channels: good.shape.channels * 2, ..good.shape };
        let err = with(&CnnHeader { shape: wide, ..good.clone() });
        assert!(err.contains("do not fit"), "{err}");
    }
}
