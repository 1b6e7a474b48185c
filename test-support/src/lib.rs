//! Helpers shared by the workspace's tests (a dev-dependency of proxy,
//! lite-controller and lab; a dependency of the benches' dev tools), std
//! only. Layout:
//!
//! - `temp`: [`TempDir`], a fresh directory removed on drop.
//! - `port`: [`free_port`], a loopback port below the ephemeral range.
//! - `poll`: [`eventually`] and [`eventually_every`], polling a condition.
//! - `command`: [`run`], a command to completion within a time limit.
//! - `launch`: [`launch`], [`Launched`] and [`line_addr`]: a server
//!   process up to the log line saying where it listens.
//! - `proxy`: [`proxy_env`] and [`PROXY_LISTENING`], a `pimesh-proxy`
//!   under test.
//! - `cycles`: the import-cycle checker behind `tests/import_cycles.rs`.

mod command;
pub mod cycles;
mod launch;
mod poll;
mod port;
mod proxy;
mod temp;

pub use command::run;
pub use launch::{launch, line_addr, Exited, Launched};
pub use poll::{eventually, eventually_every};
pub use port::free_port;
pub use proxy::{proxy_env, PROXY_LISTENING};
pub use temp::TempDir;
