//! SVG plots, written by hand (no plotting dependency): per protocol and
//! scenario, latency percentiles (log scale) against the achieved rate of
//! the fixed-rate steps, one line style per proxy, the direct path in grey
//! for reference, and each proxy's saturation rate as a dotted line.

use crate::config::{Protocol, Scenario};
use crate::report::{Report, Run};
use std::fmt::Write;

const W: f64 = 760.0;
const H: f64 = 440.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 210.0;
const TOP: f64 = 44.0;
const BOTTOM: f64 = 56.0;

/// Percentiles drawn, their labels and colours.
const PERCENTILES: [(&str, &str); 4] = [
    ("p50", "#1f77b4"),
    ("p90", "#2ca02c"),
    ("p99", "#ff7f0e"),
    ("p99.9", "#d62728"),
];

/// Dash patterns, one per proxy in a chart.
const DASHES: [&str; 4] = ["", "8 4", "2 3", "10 3 2 3"];

/// `(file name, SVG text)` for every protocol × scenario with fixed-rate
/// results: `latency-h1-inbound.svg`, ...
pub fn charts(r: &Report) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for protocol in [Protocol::H1, Protocol::H2] {
        for scenario in [Scenario::Direct, Scenario::Inbound, Scenario::Mesh] {
            let runs: Vec<&Run> = r
                .runs
                .iter()
                .filter(|x| x.protocol == protocol && x.scenario == scenario)
                .filter(|x| {
                    x.steps
                        .iter()
                        .any(|s| s.target_rps.is_some() && s.requests > 0)
                })
                .collect();
            if runs.is_empty() {
                continue;
            }
            let direct = (scenario != Scenario::Direct)
                .then(|| r.run("none", Scenario::Direct, protocol))
                .flatten();
            let title = format!(
                "{} {} — latency vs rate{}",
                protocol.as_str(),
                scenario.as_str(),
                if r.machine.emulated {
                    " (EMULATED: meaningless)"
                } else {
                    ""
                }
            );
            let name = format!("latency-{}-{}.svg", protocol.as_str(), scenario.as_str());
            out.push((name, chart(&title, &runs, direct)));
        }
    }
    out
}

/// Points (achieved rps, latency µs) of one percentile of a run.
fn points(run: &Run, pct: usize) -> Vec<(f64, f64)> {
    run.steps
        .iter()
        .filter(|s| s.target_rps.is_some() && s.requests > 0)
        .map(|s| {
            let l = &s.latency_us;
            let v = [l.p50, l.p90, l.p99, l.p999][pct];
            (s.achieved_rps, v.max(1.0))
        })
        .collect()
}

