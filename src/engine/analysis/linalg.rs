//! Dense float64 linear algebra on the host for the Gaussian machines: a symmetric
//! eigendecomposition and a matrix product.
//!
//! The Gaussian (Wiener) and PCA-locality machines need the training set's D×D covariance
//! (D = C·H·W ≤ a few thousand) decomposed once per dataset, in float64: the PCA-locality
//! masks are a threshold on the Wiener filter, and a float32 filter flips mask entries. The
//! eigensolver is the classic Householder tridiagonalisation followed by implicit QL
//! (EISPACK's tred2/tql2, as in JAMA), with the eigenvector matrix stored transposed so
//! every inner loop runs over contiguous memory.

use super::super::control::Cancelled;

/// Eigenpairs of a symmetric matrix, eigenvalues ascending.
pub struct SymEigen {
    pub values: Vec<f64>,
    /// [n, n]: row i is the unit eigenvector of `values[i]`.
    pub vectors: Vec<f64>,
}

/// Decomposes the symmetric n×n matrix `a` (row-major; only its lower triangle is read).
/// `check` is called once per Householder step and QL sweep, so a caller can cancel a long
/// decomposition.
pub fn sym_eigen(a: &[f64], n: usize, check: &mut dyn FnMut() -> Result<(), Cancelled>) -> Result<SymEigen, Cancelled> {
    assert_eq!(a.len(), n * n, "sym_eigen: a is not n×n");
    if n == 0 {
        return Ok(SymEigen { values: Vec::new(), vectors: Vec::new() });
    }
    // vt[j·n + k] holds V[k][j] of the textbook algorithm: a symmetric input is its own
    // transpose, and the columns the algorithm walks become contiguous rows.
    let mut vt = a.to_vec();
    let mut d = vec![0f64; n];
    let mut e = vec![0f64; n];
    tred2(&mut vt, &mut d, &mut e, n, check)?;
    tql2(&mut vt, &mut d, &mut e, n, check)?;
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| d[i].total_cmp(&d[j]));
    let values = order.iter().map(|&i| d[i]).collect();
    let mut vectors = Vec::with_capacity(n * n);
    for &i in &order {
        vectors.extend_from_slice(&vt[i * n..(i + 1) * n]);
    }
    Ok(SymEigen { values, vectors })
}

/// Householder reduction to tridiagonal form (d: diagonal, e: subdiagonal in e[1..]),
/// accumulating the orthogonal transform in `vt`.
fn tred2(
    vt: &mut [f64],
    d: &mut [f64],
    e: &mut [f64],
    n: usize,
    check: &mut dyn FnMut() -> Result<(), Cancelled>,
) -> Result<(), Cancelled> {
    // V[k][j] = vt[j * n + k]
    for j in 0..n {
        d[j] = vt[j * n + n - 1];
    }
    for i in (1..n).rev() {
        check()?;
        let scale: f64 = d[..i].iter().map(|v| v.abs()).sum();
        let mut h = 0.0;
        if scale == 0.0 {
            e[i] = d[i - 1];
            for j in 0..i {
                d[j] = vt[j * n + i - 1];
                vt[j * n + i] = 0.0;
                vt[i * n + j] = 0.0;
            }
        } else {
            for dk in d[..i].iter_mut() {
                *dk /= scale;
                h += *dk * *dk;
            }
            let mut f = d[i - 1];
            let mut g = if f > 0.0 { -h.sqrt() } else { h.sqrt() };
            e[i] = scale * g;
            h -= f * g;
            d[i - 1] = f - g;
            e[..i].fill(0.0);
            for j in 0..i {
                f = d[j];
                vt[i * n + j] = f;
                let col = &vt[j * n..j * n + i];
                g = e[j] + col[j] * f;
                for k in j + 1..i {
                    g += col[k] * d[k];
                    e[k] += col[k] * f;
                }
                e[j] = g;
            }
            f = 0.0;
            for j in 0..i {
                e[j] /= h;
                f += e[j] * d[j];
            }
            let hh = f / (h + h);
            for j in 0..i {
                e[j] -= hh * d[j];
            }
            for j in 0..i {
                let (f, g) = (d[j], e[j]);
                let col = &mut vt[j * n..j * n + i];
                for k in j..i {
                    col[k] -= f * e[k] + g * d[k];
                }
                d[j] = col[i - 1];
                vt[j * n + i] = 0.0;
            }
        }
        d[i] = h;
    }
    // Accumulate the transformations.
    for i in 0..n - 1 {
        vt[i * n + n - 1] = vt[i * n + i];
        vt[i * n + i] = 1.0;
        let h = d[i + 1];
        if h != 0.0 {
            let (head, tail) = vt.split_at_mut((i + 1) * n);
            let next = &tail[..i + 1]; // V[0..=i][i+1]
            for k in 0..=i {
                d[k] = next[k] / h;
            }
            for j in 0..=i {
                let col = &mut head[j * n..j * n + i + 1];
                let g: f64 = next.iter().zip(col.iter()).map(|(a, b)| a * b).sum();
                for k in 0..=i {
                    col[k] -= g * d[k];
                }
            }
        }
        vt[(i + 1) * n..(i + 1) * n + i + 1].fill(0.0);
    }
    for j in 0..n {
        d[j] = vt[j * n + n - 1];
        vt[j * n + n - 1] = 0.0;
    }
    vt[(n - 1) * n + n - 1] = 1.0;
    e[0] = 0.0;
    Ok(())
}

