//! The network the CNN machine runs and `train` fits: the trained convolutional ε-predictor
//! the paper compares the ELS machine with, and its weights file. A small
//! ResNet in its style (a 3×3 conv up, residual blocks of 3×3 conv + ReLU with a sinusoidal
//! time embedding added per block, a 3×3 conv down; zero padding, no attention, no
//! normalisation). Local and translation-equivariant by construction, which is the whole point:
//! the ELS machine is the best such denoiser, and the question is how close a trained one comes.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::super::sampling::schedule::NoiseSchedule;

/// Width of the sinusoidal time embedding.
pub const EMBED: usize = 32;

/// The shape of a network: enough to build one before its weights are loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CnnShape {
    /// Image channels (1 gray, 3 RGB).
    pub image_channels: usize,
    /// Feature channels inside the network.
    pub channels: usize,
    /// Residual blocks.
    pub blocks: usize,
}

impl CnnShape {
    /// The shipped MNIST model's shape: small enough to train in well under an hour on two
    /// cores (`morphogen train`), deep enough for a 13-pixel receptive field per side.
    pub const SMALL: CnnShape = CnnShape { image_channels: 1, channels: 32, blocks: 6 };

    /// Receptive field of one output pixel, in pixels per side: 3×3 in, 3×3 per block, 3×3 out.
    pub fn receptive_field(&self) -> usize {
        3 + 2 * self.blocks + 2
    }

    /// Parameters in the network.
    pub fn parameters(&self) -> usize {
        let (c, f) = (self.image_channels, self.channels);
        let conv = |i: usize, o: usize| i * o * 9 + o;
        conv(c, f) + self.blocks * (conv(f, f) + EMBED * f + f) + conv(f, c)
    }
}

/// One residual block: h + ReLU(conv(h) + embedding of t).
#[derive(Module, Debug)]
pub struct ResBlock {
    conv: Conv2d,
    time: Linear,
}

/// ε̂(x_t, t): [B, C, H, W] and [B] times in [0, 1] → [B, C, H, W].
#[derive(Module, Debug)]
pub struct EpsNet {
    conv_in: Conv2d,
    blocks: Vec<ResBlock>,
    conv_out: Conv2d,
}

fn conv3(i: usize, o: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([i, o], [3, 3]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)).init(device)
}

impl EpsNet {
    /// A freshly initialised network (seed the device first for a reproducible one).
    pub fn new(shape: CnnShape, device: &Device) -> Self {
        let (c, f) = (shape.image_channels, shape.channels);
        let blocks = (0..shape.blocks)
            .map(|_| ResBlock { conv: conv3(f, f, device), time: LinearConfig::new(EMBED, f).init(device) })
            .collect();
        Self { conv_in: conv3(c, f, device), blocks, conv_out: conv3(f, c, device) }
    }

    pub fn forward(&self, x: Tensor<4>, t: &[f64]) -> Tensor<4> {
        let [b, _, _, _] = x.dims();
        assert_eq!(b, t.len(), "one time per image");
        let emb = time_embedding(t, &x.device()); // [B, E]
        let mut h = self.conv_in.forward(x); // [B, F, H, W]
        for block in &self.blocks {
            let f = block.conv.weight.dims()[0];
            let te = block.time.forward(emb.clone()).reshape([b, f, 1, 1]); // [B, F, 1, 1]
            h = h.clone().add(burn::tensor::activation::relu(block.conv.forward(h).add(te)));
        }
        self.conv_out.forward(h)
    }
}

/// Sinusoidal embedding of t ∈ [0, 1] at 1000 levels' resolution: [B, EMBED].
pub fn time_embedding(t: &[f64], device: &Device) -> Tensor<2> {
    let half = EMBED / 2;
    let mut v = Vec::with_capacity(t.len() * EMBED);
    for &ti in t {
        let level = ti * 1000.0;
        for i in 0..half {
            let freq = (-(10000f64.ln()) * i as f64 / half as f64).exp();
            v.push((level * freq).sin() as f32);
        }
        for i in 0..half {
            let freq = (-(10000f64.ln()) * i as f64 / half as f64).exp();
            v.push((level * freq).cos() as f32);
        }
    }
    Tensor::from_data(TensorData::new(v, [t.len(), EMBED]), device)
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
        let record = net.into_record().into_bytes().map_err(|e| format!("could not pack the weights: {e}"))?;
        out.extend_from_slice(&record);
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
        let net = EpsNet::new(s, device)
            .try_load_record(record)
            .map_err(|e| format!("the weights do not fit the network the header describes: {e}"))?;
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

/// The patch size per step fitted to a bundled dataset's shipped CNN (`morphogen calibrate`,
/// 20 steps; its `calibration.json`, shipped beside the weights), or None where none ships.
pub fn bundled_calibration(dataset: &str) -> Option<Vec<u32>> {
    let text = match dataset {
        "mnist" => include_str!("../../../assets/models/mnist.calibration.json"),
        "fashion" => include_str!("../../../assets/models/fashion.calibration.json"),
        "emoji" => include_str!("../../../assets/models/emoji.calibration.json"),
        _ => return None,
    };
    let json: serde_json::Value = serde_json::from_str(text).expect("the shipped calibration is JSON");
    let fitted = json["fitted"].as_array().expect("the shipped calibration has a fit");
    Some(fitted.iter().map(|p| p.as_u64().expect("a patch size") as u32).collect())
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
