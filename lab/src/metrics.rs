//! The proxies' golden metrics, read from their `/metrics` (Prometheus
//! text, linkerd2-proxy's names): requests and responses per direction,
//! how many of them crossed mTLS (`tls="true"`), successes and failures.
//! What the quick start prints until `pimesh stat` / `pimesh edges`
//! (telemetry) can show it from the controller.

use std::fmt::Write as _;

/// Sum of the samples of series `name` whose labels include all `labels`
/// (`name` matches exactly, before `{`).
pub fn sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            let series = l.split(['{', ' ']).next().unwrap_or("");
            series == name
                && labels
                    .iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, |a, b| a + b)
}

/// One proxy's golden figures for one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Golden {
    /// `request_total`.
    pub requests: f64,
    /// `request_total{tls="true"}`: requests that crossed mTLS.
    pub tls_requests: f64,
    /// `response_total{classification="success"}`.
    pub success: f64,
    /// `response_total{classification="failure"}`.
    pub failure: f64,
    /// `tcp_open_total{peer="src"}`: connections accepted (any protocol).
    pub tcp: f64,
    /// Connections that crossed mTLS: accepted with TLS (inbound) or
    /// opened with TLS to a peer proxy (outbound).
    pub tcp_tls: f64,
}

impl Golden {
    /// The figures of `direction` (`inbound` / `outbound`) in `text`.
    pub fn of(text: &str, direction: &str) -> Golden {
        let d = ("direction", direction);
        Golden {
            requests: sum(text, "request_total", &[d]),
            tls_requests: sum(text, "request_total", &[d, ("tls", "true")]),
            success: sum(text, "response_total", &[d, ("classification", "success")]),
            failure: sum(text, "response_total", &[d, ("classification", "failure")]),
            tcp: sum(text, "tcp_open_total", &[d, ("peer", "src")]),
            tcp_tls: sum(
                text,
                "tcp_open_total",
                &[
                    d,
                    ("peer", if direction == "inbound" { "src" } else { "dst" }),
                    ("tls", "true"),
                ],
            ),
        }
    }

    /// Success rate in percent (`-` without responses).
    pub fn success_rate(&self) -> String {
        let n = self.success + self.failure;
        if n == 0.0 {
            "-".into()
        } else {
            format!("{:.1}%", 100.0 * self.success / n)
        }
    }
}

/// A table of `(pod, metrics text)`: one line per pod and direction that
/// saw traffic.
pub fn table(pods: &[(String, String)]) -> String {
    let mut out = format!(
        "{:<12} {:<9} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8}\n",
        "POD", "DIRECTION", "REQUESTS", "MTLS", "SUCCESS", "FAILED", "TCP", "TCP_MTLS"
    );
    for (pod, text) in pods {
        let inbound = Golden::of(text, "inbound");
        let outbound = Golden::of(text, "outbound");
        for (dir, g) in [("inbound", inbound), ("outbound", outbound)] {
            // One line per pod at least; a direction without traffic only
            // when the other has none either (inbound).
            let other = if dir == "inbound" { outbound } else { inbound };
            let idle = |g: Golden| g.requests == 0.0 && g.tcp == 0.0;
            if idle(g) && (dir == "outbound" || !idle(other)) {
                continue;
            }
            let _ = writeln!(
                out,
                "{:<12} {:<9} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8}",
                pod,
                dir,
                g.requests,
                g.tls_requests,
                g.success_rate(),
                g.failure,
                g.tcp,
                g.tcp_tls
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_figures() {
        let text = "# HELP request_total x\n\
            request_total{direction=\"inbound\",tls=\"true\",target_addr=\"a\"} 7\n\
            request_total{direction=\"inbound\",tls=\"false\",target_addr=\"b\"} 3\n\
            response_total{direction=\"inbound\",tls=\"true\",classification=\"success\"} 6\n\
            response_total{direction=\"inbound\",tls=\"true\",classification=\"failure\"} 2\n\
            request_total_other{direction=\"inbound\"} 100\n";
        let g = Golden::of(text, "inbound");
        assert_eq!(
            (g.requests, g.tls_requests, g.success, g.failure),
            (10.0, 7.0, 6.0, 2.0)
        );
        assert_eq!(g.success_rate(), "75.0%");
        assert_eq!(Golden::of(text, "outbound").success_rate(), "-");
        let t = table(&[("web".into(), text.into())]);
        assert!(
            t.contains(
                "web          inbound          10         7    75.0%        2        0        0"
            ),
            "{t}"
        );
    }
}
