//! The CNN machine: the trained convolutional ε-predictor ([`crate::engine::training::network`])
//! as a denoiser, x̂₀ = (x − √(1−ᾱ)·ε̂)/√ᾱ. Not closed-form: the network the others explain.
//! Its weights are the dataset's state here: the shipped ones for MNIST and FashionMNIST, or a
//! file from `morphogen train`.

use std::sync::Arc;

use super::super::analysis::inspect::Inspection;
use super::super::analysis::jacobian::Jacobian;
use super::super::control::{Cancelled, Control};
use super::super::denoiser::{Denoiser, State};
use super::super::geometry::{Boundary, ImageShape};
use super::super::machine::{Call, Denoised, Info, Machine, Needs, PixelMaps, Probe};
use super::super::training::network::{self, CnnShape, bundled_weights, cosine_time};

/// The trained network for this training set, or why there is none (which the CNN machine
/// reports; the other machines do not care). The weights stay for the dataset's lifetime.
pub(crate) struct CnnWeights(Result<Arc<network::Cnn>, String>);

impl Default for CnnWeights {
    fn default() -> Self {
        Self(Err("no trained CNN is loaded for this training set (train one with `morphogen train`)".into()))
    }
}

impl State for CnnWeights {
    /// The parameters, as float32: small (~250 KB) and kept for the dataset's lifetime, but
    /// counted, so the budget's figure is the whole of what is held.
    fn bytes(&self) -> usize {
        self.0.as_ref().map(|c| c.header.shape.parameters() * 4).unwrap_or(0)
    }
}

impl Denoiser {
    /// Gives this training set a trained network (or the reason it has none).
    pub fn set_cnn(&mut self, cnn: Result<network::Cnn, String>) {
        self.set_state(CnnWeights(cnn.map(Arc::new)));
    }

    /// Reads `bytes` (from `source`, named in any message) onto this denoiser's device.
    pub fn load_cnn(&mut self, bytes: &[u8], source: &str) {
        let s = self.shape();
        let cnn =
            network::Cnn::from_bytes(bytes, self.device()).map_err(|e| format!("{source}: {e}")).and_then(|cnn| {
                if cnn.header.image == [s.c, s.h, s.w] {
                    Ok(cnn)
                } else {
                    let [c, h, w] = cnn.header.image;
                    Err(format!("{source} was trained on {c}×{h}×{w} images, not {}×{}×{}", s.c, s.h, s.w))
                }
            });
        self.set_cnn(cnn);
    }

    pub fn cnn(&self) -> Option<&network::Cnn> {
        self.state::<CnnWeights>().and_then(|w| w.0.as_ref().ok()).map(|c| c.as_ref())
    }

    /// The network, or why there is none.
    fn cnn_or_reason(&self) -> Result<Arc<network::Cnn>, String> {
        self.state::<CnnWeights>().map(|w| w.0.clone()).unwrap_or_else(|| CnnWeights::default().0)
    }
}

pub struct Cnn;

const INFO: Info = Info {
    name: "cnn",
    aliases: &[],
    title: "CNN",
    describe: "A trained convolutional ε-predictor (a small ResNet or UNet, assets/models): the kind of network the closed-form machines explain. Needs weights for this dataset.",
    needs: Needs { weights: true, ..Needs::NONE },
};

impl Machine for Cnn {
    fn info(&self) -> &'static Info {
        &INFO
    }
    fn check(&self, den: &Denoiser, _call: &Call) -> Result<(), String> {
        den.cnn_or_reason().map(|_| ()).map_err(|e| format!("the CNN machine cannot run: {e}"))
    }

    fn without_votes(&self) -> Option<&'static str> {
        Some("The CNN has no vote over training patches, so nothing to map: compare it with ELS in a second column.")
    }

    fn denoise(&self, den: &mut Denoiser, x: &[f32], call: &Call, ctl: &mut Control) -> Result<Denoised, Cancelled> {
        ctl.begin(1)?;
        let cnn = den.cnn_or_reason().expect("check_call makes sure a network is loaded");
        let (x0, _) = cnn.x0_hat(x, call.canvas, cosine_time(call.alpha_bar), call.alpha_bar, den.device());
        ctl.chunk_done()?;
        let maps = call.maps.then(|| PixelMaps::empty(call.canvas_shape(den.shape()).pixels()));
        Ok(Denoised { x0, entropy: 0.0, maps })
    }

    /// No votes: only its x̂₀ at the pixel.
    fn inspect(
        &self,
        den: &mut Denoiser,
        x: &[f32],
        call: &Call,
        at: Probe,
        _ctl: &Control,
    ) -> Result<Inspection, Cancelled> {
        let (y, px) = (at.y, at.x);
        let s = call.canvas_shape(den.shape);
        let x0 = match den.cnn() {
            Some(cnn) => {
                let (all, _) = cnn.x0_hat(x, call.canvas, cosine_time(call.alpha_bar), call.alpha_bar, den.device());
                (0..s.c).map(|ch| all[ch * s.pixels() + y * s.w + px] as f64).collect()
            }
            None => Vec::new(),
        };
        Ok(Inspection {
            votes: Vec::new(),
            candidates: 0,
            weight_sum: 0.0,
            entropy: 0.0,
            x0,
            count_90: 0,
            filter: None,
            window: None,
        })
    }

    /// Through burn's autodiff: its effective receptive field, to set beside ELS's square.
    fn jacobian(
        &self,
        den: &mut Denoiser,
        x: &[f32],
        call: &Call,
        at: Probe,
        ctl: &Control,
    ) -> Result<Option<Jacobian>, Cancelled> {
        ctl.check()?;
        let Some(cnn) = den.cnn() else { return Ok(None) };
        let shape = call.canvas_shape(den.shape);
        let values = cnn.x0_jacobian(x, call.canvas, cosine_time(call.alpha_bar), call.alpha_bar, at.y, at.x);
        Ok(Some(Jacobian { shape, values }))
    }

    /// One forward pass of the shipped network: 2 FLOPs per weight per pixel.
    fn flops(&self, _n: usize, s: ImageShape, _p: usize, _boundary: Boundary) -> f64 {
        let (h, w) = (s.h as f64, s.w as f64);
        2.0 * CnnShape::SMALL.parameters() as f64 * h * w
    }
}

/// What the CNN machine gets for a training set: the weights file at `path` when one is
/// named, else the shipped weights of a bundled dataset, else a message saying how to train.
pub fn attach(denoiser: &mut Denoiser, bundled_name: Option<&str>, path: Option<&std::path::Path>) {
    match (path, bundled_name.and_then(bundled_weights)) {
        (Some(path), _) => match std::fs::read(path) {
            Ok(bytes) => denoiser.load_cnn(&bytes, &path.display().to_string()),
            Err(e) => denoiser.set_cnn(Err(format!("{}: cannot read the weights: {e}", path.display()))),
        },
        (None, Some(bytes)) => {
            let name = bundled_name.unwrap_or_default();
            denoiser.load_cnn(bytes, &format!("the shipped weights for '{name}' (assets/models/{name}.mgcnn)"))
        }
        (None, None) => denoiser.set_cnn(Err(format!(
            "no trained CNN ships for this dataset; train one with `morphogen train --dataset {} --out FILE` \
             and pass --cnn FILE",
            bundled_name.unwrap_or("FOLDER")
        ))),
    }
}
