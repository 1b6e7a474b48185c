//! Identity in Kubernetes mode (Linkerd's identity controller): a proxy's
//! ServiceAccount token is checked with a TokenReview
//! (`authentication.k8s.io/v1`, audience
//! [`KUBERNETES_TOKEN_AUDIENCE`]) before the CA signs; the trust anchors
//! are published as the ConfigMap [`TRUST_ROOTS_CONFIGMAP`] (key
//! [`TRUST_ROOTS_KEY`]) in every namespace injected pods may run in (they
//! mount their own namespace's copy), at start and after every CA change.

use super::KubeMetrics;
use crate::identity::Authority;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use pimesh_api::identity::{Identity, KUBERNETES_TOKEN_AUDIENCE};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The ConfigMap proxies' injectors mount the trust anchors from (as
/// Linkerd's `linkerd-identity-trust-roots`).
pub const TRUST_ROOTS_CONFIGMAP: &str = "pimesh-identity-trust-roots";
/// Its key holding the PEM bundle.
pub const TRUST_ROOTS_KEY: &str = "ca-bundle.crt";
/// Server-side apply field manager.
const FIELD_MANAGER: &str = "pimesh-controller";
/// Longest wait between publishing retries.
const MAX_RETRY: Duration = Duration::from_secs(30);

/// Why a certify request's ServiceAccount token was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// Not authenticated (expired, wrong audience, garbage); `reason` is
    /// the TokenReview's `status.error` or what was missing (HTTP 401).
    #[error("the ServiceAccount token was not accepted: {reason}")]
    InvalidToken {
        /// Why.
        reason: String,
    },
    /// A valid token of another ServiceAccount (HTTP 403).
    #[error("the token belongs to {username:?}, not to {identity}")]
    IdentityNotAllowed {
        /// The token's user.
        username: String,
        /// What was asked for.
        identity: Identity,
    },
    /// The TokenReview could not be made (HTTP 503).
    #[error("cannot review the token with the Kubernetes API")]
    Unavailable(#[source] kube::Error),
}

impl Refused {
    /// The `ApiError` code and the metric label.
    pub fn code(&self) -> &'static str {
        match self {
            Refused::InvalidToken { .. } => "invalid_token",
            Refused::IdentityNotAllowed { .. } => "identity_not_allowed",
            Refused::Unavailable(_) => "unavailable",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            Refused::InvalidToken { .. } => 401,
            Refused::IdentityNotAllowed { .. } => 403,
            Refused::Unavailable(_) => 503,
        }
    }
}

/// What a TokenReview's status means for `identity`: authenticated, with
/// [`KUBERNETES_TOKEN_AUDIENCE`] among `status.audiences`, as the user
/// `system:serviceaccount:NS:SA` of exactly `identity` `NS/SA`.
///
/// # Errors
///
/// [`Refused::InvalidToken`] when there is no status, it is not authenticated
/// or lacks the audience; [`Refused::IdentityNotAllowed`] for another user than
/// `identity`'s ServiceAccount.
pub fn outcome(status: Option<&TokenReviewStatus>, identity: &Identity) -> Result<(), Refused> {
    let invalid = |reason: String| Err(Refused::InvalidToken { reason });
    let Some(status) = status else {
        return invalid("the TokenReview has no status".into());
    };
    if status.authenticated != Some(true) {
        return invalid(
            status
                .error
                .clone()
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| "not authenticated".into()),
        );
    }
    let audiences = status.audiences.as_deref().unwrap_or_default();
    if !audiences.iter().any(|a| a == KUBERNETES_TOKEN_AUDIENCE) {
        return invalid(format!(
            "the token is not for the audience {KUBERNETES_TOKEN_AUDIENCE:?}"
        ));
    }
    let username = status
        .user
        .as_ref()
        .and_then(|u| u.username.clone())
        .unwrap_or_default();
    let expected = format!(
        "system:serviceaccount:{}:{}",
        identity.namespace(),
        identity.service_account()
    );
    if username != expected {
        return Err(Refused::IdentityNotAllowed {
            username,
            identity: identity.clone(),
        });
    }
    Ok(())
}

