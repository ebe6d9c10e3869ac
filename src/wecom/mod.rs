//! WeCom's protocol: the callback crypto and the typed events.

pub mod client;
pub mod crypto;
pub mod event;
