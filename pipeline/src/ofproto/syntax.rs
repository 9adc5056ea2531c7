//! `ovs-ofctl` flow syntax, in and out.
//!
//! * [`parse_flow`]: one `add-flow` line (`table=`, `priority=`, `cookie=`,
//!   timeouts, match fields, `actions=` last).
//! * [`parse_flows`]: an `add-flows` file (blank lines and `#` comments skipped).
//! * [`parse_flow_filter`]: a `del-flows` (loose or `--strict`) or `dump-flows`
//!   selection, as a [`FlowFilter`].
//! * [`parse_dump_line`]: one line of `ovs-ofctl dump-flows` output; the counter
//!   fields (`duration`, `n_packets`, `n_bytes`, `idle_age`, `hard_age`) are
//!   ignored, as `ovs-ofctl` itself ignores them so dumps can be fed back.
//! * [`format_flow`]: a flow as `ovs-ofctl dump-flows --no-stats` prints it.
//! * [`format_dump_line`]: a rule as `ovs-ofctl dump-flows` prints it (leading
//!   space, cookie, duration, table, counters, timeouts, ages, match, actions).
//!
//! Tokenizing follows `ofputil_parse_key_value`: pairs `key=value`, `key:value`
//! or `key(value)` separated by commas or white space; a value ends at a comma or
//! white space, or for `key(...)` at the matching parenthesis; parentheses nest.
//! The match is printed in `match_format`'s order with its shorthands (`arp`,
//! `tcp`, ...), the actions as `ofpacts_format` prints them.
//!
//! Deviations from `ovs-ofctl`, all deliberate:
//! * A match field whose prerequisites the flow does not match is an error
//!   (`"tp_dst=80": prerequisites not met (needs tcp, udp or sctp)`), where
//!   `ovs-ofctl` drops it with a warning (OpenFlow 1.0) or the switch rejects it.
//! * Error texts name the token and the reason in one format; `ovs-ofctl`'s own
//!   wording is kept where it has one.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::action::{
    Action, LearnField, LearnFlags, LearnSpec, CONTROLLER_MAX_LEN_DEFAULT, OFPP_ANY,
    OFPP_CONTROLLER, OFPP_IN_PORT, OFPP_MAX, RESERVED_PORT_NAMES,
};
use super::field::{ones, Field, FieldFormat, Prereq, Subfield};
use super::flow_match::Match;
use super::rule::{FlowFilter, FlowMod, Rule, MAX_TABLE_ID, OFP_DEFAULT_PRIORITY};
use crate::flow_key::{
    FlowKey, ETH_TYPE_ARP, ETH_TYPE_IPV4, ETH_TYPE_IPV6, ETH_TYPE_RARP, FLOW_NW_FRAG_ANY,
    FLOW_NW_FRAG_LATER, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP,
    VLAN_CFI, VLAN_PCP_MASK, VLAN_VID_MASK,
};

/// IP protocol number of IGMP (printed as the `igmp` shorthand).
const IPPROTO_IGMP: u8 = 2;

/// A flow text error: the offending token and why.
///
/// Displays as `"TOKEN": REASON`, except the "unknown ..." reasons, which read
/// `unknown field "foo"`, `unknown action "bar"`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct SyntaxError {
    /// The token as written (`nw_src=10.0.0.300`, `foo`, `learn(...)`).
    pub token: String,
    /// Why it was rejected.
    pub reason: String,
}

impl SyntaxError {
    fn new(token: impl Into<String>, reason: impl Into<String>) -> SyntaxError {
        SyntaxError {
            token: token.into(),
            reason: reason.into(),
        }
    }

    fn render(&self) -> String {
        if matches!(
            self.reason.as_str(),
            "unknown field" | "unknown action" | "unknown port"
        ) {
            format!("{} \"{}\"", self.reason, self.token)
        } else {
            format!("\"{}\": {}", self.token, self.reason)
        }
    }
}

/// A `SyntaxError` with its 1-based line number in a flow file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {error}")]
pub struct LineError {
    /// 1-based line number.
    pub line: usize,
    /// The error on that line.
    pub error: SyntaxError,
}

/// Port names and numbers of a bridge (`in_port=patch-int`, `output:vxlan0`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortMap {
    by_name: BTreeMap<String, u32>,
    by_number: BTreeMap<u32, String>,
}

impl PortMap {
    /// An empty map.
    pub fn new() -> PortMap {
        PortMap::default()
    }

    /// Adds (or replaces) a port.
    pub fn insert(&mut self, name: impl Into<String>, number: u32) {
        let name = name.into();
        if let Some(old) = self.by_number.insert(number, name.clone()) {
            self.by_name.remove(&old);
        }
        if let Some(old) = self.by_name.insert(name, number) {
            if old != number {
                self.by_number.remove(&old);
            }
        }
    }

    /// Removes the port called `name`; returns its number.
    pub fn remove(&mut self, name: &str) -> Option<u32> {
        let number = self.by_name.remove(name)?;
        self.by_number.remove(&number);
        Some(number)
    }

    /// The number of the port called `name`.
    pub fn number(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    /// The name of port `number`.
    pub fn name(&self, number: u32) -> Option<&str> {
        self.by_number.get(&number).map(String::as_str)
    }

    /// `(name, number)` pairs, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u32)> {
        self.by_name.iter().map(|(n, p)| (n.as_str(), *p))
    }
}

impl<S: Into<String>> FromIterator<(S, u32)> for PortMap {
    fn from_iter<I: IntoIterator<Item = (S, u32)>>(iter: I) -> Self {
        let mut m = PortMap::new();
        for (n, p) in iter {
            m.insert(n, p);
        }
        m
    }
}

/// How [`format_flow`] and [`format_dump_line`] print.
#[derive(Clone, Copy, Debug, Default)]
pub struct FormatOptions<'a> {
    /// Print port names from this map instead of numbers (`ovs-ofctl --names`).
    pub names: Option<&'a PortMap>,
}

/// What a `del-flows` / `dump-flows` selection is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterMode {
    /// `del-flows` (`strict` = `--strict`: exact match and priority).
    DelFlows {
        /// `--strict`.
        strict: bool,
    },
    /// `dump-flows [FLOW]` (loose).
    DumpFlows,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Add,
    Filter(FilterMode),
}

// ---------------------------------------------------------------------------
// Tokenizer (ofputil_parse_key_value)
// ---------------------------------------------------------------------------

/// One `key[=:(]value` pair. `raw` is the text as written, for errors.
struct Kv<'a> {
    key: &'a str,
    value: &'a str,
    raw: &'a str,
}

fn is_sep(c: u8) -> bool {
    matches!(c, b',' | b' ' | b'\t' | b'\r' | b'\n')
}

/// Length of a value ending at one of `delims` (or the end), skipping over
/// nested parentheses and double-quoted strings.
fn value_len(s: &[u8], delims: &[u8]) -> usize {
    let mut n = 0;
    while n < s.len() && !delims.contains(&s[n]) {
        match s[n] {
            b'(' => {
                let mut level = 0i32;
                while n < s.len() {
                    match s[n] {
                        b'(' => level += 1,
                        b')' => level -= 1,
                        _ => {}
                    }
                    n += 1;
                    if level == 0 {
                        break;
                    }
                }
            }
            b'"' => {
                n += 1;
                while n < s.len() && s[n] != b'"' {
                    if s[n] == b'\\' {
                        n += 1;
                    }
                    n += 1;
                }
                n = (n + 1).min(s.len());
            }
            _ => n += 1,
        }
    }
    n
}

struct Tokens<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Tokens<'a> {
    fn new(s: &'a str) -> Self {
        Tokens { s, pos: 0 }
    }
}

impl<'a> Iterator for Tokens<'a> {
    type Item = Kv<'a>;

