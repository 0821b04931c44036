//! SSRF guard: classifies addresses and resolves target hosts to the checked address we connect to.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hickory_resolver::config::{ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::TokioResolver;

use crate::error::GatewayError;
use crate::routing::{Host, Origin};

/// Why an address must not be a target; `None` for a public unicast address.
pub fn classify(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(a) => classify_v4(a),
        IpAddr::V6(a) => classify_v6(a),
    }
}

fn classify_v4(a: Ipv4Addr) -> Option<&'static str> {
    let o = a.octets();
    Some(match o {
        [0, ..] => "unspecified ('this network', 0.0.0.0/8)",
        [127, ..] => "loopback",
        [10, ..] => "private (RFC 1918)",
        [172, b, ..] if (16..=31).contains(&b) => "private (RFC 1918)",
        [192, 168, ..] => "private (RFC 1918)",
        [169, 254, ..] => "link-local / cloud metadata",
        [100, b, ..] if (64..=127).contains(&b) => "carrier-grade NAT (RFC 6598)",
        [192, 0, 0, _] => "IETF protocol assignments",
        [192, 0, 2, _] | [198, 51, 100, _] | [203, 0, 113, _] => "documentation",
        [198, b, ..] if b == 18 || b == 19 => "benchmarking",
        [192, 88, 99, _] => "6to4 relay anycast",
        [a0, ..] if (224..=239).contains(&a0) => "multicast",
        [255, 255, 255, 255] => "broadcast",
        [a0, ..] if a0 >= 240 => "reserved (240.0.0.0/4)",
        _ => return None,
    })
}

fn classify_v6(a: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = a.to_ipv4_mapped() {
        // reached over IPv4: judge the IPv4 address itself
        return classify_v4(v4);
    }
    let s = a.segments();
    if a.is_unspecified() {
        return Some("unspecified");
    }
    if a.is_loopback() {
        return Some("loopback");
    }
    Some(match s[0] {
        0x0000 => "IPv4-compatible / reserved (::/8)",
        0x0064 if s[1] == 0xff9b => {
            // NAT64: judge the embedded IPv4 address; the local-use prefix 64:ff9b:1::/48 is private
            if s[2] == 1 {
                "NAT64 local-use"
            } else {
                let v4 =
                    Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
                return classify_v4(v4);
            }
        }
        0x0100 if s[1..4] == [0, 0, 0] => "discard-only (100::/64)",
        0x2001 if s[1] == 0 => "Teredo",
        0x2001 if s[1] == 0x0db8 => "documentation",
        0x2001 if s[1] < 0x0200 => "IETF protocol assignments",
        0x2002 => {
            let v4 = Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8);
            return classify_v4(v4);
        }
        x if x & 0xfe00 == 0xfc00 => "unique local (ULA)",
        x if x & 0xffc0 == 0xfe80 => "link-local",
        x if x & 0xffc0 == 0xfec0 => "site-local (deprecated)",
        x if x & 0xff00 == 0xff00 => "multicast",
        _ => return None,
    })
}

/// Resolves target hosts and refuses those that are, or resolve to, non-public addresses.
pub struct Guard {
    resolver: TokioResolver,
}

impl Default for Guard {
    fn default() -> Self {
        Self::new()
    }
}

impl Guard {
    pub fn new() -> Self {
        let resolver = match TokioResolver::builder_tokio() {
            Ok(b) => b.build(),
            Err(e) => {
                // never fall back to public resolvers: only the hosts file then
                log::warn!(
                    "cannot read the system DNS configuration ({e}); only /etc/hosts names resolve"
                );
                TokioResolver::builder_with_config(
                    ResolverConfig::new(),
                    TokioConnectionProvider::default(),
                )
                .with_options(ResolverOpts::default())
                .build()
            }
        };
        Guard { resolver }
    }

