//! `report.md`: the targets next to the measured figures, then every step,
//! the proxies at rest, the idle connections, the ratios to peers and (with
//! `--baseline`) to an earlier run, as Markdown tables.

use crate::baseline::CompareRow;
use crate::report::{Report, Run, BUSY_CPUS};
use std::fmt::Write;

/// The whole `report.md`.
pub fn render(r: &Report, baseline: Option<(&str, &[CompareRow])>) -> String {
    let mut o = String::new();
    let s = &r.settings;
    let _ = writeln!(o, "# pimesh-bench report\n");
    let limits = match &s.cgroup {
        Some(v) => format!(
            "each proxy in a cgroup {v}: {} MiB memory, {} CPU",
            num(s.memory_bytes as f64 / 1048576.0),
            s.cpus
        ),
        None => "proxies without limits (--no-cgroup)".into(),
    };
    let _ = writeln!(
        o,
        "{} · {}, {} CPUs, Linux {} · upstream {} · payload {} B · {} s per step · {} connections (h1) / streams (h2) · {}{}\n",
        r.tool,
        r.machine.arch,
        r.machine.cpus,
        r.machine.kernel,
        s.upstream,
        s.payload_bytes,
        s.step_seconds,
        s.conns,
        limits,
        if s.short { " · short mode" } else { "" },
    );
    if r.machine.emulated {
        let _ = writeln!(
            o,
            "> **Emulated (qemu user mode): every timing and memory figure below is meaningless; this run checks correctness only.**\n"
        );
    }

    let _ = writeln!(o, "## Targets (issue 7)\n");
    table(&mut o, &["figure", "measured", "target", "met", "note"]);
    for t in &r.targets {
        let measured = t
            .measured
            .map_or("—".into(), |v| format!("{} {}", num(v), t.unit));
        let met = match t.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "—",
        };
        row(&mut o, &[&t.figure, &measured, &t.target, met, &t.note]);
    }

    let _ = writeln!(o, "\n## Latency, rate and cost\n");
    let _ = writeln!(
        o,
        "Latency from the intended send time (open loop) at fixed rates; from the send at saturation (closed loop, {} lanes). CPU: all proxies of the path, user + system, per successful request. Peak RSS: VmHWM of the largest proxy process during the step. Others' CPUs: what processes outside the benchmark used meanwhile (bold: noisy).\n",
        s.conns
    );
    let noisy = r
        .runs
        .iter()
        .flat_map(|r| &r.steps)
        .filter(|st| st.other_cpus.is_some_and(|o| o >= BUSY_CPUS))
        .count();
    if noisy > 0 {
        let _ = writeln!(
            o,
            "> {noisy} step(s) shared the machine with other work: their figures are noisy.\n"
        );
    }
    table(
        &mut o,
        &[
            "protocol",
            "scenario",
            "proxy",
            "load",
            "achieved rps",
            "p50 µs",
            "p90 µs",
            "p99 µs",
            "p99.9 µs",
            "errors",
            "CPU µs/req",
            "peak RSS MiB",
            "throttled",
            "others' CPUs",
        ],
    );
    for run in &r.runs {
        for st in &run.steps {
            let load = match st.target_rps {
                Some(rate) => format!("{} rps", num(rate)),
                None => "saturation".into(),
            };
            let errors = if st.missed > 0 {
                format!("{} (+{} unsent)", st.errors, st.missed)
            } else {
                st.errors.to_string()
            };
            let l = &st.latency_us;
            row(
                &mut o,
                &[
                    run.protocol.as_str(),
                    run.scenario.as_str(),
                    &run.proxy,
                    &load,
                    &num(st.achieved_rps),
                    &num(l.p50),
                    &num(l.p90),
                    &num(l.p99),
                    &num(l.p999),
                    &errors,
                    &opt(st.cpu_us_per_request),
                    &st.peak_rss_kib().map_or("—".into(), |k| mib(k as f64)),
                    &st.throttling
                        .map_or("—".into(), |t| format!("{}/{}", t.throttled, t.periods)),
                    &match st.other_cpus {
                        Some(o) if o >= BUSY_CPUS => format!("**{}**", num(o)),
                        o => opt(o),
                    },
                ],
            );
        }
    }

    let _ = writeln!(o, "\n## Proxies at rest\n");
    table(
        &mut o,
        &[
            "protocol",
            "scenario",
            "proxy",
            "process",
            "idle RSS MiB",
            "OOM kills",
            "mTLS requests",
        ],
    );
    for run in r.runs.iter().filter(|r| !r.processes.is_empty()) {
        for p in &run.processes {
            row(
                &mut o,
                &[
                    run.protocol.as_str(),
                    run.scenario.as_str(),
                    &run.proxy,
                    &p.role,
                    &mib(p.idle_rss_kib as f64),
                    &run.oom_kills.to_string(),
                    &run.mtls_requests.map_or("—".into(), |n| n.to_string()),
                ],
            );
        }
    }

    if !r.idle_conns.is_empty() {
        let _ = writeln!(o, "\n## Idle connections\n");
        table(
            &mut o,
            &[
                "proxy",
                "open / asked",
                "each connection",
                "RSS before MiB",
                "RSS with them MiB",
                "bytes per connection",
                "OOM kills",
                "proxy ended",
            ],
        );
        for f in &r.idle_conns {
            row(
                &mut o,
                &[
                    &f.proxy,
                    &format!("{} / {}", f.open, f.requested),
                    &f.mode,
                    &mib(f.rss_before_kib as f64),
                    &mib(f.rss_kib as f64),
                    &opt(f.bytes_per_conn),
                    &f.oom_kills.to_string(),
                    f.died.as_deref().unwrap_or("—"),
                ],
            );
        }
    }

    peer_ratios(&mut o, r);

    if let Some((file, rows)) = baseline {
        let _ = writeln!(o, "\n## Against baseline `{file}` (new / old)\n");
        table(&mut o, &["figure", "old", "new", "new / old"]);
        for c in rows {
            row(
                &mut o,
                &[
                    &c.figure,
                    &num(c.old),
                    &num(c.new),
                    &format!("{:.2}", c.ratio()),
                ],
            );
        }
    }

    let failed: Vec<&Run> = r.runs.iter().filter(|r| r.failure.is_some()).collect();
    if !failed.is_empty() {
        let _ = writeln!(o, "\n## Failures\n");
        for run in failed {
            let why = run
                .failure
                .as_deref()
                .unwrap_or("")
                .lines()
                .next()
                .unwrap_or("");
            let _ = writeln!(
                o,
                "- {} {} {}: {}",
                run.protocol.as_str(),
                run.scenario.as_str(),
                run.proxy,
                why
            );
        }
    }
    o
}

