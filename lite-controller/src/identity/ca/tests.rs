//! Unit tests of CA generation, import, issuance and rotation stages;
//! certificates are checked by parsing them with x509-parser.

use super::*;
use crate::identity::csr::tests::csr_pem;
use crate::identity::csr::{self, CsrKey};
use crate::identity::pem::{certs_from_pem, pem_encode};
use x509_parser::extensions::{GeneralName, ParsedExtension};

const TD: &str = "cluster.local";
const NOW: u64 = 1_750_000_000;

fn key() -> CsrKey {
    key_pair().1
}

/// A fresh key and the parsed CSR for it (asking for names the CA ignores).
fn key_pair() -> (KeyPair, CsrKey) {
    let (kp, pem) = csr_pem(
        &rcgen::PKCS_ECDSA_P256_SHA256,
        &["ignored.example", "10.0.0.1"],
    );
    (kp, csr::parse(&pem).unwrap())
}

fn id(s: &str) -> Identity {
    s.parse().unwrap()
}

fn der_of(pem: &str) -> Vec<u8> {
    certs_from_pem(pem, "test").unwrap().remove(0)
}

/// Whether `child` (DER) is signed by the key of `parent` (DER).
fn signed_by(child: &[u8], parent: &[u8]) -> bool {
    let (_, c) = X509Certificate::from_der(child).unwrap();
    let (_, p) = X509Certificate::from_der(parent).unwrap();
    c.verify_signature(Some(p.public_key())).is_ok()
}

#[test]
fn generates_anchor_and_issuer() {
    let state = CaState::generate(NOW).unwrap();
    let ca = Ca::load(&state).unwrap();
    assert_eq!(ca.anchors.len(), 1);
    assert_eq!(state.stage(NOW), Stage::Stable);
    let anchor = der_of(&state.anchors[0].cert_pem);
    let issuer = der_of(&state.issuer.cert_pem);
    assert!(signed_by(&anchor, &anchor), "the anchor is self-signed");
    assert!(signed_by(&issuer, &anchor));
    let (_, a) = X509Certificate::from_der(&anchor).unwrap();
    let (_, i) = X509Certificate::from_der(&issuer).unwrap();
    assert!(a.is_ca() && i.is_ca());
    let bc = i.basic_constraints().unwrap().unwrap().value;
    assert_eq!(bc.path_len_constraint, Some(0));
    assert_ne!(a.subject(), i.subject());
    let year = ANCHOR_LIFETIME.as_secs();
    assert_eq!(ca.anchors[0].not_after_unix, NOW + year);
    assert_eq!(
        ca.current.info.not_after_unix,
        NOW + ISSUER_LIFETIME.as_secs()
    );
    assert_eq!(ca.bundle_pem, state.anchors[0].cert_pem);
    // Keys are P-256 and never in Debug output.
    assert!(state.anchors[0]
        .key_pem
        .as_deref()
        .unwrap()
        .contains("PRIVATE KEY"));
    assert!(!format!("{state:?}").contains("PRIVATE"));
}

#[test]
fn issues_a_leaf_for_exactly_the_identity() {
    let ca = Ca::load(&CaState::generate(NOW).unwrap()).unwrap();
    let lifetime = Duration::from_secs(24 * 3600);
    let (kp, csr_key) = key_pair();
    let leaf = ca
        .signer(NOW)
        .issue(&csr_key, &id("shop/web"), TD, lifetime, NOW)
        .unwrap();
    let (_, x) = X509Certificate::from_der(&leaf.der).unwrap();
    assert_eq!(x.validity().not_after.timestamp() as u64, NOW + 24 * 3600);
    assert_eq!(leaf.not_after_unix, NOW + 24 * 3600);
    assert_eq!(
        x.validity().not_before.timestamp() as u64,
        NOW - LEAF_BACKDATE_SECS
    );
    assert_eq!(crypto::hex(x.raw_serial()), leaf.serial);
    assert_eq!(leaf.serial.len(), 32);
    assert!(!x.is_ca());
    let mut uris = Vec::new();
    let mut dns = Vec::new();
    for ext in x.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                for n in &san.general_names {
                    match n {
                        GeneralName::URI(u) => uris.push(u.to_string()),
                        GeneralName::DNSName(d) => dns.push(d.to_string()),
                        other => panic!("unexpected SAN {other:?}"),
                    }
                }
            }
            ParsedExtension::KeyUsage(ku) => {
                assert!(ext.critical, "key usage is critical (SPIFFE X509-SVID)");
                assert!(ku.digital_signature() && !ku.key_cert_sign());
            }
            ParsedExtension::ExtendedKeyUsage(eku) => {
                assert!(eku.server_auth && eku.client_auth && !eku.any);
            }
            ParsedExtension::BasicConstraints(bc) => assert!(!bc.ca),
            _ => {}
        }
    }
    assert_eq!(uris, ["spiffe://cluster.local/ns/shop/sa/web"]);
    assert_eq!(
        dns,
        ["web.shop.serviceaccount.identity.pimesh.cluster.local"]
    );
    assert!(signed_by(&leaf.der, &der_of(&ca.current.cert_pem)));
    // The leaf certifies the CSR's key.
    assert_eq!(
        &*x.public_key().subject_public_key.data,
        kp.public_key_raw()
    );
    let other = ca
        .signer(NOW)
        .issue(&key(), &id("shop/web"), TD, lifetime, NOW)
        .unwrap();
    assert_ne!(other.serial, leaf.serial);
}