    /// The address to connect to for `origin`: resolved once, every answer checked, and the
    /// checked address is the one connected to (no DNS-rebinding gap).
    pub async fn resolve(
        &self,
        origin: &Origin,
        allow_private: bool,
    ) -> Result<SocketAddr, GatewayError> {
        let refuse = |addr: IpAddr, why: &str| {
            GatewayError::Forbidden(format!(
                "target {origin} is refused: {addr} is a {why} address; to allow it, list the origin under `origins:` with `allow_private: true`"
            ))
        };
        let ip = match &origin.host {
            Host::Ip(ip) => *ip,
            Host::Name(name) => {
                if !allow_private && (name == "localhost" || name.ends_with(".localhost")) {
                    return Err(refuse(IpAddr::V4(Ipv4Addr::LOCALHOST), "loopback"));
                }
                let answers = self
                    .resolver
                    .lookup_ip(format!("{name}."))
                    .await
                    .map_err(|e| GatewayError::BadGateway(format!("cannot resolve {name}: {e}")))?;
                let mut first = None;
                for ip in answers.iter() {
                    if !allow_private {
                        if let Some(why) = classify(ip) {
                            return Err(refuse(ip, why));
                        }
                    }
                    first.get_or_insert(ip);
                }
                first.ok_or_else(|| GatewayError::BadGateway(format!("{name} has no address")))?
            }
        };
        if !allow_private {
            if let Some(why) = classify(ip) {
                return Err(refuse(ip, why));
            }
        }
        Ok(SocketAddr::new(ip, origin.port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocked(s: &str) -> bool {
        classify(s.parse().unwrap()).is_some()
    }

    #[test]
    fn refuses_every_non_public_range() {
        for a in [
            "127.0.0.1",
            "127.255.255.254",
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "10.255.255.255",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.0.1",
            "100.64.0.1",
            "100.127.255.255",
            "100.100.100.200",
            "224.0.0.1",
            "239.255.255.250",
            "255.255.255.255",
            "240.0.0.1",
            "192.0.0.170",
            "192.0.2.1",
            "198.18.0.1",
            "::1",
            "::",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "fc00::1",
            "fd00:ec2::254",
            "fe80::1",
            "febf::1",
            "ff02::1",
            "fec0::1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::7f00:1",
            "64:ff9b:1::1",
            "2002:7f00:1::",
            "2002:a00:1::",
            "2001::1",
            "2001:db8::1",
            "::127.0.0.1",
            "100::1",
        ] {
            assert!(blocked(a), "{a} must be refused");
        }
    }

    #[test]
    fn allows_public_unicast() {
        for a in [
            "1.1.1.1",
            "8.8.8.8",
            "104.18.6.192",
            "172.15.255.255",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "169.253.1.1",
            "11.0.0.1",
            "2606:4700::6810:1",
            "2a00:1450:4001::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::",
        ] {
            assert!(!blocked(a), "{a} must be allowed");
        }
    }

    #[tokio::test]
    async fn guard_checks_literals_and_localhost_names_without_traffic() {
        let g = Guard::new();
        for url in [
            "http://127.0.0.2:1",
            "http://127.1:1",
            "http://2130706433:1",
            "http://0x7f000001:1",
            "http://[::ffff:127.0.0.1]:1",
            "http://localhost:1",
            "http://foo.localhost:1",
            "http://017700000001:1",
            "http://[::1]:1",
            "http://169.254.169.254",
            "http://0xa9fea9fe",
            "http://10.1",
            "http://192.168.0.1",
        ] {
            let (o, _) = Origin::parse(url).unwrap();
            let e = g.resolve(&o, false).await.unwrap_err();
            assert_eq!(e.status(), 403, "{url}");
        }
        let (o, _) = Origin::parse("http://127.0.0.1:9").unwrap();
        assert_eq!(
            g.resolve(&o, true).await.unwrap(),
            "127.0.0.1:9".parse().unwrap()
        );
        let (o, _) = Origin::parse("https://8.8.8.8").unwrap();
        assert_eq!(
            g.resolve(&o, false).await.unwrap(),
            "8.8.8.8:443".parse().unwrap()
        );
    }
}
