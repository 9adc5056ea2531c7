//! The kernel's view of the host's interfaces over rtnetlink: links (name,
//! MAC), IPv4 addresses and IPv4 routes of the main table, the input of the
//! route table's cached routes ([`crate::tunnel_env`]). OVS reads the same
//! in `lib/route-table.c`.
//!
//! [`dump`] reads everything once (RTM_GETLINK, RTM_GETADDR, RTM_GETROUTE
//! dumps on a socket of its own). [`Subscription`] listens to the kernel's
//! notifications (`RTMGRP_LINK`, `RTMGRP_IPV4_IFADDR`, `RTMGRP_IPV4_ROUTE`);
//! as OVS does, a notification is only a sign that something changed, and
//! the whole view is dumped again: the kernel removes routes without
//! notifying (those through an address that went away, those of a device
//! going down), so replaying notifications would drift; a dump never does.
//! A socket buffer overrun (`ENOBUFS`) is a change like any other.
//!
//! [`spawn`] runs this on the `mgmt-route` thread, which also keeps the
//! tables' list of internal ports in step with the running config and ages
//! the neighbor cache ([`crate::tunnel_env::TunnelTables::run_periodic`]).
//!
//! Safe crates only (`netlink-sys` for the socket, `netlink-packet-route`
//! for the messages): this crate forbids `unsafe`.

use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::tunnel_env::{internal_ports, SharedTunnelTables};
use crate::SharedConfig;

/// A network interface as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// Interface name.
    pub name: String,
    /// Its Ethernet address, if it has one.
    pub mac: Option<[u8; 6]>,
    /// Its MTU (IP bytes), if the kernel said.
    pub mtu: Option<u32>,
}

/// An IPv4 address of an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct KernelAddr {
    /// Interface index.
    pub ifindex: u32,
    /// The address, host order.
    pub ip: u32,
    /// Prefix length.
    pub len: u8,
}

/// A unicast IPv4 route of the main table with one output device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct KernelRoute {
    /// Destination network, host order.
    pub dst: u32,
    /// Prefix length.
    pub len: u8,
    /// Gateway, host order.
    pub gateway: Option<u32>,
    /// Output interface index.
    pub oif: u32,
    /// Preferred source (`src` of `ip route`), host order.
    pub prefsrc: Option<u32>,
    /// Metric (`RTA_PRIORITY`): lower first among routes of one prefix.
    pub metric: u32,
}

/// What the kernel says about the host's interfaces.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelView {
    /// Interfaces by index.
    pub links: BTreeMap<u32, Link>,
    /// IPv4 addresses, sorted.
    pub addrs: Vec<KernelAddr>,
    /// Unicast routes of the main table, sorted.
    pub routes: Vec<KernelRoute>,
}

/// The kernel's main routing table.
const RT_TABLE_MAIN: u32 = RouteHeader::RT_TABLE_MAIN as u32;

fn v4(ip: &IpAddr) -> Option<u32> {
    match ip {
        IpAddr::V4(a) => Some(u32::from(*a)),
        IpAddr::V6(_) => None,
    }
}

fn route_v4(a: &RouteAddress) -> Option<u32> {
    match a {
        RouteAddress::Inet(a) => Some(u32::from(*a)),
        _ => None,
    }
}

/// The interface a link message describes: (index, link); `None` without a
/// name.
pub fn link_of(msg: &LinkMessage) -> Option<(u32, Link)> {
    let mut name = None;
    let mut mac = None;
    let mut mtu = None;
    for a in &msg.attributes {
        match a {
            LinkAttribute::IfName(n) => name = Some(n.clone()),
            LinkAttribute::Address(bytes) => mac = <[u8; 6]>::try_from(bytes.as_slice()).ok(),
            LinkAttribute::Mtu(m) => mtu = Some(*m),
            _ => {}
        }
    }
    Some((
        msg.header.index,
        Link {
            name: name?,
            mac,
            mtu,
        },
    ))
}

/// The IPv4 address an address message describes (`IFA_LOCAL`, else
/// `IFA_ADDRESS`); `None` for other families.
pub fn addr_of(msg: &AddressMessage) -> Option<KernelAddr> {
    if msg.header.family != AddressFamily::Inet {
        return None;
    }
    let mut local = None;
    let mut address = None;
    for a in &msg.attributes {
        match a {
            AddressAttribute::Local(ip) => local = v4(ip),
            AddressAttribute::Address(ip) => address = v4(ip),
            _ => {}
        }
    }
    Some(KernelAddr {
        ifindex: msg.header.index,
        ip: local.or(address)?,
        len: msg.header.prefix_len.min(32),
    })
}

