//! The targets of issue 7 next to what the run measured: idle RSS, peak
//! RSS at 1,000 rps, CPU per request at saturation, the mesh's p99 over the
//! direct path's, and the RSS of 10,000 idle connections.

use super::{Report, Run, TargetRow};
use crate::config::{Protocol, Scenario};

const MIB: f64 = 1024.0;

impl Report {
    /// Computes [`Report::targets`] from the runs.
    pub fn compute_targets(&mut self) {
        let mut rows = Vec::new();
        let pimesh = || self.runs.iter().filter(|r| r.proxy == "pimesh");
        let meaningful = |v: Option<f64>, ok: &dyn Fn(f64) -> bool| {
            if self.machine.emulated {
                None
            } else {
                v.map(ok)
            }
        };

        // Idle RSS: the largest pimesh process at rest, plain or meshed.
        let idle = pimesh()
            .flat_map(|r| r.processes.iter().map(move |p| (r, p)))
            .max_by_key(|(_, p)| p.idle_rss_kib);
        let v = idle.map(|(_, p)| p.idle_rss_kib as f64 / MIB);
        rows.push(TargetRow {
            figure: "pimesh-proxy idle RSS".into(),
            measured: v,
            unit: "MiB".into(),
            target: "≤ 3 MiB".into(),
            met: meaningful(v, &|v| v <= 3.0),
            note: idle.map_or(String::new(), |(r, p)| {
                format!(
                    "largest at rest: {} {} {}",
                    r.protocol.as_str(),
                    r.scenario.as_str(),
                    p.role
                )
            }),
        });

        // Peak RSS at 1,000 rps.
        let peak = pimesh()
            .flat_map(|r| r.steps.iter().map(move |s| (r, s)))
            .filter(|(_, s)| s.target_rps == Some(1000.0))
            .filter_map(|(r, s)| Some((r, s.peak_rss_kib()?)))
            .max_by_key(|(_, kib)| *kib);
        let v = peak.map(|(_, kib)| kib as f64 / MIB);
        rows.push(TargetRow {
            figure: "pimesh-proxy peak RSS at 1,000 rps".into(),
            measured: v,
            unit: "MiB".into(),
            target: "≤ 6 MiB".into(),
            met: meaningful(v, &|v| v <= 6.0),
            note: match peak {
                Some((r, _)) => format!(
                    "VmHWM, largest: {} {}",
                    r.protocol.as_str(),
                    r.scenario.as_str()
                ),
                None => "no 1,000 rps step (--rates)".into(),
            },
        });

        for protocol in [Protocol::H1, Protocol::H2] {
            // CPU per request at saturation, one inbound hop.
            let Some(inbound) = self.run("pimesh", Scenario::Inbound, protocol) else {
                continue;
            };
            let sat = |r: &Run| {
                r.steps
                    .iter()
                    .find(|s| s.mode == "saturation")
                    .and_then(|s| s.cpu_us_per_request)
            };
            let v = sat(inbound);
            let peers: Vec<String> = self
                .runs
                .iter()
                .filter(|r| {
                    r.scenario == Scenario::Inbound && r.protocol == protocol && r.proxy != "pimesh"
                })
                .filter_map(|r| Some(format!("{} {:.1} µs", r.proxy, sat(r)?)))
                .collect();
            rows.push(TargetRow {
                figure: format!(
                    "CPU per request at saturation, inbound hop ({})",
                    protocol.as_str()
                ),
                measured: v,
                unit: "µs".into(),
                target: "≤ 20 µs (0.5× linkerd2-proxy)".into(),
                met: meaningful(v, &|v| v <= 20.0),
                note: if peers.is_empty() {
                    "no peers run".into()
                } else {
                    format!("peers: {}", peers.join(", "))
                },
            });
        }

        for protocol in [Protocol::H1, Protocol::H2] {
            let p99 = |scenario| {
                self.run(
                    if scenario == Scenario::Direct {
                        "none"
                    } else {
                        "pimesh"
                    },
                    scenario,
                    protocol,
                )?
                .steps
                .iter()
                .find(|s| s.target_rps == Some(1000.0) && s.requests > 0)
                .map(|s| s.latency_us.p99)
            };
            let (Some(mesh), Some(direct)) = (p99(Scenario::Mesh), p99(Scenario::Direct)) else {
                continue;
            };
            let v = (mesh - direct) / 1e3;
            rows.push(TargetRow {
                figure: format!("mesh p99 − direct p99 at 1,000 rps ({})", protocol.as_str()),
                measured: Some(v),
                unit: "ms".into(),
                target: "≤ 0.5 ms".into(),
                met: meaningful(Some(v), &|v| v <= 0.5),
                note: format!("mesh {:.0} µs, direct {:.0} µs", mesh, direct),
            });
        }

        let idle = self.idle_conns.iter().find(|f| f.proxy == "pimesh");
        let full = idle.is_some_and(|f| f.open >= 10_000 && f.died.is_none());
        let died = idle.and_then(|f| f.died.as_ref().map(|d| (f, d)));
        let v = idle.filter(|f| f.open > 0).map(|f| f.rss_kib as f64 / MIB);
        let limit = self.settings.idle_memory_bytes as f64 / 1048576.0;
        rows.push(TargetRow {
            figure: "pimesh-proxy RSS with 10,000 idle connections".into(),
            measured: if died.is_some() { None } else { v },
            unit: "MiB".into(),
            target: "≤ 48 MiB".into(),
            met: match died {
                // Killed under a limit at or above the target: it needed more.
                Some(_) if self.settings.cgroup.is_some() && limit >= 48.0 => {
                    meaningful(Some(limit), &|_| false)
                }
                Some(_) => None,
                None if full => meaningful(v, &|v| v <= 48.0),
                None => None,
            },
            note: match (idle, died) {
                (_, Some((f, d))) => format!(
                    "the proxy was {d} (limit {limit:.0} MiB); last reading {:.1} MiB with {} open, {:.0} bytes each",
                    f.rss_kib as f64 / MIB,
                    f.open,
                    f.bytes_per_conn.unwrap_or(0.0)
                ),
                (Some(f), None) if !full => {
                    format!("only {} connections open (--idle-conns)", f.open)
                }
                (Some(f), None) => {
                    format!("{:.0} bytes per connection", f.bytes_per_conn.unwrap_or(0.0))
                }
                (None, None) => "not measured".into(),
            },
        });
        self.targets = rows;
    }
}

