//! Inbound authorization of one connection: by the port's `Server` and its
//! authorizations when the controller's policy stream selects the port
//! (`discovery::policy`), else by the default policy
//! (`PIMESH_PROXY_INBOUND_DEFAULT_POLICY`, Linkerd's default policies);
//! both decided by [`pimesh_api::policy::inbound::InboundServer::decide`].
//! Made once when the client is known (after mTLS, or as plaintext), then
//! applied per connection to opaque TCP (refused before the app sees a
//! byte) and per request to HTTP (403; gRPC `PERMISSION_DENIED`). A leaf:
//! it imports nothing of the flow.

use pimesh_api::policy::inbound::{Client, InboundServer, ServerKind, Verdict};
use pimesh_api::policy::{DefaultPolicy, Networks};
use std::net::IpAddr;
use std::sync::Arc;

/// One port's policy as connections use it: the streamed (or default)
/// server, with its names shared by the metric labels of every connection.
#[derive(Debug, PartialEq, Eq)]
pub struct Server {
    /// What decides.
    pub spec: InboundServer,
    /// `srv_name`.
    pub name: Arc<str>,
    /// `authz_name` of each of `spec.authorizations`, in order.
    pub authorization_names: Vec<Arc<str>>,
}

impl Server {
    /// Wraps `spec`.
    pub fn new(spec: InboundServer) -> Server {
        Server {
            name: spec.name.as_str().into(),
            authorization_names: spec
                .authorizations
                .iter()
                .map(|a| a.name.as_str().into())
                .collect(),
            spec,
        }
    }

    /// The server of a port no `Server` selects (Linkerd's default server).
    pub fn default_policy(policy: DefaultPolicy) -> Server {
        Server::new(InboundServer::default_policy(policy))
    }
}

/// The verdict on one inbound connection.
#[derive(Debug, Clone)]
pub struct Authz {
    /// The port's server: the `srv_*` labels.
    pub server: Arc<Server>,
    /// The authorization that admitted the client (an index into
    /// `server.spec.authorizations`); `None` when the access policy
    /// decided (`authz_kind="default"`).
    pub authorization: Option<usize>,
    /// Whether the client may reach the app.
    pub allowed: bool,
}

impl Authz {
    /// Decides for a client that presented the mesh `identity` over mTLS
    /// (its DNS-style name) or none, connecting from `source`; `cluster`
    /// are the networks of the `cluster-*` policies.
    pub fn decide(
        server: Arc<Server>,
        cluster: &Networks,
        identity: Option<&str>,
        source: IpAddr,
    ) -> Authz {
        let verdict = server.spec.decide(Client { identity, source }, cluster);
        let (authorization, allowed) = match verdict {
            Verdict::Authorized(a) => {
                (server.spec.authorizations.iter().position(|x| x == a), true)
            }
            Verdict::AccessPolicy => (None, true),
            Verdict::Denied => (None, false),
        };
        if allowed && authorization.is_none() && server.spec.access_policy == DefaultPolicy::Audit {
            // Audit lets everything in and says so, as Linkerd's.
            tracing::info!(%source, authenticated = identity.is_some(), server = %server.name, "connection allowed by the audit policy");
        }
        Authz {
            server,
            authorization,
            allowed,
        }
    }

    /// What a refusal names: `server NAME`, or `default policy NAME`.
    pub fn describe(&self) -> String {
        match self.server.spec.kind {
            ServerKind::Server => format!("server {}", self.server.name),
            ServerKind::Default => format!("default policy {}", self.server.name),
        }
    }
}
