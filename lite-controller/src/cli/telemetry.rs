//! `pimesh stat`, `pimesh edges`, `pimesh dashboard`: the telemetry role's
//! answers, printed as `linkerd viz stat` / `linkerd viz edges` print them.

use super::{block_on, print_json, ControllerFlag, Error};
use crate::config::Env;
use crate::telemetry::api::parse_window;
use crate::telemetry::query::{EdgeRow, Edges, Resource, Stat, StatRow};
use clap::{Args, ValueEnum};
use http::Method;

/// `-o` of `stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatOutput {
    /// Columns as `linkerd viz stat`.
    Table,
    /// The table plus bytes per second.
    Wide,
    /// The API's rows.
    Json,
}

/// `-o` of `edges`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EdgesOutput {
    /// Columns as `linkerd viz edges -o wide`.
    Table,
    /// The API's rows.
    Json,
}

/// Which workloads, over which window.
#[derive(Debug, Clone, Args)]
pub struct Scope {
    /// Namespace [default: default]
    #[arg(short, long, value_name = "NS", conflicts_with = "all_namespaces")]
    pub namespace: Option<String>,
    /// All namespaces
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Time window: 1m, 10m, 1h (or any duration from 1s to 1h)
    #[arg(short = 't', long, value_name = "WINDOW", default_value = "1m")]
    pub window: String,
    #[command(flatten)]
    pub controller: ControllerFlag,
}

/// `pimesh stat RESOURCE [NAME]`.
#[derive(Debug, Clone, Args)]
pub struct StatArgs {
    /// deploy, svc or pod (also `deploy/NAME`)
    pub resource: String,
    /// Only this workload
    pub name: Option<String>,
    #[command(flatten)]
    pub scope: Scope,
    /// Output format
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: StatOutput,
}

/// `pimesh edges RESOURCE`.
#[derive(Debug, Clone, Args)]
pub struct EdgesArgs {
    /// deploy or pod
    pub resource: String,
    #[command(flatten)]
    pub scope: Scope,
    /// Output format
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: EdgesOutput,
}

/// `pimesh dashboard`.
#[derive(Debug, Clone, Args)]
pub struct DashboardArgs {
    /// Also open it in the desktop's browser (xdg-open)
    #[arg(long)]
    pub open: bool,
    #[command(flatten)]
    pub controller: ControllerFlag,
}

/// The resource and name of `RESOURCE [NAME]` or `RESOURCE/NAME`;
/// an unknown resource is [`Error::UnknownResource`] (exit code 1).
pub(super) fn resource(r: &str, name: Option<String>) -> Result<(Resource, Option<String>), Error> {
    let (r, inline) = match r.split_once('/') {
        Some((r, n)) => (r, Some(n.to_string())),
        None => (r, None),
    };
    let res = Resource::parse(r).ok_or_else(|| Error::UnknownResource(r.to_string()))?;
    Ok((res, inline.or(name)))
}

pub(super) fn query(scope: &Scope, resource: &str, name: Option<&str>) -> Result<String, Error> {
    parse_window(&scope.window).map_err(|reason| Error::Usage {
        flag: "--window",
        value: scope.window.clone(),
        reason,
    })?;
    let mut q = format!("resource={resource}&window={}", enc(&scope.window));
    if !scope.all_namespaces {
        let ns = scope.namespace.as_deref().unwrap_or("default");
        q.push_str(&format!("&namespace={}", enc(ns)));
    }
    if let Some(n) = name {
        q.push_str(&format!("&name={}", enc(n)));
    }
    Ok(q)
}

