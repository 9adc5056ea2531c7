//! Simple match: megaflows that look only at where a packet came from and its
//! Ethernet type, found without parsing the packet (OVS's `dp_netdev_simple_match`,
//! dpif-netdev 3.0).
//!
//! A megaflow is *simple* when its mask holds `in_port` and `recirc_id` exactly,
//! `dl_type` exactly, and nothing else but bits of the outer VLAN TCI and of
//! `nw_frag`, and its key's `recirc_id` is 0. `in_port=1,actions=output:2`
//! translates to one (`ip,in_port=1,nw_frag=no`). When every megaflow of an input
//! port is simple, and no megaflow leaves `in_port` wild, a packet from that port
//! can only match one of them, and which one depends only on its [`SimpleKey`]
//! ([`crate::parse_simple`]): the PMD skips the parse, the hash, the EMC and the
//! classifier for it.
//!
//! Packets with a `recirc_id` other than 0 never take this path (they come back
//! from a recirculation with their key already built).

use crate::flow_cache::FlowRef;
use crate::flow_key::FlowKey;
use crate::parse::SimpleKey;

/// Ports above this never take the simple path (their state would be a big
/// table for nothing: datapath ports are numbered densely from 0).
const MAX_PORTS: usize = 4096;

#[derive(Clone, Copy, Debug)]
struct Entry {
    dl_type: u16,
    tci_mask: u16,
    tci: u16,
    frag_mask: u8,
    frag: u8,
    flow: FlowRef,
}

#[derive(Clone, Debug, Default)]
struct PortState {
    /// Megaflows matching exactly this in_port.
    n_flows: u32,
    /// The simple ones among them.
    entries: Vec<Entry>,
}

/// Per-port simple-match tables of one PMD's flow cache.
#[derive(Debug, Default)]
pub struct SimpleMatch {
    ports: Vec<PortState>,
    /// Megaflows that do not match `in_port` exactly: they may match a packet of
    /// any port, so while there is one, no port is simple.
    wild_port: u32,
}

/// The mask bits a simple megaflow may have.
fn simple_mask_limit() -> FlowKey {
    let mut m = FlowKey {
        in_port: u32::MAX,
        recirc_id: u32::MAX,
        dl_type: u16::MAX,
        nw_frag: u8::MAX,
        ..FlowKey::default()
    };
    m.vlan_tci[0] = u16::MAX;
    m
}

/// Whether the megaflow `mask`/`key` is simple (see the module doc).
pub fn is_simple(mask: &FlowKey, key: &FlowKey) -> bool {
    let limit = simple_mask_limit();
    mask.in_port == u32::MAX
        && mask.recirc_id == u32::MAX
        && mask.dl_type == u16::MAX
        && key.recirc_id == 0
        && mask
            .words()
            .iter()
            .zip(limit.words())
            .all(|(m, l)| m & !l == 0)
}

impl SimpleMatch {
    /// A megaflow was installed with handle `flow`.
    pub fn add(&mut self, mask: &FlowKey, key: &FlowKey, flow: FlowRef) {
        let Some(st) = self.port_mut(mask, key) else {
            self.wild_port += 1;
            return;
        };
        st.n_flows += 1;
        if is_simple(mask, key) {
            st.entries.push(Entry {
                dl_type: key.dl_type,
                tci_mask: mask.vlan_tci[0],
                tci: key.vlan_tci[0] & mask.vlan_tci[0],
                frag_mask: mask.nw_frag,
                frag: key.nw_frag & mask.nw_frag,
                flow,
            });
        }
    }

    /// The megaflow `mask`/`key` with handle `flow` was removed.
    pub fn remove(&mut self, mask: &FlowKey, key: &FlowKey, flow: FlowRef) {
        let Some(st) = self.port_mut(mask, key) else {
            self.wild_port = self.wild_port.saturating_sub(1);
            return;
        };
        st.n_flows = st.n_flows.saturating_sub(1);
        st.entries.retain(|e| e.flow != flow);
    }

    pub fn clear(&mut self) {
        self.ports.clear();
        self.wild_port = 0;
    }

    /// The state of the port a megaflow matches exactly, or `None` for a megaflow
    /// that may match several ports (or a port beyond [`MAX_PORTS`], counted the
    /// same way so that it disables the simple path rather than escape it).
    fn port_mut(&mut self, mask: &FlowKey, key: &FlowKey) -> Option<&mut PortState> {
        if mask.in_port != u32::MAX {
            return None;
        }
        let p = key.in_port as usize;
        if p >= MAX_PORTS {
            return None;
        }
        if self.ports.len() <= p {
            self.ports.resize(p + 1, PortState::default());
        }
        self.ports.get_mut(p)
    }

    /// Whether packets from `in_port` can be classified by [`SimpleMatch::lookup`]:
    /// the port has megaflows, all of them simple, and no megaflow leaves `in_port`
    /// wild.
    #[inline(always)]
    pub fn enabled(&self, in_port: u32) -> bool {
        self.wild_port == 0
            && self
                .ports
                .get(in_port as usize)
                .is_some_and(|st| st.n_flows != 0 && st.entries.len() == st.n_flows as usize)
    }

    /// The megaflow a fresh packet (`recirc_id` 0) from `in_port` with these
    /// fields falls in. Exact only where [`SimpleMatch::enabled`] holds.
    #[inline(always)]
    pub fn lookup(&self, in_port: u32, k: &SimpleKey) -> Option<FlowRef> {
        self.port(in_port).lookup(k)
    }

    /// The simple megaflows of `in_port`, to look a whole burst up in.
    #[inline(always)]
    pub fn port(&self, in_port: u32) -> PortTable<'_> {
        PortTable {
            entries: self
                .ports
                .get(in_port as usize)
                .map_or(&[], |st| st.entries.as_slice()),
        }
    }
}

/// One port's simple megaflows.
#[derive(Clone, Copy)]
pub struct PortTable<'a> {
    entries: &'a [Entry],
}

impl PortTable<'_> {
    /// See [`SimpleMatch::lookup`].
    #[inline(always)]
    pub fn lookup(&self, k: &SimpleKey) -> Option<FlowRef> {
        self.entries
            .iter()
            .find(|e| {
                e.dl_type == k.dl_type
                    && k.vlan_tci & e.tci_mask == e.tci
                    && k.nw_frag & e.frag_mask == e.frag
            })
            .map(|e| e.flow)
    }
}
