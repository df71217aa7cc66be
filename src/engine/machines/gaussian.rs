//! The Gaussian (Wiener) machine: the exact posterior mean if the training set were a Gaussian
//! with its own mean μ and covariance S (Wang & Vastola 2024):
//!
//! ```text
//! z = x/√ᾱ,  s² = (1 − ᾱ)/ᾱ,  x̂₀ = μ + W (z − μ),  W = S (S + s² I)⁻¹
//! ```
//!
//! Linear in x, no softmax, no patches. S is decomposed once per dataset ([`GaussianModel`]),
//! after which a call is two matrix-vector products. The same model gives the PCA-locality
//! machine its masks ([`super::pca_locality`]).

use std::sync::Arc;

use super::super::analysis::inspect::Inspection;
use super::super::analysis::jacobian::Jacobian;
use super::super::analysis::linalg::{matmul_cancellable, sym_eigen, transpose};
use super::super::control::{Cancelled, Control};
use super::super::denoiser::{Denoiser, State};
use super::super::geometry::{Boundary, ImageShape};
use super::super::machine::{BenchPatches, Call, Denoised, Info, Machine, Needs, PixelMaps, Probe};

/// The most values per image (C·H·W) the Gaussian machines accept: S and W are D×D in
/// float64, and 4096 (64×64 gray) keeps each at 134 MB and the one-off decomposition in
/// minutes. 64×64 RGB (12288) would need 1.2 GB per matrix.
pub const MAX_GAUSSIAN_VALUES: usize = 4096;

/// The training set's mean and covariance, as eigenpairs: S = Σᵢ λᵢ uᵢ uᵢᵀ.
pub struct GaussianModel {
    pub d: usize,
    /// [D]: the mean image, flat.
    pub mu: Vec<f64>,
    /// [r, D]: orthonormal eigenvectors of S, one per row.
    pub basis: Vec<f64>,
    /// [r]: their eigenvalues, ≥ 0.
    pub lambda: Vec<f64>,
}

impl GaussianModel {
    /// Fits μ and S (population covariance) to `images` ([N, D], flat) in float64. With fewer
    /// images than values the N×N Gram matrix is decomposed instead: S has rank < N then, and
    /// its eigenvectors are Xᵀvᵢ/√(Nλᵢ) for the Gram eigenpairs (λᵢ, vᵢ).
    pub fn fit(images: &[f32], n: usize, d: usize, ctl: &Control) -> Result<Self, Cancelled> {
        assert_eq!(images.len(), n * d, "images do not match N×D");
        let mut mu = vec![0f64; d];
        for img in images.chunks_exact(d) {
            for (m, &v) in mu.iter_mut().zip(img) {
                *m += v as f64;
            }
        }
        mu.iter_mut().for_each(|m| *m /= n as f64);
        let x: Vec<f64> =
            images.chunks_exact(d).flat_map(|img| img.iter().zip(&mu).map(|(&v, m)| v as f64 - m)).collect(); // [N, D]
        let xt = transpose(&x, n, d); // [D, N]
        let mut check = || ctl.check();
        let (basis, lambda) = if n >= d {
            let mut s = matmul_cancellable(&xt, &x, (d, n, d), &mut check)?; // [D, D]
            s.iter_mut().for_each(|v| *v /= n as f64);
            let eig = sym_eigen(&s, d, &mut check)?;
            (eig.vectors, eig.values.iter().map(|&l| l.max(0.0)).collect())
        } else {
            let mut g = matmul_cancellable(&x, &xt, (n, d, n), &mut check)?; // [N, N]
            g.iter_mut().for_each(|v| *v /= n as f64);
            let eig = sym_eigen(&g, n, &mut check)?;
            let top = eig.values.iter().fold(0f64, |m, &v| m.max(v));
            // Below this the direction is rounding noise: Xᵀv would not be a unit vector.
            let keep: Vec<usize> = (0..n).filter(|&i| eig.values[i] > top * 1e-12).collect();
            let v_sel: Vec<f64> = keep.iter().flat_map(|&i| eig.vectors[i * n..(i + 1) * n].iter().copied()).collect(); // [r, N]
            let mut basis = matmul_cancellable(&v_sel, &x, (keep.len(), n, d), &mut check)?; // [r, D]
            for (row, &i) in basis.chunks_exact_mut(d).zip(&keep) {
                let scale = 1.0 / (n as f64 * eig.values[i]).sqrt();
                row.iter_mut().for_each(|v| *v *= scale);
            }
            (basis, keep.iter().map(|&i| eig.values[i]).collect())
        };
        Ok(Self { d, mu, basis, lambda })
    }

