//! OpenFlow actions as `ovs-ofctl` knows them (OVS `struct ofpact`, `ovs-actions(7)`).
//!
//! An action list is a `Vec<Action>`; an empty list is `drop`. Output to a reserved
//! port has its own variant ([`Action::Normal`], [`Action::InPort`], ...), so
//! `output:NORMAL` and `NORMAL` are the same value; [`Action::Output`] holds only
//! ordinary ports (below [`OFPP_MAX`]). [`Action::output`] builds the right variant
//! from any port number.

use super::field::{Field, Subfield};
pub use crate::flow_key::OFPP_LOCAL;

/// Highest ordinary port number + 1 (OpenFlow 1.1 `OFPP_MAX` = 0xffffff00).
pub const OFPP_MAX: u32 = 0xffff_ff00;
/// Send the packet back out its input port.
pub const OFPP_IN_PORT: u32 = 0xffff_fff8;
/// Submit the packet to the first flow table (packet-out only).
pub const OFPP_TABLE: u32 = 0xffff_fff9;
/// The traditional L2 learning switch (OVS `NORMAL`).
pub const OFPP_NORMAL: u32 = 0xffff_fffa;
/// All ports except the input port and those with flooding disabled.
pub const OFPP_FLOOD: u32 = 0xffff_fffb;
/// All ports except the input port.
pub const OFPP_ALL: u32 = 0xffff_fffc;
/// The controller.
pub const OFPP_CONTROLLER: u32 = 0xffff_fffd;
/// Wildcard / no port (`OFPP_ANY`, OVS's `OFPP_NONE`).
pub const OFPP_ANY: u32 = 0xffff_ffff;
/// Same as [`OFPP_ANY`], OVS's name.
pub const OFPP_NONE: u32 = OFPP_ANY;

/// Default `max_len` of a controller action (send the whole packet).
pub const CONTROLLER_MAX_LEN_DEFAULT: u16 = 0xffff;

/// Reserved port names, as `ofputil_port_to_string` prints them.
pub const RESERVED_PORT_NAMES: [(u32, &str); 8] = [
    (OFPP_IN_PORT, "IN_PORT"),
    (OFPP_TABLE, "TABLE"),
    (OFPP_NORMAL, "NORMAL"),
    (OFPP_FLOOD, "FLOOD"),
    (OFPP_ALL, "ALL"),
    (OFPP_CONTROLLER, "CONTROLLER"),
    (OFPP_LOCAL, "LOCAL"),
    (OFPP_ANY, "ANY"),
];

/// One action.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// `output:N` to an ordinary port (`N < OFPP_MAX`).
    Output(u32),
    /// `output:F[a..b]`: output to the port held in a (sub)field.
    OutputReg(Subfield),
    /// `IN_PORT` (`in_port`, `output:IN_PORT`).
    InPort,
    /// `NORMAL`.
    Normal,
    /// `FLOOD`.
    Flood,
    /// `ALL`.
    All,
    /// `LOCAL`.
    Local,
    /// `output:TABLE` (only meaningful in packet-out).
    Table,
    /// `CONTROLLER:max_len` (`controller`, `controller:N`, `output:CONTROLLER`).
    Controller {
        /// Bytes of the packet to send.
        max_len: u16,
    },
    /// `resubmit:P`, `resubmit(P,T)`, `resubmit(,T)`: look up again with `in_port`
    /// replaced (`None` = keep the packet's) in table `T` (`None` = this table).
    Resubmit {
        /// Port to pretend the packet came in on; `None` = its own in_port.
        port: Option<u32>,
        /// Table to search; `None` = the current table.
        table: Option<u8>,
    },
    /// `goto_table:T` (OpenFlow 1.1+ instruction; must name a later table).
    GotoTable(u8),
    /// `mod_vlan_vid:V`: set the VID, pushing a tag if there is none.
    ModVlanVid(u16),
    /// `mod_vlan_pcp:P`: set the priority, pushing a tag if there is none.
    ModVlanPcp(u8),
    /// `strip_vlan`: remove the outer tag (OpenFlow 1.0 name).
    StripVlan,
    /// `pop_vlan`: remove the outer tag (OpenFlow 1.1+ name; same effect).
    PopVlan,
    /// `push_vlan:TPID` (0x8100 or 0x88a8).
    PushVlan(u16),
    /// `mod_dl_src:MAC`.
    ModDlSrc([u8; 6]),
    /// `mod_dl_dst:MAC`.
    ModDlDst([u8; 6]),
    /// `mod_nw_src:IP` (host-order IPv4).
    ModNwSrc(u32),
    /// `mod_nw_dst:IP` (host-order IPv4).
    ModNwDst(u32),
    /// `mod_nw_tos:TOS` (DSCP bits of the TOS byte; low 2 bits must be zero).
    ModNwTos(u8),
    /// `mod_tp_src:PORT`.
    ModTpSrc(u16),
    /// `mod_tp_dst:PORT`.
    ModTpDst(u16),
    /// `dec_ttl`.
    DecTtl,
    /// `set_tunnel:ID` (32-bit form, ID < 2^32).
    SetTunnel(u64),
    /// `set_tunnel64:ID`.
    SetTunnel64(u64),
    /// `set_field:V[/M]->F`. `mask` is the field's full mask when none was given.
    SetField {
        /// Destination field.
        field: Field,
        /// Value, in the field's width.
        value: u128,
        /// Mask, in the field's width; `field.full_mask()` when not masked.
        mask: u128,
    },
    /// `load:V->F[a..b]`.
    Load {
        /// Destination bits.
        dst: Subfield,
        /// Value, right-aligned, at most `dst.n_bits` wide.
        value: u128,
    },
    /// `move:F[a..b]->G[c..d]` (equal widths).
    Move {
        /// Source bits.
        src: Subfield,
        /// Destination bits.
        dst: Subfield,
    },
    /// `learn(...)`.
    Learn(Box<LearnSpec>),
    /// `note:HEX` (bytes, already padded as OVS pads them on the wire).
    Note(Vec<u8>),
}

