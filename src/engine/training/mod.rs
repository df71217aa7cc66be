//! The trained networks: one file per architecture ([`resnet`], [`unet`]), the weights file
//! and the choice between them ([`network`]), and the training loop ([`train`]). The CNN machine ([`crate::engine::machines::cnn`]) runs it.

pub mod embedding;
pub mod network;
pub mod resnet;
pub mod train;
pub mod unet;
