//! A service's effective resilience policy: what `pimesh service set`
//! gave ([`ServicePolicy`]), completed by the proxy's defaults
//! ([`Defaults`]). Values the controller sends that make no sense are
//! logged and replaced by the default (bad input never panics: tower's
//! `TpsBudget::new` asserts its ranges, so they are clamped first).

use super::retry::Budget;
use crate::config::{parse_grpc_codes, parse_http_classes, Defaults};
use pimesh_api::discovery::ServicePolicy;
use std::time::Duration;

/// The settings one destination's requests are sent with.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Whole request, retries included, until the response head.
    pub timeout: Option<Duration>,
    /// Each try, until its response head.
    pub per_try_timeout: Option<Duration>,
    /// Retries after the first try; 0: none.
    pub retry_limit: u32,
    /// Inclusive ranges of HTTP statuses that are retried.
    pub retry_http: Vec<(u16, u16)>,
    /// gRPC status codes that are retried (trailers-only responses).
    pub retry_grpc: Vec<u32>,
    /// Also retry POST/PATCH and other non-idempotent methods.
    pub retry_non_idempotent: bool,
    /// The budget shared by every request to the destination; kept across
    /// policy updates unless its parameters change.
    pub budget: Budget,
    /// Circuit breaking: consecutive failures that eject an endpoint (0: never).
    pub failure_accrual: u32,
    /// First probe of an ejected endpoint after this long.
    pub min_backoff: Duration,
    /// Longest wait between probes.
    pub max_backoff: Duration,
}

impl Policy {
    /// The policy of a destination whose service set `p`; `previous`
    /// lends its budget when the parameters are unchanged, so that a
    /// policy update does not refill it.
    pub fn new(p: &ServicePolicy, d: &Defaults, previous: Option<&Policy>) -> Policy {
        let ms = |v: Option<u64>, default: Option<Duration>| match v {
            Some(0) => None,
            Some(ms) => Some(Duration::from_millis(ms)),
            None => default,
        };
        let retry_http = p
            .retry_http
            .as_deref()
            .and_then(|c| {
                parse_http_classes(c)
                    .inspect_err(|e| tracing::warn!(e, "ignoring the service's retry_http"))
                    .ok()
            })
            .or_else(|| parse_http_classes(&d.retry_http).ok())
            .unwrap_or_default();
        let retry_grpc = p
            .retry_grpc
            .as_deref()
            .and_then(|c| {
                parse_grpc_codes(c)
                    .inspect_err(|e| tracing::warn!(e, "ignoring the service's retry_grpc"))
                    .ok()
            })
            .or_else(|| parse_grpc_codes(&d.retry_grpc).ok())
            .unwrap_or_default();
        let ratio = p
            .retry_budget_ratio
            .filter(|r| (0.0..=10.0).contains(r))
            .unwrap_or(d.retry_budget_ratio);
        let min_per_sec = p
            .retry_budget_min_per_sec
            .filter(|m| *m <= 100_000)
            .unwrap_or(d.retry_budget_min_per_sec);
        let budget = Budget::new(ratio, min_per_sec, previous.map(|p| &p.budget));
        let backoff = |v: Option<u64>, default: Duration| {
            v.filter(|ms| *ms > 0 && *ms <= 3_600_000)
                .map_or(default, Duration::from_millis)
        };
        let min_backoff = backoff(
            p.failure_accrual_min_backoff_ms,
            d.failure_accrual_min_backoff,
        );
        let max_backoff = backoff(
            p.failure_accrual_max_backoff_ms,
            d.failure_accrual_max_backoff,
        )
        .max(min_backoff);
        Policy {
            timeout: ms(p.timeout_ms, d.timeout),
            per_try_timeout: ms(p.per_try_timeout_ms, d.per_try_timeout),
            retry_limit: p.retry_limit.unwrap_or(d.retry_limit).min(10),
            retry_http,
            retry_grpc,
            retry_non_idempotent: p.retry_non_idempotent.unwrap_or(false),
            budget,
            failure_accrual: p
                .failure_accrual_consecutive
                .unwrap_or(d.failure_accrual_consecutive),
            min_backoff,
            max_backoff,
        }
    }