/// pimesh / peer for each peer in the inbound scenario.
fn peer_ratios(o: &mut String, r: &Report) {
    let peers: Vec<&Run> = r
        .runs
        .iter()
        .filter(|p| p.scenario == crate::config::Scenario::Inbound && p.proxy != "pimesh")
        .filter(|p| p.failure.is_none() && !p.steps.is_empty())
        .collect();
    if peers.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "\n## Ratios to peers (inbound hop; pimesh / peer, below 1: pimesh uses less)\n"
    );
    table(
        o,
        &[
            "protocol",
            "peer",
            "figure",
            "pimesh",
            "peer",
            "pimesh / peer",
        ],
    );
    for peer in peers {
        let Some(ours) = r.run("pimesh", peer.scenario, peer.protocol) else {
            continue;
        };
        let mut figures: Vec<(String, Option<f64>, Option<f64>)> = vec![(
            "idle RSS MiB".into(),
            ours.processes
                .first()
                .map(|p| p.idle_rss_kib as f64 / 1024.0),
            peer.processes
                .first()
                .map(|p| p.idle_rss_kib as f64 / 1024.0),
        )];
        for st in &ours.steps {
            let theirs = peer
                .steps
                .iter()
                .find(|s| s.mode == st.mode && s.target_rps == st.target_rps);
            let load = st
                .target_rps
                .map_or("saturation".into(), |v| format!("{} rps", num(v)));
            figures.push((
                format!("p99 µs at {load}"),
                Some(st.latency_us.p99),
                theirs.map(|s| s.latency_us.p99),
            ));
            figures.push((
                format!("CPU µs/req at {load}"),
                st.cpu_us_per_request,
                theirs.and_then(|s| s.cpu_us_per_request),
            ));
            if st.target_rps.is_none() {
                figures.push((
                    "saturation rps".into(),
                    Some(st.achieved_rps),
                    theirs.map(|s| s.achieved_rps),
                ));
            }
        }
        for (figure, a, b) in figures {
            let ratio = match (a, b) {
                (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
                _ => "—".into(),
            };
            row(
                o,
                &[
                    peer.protocol.as_str(),
                    &peer.proxy,
                    &figure,
                    &opt(a),
                    &opt(b),
                    &ratio,
                ],
            );
        }
    }
}

