//! Reasons a packet's headers could only be partly parsed, and their counters.
//!
//! Hot-path rule: [`ParseErrorCounters::record`] runs per bad packet on a PMD core:
//! an array increment, no allocation, lock, atomic or log. Each PMD owns its own
//! counters; the management thread reads a copy sent by the PMD (or a snapshot the
//! PMD publishes), never the live array.

/// Why [`crate::parse::parse`] stopped before the end of the headers.
///
/// The partial key then holds every header that was complete and sane before the
/// problem. [`ParseError::is_malformed`] tells bogus packets (truncated or
/// contradicting their protocol) from well-formed ones the key cannot describe
/// fully (OVS forwards those with the partial key).
///
/// Exported as the `reason` label of `ferroswitch_parse_errors_total`; see
/// [`ParseError::as_str`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ParseError {
    /// Fewer than 14 bytes: no Ethernet header. The key holds only metadata.
    TruncatedEthernet = 0,
    /// A VLAN TPID (0x8100/0x88a8) not followed by a TCI and an ethertype.
    /// `dl_type` holds that TPID, as in OVS.
    TruncatedVlan,
    /// A third VLAN tag: the key holds two; `dl_type` is the third tag's TPID and the
    /// payload is not parsed (OVS does the same). Not malformed.
    TooManyVlans,
    /// ARP/RARP shorter than the 28 bytes of an Ethernet/IPv4 ARP message.
    TruncatedArp,
    /// ARP/RARP for another hardware or protocol type than Ethernet/IPv4: the ARP
    /// fields stay zero, as in OVS. Not malformed.
    UnsupportedArp,
    /// IPv4 header shorter than 20 bytes or than its IHL, or total length beyond
    /// the frame. In the last case the IPv4 fields are filled but L4 is not parsed.
    TruncatedIpv4,
    /// IPv4 version field not 4, IHL < 5, or total length < IHL * 4.
    BadIpv4Header,
    /// IPv6 header shorter than 40 bytes, or payload length beyond the frame (then
    /// the IPv6 fields are filled but nothing after them is parsed).
    TruncatedIpv6,
    /// IPv6 version field not 6.
    BadIpv6Header,
    /// An IPv6 extension header runs past the payload. `nw_proto` holds that
    /// header's type.
    TruncatedIpv6ExtHeader,
    /// More IPv6 extension headers than the parser walks
    /// (`parse::MAX_IPV6_EXT_HEADERS`). Not malformed.
    TooManyIpv6ExtHeaders,
    /// TCP, UDP, SCTP, ICMP or ICMPv6 header (with TCP options, or an ND target)
    /// runs past the IP payload.
    TruncatedL4,
    /// TCP data offset < 5.
    BadTcpHeader,
    /// ICMPv6 neighbour discovery option with length 0, running past the payload, or
    /// a repeated link-layer address option. ND fields are cleared, as in OVS;
    /// `tp_src`/`tp_dst` stay.
    BadNdOption,
}

impl ParseError {
    /// Number of variants.
    pub const COUNT: usize = 14;

    /// Every variant, in [`ParseError::index`] order.
    pub const ALL: [ParseError; Self::COUNT] = [
        ParseError::TruncatedEthernet,
        ParseError::TruncatedVlan,
        ParseError::TooManyVlans,
        ParseError::TruncatedArp,
        ParseError::UnsupportedArp,
        ParseError::TruncatedIpv4,
        ParseError::BadIpv4Header,
        ParseError::TruncatedIpv6,
        ParseError::BadIpv6Header,
        ParseError::TruncatedIpv6ExtHeader,
        ParseError::TooManyIpv6ExtHeaders,
        ParseError::TruncatedL4,
        ParseError::BadTcpHeader,
        ParseError::BadNdOption,
    ];

    /// Dense index in `0..COUNT`, for counter arrays.
    #[inline(always)]
    pub fn index(self) -> usize {
        // Discriminants are 0..COUNT in declaration order (tested below).
        self as usize
    }

