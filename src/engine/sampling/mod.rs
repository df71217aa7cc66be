//! Sampling: the DDIM loop ([`sampler`]) and what it walks along, the noise schedule ᾱ(t)
//! ([`schedule`]), the patch-size schedule P(t) ([`patch`]) and the seeded noise ([`noise`]).

pub mod noise;
pub mod paint;
pub mod patch;
pub mod sampler;
pub mod schedule;