fn chart(title: &str, runs: &[&Run], direct: Option<&Run>) -> String {
    let all: Vec<(f64, f64)> = runs
        .iter()
        .copied()
        .chain(direct)
        .flat_map(|r| (0..4).flat_map(move |p| points(r, p)))
        .collect();
    let x_max = nice_ceiling(all.iter().map(|p| p.0).fold(1.0, f64::max) * 1.05);
    let lo = all.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let hi = all.iter().map(|p| p.1).fold(1.0, f64::max);
    let (d0, d1) = (
        lo.log10().floor(),
        hi.log10().ceil().max(lo.log10().floor() + 1.0),
    );
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let x = |v: f64| LEFT + v / x_max * plot_w;
    let y = |v: f64| TOP + plot_h - (v.log10() - d0) / (d1 - d0) * plot_h;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="24" font-size="15" font-weight="bold">{}</text>"#,
        LEFT,
        esc(title)
    );
    // Axes and grid.
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#444"/>"##
    );
    for i in 0..=5 {
        let v = x_max * i as f64 / 5.0;
        let px = x(v);
        let _ = writeln!(
            s,
            r##"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{:.1}" stroke="#ddd"/><text x="{px:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            TOP + plot_h,
            TOP + plot_h + 18.0,
            crate::markdown::num(v)
        );
    }
    let mut d = d0;
    while d <= d1 + 1e-9 {
        let py = y(10f64.powi(d as i32));
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            py + 4.0,
            duration_label(10f64.powi(d as i32))
        );
        d += 1.0;
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">achieved rate (requests/s)</text>"#,
        LEFT + plot_w / 2.0,
        H - 14.0
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle">latency (log scale)</text>"#,
        TOP + plot_h / 2.0
    );

    // Series: the direct reference first (grey), then each proxy.
    let mut legend: Vec<(String, String, String)> = Vec::new();
    if let Some(dr) = direct {
        for (p, label, colour) in [(0, "p50", "#bbb"), (2, "p99", "#777")] {
            let pts = points(dr, p);
            polyline(&mut s, &pts, &x, &y, colour, "4 4");
            legend.push((format!("direct {label}"), colour.into(), "4 4".into()));
        }
    }
    for (i, run) in runs.iter().enumerate() {
        let dash = DASHES[i % DASHES.len()];
        let name = if run.proxy == "none" {
            "direct"
        } else {
            &run.proxy
        };
        for (p, (label, colour)) in PERCENTILES.iter().enumerate() {
            polyline(&mut s, &points(run, p), &x, &y, colour, dash);
            legend.push((
                format!("{name} {label}"),
                colour.to_string(),
                dash.to_string(),
            ));
        }
        if let Some(sat) = run
            .steps
            .iter()
            .find(|st| st.target_rps.is_none() && st.requests > 0)
        {
            let ly = H - 4.0 - 14.0 * (runs.len() - 1 - i) as f64;
            let _ = writeln!(
                s,
                r##"<text x="{:.1}" y="{ly:.1}" font-size="11" fill="#555">{} saturation: {} rps</text>"##,
                W - RIGHT + 14.0,
                esc(name),
                crate::markdown::num(sat.achieved_rps)
            );
            if sat.achieved_rps <= x_max {
                let px = x(sat.achieved_rps);
                let _ = writeln!(
                    s,
                    r##"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{:.1}" stroke="#555" stroke-dasharray="1 3"/><text x="{:.1}" y="{:.1}" font-size="10" fill="#555">{} saturation</text>"##,
                    TOP + plot_h,
                    px + 3.0,
                    TOP + 12.0 + 12.0 * i as f64,
                    esc(name)
                );
            }
        }
    }
    for (i, (label, colour, dash)) in legend.iter().enumerate() {
        let ly = TOP + 8.0 + 16.0 * i as f64;
        let lx = W - RIGHT + 14.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="2" stroke-dasharray="{dash}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            lx + 28.0,
            lx + 34.0,
            ly + 4.0,
            esc(label)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn polyline(
    s: &mut String,
    pts: &[(f64, f64)],
    x: &dyn Fn(f64) -> f64,
    y: &dyn Fn(f64) -> f64,
    colour: &str,
    dash: &str,
) {
    if pts.is_empty() {
        return;
    }
    let coords: Vec<String> = pts
        .iter()
        .map(|&(a, b)| format!("{:.1},{:.1}", x(a), y(b)))
        .collect();
    let _ = writeln!(
        s,
        r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2" stroke-dasharray="{dash}"/>"#,
        coords.join(" ")
    );
    for c in coords {
        let (cx, cy) = c.split_once(',').unwrap_or(("0", "0"));
        let _ = writeln!(s, r#"<circle cx="{cx}" cy="{cy}" r="3" fill="{colour}"/>"#);
    }
}

/// The first of 1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10 × 10^k at or above `v`.
fn nice_ceiling(v: f64) -> f64 {
    let mag = 10f64.powf(v.log10().floor());
    [1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * mag)
}

/// `10 µs`, `1 ms`, `10 s` for a decade in microseconds.
fn duration_label(us: f64) -> String {
    if us >= 1e6 {
        format!("{} s", us / 1e6)
    } else if us >= 1e3 {
        format!("{} ms", us / 1e3)
    } else {
        format!("{us} µs")
    }
}

/// XML text escaping.
fn esc(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_per_scenario_are_well_formed_and_labelled() {
        let mut r = crate::report::tests::sample();
        r.runs[2].proxy = "h<a>&proxy".into();
        let fixed = r.runs[1].steps[0].clone();
        r.runs[2].steps.push(fixed);
        let charts = charts(&r);
        let names: Vec<&str> = charts.iter().map(|c| c.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "latency-h1-direct.svg",
                "latency-h1-inbound.svg",
                "latency-h1-mesh.svg"
            ]
        );
        for (name, svg) in &charts {
            let doc = roxmltree::Document::parse(svg).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(doc.root_element().tag_name().name(), "svg");
            let lines = doc
                .descendants()
                .filter(|n| n.has_tag_name("polyline"))
                .count();
            assert!(lines >= 4, "{name}: {lines} polylines");
        }
        let inbound = &charts[1].1;
        assert!(inbound.contains("direct p99"));
        assert!(inbound.contains("pimesh saturation"));
        assert!(inbound.contains("h&lt;a&gt;&amp;proxy p99"));
    }

    #[test]
    fn escaping_and_scales() {
        assert_eq!(esc("a<b>&\"c"), "a&lt;b&gt;&amp;&quot;c");
        assert_eq!(nice_ceiling(1050.0), 1200.0);
        assert_eq!(nice_ceiling(480.0), 500.0);
        assert_eq!(nice_ceiling(9000.0), 10000.0);
        assert_eq!(duration_label(1000.0), "1 ms");
        assert_eq!(duration_label(10.0), "10 µs");
        assert_eq!(duration_label(1e7), "10 s");
    }
}
