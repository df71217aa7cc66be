//! Training the ε-predictor ([`super::network::EpsNet`]) on the CPU with burn's autodiff: the
//! cosine schedule, t drawn from 1000 levels, MSE on ε, AdamW with a short warm-up and a
//! cosine decay. Pure: the caller owns the clock, the progress bar and the files.

use burn::module::Module;
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::{Device, Tensor, TensorData};

use super::super::geometry::ImageShape;
use super::super::sampling::noise::{gaussian, splitmix};
use super::super::sampling::schedule::NoiseSchedule;
use super::network::{CnnShape, EpsNet};

/// How to train.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    pub shape: CnnShape,
    /// Optimiser steps.
    pub steps: usize,
    pub batch: usize,
    /// Peak learning rate (after a warm-up of min(200, steps/10) steps; cosine decay to 10%).
    pub lr: f64,
    pub seed: u64,
    pub schedule: NoiseSchedule,
    /// Largest norm of each parameter's gradient (None: unclipped). A UNet without
    /// normalisation diverged at the ResNet's learning rate without it.
    pub clip: Option<f32>,
}

impl TrainConfig {
    pub fn learning_rate(&self, step: usize) -> f64 {
        let warm = (self.steps / 10).clamp(1, 200);
        if step < warm {
            return self.lr * (step + 1) as f64 / warm as f64;
        }
        let p = (step - warm) as f64 / (self.steps - warm).max(1) as f64;
        self.lr * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * p).cos()))
    }
}

/// Trains a network on `images` ([N, C, H, W] in [−1, 1]). `progress(step, loss)` is called
/// after every step and stops training when it returns false. Returns the network (on
/// `Device::flex()`, without autodiff) and the loss of every step.
pub fn train(
    images: &[f32],
    n: usize,
    image: ImageShape,
    cfg: &TrainConfig,
    progress: &mut dyn FnMut(usize, f32) -> bool,
) -> (EpsNet, Vec<f32>) {
    assert_eq!(images.len(), n * image.len(), "images do not match their shape");
    assert!(n > 0 && cfg.batch > 0 && cfg.steps > 0);
    let device = Device::flex().autodiff();
    device.seed(cfg.seed);
    let mut net = EpsNet::new(cfg.shape, &device);
    let clip = cfg.clip.map(GradientClippingConfig::Norm);
    let mut optim = AdamWConfig::new().with_weight_decay(1e-4).with_grad_clipping(clip).init();
    let len = image.len();
    let mut rng = cfg.seed ^ 0x9e37_79b9_7f4a_7c15;
    let mut losses = Vec::with_capacity(cfg.steps);
    for step in 0..cfg.steps {
        // A batch: random images, random levels, fresh noise; x_t made on the host.
        let noise = gaussian(cfg.seed, 1 + step as u64, cfg.batch * len);
        let mut xt = Vec::with_capacity(cfg.batch * len);
        let mut ts = Vec::with_capacity(cfg.batch);
        for (b, eps) in noise.chunks_exact(len).enumerate() {
            let k = (splitmix(&mut rng) % n as u64) as usize;
            let level = 1 + splitmix(&mut rng) % 1000;
            let t = level as f64 / 1000.0;
            let (a, s) = cfg.schedule.scales(t);
            ts.push(t);
            let x0 = &images[k * len..(k + 1) * len];
            xt.extend(x0.iter().zip(eps).map(|(&x, &e)| (a * x as f64 + s * e as f64) as f32));
            assert_eq!(xt.len(), (b + 1) * len);
        }
        let shape = [cfg.batch, image.c, image.h, image.w];
        let x = Tensor::<4>::from_data(TensorData::new(xt, shape), &device);
        let eps = Tensor::<4>::from_data(TensorData::new(noise, shape), &device);
        let loss = net.forward(x, &ts).sub(eps).square().mean(); // [1]
        let value = loss.clone().into_scalar::<f32>();
        let grads = GradientsParams::from_grads(loss.backward(), &net);
        net = optim.step(cfg.learning_rate(step), net, grads);
        losses.push(value);
        if !progress(step, value) {
            break;
        }
    }
    (move_to_flex(net, cfg.shape), losses)
}

/// The trained parameters in a network on the plain CPU device (no autodiff graph).
fn move_to_flex(net: EpsNet, shape: CnnShape) -> EpsNet {
    let record = net.into_record();
    EpsNet::new(shape, &Device::flex()).load_record(record)
}