    /// snake_case name, used as a Prometheus label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ParseError::TruncatedEthernet => "truncated_ethernet",
            ParseError::TruncatedVlan => "truncated_vlan",
            ParseError::TooManyVlans => "too_many_vlans",
            ParseError::TruncatedArp => "truncated_arp",
            ParseError::UnsupportedArp => "unsupported_arp",
            ParseError::TruncatedIpv4 => "truncated_ipv4",
            ParseError::BadIpv4Header => "bad_ipv4_header",
            ParseError::TruncatedIpv6 => "truncated_ipv6",
            ParseError::BadIpv6Header => "bad_ipv6_header",
            ParseError::TruncatedIpv6ExtHeader => "truncated_ipv6_ext_header",
            ParseError::TooManyIpv6ExtHeaders => "too_many_ipv6_ext_headers",
            ParseError::TruncatedL4 => "truncated_l4",
            ParseError::BadTcpHeader => "bad_tcp_header",
            ParseError::BadNdOption => "bad_nd_option",
        }
    }

    /// True when the bytes are truncated or contradict their protocol; false for a
    /// well-formed packet that the key just cannot describe fully
    /// ([`TooManyVlans`](ParseError::TooManyVlans),
    /// [`UnsupportedArp`](ParseError::UnsupportedArp),
    /// [`TooManyIpv6ExtHeaders`](ParseError::TooManyIpv6ExtHeaders)).
    #[inline]
    pub fn is_malformed(self) -> bool {
        !matches!(
            self,
            ParseError::TooManyVlans
                | ParseError::UnsupportedArp
                | ParseError::TooManyIpv6ExtHeaders
        )
    }
}

impl core::fmt::Display for ParseError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Per-PMD count of packets per [`ParseError`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ParseErrorCounters {
    counts: [u64; ParseError::COUNT],
}

impl ParseErrorCounters {
    /// Counts one packet that stopped with `reason`.
    #[inline(always)]
    pub fn record(&mut self, reason: ParseError) {
        if let Some(c) = self.counts.get_mut(reason.index()) {
            *c = c.wrapping_add(1);
        }
    }

    /// Packets counted for `reason`.
    #[inline]
    pub fn get(&self, reason: ParseError) -> u64 {
        self.counts.get(reason.index()).copied().unwrap_or(0)
    }

    /// Total over all reasons.
    pub fn total(&self) -> u64 {
        self.counts.iter().fold(0u64, |a, &c| a.wrapping_add(c))
    }

    /// `(reason, count)` for every reason, in index order (zero counts included,
    /// so a metrics page always shows every label).
    pub fn iter(&self) -> impl Iterator<Item = (ParseError, u64)> + '_ {
        ParseError::ALL.into_iter().zip(self.counts.iter().copied())
    }

    /// Adds `other`'s counts (summing PMDs).
    pub fn add(&mut self, other: &ParseErrorCounters) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a = a.wrapping_add(*b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn index_is_dense_and_matches_all() {
        for (i, e) in ParseError::ALL.iter().enumerate() {
            assert_eq!(e.index(), i);
        }
        assert_eq!(ParseError::ALL.len(), ParseError::COUNT);
    }

    #[test]
    fn names_are_unique_snake_case() {
        let mut seen = HashSet::new();
        for e in ParseError::ALL {
            let s = e.as_str();
            assert!(seen.insert(s), "duplicate {s}");
            assert!(!s.is_empty());
            assert!(
                s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit()),
                "{s}"
            );
            assert_eq!(e.to_string(), s);
        }
        assert_eq!(ParseError::TruncatedIpv4.as_str(), "truncated_ipv4");
    }

    #[test]
    fn malformed_classification() {
        assert!(ParseError::TruncatedL4.is_malformed());
        assert!(ParseError::BadIpv4Header.is_malformed());
        assert!(!ParseError::TooManyVlans.is_malformed());
        assert!(!ParseError::UnsupportedArp.is_malformed());
        assert!(!ParseError::TooManyIpv6ExtHeaders.is_malformed());
    }

    #[test]
    fn counters() {
        let mut c = ParseErrorCounters::default();
        c.record(ParseError::TruncatedL4);
        c.record(ParseError::TruncatedL4);
        c.record(ParseError::BadNdOption);
        assert_eq!(c.get(ParseError::TruncatedL4), 2);
        assert_eq!(c.get(ParseError::BadNdOption), 1);
        assert_eq!(c.get(ParseError::TruncatedEthernet), 0);
        assert_eq!(c.total(), 3);
        assert_eq!(c.iter().count(), ParseError::COUNT);
        let mut sum = c;
        sum.add(&c);
        assert_eq!(sum.get(ParseError::TruncatedL4), 4);
        assert_eq!(sum.total(), 6);
    }
}