/// Implicit QL on the tridiagonal matrix, applying every rotation to the rows of `vt`.
fn tql2(
    vt: &mut [f64],
    d: &mut [f64],
    e: &mut [f64],
    n: usize,
    check: &mut dyn FnMut() -> Result<(), Cancelled>,
) -> Result<(), Cancelled> {
    for i in 1..n {
        e[i - 1] = e[i];
    }
    e[n - 1] = 0.0;
    let mut f = 0.0f64;
    let mut tst1 = 0.0f64;
    let eps = f64::EPSILON;
    for l in 0..n {
        check()?;
        tst1 = tst1.max(d[l].abs() + e[l].abs());
        let mut m = l;
        while m < n - 1 && e[m].abs() > eps * tst1 {
            m += 1;
        }
        if m > l {
            // A NaN input would never converge: 60 sweeps is far more than QL ever needs.
            for _ in 0..60 {
                let g = d[l];
                let mut p = (d[l + 1] - g) / (2.0 * e[l]);
                let mut r = p.hypot(1.0);
                if p < 0.0 {
                    r = -r;
                }
                d[l] = e[l] / (p + r);
                d[l + 1] = e[l] * (p + r);
                let dl1 = d[l + 1];
                let h = g - d[l];
                for di in d[l + 2..].iter_mut() {
                    *di -= h;
                }
                f += h;
                p = d[m];
                let (mut c, mut c2, mut c3) = (1.0f64, 1.0f64, 1.0f64);
                let el1 = e[l + 1];
                let (mut s, mut s2) = (0.0f64, 0.0f64);
                for i in (l..m).rev() {
                    c3 = c2;
                    c2 = c;
                    s2 = s;
                    let g = c * e[i];
                    let h = c * p;
                    r = p.hypot(e[i]);
                    e[i + 1] = s * r;
                    s = e[i] / r;
                    c = p / r;
                    p = c * d[i] - s * g;
                    d[i + 1] = h + s * (c * g + s * d[i]);
                    let (lo, hi) = vt.split_at_mut((i + 1) * n);
                    let (vi, vi1) = (&mut lo[i * n..], &mut hi[..n]);
                    for (a, b) in vi.iter_mut().zip(vi1.iter_mut()) {
                        let hk = *b;
                        *b = s * *a + c * hk;
                        *a = c * *a - s * hk;
                    }
                }
                p = -s * s2 * c3 * el1 * e[l] / dl1;
                e[l] = s * p;
                d[l] = c * p;
                if e[l].abs() <= eps * tst1 {
                    break;
                }
            }
        }
        d[l] += f;
        e[l] = 0.0;
    }
    Ok(())
}

/// c = a · b for row-major a [m, k] and b [k, n], in float64, on every core.
/// `matmul` in blocks of rows of `a`, calling `check` between them (each block is about 2²⁶
/// multiply-adds, a few milliseconds): the D×N×D products of the Gaussian fit and the
/// PCA-locality filter take seconds at D = 4096 and must stop when a slider moves.
pub fn matmul_cancellable(
    a: &[f64],
    b: &[f64],
    (m, k, n): (usize, usize, usize),
    check: &mut dyn FnMut() -> Result<(), Cancelled>,
) -> Result<Vec<f64>, Cancelled> {
    assert_eq!(a.len(), m * k);
    let rows = ((1usize << 26) / (k * n).max(1)).clamp(1, m.max(1));
    let mut c = Vec::with_capacity(m * n);
    for block in a.chunks(rows * k.max(1)) {
        check()?;
        c.extend(matmul(block, b, block.len() / k.max(1), k, n));
    }
    if k == 0 {
        c.resize(m * n, 0.0);
    }
    Ok(c)
}