    fn next(&mut self) -> Option<Kv<'a>> {
        let b = self.s.as_bytes();
        while self.pos < b.len() && is_sep(b[self.pos]) {
            self.pos += 1;
        }
        if self.pos >= b.len() {
            return None;
        }
        let start = self.pos;
        let mut k = start;
        if b[k] == b'"' {
            // A quoted port name used as an action: "gre 1".
            k += value_len(&b[k..], b", \t\r\n:=(");
        }
        while k < b.len() && !matches!(b[k], b':' | b'=' | b'(') && !is_sep(b[k]) {
            k += 1;
        }
        let key = &self.s[start..k];
        let delim = b.get(k).copied();
        match delim {
            Some(b':') | Some(b'=') | Some(b'(') => {
                let vstart = k + 1;
                let delims: &[u8] = if delim == Some(b'(') {
                    b")"
                } else {
                    b", \t\r\n"
                };
                let mut n = value_len(&b[vstart..], delims);
                // "(x)->y": the value continues after the parenthesis.
                if delim == Some(b'(') && b[vstart..].get(n..n + 3) == Some(b")->") {
                    n += value_len(&b[vstart + n..], b", \t\r\n");
                    let value = &self.s[vstart..vstart + n];
                    self.pos = (vstart + n + 1).min(b.len());
                    return Some(Kv {
                        key,
                        value,
                        raw: &self.s[start..vstart + n],
                    });
                }
                let value = &self.s[vstart..vstart + n];
                let end = vstart + n;
                let raw_end = if delim == Some(b'(') && end < b.len() {
                    end + 1
                } else {
                    end
                };
                self.pos = (end + 1).min(b.len());
                Some(Kv {
                    key,
                    value,
                    raw: &self.s[start..raw_end],
                })
            }
            _ => {
                self.pos = k;
                Some(Kv {
                    key,
                    value: "",
                    raw: key,
                })
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Scalars
// ---------------------------------------------------------------------------

/// An unsigned integer as C's `strtoull(s, NULL, 0)` reads it: `0x` hex, a
/// leading `0` octal, else decimal; the whole string must be digits.
pub fn parse_uint(s: &str) -> Option<u128> {
    let (digits, radix) = if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        (h, 16)
    } else if s.len() > 1 && s.starts_with('0') {
        (&s[1..], 8)
    } else {
        (s, 10)
    };
    if digits.is_empty() || !digits.bytes().all(|c| (c as char).is_digit(radix)) {
        return None;
    }
    u128::from_str_radix(digits, radix).ok()
}

fn parse_bounded(kv_raw: &str, s: &str, max: u128, what: &str) -> Result<u128, SyntaxError> {
    match parse_uint(s) {
        Some(v) if v <= max => Ok(v),
        Some(_) => Err(SyntaxError::new(kv_raw, format!("{what} out of range"))),
        None => Err(SyntaxError::new(kv_raw, format!("invalid {what}"))),
    }
}

fn parse_mac(s: &str) -> Option<u128> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return None;
    }
    let mut v = 0u128;
    for p in parts {
        if p.is_empty() || p.len() > 2 || !p.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        v = (v << 8) | u128::from(u8::from_str_radix(p, 16).ok()?);
    }
    Some(v)
}

fn fmt_mac(v: u128) -> String {
    let b = (v as u64).to_be_bytes();
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        b[2], b[3], b[4], b[5], b[6], b[7]
    )
}

/// Prefix length if `mask` is a CIDR mask of `bits` bits.
fn cidr_len(mask: u128, bits: u32) -> Option<u32> {
    let full = ones(bits as u16);
    let ones_count = mask.count_ones();
    (mask & full == mask
        && (mask == 0 || mask == (full >> (bits - ones_count)) << (bits - ones_count)))
        .then_some(ones_count)
}

/// `%#x` as C prints it: `0` for zero, else `0x...`.
fn c_hex(v: u128) -> String {
    if v == 0 {
        "0".to_string()
    } else {
        format!("{v:#x}")
    }
}

/// A port as `ofputil_port_from_string` reads it: a reserved name (any case), a
/// number, or a name from the map (optionally double-quoted).
fn parse_port(s: &str, ports: &PortMap) -> Option<u32> {
    for (p, name) in RESERVED_PORT_NAMES {
        if s.eq_ignore_ascii_case(name) {
            return Some(p);
        }
    }
    if s.eq_ignore_ascii_case("none") {
        return Some(OFPP_ANY);
    }
    if let Some(v) = parse_uint(s) {
        let v = u32::try_from(v).ok()?;
        // 16-bit OpenFlow 1.0 reserved numbers map to their 32-bit values.
        return Some(if (0xfff8..=0xffff).contains(&v) {
            0xffff_0000 | v
        } else {
            v
        });
    }
    let name = if s.len() >= 2 && s.starts_with('"') && s.ends_with('"') {
        &s[1..s.len() - 1]
    } else {
        s
    };
    ports.number(name)
}

fn port_name_needs_quotes(name: &str) -> bool {
    name.is_empty()
        || parse_uint(name).is_some()
        || RESERVED_PORT_NAMES
            .iter()
            .any(|(_, n)| n.eq_ignore_ascii_case(name))
        || !name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
}

/// A port as `ofputil_format_port` prints it.
fn fmt_port(p: u32, opts: &FormatOptions<'_>) -> String {
    if p >= OFPP_MAX {
        if let Some((_, n)) = RESERVED_PORT_NAMES.iter().find(|(q, _)| *q == p) {
            return (*n).to_string();
        }
    }
    if let Some(name) = opts.names.and_then(|m| m.name(p)) {
        if port_name_needs_quotes(name) {
            return format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""));
        }
        return name.to_string();
    }
    p.to_string()
}

// ---------------------------------------------------------------------------
// Field values
// ---------------------------------------------------------------------------

const TCP_FLAG_NAMES: [&str; 12] = [
    "fin", "syn", "rst", "psh", "ack", "urg", "ece", "cwr", "ns", "[200]", "[400]", "[800]",
];

/// Parses `value[/mask]` for `field`, as `mf_parse`. Returns `(value, mask)`
/// with `mask == None` when no mask was given.
fn parse_field_value(
    field: Field,
    s: &str,
    raw: &str,
    ports: &PortMap,
) -> Result<(u128, Option<u128>), SyntaxError> {
    let info = field.info();
    let bits = info.n_bits;
    let (vs, ms) = match s.split_once('/') {
        Some((v, m)) => (v, Some(m)),
        None => (s, None),
    };
    let bad = |what: &str| SyntaxError::new(raw, what.to_string());
    let (value, mask) = match info.format {
        FieldFormat::Decimal | FieldFormat::Hex => {
            let v = parse_uint(vs).ok_or_else(|| bad("invalid numeric value"))?;
            let m = match ms {
                Some(m) => Some(parse_uint(m).ok_or_else(|| bad("invalid numeric mask"))?),
                None => None,
            };
            if field == Field::DlVlan && v == 0xffff && m.is_none() {
                return Ok((v, None));
            }
            if v > ones(bits) || m.is_some_and(|m| m > ones(bits)) {
                return Err(bad(&format!(
                    "value too large for {bits}-bit field {}",
                    info.name
                )));
            }
            (v, m)
        }
        FieldFormat::Ethernet => {
            let v = parse_mac(vs).ok_or_else(|| bad("invalid Ethernet address"))?;
            let m = match ms {
                Some(m) => Some(parse_mac(m).ok_or_else(|| bad("invalid Ethernet mask"))?),
                None => None,
            };
            (v, m)
        }
        FieldFormat::Ipv4 => {
            let v: Ipv4Addr = vs.parse().map_err(|_| bad("invalid IP address"))?;
            let m = match ms {
                None => None,
                Some(m) if m.contains('.') => Some(u128::from(u32::from(
                    m.parse::<Ipv4Addr>().map_err(|_| bad("invalid IP mask"))?,
                ))),
                Some(m) => {
                    let n = m
                        .parse::<u32>()
                        .ok()
                        .filter(|n| *n <= 32)
                        .ok_or_else(|| bad("network prefix bits not between 0 and 32"))?;
                    Some(ones(32) ^ ones(32 - n as u16))
                }
            };
            (u128::from(u32::from(v)), m)
        }
        FieldFormat::Ipv6 => {
            let v: Ipv6Addr = vs.parse().map_err(|_| bad("invalid IPv6 address"))?;
            let m = match ms {
                None => None,
                Some(m) if m.contains(':') => Some(u128::from(
                    m.parse::<Ipv6Addr>()
                        .map_err(|_| bad("invalid IPv6 mask"))?,
                )),
                Some(m) => {
                    let n = m
                        .parse::<u32>()
                        .ok()
                        .filter(|n| *n <= 128)
                        .ok_or_else(|| bad("network prefix bits not between 0 and 128"))?;
                    Some(if n == 0 { 0 } else { u128::MAX << (128 - n) })
                }
            };
            (u128::from(v), m)
        }
        FieldFormat::OfpPort => {
            if ms.is_some() {
                return Err(bad("field does not support masking"));
            }
            let p = parse_port(vs, ports).ok_or_else(|| bad("invalid or unknown port"))?;
            let v = if field == Field::InPort {
                // 16-bit view: reserved ports keep their low 16 bits.
                u128::from(p & 0xffff)
            } else {
                u128::from(p)
            };
            (v, None)
        }
        FieldFormat::Frag => {
            if ms.is_some() {
                return Err(bad("invalid frag type"));
            }
            let any = u128::from(FLOW_NW_FRAG_ANY);
            let later = u128::from(FLOW_NW_FRAG_LATER);
            let (v, m) = match vs {
                "no" => (0, any),
                "yes" => (any, any),
                "first" => (any, any | later),
                "later" => (any | later, any | later),
                "not_later" => (0, later),
                _ => return Err(bad("invalid frag type")),
            };
            (v, Some(m))
        }
        FieldFormat::TcpFlags => parse_tcp_flags(s).ok_or_else(|| bad("invalid TCP flags"))?,
    };
    if !info.maskable && mask.is_some_and(|m| m != ones(bits)) && info.format != FieldFormat::Frag {
        return Err(bad("field does not support masking"));
    }
    let valid = match field {
        Field::NwTos => value & 0x03 == 0,
        _ => true,
    };
    if !valid {
        return Err(bad(&format!(
            "{} is not a valid value for field {}",
            vs, info.name
        )));
    }
    Ok((value, mask))
}