    /// λᵢ/(λᵢ + s²): how much of each principal direction the filter keeps at noise s².
    pub fn gains(&self, s2: f64) -> Vec<f64> {
        self.lambda.iter().map(|&l| if l + s2 > 0.0 { l / (l + s2) } else { 0.0 }).collect()
    }

    /// W v for a flat vector `v` ([D]).
    pub fn apply(&self, v: &[f64], s2: f64) -> Vec<f64> {
        let d = self.d;
        let mut out = vec![0f64; d];
        for (u, g) in self.basis.chunks_exact(d).zip(self.gains(s2)) {
            let coef = g * u.iter().zip(v).map(|(a, b)| a * b).sum::<f64>();
            out.iter_mut().zip(u).for_each(|(o, &ui)| *o += coef * ui);
        }
        out
    }

    /// The whole filter W = S (S + s²I)⁻¹ ([D, D], row-major, symmetric); a D×r×D product,
    /// seconds at D = 4096, so `check` may stop it between blocks of rows.
    pub fn filter(&self, s2: f64, check: &mut dyn FnMut() -> Result<(), Cancelled>) -> Result<Vec<f64>, Cancelled> {
        let (d, r) = (self.d, self.lambda.len());
        let gains = self.gains(s2);
        let mut scaled = self.basis.clone(); // [r, D], row i times gᵢ
        for (row, g) in scaled.chunks_exact_mut(d).zip(&gains) {
            row.iter_mut().for_each(|v| *v *= g);
        }
        matmul_cancellable(&transpose(&self.basis, r, d), &scaled, (d, r, d), check)
    }

    /// Row `j` of W: how much each value of z − μ contributes to value j of x̂₀.
    pub fn filter_row(&self, j: usize, s2: f64) -> Vec<f64> {
        let d = self.d;
        let mut row = vec![0f64; d];
        for (u, g) in self.basis.chunks_exact(d).zip(self.gains(s2)) {
            let coef = g * u[j];
            row.iter_mut().zip(u).for_each(|(o, &ui)| *o += coef * ui);
        }
        row
    }

    pub fn bytes(&self) -> usize {
        (self.basis.len() + self.lambda.len() + self.mu.len()) * 8
    }
}

/// s² = (1 − ᾱ)/ᾱ and 1/√ᾱ for a call, with ᾱ kept off zero.
pub(crate) fn gaussian_scales(call: &Call) -> (f64, f64) {
    let ab = call.alpha_bar.clamp(1e-12, 1.0);
    ((1.0 - ab) / ab, 1.0 / ab.sqrt())
}

/// The fitted model, kept for the dataset's lifetime (its eigendecomposition is the
/// expensive part; it is never evicted).
#[derive(Default)]
pub(crate) struct GaussianFit(Option<Arc<GaussianModel>>);

impl State for GaussianFit {
    fn bytes(&self) -> usize {
        self.0.as_ref().map(|g| g.bytes()).unwrap_or(0)
    }
}

/// The fitted Gaussian model of the training set, computed on first use.
pub(crate) fn gaussian_model(den: &mut Denoiser, ctl: &Control) -> Result<Arc<GaussianModel>, Cancelled> {
    if let Some(m) = den.state::<GaussianFit>().and_then(|s| s.0.clone()) {
        return Ok(m);
    }
    let model = Arc::new(GaussianModel::fit(&den.host_images, den.n, den.shape.len(), ctl)?);
    den.set_state(GaussianFit(Some(model.clone())));
    Ok(model)
}

/// The Gaussian machines work on the D×D covariance in float64: refuse larger images.
pub(crate) fn check_values(den: &Denoiser, call: &Call) -> Result<(), String> {
    let s = den.shape;
    if s.len() > MAX_GAUSSIAN_VALUES {
        return Err(format!(
            "{} works on the D×D covariance of all C·H·W = {} values of an image in float64; \
             it is limited to D ≤ {MAX_GAUSSIAN_VALUES} (64×64 gray, 36×36 RGB); use smaller images",
            call.machine.title(),
            s.len()
        ));
    }
    Ok(())
}

pub struct Gaussian;

const INFO: Info = Info {
    name: "gaussian",
    aliases: &["wiener"],
    title: "Gaussian",
    describe: "Wiener filter: the posterior mean if the data were Gaussian with the training set's mean and covariance. Linear; blurry. Cost ≈ D² per call after one D³ fit (D = C·H·W).",
    needs: Needs { training_size: true, ..Needs::NONE },
};