/// The route a route message describes, if it is an IPv4 unicast route of
/// the main table with a single output device (multipath routes are left
/// out).
pub fn route_of(msg: &RouteMessage) -> Option<KernelRoute> {
    if msg.header.address_family != AddressFamily::Inet || msg.header.kind != RouteType::Unicast {
        return None;
    }
    let mut table = u32::from(msg.header.table);
    let mut dst = 0;
    let mut gateway = None;
    let mut oif = None;
    let mut prefsrc = None;
    let mut metric = 0;
    for a in &msg.attributes {
        match a {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(d) => dst = route_v4(d)?,
            RouteAttribute::Gateway(g) => gateway = Some(route_v4(g)?),
            RouteAttribute::Oif(o) => oif = Some(*o),
            RouteAttribute::PrefSource(s) => prefsrc = route_v4(s),
            RouteAttribute::Priority(p) => metric = *p,
            _ => {}
        }
    }
    let len = msg.header.destination_prefix_length.min(32);
    (table == RT_TABLE_MAIN).then_some(KernelRoute {
        dst: dst & crate::route::mask(len),
        len,
        gateway,
        oif: oif?,
        prefsrc,
        metric,
    })
}

/// The netlink messages of one datagram (the kernel packs several); one
/// that does not parse is skipped.
fn messages(data: &[u8]) -> Vec<NetlinkMessage<RouteNetlinkMessage>> {
    let mut out = Vec::new();
    let mut off = 0usize;
    while let Some(head) = data.get(off..off + 4) {
        let mut len = [0u8; 4];
        len.copy_from_slice(head);
        let len = u32::from_ne_bytes(len) as usize;
        // A header is 16 bytes; a shorter length cannot be a message.
        let Some(bytes) = data.get(off..off.saturating_add(len)).filter(|_| len >= 16) else {
            break;
        };
        if let Ok(m) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes) {
            out.push(m);
        }
        off = off.saturating_add((len + 3) & !3);
    }
    out
}

/// The largest datagram read: the kernel sizes dump datagrams to at most
/// 32 KiB.
const RECV_BUF: usize = 64 * 1024;

/// Receives one datagram into `buf` without blocking: `Ok(false)` when
/// nothing is queued. A datagram larger than the buffer is an error.
fn recv(sock: &Socket, buf: &mut Vec<u8>) -> io::Result<bool> {
    loop {
        buf.clear();
        return match sock.recv(buf, libc::MSG_TRUNC) {
            Ok(n) if n > buf.len() => Err(io::Error::other(format!(
                "netlink message of {n} bytes truncated to {}",
                buf.len()
            ))),
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Err(e),
        };
    }
}

/// Longest wait for the kernel to finish one dump.
const DUMP_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends `request` as a dump and collects the answer's messages.
fn dump_one(
    sock: &Socket,
    seq: u32,
    request: RouteNetlinkMessage,
    buf: &mut Vec<u8>,
) -> io::Result<Vec<RouteNetlinkMessage>> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = seq;
    let mut msg = NetlinkMessage::new(header, NetlinkPayload::from(request));
    msg.finalize();
    let mut bytes = vec![0u8; msg.buffer_len()];
    msg.serialize(&mut bytes);
    sock.send_to(&bytes, &SocketAddr::new(0, 0), 0)?;
    let deadline = Instant::now() + DUMP_TIMEOUT;
    let mut out = Vec::new();
    loop {
        if !recv(sock, buf)? {
            if Instant::now() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the kernel did not finish a netlink dump",
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        for m in messages(buf) {
            if m.header.sequence_number != seq {
                continue;
            }
            if m.header.flags & NLM_F_DUMP_INTR != 0 {
                return Err(io::Error::new(
                    io::ErrorKind::Interrupted,
                    "netlink dump interrupted by a change",
                ));
            }
            match m.payload {
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::Error(e) => {
                    return Err(match e.code {
                        Some(code) => io::Error::from_raw_os_error(-code.get()),
                        None => io::Error::other("netlink dump answered with an empty error"),
                    })
                }
                NetlinkPayload::InnerMessage(inner) => out.push(inner),
                _ => {}
            }
        }
    }
}

/// Reads the kernel's links, IPv4 addresses and main-table IPv4 routes.
/// A dump interrupted by a concurrent change is retried.
pub fn dump() -> io::Result<KernelView> {
    let mut last = None;
    for _ in 0..5 {
        match dump_once() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => last = Some(e),
            other => return other,
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("netlink dump failed")))
}

