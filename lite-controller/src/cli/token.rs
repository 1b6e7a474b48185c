//! `pimesh token create | ls | revoke`: join tokens, through the operator API.

use super::{block_on, format_time, print_json, ControllerFlag, Error, Output};
use crate::config::{parse_duration, Env};
use crate::token::{CreateToken, CreatedToken, TokenInfo};
use clap::Subcommand;
use http::Method;
use pimesh_api::identity::Identity;

/// Join tokens (standalone mode): the credential a proxy certifies with.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a join token for one identity and print it (shown only once)
    Create {
        /// The identity the token allows, NAMESPACE/SERVICEACCOUNT
        #[arg(long, value_name = "NS/SA")]
        identity: String,
        /// The service the holder may register (standalone registry)
        #[arg(long, value_name = "NAME")]
        service: Option<String>,
        /// How long the token is valid: 10m, 24h, 30d ...
        #[arg(long, value_name = "DURATION", default_value = "24h")]
        ttl: String,
        /// `text`: the token alone on stdout; `json`: the API's answer
        #[arg(short, long, value_enum, default_value = "text")]
        output: Output,
        #[command(flatten)]
        controller: ControllerFlag,
    },
    /// List join tokens: ID, IDENTITY, SERVICE, EXPIRES, STATUS
    Ls {
        /// `text` (a table) or `json`
        #[arg(short, long, value_enum, default_value = "text")]
        output: Output,
        #[command(flatten)]
        controller: ControllerFlag,
    },
    /// Revoke a join token by its ID (certify requests with it are refused)
    Revoke {
        /// The token's ID (16 hex digits, as `token ls` shows)
        id: String,
        #[command(flatten)]
        controller: ControllerFlag,
    },
}

/// Runs a `token` command.
///
/// # Errors
///
/// [`Error::Usage`] for a bad flag value (TTL, identity, service);
/// [`Error::Client`] when the controller cannot be reached or refuses (its
/// `ApiError`); [`Error::Output`] when printing fails or the runtime cannot
/// start.
pub fn run(cmd: TokenCommand, env: &dyn Env) -> Result<(), Error> {
    match cmd {
        TokenCommand::Create {
            identity,
            service,
            ttl,
            output,
            controller,
        } => {
            let identity: Identity = identity.parse().map_err(|e| Error::Usage {
                flag: "--identity",
                value: identity.clone(),
                reason: format!("{e}"),
            })?;
            let ttl_secs = parse_duration(&ttl)
                .map_err(|reason| Error::Usage {
                    flag: "--ttl",
                    value: ttl.clone(),
                    reason,
                })?
                .as_secs();
            if ttl_secs == 0 {
                return Err(Error::Usage {
                    flag: "--ttl",
                    value: ttl,
                    reason: "must be at least 1s".into(),
                });
            }
            if let Some(s) = service
                .as_deref()
                .filter(|s| Identity::new(s, "x").is_err())
            {
                return Err(Error::Usage {
                    flag: "--service",
                    value: s.to_string(),
                    reason: "not an RFC 1123 label (lowercase letters, digits, '-')".into(),
                });
            }
            let client = controller.client(env)?;
            let req = CreateToken {
                identity,
                service,
                ttl_seconds: Some(ttl_secs),
            };
            let created: CreatedToken =
                block_on(async { Ok(client.call(Method::POST, "/v1/tokens", Some(&req)).await?) })?;
            match output {
                Output::Json => print_json(&created),
                Output::Text => {
                    println!("{}", created.token);
                    eprintln!(
                        "token {} for {} expires {}; it is shown only this once",
                        created.info.id,
                        created.info.identity,
                        format_time(created.info.expires_unix)
                    );
                    Ok(())
                }
            }
        }
        TokenCommand::Ls { output, controller } => {
            let client = controller.client(env)?;
            let tokens: Vec<TokenInfo> =
                block_on(async { Ok(client.call(Method::GET, "/v1/tokens", None::<&()>).await?) })?;
            match output {
                Output::Json => print_json(&tokens),
                Output::Text => {
                    print!("{}", table(&tokens));
                    Ok(())
                }
            }
        }
        TokenCommand::Revoke { id, controller } => {
            let client = controller.client(env)?;
            let path = format!("/v1/tokens/{id}");
            let info: TokenInfo =
                block_on(async { Ok(client.call(Method::DELETE, &path, None::<&()>).await?) })?;
            println!("revoked token {} ({})", info.id, info.identity);
            Ok(())
        }
    }
}

/// The `token ls` table, columns padded to their widest cell.
fn table(tokens: &[TokenInfo]) -> String {
    let mut rows = vec![[
        "ID".to_string(),
        "IDENTITY".into(),
        "SERVICE".into(),
        "EXPIRES".into(),
        "STATUS".into(),
    ]];
    for t in tokens {
        rows.push([
            t.id.clone(),
            t.identity.to_string(),
            t.service.clone().unwrap_or_else(|| "-".into()),
            format_time(t.expires_unix),
            t.status.as_str().into(),
        ]);
    }
    let widths: Vec<usize> = (0..5)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::Status;

    #[test]
    fn ls_table() {
        let t = TokenInfo {
            id: "0123456789abcdef".into(),
            identity: "shop/web".parse().unwrap(),
            service: None,
            created_unix: 0,
            expires_unix: 86400,
            status: Status::Expired,
        };
        assert_eq!(
            table(&[t]),
            "ID                IDENTITY  SERVICE  EXPIRES               STATUS\n\
             0123456789abcdef  shop/web  -        1970-01-02T00:00:00Z  expired\n"
        );
    }
}