fn table(o: &mut String, headers: &[&str]) {
    row(o, headers);
    let _ = writeln!(o, "|{}", " --- |".repeat(headers.len()));
}

fn row(o: &mut String, cells: &[&str]) {
    o.push('|');
    for c in cells {
        let _ = write!(o, " {} |", c.replace('|', "\\|").replace('\n', " "));
    }
    o.push('\n');
}

/// A figure with sensible precision: 3 significant digits below 100.
pub fn num(v: f64) -> String {
    if !v.is_finite() {
        return "—".into();
    }
    let a = v.abs();
    if a >= 100.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or("—".into(), num)
}

fn mib(kib: f64) -> String {
    format!("{:.2}", kib / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every table row has as many cells as its header.
    pub fn tables_are_rectangular(md: &str) -> bool {
        let mut cols = None;
        for line in md.lines() {
            if !line.starts_with('|') {
                cols = None;
                continue;
            }
            let n = line.replace("\\|", "").matches('|').count();
            match cols {
                None => cols = Some(n),
                Some(c) if c != n => return false,
                _ => {}
            }
        }
        true
    }

    #[test]
    fn renders_targets_steps_and_peer_ratios() {
        let mut r = crate::report::tests::sample();
        r.compute_targets();
        let md = render(&r, None);
        assert!(
            md.contains("| pimesh-proxy idle RSS, meshed | 3.50 MiB | ≤ 4 MiB | yes |"),
            "{md}"
        );
        assert!(
            md.contains(
                "| controller RSS with 100 proxies registered and scraped | 22.0 MiB | ≤ 20 MiB | **no** |"
            ),
            "{md}"
        );
        assert!(md.contains("≤ 20 µs (0.5× linkerd2-proxy)"));
        assert!(md.contains("| h1 | inbound | pimesh | saturation |"));
        assert!(
            md.contains("| h1 | haproxy | CPU µs/req at saturation | 18.0 | 24.0 | 0.75 |"),
            "{md}"
        );
        assert!(!md.contains("Emulated"));
        assert!(tables_are_rectangular(&md), "{md}");
        r.machine.emulated = true;
        assert!(render(&r, None).contains("meaningless"));
    }

    #[test]
    fn the_rectangle_check_catches_a_ragged_table() {
        assert!(!tables_are_rectangular("| a | b |\n| --- | --- |\n| 1 |\n"));
    }

    #[test]
    fn numbers() {
        assert_eq!(num(1234.5), "1234");
        assert_eq!(num(12.345), "12.3");
        assert_eq!(num(1.2345), "1.23");
        assert_eq!(num(0.12345), "0.123");
        assert_eq!(num(0.0), "0");
    }
}
