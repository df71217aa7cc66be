//! Reading a run: which training patches voted for a pixel ([`inspect`]), what it is sensitive
//! to ([`jacobian`]), when classes and training images win ([`regimes`]), the P(t) that fits
//! a trained network ([`calibrate`]), Pearson r ([`stats`]) and the float64 linear algebra the
//! Gaussian machines stand on ([`linalg`]).

pub mod calibrate;
pub mod inspect;
pub mod jacobian;
pub mod linalg;
pub mod regimes;
pub mod stats;