/// Percent-encodes everything but unreserved characters (RFC 3986 §2.3).
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Runs `pimesh stat`.
///
/// # Errors
///
/// [`Error::UnknownResource`] (exit 1) for a resource kind that does not exist;
/// [`Error::Usage`] for a bad `--window`; [`Error::Client`] when the controller
/// cannot be reached or refuses (its `ApiError`); [`Error::Output`] when
/// printing fails or the runtime cannot start.
pub fn stat(args: StatArgs, env: &dyn Env) -> Result<(), Error> {
    let (res, name) = resource(&args.resource, args.name.clone())?;
    let kind = match res {
        Resource::Deployment => "deploy",
        Resource::Service => "svc",
        Resource::Pod => "pod",
    };
    let q = query(&args.scope, kind, name.as_deref())?;
    let client = args.scope.controller.client(env)?;
    let stat: Stat = block_on(async {
        Ok(client
            .call(Method::GET, &format!("/v1/stat?{q}"), None::<&()>)
            .await?)
    })?;
    match args.output {
        StatOutput::Json => print_json(&stat.rows),
        out => {
            if stat.rows.is_empty() {
                eprintln!("No traffic found.");
                return Ok(());
            }
            let wide = out == StatOutput::Wide;
            print!(
                "{}",
                stat_table(&stat.rows, args.scope.all_namespaces, wide)
            );
            Ok(())
        }
    }
}

/// Runs `pimesh edges`.
///
/// # Errors
///
/// As [`stat`].
pub fn edges(args: EdgesArgs, env: &dyn Env) -> Result<(), Error> {
    let (res, _) = resource(&args.resource, None)?;
    let kind = match res {
        Resource::Deployment => "deploy",
        Resource::Service => "svc",
        Resource::Pod => "pod",
    };
    let q = query(&args.scope, kind, None)?;
    let client = args.scope.controller.client(env)?;
    let edges: Edges = block_on(async {
        Ok(client
            .call(Method::GET, &format!("/v1/edges?{q}"), None::<&()>)
            .await?)
    })?;
    match args.output {
        EdgesOutput::Json => print_json(&edges.rows),
        EdgesOutput::Table => {
            if edges.rows.is_empty() {
                eprintln!("No edges found.");
                return Ok(());
            }
            print!("{}", edges_table(&edges.rows));
            Ok(())
        }
    }
}

/// Runs `pimesh dashboard`: prints the URL (checking that the controller
/// answers) and, with `--open`, hands it to `xdg-open`.
///
/// # Errors
///
/// [`Error::Client`] when the controller cannot be reached or refuses (its
/// `ApiError`); [`Error::Output`] when printing fails or the runtime cannot
/// start (a failed `xdg-open` is only reported).
pub fn dashboard(args: DashboardArgs, env: &dyn Env) -> Result<(), Error> {
    let client = args.controller.client(env)?;
    block_on(async { Ok(client.text("/live").await?) })?;
    let url = format!("{}/dashboard", client.url().trim_end_matches('/'));
    println!("{url}");
    if args.open {
        if let Err(e) = std::process::Command::new("xdg-open").arg(&url).status() {
            eprintln!("cannot run xdg-open ({e}); open {url} in a browser");
        }
    }
    Ok(())
}

fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.2}%", v * 100.0))
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{}ms", v.round() as u64))
}

/// The `stat` table, as `linkerd viz stat` prints it.
pub fn stat_table(rows: &[StatRow], namespaces: bool, wide: bool) -> String {
    let mut head = vec![
        "NAME",
        "MESHED",
        "SUCCESS",
        "RPS",
        "LATENCY_P50",
        "LATENCY_P95",
        "LATENCY_P99",
        "TCP_CONN",
    ];
    if wide {
        head.extend(["READ_BYTES/SEC", "WRITE_BYTES/SEC"]);
    }
    if namespaces {
        head.insert(0, "NAMESPACE");
    }
    let mut table = vec![head.iter().map(|s| s.to_string()).collect::<Vec<_>>()];
    for r in rows {
        let mut row = vec![
            r.name.clone(),
            r.meshed.clone(),
            pct(r.success),
            r.rps.map_or("-".into(), |v| format!("{v:.1}rps")),
            ms(r.latency_ms_p50),
            ms(r.latency_ms_p95),
            ms(r.latency_ms_p99),
            r.tcp_open_connections.to_string(),
        ];
        if wide {
            let b = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1}B/s"));
            row.extend([b(r.read_bytes_per_sec), b(r.write_bytes_per_sec)]);
        }
        if namespaces {
            row.insert(0, r.namespace.clone());
        }
        table.push(row);
    }
    render(&table)
}

