//! The one place that decides who the client is: the connection's peer, or, when that
//! peer is a proxy listed in `GATEWAY_TRUSTED_PROXIES`, the address it forwarded.
//!
//! Behind the shipped nginx every connection comes from 127.0.0.1; without this the
//! login throttle, the notify rate limit, audit rows and logs would see one client.
//! Forwarding headers are read only from trusted peers (anyone else could write them),
//! and `X-Forwarded-For` is read from the right: each trusted hop appends the address it
//! saw, so the first untrusted address from the right is the real client.

use std::net::IpAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;

/// A network in CIDR notation (`10.0.0.0/8`, `::1/128`; a bare address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `addr[/prefix]`; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let network: IpAddr = addr.parse().map_err(|_| format!("`{text}` is not an IP address or CIDR"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{text}`: the prefix must be 0-{max}"))?,
        };
        Ok(Cidr { network, prefix })
    }

    /// Parses a comma- or space-separated list (empty: no trusted proxies).
    pub fn parse_list(text: &str) -> Result<Vec<Cidr>, String> {
        text.split([',', ' ']).filter(|s| !s.trim().is_empty()).map(Cidr::parse).collect()
    }

    /// Whether `ip` is inside this network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

fn trusted(ip: IpAddr, proxies: &[Cidr]) -> bool {
    proxies.iter().any(|c| c.contains(ip))
}

/// The client's address: the peer unless the peer is a trusted proxy, then the first
/// untrusted address of `X-Forwarded-For` read from the right (all trusted: the leftmost),
/// else `X-Real-IP`, else the peer. Unparsable header values are ignored.
pub fn client_ip(peer: Option<IpAddr>, headers: &HeaderMap, proxies: &[Cidr]) -> Option<IpAddr> {
    let peer = peer.map(canonical);
    let p = peer?;
    if !trusted(p, proxies) {
        return peer;
    }
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .map(canonical)
        .collect();
    if let Some(first_untrusted) = hops.iter().rev().find(|ip| !trusted(**ip, proxies)) {
        return Some(*first_untrusted);
    }
    if let Some(leftmost) = hops.first() {
        return Some(*leftmost);
    }
    let real = headers.get("x-real-ip").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<IpAddr>().ok());
    real.map(canonical).or(peer)
}

/// The resolved client address, stored in the request's extensions by [`resolve`].
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub Option<IpAddr>);

/// The proxies whose forwarding headers are believed (`GATEWAY_TRUSTED_PROXIES`), as the
/// middleware's state (so this module needs no application state).
pub type TrustedProxies = std::sync::Arc<[Cidr]>;

/// Middleware: resolves the client address once per request, before logging and handlers.
pub async fn resolve(State(trusted): State<TrustedProxies>, mut request: Request, next: Next) -> Response {
    let peer = request.extensions().get::<ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
    let ip = client_ip(peer, request.headers(), &trusted);
    request.extensions_mut().insert(ClientIp(ip));
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidrs_parse_and_match() {
        let lo = Cidr::parse("127.0.0.0/8").unwrap();
        assert!(lo.contains(ip("127.1.2.3")) && !lo.contains(ip("128.0.0.1")));
        assert!(lo.contains(ip("::ffff:127.0.0.1")), "IPv4-mapped addresses are IPv4");
        assert!(Cidr::parse("::1").unwrap().contains(ip("::1")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("nonsense").is_err());
        assert_eq!(Cidr::parse_list(" 10.0.0.0/8, ::1 ").unwrap().len(), 2);
        assert!(Cidr::parse_list("").unwrap().is_empty());
    }

    #[test]
    fn forwarded_addresses_are_believed_only_from_trusted_peers() {
        let proxies = Cidr::parse_list("127.0.0.1, 10.0.0.0/8").unwrap();
        let xff = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.7, 10.0.0.5")]);
        assert_eq!(client_ip(Some(ip("127.0.0.1")), &xff, &proxies), Some(ip("203.0.113.7")));
        assert_eq!(client_ip(Some(ip("198.51.100.1")), &xff, &proxies), Some(ip("198.51.100.1")), "untrusted peer");
        assert_eq!(client_ip(Some(ip("127.0.0.1")), &xff, &[]), Some(ip("127.0.0.1")), "no trusted proxies");
        let real = headers(&[("x-real-ip", "203.0.113.9")]);
        assert_eq!(client_ip(Some(ip("127.0.0.1")), &real, &proxies), Some(ip("203.0.113.9")));
        let junk = headers(&[("x-forwarded-for", "not-an-ip")]);
        assert_eq!(client_ip(Some(ip("127.0.0.1")), &junk, &proxies), Some(ip("127.0.0.1")));
        let all_trusted = headers(&[("x-forwarded-for", "10.0.0.9, 10.0.0.5")]);
        assert_eq!(client_ip(Some(ip("127.0.0.1")), &all_trusted, &proxies), Some(ip("10.0.0.9")));
        assert_eq!(client_ip(None, &xff, &proxies), None);
    }
}
