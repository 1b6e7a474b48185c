//! The mesh-identity part of the configuration: the controller, trust
//! anchors, token and identity (all or none), and the mesh destinations.

use super::parse::{parse_addr, Error, Parser};
use pimesh_api::identity::{Identity, CONTROLLER_IDENTITY};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Default tap listener (linkerd2-proxy's `LINKERD2_PROXY_TAP_LISTEN_ADDR`).
pub const DEFAULT_TAP_LISTEN_ADDR: &str = "0.0.0.0:4190";
/// How often the trust-anchor bundle is refreshed between renewals.
pub const DEFAULT_TRUST_ANCHORS_REFRESH: Duration = Duration::from_secs(30);
/// The identity a proxy asks for when none is configured (Kubernetes' defaults).
pub const DEFAULT_IDENTITY: &str = "default/default";

/// How the proxy gets its certificate.
#[derive(Debug, Clone, PartialEq)]
pub struct IdentityConfig {
    /// `PIMESH_PROXY_CONTROLLER_ADDR`: `host:port` of the controller's
    /// proxy-facing (mTLS) port.
    pub controller_addr: String,
    /// `PIMESH_PROXY_CONTROLLER_IDENTITY`: the identity the controller's
    /// certificate must carry.
    pub controller_identity: Identity,
    /// `PIMESH_PROXY_TRUST_ANCHORS`: PEM bundle of trust anchors.
    pub trust_anchors: PathBuf,
    /// `PIMESH_PROXY_IDENTITY`: `NAMESPACE/SERVICEACCOUNT` this proxy asks to be.
    pub identity: Identity,
    /// `PIMESH_PROXY_TOKEN_FILE`: join token or ServiceAccount token, read
    /// again at each request (tokens rotate).
    pub token_file: PathBuf,
    /// `PIMESH_PROXY_TRUST_DOMAIN`: the SPIFFE trust domain.
    pub trust_domain: String,
    /// `PIMESH_PROXY_TAP_LISTEN_ADDR`: the tap listener (mTLS, open to
    /// the controller's identity only), served only with an identity.
    pub tap_addr: SocketAddr,
    /// `PIMESH_PROXY_TRUST_ANCHORS_REFRESH`: how often the trust-anchor
    /// bundle is fetched between renewals, so that anchor rotations reach
    /// the proxy before new issuers sign.
    pub anchors_refresh: Duration,
}

/// A destination reached over mTLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshDestination {
    /// The `ip:port` the app connects to (original destination or the
    /// explicit proxy target).
    pub addr: SocketAddr,
    /// The identity its proxy must present.
    pub identity: Identity,
    /// Where its proxy's inbound listener is: the destination itself
    /// (redirected there by iptables) unless given as `@ip:port`.
    pub proxy_addr: SocketAddr,
}

/// The identity settings: all of them with a controller, none without.
pub(super) fn identity_config(p: &Parser<'_>) -> Result<Option<IdentityConfig>, Error> {
    let Some(controller_addr) = p.parse_opt("PIMESH_PROXY_CONTROLLER_ADDR", |v| {
        match v.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
                Ok(v.to_string())
            }
            _ => Err("not a host:port address".to_string()),
        }
    })?
    else {
        return Ok(None);
    };
    let required = |name: &'static str| -> Result<PathBuf, Error> {
        let value = p.env.get(name).ok_or_else(|| Error {
            name,
            value: String::new(),
            reason: "required with PIMESH_PROXY_CONTROLLER_ADDR".into(),
        })?;
        let path = PathBuf::from(&value);
        std::fs::metadata(&path).map_err(|e| Error {
            name,
            value: value.clone(),
            reason: format!("cannot read the file: {e}"),
        })?;
        Ok(path)
    };
    let trust_anchors = required("PIMESH_PROXY_TRUST_ANCHORS")?;
    crate::tls::load_anchors(&trust_anchors).map_err(|e| Error {
        name: "PIMESH_PROXY_TRUST_ANCHORS",
        value: trust_anchors.display().to_string(),
        reason: e.to_string(),
    })?;
    Ok(Some(IdentityConfig {
        controller_addr,
        controller_identity: p.parse(
            "PIMESH_PROXY_CONTROLLER_IDENTITY",
            CONTROLLER_IDENTITY,
            parse_identity,
        )?,
        trust_anchors,
        identity: p.parse("PIMESH_PROXY_IDENTITY", DEFAULT_IDENTITY, parse_identity)?,
        token_file: required("PIMESH_PROXY_TOKEN_FILE")?,
        tap_addr: p.parse(
            "PIMESH_PROXY_TAP_LISTEN_ADDR",
            DEFAULT_TAP_LISTEN_ADDR,
            parse_addr,
        )?,
        anchors_refresh: p.duration(
            "PIMESH_PROXY_TRUST_ANCHORS_REFRESH",
            DEFAULT_TRUST_ANCHORS_REFRESH,
        )?,
        trust_domain: p.parse(
            "PIMESH_PROXY_TRUST_DOMAIN",
            pimesh_api::DEFAULT_TRUST_DOMAIN,
            |v| {
                let ok = !v.is_empty()
                    && v.split('.').all(|l| {
                        !l.is_empty()
                            && l.bytes()
                                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    });
                if ok {
                    Ok(v.to_string())
                } else {
                    Err("not a DNS-style trust domain".into())
                }
            },
        )?,
    }))
}

fn parse_identity(v: &str) -> Result<Identity, String> {
    v.parse()
        .map_err(|e: pimesh_api::identity::InvalidIdentity| e.to_string())
}

/// `10.0.0.2:8080=shop/web,10.0.0.3:80=shop/db@127.0.0.1:14143`.
pub(super) fn parse_destinations(v: &str) -> Result<Vec<MeshDestination>, String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| {
            let (addr, rest) = item.split_once('=').ok_or_else(|| {
                format!("{item:?} is not ADDR=NAMESPACE/SERVICEACCOUNT[@PROXY_ADDR]")
            })?;
            let addr = parse_addr(addr.trim())?;
            let (identity, proxy_addr) = match rest.split_once('@') {
                Some((id, proxy)) => (id, parse_addr(proxy.trim())?),
                None => (rest, addr),
            };
            Ok(MeshDestination {
                addr,
                identity: parse_identity(identity.trim())?,
                proxy_addr,
            })
        })
        .collect()
}
