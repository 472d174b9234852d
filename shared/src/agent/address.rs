//! Where a tool may be called: the kind of every address a tool's host names, and which kinds
//! the outbound rules admit (public only; loopback when `AGENT_TOOL_ALLOW_LOOPBACK` is on, as in
//! development and tests; never a private, link-local, metadata or otherwise reserved address).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What an address is, as far as calling a tool goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressKind {
    Public,
    Loopback,
    /// RFC 1918, carrier-grade NAT (100.64/10), IPv6 unique local (fc00::/7).
    Private,
    /// 169.254/16 and fe80::/10.
    LinkLocal,
    /// A cloud instance metadata service: 169.254.169.254 (and AWS's fd00:ec2::254).
    Metadata,
    /// Unspecified, broadcast, multicast, documentation, benchmarking and reserved ranges.
    Reserved,
}

impl AddressKind {
    /// The kind of `ip` (an IPv4 address mapped into or translated to IPv6 is judged as IPv4).
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self::of_v4(v4),
            IpAddr::V6(v6) => Self::of_v6(v6),
        }
    }

    fn of_v4(ip: Ipv4Addr) -> Self {
        let [a, b, c, _] = ip.octets();
        if ip == Ipv4Addr::new(169, 254, 169, 254) {
            Self::Metadata
        } else if ip.is_loopback() {
            Self::Loopback
        } else if ip.is_private() || (a == 100 && (64..128).contains(&b)) {
            Self::Private
        } else if ip.is_link_local() {
            Self::LinkLocal
        } else if a == 0
            || a >= 224
            || ip.is_documentation()
            || (a == 198 && (b == 18 || b == 19))
            || (a == 192 && b == 0 && c == 0)
        {
            // 0/8, multicast and 240/4 (with broadcast), TEST-NETs, benchmarking, IETF protocol
            // assignments.
            Self::Reserved
        } else {
            Self::Public
        }
    }

    fn of_v6(ip: Ipv6Addr) -> Self {
        if let Some(v4) = ip.to_ipv4_mapped() {
            return Self::of_v4(v4);
        }
        let segments = ip.segments();
        // NAT64 (64:ff9b::/96) reaches the IPv4 address in its last 32 bits.
        if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
            let [.., hi, lo] = segments;
            return Self::of_v4(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo)));
        }
        if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
            Self::Metadata
        } else if ip.is_loopback() {
            Self::Loopback
        } else if segments[0] & 0xfe00 == 0xfc00 {
            Self::Private
        } else if segments[0] & 0xffc0 == 0xfe80 {
            Self::LinkLocal
        } else if ip.is_unspecified() || ip.is_multicast() || segments[0] == 0x2001 && segments[1] == 0xdb8 {
            Self::Reserved
        } else {
            Self::Public
        }
    }

    /// Whether a tool may be called at an address of this kind.
    pub fn allowed(self, allow_loopback: bool) -> bool {
        match self {
            Self::Public => true,
            Self::Loopback => allow_loopback,
            Self::Private | Self::LinkLocal | Self::Metadata | Self::Reserved => false,
        }
    }

    /// How a refusal names it.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Public => "a public address",
            Self::Loopback => "a loopback address",
            Self::Private => "a private address",
            Self::LinkLocal => "a link-local address",
            Self::Metadata => "the instance metadata address",
            Self::Reserved => "a reserved address",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::AddressKind::{self, *};

    fn kind(ip: &str) -> AddressKind {
        AddressKind::of(ip.parse().expect("an address"))
    }

    #[test]
    fn public_addresses_are_public() {
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"] {
            assert_eq!(kind(ip), Public, "{ip}");
        }
    }

    #[test]
    fn the_metadata_service_is_named_in_both_families() {
        assert_eq!(kind("169.254.169.254"), Metadata);
        assert_eq!(kind("fd00:ec2::254"), Metadata);
        assert_eq!(kind("::ffff:169.254.169.254"), Metadata);
        assert_eq!(kind("64:ff9b::a9fe:a9fe"), Metadata, "NAT64 of 169.254.169.254");
    }

    #[test]
    fn private_loopback_link_local_and_reserved_ranges_are_recognised() {
        for (ip, expected) in [
            ("127.0.0.1", Loopback),
            ("127.8.9.10", Loopback),
            ("::1", Loopback),
            ("::ffff:127.0.0.1", Loopback),
            ("10.1.2.3", Private),
            ("172.16.0.1", Private),
            ("172.31.255.255", Private),
            ("192.168.1.1", Private),
            ("100.64.0.1", Private),
            ("fd12:3456::1", Private),
            ("fc00::1", Private),
            ("169.254.1.1", LinkLocal),
            ("fe80::1", LinkLocal),
            ("0.0.0.0", Reserved),
            ("255.255.255.255", Reserved),
            ("224.0.0.1", Reserved),
            ("192.0.2.1", Reserved),
            ("198.18.0.1", Reserved),
            ("::", Reserved),
            ("ff02::1", Reserved),
            ("2001:db8::1", Reserved),
        ] {
            assert_eq!(kind(ip), expected, "{ip}");
        }
        assert_eq!(kind("172.32.0.1"), Public, "just outside 172.16/12");
        assert_eq!(kind("100.128.0.1"), Public, "just outside 100.64/10");
    }

    #[test]
    fn only_public_addresses_and_loopback_with_the_dev_flag_are_allowed() {
        assert!(Public.allowed(false));
        assert!(!Loopback.allowed(false));
        assert!(Loopback.allowed(true));
        for refused in [Private, LinkLocal, Metadata, Reserved] {
            assert!(!refused.allowed(true), "{refused:?}");
        }
    }
}