fn parse_tcp_flags(s: &str) -> Option<(u128, Option<u128>)> {
    if s.starts_with('+') || s.starts_with('-') {
        let (mut v, mut m) = (0u128, 0u128);
        let mut rest = s;
        while !rest.is_empty() {
            let sign = rest.as_bytes()[0];
            if sign != b'+' && sign != b'-' {
                return None;
            }
            let body = &rest[1..];
            let end = body.find(['+', '-']).unwrap_or(body.len());
            let bit = TCP_FLAG_NAMES.iter().position(|n| *n == &body[..end])?;
            m |= 1 << bit;
            if sign == b'+' {
                v |= 1 << bit;
            }
            rest = &body[end..];
        }
        return Some((v, Some(m)));
    }
    if let Some((v, m)) = s.split_once('/') {
        let v = parse_uint(v)?;
        let m = parse_uint(m)?;
        return (v <= 0xfff && m <= 0xfff).then_some((v, Some(m)));
    }
    if let Some(v) = parse_uint(s) {
        return (v <= 0xfff).then_some((v, None));
    }
    let mut v = 0u128;
    for name in s.split('|') {
        let bit = TCP_FLAG_NAMES.iter().position(|n| *n == name)?;
        v |= 1 << bit;
    }
    Some((v, None))
}

fn fmt_tcp_flags(v: u128, mask: u128) -> String {
    let mut s = String::new();
    if mask == 0xfff {
        if v == 0 {
            return "0".to_string();
        }
        let names: Vec<&str> = (0..12)
            .filter(|b| v & (1 << b) != 0)
            .map(|b| TCP_FLAG_NAMES[b])
            .collect();
        return names.join("|");
    }
    if mask == 0 {
        return "0/0".to_string();
    }
    for (b, name) in TCP_FLAG_NAMES.iter().enumerate() {
        if mask & (1 << b) != 0 {
            s.push(if v & (1 << b) != 0 { '+' } else { '-' });
            s.push_str(name);
        }
    }
    s
}

/// `ds_put_hex`: `0x` + hex without leading zeros, or `0`.
fn ds_hex(v: u128) -> String {
    c_hex(v)
}

/// A field value as `mf_format` prints it (mask printed only when not exact).
fn fmt_field_value(field: Field, v: u128, mask: Option<u128>, opts: &FormatOptions<'_>) -> String {
    let info = field.info();
    let mask = mask.filter(|m| *m != field.full_mask());
    match info.format {
        FieldFormat::Decimal | FieldFormat::Hex => {
            let mut s = if info.format == FieldFormat::Hex {
                ds_hex(v)
            } else {
                v.to_string()
            };
            if let Some(m) = mask {
                let _ = write!(s, "/{}", ds_hex(m));
            }
            s
        }
        FieldFormat::Ethernet => {
            let mut s = fmt_mac(v);
            if let Some(m) = mask {
                let _ = write!(s, "/{}", fmt_mac(m));
            }
            s
        }
        FieldFormat::Ipv4 => fmt_ipv4_masked(v as u32, mask.map_or(u32::MAX, |m| m as u32)),
        FieldFormat::Ipv6 => fmt_ipv6_masked(v, mask.unwrap_or(u128::MAX)),
        FieldFormat::OfpPort => {
            let p = v as u32;
            let p = if field == Field::InPort && p >= 0xfff8 {
                0xffff_0000 | p
            } else {
                p
            };
            fmt_port(p, opts)
        }
        FieldFormat::Frag => fmt_frag(v as u8, mask.map_or(3, |m| m as u8)).to_string(),
        FieldFormat::TcpFlags => fmt_tcp_flags(v, mask.unwrap_or(0xfff)),
    }
}

fn fmt_ipv4_masked(v: u32, m: u32) -> String {
    let mut s = Ipv4Addr::from(v).to_string();
    if m != u32::MAX {
        match cidr_len(u128::from(m), 32) {
            Some(n) => {
                let _ = write!(s, "/{n}");
            }
            None => {
                let _ = write!(s, "/{}", Ipv4Addr::from(m));
            }
        }
    }
    s
}

fn fmt_ipv6_masked(v: u128, m: u128) -> String {
    let mut s = Ipv6Addr::from(v).to_string();
    if m != u128::MAX {
        match cidr_len(m, 128) {
            Some(n) => {
                let _ = write!(s, "/{n}");
            }
            None => {
                let _ = write!(s, "/{}", Ipv6Addr::from(m));
            }
        }
    }
    s
}

