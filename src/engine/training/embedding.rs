//! The sinusoidal time embedding both networks add in every residual block: its own file,
//! so the networks and the weights file that chooses between them all import it, and not
//! each other in a circle.

use burn::tensor::{Device, Tensor, TensorData};

/// Width of the sinusoidal time embedding.
pub const EMBED: usize = 32;

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