/// The `edges` table: SRC, DST, SRC_NS, DST_NS, CLIENT_ID, SERVER_ID,
/// SECURED (✓ for mTLS).
pub fn edges_table(rows: &[EdgeRow]) -> String {
    let mut table = vec![[
        "SRC",
        "DST",
        "SRC_NS",
        "DST_NS",
        "CLIENT_ID",
        "SERVER_ID",
        "SECURED",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect::<Vec<_>>()];
    for r in rows {
        table.push(vec![
            r.src.clone(),
            r.dst.clone(),
            r.src_namespace.clone(),
            r.dst_namespace.clone(),
            r.client_id.clone(),
            r.server_id.clone(),
            if r.secured { "✓" } else { "✗" }.to_string(),
        ]);
    }
    render(&table)
}

/// Columns padded to their widest cell (in characters), two spaces apart.
pub(super) fn render(table: &[Vec<String>]) -> String {
    let cols = table.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..cols)
        .map(|i| {
            table
                .iter()
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in table {
        let mut line = String::new();
        for (c, w) in row.iter().zip(&widths) {
            line.push_str(c);
            line.extend(std::iter::repeat_n(' ', w - c.chars().count() + 2));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_like_linkerd_viz() {
        let row = StatRow {
            namespace: "shop".into(),
            kind: Resource::Deployment,
            name: "web".into(),
            meshed: "1/1".into(),
            success: Some(0.9),
            rps: Some(20.0),
            latency_ms_p50: Some(25.4),
            latency_ms_p95: Some(29.5),
            latency_ms_p99: Some(29.9),
            tcp_open_connections: 2,
            read_bytes_per_sec: Some(100.0),
            write_bytes_per_sec: None,
            requests: 1200,
            successes: 1080,
            failures: 120,
            covered_seconds: 60.0,
        };
        assert_eq!(
            stat_table(std::slice::from_ref(&row), false, false),
            "NAME  MESHED  SUCCESS  RPS      LATENCY_P50  LATENCY_P95  LATENCY_P99  TCP_CONN\n\
             web   1/1     90.00%   20.0rps  25ms         30ms         30ms         2\n"
        );
        let wide = stat_table(&[row], true, true);
        assert!(wide.starts_with("NAMESPACE  NAME"), "{wide}");
        assert!(
            wide.contains("100.0B/s") && wide.trim_end().ends_with('-'),
            "{wide}"
        );
        let e = EdgeRow {
            src: "client".into(),
            src_namespace: "shop".into(),
            dst: "web".into(),
            dst_namespace: "shop".into(),
            client_id: "client.shop.serviceaccount.identity.pimesh.cluster.local".into(),
            server_id: "-".into(),
            secured: true,
            rps: Some(1.0),
            success: Some(1.0),
            requests: 60,
        };
        let t = edges_table(&[e]);
        assert!(
            t.starts_with("SRC     DST  SRC_NS  DST_NS  CLIENT_ID"),
            "{t}"
        );
        assert!(t.trim_end().ends_with("-          ✓"), "{t}");
    }

    #[test]
    fn resources() {
        assert_eq!(resource("deploy", None).unwrap().0, Resource::Deployment);
        assert_eq!(
            resource("deploy/web", None).unwrap(),
            (Resource::Deployment, Some("web".into()))
        );
        assert_eq!(resource("po", Some("p1".into())).unwrap().0, Resource::Pod);
        let e = resource("bogus", None).unwrap_err();
        assert_eq!(e.exit_code(), 1);
        assert!(e.to_string().contains("bogus"), "{e}");
        assert_eq!(enc("shop/web x"), "shop%2Fweb%20x");
    }
}