fn fmt_frag(v: u8, m: u8) -> &'static str {
    let (any, later) = (FLOW_NW_FRAG_ANY, FLOW_NW_FRAG_LATER);
    match m & 3 {
        3 => match (v & any != 0, v & later != 0) {
            (true, true) => "later",
            (true, false) => "first",
            (false, true) => "<error>",
            (false, false) => "no",
        },
        1 => {
            if v & any != 0 {
                "yes"
            } else {
                "no"
            }
        }
        _ => {
            if v & later != 0 {
                "later"
            } else {
                "not_later"
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Subfields
// ---------------------------------------------------------------------------

/// Parses `NAME[]`, `NAME[a..b]`, `NAME[a]` or a bare `NAME` (whole field), as
/// `mf_parse_subfield`.
pub fn parse_subfield(s: &str) -> Result<Subfield, SyntaxError> {
    let (name, range) = match s.find('[') {
        Some(i) => {
            let r = s[i + 1..]
                .strip_suffix(']')
                .ok_or_else(|| SyntaxError::new(s, "missing `]'"))?;
            (&s[..i], Some(r))
        }
        None => (s, None),
    };
    let field = Field::from_name(name).ok_or_else(|| SyntaxError::new(name, "unknown field"))?;
    let sf = match range {
        None | Some("") => Subfield::whole(field),
        Some(r) => {
            let (a, b) = match r.split_once("..") {
                Some((a, b)) => (a, b),
                None => (r, r),
            };
            let a: u32 = a
                .parse()
                .map_err(|_| SyntaxError::new(s, "invalid bit range"))?;
            let b: u32 = b
                .parse()
                .map_err(|_| SyntaxError::new(s, "invalid bit range"))?;
            Subfield::range(field, a, b).map_err(|e| SyntaxError::new(s, e.to_string()))?
        }
    };
    Ok(sf)
}

// ---------------------------------------------------------------------------
// Match parsing
// ---------------------------------------------------------------------------

/// Shorthand names: `(name, dl_type, nw_proto)`.
const SHORTHANDS: [(&str, u16, Option<u8>); 13] = [
    ("ip", ETH_TYPE_IPV4, None),
    ("ipv6", ETH_TYPE_IPV6, None),
    ("icmp", ETH_TYPE_IPV4, Some(IPPROTO_ICMP)),
    ("icmp6", ETH_TYPE_IPV6, Some(IPPROTO_ICMPV6)),
    ("tcp", ETH_TYPE_IPV4, Some(IPPROTO_TCP)),
    ("tcp6", ETH_TYPE_IPV6, Some(IPPROTO_TCP)),
    ("udp", ETH_TYPE_IPV4, Some(IPPROTO_UDP)),
    ("udp6", ETH_TYPE_IPV6, Some(IPPROTO_UDP)),
    ("sctp", ETH_TYPE_IPV4, Some(IPPROTO_SCTP)),
    ("sctp6", ETH_TYPE_IPV6, Some(IPPROTO_SCTP)),
    ("igmp", ETH_TYPE_IPV4, Some(IPPROTO_IGMP)),
    ("arp", ETH_TYPE_ARP, None),
    ("rarp", ETH_TYPE_RARP, None),
];

/// Applies one `field=value` to the match. Returns the field for the later
/// prerequisite check.
fn apply_match_field(
    m: &mut Match,
    field: Field,
    kv: &Kv<'_>,
    ports: &PortMap,
) -> Result<(), SyntaxError> {
    if kv.value.is_empty() {
        return Err(SyntaxError::new(kv.raw, "field missing value"));
    }
    let (v, mask) = parse_field_value(field, kv.value, kv.raw, ports)?;
    match field {
        Field::InPort | Field::InPortOxm => {
            let p = parse_port(kv.value, ports)
                .ok_or_else(|| SyntaxError::new(kv.raw, "invalid or unknown port"))?;
            m.key.in_port = p;
            m.mask.in_port = u32::MAX;
        }
        _ => m.set_field(field, v, mask),
    }
    Ok(())
}

/// Checks a named field's prerequisites against the finished match.
fn check_field_prereq(m: &Match, field: Field, raw: &str) -> Result<(), SyntaxError> {
    let p = field.prereq();
    let ok = match field {
        // match_format prints ICMPv6 type/code as icmp_type/icmp_code, so accept
        // those names under icmp6 too.
        Field::IcmpType | Field::IcmpCode => {
            Prereq::Icmpv4.ok_for_match(&m.key, &m.mask)
                || Prereq::Icmpv6.ok_for_match(&m.key, &m.mask)
        }
        // nw_src/nw_dst/nw_proto also name the ARP fields (OpenFlow 1.0).
        Field::IpSrc | Field::IpDst => {
            p.ok_for_match(&m.key, &m.mask) || Prereq::Arp.ok_for_match(&m.key, &m.mask)
        }
        Field::IpProto => {
            p.ok_for_match(&m.key, &m.mask) || Prereq::Arp.ok_for_match(&m.key, &m.mask)
        }
        _ => p.ok_for_match(&m.key, &m.mask),
    };
    if ok {
        Ok(())
    } else {
        let needs = match field {
            Field::IcmpType | Field::IcmpCode => "icmp or icmp6",
            Field::IpSrc | Field::IpDst => "ip, arp or rarp",
            Field::IpProto => "ip, ipv6, arp or rarp",
            _ => p.describe(),
        };
        Err(SyntaxError::new(
            raw,
            format!("prerequisites not met (needs {needs})"),
        ))
    }
}

// ---------------------------------------------------------------------------
// Flow parsing
// ---------------------------------------------------------------------------

struct Parsed {
    flow: FlowMod,
    cookie_mask: u64,
    out_port: u32,
    table_given: bool,
}

fn parse_u16(kv: &Kv<'_>) -> Result<u16, SyntaxError> {
    parse_bounded(kv.raw, kv.value, u128::from(u16::MAX), "number").map(|v| v as u16)
}

fn parse_u64(raw: &str, s: &str) -> Result<u64, SyntaxError> {
    parse_bounded(raw, s, u128::from(u64::MAX), "number").map(|v| v as u64)
}

fn parse_table(raw: &str, s: &str) -> Result<u8, SyntaxError> {
    parse_bounded(raw, s, 255, "table id").map(|v| v as u8)
}

/// Splits `text` at the `actions=` keyword, as `ofp_extract_actions`.
fn split_actions(text: &str) -> Option<(&str, &str)> {
    let i = text.find("action")?;
    let rest = &text[i..];
    let eq = rest.find('=')?;
    Some((&text[..i], &rest[eq + 1..]))
}

fn parse_common(text: &str, mode: Mode, ports: &PortMap) -> Result<Parsed, SyntaxError> {
    let (match_text, actions_text) = match mode {
        Mode::Add => {
            let (m, a) = split_actions(text)
                .ok_or_else(|| SyntaxError::new(text.trim(), "must specify an action"))?;
            (m, Some(a))
        }
        Mode::Filter(_) => (text, None),
    };
    let mut p = Parsed {
        flow: FlowMod::default(),
        cookie_mask: 0,
        out_port: OFPP_ANY,
        table_given: false,
    };
    let mut named: Vec<(Field, String)> = Vec::new();
    let strict = matches!(mode, Mode::Filter(FilterMode::DelFlows { strict: true }));
    for kv in Tokens::new(match_text) {
        if let Some((_, dl, proto)) = SHORTHANDS.iter().find(|(n, _, _)| *n == kv.key) {
            if !kv.value.is_empty() {
                return Err(SyntaxError::new(kv.raw, "shorthand takes no value"));
            }
            p.flow
                .match_
                .set_field(Field::EthType, u128::from(*dl), None);
            if let Some(proto) = proto {
                p.flow
                    .match_
                    .set_field(Field::IpProto, u128::from(*proto), None);
            }
            continue;
        }
        match kv.key {
            // Counters of dump-flows output: ignored, as ovs-ofctl does.
            "duration" | "n_packets" | "n_bytes" | "idle_age" | "hard_age" => {}
            "table" => {
                p.flow.table_id = parse_table(kv.raw, kv.value)?;
                p.table_given = true;
            }
            "priority" if mode == Mode::Add || strict => p.flow.priority = parse_u16(&kv)?,
            "idle_timeout" if mode == Mode::Add => p.flow.idle_timeout = parse_u16(&kv)?,
            "hard_timeout" if mode == Mode::Add => p.flow.hard_timeout = parse_u16(&kv)?,
            "importance" if mode == Mode::Add => p.flow.importance = parse_u16(&kv)?,
            "send_flow_rem" if mode == Mode::Add => p.flow.flags.send_flow_rem = true,
            "check_overlap" if mode == Mode::Add => p.flow.flags.check_overlap = true,
            "out_port" if mode != Mode::Add => {
                p.out_port = parse_port(kv.value, ports)
                    .ok_or_else(|| SyntaxError::new(kv.raw, "is not a valid OpenFlow port"))?;
            }
            "cookie" => match kv.value.split_once('/') {
                Some((v, m)) => {
                    if mode == Mode::Add {
                        return Err(SyntaxError::new(
                            kv.raw,
                            "flow additions cannot use a cookie mask",
                        ));
                    }
                    p.flow.cookie = parse_u64(kv.raw, v)?;
                    p.cookie_mask = parse_u64(kv.raw, m)?;
                }
                None => {
                    if mode != Mode::Add {
                        return Err(SyntaxError::new(kv.raw, "cannot set cookie"));
                    }
                    p.flow.cookie = parse_u64(kv.raw, kv.value)?;
                }
            },
            key => {
                let field =
                    Field::from_name(key).ok_or_else(|| SyntaxError::new(key, "unknown field"))?;
                apply_match_field(&mut p.flow.match_, field, &kv, ports)?;
                named.push((field, kv.raw.to_string()));
            }
        }
    }
    for (field, raw) in &named {
        check_field_prereq(&p.flow.match_, *field, raw)?;
    }
    if let Some(a) = actions_text {
        if p.flow.table_id > MAX_TABLE_ID {
            return Err(SyntaxError::new(
                format!("table={}", p.flow.table_id),
                "table 255 is not valid for adding flows",
            ));
        }
        p.flow.actions = parse_actions(a, &p.flow.match_, p.flow.table_id, ports)?;
    }
    Ok(p)
}

/// Parses one `ovs-ofctl add-flow` flow.
///
/// ```
/// use pipeline::ofproto::syntax::{parse_flow, format_flow, FormatOptions, PortMap};
/// let f = parse_flow("table=21,priority=1,dl_vlan=1 actions=strip_vlan,output:3",
///                    &PortMap::new()).unwrap();
/// assert_eq!(format_flow(&f, &FormatOptions::default()),
///            "table=21, priority=1,dl_vlan=1 actions=strip_vlan,output:3");
/// ```
pub fn parse_flow(text: &str, ports: &PortMap) -> Result<FlowMod, SyntaxError> {
    parse_common(text, Mode::Add, ports).map(|p| p.flow)
}

/// Parses an `add-flows` file: one flow per line, blank lines and lines starting
/// with `#` skipped. All or nothing: the first error is returned with its line.
pub fn parse_flows(text: &str, ports: &PortMap) -> Result<Vec<FlowMod>, LineError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        out.push(parse_flow(t, ports).map_err(|error| LineError { line: i + 1, error })?);
    }
    Ok(out)
}

/// Parses a `del-flows` or `dump-flows` selection (match fields, `table=`,
/// `cookie=V/M`, `out_port=`, and `priority=` with `--strict`).
pub fn parse_flow_filter(
    text: &str,
    mode: FilterMode,
    ports: &PortMap,
) -> Result<FlowFilter, SyntaxError> {
    let p = parse_common(text, Mode::Filter(mode), ports)?;
    Ok(FlowFilter {
        table: p
            .table_given
            .then_some(p.flow.table_id)
            .filter(|t| *t != 255),
        match_: p.flow.match_,
        strict: matches!(mode, FilterMode::DelFlows { strict: true }),
        priority: p.flow.priority,
        cookie: p.flow.cookie,
        cookie_mask: p.cookie_mask,
        out_port: p.out_port,
    })
}

/// Parses one line of `ovs-ofctl dump-flows` output (counters ignored). Lines
/// that are not flows (`NXST_FLOW reply ...`, `OFPST_FLOW reply ...`) are not
/// accepted: callers skip them.
pub fn parse_dump_line(line: &str, ports: &PortMap) -> Result<FlowMod, SyntaxError> {
    parse_flow(line.trim(), ports)
}

// ---------------------------------------------------------------------------
// Actions
// ---------------------------------------------------------------------------

/// The minimal note length OVS's wire encoding pads to: `nx_action_note` has a
/// 10-byte header and the whole action is a multiple of 8 bytes, at least 16.
fn pad_note(mut b: Vec<u8>) -> Vec<u8> {
    let total = (10 + b.len()).div_ceil(8) * 8;
    b.resize(total.max(16) - 10, 0);
    b
}

fn parse_note(raw: &str, s: &str) -> Result<Vec<u8>, SyntaxError> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'.' {
            i += 1;
            continue;
        }
        let hex = s
            .get(i..i + 2)
            .filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()))
            .ok_or_else(|| SyntaxError::new(raw, "invalid hex digits in note"))?;
        out.push(u8::from_str_radix(hex, 16).map_err(|_| SyntaxError::new(raw, "invalid hex"))?);
        i += 2;
    }
    Ok(pad_note(out))
}

