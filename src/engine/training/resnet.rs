//! The ResNet ε-predictor, in the paper's style: a 3×3 conv up, residual blocks of 3×3 conv +
//! ReLU with a sinusoidal time embedding added per block, a 3×3 conv down; zero padding, no
//! attention, no normalisation. Local and translation-equivariant by construction, which is
//! the whole point: the ELS machine is the best such denoiser, and the question is how close a
//! trained one comes.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::{Device, Tensor};

use super::embedding::EMBED;

/// One residual block: h + ReLU(conv(h) + embedding of t).
#[derive(Module, Debug)]
pub struct ResBlock {
    conv: Conv2d,
    time: Linear,
}

impl ResBlock {
    pub fn new(channels: usize, device: &Device) -> Self {
        Self { conv: conv3(channels, channels, device), time: LinearConfig::new(EMBED, channels).init(device) }
    }

    /// h: [B, F, H, W], emb: [B, EMBED] → [B, F, H, W].
    pub fn forward(&self, h: Tensor<4>, emb: Tensor<2>) -> Tensor<4> {
        let [b, f, _, _] = h.dims();
        let te = self.time.forward(emb).reshape([b, f, 1, 1]); // [B, F, 1, 1]
        h.clone().add(burn::tensor::activation::relu(self.conv.forward(h).add(te)))
    }
}

/// A 3×3 convolution with zero padding 1 (the size is kept).
pub fn conv3(i: usize, o: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([i, o], [3, 3]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)).init(device)
}

/// ε̂(x_t, t): [B, C, H, W] and a [B, EMBED] time embedding → [B, C, H, W]. Its weights file
/// names its parameters `conv_in`, `blocks.N.conv`, `blocks.N.time`, `conv_out`: the shipped
/// networks were written with these names.
#[derive(Module, Debug)]
pub struct ResNet {
    conv_in: Conv2d,
    blocks: Vec<ResBlock>,
    conv_out: Conv2d,
}

impl ResNet {
    pub fn new(image_channels: usize, channels: usize, blocks: usize, device: &Device) -> Self {
        Self {
            conv_in: conv3(image_channels, channels, device),
            blocks: (0..blocks).map(|_| ResBlock::new(channels, device)).collect(),
            conv_out: conv3(channels, image_channels, device),
        }
    }

    pub fn forward(&self, x: Tensor<4>, emb: Tensor<2>) -> Tensor<4> {
        let mut h = self.conv_in.forward(x); // [B, F, H, W]
        for block in &self.blocks {
            h = block.forward(h, emb.clone());
        }
        self.conv_out.forward(h)
    }

    /// Receptive field of one output pixel, in pixels per side: 3×3 in, 3×3 per block, 3×3 out.
    pub fn receptive_field(blocks: usize) -> usize {
        3 + 2 * blocks + 2
    }

    /// Parameters in a network of this shape.
    pub fn parameters(image_channels: usize, channels: usize, blocks: usize) -> usize {
        let (c, f) = (image_channels, channels);
        conv_params(c, f) + blocks * block_params(f) + conv_params(f, c)
    }
}

/// Weights and biases of a 3×3 convolution.
pub fn conv_params(i: usize, o: usize) -> usize {
    i * o * 9 + o
}

/// Weights and biases of one residual block of `f` channels.
pub fn block_params(f: usize) -> usize {
    conv_params(f, f) + EMBED * f + f
}