/// Reviews `token` for `identity` with the API server (one `POST
/// /apis/authentication.k8s.io/v1/tokenreviews`); counted in
/// `kube_token_reviews_total{result}`.
///
/// # Errors
///
/// As [`outcome`]; an empty token is [`Refused::InvalidToken`] without asking;
/// [`Refused::Unavailable`] when the API server cannot be asked.
pub async fn review(
    client: &kube::Client,
    metrics: &KubeMetrics,
    token: &str,
    identity: &Identity,
) -> Result<(), Refused> {
    // The API server answers an empty token with 400, not a review: it is
    // the caller's bad input (invalid_token), not the API's outage.
    if token.trim().is_empty() {
        let result = Err(Refused::InvalidToken {
            reason: "the token is empty".into(),
        });
        metrics.review("invalid_token");
        return result;
    }
    let api: Api<TokenReview> = Api::all(client.clone());
    let tr = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.to_string()),
            audiences: Some(vec![KUBERNETES_TOKEN_AUDIENCE.to_string()]),
        },
        ..TokenReview::default()
    };
    let result = match api.create(&PostParams::default(), &tr).await {
        Ok(answer) => outcome(answer.status.as_ref(), identity),
        Err(e) => Err(Refused::Unavailable(e)),
    };
    metrics.review(match &result {
        Ok(()) => "authenticated",
        Err(e) => e.code(),
    });
    result
}

/// The ConfigMap's server-side apply body.
pub fn trust_roots_configmap(namespace: &str, bundle_pem: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": TRUST_ROOTS_CONFIGMAP,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/part-of": "pimesh"},
        },
        "data": {TRUST_ROOTS_KEY: bundle_pem},
    })
}

/// Namespaces that never run meshed pods: no copy there.
pub const UNMESHED_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];
/// How often the namespaces are listed for new ones.
pub const NAMESPACE_RESCAN: Duration = Duration::from_secs(10);