fn check_sf_prereq(sf: &Subfield, m: &Match, raw: &str) -> Result<(), SyntaxError> {
    check_field_prereq(m, sf.field, raw)
}

/// Parses an action list (the text after `actions=`), as `ofpacts_parse`.
pub fn parse_actions(
    text: &str,
    m: &Match,
    table_id: u8,
    ports: &PortMap,
) -> Result<Vec<Action>, SyntaxError> {
    let mut out = Vec::new();
    let mut drop = false;
    let mut goto_seen = false;
    for kv in Tokens::new(text) {
        if goto_seen {
            return Err(SyntaxError::new(
                kv.raw,
                "actions may not follow goto_table",
            ));
        }
        let key = kv.key.to_ascii_lowercase();
        let raw = kv.raw;
        let v = kv.value;
        let a = match key.as_str() {
            "drop" => {
                drop = true;
                continue;
            }
            "output" => {
                if v.contains('[') {
                    Action::OutputReg(parse_subfield(v)?)
                } else {
                    let p = parse_port(v, ports)
                        .ok_or_else(|| SyntaxError::new(raw, "invalid or unknown port"))?;
                    Action::output(p)
                        .ok_or_else(|| SyntaxError::new(raw, "output to unsupported port"))?
                }
            }
            "controller" => {
                let max_len = if v.is_empty() {
                    CONTROLLER_MAX_LEN_DEFAULT
                } else if let Some(n) = v.strip_prefix("max_len=") {
                    parse_bounded(raw, n, 0xffff, "max_len")? as u16
                } else {
                    parse_bounded(raw, v, 0xffff, "max_len")? as u16
                };
                Action::Controller { max_len }
            }
            "resubmit" => {
                let (ps, ts) = match v.split_once(',') {
                    Some((p, t)) => (p, Some(t)),
                    None => (v, None),
                };
                if ts.is_some_and(|t| t.contains(',')) {
                    return Err(SyntaxError::new(raw, "unsupported resubmit argument"));
                }
                let port = if ps.is_empty() {
                    None
                } else {
                    let p = parse_port(ps, ports)
                        .ok_or_else(|| SyntaxError::new(raw, "invalid or unknown port"))?;
                    (p != OFPP_IN_PORT).then_some(p)
                };
                let table = match ts {
                    None | Some("") => None,
                    Some(t) => Some(parse_table(raw, t)?).filter(|t| *t != 255),
                };
                if ps.is_empty() && ts.is_none_or(str::is_empty) {
                    return Err(SyntaxError::new(raw, "at least one argument is required"));
                }
                Action::Resubmit { port, table }
            }
            "goto_table" => {
                let t = parse_table(raw, v)?;
                if t <= table_id {
                    return Err(SyntaxError::new(
                        raw,
                        format!("goto_table must name a later table than {table_id}"),
                    ));
                }
                goto_seen = true;
                Action::GotoTable(t)
            }
            "mod_vlan_vid" => Action::ModVlanVid(parse_bounded(raw, v, 4095, "VLAN VID")? as u16),
            "mod_vlan_pcp" => Action::ModVlanPcp(parse_bounded(raw, v, 7, "VLAN PCP")? as u8),
            "strip_vlan" => Action::StripVlan,
            "pop_vlan" => Action::PopVlan,
            "push_vlan" => {
                let t = parse_bounded(raw, v, 0xffff, "ethertype")? as u16;
                if t != 0x8100 && t != 0x88a8 {
                    return Err(SyntaxError::new(raw, "not a valid VLAN ethertype"));
                }
                Action::PushVlan(t)
            }
            "mod_dl_src" | "mod_dl_dst" => {
                let mac = parse_mac(v)
                    .ok_or_else(|| SyntaxError::new(raw, "invalid Ethernet address"))?;
                let b = (mac as u64).to_be_bytes();
                let mac = [b[2], b[3], b[4], b[5], b[6], b[7]];
                if key == "mod_dl_src" {
                    Action::ModDlSrc(mac)
                } else {
                    Action::ModDlDst(mac)
                }
            }
            "mod_nw_src" | "mod_nw_dst" => {
                let ip: Ipv4Addr = v
                    .parse()
                    .map_err(|_| SyntaxError::new(raw, "invalid IP address"))?;
                if key == "mod_nw_src" {
                    Action::ModNwSrc(ip.into())
                } else {
                    Action::ModNwDst(ip.into())
                }
            }
            "mod_nw_tos" => {
                let t = parse_bounded(raw, v, 255, "TOS")? as u8;
                if t & 3 != 0 {
                    return Err(SyntaxError::new(raw, "not a valid TOS"));
                }
                Action::ModNwTos(t)
            }
            "mod_tp_src" => Action::ModTpSrc(parse_bounded(raw, v, 0xffff, "port")? as u16),
            "mod_tp_dst" => Action::ModTpDst(parse_bounded(raw, v, 0xffff, "port")? as u16),
            "dec_ttl" => {
                if !v.is_empty() {
                    return Err(SyntaxError::new(
                        raw,
                        "dec_ttl with controller ids is not supported",
                    ));
                }
                Action::DecTtl
            }
            "set_tunnel" | "set_tunnel64" => {
                let id = parse_u64(raw, v)?;
                if key == "set_tunnel64" || id > u64::from(u32::MAX) {
                    Action::SetTunnel64(id)
                } else {
                    Action::SetTunnel(id)
                }
            }
            "set_field" => {
                let (val, dst) = v
                    .split_once("->")
                    .ok_or_else(|| SyntaxError::new(raw, "missing `->'"))?;
                let field =
                    Field::from_name(dst).ok_or_else(|| SyntaxError::new(dst, "unknown field"))?;
                let (value, mask) = parse_field_value(field, val, raw, ports)?;
                let (value, mask) = if field == Field::DlVlan && value == 0xffff {
                    return Err(SyntaxError::new(
                        raw,
                        "0xffff is not a valid value for field dl_vlan",
                    ));
                } else {
                    (value, mask.unwrap_or(field.full_mask()))
                };
                check_field_prereq(m, field, raw)?;
                Action::SetField {
                    field,
                    value: value & mask,
                    mask,
                }
            }
            "load" => {
                let (val, dst) = v
                    .split_once("->")
                    .ok_or_else(|| SyntaxError::new(raw, "missing `->'"))?;
                let dst = parse_subfield(dst)?;
                let value = parse_uint(val)
                    .ok_or_else(|| SyntaxError::new(raw, "invalid numeric value"))?;
                if value > ones(dst.n_bits) {
                    return Err(SyntaxError::new(
                        raw,
                        format!(
                            "value {} does not fit into {} bits",
                            c_hex(value),
                            dst.n_bits
                        ),
                    ));
                }
                check_sf_prereq(&dst, m, raw)?;
                Action::Load { dst, value }
            }
            "move" => {
                let (src, dst) = v
                    .split_once("->")
                    .ok_or_else(|| SyntaxError::new(raw, "missing `->'"))?;
                let src = parse_subfield(src)?;
                let dst = parse_subfield(dst)?;
                if src.n_bits != dst.n_bits {
                    return Err(SyntaxError::new(
                        raw,
                        format!(
                            "source field is {} bits wide but destination is {} bits wide",
                            src.n_bits, dst.n_bits
                        ),
                    ));
                }
                check_sf_prereq(&src, m, raw)?;
                check_sf_prereq(&dst, m, raw)?;
                Action::Move { src, dst }
            }
            "learn" => Action::Learn(Box::new(parse_learn(raw, v, ports)?)),
            "note" => Action::Note(parse_note(raw, v)?),
            _ => {
                // A bare port: number, reserved name or port name.
                if !v.is_empty() && !key.eq_ignore_ascii_case("controller") {
                    return Err(SyntaxError::new(kv.key, "unknown action"));
                }
                match parse_port(kv.key, ports) {
                    Some(OFPP_CONTROLLER) => Action::Controller {
                        max_len: CONTROLLER_MAX_LEN_DEFAULT,
                    },
                    Some(p) => Action::output(p)
                        .ok_or_else(|| SyntaxError::new(raw, "output to unsupported port"))?,
                    None => return Err(SyntaxError::new(kv.key, "unknown action")),
                }
            }
        };
        out.push(a);
    }
    if drop && !out.is_empty() {
        return Err(SyntaxError::new(
            "drop",
            "\"drop\" must not be accompanied by any other action or instruction",
        ));
    }
    Ok(out)
}

