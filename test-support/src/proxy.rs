//! What every test that starts `pimesh-proxy` sets: its listeners on
//! loopback, its log filter, and the start-up line to wait for.

use std::process::Command;

/// The start-up line's marker: `listening inbound=ADDR outbound=ADDR
/// admin=ADDR …` (the marker for [`crate::launch`]; the addresses follow
/// the keys `" inbound="`, `"outbound="` and `"admin="`).
pub const PROXY_LISTENING: &str = "listening inbound=";

/// Sets a `pimesh-proxy` test environment on `c`: the inbound, outbound
/// and tap listeners on 127.0.0.1 port 0, the admin listener on `admin`
/// (`"127.0.0.1:0"`, or a fixed address a scraper knows), the log filter
/// `log` (`RUST_LOG` syntax), and no `http_proxy`/`HTTP_PROXY` inherited
/// from the environment. Environment the caller sets afterwards wins.
pub fn proxy_env<'c>(c: &'c mut Command, admin: &str, log: &str) -> &'c mut Command {
    c.env("PIMESH_PROXY_INBOUND_LISTEN_ADDR", "127.0.0.1:0")
        .env("PIMESH_PROXY_OUTBOUND_LISTEN_ADDR", "127.0.0.1:0")
        .env("PIMESH_PROXY_ADMIN_LISTEN_ADDR", admin)
        .env("PIMESH_PROXY_TAP_LISTEN_ADDR", "127.0.0.1:0")
        .env("PIMESH_PROXY_LOG", log)
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
}
