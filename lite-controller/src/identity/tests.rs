//! Unit tests of the identity role over a real store: first start, reopen,
//! refusal to create a CA over existing data, import, certify and its
//! records, rotation across restarts, pruning.

use super::*;
use crate::identity::csr::tests::csr_pem;
use crate::token::{CreateToken, Status};
use pimesh_test_support::TempDir;
use x509_parser::prelude::{FromDer, X509Certificate};

const NOW: u64 = 1_750_000_000;

fn settings() -> Settings {
    Settings {
        trust_domain: "cluster.local".into(),
        cert_lifetime: Duration::from_secs(3600),
        import: None,
    }
}

fn start(store: &Store, settings: Settings) -> Result<Authority, Error> {
    let tokens = Arc::new(Tokens::new(store).unwrap());
    Authority::start(store, tokens, settings, NOW)
}

/// A certify request for `identity` with a fresh token for it.
fn request(a: &Authority, identity: &str) -> CertifyRequest {
    let token = a
        .tokens()
        .create(
            &CreateToken {
                identity: identity.parse().unwrap(),
                service: None,
                ttl_seconds: Some(10 * 24 * 3600),
            },
            NOW,
        )
        .unwrap()
        .token;
    CertifyRequest {
        identity: identity.parse().unwrap(),
        token,
        csr_pem: csr_pem(&rcgen::PKCS_ECDSA_P256_SHA256, &["x.example"]).1,
    }
}

fn issuer_of_chain(chain_pem: &str) -> CertInfo {
    let ders = pem::certs_from_pem(chain_pem, "chain").unwrap();
    assert_eq!(ders.len(), 2, "leaf + issuer");
    let (_, x) = X509Certificate::from_der(&ders[1]).unwrap();
    CertInfo {
        subject: x.subject().to_string(),
        sha256: crate::crypto::hex(&crate::crypto::sha256(&ders[1])),
        not_before_unix: x.validity().not_before.timestamp() as u64,
        not_after_unix: x.validity().not_after.timestamp() as u64,
    }
}

#[test]
fn first_start_creates_and_restart_loads_the_same_ca() {
    let dir = TempDir::new("id-reopen");
    let (bundle, serial) = {
        let store = Store::open(dir.path()).unwrap();
        assert!(!store.initialized());
        let a = start(&store, settings()).unwrap();
        let rsp = a.certify(&request(&a, "shop/web"), NOW).unwrap();
        assert_eq!(rsp.trust_anchors_pem, a.trust_anchors_pem());
        let serial = a.certificates().unwrap()[0].serial.clone();
        (a.trust_anchors_pem(), serial)
    };
    let store = Store::open(dir.path()).unwrap();
    assert!(store.initialized(), "the marker was written");
    let a = start(&store, settings()).unwrap();
    assert_eq!(a.trust_anchors_pem(), bundle, "same anchor bytes");
    let certs = a.certificates().unwrap();
    assert_eq!(certs.len(), 1);
    assert_eq!(certs[0].serial, serial);
    assert_eq!(certs[0].record.identity.to_string(), "shop/web");
    assert_eq!(a.status(NOW).unwrap().certificates, 1);
}

