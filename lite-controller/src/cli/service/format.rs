//! What `pimesh service` prints: the `ls` table, `get` details, summaries.

use crate::cli::format_time;
use crate::registry::model::ServiceInfo;
use pimesh_api::discovery::ServicePolicy;

/// `web.shop.svc.cluster.local: 2 endpoints, ports 80 (revision 7)`.
pub fn summary(info: &ServiceInfo) -> String {
    format!(
        "{}: {} endpoint(s), ports {} (revision {})",
        info.fqdn,
        info.endpoints.len(),
        join(&info.ports),
        info.revision
    )
}

fn join(ports: &[u16]) -> String {
    let v: Vec<String> = ports.iter().map(u16::to_string).collect();
    if v.is_empty() {
        "-".into()
    } else {
        v.join(",")
    }
}

/// `timeout=2000ms retries=3 ...`, or `defaults`.
pub fn policy_text(p: &ServicePolicy) -> String {
    let v = serde_json::to_value(p).unwrap_or_default();
    let parts: Vec<String> = v
        .as_object()
        .map(|o| o.iter().map(|(k, v)| format!("{k}={v}")).collect())
        .unwrap_or_default();
    if parts.is_empty() {
        "defaults".into()
    } else {
        parts.join(" ")
    }
}

/// Rows padded to their widest cell, two spaces apart.
fn table(rows: Vec<Vec<String>>) -> String {
    let n = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..n)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// The `service ls` table.
pub fn list_table(list: &[ServiceInfo]) -> String {
    let mut rows = vec![["NAMESPACE", "NAME", "PORTS", "ENDPOINTS", "REVISION"]
        .map(String::from)
        .to_vec()];
    for s in list {
        rows.push(vec![
            s.namespace.clone(),
            s.name.clone(),
            join(&s.ports),
            s.endpoints.len().to_string(),
            s.revision.to_string(),
        ]);
    }
    table(rows)
}

/// `service get`: header, policy, then the endpoints table.
pub fn details(s: &ServiceInfo) -> String {
    let mut out = format!(
        "{}  ports {}  revision {}\npolicy: {}\n",
        s.fqdn,
        join(&s.ports),
        s.revision,
        policy_text(&s.policy)
    );
    let mut rows = vec![[
        "PORT",
        "ADDR",
        "PROXY",
        "IDENTITY",
        "SOURCE",
        "LEASE EXPIRES",
        "LABELS",
    ]
    .map(String::from)
    .to_vec()];
    for e in &s.endpoints {
        let ep = &e.endpoint;
        let labels: Vec<String> = ep
            .labels
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "namespace" | "service"))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let dash = |o: Option<String>| o.unwrap_or_else(|| "-".into());
        rows.push(vec![
            e.port.to_string(),
            ep.addr.to_string(),
            dash(ep.proxy_addr.map(|a| a.to_string())),
            dash(ep.identity.as_ref().map(|i| i.to_string())),
            e.source.as_str().into(),
            dash(e.lease_expires_unix.map(format_time)),
            if labels.is_empty() {
                "-".into()
            } else {
                labels.join(",")
            },
        ]);
    }
    out.push_str(&table(rows));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_and_tables() {
        assert_eq!(policy_text(&ServicePolicy::default()), "defaults");
        let p = ServicePolicy {
            timeout_ms: Some(2000),
            retry_limit: Some(3),
            ..Default::default()
        };
        assert_eq!(policy_text(&p), "retry_limit=3 timeout_ms=2000");
        assert_eq!(
            table(vec![
                vec!["A".into(), "BB".into()],
                vec!["ccc".into(), "d".into()]
            ]),
            "A    BB\nccc  d\n"
        );
    }
}