#[cfg(test)]
mod tests {
    use crate::report::tests::sample;

    #[test]
    fn targets_take_the_worst_pimesh_process_and_compare_with_direct() {
        let mut r = sample();
        r.compute_targets();
        let row = |name: &str| {
            r.targets
                .iter()
                .find(|t| t.figure.starts_with(name))
                .unwrap()
        };
        let idle = row("pimesh-proxy idle RSS");
        assert_eq!(idle.measured, Some(3.5));
        assert_eq!(idle.met, Some(false));
        let peak = row("pimesh-proxy peak RSS at 1,000 rps");
        assert_eq!(peak.measured, Some(7.0));
        let cpu = row("CPU per request at saturation, inbound hop (h1)");
        assert_eq!(cpu.measured, Some(18.0));
        assert_eq!(cpu.met, Some(true));
        assert!(cpu.note.contains("haproxy 24.0 µs"), "{}", cpu.note);
        let mesh = row("mesh p99 − direct p99 at 1,000 rps (h1)");
        assert_eq!(mesh.measured, Some(0.6));
        assert_eq!(mesh.met, Some(false));
        let conns = row("pimesh-proxy RSS with 10,000 idle connections");
        assert_eq!(conns.measured, Some(4.0));
        assert_eq!(conns.met, None, "200 connections say nothing about 10,000");
        assert!(!r.targets.iter().any(|t| t.figure.contains("(h2)")));

        r.machine.emulated = true;
        r.compute_targets();
        assert!(r.targets.iter().all(|t| t.met.is_none()));
    }

    fn idle_row(r: &mut crate::report::Report) -> crate::report::TargetRow {
        r.compute_targets();
        r.targets.last().unwrap().clone()
    }

    #[test]
    fn idle_connections_count_only_at_ten_thousand_and_an_oom_kill_misses() {
        let mut r = sample();
        r.idle_conns[0].open = 10_000;
        r.idle_conns[0].requested = 10_000;
        r.idle_conns[0].rss_kib = 40 * 1024;
        let row = idle_row(&mut r);
        assert_eq!((row.measured, row.met), (Some(40.0), Some(true)));

        // Killed by the 64 MiB limit after 2,304: it needed more than 48.
        r.settings.cgroup = Some("v1".into());
        r.idle_conns[0].open = 2304;
        r.idle_conns[0].died = Some("killed by signal 9 with 2304 connections open".into());
        let row = idle_row(&mut r);
        assert_eq!((row.measured, row.met), (None, Some(false)));
        assert!(row.note.contains("killed by signal 9"), "{}", row.note);
        // Under a limit below the target, a kill proves nothing.
        r.settings.idle_memory_bytes = 32 << 20;
        assert_eq!(idle_row(&mut r).met, None);
    }
}