#[test]
fn never_creates_a_ca_over_existing_data() {
    // Data but no CA, no marker.
    let dir = TempDir::new("id-noca");
    let store = Store::open(dir.path()).unwrap();
    store.table::<u32>("other").unwrap().put("k", &1).unwrap();
    let e = start(&store, settings()).err().unwrap();
    assert!(
        matches!(
            e,
            Error::NoCa {
                initialized: false,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("refusing to create a new CA"), "{e}");
    assert!(store.table::<CaState>("ca").unwrap().is_empty());

    // A marker but an empty database.
    let dir = TempDir::new("id-marker");
    let store = Store::open(dir.path()).unwrap();
    store.mark_initialized("x\n").unwrap();
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    let e = start(&store, settings()).err().unwrap();
    assert!(
        matches!(
            e,
            Error::NoCa {
                initialized: true,
                ..
            }
        ),
        "{e}"
    );
    assert!(store.table::<CaState>("ca").unwrap().is_empty());
}

#[test]
fn imports_on_first_start_only() {
    let own = CaState::generate(NOW).unwrap();
    let import = Some((
        own.anchors[0].cert_pem.clone(),
        own.issuer.cert_pem.clone(),
        own.issuer.key_pem.clone(),
    ));
    let dir = TempDir::new("id-import");
    {
        let store = Store::open(dir.path()).unwrap();
        let a = start(
            &store,
            Settings {
                import: import.clone(),
                ..settings()
            },
        )
        .unwrap();
        assert_eq!(a.trust_anchors_pem(), own.anchors[0].cert_pem);
        let rsp = a.certify(&request(&a, "a/b"), NOW).unwrap();
        assert_eq!(
            issuer_of_chain(&rsp.chain_pem).sha256,
            Ca::load(&own).unwrap().current.info.sha256
        );
    }
    // Other files on a later start are ignored: the database wins.
    let other = CaState::generate(NOW).unwrap();
    let other_import = Some((
        other.anchors[0].cert_pem.clone(),
        other.issuer.cert_pem.clone(),
        other.issuer.key_pem.clone(),
    ));
    let store = Store::open(dir.path()).unwrap();
    let a = start(
        &store,
        Settings {
            import: other_import,
            ..settings()
        },
    )
    .unwrap();
    assert_eq!(a.trust_anchors_pem(), own.anchors[0].cert_pem);
}

#[test]
fn certify_refusals_record_nothing() {
    let dir = TempDir::new("id-refuse");
    let store = Store::open(dir.path()).unwrap();
    let a = start(&store, settings()).unwrap();
    let good = request(&a, "shop/web");
    let code = |req: &CertifyRequest| a.certify(req, NOW).err().map(|e| (e.code(), e.status()));

    assert_eq!(
        code(&CertifyRequest {
            token: "pmt_nope".into(),
            ..good.clone()
        }),
        Some(("invalid_token", 401))
    );
    assert_eq!(
        code(&CertifyRequest {
            identity: "shop/db".parse().unwrap(),
            ..good.clone()
        }),
        Some(("identity_not_allowed", 403))
    );
    assert_eq!(
        code(&CertifyRequest {
            csr_pem: "garbage".into(),
            ..good.clone()
        }),
        Some(("bad_csr", 400))
    );
    assert_eq!(
        a.certify(&good, NOW + 11 * 24 * 3600)
            .err()
            .map(|e| e.code()),
        Some("token_expired")
    );
    let id = a.tokens().list(NOW).unwrap()[0].id.clone();
    a.tokens().revoke(&id, NOW).unwrap();
    assert_eq!(code(&good), Some(("token_revoked", 401)));
    assert_eq!(a.tokens().list(NOW).unwrap()[0].status, Status::Revoked);
    assert!(a.certificates().unwrap().is_empty(), "nothing issued");
}

#[test]
fn controller_cert_names_the_controller() {
    let dir = TempDir::new("id-own");
    let store = Store::open(dir.path()).unwrap();
    let a = start(&store, settings()).unwrap();
    let c = a.controller_cert(NOW).unwrap();
    assert_eq!(c.chain.len(), 2);
    assert_eq!(c.not_after_unix, NOW + 3600);
    let (_, x) = X509Certificate::from_der(&c.chain[0]).unwrap();
    let san = x.subject_alternative_name().unwrap().unwrap().value;
    let names: Vec<String> = san.general_names.iter().map(|n| n.to_string()).collect();
    assert_eq!(
        names,
        [
            "URI(spiffe://cluster.local/ns/pimesh/sa/pimesh-controller)",
            "DNSName(pimesh-controller.pimesh.serviceaccount.identity.pimesh.cluster.local)"
        ]
    );
    assert!(
        a.certificates().unwrap().is_empty(),
        "the controller's own cert is not a proxy's"
    );
}

#[test]
fn rotation_continues_across_restarts() {
    let dir = TempDir::new("id-rotate");
    let activate = NOW + 120;
    let (old_bundle, old_issuer) = {
        let store = Store::open(dir.path()).unwrap();
        let a = start(&store, settings()).unwrap();
        let before = a.status(NOW).unwrap();
        let before_pem = a.trust_anchors_pem();
        assert_eq!(before.stage, Stage::Stable);
        let mut changes = a.changes();
        let st = a.rotate(Duration::from_secs(120), NOW).unwrap();
        assert!(changes.has_changed().unwrap(), "the change is announced");
        changes.borrow_and_update();
        assert_eq!(st.stage, Stage::Pending);
        assert_eq!(st.anchors.len(), 2);
        assert_eq!(st.issuer, before.issuer, "the old issuer still signs");
        assert_eq!(a.next_activation(NOW), Some(activate));
        // A leaf signed by the old issuer while pending, valid for an hour.
        let rsp = a.certify(&request(&a, "shop/web"), NOW + 1).unwrap();
        assert_eq!(issuer_of_chain(&rsp.chain_pem), before.issuer);
        assert!(rsp.trust_anchors_pem.starts_with(&before_pem));
        assert!(rsp.trust_anchors_pem.len() > before_pem.len(), "old + new");
        (rsp.trust_anchors_pem, before.issuer)
    };
    // Restart mid-rotation: still pending, then the new issuer signs.
    let store = Store::open(dir.path()).unwrap();
    let a = start(&store, settings()).unwrap();
    assert_eq!(a.trust_anchors_pem(), old_bundle);
    assert_eq!(a.status(activate - 1).unwrap().stage, Stage::Pending);
    let st = a.status(activate).unwrap();
    assert_eq!(st.stage, Stage::Active);
    let rotation = st.rotation.unwrap();
    assert_eq!(rotation.old_issuer, old_issuer);
    assert_eq!(rotation.old_leaves_valid, 1);
    assert_eq!(rotation.old_leaves_valid_until_unix, Some(NOW + 1 + 3600));
    let rsp = a.certify(&request(&a, "shop/web"), activate).unwrap();
    assert_eq!(issuer_of_chain(&rsp.chain_pem), rotation.new_issuer);
    let own = a.controller_cert(activate).unwrap();
    assert_eq!(
        crate::crypto::hex(&crate::crypto::sha256(&own.chain[1])),
        rotation.new_issuer.sha256
    );

    // --finish waits for the old leaf to expire, unless forced.
    let e = a.finish_rotation(false, activate).err().unwrap();
    assert!(
        matches!(e, Error::Ca(ca::Error::OldLeavesValid { count: 1, .. })),
        "{e}"
    );
    assert!(
        a.rotate(Duration::ZERO, activate).is_err(),
        "one rotation at a time"
    );
    let done = a.finish_rotation(false, NOW + 1 + 3600).unwrap();
    assert_eq!(done.stage, Stage::Stable);
    assert_eq!(done.anchors.len(), 1);
    assert_eq!(done.issuer, rotation.new_issuer);
    assert!(
        old_bundle.ends_with(&a.trust_anchors_pem()),
        "the new anchor stays"
    );
    drop(a);
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    let a = start(&store, settings()).unwrap();
    assert_eq!(
        a.status(NOW + 7200).unwrap(),
        done,
        "the finished state persisted"
    );
}

#[test]
fn prune_drops_only_long_expired_records() {
    let dir = TempDir::new("id-prune");
    let store = Store::open(dir.path()).unwrap();
    let a = start(&store, settings()).unwrap();
    a.certify(&request(&a, "a/b"), NOW).unwrap();
    a.certify(&request(&a, "a/c"), NOW + 10 * 3600).unwrap();
    // The first expired at NOW + 3600: kept for the retention period.
    assert_eq!(a.prune(NOW + 3600 + RECORD_RETENTION_SECS).unwrap(), 0);
    assert_eq!(a.prune(NOW + 3601 + RECORD_RETENTION_SECS).unwrap(), 1);
    let left = a.certificates().unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].record.identity.to_string(), "a/c");
}