fn parse_learn(raw: &str, text: &str, ports: &PortMap) -> Result<LearnSpec, SyntaxError> {
    let mut l = LearnSpec::default();
    for kv in Tokens::new(text) {
        let v = kv.value;
        match kv.key {
            "table" => {
                let t = parse_table(kv.raw, v)?;
                if t == 255 {
                    return Err(SyntaxError::new(
                        raw,
                        "table id 255 not valid for `learn' action",
                    ));
                }
                l.table = t;
            }
            "priority" => l.priority = parse_u16(&kv)?,
            "idle_timeout" => l.idle_timeout = parse_u16(&kv)?,
            "hard_timeout" => l.hard_timeout = parse_u16(&kv)?,
            "fin_idle_timeout" => l.fin_idle_timeout = parse_u16(&kv)?,
            "fin_hard_timeout" => l.fin_hard_timeout = parse_u16(&kv)?,
            "cookie" => l.cookie = parse_u64(kv.raw, v)?,
            "send_flow_rem" => l.flags.send_flow_rem = true,
            "delete_learned" => l.flags.delete_learned = true,
            "load" => {
                let (src, dst) = v
                    .split_once("->")
                    .ok_or_else(|| SyntaxError::new(kv.raw, "missing `->'"))?;
                let dst = parse_subfield(dst)?;
                if let Some(value) = parse_uint(src) {
                    if value > ones(dst.n_bits) {
                        return Err(SyntaxError::new(
                            kv.raw,
                            format!(
                                "value {} does not fit into {} bits",
                                c_hex(value),
                                dst.n_bits
                            ),
                        ));
                    }
                    l.specs.push(LearnField::LoadValue { dst, value });
                } else {
                    let src = parse_subfield(src)?;
                    if src.n_bits != dst.n_bits {
                        return Err(SyntaxError::new(
                            kv.raw,
                            format!(
                                "source field is {} bits wide but destination is {} bits wide",
                                src.n_bits, dst.n_bits
                            ),
                        ));
                    }
                    l.specs.push(LearnField::LoadField { src, dst });
                }
            }
            "output" => l.specs.push(LearnField::Output {
                src: parse_subfield(v)?,
            }),
            _ => {
                // A match spec: dst[=src|=value].
                let dst_text = if kv.value.is_empty() { kv.raw } else { kv.key };
                let dst = parse_subfield(dst_text)?;
                if v.is_empty() {
                    l.specs.push(LearnField::MatchField { dst, src: dst });
                } else if let Ok(src) = parse_subfield(v) {
                    if src.n_bits != dst.n_bits {
                        return Err(SyntaxError::new(
                            kv.raw,
                            format!(
                                "bit widths of {} ({}) and {} ({}) differ",
                                kv.key, dst.n_bits, v, src.n_bits
                            ),
                        ));
                    }
                    l.specs.push(LearnField::MatchField { dst, src });
                } else {
                    let value = if dst.is_whole() {
                        let (value, mask) = parse_field_value(dst.field, v, kv.raw, ports)?;
                        if mask.is_some() && dst.field.info().format != FieldFormat::Frag {
                            return Err(SyntaxError::new(kv.raw, "masks are not allowed in learn"));
                        }
                        if dst.field == Field::InPort {
                            value & 0xffff
                        } else {
                            value
                        }
                    } else {
                        let value = parse_uint(v).ok_or_else(|| {
                            SyntaxError::new(kv.raw, "cannot parse integer value")
                        })?;
                        if value > ones(dst.n_bits) {
                            return Err(SyntaxError::new(
                                kv.raw,
                                format!(
                                    "value {} does not fit into {} bits",
                                    c_hex(value),
                                    dst.n_bits
                                ),
                            ));
                        }
                        value
                    };
                    l.specs.push(LearnField::MatchValue { dst, value });
                }
            }
        }
    }
    Ok(l)
}

// ---------------------------------------------------------------------------
// Formatting
// ---------------------------------------------------------------------------

