//! Inbound authorization of one connection by the default policy
//! (`PIMESH_PROXY_INBOUND_DEFAULT_POLICY`, Linkerd's default policies,
//! decided by [`pimesh_api::policy`]): made once when the client is known
//! (after mTLS, or as plaintext), then applied per connection to opaque
//! TCP (refused before the app sees a byte) and per request to HTTP (403;
//! gRPC `PERMISSION_DENIED`). A leaf: it imports nothing of the flow.

use pimesh_api::policy::{DefaultPolicy, Networks};
use std::net::IpAddr;

/// The verdict on one inbound connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Authz {
    /// The policy that decided: the `srv_name` and `authz_name` labels
    /// (`srv_kind`/`authz_kind` = `default`, as Linkerd's default servers).
    pub policy: DefaultPolicy,
    /// Whether the client may reach the app.
    pub allowed: bool,
}

impl Authz {
    /// Decides for a client that is `authenticated` (presented a mesh
    /// identity over mTLS) or not, connecting from `source`.
    pub fn decide(
        policy: DefaultPolicy,
        cluster: &Networks,
        authenticated: bool,
        source: IpAddr,
    ) -> Authz {
        let allowed = policy.authorizes(authenticated, source, cluster);
        if policy == DefaultPolicy::Audit {
            // Audit lets everything in and says so, as Linkerd's.
            tracing::info!(%source, authenticated, "connection allowed by the audit policy");
        }
        Authz { policy, allowed }
    }
}
