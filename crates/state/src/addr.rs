//! What counts as a network address in the mesh: `host:port`, nothing more.
//!
//! Peers advertise addresses in gossip, and those strings end up in URLs and socket calls. A
//! string like `127.0.0.1:80/admin?x=` would turn a forwarded request into a request to any path
//! on any host, so every advertised address is parsed here first and only the canonical form is
//! ever used.

use std::net::{IpAddr, SocketAddr};

/// A validated `host:port`: an IP literal (IPv6 in brackets) or a DNS name, and a non-zero port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl HostPort {
    /// The IP address, when the host is an IP literal.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok()
    }

    pub fn socket_addr(&self) -> Option<SocketAddr> {
        self.ip().map(|ip| SocketAddr::new(ip, self.port))
    }
}

impl std::fmt::Display for HostPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Parses `host:port` strictly: no scheme, path, query, user info, whitespace or empty parts; a
/// DNS name is at most 253 bytes of letters, digits, `-` and `.` in labels of 1..=63 bytes that do
/// not start or end with `-`.
pub fn parse_host_port(s: &str) -> Result<HostPort, String> {
    if s.len() > 260 {
        return Err("address is longer than 260 bytes".into());
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        if sa.port() == 0 {
            return Err(format!("`{s}` has port 0"));
        }
        let host = match sa.ip() {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        };
        return Ok(HostPort {
            host,
            port: sa.port(),
        });
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("`{s}` is not HOST:PORT (no port)"));
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("`{s}` is not HOST:PORT (port `{port}` is not 1..65535)"))?;
    if port == 0 {
        return Err(format!("`{s}` has port 0"));
    }
    if host.is_empty() || host.len() > 253 {
        return Err(format!("`{s}` has no valid host"));
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if !host.trim_end_matches('.').split('.').all(label_ok) {
        return Err(format!(
            "`{s}` is not HOST:PORT (host `{host}` is neither an IP address nor a DNS name)"
        ));
    }
    Ok(HostPort {
        host: host.to_ascii_lowercase(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ips_and_names() {
        for (s, want) in [
            ("127.0.0.1:7337", "127.0.0.1:7337"),
            ("[::1]:80", "[::1]:80"),
            ("node-1.example.org:443", "node-1.example.org:443"),
            ("Node.LAN:1", "node.lan:1"),
            ("localhost:65535", "localhost:65535"),
        ] {
            assert_eq!(parse_host_port(s).unwrap().to_string(), want, "{s}");
        }
        assert_eq!(
            parse_host_port("127.0.0.2:9").unwrap().socket_addr(),
            Some("127.0.0.2:9".parse().unwrap())
        );
        assert_eq!(parse_host_port("a.b:9").unwrap().socket_addr(), None);
    }

    #[test]
    fn refuses_everything_that_is_not_host_port() {
        for s in [
            "",
            "127.0.0.1",
            "127.0.0.1:0",
            "127.0.0.1:70000",
            "127.0.0.1:80/admin?x=",
            "127.0.0.1:P/any/path?x=",
            "http://a:1",
            "user@a:1",
            "a b:1",
            ":80",
            "-a:1",
            "a-:1",
            "a..b:1",
            "a:1:2",
            "a/b:1",
            "a?:1",
            "a#:1",
            "a%2f:1",
            "[::1]",
            "::1:80x",
        ] {
            assert!(parse_host_port(s).is_err(), "{s} accepted");
        }
        assert!(parse_host_port(&format!("{}:1", "a".repeat(64))).is_err());
        assert!(parse_host_port(&"a".repeat(300)).is_err());
    }
}
