//! Request rate limits (tmi-compat.md §6.2 "Rate limits"): one token bucket per user for requests
//! carrying a valid token (`TMI_RATELIMIT_USER_RPM`), one per client address for everything else
//! (`TMI_RATELIMIT_PUBLIC_RPM`: public endpoints, missing or bad tokens). Over the limit a request
//! is answered 429 with TMI's error body and `Retry-After`, before any IO is done for it. Pure
//! bookkeeping in memory (per replica); the middleware only verifies the token's signature.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::config::Limits;
use crate::error::ApiError;
use crate::state::AppState;

/// Routes never limited: the probes and metrics (the kubelet and Prometheus poll them).
const EXEMPT: &[&str] = &["/livez", "/readyz", "/metrics"];

/// The limiters of one replica.
pub struct RateLimits {
    users: DefaultKeyedRateLimiter<String>,
    addresses: DefaultKeyedRateLimiter<IpAddr>,
    trusted_proxies: Vec<(IpAddr, u8)>,
    disabled: bool,
}

/// `rpm` per minute on average, with bursts of a tenth of it (at least 10 or `rpm`): a page load
/// of the web client (a few dozen requests) passes at once; a client that keeps sending faster
/// than `rpm` gets 429s after about six seconds' worth.
fn quota(rpm: u32) -> Quota {
    let rate = NonZeroU32::new(rpm).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new((rpm / 10).max(rpm.min(10))).unwrap_or(NonZeroU32::MIN);
    Quota::per_minute(rate).allow_burst(burst)
}

impl RateLimits {
    pub fn new(limits: &Limits) -> Self {
        Self {
            users: DefaultKeyedRateLimiter::keyed(quota(limits.user_rpm)),
            addresses: DefaultKeyedRateLimiter::keyed(quota(limits.public_rpm)),
            trusted_proxies: limits.trusted_proxies.clone(),
            disabled: limits.rate_limiting_disabled,
        }
    }

    /// `Err(wait)` when the user is over their limit.
    pub fn check_user(&self, user: &str) -> Result<(), Duration> {
        self.users
            .check_key(&user.to_owned())
            .map_err(|n| n.wait_time_from(DefaultClock::default().now()))
    }

    /// `Err(wait)` when the address is over its limit.
    pub fn check_address(&self, ip: IpAddr) -> Result<(), Duration> {
        self.addresses
            .check_key(&ip)
            .map_err(|n| n.wait_time_from(DefaultClock::default().now()))
    }

    /// Forgets buckets that are full again, so that memory follows the active clients.
    pub fn prune(&self) {
        self.users.retain_recent();
        self.addresses.retain_recent();
        self.users.shrink_to_fit();
        self.addresses.shrink_to_fit();
    }

    /// The client's address: the peer, or, when the peer is a trusted proxy, the nearest address
    /// in `X-Forwarded-For` that is not one.
    pub fn client_address(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusted(peer) {
            return peer;
        }
        let forwarded = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|a| a.trim().parse::<IpAddr>().ok())
            .collect::<Vec<_>>();
        forwarded
            .into_iter()
            .rev()
            .find(|a| !self.trusted(*a))
            .unwrap_or(peer)
    }

    fn trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies
            .iter()
            .any(|(net, len)| in_network(ip, *net, *len))
    }
}

/// Whether `ip` lies in `net/len`.
fn in_network(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    let ip = canonical(ip);
    match (ip, canonical(net)) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len.min(32))).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len.min(128))).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// IPv4-mapped IPv6 addresses (a dual-stack listener's view of IPv4 clients) as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn too_many(wait: Duration) -> Response {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    ApiError::TooManyRequests(
        "Rate limit exceeded; retry after the time in Retry-After".into(),
        secs,
    )
    .into_response()
}

/// The middleware: counts the request against its user (a token with a valid signature; whether
/// it is revoked is the gate's business) or else its client address.
pub async fn limit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let limits = &state.rate_limits;
    if limits.disabled || EXEMPT.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let user = match crate::gate::presented_token(req.headers()) {
        Ok(Some(token)) => state
            .tokens
            .keys
            .verify(&token)
            .map(|c| format!("{}:{}", c.idp, c.sub)),
        _ => None,
    };
    let verdict = match (user, crate::server::peer(&req)) {
        (Some(user), _) => limits.check_user(&user),
        (None, Some(peer)) => limits.check_address(limits.client_address(peer.ip(), req.headers())),
        // Not served through `server::run` (in-process tests): no address to count.
        (None, None) => Ok(()),
    };
    match verdict {
        Ok(()) => next.run(req).await,
        Err(wait) => too_many(wait),
    }
}

/// Keeps the limiters' memory bounded: prunes them every minute while the state lives.
pub fn spawn_pruner(limits: std::sync::Weak<RateLimits>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            match limits.upgrade() {
                Some(l) => l.prune(),
                None => return,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(public_rpm: u32, proxies: &[(&str, u8)]) -> RateLimits {
        RateLimits::new(&Limits {
            public_rpm,
            trusted_proxies: proxies.iter().map(|(a, l)| (a.parse().unwrap(), *l)).collect(),
            ..Limits::default()
        })
    }

    #[test]
    fn a_burst_then_429_with_a_wait() {
        let l = limits(600, &[]);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..60 {
            assert!(l.check_address(ip).is_ok());
        }
        let wait = l.check_address(ip).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        assert!(
            l.check_address("192.0.2.2".parse().unwrap()).is_ok(),
            "other addresses have their own bucket"
        );
    }

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let l = limits(600, &[("10.0.0.0", 8)]);
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.9, 10.1.2.3".parse().unwrap());
        let client = l.client_address("10.0.0.7".parse().unwrap(), &h);
        assert_eq!(client, "203.0.113.9".parse::<IpAddr>().unwrap());
        let direct = l.client_address("198.51.100.1".parse().unwrap(), &h);
        assert_eq!(
            direct,
            "198.51.100.1".parse::<IpAddr>().unwrap(),
            "an untrusted peer cannot choose its address"
        );
        assert!(in_network(
            "::ffff:10.9.9.9".parse().unwrap(),
            "10.0.0.0".parse().unwrap(),
            8
        ));
        assert!(!in_network(
            "11.0.0.1".parse().unwrap(),
            "10.0.0.0".parse().unwrap(),
            8
        ));
    }
}
