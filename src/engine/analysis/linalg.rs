//! Dense float64 linear algebra on the host for the Gaussian machines: a symmetric
//! eigendecomposition and a matrix product.
//!
//! The Gaussian (Wiener) and PCA-locality machines need the training set's D×D covariance
//! (D = C·H·W ≤ a few thousand) decomposed once per dataset, in float64: the PCA-locality
//! masks are a threshold on the Wiener filter, and a float32 filter flips mask entries. The
//! eigensolver is faer's self-adjoint decomposition (blocked tridiagonalisation and divide and
//! conquer on every core, over the same gemm the products use): the hand-written scalar
//! Householder/QL it replaced took minutes at D = 4096.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::super::control::Cancelled;

/// Eigenpairs of a symmetric matrix, eigenvalues ascending.
pub struct SymEigen {
    pub values: Vec<f64>,
    /// [n, n]: row i is the unit eigenvector of `values[i]`.
    pub vectors: Vec<f64>,
}

/// Set while a decomposition runs on its helper thread, cancelled or not.
static DECOMPOSING: AtomicBool = AtomicBool::new(false);

/// Clears [`DECOMPOSING`] when the helper thread ends, panicking or not.
struct Release;
impl Drop for Release {
    fn drop(&mut self) {
        DECOMPOSING.store(false, Ordering::Release);
    }
}

/// Decomposes the symmetric n×n matrix `a` (row-major; only its lower triangle is read).
///
/// faer's decomposition is one call that cannot stop part-way, so it runs on a helper thread
/// while this one polls `check` every few milliseconds: a cancel returns at once and the
/// helper finishes alone, its answer dropped. At most one helper runs at a time (a new
/// decomposition waits for an abandoned one, still polling `check`), so slider drags cannot
/// pile decompositions up.
pub fn sym_eigen(a: &[f64], n: usize, check: &mut dyn FnMut() -> Result<(), Cancelled>) -> Result<SymEigen, Cancelled> {
    assert_eq!(a.len(), n * n, "sym_eigen: a is not n×n");
    check()?;
    if n <= 64 {
        return Ok(decompose(a, n));
    }
    while DECOMPOSING.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
        check()?;
        std::thread::sleep(Duration::from_millis(2));
    }
    let (tx, rx) = crossbeam_channel::bounded(1);
    let a = a.to_vec();
    std::thread::Builder::new()
        .name("eigensolver".into())
        .spawn(move || {
            let _release = Release;
            let _ = tx.send(decompose(&a, n));
        })
        .expect("the eigensolver thread starts");
    loop {
        match rx.recv_timeout(Duration::from_millis(5)) {
            Ok(eig) => return Ok(eig),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => check()?,
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                panic!("the eigendecomposition of a {n}×{n} covariance failed (non-finite values?)")
            }
        }
    }
}

/// faer's decomposition of the lower triangle of `a`, as [`SymEigen`].
fn decompose(a: &[f64], n: usize) -> SymEigen {
    if n == 0 {
        return SymEigen { values: Vec::new(), vectors: Vec::new() };
    }
    let m = faer::Mat::<f64>::from_fn(n, n, |i, j| if i >= j { a[i * n + j] } else { a[j * n + i] });
    let eig = m
        .self_adjoint_eigen(faer::Side::Lower)
        .unwrap_or_else(|e| panic!("the eigendecomposition of a {n}×{n} covariance failed: {e:?}"));
    let (s, u) = (eig.S().column_vector(), eig.U());
    // faer returns them ascending; the order is part of this function's contract, so it is
    // enforced rather than assumed.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| s[i].total_cmp(&s[j]));
    let values = order.iter().map(|&i| s[i]).collect();
    let mut vectors = Vec::with_capacity(n * n);
    for &i in &order {
        vectors.extend((0..n).map(|k| u[(k, i)]));
    }
    SymEigen { values, vectors }
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

    /// A seeded symmetric n×n matrix with entries in [−1, 1).
    fn random_symmetric(n: usize, seed: &mut u64) -> Vec<f64> {
        let mut a = vec![0f64; n * n];
        for i in 0..n {
            for j in 0..=i {
                let v = lcg(seed);
                a[i * n + j] = v;
                a[j * n + i] = v;
            }
        }
        a
    }

    #[test]
    fn random_symmetric_matrices_decompose() {
        let mut seed = 7;
        for n in [1, 2, 3, 10, 57] {
            check_decomposition(&random_symmetric(n, &mut seed), n);
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
    fn a_cancelled_decomposition_returns_at_once_and_the_next_one_is_right() {
        let n = 800;
        let a = random_symmetric(n, &mut 5);
        let started = std::time::Instant::now();
        let mut polls = 0;
        let out = sym_eigen(&a, n, &mut || {
            polls += 1;
            if polls > 3 { Err(Cancelled) } else { Ok(()) }
        });
        assert!(out.is_err(), "cancelled");
        assert!(started.elapsed() < std::time::Duration::from_millis(500), "{:?}", started.elapsed());
        // The abandoned helper finishes alone; the next decomposition waits for it and is exact.
        check_decomposition(&a[..], n);
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
