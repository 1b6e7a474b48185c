use super::*;
use crate::telemetry::parse::parse;
use crate::telemetry::state::TargetState;

/// A target of workload `deploy` that scraped `text(1)` then `text(2)`.
fn target(labels: &[(&str, &str)], text: impl Fn(u64) -> String) -> TargetState {
    let mut t = TargetState::default();
    t.listed = true;
    for (k, v) in labels {
        t.given.insert(k.to_string(), v.to_string());
    }
    t.record(parse(&text(1)).unwrap(), 1_000, 10_000, 100);
    t.record(parse(&text(2)).unwrap(), 11_000, 10_000, 100);
    t
}

const WEB_ID: &str = "web.shop.serviceaccount.identity.pimesh.cluster.local";
const GEN_ID: &str = "gen.shop.serviceaccount.identity.pimesh.cluster.local";

fn targets() -> Targets {
    // web: 100 inbound requests per scrape from gen over mTLS, 10 failed.
    let web = target(
        &[
            ("namespace", "shop"),
            ("deployment", "web"),
            ("service", "web"),
        ],
        |n| {
            format!(
            "request_total{{direction=\"inbound\",tls=\"true\",client_id=\"{GEN_ID}\"}} {}\n\
             response_total{{direction=\"inbound\",tls=\"true\",client_id=\"{GEN_ID}\",classification=\"success\"}} {}\n\
             response_total{{direction=\"inbound\",tls=\"true\",client_id=\"{GEN_ID}\",classification=\"failure\"}} {}\n",
            n * 100,
            n * 90,
            n * 10
        )
        },
    );
    // gen: the same requests seen outbound, destination named by discovery.
    let gen = target(
        &[
            ("namespace", "shop"),
            ("deployment", "gen"),
            ("identity", "shop/gen"),
        ],
        |n| {
            format!(
            "request_total{{direction=\"outbound\",tls=\"true\",server_id=\"{WEB_ID}\",dst_namespace=\"shop\",dst_deployment=\"web\",dst_service=\"web\"}} {}\n",
            n * 100
        )
        },
    );
    let mut ts = Targets::new();
    ts.insert("127.0.0.1:1".parse().unwrap(), web);
    ts.insert("127.0.0.1:2".parse().unwrap(), gen);
    ts
}

#[test]
fn stat_groups_and_rates() {
    let ts = targets();
    let all = Filter::default();
    let rows = stat(&ts, Resource::Deployment, &all, 11_000, 60_000);
    assert_eq!(rows.len(), 2);
    let web = rows.iter().find(|r| r.name == "web").unwrap();
    assert_eq!((web.requests, web.successes, web.failures), (100, 90, 10));
    assert_eq!(
        web.rps,
        Some(10.0),
        "100 requests over the 10 s the points cover"
    );
    assert_eq!(web.success, Some(0.9));
    assert_eq!(web.meshed, "1/1", "scraped successfully");
    let svc = stat(&ts, Resource::Service, &all, 11_000, 60_000);
    assert_eq!(svc.len(), 1, "gen has no service label");
    let only = Filter {
        namespace: Some("shop".into()),
        name: Some("gen".into()),
    };
    assert_eq!(
        stat(&ts, Resource::Deployment, &only, 11_000, 60_000).len(),
        1
    );
    let other = Filter {
        namespace: Some("other".into()),
        name: None,
    };
    assert!(stat(&ts, Resource::Deployment, &other, 11_000, 60_000).is_empty());
    // A window that ends before the points: nothing in it.
    let early = stat(&ts, Resource::Deployment, &all, 5_000, 1_000);
    assert!(early.iter().all(|r| r.requests == 0 && r.rps.is_none()));
}

#[test]
fn edges_merge_both_ends() {
    let ts = targets();
    let rows = edges(
        &ts,
        Resource::Deployment,
        &Filter::default(),
        "cluster.local",
        11_000,
        60_000,
    );
    assert_eq!(rows.len(), 1, "{rows:?}");
    let e = &rows[0];
    assert_eq!((e.src.as_str(), e.dst.as_str()), ("gen", "web"));
    assert_eq!(
        (e.src_namespace.as_str(), e.dst_namespace.as_str()),
        ("shop", "shop")
    );
    assert_eq!(e.client_id, GEN_ID);
    assert_eq!(e.server_id, WEB_ID, "from gen's outbound view");
    assert!(e.secured);
    assert_eq!(e.requests, 100);
    assert_eq!(e.success, Some(0.9), "the server's counts");
    // By service: the destination from dst_service.
    let rows = edges(
        &ts,
        Resource::Service,
        &Filter::default(),
        "cluster.local",
        11_000,
        60_000,
    );
    assert!(rows.iter().all(|r| r.dst == "web"), "{rows:?}");
}