/// Appends the match as `match_format` prints it (with `priority=` first unless
/// default); a trailing comma is removed.
pub fn format_match(m: &Match, priority: u16, opts: &FormatOptions<'_>) -> String {
    let (f, w): (&FlowKey, &FlowKey) = (&m.key, &m.mask);
    let mut s = String::new();
    if priority != OFP_DEFAULT_PRIORITY {
        let _ = write!(s, "priority={priority},");
    }
    let dl_type = f.dl_type;
    let mut skip_type = false;
    let mut skip_proto = false;
    if w.dl_type != 0 {
        skip_type = true;
        let short = match dl_type {
            ETH_TYPE_IPV4 if w.nw_proto != 0 => {
                skip_proto = true;
                match f.nw_proto {
                    IPPROTO_ICMP => "icmp",
                    IPPROTO_IGMP => "igmp",
                    IPPROTO_TCP => "tcp",
                    IPPROTO_UDP => "udp",
                    IPPROTO_SCTP => "sctp",
                    _ => {
                        skip_proto = false;
                        "ip"
                    }
                }
            }
            ETH_TYPE_IPV4 => "ip",
            ETH_TYPE_IPV6 if w.nw_proto != 0 => {
                skip_proto = true;
                match f.nw_proto {
                    IPPROTO_ICMPV6 => "icmp6",
                    IPPROTO_TCP => "tcp6",
                    IPPROTO_UDP => "udp6",
                    IPPROTO_SCTP => "sctp6",
                    _ => {
                        skip_proto = false;
                        "ipv6"
                    }
                }
            }
            ETH_TYPE_IPV6 => "ipv6",
            ETH_TYPE_ARP => "arp",
            ETH_TYPE_RARP => "rarp",
            _ => {
                skip_type = false;
                ""
            }
        };
        if skip_type {
            s.push_str(short);
            s.push(',');
        }
    }
    for i in 0..16 {
        if w.regs[i] != 0 {
            let _ = write!(s, "reg{i}={}", c_hex(u128::from(f.regs[i])));
            if w.regs[i] != u32::MAX {
                let _ = write!(s, "/{}", c_hex(u128::from(w.regs[i])));
            }
            s.push(',');
        }
    }
    if w.tun_id != 0 {
        let _ = write!(s, "tun_id={}", c_hex(u128::from(f.tun_id)));
        if w.tun_id != u64::MAX {
            let _ = write!(s, "/{}", c_hex(u128::from(w.tun_id)));
        }
        s.push(',');
    }
    for (name, v, mk) in [
        ("tun_src", f.tun_src, w.tun_src),
        ("tun_dst", f.tun_dst, w.tun_dst),
    ] {
        if mk != 0 {
            let _ = write!(s, "{name}={},", fmt_ipv4_masked(v, mk));
        }
    }
    for (i, (&v, &mk)) in f.tun_md.iter().zip(&w.tun_md).enumerate() {
        if mk != 0 {
            let _ = write!(s, "tun_metadata{i}={}", c_hex(u128::from(v)));
            if mk != u64::MAX {
                let _ = write!(s, "/{}", c_hex(u128::from(mk)));
            }
            s.push(',');
        }
    }
    if w.metadata != 0 {
        let _ = write!(s, "metadata={}", c_hex(u128::from(f.metadata)));
        if w.metadata != u64::MAX {
            let _ = write!(s, "/{}", c_hex(u128::from(w.metadata)));
        }
        s.push(',');
    }
    if w.in_port != 0 {
        let _ = write!(s, "in_port={},", fmt_port(f.in_port, opts));
    }
    let (tci, tci_m) = (f.vlan_tci[0], w.vlan_tci[0]);
    if tci_m != 0 {
        let vid_m = tci_m & VLAN_VID_MASK;
        let pcp_m = tci_m & VLAN_PCP_MASK;
        if tci_m & VLAN_CFI != 0
            && tci & VLAN_CFI != 0
            && (vid_m == 0 || vid_m == VLAN_VID_MASK)
            && (pcp_m == 0 || pcp_m == VLAN_PCP_MASK)
            && (vid_m != 0 || pcp_m != 0)
        {
            if vid_m != 0 {
                let _ = write!(s, "dl_vlan={},", tci & VLAN_VID_MASK);
            }
            if pcp_m != 0 {
                let _ = write!(s, "dl_vlan_pcp={},", tci >> 13);
            }
        } else if tci_m == 0xffff {
            let _ = write!(s, "vlan_tci=0x{tci:04x},");
        } else {
            let _ = write!(s, "vlan_tci=0x{tci:04x}/0x{tci_m:04x},");
        }
    }
    let mac = |a: [u8; 6]| {
        Field::EthSrc.get(&FlowKey {
            dl_src: a,
            ..FlowKey::default()
        })
    };
    for (name, v, mk) in [
        ("dl_src", f.dl_src, w.dl_src),
        ("dl_dst", f.dl_dst, w.dl_dst),
    ] {
        if mk != [0; 6] {
            let _ = write!(
                s,
                "{name}={},",
                fmt_field_value(Field::EthSrc, mac(v), Some(mac(mk)), opts)
            );
        }
    }
    if !skip_type && w.dl_type != 0 {
        let _ = write!(s, "dl_type=0x{dl_type:04x},");
    }
    let is_arp = dl_type == ETH_TYPE_ARP || dl_type == ETH_TYPE_RARP;
    if dl_type == ETH_TYPE_IPV6 {
        for (name, v, mk) in [
            ("ipv6_src", f.ipv6_src, w.ipv6_src),
            ("ipv6_dst", f.ipv6_dst, w.ipv6_dst),
        ] {
            if mk != [0; 16] {
                let _ = write!(
                    s,
                    "{name}={},",
                    fmt_ipv6_masked(u128::from_be_bytes(v), u128::from_be_bytes(mk))
                );
            }
        }
        if w.ipv6_label != 0 {
            if w.ipv6_label == u32::MAX || w.ipv6_label == 0xf_ffff {
                let _ = write!(s, "ipv6_label=0x{:05x},", f.ipv6_label);
            } else {
                let _ = write!(
                    s,
                    "ipv6_label=0x{:05x}/0x{:05x},",
                    f.ipv6_label, w.ipv6_label
                );
            }
        }
    } else {
        let (a, b) = if is_arp {
            ("arp_spa", "arp_tpa")
        } else {
            ("nw_src", "nw_dst")
        };
        for (name, v, mk) in [(a, f.nw_src, w.nw_src), (b, f.nw_dst, w.nw_dst)] {
            if mk != 0 {
                let _ = write!(s, "{name}={},", fmt_ipv4_masked(v, mk));
            }
        }
    }
    if !skip_proto && w.nw_proto != 0 {
        let name = if is_arp { "arp_op" } else { "nw_proto" };
        let _ = write!(s, "{name}={},", f.nw_proto);
    }
    if is_arp {
        for (name, v, mk) in [
            ("arp_sha", f.arp_sha, w.arp_sha),
            ("arp_tha", f.arp_tha, w.arp_tha),
        ] {
            if mk != [0; 6] {
                let _ = write!(
                    s,
                    "{name}={},",
                    fmt_field_value(Field::EthSrc, mac(v), Some(mac(mk)), opts)
                );
            }
        }
    }
    if w.nw_tos & 0xfc != 0 {
        let _ = write!(s, "nw_tos={},", f.nw_tos & 0xfc);
    }
    if w.nw_tos & 0x03 != 0 {
        let _ = write!(s, "nw_ecn={},", f.nw_tos & 0x03);
    }
    if w.nw_ttl != 0 {
        let _ = write!(s, "nw_ttl={},", f.nw_ttl);
    }
    if w.nw_frag & 3 != 0 {
        let _ = write!(s, "nw_frag={},", fmt_frag(f.nw_frag, w.nw_frag));
    }
    let be16 = |s: &mut String, name: &str, v: u16, mk: u16| {
        if mk == 0xffff {
            let _ = write!(s, "{name}={v},");
        } else if mk != 0 {
            let _ = write!(s, "{name}=0x{v:x}/0x{mk:x},");
        }
    };
    let (tp_a, tp_b) = if dl_type == ETH_TYPE_IPV4 && f.nw_proto == IPPROTO_ICMP {
        ("icmp_type", "icmp_code")
    } else if dl_type == ETH_TYPE_IPV4 && f.nw_proto == IPPROTO_IGMP {
        ("igmp_type", "igmp_code")
    } else if dl_type == ETH_TYPE_IPV6 && f.nw_proto == IPPROTO_ICMPV6 {
        ("icmp_type", "icmp_code")
    } else {
        ("tp_src", "tp_dst")
    };
    be16(&mut s, tp_a, f.tp_src, w.tp_src);
    be16(&mut s, tp_b, f.tp_dst, w.tp_dst);
    if (dl_type == ETH_TYPE_IPV4 || dl_type == ETH_TYPE_IPV6)
        && f.nw_proto == IPPROTO_TCP
        && w.tcp_flags & 0x0fff != 0
    {
        let _ = write!(
            s,
            "tcp_flags={}",
            fmt_tcp_flags(
                u128::from(f.tcp_flags & 0xfff),
                u128::from(w.tcp_flags & 0xfff)
            )
        );
    }
    if s.ends_with(',') {
        s.pop();
    }
    s
}

fn fmt_subfield(sf: &Subfield) -> String {
    sf.to_string()
}

