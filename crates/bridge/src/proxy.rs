//! The PROXY protocol version 2 header (haproxy's proxy-protocol.txt, section 2.2) that stream
//! mode may send first on each connection: the target (nginx `proxy_protocol`, haproxy
//! `accept-proxy`, Envoy...) then sees the real client's address, not this host's.

use std::net::{IpAddr, SocketAddr};

/// The twelve bytes every version 2 header begins with.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The header for a TCP connection from `client` to `server` (command PROXY): TCP over IPv4 when
/// both addresses are IPv4, TCP over IPv6 otherwise (an IPv4 address then mapped).
pub fn header_v2(client: SocketAddr, server: SocketAddr) -> Vec<u8> {
    let mut h = Vec::with_capacity(16 + 36);
    h.extend_from_slice(&SIGNATURE);
    // Version 2, command PROXY.
    h.push(0x21);
    match (client.ip(), server.ip()) {
        (IpAddr::V4(c), IpAddr::V4(s)) => {
            // AF_INET, STREAM; 12 address bytes.
            h.push(0x11);
            h.extend_from_slice(&12u16.to_be_bytes());
            h.extend_from_slice(&c.octets());
            h.extend_from_slice(&s.octets());
        }
        (c, s) => {
            // AF_INET6, STREAM; 36 address bytes.
            h.push(0x21);
            h.extend_from_slice(&36u16.to_be_bytes());
            h.extend_from_slice(&v6(c));
            h.extend_from_slice(&v6(s));
        }
    }
    h.extend_from_slice(&client.port().to_be_bytes());
    h.extend_from_slice(&server.port().to_be_bytes());
    h
}

fn v6(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp4_header_is_the_specs_28_bytes() {
        let h = header_v2(
            "198.19.0.7:40000".parse().unwrap(),
            "198.18.0.30:443".parse().unwrap(),
        );
        let mut want = SIGNATURE.to_vec();
        want.extend_from_slice(&[0x21, 0x11, 0, 12]);
        want.extend_from_slice(&[198, 19, 0, 7, 198, 18, 0, 30]);
        want.extend_from_slice(&[0x9c, 0x40, 0x01, 0xbb]);
        assert_eq!(h, want);
    }

    #[test]
    fn tcp6_header_carries_both_addresses_and_ports() {
        let h = header_v2(
            "[2001:db8::7]:40000".parse().unwrap(),
            "[2001:db8::1e]:80".parse().unwrap(),
        );
        assert_eq!(h.len(), 16 + 36);
        assert_eq!(&h[12..16], &[0x21, 0x21, 0, 36]);
        assert_eq!(
            h[16..32],
            "2001:db8::7"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets()
        );
        assert_eq!(&h[48..52], &[0x9c, 0x40, 0, 80]);
    }

    #[test]
    fn mixed_families_are_said_in_ipv6() {
        let h = header_v2(
            "198.19.0.7:1".parse().unwrap(),
            "[2001:db8::1e]:80".parse().unwrap(),
        );
        assert_eq!(h[13], 0x21);
        assert_eq!(
            &h[16..32],
            &"::ffff:198.19.0.7"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets()
        );
    }
}