pub fn matmul(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    assert_eq!(a.len(), m * k);
    assert_eq!(b.len(), k * n);
    let mut c = vec![0f64; m * n];
    if m == 0 || n == 0 || k == 0 {
        return c;
    }
    // SAFETY: every pointer addresses a buffer of exactly the extent its strides describe
    // (asserted above), and `c` aliases neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            n as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(0),
        );
    }
    c
}

/// The transpose of row-major `a` [m, n].
pub fn transpose(a: &[f64], m: usize, n: usize) -> Vec<f64> {
    let mut t = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            t[j * m + i] = a[i * n + j];
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f64 {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((*seed >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }

    fn check_decomposition(a: &[f64], n: usize) {
        let eig = sym_eigen(a, n, &mut || Ok(())).unwrap();
        let scale = eig.values.iter().fold(1e-300f64, |m, v| m.max(v.abs()));
        for (i, &lam) in eig.values.iter().enumerate() {
            let v = &eig.vectors[i * n..(i + 1) * n];
            for r in 0..n {
                let av: f64 = (0..n).map(|c| a[r * n + c] * v[c]).sum();
                assert!((av - lam * v[r]).abs() < 1e-10 * scale, "A v ≠ λ v for pair {i}");
            }
            for j in 0..n {
                let dot: f64 = v.iter().zip(&eig.vectors[j * n..(j + 1) * n]).map(|(a, b)| a * b).sum();
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((dot - want).abs() < 1e-10, "vectors {i} and {j} are not orthonormal: {dot}");
            }
        }
        assert!(eig.values.windows(2).all(|w| w[0] <= w[1]), "eigenvalues come ascending");
    }

    #[test]
    fn random_symmetric_matrices_decompose() {
        let mut seed = 7;
        for n in [1, 2, 3, 10, 57] {
            let mut a = vec![0f64; n * n];
            for i in 0..n {
                for j in 0..=i {
                    let v = lcg(&mut seed);
                    a[i * n + j] = v;
                    a[j * n + i] = v;
                }
            }
            check_decomposition(&a, n);
        }
    }

    #[test]
    fn a_covariance_with_zero_rows_and_repeated_eigenvalues_decomposes() {
        // Rank 3 covariance of 40 values where 10 never vary (an image's constant border).
        let (n, samples) = (40, 3);
        let mut seed = 11;
        let x: Vec<f64> = (0..samples * n).map(|i| if i % n < 10 { 0.0 } else { lcg(&mut seed) }).collect();
        let s = matmul(&transpose(&x, samples, n), &x, n, samples, n);
        check_decomposition(&s, n);
        let eig = sym_eigen(&s, n, &mut || Ok(())).unwrap();
        let nonzero = eig.values.iter().filter(|v| v.abs() > 1e-9).count();
        assert_eq!(nonzero, samples, "rank is the number of samples");
        // The identity: one eigenvalue, n times.
        let mut id = vec![0f64; 25];
        (0..5).for_each(|i| id[i * 6] = 1.0);
        check_decomposition(&id, 5);
    }

    #[test]
    fn matmul_matches_the_definition() {
        let mut seed = 3;
        let (m, k, n) = (7, 13, 5);
        let a: Vec<f64> = (0..m * k).map(|_| lcg(&mut seed)).collect();
        let b: Vec<f64> = (0..k * n).map(|_| lcg(&mut seed)).collect();
        let c = matmul(&a, &b, m, k, n);
        let mut checks = 0;
        let blocked = matmul_cancellable(&a, &b, (m, k, n), &mut || {
            checks += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(blocked, c, "blocks of rows give the same product");
        assert!(checks >= 1);
        let mut stop = || Err(Cancelled);
        assert!(matmul_cancellable(&a, &b, (m, k, n), &mut stop).is_err());
        for i in 0..m {
            for j in 0..n {
                let want: f64 = (0..k).map(|t| a[i * k + t] * b[t * n + j]).sum();
                assert!((c[i * n + j] - want).abs() < 1e-12);
            }
        }
    }
}