/// Publishes the trust anchors into the controller's namespace and every
/// other namespace (but [`UNMESHED_NAMESPACES`]): an injected pod mounts
/// the ConfigMap of its own namespace, as every pod mounts
/// `kube-root-ca.crt` (kube-controller-manager's root-CA publisher does the
/// same). At start, after every CA change, and for namespaces that appear
/// (listed every [`NAMESPACE_RESCAN`]); each with a forced server-side
/// apply, failures retried with backoff (1 s doubling to 30 s). A
/// namespace's copy is written again only when the bundle changed. Ends
/// at `shutdown`.
pub async fn publish_trust_roots(
    client: kube::Client,
    namespace: String,
    authority: Arc<Authority>,
    metrics: KubeMetrics,
    shutdown: CancellationToken,
) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut changes = authority.changes();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    // Namespace → the bundle published there.
    let mut done: std::collections::BTreeMap<String, String> = Default::default();
    let mut failing = false;
    let mut wait = Duration::from_secs(1);
    loop {
        let bundle = authority.trust_anchors_pem();
        let mut targets = vec![namespace.clone()];
        let listed = namespaces.list(&ListParams::default()).await;
        let mut failed = listed.is_err();
        match listed {
            Ok(list) => {
                let names: Vec<String> = list
                    .items
                    .into_iter()
                    .filter_map(|n| n.metadata.name)
                    .filter(|n| !UNMESHED_NAMESPACES.contains(&n.as_str()) && *n != namespace)
                    .collect();
                done.retain(|ns, _| *ns == namespace || names.contains(ns));
                targets.extend(names);
            }
            Err(e) if !failing => {
                tracing::warn!(error = %crate::error_chain(&e), "cannot list namespaces for the trust anchors; retrying");
            }
            Err(_) => {}
        }
        let mut published = 0;
        for ns in targets {
            if done.get(&ns) == Some(&bundle) {
                continue;
            }
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
            let body = trust_roots_configmap(&ns, &bundle);
            match api
                .patch(TRUST_ROOTS_CONFIGMAP, &params, &Patch::Apply(&body))
                .await
            {
                Ok(_) => {
                    metrics.trust_roots_published.inc();
                    published += 1;
                    done.insert(ns, bundle.clone());
                }
                Err(e) => {
                    if !failing && !failed {
                        tracing::warn!(error = %crate::error_chain(&e), namespace = %ns, configmap = TRUST_ROOTS_CONFIGMAP, "cannot publish the trust anchors; retrying");
                    }
                    failed = true;
                }
            }
        }
        if published > 0 {
            tracing::info!(
                namespaces = published,
                configmap = TRUST_ROOTS_CONFIGMAP,
                "published the trust anchors"
            );
        }
        failing = failed;
        let pause = if failed {
            let w = wait;
            wait = (wait * 2).min(MAX_RETRY);
            w
        } else {
            wait = Duration::from_secs(1);
            NAMESPACE_RESCAN
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = changes.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::mock;
    use super::*;
    use k8s_openapi::api::authentication::v1::UserInfo;

    fn status(
        authenticated: bool,
        audiences: &[&str],
        user: &str,
        error: Option<&str>,
    ) -> TokenReviewStatus {
        TokenReviewStatus {
            authenticated: Some(authenticated),
            audiences: Some(audiences.iter().map(|a| a.to_string()).collect()),
            user: Some(UserInfo {
                username: Some(user.into()),
                ..UserInfo::default()
            }),
            error: error.map(str::to_string),
        }
    }

    #[test]
    fn token_review_outcomes() {
        let id: Identity = "shop/web".parse().unwrap();
        let ok = status(
            true,
            &["identity.pimesh.io"],
            "system:serviceaccount:shop:web",
            None,
        );
        assert!(outcome(Some(&ok), &id).is_ok());

        let other = status(
            true,
            &["identity.pimesh.io"],
            "system:serviceaccount:shop:db",
            None,
        );
        let e = outcome(Some(&other), &id).unwrap_err();
        assert_eq!((e.code(), e.status()), ("identity_not_allowed", 403));

        let expired = status(
            false,
            &[],
            "",
            Some("[invalid bearer token, service account token has expired]"),
        );
        let e = outcome(Some(&expired), &id).unwrap_err();
        assert_eq!((e.code(), e.status()), ("invalid_token", 401));
        assert!(e.to_string().contains("has expired"), "{e}");

        let audience = status(
            true,
            &["https://kubernetes.default.svc"],
            "system:serviceaccount:shop:web",
            None,
        );
        let e = outcome(Some(&audience), &id).unwrap_err();
        assert_eq!(e.code(), "invalid_token");
        assert!(e.to_string().contains("audience"), "{e}");

        // A user that is no ServiceAccount, and a status-less answer.
        let user = status(true, &["identity.pimesh.io"], "admin", None);
        assert_eq!(
            outcome(Some(&user), &id).unwrap_err().code(),
            "identity_not_allowed"
        );
        assert_eq!(outcome(None, &id).unwrap_err().code(), "invalid_token");
        assert_eq!(
            outcome(Some(&TokenReviewStatus::default()), &id)
                .unwrap_err()
                .code(),
            "invalid_token"
        );
    }

    /// The request kube sends and what each answer becomes.
    #[tokio::test]
    async fn review_posts_a_token_review_with_the_audience() {
        let (client, mut server) = super::super::mock::client();
        let metrics = KubeMetrics::default();
        let id: Identity = "shop/web".parse().unwrap();
        let path = "/apis/authentication.k8s.io/v1/tokenreviews";
        let call = tokio::spawn({
            let (client, metrics, id) = (client.clone(), metrics.clone(), id.clone());
            async move { review(&client, &metrics, "TOKEN", &id).await }
        });
        let (_, body) = mock::expect(
            &mut server,
            "POST",
            path,
            201,
            serde_json::json!({
                "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                "spec": {"token": "TOKEN"},
                "status": {"authenticated": true, "audiences": ["identity.pimesh.io"],
                           "user": {"username": "system:serviceaccount:shop:web"}}
            }),
        )
        .await;
        assert_eq!(body["kind"], "TokenReview");
        assert_eq!(body["spec"]["token"], "TOKEN");
        assert_eq!(
            body["spec"]["audiences"],
            serde_json::json!(["identity.pimesh.io"])
        );
        call.await.unwrap().unwrap();

        // The API server failing: 503 `unavailable`, nothing else.
        let call = tokio::spawn({
            let (client, metrics) = (client.clone(), metrics.clone());
            async move { review(&client, &metrics, "TOKEN", &id).await }
        });
        mock::expect(
            &mut server,
            "POST",
            path,
            500,
            serde_json::json!({
                "kind": "Status", "apiVersion": "v1", "status": "Failure",
                "message": "etcdserver: request timed out", "reason": "InternalError", "code": 500
            }),
        )
        .await;
        let e = call.await.unwrap().unwrap_err();
        assert_eq!((e.code(), e.status()), ("unavailable", 503));
    }

    #[tokio::test]
    async fn trust_roots_are_applied_at_start_and_after_a_ca_change() {
        let (client, mut server) = super::super::mock::client();
        let dir = pimesh_test_support::TempDir::new("kube-trust-roots");
        let store = crate::store::Store::open(dir.path()).unwrap();
        let tokens = Arc::new(crate::token::Tokens::new(&store).unwrap());
        let settings = crate::identity::Settings {
            trust_domain: "cluster.local".into(),
            cert_lifetime: Duration::from_secs(3600),
            import: None,
        };
        let now = crate::identity::now_unix();
        let authority = Arc::new(Authority::start(&store, tokens, settings, now).unwrap());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(publish_trust_roots(
            client,
            "pimesh".into(),
            authority.clone(),
            KubeMetrics::default(),
            shutdown.clone(),
        ));
        let namespaces = serde_json::json!({
            "apiVersion": "v1", "kind": "NamespaceList", "metadata": {},
            "items": [
                {"metadata": {"name": "kube-system"}},
                {"metadata": {"name": "pimesh"}},
                {"metadata": {"name": "shop"}},
            ],
        });
        let cm = serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": TRUST_ROOTS_CONFIGMAP}
        });
        let path =
            |ns: &str| format!("/api/v1/namespaces/{ns}/configmaps/pimesh-identity-trust-roots");
        mock::expect(
            &mut server,
            "GET",
            "/api/v1/namespaces",
            200,
            namespaces.clone(),
        )
        .await;
        // The controller's namespace first, then every other but kube-system.
        for ns in ["pimesh", "shop"] {
            let (query, body) =
                mock::expect(&mut server, "PATCH", &path(ns), 200, cm.clone()).await;
            assert!(
                query.contains("fieldManager=pimesh-controller") && query.contains("force=true"),
                "{query}"
            );
            assert_eq!(body["data"]["ca-bundle.crt"], authority.trust_anchors_pem());
            assert_eq!(body["metadata"]["namespace"], ns);
        }
        // A rotation adds the new anchor: applied again everywhere, with both.
        authority.rotate(Duration::from_secs(60), now).unwrap();
        mock::expect(&mut server, "GET", "/api/v1/namespaces", 200, namespaces).await;
        for ns in ["pimesh", "shop"] {
            let (_, body) = mock::expect(&mut server, "PATCH", &path(ns), 200, cm.clone()).await;
            let bundle = body["data"]["ca-bundle.crt"].as_str().unwrap();
            assert_eq!(bundle.matches("BEGIN CERTIFICATE").count(), 2);
        }
        shutdown.cancel();
        task.await.unwrap();
    }

    #[test]
    fn configmap_body() {
        let v = trust_roots_configmap("pimesh", "PEM");
        assert_eq!(v["metadata"]["name"], "pimesh-identity-trust-roots");
        assert_eq!(v["metadata"]["namespace"], "pimesh");
        assert_eq!(v["data"]["ca-bundle.crt"], "PEM");
    }
}