fn dump_once() -> io::Result<KernelView> {
    let mut sock = Socket::new(NETLINK_ROUTE)?;
    sock.bind_auto()?;
    sock.set_non_blocking(true)?;
    let mut buf = Vec::with_capacity(RECV_BUF);
    let mut view = KernelView::default();
    for m in dump_one(
        &sock,
        1,
        RouteNetlinkMessage::GetLink(LinkMessage::default()),
        &mut buf,
    )? {
        if let RouteNetlinkMessage::NewLink(l) = m {
            if let Some((index, link)) = link_of(&l) {
                view.links.insert(index, link);
            }
        }
    }
    let mut req = AddressMessage::default();
    req.header.family = AddressFamily::Inet;
    for m in dump_one(&sock, 2, RouteNetlinkMessage::GetAddress(req), &mut buf)? {
        if let RouteNetlinkMessage::NewAddress(a) = m {
            view.addrs.extend(addr_of(&a));
        }
    }
    let mut req = RouteMessage::default();
    req.header.address_family = AddressFamily::Inet;
    for m in dump_one(&sock, 3, RouteNetlinkMessage::GetRoute(req), &mut buf)? {
        if let RouteNetlinkMessage::NewRoute(r) = m {
            view.routes.extend(route_of(&r));
        }
    }
    view.addrs.sort();
    view.addrs.dedup();
    view.routes.sort();
    view.routes.dedup();
    Ok(view)
}

/// Multicast groups: links, IPv4 addresses, IPv4 routes.
const GROUPS: u32 = (libc::RTMGRP_LINK | libc::RTMGRP_IPV4_IFADDR | libc::RTMGRP_IPV4_ROUTE) as u32;

/// A socket subscribed to the kernel's link, IPv4 address and IPv4 route
/// notifications.
pub struct Subscription {
    sock: Socket,
    buf: Vec<u8>,
}

impl Subscription {
    /// Subscribes. Open it before [`dump`]: a change between the two is then
    /// seen as a notification, never lost.
    pub fn open() -> io::Result<Subscription> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind(&SocketAddr::new(0, GROUPS))?;
        sock.set_non_blocking(true)?;
        Ok(Subscription {
            sock,
            buf: Vec::with_capacity(RECV_BUF),
        })
    }

    /// Reads every queued notification; whether the kernel's view may have
    /// changed since the last call (a notification, or notifications lost
    /// to a full socket buffer).
    pub fn changed(&mut self) -> io::Result<bool> {
        let mut changed = false;
        loop {
            match recv(&self.sock, &mut self.buf) {
                Ok(true) => changed = true,
                Ok(false) => return Ok(changed),
                // ENOBUFS: notifications were dropped; a dump catches up.
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => changed = true,
                Err(e) => return Err(e),
            }
        }
    }
}

/// How often the `mgmt-route` thread looks for notifications, config
/// changes and expired neighbors.
pub const POLL_EVERY: Duration = Duration::from_millis(50);

/// Starts the `mgmt-route` thread: subscribes, dumps, and then until `stop`
/// dumps again after every notification (so the tables follow the kernel
/// within [`POLL_EVERY`] plus a dump), takes the internal ports from the
/// running config and ages the neighbor cache. Problems with the kernel
/// (no netlink, a failed dump) are logged to stderr once and retried every
/// second; the tables keep their last view meanwhile.
pub fn spawn(
    tables: SharedTunnelTables,
    cfg: SharedConfig,
    stop: Arc<AtomicBool>,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("mgmt-route".into())
        .spawn(move || route_loop(&tables, &cfg, &stop))
}