/// One action as `ofpacts_format` prints it.
pub fn format_action(a: &Action, opts: &FormatOptions<'_>) -> String {
    match a {
        Action::Output(p) => format!("output:{}", fmt_port(*p, opts)),
        Action::OutputReg(sf) => format!("output:{}", fmt_subfield(sf)),
        Action::InPort => "IN_PORT".into(),
        Action::Normal => "NORMAL".into(),
        Action::Flood => "FLOOD".into(),
        Action::All => "ALL".into(),
        Action::Local => "LOCAL".into(),
        Action::Table => "TABLE".into(),
        Action::Controller { max_len } => format!("CONTROLLER:{max_len}"),
        Action::Resubmit { port, table } => match (port, table) {
            (Some(p), None) => format!("resubmit:{}", fmt_port(*p, opts)),
            _ => format!(
                "resubmit({},{})",
                port.map(|p| fmt_port(p, opts)).unwrap_or_default(),
                table.map(|t| t.to_string()).unwrap_or_default()
            ),
        },
        Action::GotoTable(t) => format!("goto_table:{t}"),
        Action::ModVlanVid(v) => format!("mod_vlan_vid:{v}"),
        Action::ModVlanPcp(v) => format!("mod_vlan_pcp:{v}"),
        Action::StripVlan => "strip_vlan".into(),
        Action::PopVlan => "pop_vlan".into(),
        Action::PushVlan(t) => format!("push_vlan:{}", c_hex(u128::from(*t))),
        Action::ModDlSrc(m) => format!("mod_dl_src:{}", fmt_mac(mac_u128(m))),
        Action::ModDlDst(m) => format!("mod_dl_dst:{}", fmt_mac(mac_u128(m))),
        Action::ModNwSrc(ip) => format!("mod_nw_src:{}", Ipv4Addr::from(*ip)),
        Action::ModNwDst(ip) => format!("mod_nw_dst:{}", Ipv4Addr::from(*ip)),
        Action::ModNwTos(t) => format!("mod_nw_tos:{t}"),
        Action::ModTpSrc(p) => format!("mod_tp_src:{p}"),
        Action::ModTpDst(p) => format!("mod_tp_dst:{p}"),
        Action::DecTtl => "dec_ttl".into(),
        Action::SetTunnel(id) => format!("set_tunnel:{}", c_hex(u128::from(*id))),
        Action::SetTunnel64(id) => format!("set_tunnel64:{}", c_hex(u128::from(*id))),
        Action::SetField { field, value, mask } => format!(
            "set_field:{}->{}",
            fmt_field_value(*field, *value, Some(*mask), opts),
            field.info().mf_name
        ),
        Action::Load { dst, value } => format!("load:{}->{}", c_hex(*value), fmt_subfield(dst)),
        Action::Move { src, dst } => format!("move:{}->{}", fmt_subfield(src), fmt_subfield(dst)),
        Action::Learn(l) => format_learn(l, opts),
        Action::Note(b) => {
            let hex: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
            format!("note:{}", hex.join("."))
        }
    }
}

fn mac_u128(m: &[u8; 6]) -> u128 {
    m.iter().fold(0u128, |a, b| (a << 8) | u128::from(*b))
}

fn format_learn(l: &LearnSpec, opts: &FormatOptions<'_>) -> String {
    let mut s = format!("learn(table={}", l.table);
    if l.idle_timeout != 0 {
        let _ = write!(s, ",idle_timeout={}", l.idle_timeout);
    }
    if l.hard_timeout != 0 {
        let _ = write!(s, ",hard_timeout={}", l.hard_timeout);
    }
    if l.fin_idle_timeout != 0 {
        let _ = write!(s, ",fin_idle_timeout={}", l.fin_idle_timeout);
    }
    if l.fin_hard_timeout != 0 {
        let _ = write!(s, ",fin_hard_timeout={}", l.fin_hard_timeout);
    }
    if l.priority != OFP_DEFAULT_PRIORITY {
        let _ = write!(s, ",priority={}", l.priority);
    }
    let LearnFlags {
        send_flow_rem,
        delete_learned,
    } = l.flags;
    if send_flow_rem {
        s.push_str(",send_flow_rem");
    }
    if delete_learned {
        s.push_str(",delete_learned");
    }
    if l.cookie != 0 {
        let _ = write!(s, ",cookie={}", c_hex(u128::from(l.cookie)));
    }
    for spec in &l.specs {
        s.push(',');
        match spec {
            LearnField::MatchValue { dst, value } => {
                if dst.is_whole() {
                    let _ = write!(
                        s,
                        "{}={}",
                        dst.field.info().mf_name,
                        fmt_field_value(dst.field, *value, None, opts)
                    );
                } else {
                    let _ = write!(s, "{}={}", fmt_subfield(dst), ds_hex(*value));
                }
            }
            LearnField::MatchField { dst, src } => {
                s.push_str(&fmt_subfield(dst));
                if src.field != dst.field || src.ofs != dst.ofs {
                    let _ = write!(s, "={}", fmt_subfield(src));
                }
            }
            LearnField::LoadValue { dst, value } => {
                let _ = write!(s, "load:{}->{}", ds_hex(*value), fmt_subfield(dst));
            }
            LearnField::LoadField { src, dst } => {
                let _ = write!(s, "load:{}->{}", fmt_subfield(src), fmt_subfield(dst));
            }
            LearnField::Output { src } => {
                let _ = write!(s, "output:{}", fmt_subfield(src));
            }
        }
    }
    s.push(')');
    s
}

/// An action list as `ofpacts_format` prints it (`drop` when empty).
pub fn format_actions(actions: &[Action], opts: &FormatOptions<'_>) -> String {
    if actions.is_empty() {
        return "drop".into();
    }
    let parts: Vec<String> = actions.iter().map(|a| format_action(a, opts)).collect();
    parts.join(",")
}

fn format_flags(f: &FlowMod) -> Option<String> {
    let mut v = Vec::new();
    if f.flags.send_flow_rem {
        v.push("send_flow_rem");
    }
    if f.flags.check_overlap {
        v.push("check_overlap");
    }
    (!v.is_empty()).then(|| v.join(","))
}

/// Appends `match actions=...` the way `ofputil_flow_stats_format` ends a line:
/// the match, a space if the match printed anything, then the actions.
fn push_match_actions(s: &mut String, f: &FlowMod, opts: &FormatOptions<'_>) {
    let m = format_match(&f.match_, f.priority, opts);
    if !m.is_empty() {
        s.push_str(&m);
        s.push(' ');
    }
    s.push_str("actions=");
    s.push_str(&format_actions(&f.actions, opts));
}

/// A flow as `ovs-ofctl dump-flows --no-stats` prints it (no leading space):
/// `cookie=` and `table=` only when non-zero, timeouts when set, then
/// `priority=...,match actions=...`. The output parses back with [`parse_flow`]
/// to the same flow.
pub fn format_flow(f: &FlowMod, opts: &FormatOptions<'_>) -> String {
    let mut s = String::new();
    if f.cookie != 0 {
        let _ = write!(s, "cookie={:#x}, ", f.cookie);
    }
    if f.table_id != 0 {
        let _ = write!(s, "table={}, ", f.table_id);
    }
    push_timeouts(&mut s, f);
    push_match_actions(&mut s, f, opts);
    s
}

fn push_timeouts(s: &mut String, f: &FlowMod) {
    if f.idle_timeout != 0 {
        let _ = write!(s, "idle_timeout={}, ", f.idle_timeout);
    }
    if f.hard_timeout != 0 {
        let _ = write!(s, "hard_timeout={}, ", f.hard_timeout);
    }
    if let Some(flags) = format_flags(f) {
        let _ = write!(s, "{flags}, ");
    }
    if f.importance != 0 {
        let _ = write!(s, "importance={}, ", f.importance);
    }
}

/// Largest age `ovs-ofctl` can show: NXST_FLOW carries ages as `u16` + 1.
const MAX_AGE_SECS: u64 = 65534;

/// A rule as one line of `ovs-ofctl dump-flows` (OpenFlow 1.0 + NXM, the
/// default): ` cookie=0x0, duration=1.234s, table=0, n_packets=0, n_bytes=0,
/// [idle_timeout=N, ][hard_timeout=N, ]idle_age=N, [hard_age=N, ]priority=...
/// actions=...`, with a leading space. `hard_age` is shown only when it differs
/// from the duration's whole seconds, ages are capped at 65534, as OVS does.
pub fn format_dump_line(rule: &Rule, now_ms: u64, opts: &FormatOptions<'_>) -> String {
    let f = &rule.flow;
    let dur_ms = now_ms.saturating_sub(rule.created_ms);
    let mut s = format!(" cookie={:#x}, duration={}", f.cookie, dur_ms / 1000);
    let frac = dur_ms % 1000;
    if frac != 0 {
        let d = format!("{frac:03}");
        let _ = write!(s, ".{}", d.trim_end_matches('0'));
    }
    let _ = write!(
        s,
        "s, table={}, n_packets={}, n_bytes={}, ",
        f.table_id, rule.n_packets, rule.n_bytes
    );
    push_timeouts(&mut s, f);
    let idle_age = (now_ms.saturating_sub(rule.used_ms) / 1000).min(MAX_AGE_SECS);
    let hard_age = (now_ms.saturating_sub(rule.modified_ms) / 1000).min(MAX_AGE_SECS);
    let _ = write!(s, "idle_age={idle_age}, ");
    if hard_age != dur_ms / 1000 {
        let _ = write!(s, "hard_age={hard_age}, ");
    }
    push_match_actions(&mut s, f, opts);
    s
}
