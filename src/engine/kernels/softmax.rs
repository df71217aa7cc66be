//! Streaming (online) softmax: the flash-attention recurrence that lets a machine visit its
//! candidates chunk by chunk with memory bounded by one chunk.

use burn::tensor::{Int, Tensor};

/// Running state of `softmax(logits) · values` over chunks of candidates, per query row.
///
/// After the chunks `k = 1..K` it holds m = max logit, s = Σ e^(l−m), acc = Σ e^(l−m)·v and,
/// when entropy is wanted, u = Σ e^(l−m)·(l−m), so that H = ln s − u/s. Keeping u relative
/// to the running max matters: at small t the logits reach 1e3–1e5, and the textbook
/// m + ln s − Σp·l/s cancels to nonsense in f32.
pub struct OnlineSoftmax {
    want_entropy: bool,
    state: Option<State>,
    /// Per row, the largest logit so far and its column over all chunks (for the maps).
    argmax: Option<Best>,
    /// Columns folded in so far.
    seen: usize,
}

struct Best {
    track: bool,
    max: Option<Tensor<2>>,      // [Q, 1]
    idx: Option<Tensor<2, Int>>, // [Q, 1]
}

struct State {
    m: Tensor<2>,         // [Q, 1]
    s: Tensor<2>,         // [Q, 1]
    acc: Tensor<2>,       // [Q, V]
    u: Option<Tensor<2>>, // [Q, 1]
}

impl OnlineSoftmax {
    pub fn new(want_entropy: bool) -> Self {
        Self { want_entropy, state: None, argmax: None, seen: 0 }
    }

    /// Also track each row's largest weight and which column (over all chunks, in the order
    /// they came) holds it: the provenance maps' winner.
    pub fn with_argmax(mut self, track: bool) -> Self {
        self.argmax = Some(Best { track, max: None, idx: None });
        self
    }

    /// Folds one chunk in. `logits` is [Q, K]; `weighted(p)` must return p·values, [Q, V], for
    /// the unnormalised weights p = e^(l − m) of this chunk.
    pub fn update(&mut self, logits: Tensor<2>, weighted: impl FnOnce(Tensor<2>) -> Tensor<2>) {
        let k = logits.dims()[1];
        let chunk_max = match self.argmax.as_mut().filter(|b| b.track) {
            Some(best) => {
                let (chunk_max, idx) = logits.clone().max_dim_with_indices(1); // [Q, 1] each
                let idx = idx.add_scalar(self.seen as i64);
                match (best.max.take(), best.idx.take()) {
                    (Some(m), Some(i)) => {
                        let better = chunk_max.clone().greater(m.clone());
                        best.idx = Some(i.mask_where(better, idx));
                        best.max = Some(m.max_pair(chunk_max.clone()));
                    }
                    _ => {
                        best.idx = Some(idx);
                        best.max = Some(chunk_max.clone());
                    }
                }
                chunk_max
            }
            None => logits.clone().max_dim(1), // [Q, 1]
        };
        self.seen += k;
        match self.state.take() {
            None => {
                let shifted = logits.sub(chunk_max.clone()); // [Q, K], ≤ 0
                let p = shifted.clone().exp(); // [Q, K]
                let u = self.want_entropy.then(|| p.clone().mul(shifted).sum_dim(1));
                let s = p.clone().sum_dim(1);
                let acc = weighted(p);
                self.state = Some(State { m: chunk_max, s, acc, u });
            }
            Some(State { m, s, acc, u }) => {
                let m_new = m.clone().max_pair(chunk_max); // [Q, 1]
                let rebase = m.sub(m_new.clone()); // [Q, 1], ≤ 0
                let correction = rebase.clone().exp(); // [Q, 1]
                let shifted = logits.sub(m_new.clone()); // [Q, K]
                let p = shifted.clone().exp(); // [Q, K]
                // u' = c·(u + (m − m_new)·s) + Σ p·(l − m_new)
                let u = u.map(|u| {
                    u.add(rebase.mul(s.clone())).mul(correction.clone()).add(p.clone().mul(shifted).sum_dim(1))
                });
                let s = s.mul(correction.clone()).add(p.clone().sum_dim(1));
                let acc = acc.mul(correction).add(weighted(p));
                self.state = Some(State { m: m_new, s, acc, u });
            }
        }
    }

    /// Each row's winning column (see [`OnlineSoftmax::with_argmax`]), [Q]; `None` when not
    /// tracked. Call before [`OnlineSoftmax::finish`].
    pub fn argmax(&self) -> Option<Vec<i64>> {
        let idx = self.argmax.as_ref()?.idx.clone()?;
        Some(idx.into_data().convert::<i64>().try_to_vec::<i64>().expect("int data"))
    }

    /// The normalised result Σ softmax(l)·v, [Q, V], and the per-row entropy in nats when asked.
    pub fn finish(self) -> Option<(Tensor<2>, Option<Tensor<2>>)> {
        let State { m: _, s, acc, u } = self.state?;
        let out = acc.div(s.clone());
        let entropy = u.map(|u| s.clone().log().sub(u.div(s)).clamp_min(0.0));
        Some((out, entropy))
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Tensor, TensorData};

    use super::OnlineSoftmax;
    use crate::engine::denoiser::to_host;

    /// The burn-ops path (wgpu, and the reference on the CPU) at logits of 1e5: see
    /// `kernels::cpu::fused`'s test of the same name.
    #[test]
    fn entropy_survives_huge_logits() {
        let device = Device::flex();
        let logits: Vec<f32> = (0..1200).map(|j| (1.0e5 - (j % 29) as f64 * 0.21) as f32).collect();
        let mut sm = OnlineSoftmax::new(true);
        for part in logits.chunks(500) {
            let t = Tensor::<2>::from_data(TensorData::new(part.to_vec(), [1, part.len()]), &device);
            let ones = Tensor::<2>::ones([part.len(), 1], &device);
            sm.update(t, |p| p.matmul(ones));
        }
        let (out, entropy) = sm.finish().unwrap();
        let entropy = to_host(entropy.unwrap())[0] as f64;
        let out = to_host(out)[0];
        let m = logits.iter().map(|&l| l as f64).fold(f64::NEG_INFINITY, f64::max);
        let w: Vec<f64> = logits.iter().map(|&l| (l as f64 - m).exp()).collect();
        let z: f64 = w.iter().sum();
        let h = -w.iter().map(|&wi| (wi / z) * (wi / z).ln()).sum::<f64>();
        assert!((entropy - h).abs() < 1e-3, "entropy {entropy} vs {h}");
        assert!((out - 1.0).abs() < 1e-5, "weights sum to {out}");
    }
}
