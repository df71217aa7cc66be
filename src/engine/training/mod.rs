//! The trained network: its definition and weights file ([`network`]) and its training loop
//! ([`train`]). The CNN machine ([`crate::engine::machines::cnn`]) runs it.

pub mod network;
pub mod train;
