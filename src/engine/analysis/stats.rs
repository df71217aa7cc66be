//! Statistics of images the studio and the command line report.

/// Pearson correlation of two images (mean-centred, unit-normalised dot product): the
/// paper's comparison statistic.
pub fn pearson(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len().min(b.len()).max(1) as f64;
    let ma = a.iter().map(|&v| v as f64).sum::<f64>() / n;
    let mb = b.iter().map(|&v| v as f64).sum::<f64>() / n;
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (dx, dy) = (x as f64 - ma, y as f64 - mb);
        ab += dx * dy;
        aa += dx * dx;
        bb += dy * dy;
    }
    if aa == 0.0 || bb == 0.0 { 0.0 } else { ab / (aa * bb).sqrt() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pearson_is_one_for_affine_copies_and_minus_one_for_negatives() {
        let a = [0.1f32, 0.5, -0.3, 0.9];
        let b: Vec<f32> = a.iter().map(|v| 2.0 * v + 1.0).collect();
        let c: Vec<f32> = a.iter().map(|v| -v).collect();
        assert!((pearson(&a, &b) - 1.0).abs() < 1e-12);
        assert!((pearson(&a, &c) + 1.0).abs() < 1e-12);
        assert_eq!(pearson(&a, &[0.0; 4]), 0.0);
    }
}
