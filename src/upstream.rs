//! HTTP to upstream services (market sources, language-model providers, webhooks): one client
//! configuration and one reading of what a refusal's headers ask for.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// The HTTP client for upstream calls: our user agent, a 10 s connect timeout; per-request
/// timeouts are the caller's.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(concat!("gpuscout-hub/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// Whether `ip` is an address on the public internet: not loopback, private, link-local (cloud
/// metadata services live there), CGNAT, unspecified, multicast, broadcast or documentation.
/// Webhooks and push endpoints are users' URLs: they must not reach the hub's own network.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    let cgnat = a == 100 && (64..128).contains(&b);
    let benchmarking = a == 198 && (b == 18 || b == 19);
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || cgnat
        || benchmarking
        || a == 0
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    let unique_local = (first & 0xfe00) == 0xfc00; // fc00::/7, AWS metadata fd00:ec2::254 too
    let link_local = (first & 0xffc0) == 0xfe80;
    let documentation = first == 0x2001 && ip.segments()[1] == 0x0db8;
    !(ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() || unique_local || link_local || documentation)
}

/// Resolves names to their public addresses only; a name with none fails to connect. Used at
/// send time, after DNS, so a name that rebinds to an internal address is caught too.
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| is_public(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!("{host} has no public address").into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The client for users' URLs (webhooks): redirects are not followed, and unless
/// `allow_private`, only public addresses are connected to (see [`check_user_url`] for URLs
/// that name an address directly, which no resolver sees).
pub fn user_url_client(allow_private: bool) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("gpuscout-hub/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none());
    if !allow_private {
        builder = builder.dns_resolver(std::sync::Arc::new(PublicOnly));
    }
    builder.build().unwrap_or_else(|_| reqwest::Client::new())
}

/// Whether a user's URL may be requested: `https` (or `http` with `allow_http`), and a literal
/// address only when public (or `allow_private`).
pub fn check_user_url(url: &str, allow_http: bool, allow_private: bool) -> Result<(), &'static str> {
    let url = reqwest::Url::parse(url).map_err(|_| "not a URL")?;
    match url.scheme() {
        "https" => {}
        "http" if allow_http => {}
        _ => return Err("must be https"),
    }
    let host = url.host_str().ok_or("has no host")?;
    let literal: Option<IpAddr> = host.trim_start_matches('[').trim_end_matches(']').parse().ok();
    if !allow_private && literal.is_some_and(|ip| !is_public(ip)) {
        return Err("points at a private or local address");
    }
    Ok(())
}

/// A response's `Retry-After` in seconds (the HTTP-date form is not honoured: the caller's own
/// backoff applies).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "fc00::1",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "100.128.0.1"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn user_urls_must_be_https_and_not_name_a_private_address() {
        assert_eq!(check_user_url("https://hooks.example.com/x", false, false), Ok(()));
        assert_eq!(
            check_user_url("http://hooks.example.com/x", false, false),
            Err("must be https")
        );
        assert_eq!(check_user_url("http://hooks.example.com/x", true, false), Ok(()));
        assert_eq!(
            check_user_url("https://127.0.0.1/x", false, false),
            Err("points at a private or local address")
        );
        assert_eq!(
            check_user_url("https://[::1]:8443/x", false, false),
            Err("points at a private or local address")
        );
        assert_eq!(
            check_user_url("https://169.254.169.254/latest", false, false),
            Err("points at a private or local address")
        );
        assert_eq!(check_user_url("https://127.0.0.1/x", false, true), Ok(()));
        assert_eq!(check_user_url("ftp://example.com/", true, true), Err("must be https"));
    }

    #[tokio::test]
    async fn a_name_resolving_to_a_local_address_is_not_connected_to() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let url = format!("http://localhost:{port}/hook");
        let refused = user_url_client(false).post(&url).send().await;
        assert!(refused.is_err(), "localhost must not be reached");
        // Allowed for self-hosted setups.
        let served = tokio::spawn(async move { listener.accept().await.is_ok() });
        let _ = user_url_client(true)
            .post(&url)
            .timeout(Duration::from_millis(300))
            .send()
            .await;
        assert!(served.await.unwrap(), "with allow_private, localhost is reached");
    }

    #[test]
    fn retry_after_reads_seconds_only() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static(" 7 "));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(RETRY_AFTER, HeaderValue::from_static("Wed, 21 Oct 2026 07:28:00 GMT"));
        assert_eq!(retry_after(&h), None);
    }
}
