//! Who the client is behind nginx: `X-Forwarded-For` and `X-Forwarded-Proto`, honoured only
//! from a trusted proxy.
//!
//! A peer is trusted when it is listed in `--trusted-proxies`, or when the connection came over
//! the unix socket: only local processes with access to the socket file (mode 660, group of
//! nginx under systemd) can connect there, and in the shipped layout that is nginx. A client
//! talking to a TCP port directly can put anything in these headers, so from an untrusted peer
//! they are ignored and the peer itself is the client.
//!
//! `X-Forwarded-For` is read from the right: each proxy appends the address it saw, so the
//! rightmost address that is not itself a trusted proxy is the client. Addresses further left
//! were written by the client or by proxies we do not know, and are never believed.

use std::net::IpAddr;

use http::HeaderMap;

use crate::config::Config;
use crate::worker::net::Peer;

/// Whether `peer` may set the forwarded headers.
pub fn is_trusted(peer: Peer, config: &Config) -> bool {
    match peer {
        Peer::Unix => true,
        Peer::Tcp(addr) => config.trusted_proxies.contains(&addr.ip()),
    }
}

/// The client's address: from `X-Forwarded-For` when the peer is trusted, else the peer's.
/// `None` for a unix-socket peer that sent no usable `X-Forwarded-For`.
pub fn client_ip(headers: &HeaderMap, peer: Peer, config: &Config) -> Option<IpAddr> {
    if !is_trusted(peer, config) {
        return peer.ip();
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    // From the right: skip trusted proxies; stop believing at the first unreadable hop.
    let mut closest = peer.ip();
    for hop in hops.iter().rev() {
        let Ok(ip) = hop.parse::<IpAddr>() else {
            break;
        };
        if !config.trusted_proxies.contains(&ip) {
            return Some(ip);
        }
        closest = Some(ip);
    }
    closest
}

/// Whether the client reached the trusted proxy over HTTPS (`X-Forwarded-Proto: https`): then
/// cookies are `Secure`. Always false from an untrusted peer (we do not terminate TLS).
pub fn is_https(headers: &HeaderMap, peer: Peer, config: &Config) -> bool {
    is_trusted(peer, config)
        && headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: Config,
    }

    fn config(trusted: &str) -> Config {
        let mut args = vec!["t"];
        if !trusted.is_empty() {
            args.extend(["--trusted-proxies", trusted]);
        }
        Cli::parse_from(args).config
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    fn tcp(ip: &str) -> Peer {
        Peer::Tcp(std::net::SocketAddr::new(ip.parse().unwrap(), 40000))
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn untrusted_peers_cannot_spoof() {
        let c = config("");
        let h = headers(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
        ]);
        assert_eq!(client_ip(&h, tcp("203.0.113.9"), &c), ip("203.0.113.9"));
        assert!(!is_https(&h, tcp("203.0.113.9"), &c));
    }

    #[test]
    fn unix_socket_peer_is_nginx() {
        let c = config("");
        let h = headers(&[
            ("x-forwarded-for", "198.51.100.7"),
            ("x-forwarded-proto", "https"),
        ]);
        assert_eq!(client_ip(&h, Peer::Unix, &c), ip("198.51.100.7"));
        assert!(is_https(&h, Peer::Unix, &c));
        assert_eq!(client_ip(&HeaderMap::new(), Peer::Unix, &c), None);
        assert!(!is_https(&HeaderMap::new(), Peer::Unix, &c));
    }

    #[test]
    fn rightmost_untrusted_hop_wins() {
        let c = config("10.0.0.1,10.0.0.2");
        // The client forged the first entry; nginx (10.0.0.2) appended what it saw, and an
        // inner trusted proxy (10.0.0.1) sits in between.
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.0.0.1")]);
        assert_eq!(client_ip(&h, tcp("10.0.0.2"), &c), ip("198.51.100.7"));
        // Split over several header lines; an unreadable hop ends what is believed.
        let h = headers(&[
            ("x-forwarded-for", "198.51.100.7"),
            ("x-forwarded-for", "10.0.0.1"),
        ]);
        assert_eq!(client_ip(&h, tcp("10.0.0.2"), &c), ip("198.51.100.7"));
        let h = headers(&[("x-forwarded-for", "not-an-ip")]);
        assert_eq!(client_ip(&h, tcp("10.0.0.2"), &c), ip("10.0.0.2"));
        // Only proxies in the chain: the leftmost is as close to the client as we can get.
        let h = headers(&[("x-forwarded-for", "10.0.0.1")]);
        assert_eq!(client_ip(&h, tcp("10.0.0.2"), &c), ip("10.0.0.1"));
        let h = headers(&[("x-forwarded-proto", "http, HTTPS")]);
        assert!(is_https(&h, tcp("10.0.0.1"), &c));
    }
}