    /// Whether a request with `method` (gRPC or not) may be retried at
    /// all: retries are on, and the method is idempotent (RFC 9110
    /// §9.2.2), or it is gRPC (retried on its status codes, as Linkerd's
    /// gRPC routes), or the service allows non-idempotent retries.
    pub fn may_retry(&self, method: &http::Method, grpc: bool) -> bool {
        use http::Method;
        self.retry_limit > 0
            && (self.retry_non_idempotent
                || (grpc && !self.retry_grpc.is_empty())
                || matches!(
                    *method,
                    Method::GET
                        | Method::HEAD
                        | Method::OPTIONS
                        | Method::TRACE
                        | Method::PUT
                        | Method::DELETE
                ))
    }

    /// Whether a response with `status` is retried.
    pub fn retryable_status(&self, status: u16) -> bool {
        self.retry_http
            .iter()
            .any(|(lo, hi)| (*lo..=*hi).contains(&status))
    }

    /// Whether a gRPC status code is retried.
    pub fn retryable_grpc(&self, code: u32) -> bool {
        self.retry_grpc.contains(&code)
    }

    /// Counts a request in the budget (every original request deposits).
    pub fn deposit(&self) {
        self.budget.deposit();
    }

    /// Takes one retry from the budget; `false` when it is spent.
    pub fn withdraw(&self) -> bool {
        self.budget.withdraw()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Defaults {
        crate::config::Config::from_env(&std::collections::HashMap::<&str, &str>::new())
            .unwrap()
            .outbound
            .defaults
    }

    #[test]
    fn classes_and_codes() {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            parse_http_classes(&s(&["5xx", "429", "gateway-error", "500-504"])).unwrap(),
            [(500, 599), (429, 429), (502, 504), (500, 504)]
        );
        assert!(parse_http_classes(&s(&["9xx"])).is_err());
        assert!(parse_http_classes(&s(&["504-500"])).is_err());
        assert_eq!(
            parse_grpc_codes(&s(&["unavailable", "DEADLINE_EXCEEDED", "8"])).unwrap(),
            [14, 4, 8]
        );
        assert!(parse_grpc_codes(&s(&["nope"])).is_err());
        assert!(parse_grpc_codes(&s(&["17"])).is_err());
    }

    #[test]
    fn service_policy_over_defaults() {
        let d = defaults();
        let p = Policy::new(&ServicePolicy::default(), &d, None);
        // Linkerd's defaults: no retries, no timeouts, breaker at 7.
        assert_eq!(p.retry_limit, 0);
        assert!(!p.may_retry(&http::Method::GET, false));
        assert_eq!((p.timeout, p.per_try_timeout), (None, None));
        assert_eq!(p.failure_accrual, 7);
        assert_eq!(p.min_backoff, Duration::from_secs(1));
        let sp = ServicePolicy {
            retry_limit: Some(2),
            timeout_ms: Some(2000),
            retry_http: Some(vec!["503".into()]),
            retry_budget_ratio: Some(-3.0), // nonsense: the default applies
            failure_accrual_min_backoff_ms: Some(5000),
            failure_accrual_max_backoff_ms: Some(10), // below the min: raised
            ..Default::default()
        };
        let q = Policy::new(&sp, &d, Some(&p));
        assert!(p.budget.is(&q.budget), "same budget parameters");
        assert_eq!(q.timeout, Some(Duration::from_secs(2)));
        assert!(q.may_retry(&http::Method::GET, false));
        assert!(q.may_retry(&http::Method::PUT, false));
        assert!(!q.may_retry(&http::Method::POST, false));
        assert!(q.may_retry(&http::Method::POST, true), "gRPC by status");
        assert!(q.retryable_status(503) && !q.retryable_status(500));
        assert!(q.retryable_grpc(14));
        assert_eq!(q.max_backoff, Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn budget_is_linkerds() {
        // 20 % of requests plus 10 retries/s over 10 s.
        let p = Policy::new(
            &ServicePolicy {
                retry_limit: Some(1),
                ..Default::default()
            },
            &defaults(),
            None,
        );
        let mut retries = 0;
        for _ in 0..1000 {
            p.deposit();
            if p.withdraw() {
                retries += 1;
            }
        }
        // 1000 requests: 200 from the ratio plus the 100 reserve (10/s × 10 s).
        assert!((295..=305).contains(&retries), "{retries}");
        assert!(!p.withdraw());
    }
}
