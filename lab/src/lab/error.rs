//! Why bringing a lab up failed: one error for the lab and its parts
//! (a leaf, so that the parts can name it without importing the lab).

use crate::interrupt::Interrupted;
use crate::{net, process, spec};
use std::path::PathBuf;

/// Bringing the lab up failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The lab needs root (namespaces, iptables, uids).
    #[error(
        "the mesh lab needs root (network namespaces, iptables); without root use loopback mode"
    )]
    NotRoot,
    /// `pimesh-proxy` or `pimesh` was not found.
    #[error("{0} not found (build it: cargo build -p pimesh-proxy -p pimesh-controller, or pass --bin-dir)")]
    Binary(String),
    /// A pod spec is unusable.
    #[error(transparent)]
    Spec(#[from] spec::Error),
    /// The network could not be set up.
    #[error("network")]
    Net(#[from] net::Error),
    /// A command or child failed.
    #[error("process")]
    Process(#[from] process::Error),
    /// A child did not become ready; `log` is its output.
    #[error("{what}:\n{log}")]
    NotReady { what: String, log: String },
    /// A file of the lab's work directory cannot be written.
    #[error("cannot write {0}")]
    Write(PathBuf, #[source] std::io::Error),
    /// SIGINT/SIGTERM/SIGHUP arrived.
    #[error("interrupted")]
    Interrupted(#[from] Interrupted),
}
