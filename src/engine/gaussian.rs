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

use super::control::{Cancelled, Control};
use super::denoiser::{Call, Denoised, Denoiser, PixelMaps};
use super::linalg::{matmul, sym_eigen, transpose};

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
            let mut s = matmul(&xt, &x, d, n, d); // [D, D]
            s.iter_mut().for_each(|v| *v /= n as f64);
            let eig = sym_eigen(&s, d, &mut check)?;
            (eig.vectors, eig.values.iter().map(|&l| l.max(0.0)).collect())
        } else {
            let mut g = matmul(&x, &xt, n, d, n); // [N, N]
            g.iter_mut().for_each(|v| *v /= n as f64);
            let eig = sym_eigen(&g, n, &mut check)?;
            let top = eig.values.iter().fold(0f64, |m, &v| m.max(v));
            // Below this the direction is rounding noise: Xᵀv would not be a unit vector.
            let keep: Vec<usize> = (0..n).filter(|&i| eig.values[i] > top * 1e-12).collect();
            let v_sel: Vec<f64> = keep.iter().flat_map(|&i| eig.vectors[i * n..(i + 1) * n].iter().copied()).collect(); // [r, N]
            let mut basis = matmul(&v_sel, &x, keep.len(), n, d); // [r, D]
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

    /// The whole filter W = S (S + s²I)⁻¹ ([D, D], row-major, symmetric).
    pub fn filter(&self, s2: f64) -> Vec<f64> {
        let (d, r) = (self.d, self.lambda.len());
        let gains = self.gains(s2);
        let mut scaled = self.basis.clone(); // [r, D], row i times gᵢ
        for (row, g) in scaled.chunks_exact_mut(d).zip(&gains) {
            row.iter_mut().for_each(|v| *v *= g);
        }
        matmul(&transpose(&self.basis, r, d), &scaled, d, r, d)
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

impl Denoiser {
    /// The fitted Gaussian model of the training set, computed on first use.
    pub(crate) fn gaussian_model(&mut self, ctl: &Control) -> Result<Arc<GaussianModel>, Cancelled> {
        if let Some(m) = &self.gaussian {
            return Ok(m.clone());
        }
        let model = Arc::new(GaussianModel::fit(&self.host_images, self.n, self.shape.len(), ctl)?);
        self.gaussian = Some(model.clone());
        Ok(model)
    }

    pub(crate) fn gaussian_machine(
        &mut self,
        x: &[f32],
        call: &Call,
        ctl: &mut Control,
    ) -> Result<Denoised, Cancelled> {
        ctl.begin(1)?;
        let model = self.gaussian_model(ctl)?;
        let (s2, inv_a) = gaussian_scales(call);
        let v: Vec<f64> = x.iter().zip(&model.mu).map(|(&xi, m)| xi as f64 * inv_a - m).collect();
        let x0 = model.apply(&v, s2).iter().zip(&model.mu).map(|(w, m)| (w + m) as f32).collect();
        ctl.chunk_done()?;
        // No softmax, so no vote: no winner and zero entropy at every pixel.
        let maps = (call.maps).then(|| PixelMaps::empty(self.shape.pixels()));
        Ok(Denoised { x0, entropy: 0.0, maps })
    }
}
