//! The test control plane's certificates and kubeconfigs: one CA
//! (ECDSA P-256, made fresh for every cluster) that signs the API server's
//! serving certificate and the clients' certificates (cluster-admin,
//! kube-controller-manager), plus the ServiceAccount token signing key —
//! the files kubeadm would write under `/etc/kubernetes/pki`.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

/// The ClusterIP of the `kubernetes` Service in the lab's service range
/// (the first address of `10.43.0.0/16`, k3s's default range).
pub const KUBERNETES_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 43, 0, 1);

/// Making or writing a certificate failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// rcgen refused the parameters (a bug here, not input).
    #[error("cannot generate {0}")]
    Generate(&'static str, #[source] rcgen::Error),
    /// A file cannot be written.
    #[error("cannot write {0}")]
    Write(PathBuf, #[source] std::io::Error),
}

/// Paths of what [`write`] made, all PEM, under the cluster's `pki/`.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The CA certificate (`--client-ca-file`, kubeconfigs, `--root-ca-file`).
    pub ca_cert: PathBuf,
    /// The API server's serving certificate and key.
    pub server_cert: PathBuf,
    /// Its key (PKCS#8).
    pub server_key: PathBuf,
    /// The cluster-admin client (`O=system:masters`).
    pub admin_cert: PathBuf,
    /// Its key.
    pub admin_key: PathBuf,
    /// kube-controller-manager's client (`CN=system:kube-controller-manager`,
    /// bound to its bootstrap ClusterRole by the API server).
    pub kcm_cert: PathBuf,
    /// Its key.
    pub kcm_key: PathBuf,
    /// The ServiceAccount token signing key (PKCS#8 ECDSA P-256): the API
    /// server signs tokens with it, the token controller too.
    pub sa_key: PathBuf,
    /// Its public key (SPKI): the API server verifies tokens with it.
    pub sa_pub: PathBuf,
}

/// Generates the CA, certificates and signing key into `dir` (created).
///
/// # Errors
///
/// [`Error::Write`] when `dir` or a file cannot be written.
pub fn write(dir: &Path) -> Result<Pki, Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::Write(dir.into(), e))?;
    let ca_key = KeyPair::generate().map_err(|e| Error::Generate("the CA key", e))?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, "pimesh-lab kubernetes CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca
        .self_signed(&ca_key)
        .map_err(|e| Error::Generate("the CA", e))?;
    let issuer = Issuer::new(ca, ca_key);

    let file = |name: &str, text: &str| -> Result<PathBuf, Error> {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(|e| Error::Write(p.clone(), e))?;
        Ok(p)
    };
    // The names kube-apiserver's own generated certificate carries.
    let mut server_sans: Vec<SanType> = [
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ]
    .iter()
    .filter_map(|n| (*n).try_into().ok().map(SanType::DnsName))
    .collect();
    server_sans.push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    server_sans.push(SanType::IpAddress(IpAddr::V4(KUBERNETES_SERVICE_IP)));
    let (server_cert, server_key) = leaf(
        &issuer,
        "kube-apiserver",
        None,
        server_sans,
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    let (admin_cert, admin_key) = leaf(
        &issuer,
        "pimesh-lab-admin",
        Some("system:masters"),
        Vec::new(),
        ExtendedKeyUsagePurpose::ClientAuth,
    )?;
    let (kcm_cert, kcm_key) = leaf(
        &issuer,
        "system:kube-controller-manager",
        None,
        Vec::new(),
        ExtendedKeyUsagePurpose::ClientAuth,
    )?;
    let sa_key = KeyPair::generate().map_err(|e| Error::Generate("the token signing key", e))?;
    Ok(Pki {
        ca_cert: file("ca.crt", &ca_cert.pem())?,
        server_cert: file("apiserver.crt", &server_cert)?,
        server_key: file("apiserver.key", &server_key)?,
        admin_cert: file("admin.crt", &admin_cert)?,
        admin_key: file("admin.key", &admin_key)?,
        kcm_cert: file("controller-manager.crt", &kcm_cert)?,
        kcm_key: file("controller-manager.key", &kcm_key)?,
        sa_key: file("sa.key", &sa_key.serialize_pem())?,
        sa_pub: file("sa.pub", &sa_key.public_key_pem())?,
    })
}

/// A certificate for `cn` (and organisation `o`: a Kubernetes group)
/// signed by `issuer`; (certificate PEM, key PEM).
fn leaf(
    issuer: &Issuer<'_, KeyPair>,
    cn: &'static str,
    o: Option<&str>,
    sans: Vec<SanType>,
    usage: ExtendedKeyUsagePurpose,
) -> Result<(String, String), Error> {
    let key = KeyPair::generate().map_err(|e| Error::Generate(cn, e))?;
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, cn);
    if let Some(o) = o {
        p.distinguished_name.push(DnType::OrganizationName, o);
    }
    p.subject_alt_names = sans;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![usage];
    let cert = p
        .signed_by(&key, issuer)
        .map_err(|e| Error::Generate(cn, e))?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Who a kubeconfig speaks as.
#[derive(Debug, Clone)]
pub enum User {
    /// A client certificate and its key (files).
    Cert {
        /// Certificate PEM file.
        cert: PathBuf,
        /// Key PEM file.
        key: PathBuf,
    },
    /// A bearer token (a ServiceAccount's, from the TokenRequest API).
    Token(String),
}

/// Writes a kubeconfig for `server` (`https://127.0.0.1:PORT`) trusting
/// `ca` and speaking as `user` to `path`, readable by its owner only
/// (it holds credentials).
///
/// # Errors
///
/// [`Error::Write`].
pub fn write_kubeconfig(path: &Path, server: &str, ca: &Path, user: &User) -> Result<(), Error> {
    let user = match user {
        User::Cert { cert, key } => format!(
            "    client-certificate: {}\n    client-key: {}\n",
            cert.display(),
            key.display()
        ),
        User::Token(t) => format!("    token: {t}\n"),
    };
    let text = format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: pimesh-lab\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\n\
         users:\n\
         - name: pimesh-lab\n  user:\n{user}\
         contexts:\n\
         - name: pimesh-lab\n  context:\n    cluster: pimesh-lab\n    user: pimesh-lab\n\
         current-context: pimesh-lab\n",
        ca = ca.display(),
    );
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| Error::Write(path.into(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_every_file_and_a_kubeconfig() {
        let dir = std::env::temp_dir().join(format!("pimesh-lab-pki-{}", std::process::id()));
        let pki = write(&dir).unwrap();
        for p in [
            &pki.ca_cert,
            &pki.server_cert,
            &pki.admin_cert,
            &pki.kcm_cert,
        ] {
            assert!(std::fs::read_to_string(p)
                .unwrap()
                .starts_with("-----BEGIN CERTIFICATE-----"));
        }
        for p in [&pki.server_key, &pki.admin_key, &pki.kcm_key, &pki.sa_key] {
            assert!(std::fs::read_to_string(p)
                .unwrap()
                .starts_with("-----BEGIN PRIVATE KEY-----"));
        }
        let kc = dir.join("kubeconfig");
        write_kubeconfig(
            &kc,
            "https://127.0.0.1:1",
            &pki.ca_cert,
            &User::Token("t".into()),
        )
        .unwrap();
        let text = std::fs::read_to_string(&kc).unwrap();
        assert!(text.contains("server: https://127.0.0.1:1\n"), "{text}");
        assert!(text.contains("    token: t\n"), "{text}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&kc).unwrap().permissions().mode() & 0o777,
            0o600
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
