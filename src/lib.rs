//! siyu (私域): a WeCom (企业微信) operations bot. See `DESIGN.md` in the shared folder for the
//! architecture; modules go from the edge (`cli`, `http`) inwards (`app`, `jobs`, `wecom`,
//! `store`, `config`, and at the bottom `ids`), and a module uses only those below it. `fake` is the fake WeCom (tests, the
//! demo, the benches); it shares only `wecom::crypto` with siyu.

pub mod app;
pub mod bench;
pub mod cli;
pub mod clock;
pub mod config;
pub mod demo;
pub mod failpoint;
pub mod fake;
pub mod fuzz;
pub mod http;
pub mod ids;
pub mod jobs;
pub mod metrics;
pub mod server;
pub mod soak;
pub mod store;
pub mod testkit;
pub mod wecom;

pub use server::{App, AppError, Components};