fn route_loop(tables: &SharedTunnelTables, cfg: &SharedConfig, stop: &AtomicBool) {
    let mut sub: Option<Subscription> = None;
    let mut dirty = true;
    let mut failing = false;
    let mut retry_at = Instant::now();
    let fail = |what: &str, e: &io::Error, failing: &mut bool| {
        if !*failing {
            eprintln!(
                "ferroswitch: route table: {what}: {e}; routes from the kernel are not updated (retrying every second)"
            );
        }
        *failing = true;
    };
    // Relaxed: `stop` is a standalone flag; no data is published with it.
    while !stop.load(Ordering::Relaxed) {
        if sub.is_none() && Instant::now() >= retry_at {
            match Subscription::open() {
                Ok(s) => {
                    sub = Some(s);
                    dirty = true;
                }
                Err(e) => {
                    fail("cannot subscribe to rtnetlink", &e, &mut failing);
                    retry_at = Instant::now() + Duration::from_secs(1);
                }
            }
        }
        if let Some(s) = sub.as_mut() {
            match s.changed() {
                Ok(c) => dirty |= c,
                Err(e) => {
                    fail("rtnetlink notifications", &e, &mut failing);
                    sub = None;
                    retry_at = Instant::now() + Duration::from_secs(1);
                }
            }
        }
        if dirty && sub.is_some() && Instant::now() >= retry_at {
            match dump() {
                Ok(view) => {
                    crate::tunnel_env::lock(tables).set_kernel(view);
                    dirty = false;
                    if failing {
                        eprintln!("ferroswitch: route table: following the kernel again");
                        failing = false;
                    }
                }
                Err(e) => {
                    fail("rtnetlink dump", &e, &mut failing);
                    retry_at = Instant::now() + Duration::from_secs(1);
                }
            }
        }
        // The config's lock is released before the tables' is taken.
        let ports = internal_ports(&cfg.read().unwrap_or_else(|e| e.into_inner()));
        {
            let mut t = crate::tunnel_env::lock(tables);
            t.set_internal_ports(ports);
            t.run_periodic();
        }
        std::thread::sleep(POLL_EVERY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(s: &str) -> u32 {
        u32::from(s.parse::<Ipv4Addr>().unwrap())
    }

    #[test]
    fn messages_are_read_into_the_view() {
        let mut link = LinkMessage::default();
        link.header.index = 7;
        link.attributes = vec![
            LinkAttribute::IfName("br-phy".into()),
            LinkAttribute::Address(vec![2, 0, 0, 0, 0, 1]),
            LinkAttribute::Mtu(1400),
        ];
        assert_eq!(
            link_of(&link),
            Some((
                7,
                Link {
                    name: "br-phy".into(),
                    mac: Some([2, 0, 0, 0, 0, 1]),
                    mtu: Some(1400),
                }
            ))
        );
        link.attributes.remove(0);
        assert_eq!(link_of(&link), None);

        let mut addr = AddressMessage::default();
        addr.header.family = AddressFamily::Inet;
        addr.header.index = 7;
        addr.header.prefix_len = 24;
        addr.attributes = vec![
            AddressAttribute::Address(IpAddr::V4("172.16.0.9".parse().unwrap())),
            AddressAttribute::Local(IpAddr::V4("172.16.0.1".parse().unwrap())),
        ];
        assert_eq!(
            addr_of(&addr),
            Some(KernelAddr {
                ifindex: 7,
                ip: ip("172.16.0.1"),
                len: 24
            })
        );
        addr.header.family = AddressFamily::Inet6;
        assert_eq!(addr_of(&addr), None);

        let mut r = RouteMessage::default();
        r.header.address_family = AddressFamily::Inet;
        r.header.kind = RouteType::Unicast;
        r.header.table = RouteHeader::RT_TABLE_MAIN;
        r.header.destination_prefix_length = 8;
        r.attributes = vec![
            RouteAttribute::Destination(RouteAddress::Inet("10.0.0.0".parse().unwrap())),
            RouteAttribute::Gateway(RouteAddress::Inet("172.16.0.254".parse().unwrap())),
            RouteAttribute::Oif(7),
            RouteAttribute::Priority(100),
        ];
        let want = KernelRoute {
            dst: ip("10.0.0.0"),
            len: 8,
            gateway: Some(ip("172.16.0.254")),
            oif: 7,
            prefsrc: None,
            metric: 100,
        };
        assert_eq!(route_of(&r), Some(want));
        // A table given as an attribute wins over the header's byte.
        r.attributes.push(RouteAttribute::Table(1000));
        assert_eq!(route_of(&r), None);
        r.attributes.pop();
        r.header.kind = RouteType::Local;
        assert_eq!(route_of(&r), None);
    }

    #[test]
    fn datagrams_with_several_messages_and_junk() {
        let mut one = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::from(RouteNetlinkMessage::GetLink(LinkMessage::default())),
        );
        one.finalize();
        let mut bytes = vec![0u8; one.buffer_len()];
        one.serialize(&mut bytes);
        let mut two = bytes.clone();
        two.extend_from_slice(&bytes);
        assert_eq!(messages(&two).len(), 2);
        // A truncated second message, a zero length, random bytes: no panic.
        assert_eq!(messages(&two[..two.len() - 1]).len(), 1);
        assert_eq!(messages(&[0u8; 20]).len(), 0);
        assert_eq!(messages(&[0xffu8; 3]).len(), 0);
        for seed in 0..200u32 {
            let junk: Vec<u8> = (0..64u32)
                .map(|i| (seed.wrapping_mul(31) ^ i.wrapping_mul(17)) as u8)
                .collect();
            let _ = messages(&junk);
        }
    }

    /// The real kernel: the loopback interface is there with 127.0.0.1/8.
    #[test]
    fn dump_reads_the_real_kernel() {
        let view = dump().expect("rtnetlink dump");
        let (lo, _) = view
            .links
            .iter()
            .find(|(_, l)| l.name == "lo")
            .expect("lo in the links");
        assert!(
            view.addrs.contains(&KernelAddr {
                ifindex: *lo,
                ip: ip("127.0.0.1"),
                len: 8
            }),
            "{view:?}"
        );
    }
}
