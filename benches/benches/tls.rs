//! TLS as the mesh uses it (rustls with the ring provider, TLS 1.3 only,
//! ECDSA P-256 certificates from rcgen, client certificates required),
//! entirely in memory: two connections pumping bytes into each other.
//!
//! - `handshake`: a full mutual handshake (no resumption) against a
//!   baseline of its unavoidable cryptography done with ring directly: an
//!   X25519 key pair and agreement on each side, two ECDSA P-256
//!   signatures (both CertificateVerify messages) and four verifications
//!   (those two, and each self-signed certificate).
//! - `records`: 16 KiB of application data encrypted by the client and
//!   decrypted by the server, against a baseline of the same bytes copied
//!   through the same two buffers (the memory traffic without the cipher).
//!
//! Run: `cargo bench -p pimesh-benches --bench tls` (see benches/README.md).

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use pimesh_benches::criterion_ratios::{self, Pair};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair};
use rustls::client::Resumption;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig, ServerConnection,
};
use std::hint::black_box;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::SystemTime;

const GROUP: &str = "tls";
const RECORD: usize = 16 * 1024;

/// A self-signed ECDSA P-256 certificate for `name` and its PKCS#8 key.
fn identity(name: &str) -> (CertificateDer<'static>, Vec<u8>) {
    let ck = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
    (ck.cert.der().clone(), ck.signing_key.serialize_der())
}

fn key(der: &[u8]) -> PrivateKeyDer<'static> {
    PrivatePkcs8KeyDer::from(der.to_vec()).into()
}

/// Client and server configurations that trust each other's certificate.
fn configs() -> (Arc<ClientConfig>, Arc<ServerConfig>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (server_cert, server_key) = identity("server.bench");
    let (client_cert, client_key) = identity("client.bench");
    let mut server_roots = RootCertStore::empty();
    server_roots.add(server_cert.clone()).unwrap();
    let mut client_roots = RootCertStore::empty();
    client_roots.add(client_cert.clone()).unwrap();

    let mut client = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(server_roots)
        .with_client_auth_cert(vec![client_cert], key(&client_key))
        .unwrap();
    client.resumption = Resumption::disabled();
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(client_roots), provider.clone())
            .build()
            .unwrap();
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![server_cert], key(&server_key))
        .unwrap();
    server.send_tls13_tickets = 0;
    (Arc::new(client), Arc::new(server))
}

/// Moves everything `from` has to send into `to`, which processes it.
fn pump(from: &mut Connection, to: &mut Connection, buf: &mut Vec<u8>) {
    buf.clear();
    while from.wants_write() {
        from.write_tls(buf).unwrap();
    }
    let mut rd = &buf[..];
    while !rd.is_empty() {
        to.read_tls(&mut rd).unwrap();
        to.process_new_packets().unwrap();
    }
}

/// A full mutual handshake; returns the established pair.
fn handshake(
    client: &Arc<ClientConfig>,
    server: &Arc<ServerConfig>,
    buf: &mut Vec<u8>,
) -> (Connection, Connection) {
    let name = ServerName::try_from("server.bench").unwrap();
    let mut c = Connection::Client(ClientConnection::new(client.clone(), name).unwrap());
    let mut s = Connection::Server(ServerConnection::new(server.clone()).unwrap());
    while c.is_handshaking() || s.is_handshaking() {
        pump(&mut c, &mut s, buf);
        pump(&mut s, &mut c, buf);
    }
    (c, s)
}

/// Encrypts `data` on `c`, decrypts it on `s` into `out`.
fn record(c: &mut Connection, s: &mut Connection, data: &[u8], out: &mut [u8], buf: &mut Vec<u8>) {
    c.writer().write_all(data).unwrap();
    pump(c, s, buf);
    s.reader().read_exact(out).unwrap();
}

/// The handshake's cryptography with ring alone (see the module doc).
struct Floor {
    rng: SystemRandom,
    keys: [EcdsaKeyPair; 2],
}

impl Floor {
    fn new() -> Floor {
        let rng = SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_ASN1_SIGNING;
        let keys = [identity("a").1, identity("b").1]
            .map(|der| EcdsaKeyPair::from_pkcs8(alg, &der, &rng).unwrap());
        Floor { rng, keys }
    }

    fn run(&self) -> u8 {
        use ring::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey, X25519};
        let a = EphemeralPrivateKey::generate(&X25519, &self.rng).unwrap();
        let b = EphemeralPrivateKey::generate(&X25519, &self.rng).unwrap();
        let (pa, pb) = (
            a.compute_public_key().unwrap(),
            b.compute_public_key().unwrap(),
        );
        let ka =
            agreement::agree_ephemeral(a, &UnparsedPublicKey::new(&X25519, pb.as_ref()), |k| k[0])
                .unwrap();
        let kb =
            agreement::agree_ephemeral(b, &UnparsedPublicKey::new(&X25519, pa.as_ref()), |k| k[0])
                .unwrap();
        assert_eq!(ka, kb);
        let transcript = [ka; 32];
        for key in &self.keys {
            let sig = key.sign(&self.rng, &transcript).unwrap();
            let public = signature::UnparsedPublicKey::new(
                &signature::ECDSA_P256_SHA256_ASN1,
                key.public_key().as_ref(),
            );
            for _ in 0..2 {
                public.verify(&transcript, sig.as_ref()).unwrap();
            }
        }
        ka
    }
}

fn bench_tls(c: &mut Criterion) {
    let (client, server) = configs();
    let mut buf = Vec::with_capacity(64 * 1024);
    // Both ends must agree on TLS 1.3 and see each other's certificate.
    let (mut cc, mut sc) = handshake(&client, &server, &mut buf);
    assert_eq!(
        cc.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert!(
        sc.peer_certificates().is_some_and(|c| c.len() == 1),
        "client certificate"
    );
    let data: Vec<u8> = (0..RECORD).map(|i| i as u8).collect();
    let mut out = vec![0u8; RECORD];
    record(&mut cc, &mut sc, &data, &mut out, &mut buf);
    assert_eq!(out, data, "decrypted bytes");

    let mut group = c.benchmark_group(GROUP);
    group.bench_function(BenchmarkId::new("handshake", "rustls_mtls"), |b| {
        b.iter(|| handshake(&client, &server, &mut buf))
    });
    let floor = Floor::new();
    group.bench_function(BenchmarkId::new("handshake", "crypto_floor"), |b| {
        b.iter(|| floor.run())
    });
    group.throughput(Throughput::Bytes(RECORD as u64));
    group.bench_function(BenchmarkId::new("records", "rustls_16k"), |b| {
        b.iter(|| record(&mut cc, &mut sc, black_box(&data), &mut out, &mut buf))
    });
    group.bench_function(BenchmarkId::new("records", "memcpy_16k"), |b| {
        b.iter(|| {
            buf.clear();
            buf.extend_from_slice(black_box(&data));
            out.copy_from_slice(&buf[..RECORD]);
        })
    });
    group.finish();
}

criterion_group!(benches, bench_tls);

fn main() {
    let started = SystemTime::now();
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
    let pairs = [
        Pair {
            name: "handshake",
            subject: "handshake/rustls_mtls".into(),
            baseline: "handshake/crypto_floor".into(),
        },
        Pair {
            name: "16 KiB record",
            subject: "records/rustls_16k".into(),
            baseline: "records/memcpy_16k".into(),
        },
    ];
    criterion_ratios::print(
        GROUP,
        "time per operation, baseline / rustls (the share that is unavoidable work)",
        &pairs,
        started,
    );
}
