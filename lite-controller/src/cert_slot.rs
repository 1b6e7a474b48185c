//! [`CertSlot`]: a serving certificate swapped in place on renewal, asked
//! by rustls at every handshake. Shared by the proxy port (`proxy_api`),
//! the tap relay's client side (`tap`) and the injector (`inject`); filled
//! and renewed by `server`. A leaf: it knows only `identity`'s
//! [`ControllerCert`].

use crate::identity::ControllerCert;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::sync::{Arc, RwLock};

/// The controller's current certificate; rustls asks it on every handshake.
pub struct CertSlot(RwLock<Arc<CertifiedKey>>);

impl std::fmt::Debug for CertSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CertSlot")
    }
}

impl CertSlot {
    /// A slot holding `cert`.
    ///
    /// # Errors
    ///
    /// [`rustls::Error`] when the key is not an ECDSA PKCS#8 key that ring
    /// can sign with.
    pub fn new(cert: &ControllerCert) -> Result<CertSlot, rustls::Error> {
        Ok(CertSlot(RwLock::new(certified_key(cert)?)))
    }

    /// The current certificate and key.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Serves `cert` from the next handshake on.
    ///
    /// # Errors
    ///
    /// As [`CertSlot::new`]; the slot keeps the certificate it held.
    pub fn set(&self, cert: &ControllerCert) -> Result<(), rustls::Error> {
        let key = certified_key(cert)?;
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = key;
        Ok(())
    }
}

impl ResolvesServerCert for CertSlot {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

fn certified_key(cert: &ControllerCert) -> Result<Arc<CertifiedKey>, rustls::Error> {
    let key = PrivateKeyDer::Pkcs8(cert.key_pkcs8.clone().into());
    let signer = rustls::crypto::ring::sign::any_ecdsa_type(&key)?;
    let chain = cert
        .chain
        .iter()
        .map(|d| CertificateDer::from(d.clone()))
        .collect();
    Ok(Arc::new(CertifiedKey::new(chain, signer)))
}
