//! The UNet ε-predictor, the paper's other architecture: two stride-2 levels down and two
//! nearest-neighbour levels up, with a skip connection across each, residual blocks with the
//! time embedding at every level, no attention and no normalisation. Still convolutional and
//! translation-equivariant up to the stride, but its receptive field (40 px per side at one
//! block a level) covers a whole 28×28 image, where the ResNet's 17 px do not: the paper's
//! UNet schedules climb to P = 25–27 for the same reason.

use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::ops::PadMode;
use burn::tensor::{Device, Tensor};

use super::resnet::{ResBlock, block_params, conv_params, conv3};

/// How many times the image is halved: a canvas is padded to a multiple of 2^LEVELS.
pub const LEVELS: u32 = 2;

/// A 3×3 convolution with stride 2 and zero padding 1: an even side is halved.
fn down3(i: usize, o: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([i, o], [3, 3])
        .with_stride([2, 2])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init(device)
}

/// ε̂(x_t, t) with feature widths F at full size and 2F at a half and a quarter.
#[derive(Module, Debug)]
pub struct UNet {
    conv_in: Conv2d,
    down0: Vec<ResBlock>,
    pool0: Conv2d,
    down1: Vec<ResBlock>,
    pool1: Conv2d,
    mid: Vec<ResBlock>,
    merge1: Conv2d,
    up1: Vec<ResBlock>,
    merge0: Conv2d,
    up0: Vec<ResBlock>,
    conv_out: Conv2d,
}

fn blocks(n: usize, f: usize, device: &Device) -> Vec<ResBlock> {
    (0..n).map(|_| ResBlock::new(f, device)).collect()
}

fn run(blocks: &[ResBlock], mut h: Tensor<4>, emb: &Tensor<2>) -> Tensor<4> {
    for b in blocks {
        h = b.forward(h, emb.clone());
    }
    h
}

/// Nearest-neighbour upsampling by 2: [B, F, H, W] → [B, F, 2H, 2W].
fn upsample(h: Tensor<4>) -> Tensor<4> {
    let [b, f, hh, ww] = h.dims();
    h.reshape([b, f, hh, 1, ww, 1]).repeat_dim(3, 2).repeat_dim(5, 2).reshape([b, f, 2 * hh, 2 * ww])
}

impl UNet {
    /// `per_level` residual blocks at each of the five stages (two down, the bottom, two up).
    pub fn new(image_channels: usize, channels: usize, per_level: usize, device: &Device) -> Self {
        let (c, f) = (image_channels, channels);
        Self {
            conv_in: conv3(c, f, device),
            down0: blocks(per_level, f, device),
            pool0: down3(f, 2 * f, device),
            down1: blocks(per_level, 2 * f, device),
            pool1: down3(2 * f, 2 * f, device),
            mid: blocks(per_level, 2 * f, device),
            merge1: conv3(4 * f, 2 * f, device),
            up1: blocks(per_level, 2 * f, device),
            merge0: conv3(3 * f, f, device),
            up0: blocks(per_level, f, device),
            conv_out: conv3(f, c, device),
        }
    }

    /// x: [B, C, H, W] of any H, W (padded with zeros below and right to a multiple of 4, and
    /// the output cut back), emb: [B, EMBED] → [B, C, H, W].
    pub fn forward(&self, x: Tensor<4>, emb: Tensor<2>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let m = 1usize << LEVELS;
        let (ph, pw) = (h.div_ceil(m) * m - h, w.div_ceil(m) * m - w);
        let x = if ph + pw > 0 { x.pad([(0, ph), (0, pw)], PadMode::Constant(0.0)) } else { x };
        let skip0 = run(&self.down0, self.conv_in.forward(x), &emb); // [B, F, H, W]
        let skip1 = run(&self.down1, self.pool0.forward(skip0.clone()), &emb); // [B, 2F, H/2, W/2]
        let bottom = run(&self.mid, self.pool1.forward(skip1.clone()), &emb); // [B, 2F, H/4, W/4]
        let u1 = self.merge1.forward(Tensor::cat(vec![upsample(bottom), skip1], 1)); // [B, 2F, H/2, W/2]
        let u1 = run(&self.up1, u1, &emb);
        let u0 = self.merge0.forward(Tensor::cat(vec![upsample(u1), skip0], 1)); // [B, F, H, W]
        let out = self.conv_out.forward(run(&self.up0, u0, &emb)); // [B, C, H+ph, W+pw]
        if ph + pw > 0 { out.slice([0..b, 0..c, 0..h, 0..w]) } else { out }
    }

    /// Receptive field of one output pixel along its deepest path, in pixels per side: each
    /// 3×3 conv adds 2 steps of the current stride, a stride-2 conv doubles the stride, and an
    /// upsampling adds one step of the finer stride (which of the two fine pixels a coarse one
    /// feeds).
    pub fn receptive_field(per_level: usize) -> usize {
        let b = per_level;
        let (mut rf, mut j) = (3, 1); // conv_in
        rf += 2 * j * b; // down0
        rf += 2 * j; // pool0
        j *= 2;
        rf += 2 * j * b; // down1
        rf += 2 * j; // pool1
        j *= 2;
        rf += 2 * j * b; // mid
        for _ in 0..LEVELS {
            j /= 2;
            rf += j; // upsample
            rf += 2 * j; // merge
            rf += 2 * j * b; // up blocks
        }
        rf + 2 // conv_out
    }

    /// Parameters in a network of this shape.
    pub fn parameters(image_channels: usize, channels: usize, per_level: usize) -> usize {
        let (c, f, b) = (image_channels, channels, per_level);
        conv_params(c, f)
            + b * block_params(f)
            + conv_params(f, 2 * f)
            + b * block_params(2 * f)
            + conv_params(2 * f, 2 * f)
            + b * block_params(2 * f)
            + conv_params(4 * f, 2 * f)
            + b * block_params(2 * f)
            + conv_params(3 * f, f)
            + b * block_params(f)
            + conv_params(f, c)
    }
}