impl Action {
    /// The action that outputs to `port`: a reserved port gets its own variant
    /// (`OFPP_NORMAL` -> [`Action::Normal`], ...); `OFPP_CONTROLLER` gets the default
    /// `max_len`. `OFPP_ANY` and other non-ports give `None`.
    pub fn output(port: u32) -> Option<Action> {
        Some(match port {
            p if p < OFPP_MAX => Action::Output(p),
            OFPP_IN_PORT => Action::InPort,
            OFPP_TABLE => Action::Table,
            OFPP_NORMAL => Action::Normal,
            OFPP_FLOOD => Action::Flood,
            OFPP_ALL => Action::All,
            OFPP_CONTROLLER => Action::Controller {
                max_len: CONTROLLER_MAX_LEN_DEFAULT,
            },
            OFPP_LOCAL => Action::Local,
            _ => return None,
        })
    }

    /// The port an output-type action sends to (for `out_port` filters), or
    /// `None` for other actions and for [`Action::OutputReg`].
    pub fn output_port(&self) -> Option<u32> {
        Some(match self {
            Action::Output(p) => *p,
            Action::InPort => OFPP_IN_PORT,
            Action::Table => OFPP_TABLE,
            Action::Normal => OFPP_NORMAL,
            Action::Flood => OFPP_FLOOD,
            Action::All => OFPP_ALL,
            Action::Controller { .. } => OFPP_CONTROLLER,
            Action::Local => OFPP_LOCAL,
            _ => return None,
        })
    }
}

/// Flags of a learn action.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LearnFlags {
    /// `send_flow_rem`: the learned flow sends a flow-removed message.
    pub send_flow_rem: bool,
    /// `delete_learned`: deleting the learning flow deletes the flows it learned.
    pub delete_learned: bool,
}

/// The `learn(...)` action: a template for a flow to add (OVS `struct
/// ofpact_learn`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LearnSpec {
    /// Table the flow goes into (default 1).
    pub table: u8,
    /// Priority of the new flow (default 32768).
    pub priority: u16,
    /// Idle timeout of the new flow, seconds, 0 = none.
    pub idle_timeout: u16,
    /// Hard timeout of the new flow, seconds, 0 = none.
    pub hard_timeout: u16,
    /// Idle timeout after a TCP FIN/RST is seen, 0 = none.
    pub fin_idle_timeout: u16,
    /// Hard timeout after a TCP FIN/RST is seen, 0 = none.
    pub fin_hard_timeout: u16,
    /// Cookie of the new flow.
    pub cookie: u64,
    /// Flags.
    pub flags: LearnFlags,
    /// Match, load and output specs, in order.
    pub specs: Vec<LearnField>,
}

/// Default table of a learn action.
pub const LEARN_DEFAULT_TABLE: u8 = 1;

impl Default for LearnSpec {
    fn default() -> Self {
        LearnSpec {
            table: LEARN_DEFAULT_TABLE,
            priority: super::rule::OFP_DEFAULT_PRIORITY,
            idle_timeout: 0,
            hard_timeout: 0,
            fin_idle_timeout: 0,
            fin_hard_timeout: 0,
            cookie: 0,
            flags: LearnFlags::default(),
            specs: Vec::new(),
        }
    }
}

/// One spec of a learn action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LearnField {
    /// The new flow matches `dst` against the packet's `src` bits:
    /// `NXM_OF_VLAN_TCI[0..11]` (src = dst), `NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[]`.
    MatchField {
        /// Bits of the new flow's match.
        dst: Subfield,
        /// Bits of the packet that supply the value.
        src: Subfield,
    },
    /// The new flow matches `dst` against a constant: `dl_type=0x800`,
    /// `NXM_OF_VLAN_TCI[0..11]=0x5`.
    MatchValue {
        /// Bits of the new flow's match.
        dst: Subfield,
        /// Value, right-aligned.
        value: u128,
    },
    /// The new flow loads the packet's `src` bits into `dst`:
    /// `load:NXM_NX_TUN_ID[]->NXM_NX_TUN_ID[]`.
    LoadField {
        /// Bits of the learning packet.
        src: Subfield,
        /// Bits the new flow writes.
        dst: Subfield,
    },
    /// The new flow loads a constant: `load:0->NXM_OF_VLAN_TCI[]`.
    LoadValue {
        /// Bits the new flow writes.
        dst: Subfield,
        /// Value, right-aligned.
        value: u128,
    },
    /// The new flow outputs to the port in the packet's `src` bits:
    /// `output:NXM_OF_IN_PORT[]`.
    Output {
        /// Bits of the learning packet holding the port.
        src: Subfield,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_normalizes_reserved_ports() {
        assert_eq!(Action::output(3), Some(Action::Output(3)));
        assert_eq!(Action::output(OFPP_NORMAL), Some(Action::Normal));
        assert_eq!(Action::output(OFPP_LOCAL), Some(Action::Local));
        assert_eq!(
            Action::output(OFPP_CONTROLLER),
            Some(Action::Controller { max_len: 0xffff })
        );
        assert_eq!(Action::output(OFPP_ANY), None);
        for (p, _) in RESERVED_PORT_NAMES {
            if let Some(a) = Action::output(p) {
                assert_eq!(a.output_port(), Some(p));
            }
        }
    }
}