#[test]
fn short_lifetimes_and_issuer_expiry() {
    let state = CaState::generate(NOW).unwrap();
    let ca = Ca::load(&state).unwrap();
    let s = ca.signer(NOW);
    let leaf = s
        .issue(&key(), &id("a/b"), TD, Duration::from_secs(2), NOW)
        .unwrap();
    let (_, x) = X509Certificate::from_der(&leaf.der).unwrap();
    assert_eq!(x.validity().not_before.timestamp() as u64, NOW - 2);
    assert_eq!(x.validity().not_after.timestamp() as u64, NOW + 2);
    // Never past the issuer's notAfter.
    let late = s.info.not_after_unix - 10;
    let leaf = s
        .issue(&key(), &id("a/b"), TD, Duration::from_secs(3600), late)
        .unwrap();
    assert_eq!(leaf.not_after_unix, s.info.not_after_unix);
    let e = s
        .issue(
            &key(),
            &id("a/b"),
            TD,
            Duration::from_secs(60),
            s.info.not_after_unix,
        )
        .unwrap_err();
    assert!(matches!(e, Error::IssuerExpired { .. }), "{e}");
}

#[test]
fn imports_an_operators_ca_and_checks_it() {
    let g = CaState::generate(NOW).unwrap();
    let other = CaState::generate(NOW).unwrap();
    let (anchor, issuer, ikey) = (
        &g.anchors[0].cert_pem,
        &g.issuer.cert_pem,
        &g.issuer.key_pem,
    );
    let imported = CaState::import(anchor, issuer, ikey, NOW).unwrap();
    assert_eq!(imported.anchors[0].key_pem, None);
    let ca = Ca::load(&imported).unwrap();
    assert_eq!(ca.bundle_pem, *anchor);
    // Two anchors in one file: both in the bundle.
    let two = format!("{anchor}{}", other.anchors[0].cert_pem);
    assert_eq!(
        Ca::load(&CaState::import(&two, issuer, ikey, NOW).unwrap())
            .unwrap()
            .anchors
            .len(),
        2
    );

    let err = |a: &str, i: &str, k: &str, now: u64| {
        CaState::import(a, i, k, now).unwrap_err().to_string()
    };
    assert!(err(anchor, issuer, &other.issuer.key_pem, NOW).contains("does not match"));
    assert!(err(&other.anchors[0].cert_pem, issuer, ikey, NOW).contains("not signed by"));
    assert!(err(anchor, issuer, ikey, NOW + 2 * 365 * 24 * 3600).contains("expired"));
    assert!(err("garbage", issuer, ikey, NOW).contains("--trust-anchor-pem"));
    assert!(err(anchor, issuer, "garbage", NOW).contains("PKCS#8"));
    assert!(err(anchor, ikey, ikey, NOW).contains("PRIVATE KEY"));
    // A leaf is not an anchor.
    let leaf = Ca::load(&g)
        .unwrap()
        .current
        .issue(&key(), &id("a/b"), TD, Duration::from_secs(60), NOW)
        .unwrap();
    assert!(err(&leaf.pem, issuer, ikey, NOW).contains("not signed by"));
    assert!(err(&format!("{anchor}{}", leaf.pem), issuer, ikey, NOW).contains("not a CA"));
}

