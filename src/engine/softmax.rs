//! Streaming (online) softmax: the flash-attention recurrence that lets a machine visit its
//! candidates chunk by chunk with memory bounded by one chunk.

use burn::tensor::Tensor;

/// Running state of `softmax(logits) · values` over chunks of candidates, per query row.
///
/// After the chunks `k = 1..K` it holds m = max logit, s = Σ e^(l−m), acc = Σ e^(l−m)·v and,
/// when entropy is wanted, u = Σ e^(l−m)·l, so that H = m + ln s − u/s.
pub struct OnlineSoftmax {
    want_entropy: bool,
    state: Option<State>,
}

struct State {
    m: Tensor<2>,         // [Q, 1]
    s: Tensor<2>,         // [Q, 1]
    acc: Tensor<2>,       // [Q, V]
    u: Option<Tensor<2>>, // [Q, 1]
}

impl OnlineSoftmax {
    pub fn new(want_entropy: bool) -> Self {
        Self { want_entropy, state: None }
    }

    /// Folds one chunk in. `logits` is [Q, K]; `weighted(p)` must return p·values, [Q, V], for
    /// the unnormalised weights p = e^(l − m) of this chunk.
    pub fn update(&mut self, logits: Tensor<2>, weighted: impl FnOnce(Tensor<2>) -> Tensor<2>) {
        let chunk_max = logits.clone().max_dim(1); // [Q, 1]
        match self.state.take() {
            None => {
                let p = logits.clone().sub(chunk_max.clone()).exp(); // [Q, K]
                let u = self.want_entropy.then(|| p.clone().mul(logits).sum_dim(1));
                let s = p.clone().sum_dim(1);
                let acc = weighted(p);
                self.state = Some(State { m: chunk_max, s, acc, u });
            }
            Some(State { m, s, acc, u }) => {
                let m_new = m.clone().max_pair(chunk_max); // [Q, 1]
                let correction = m.sub(m_new.clone()).exp(); // [Q, 1]
                let p = logits.clone().sub(m_new.clone()).exp(); // [Q, K]
                let u = u.map(|u| u.mul(correction.clone()).add(p.clone().mul(logits).sum_dim(1)));
                let s = s.mul(correction.clone()).add(p.clone().sum_dim(1));
                let acc = acc.mul(correction).add(weighted(p));
                self.state = Some(State { m: m_new, s, acc, u });
            }
        }
    }

    /// The normalised result Σ softmax(l)·v, [Q, V], and the per-row entropy in nats when asked.
    pub fn finish(self) -> Option<(Tensor<2>, Option<Tensor<2>>)> {
        let State { m, s, acc, u } = self.state?;
        let out = acc.div(s.clone());
        let entropy = u.map(|u| m.add(s.clone().log()).sub(u.div(s)));
        Some((out, entropy))
    }
}