impl Machine for Gaussian {
    fn info(&self) -> &'static Info {
        &INFO
    }
    fn check(&self, den: &Denoiser, call: &Call) -> Result<(), String> {
        check_values(den, call)
    }
    fn without_votes(&self) -> Option<&'static str> {
        Some(
            "The Gaussian machine has no vote: each pixel of x̂₀ is a fixed weighted sum of the noisy image \
             (click a pixel to see its Wiener-filter row). There is nothing to map.",
        )
    }

    fn denoise(&self, den: &mut Denoiser, x: &[f32], call: &Call, ctl: &mut Control) -> Result<Denoised, Cancelled> {
        ctl.begin(1)?;
        let model = gaussian_model(den, ctl)?;
        let (s2, inv_a) = gaussian_scales(call);
        let v: Vec<f64> = x.iter().zip(&model.mu).map(|(&xi, m)| xi as f64 * inv_a - m).collect();
        let x0 = model.apply(&v, s2).iter().zip(&model.mu).map(|(w, m)| (w + m) as f32).collect();
        ctl.chunk_done()?;
        // No softmax, so no vote: no winner and zero entropy at every pixel.
        let maps = (call.maps).then(|| PixelMaps::empty(den.shape.pixels()));
        Ok(Denoised { x0, entropy: 0.0, maps })
    }

    /// No vote: x̂₀ at a pixel is a fixed linear combination of z − μ, whose weights (a row of
    /// the Wiener filter) are what the inspector shows.
    fn inspect(
        &self,
        den: &mut Denoiser,
        x: &[f32],
        call: &Call,
        at: Probe,
        ctl: &Control,
    ) -> Result<Inspection, Cancelled> {
        let model = gaussian_model(den, ctl)?;
        let (s2, inv_a) = gaussian_scales(call);
        let (c, hw) = (den.shape.c, den.shape.pixels());
        let v: Vec<f64> = x.iter().zip(&model.mu).map(|(&xi, m)| xi as f64 * inv_a - m).collect();
        let pixel = at.y * den.shape.w + at.x;
        let mut filter = vec![0f64; hw];
        let mut x0 = Vec::with_capacity(c);
        for ch in 0..c {
            let m = ch * hw + pixel;
            let row = model.filter_row(m, s2);
            x0.push(model.mu[m] + row.iter().zip(&v).map(|(a, b)| a * b).sum::<f64>());
            for (j, w) in row.iter().enumerate() {
                filter[j % hw] += w / c as f64;
            }
        }
        let total: f64 = filter.iter().map(|w| w.abs()).sum();
        let mut mags: Vec<f64> = filter.iter().map(|w| w.abs()).collect();
        mags.sort_by(|a, b| b.total_cmp(a));
        let mut acc = 0.0;
        let count_90 = mags.iter().take_while(|&&w| (acc < 0.9 * total, acc += w).0).count().max(1);
        Ok(Inspection {
            votes: Vec::new(),
            candidates: den.shape.len(),
            weight_sum: filter.iter().sum(),
            entropy: 0.0,
            x0,
            count_90,
            filter: Some(filter),
            window: None,
        })
    }

    /// x̂₀ = μ + W(x/√ᾱ − μ) is linear in x: the Jacobian is W's rows for the pixel's
    /// values, over √ᾱ.
    fn jacobian(
        &self,
        den: &mut Denoiser,
        _x: &[f32],
        call: &Call,
        at: Probe,
        ctl: &Control,
    ) -> Result<Option<Jacobian>, Cancelled> {
        let model = gaussian_model(den, ctl)?;
        let (s2, inv_a) = gaussian_scales(call);
        let s = den.shape;
        let (hw, len) = (s.pixels(), s.len());
        let pixel = at.y * s.w + at.x;
        let mut values = Vec::with_capacity(s.c * len);
        for ch in 0..s.c {
            values.extend(model.filter_row(ch * hw + pixel, s2).into_iter().map(|w| w * inv_a));
        }
        Ok(Some(Jacobian { shape: s, values }))
    }

    fn bench_patches(&self) -> BenchPatches {
        BenchPatches { gray: &[0], rgb: &[0] }
    }

    /// Two products with the D×r eigenbasis (r ≤ D).
    fn flops(&self, _n: usize, s: ImageShape, _p: usize, _boundary: Boundary) -> f64 {
        let (c, h, w) = (s.c as f64, s.h as f64, s.w as f64);
        4.0 * (c * h * w).powi(2)
    }
}
