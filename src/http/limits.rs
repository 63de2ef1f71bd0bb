//! REST rate limits (DESIGN §5): each user's requests per minute by tier
//! (`tiers.<t>.rest_per_minute`, counted in the [`super::auth::AuthUser`] extractor, keys and
//! tokens of one user together), and requests per minute per client address on the routes that
//! need no token (`server.rest_per_minute_per_ip`). The server API, `/healthz`, `/readyz`,
//! `/metrics` and the WebSocket are not limited here. Beyond a limit: 429 with `Retry-After` and
//! `RateLimit-Limit` / `RateLimit-Remaining` / `RateLimit-Reset`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::AppState;
use super::error::ApiError;
use crate::config::Settings;
use crate::tier::Tier;

pub struct RestLimits {
    per_user: HashMap<Tier, (u32, DefaultKeyedRateLimiter<String>)>,
    per_ip: (u32, DefaultKeyedRateLimiter<IpAddr>),
    checks: AtomicU64,
}

fn per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN))
}

impl RestLimits {
    pub fn new(settings: &Settings) -> Self {
        let per_user = Tier::ALL
            .into_iter()
            .map(|t| {
                let n = settings.tier(t).rest_per_minute;
                (t, (n, RateLimiter::keyed(per_minute(n))))
            })
            .collect();
        let n = settings.server.rest_per_minute_per_ip;
        Self {
            per_user,
            per_ip: (n, RateLimiter::keyed(per_minute(n))),
            checks: AtomicU64::new(0),
        }
    }

    /// Forget idle keys now and then, so the maps do not grow with every user ever seen.
    fn prune(&self) {
        if self.checks.fetch_add(1, Ordering::Relaxed) % 10_000 == 9_999 {
            for (_, l) in self.per_user.values() {
                l.retain_recent();
            }
            self.per_ip.1.retain_recent();
        }
    }

    /// One request of `user` at `tier`.
    pub fn check_user(&self, user: &str, tier: Tier) -> Result<(), ApiError> {
        self.prune();
        let Some((limit, limiter)) = self.per_user.get(&tier) else {
            return Ok(());
        };
        limiter
            .check_key(&user.to_owned())
            .map_err(|not_until| too_many(*limit, not_until.wait_time_from(DefaultClock::default().now())))
    }

    /// One request from `ip` to a route that needs no token.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), ApiError> {
        self.prune();
        let (limit, limiter) = &self.per_ip;
        limiter
            .check_key(&ip)
            .map_err(|not_until| too_many(*limit, not_until.wait_time_from(DefaultClock::default().now())))
    }
}

fn too_many(limit: u32, wait: std::time::Duration) -> ApiError {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let mut e = ApiError::new(
        axum::http::StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("more than {limit} requests a minute; retry in {secs} s"),
    );
    e.rate_limit = Some((limit, secs.max(1)));
    e
}

/// The per-address limit, as a layer on the routes that need no token.
pub async fn per_ip(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let ip = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    if let Some(ip) = ip
        && let Err(e) = app.limits.check_ip(ip)
    {
        return e.into_response();
    }
    next.run(request).await
}
