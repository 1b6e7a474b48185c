//! `pimesh identity trust-anchors | status | rotate`: the mesh CA, through
//! the operator API.

use super::{block_on, format_time, print_json, ControllerFlag, Error, Output};
use crate::admin::{FinishRequest, RotateRequest};
use crate::config::{parse_duration, Env};
use crate::identity::CaStatus;
use clap::Subcommand;
use http::Method;
use pimesh_api::identity::TRUST_ANCHORS_PATH;

/// The mesh CA: trust anchors and their rotation.
#[derive(Debug, Subcommand)]
pub enum IdentityCommand {
    /// Print the trust-anchor bundle, PEM (what PIMESH_PROXY_TRUST_ANCHORS points to)
    TrustAnchors {
        #[command(flatten)]
        controller: ControllerFlag,
    },
    /// Show the CA: trust anchors, the signing issuer, rotation stage
    Status {
        /// `text` or `json`
        #[arg(short, long, value_enum, default_value = "text")]
        output: Output,
        #[command(flatten)]
        controller: ControllerFlag,
    },
    /// Rotate the trust anchor and issuer without an outage: the new anchor
    /// joins the bundle now, the new issuer signs after --activate-after;
    /// then `rotate --finish` drops the old anchor and issuer
    Rotate {
        /// Time for every proxy to fetch the new bundle before the new
        /// issuer signs: 2m, 30s, 0s ...
        #[arg(
            long,
            value_name = "DURATION",
            default_value = "2m",
            conflicts_with = "finish"
        )]
        activate_after: String,
        /// Finish the rotation: drop the old anchor and issuer (refused
        /// while certificates of the old issuer may still be valid)
        #[arg(long)]
        finish: bool,
        /// With --finish: finish even if old certificates are still valid
        #[arg(long, requires = "finish")]
        force: bool,
        /// `text` or `json`
        #[arg(short, long, value_enum, default_value = "text")]
        output: Output,
        #[command(flatten)]
        controller: ControllerFlag,
    },
}

/// Runs an `identity` command.
///
/// # Errors
///
/// [`Error::Usage`] for a bad `--activate-after`; [`Error::Client`] when the
/// controller cannot be reached or refuses (its `ApiError`); [`Error::Output`]
/// when printing fails or the runtime cannot start.
pub fn run(cmd: IdentityCommand, env: &dyn Env) -> Result<(), Error> {
    match cmd {
        IdentityCommand::TrustAnchors { controller } => {
            let client = controller.client(env)?;
            let pem = block_on(async { Ok(client.text(TRUST_ANCHORS_PATH).await?) })?;
            print!("{pem}");
            Ok(())
        }
        IdentityCommand::Status { output, controller } => {
            let client = controller.client(env)?;
            let st: CaStatus = block_on(async {
                Ok(client
                    .call(Method::GET, "/v1/identity/ca", None::<&()>)
                    .await?)
            })?;
            show(&st, output)
        }
        IdentityCommand::Rotate {
            activate_after,
            finish,
            force,
            output,
            controller,
        } => {
            let client = controller.client(env)?;
            let st: CaStatus = if finish {
                let req = FinishRequest { force };
                block_on(async {
                    Ok(client
                        .call(Method::POST, "/v1/identity/rotate/finish", Some(&req))
                        .await?)
                })?
            } else {
                let after = parse_duration(&activate_after).map_err(|reason| Error::Usage {
                    flag: "--activate-after",
                    value: activate_after.clone(),
                    reason,
                })?;
                let req = RotateRequest {
                    activate_after_seconds: Some(after.as_secs()),
                };
                block_on(async {
                    Ok(client
                        .call(Method::POST, "/v1/identity/rotate", Some(&req))
                        .await?)
                })?
            };
            if output == Output::Text {
                if finish {
                    println!(
                        "rotation finished: the bundle holds only the new trust anchor; \
                         proxies drop the old one at their next bundle refresh"
                    );
                } else if let Some(r) = &st.rotation {
                    println!(
                        "rotation started: the bundle now holds the old and the new trust anchor; \
                         the new issuer signs from {}; run `pimesh identity rotate --finish` \
                         once certificates of the old issuer have expired",
                        format_time(r.activate_unix)
                    );
                }
            }
            show(&st, output)
        }
    }
}

/// Prints a [`CaStatus`].
fn show(st: &CaStatus, output: Output) -> Result<(), Error> {
    if output == Output::Json {
        return print_json(st);
    }
    let stage = serde_json::to_value(st.stage).unwrap_or_default();
    println!("stage: {}", stage.as_str().unwrap_or("?"));
    println!("trust anchors:");
    for a in &st.anchors {
        println!(
            "  {}  {}  expires {}",
            &a.sha256[..16],
            a.subject,
            format_time(a.not_after_unix)
        );
    }
    println!(
        "signing issuer: {}  {}  expires {}",
        &st.issuer.sha256[..16],
        st.issuer.subject,
        format_time(st.issuer.not_after_unix)
    );
    if let Some(r) = &st.rotation {
        println!(
            "rotation: started {}, new issuer {} signs from {}",
            format_time(r.started_unix),
            &r.new_issuer.sha256[..16],
            format_time(r.activate_unix)
        );
        match r.old_leaves_valid_until_unix {
            Some(t) => println!(
                "  {} certificate(s) of the old issuer valid until {}",
                r.old_leaves_valid,
                format_time(t)
            ),
            None => println!("  no valid certificate of the old issuer"),
        }
    }
    println!("issued-serial records: {}", st.certificates);
    Ok(())
}