#[test]
fn rotation_stages() {
    let s0 = CaState::generate(NOW).unwrap();
    let ca0 = Ca::load(&s0).unwrap();
    assert!(matches!(
        s0.finish_rotation(NOW, None, false),
        Err(Error::NoRotation)
    ));

    let s1 = s0.start_rotation(NOW, Duration::from_secs(120)).unwrap();
    let ca1 = Ca::load(&s1).unwrap();
    let activate = NOW + 120;
    assert_eq!(s1.stage(NOW), Stage::Pending);
    assert_eq!(s1.stage(activate - 1), Stage::Pending);
    assert_eq!(s1.stage(activate), Stage::Active);
    // The bundle has old + new at once; the old issuer signs until activation.
    assert_eq!(ca1.anchors.len(), 2);
    assert_eq!(ca1.anchors[0], ca0.anchors[0]);
    assert!(ca1.bundle_pem.starts_with(&ca0.bundle_pem));
    assert_eq!(ca1.signer(activate - 1).info, ca0.current.info);
    let next = ca1.next.as_ref().unwrap();
    assert_eq!(ca1.signer(activate).info, next.info);
    let new_anchor = der_of(&s1.rotation.as_ref().unwrap().anchor.cert_pem);
    assert!(signed_by(&der_of(&next.cert_pem), &new_anchor));
    let leaf = ca1
        .signer(activate)
        .issue(&key(), &id("a/b"), TD, Duration::from_secs(60), activate)
        .unwrap();
    assert!(signed_by(&leaf.der, &der_of(&next.cert_pem)));

    assert!(matches!(
        s1.start_rotation(NOW + 1, Duration::ZERO),
        Err(Error::RotationInProgress { activate_unix }) if activate_unix == activate
    ));
    assert!(matches!(
        s1.finish_rotation(activate - 1, None, false),
        Err(Error::NotActiveYet { .. })
    ));
    assert!(matches!(
        s1.finish_rotation(activate, Some((3, activate + 50)), false),
        Err(Error::OldLeavesValid { count: 3, until_unix }) if until_unix == activate + 50
    ));
    let s2 = s1.finish_rotation(activate, Some((0, 0)), false).unwrap();
    let ca2 = Ca::load(&s2).unwrap();
    assert_eq!(s2.stage(activate), Stage::Stable);
    assert_eq!(ca2.anchors, vec![ca1.anchors[1].clone()]);
    assert_eq!(ca2.current.info, next.info);
    assert_eq!(s2.created_unix, NOW);
    // Forced: before activation and with old leaves outstanding.
    let forced = s1
        .finish_rotation(NOW, Some((3, activate + 50)), true)
        .unwrap();
    assert_eq!(forced, s2);
}

#[test]
fn refuses_to_generate_with_an_unset_clock() {
    // A Pi without RTC before NTP: 1970 plus the uptime.
    let e = CaState::generate(120).unwrap_err();
    assert!(matches!(e, Error::ClockNotSet { now_unix: 120 }), "{e}");
    let s = CaState::generate(NOW).unwrap();
    assert!(matches!(
        s.start_rotation(EARLIEST_PLAUSIBLE_UNIX - 1, Duration::ZERO),
        Err(Error::ClockNotSet { .. })
    ));
    assert!(CaState::generate(EARLIEST_PLAUSIBLE_UNIX).is_ok());
}

#[test]
fn stored_state_round_trips_and_is_checked_on_load() {
    let s = CaState::generate(NOW)
        .unwrap()
        .start_rotation(NOW, Duration::from_secs(5))
        .unwrap();
    let json = serde_json::to_vec(&s).unwrap();
    let back: CaState = serde_json::from_slice(&json).unwrap();
    assert_eq!(back, s);
    assert_eq!(
        Ca::load(&back).unwrap().bundle_pem,
        Ca::load(&s).unwrap().bundle_pem
    );
    // A swapped key is detected.
    let mut bad = s.clone();
    bad.issuer.key_pem = s.rotation.as_ref().unwrap().issuer.key_pem.clone();
    assert!(Ca::load(&bad)
        .unwrap_err()
        .to_string()
        .contains("does not match"));
}

#[test]
fn pem_encoding_round_trips() {
    let s = CaState::generate(NOW).unwrap();
    let der = der_of(&s.issuer.cert_pem);
    assert_eq!(pem_encode(&der), s.issuer.cert_pem);
}
