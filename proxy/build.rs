//! The board builds' text layout (proxy/link/README.md).
//!
//! For the static musl targets the boards and images run, the proxy is
//! linked with `link/order.ld`: a linker script that adds to the default
//! layout (`INSERT BEFORE .text`, GNU ld and lld) one output section,
//! `.text.pimesh_ordered`, holding the functions a proxy runs at start-up
//! and at rest first, then those of its request paths. A static binary's
//! code is file-backed memory the kernel maps in 64 KiB windows around each
//! page it touches, so start-up code spread over the whole text made all of
//! it resident; laid out together, a proxy at rest maps about 1 MiB of it
//! without an identity and 2 with one, of 3 MiB (amd64). Other targets (the
//! host build the tests run) link as before.

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=link/order.ld");
    let target = std::env::var("TARGET").unwrap_or_default();
    let musl = target.ends_with("-linux-musl") || target.ends_with("-linux-musleabihf");
    if !musl {
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("link/order.ld");
    println!(
        "cargo:rustc-link-arg-bin=pimesh-proxy=-Wl,-T,{}",
        script.display()
    );
}
