//! What the slow-path tests share: a datapath that records what the slow
//! path asks of it.

use std::sync::{Arc, Mutex};

use mgmt::ofproto::{format_megaflow, DpControl};
use pipeline::actions::{format_dp_actions, DpAction};
use pipeline::flow_cache::FlowStats;
use pipeline::FlowKey;

/// A datapath that records what the slow path asks of it (megaflows
/// installed, updated, removed; packets executed), and keeps each megaflow's
/// counters so a test can play the PMD.
#[derive(Default)]
pub struct Recorder {
    pub log: Mutex<Vec<String>>,
    pub stats: Mutex<Vec<(String, Arc<FlowStats>)>>,
}

impl DpControl for &Recorder {
    type Packet = ();
    fn install(
        &self,
        pmd: usize,
        mask: &FlowKey,
        key: &FlowKey,
        actions: Vec<DpAction>,
        stats: Arc<FlowStats>,
        packet: Option<()>,
    ) {
        let mf = format_megaflow(key, mask);
        self.log.lock().unwrap().push(format!(
            "install pmd{pmd} {mf} -> {}{}",
            format_dp_actions(&actions),
            if packet.is_some() { " +pkt" } else { "" }
        ));
        self.stats.lock().unwrap().push((mf, stats));
    }
    fn remove(&self, pmd: usize, mask: &FlowKey, key: &FlowKey) {
        self.log
            .lock()
            .unwrap()
            .push(format!("remove pmd{pmd} {}", format_megaflow(key, mask)));
    }
    fn execute(&self, frame: &[u8], actions: &[DpAction]) {
        let hex: String = frame.iter().map(|b| format!("{b:02x}")).collect();
        self.log
            .lock()
            .unwrap()
            .push(format!("execute {hex} -> {}", format_dp_actions(actions)));
    }
}

impl Recorder {
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}
