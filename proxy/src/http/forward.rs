//! Forward: one request to its target, in its own HTTP version — directly
//! (the app inbound, a fixed or named target outbound) or over mTLS to a
//! mesh destination's proxy (HTTP/2, upgrades on an HTTP/1 connection of
//! their own) — carrying `Upgrade` (WebSocket) and `CONNECT` tunnels.

use super::body::Inner;
use super::error::Error;
use super::{headers, orig_proto};
use crate::config::MeshDestination;
use crate::connect::mtls::{self, Carries};
use crate::connect::pool::Clients;
use crate::http::replay::ReqBody;
use crate::metrics::{Metrics, TargetLabels};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};

/// A byte stream to a target (plain TCP or mTLS), for tunnels.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// What forwarding a request of one client connection uses.
pub struct Forward<'a> {
    /// Connections out, and the tracker that upgrades and tunnels run on.
    pub clients: &'a Clients,
    /// Where requests (and balanced tries) are counted.
    pub metrics: &'a Arc<Metrics>,
    /// Explicit HTTP proxy mode: `CONNECT` tunnels, absolute-form URIs.
    pub explicit: bool,
}

impl Forward<'_> {
    /// Forwards `req` to `target` (over mTLS to its proxy when
    /// `mesh_dest` is given).
    ///
    /// # Errors
    ///
    /// The target (or its proxy) cannot be reached, or fails before
    /// answering.
    pub async fn forward(
        &self,
        mut req: Request<Incoming>,
        authority: Option<http::uri::Authority>,
        target: SocketAddr,
        mesh_dest: Option<&MeshDestination>,
        labels: &TargetLabels,
    ) -> Result<Response<Inner>, Error> {
        let explicit = self.explicit;
        if explicit && req.method() == Method::CONNECT {
            return self.tunnel(req, target, mesh_dest, labels).await;
        }
        let upgrade = headers::is_upgrade(&req);
        let is_connect = req.method() == Method::CONNECT;
        headers::strip_hop_by_hop(req.headers_mut(), upgrade, explicit);
        // An HTTP/1 request that crossed the mesh as HTTP/2 goes to the app
        // as HTTP/1 again.
        if !orig_proto::from_h2(&mut req, authority.as_ref())
            && explicit
            && req.version() != http::Version::HTTP_2
        {
            headers::to_origin_form(&mut req, authority.as_ref());
        }
        if let (Some(dest), false) = (mesh_dest, upgrade) {
            return self.send_mesh(dest, labels, req, authority, target).await;
        }
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let mut rsp = match mesh_dest {
            Some(dest) => self.send_mesh_upgrade(dest, labels, req).await?,
            None => {
                self.clients
                    .send(target, labels, req.map(ReqBody::from), upgrade)
                    .await?
            }
        };
        if let Some(client_upgrade) = client_upgrade {
            let switched = rsp.status() == StatusCode::SWITCHING_PROTOCOLS
                || (is_connect && rsp.status().is_success());
            if switched {
                let server_upgrade = hyper::upgrade::on(&mut rsp);
                self.clients.tracker.spawn(async move {
                    match tokio::try_join!(client_upgrade, server_upgrade) {
                        Ok((client, server)) => {
                            let (mut c, mut s) = (TokioIo::new(client), TokioIo::new(server));
                            let _ = tokio::io::copy_bidirectional(&mut c, &mut s).await;
                        }
                        Err(e) => tracing::debug!(%e, "upgrade failed"),
                    }
                });
            }
        }
        let keep_upgrade = rsp.status() == StatusCode::SWITCHING_PROTOCOLS;
        headers::strip_hop_by_hop(rsp.headers_mut(), keep_upgrade, false);
        Ok(rsp.map(Inner::Upstream))
    }

    /// Sends a request to a mesh destination over the shared HTTP/2
    /// connection to its proxy; HTTP/1 requests travel as HTTP/2 marked
    /// with their version and come back as HTTP/1 responses.
    async fn send_mesh(
        &self,
        dest: &MeshDestination,
        labels: &TargetLabels,
        mut req: Request<Incoming>,
        authority: Option<http::uri::Authority>,
        target: SocketAddr,
    ) -> Result<Response<Inner>, Error> {
        let version = req.version();
        orig_proto::to_h2(&mut req, authority.as_ref(), target)?;
        let clients = self.clients;
        let mut rsp = clients
            .mesh
            .send(
                clients,
                Some(dest),
                dest.proxy_addr,
                labels,
                req.map(ReqBody::from),
            )
            .await?;
        *rsp.version_mut() = version;
        headers::strip_hop_by_hop(rsp.headers_mut(), false, false);
        Ok(rsp.map(Inner::Upstream))
    }

    /// Sends an upgrade request to a mesh destination on an mTLS HTTP/1
    /// connection of its own (upgrades cannot ride HTTP/2).
    async fn send_mesh_upgrade(
        &self,
        dest: &MeshDestination,
        labels: &TargetLabels,
        req: Request<Incoming>,
    ) -> Result<Response<Incoming>, Error> {
        let tls = mtls::connect(&self.clients.dialer, dest, Carries::Http1, labels).await?;
        let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(tls))
            .await
            .map_err(|e| Error::Upstream(dest.proxy_addr, e))?;
        self.clients.tracker.spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        sender
            .send_request(req)
            .await
            .map_err(|e| Error::Upstream(dest.proxy_addr, e))
    }

    /// Explicit proxy `CONNECT host:port`: connect, answer 200, then splice
    /// the upgraded client connection and the target's bytes.
    async fn tunnel(
        &self,
        mut req: Request<Incoming>,
        target: SocketAddr,
        mesh_dest: Option<&MeshDestination>,
        labels: &TargetLabels,
    ) -> Result<Response<Inner>, Error> {
        let dialer = &self.clients.dialer;
        // A mesh destination is reached over mTLS to its proxy (opaque).
        let server: Box<dyn Io> = match mesh_dest {
            Some(dest) => Box::new(mtls::connect(dialer, dest, Carries::Opaque, labels).await?),
            None => Box::new(dialer.tcp_http(target, labels).await?),
        };
        let mut server = server;
        let client = hyper::upgrade::on(&mut req);
        self.clients.tracker.spawn(async move {
            match client.await {
                Ok(client) => {
                    let mut client = TokioIo::new(client);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
                Err(e) => tracing::debug!(%e, "CONNECT upgrade failed"),
            }
        });
        Ok(Response::new(Inner::Local(None)))
    }
}
