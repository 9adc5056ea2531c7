//! ferroswitch's management layer: everything that is not the per-packet path.
//!
//! It owns the configuration ([`config`]), the control socket behind
//! `ferroswitch ctl` ([`control`]), the Prometheus endpoint ([`metrics`]) and the
//! console rate line ([`console`]). It sees the datapath only through
//! [`view::DatapathView`], a read-only trait the binary implements over the real
//! PMD threads, so this crate builds and tests without DPDK.
//!
//! # Threads
//!
//! [`spawn_management`] binds the control socket and the metrics listener first
//! (so a bad address or a second daemon fails before anything else starts),
//! then starts:
//!
//! - `mgmt-ctl`: accepts control connections; each gets a `mgmt-ctl-conn`
//!   thread answering one JSON response line per request line;
//! - `mgmt-metrics`: answers `GET /metrics` (if `metrics.listen` is not off);
//! - `mgmt-console`: prints one rate line per second (if `metrics.console`);
//! - `mgmt-route` (if [`ManagementExtras::tunnel`] is given): keeps the
//!   tunnel route table and local addresses in step with the kernel
//!   ([`rtnl`]) and ages the neighbor cache; the `route` and `neigh`
//!   control commands ([`tunnel_env::commands`]) come with it.
//!
//! All poll the shared `stop` flag at least every 100 ms and end soon after it
//! is set; [`ManagementHandle::join`] waits for them. Threads inherit the CPU
//! affinity of the thread that spawns them: the binary calls
//! [`spawn_management`] from the EAL main lcore, so they share
//! `pmd.mgmt_cpu` and never steal a PMD's core.
//!
//! # What it must not do
//!
//! Never touch PMD state except by reading counters through the view (owned
//! snapshots; the PMDs write, we only read) or, later, by sending messages the
//! PMDs apply between bursts. No locks shared with the fast path, no blocking a
//! PMD, no `unsafe` (`#![forbid(unsafe_code)]`). Errors are typed
//! (`thiserror`) and name the config field or path they concern.
#![forbid(unsafe_code)]

pub mod config;
pub mod console;
pub mod control;
pub mod metrics;
pub mod neigh;
pub mod ofproto;
pub mod route;
pub mod rtnl;
pub mod topology;
pub mod tunnel_env;
pub mod udpif;
pub mod view;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use thiserror::Error;

pub use config::{Config, ConfigError, HostFacts};
pub use control::{CommandExtension, ControlError, Request, Response};
pub use metrics::MetricsError;
pub use view::{DatapathView, PmdSnapshot, PortSnapshot, StaticView};

/// Errors starting the management threads.
#[derive(Debug, Error)]
pub enum MgmtError {
    /// The control socket could not be set up.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// The metrics listener could not be set up.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// A thread could not be started.
    #[error("management: cannot start {what} thread: {source}")]
    Thread {
        /// Which thread.
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Optional additions to the management threads.
#[derive(Default)]
pub struct ManagementExtras {
    /// Datapath-specific control commands, tried after the built-in ones.
    pub commands: Option<CommandExtension>,
    /// Where the console rate lines go; default stdout.
    pub console_out: Option<Box<dyn Write + Send>>,
    /// Where link up/down events are logged; default stderr.
    pub log_out: Option<Box<dyn Write + Send>>,
    /// The tunnel route and neighbor tables: given, the `mgmt-route` thread
    /// keeps them and the `route`/`neigh` commands show and change them.
    pub tunnel: Option<tunnel_env::SharedTunnelTables>,
}

impl std::fmt::Debug for ManagementExtras {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagementExtras")
            .field("commands", &self.commands)
            .field("console_out", &self.console_out.is_some())
            .field("log_out", &self.log_out.is_some())
            .field("tunnel", &self.tunnel.is_some())
            .finish()
    }
}

/// The running management threads.
#[derive(Debug)]
pub struct ManagementHandle {
    threads: Vec<JoinHandle<()>>,
    control_path: PathBuf,
    metrics_addr: Option<SocketAddr>,
}

impl ManagementHandle {
    /// The control socket being served.
    pub fn control_path(&self) -> &std::path::Path {
        &self.control_path
    }

    /// The metrics address actually bound, `None` if metrics are off.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Wait for every management thread; call after setting `stop`. The
    /// control socket file is gone when this returns. It does not print the
    /// final counters: the binary does, with [`console::final_summary`], once
    /// the PMDs have stopped and the counters are final.
    pub fn join(self) {
        for t in self.threads {
            // A panicked management thread has already printed its message;
            // shutting down the rest is all that is left to do.
            let _ = t.join();
        }
    }
}

/// The running configuration: what the config file said, as runtime changes
/// (`ctl add-br`, `add-port`, ...) have changed it since.
pub type SharedConfig = Arc<std::sync::RwLock<Config>>;

/// Bind the control socket and the metrics listener, then start the
/// management threads (see the crate docs). Nothing is started if either
/// bind fails.
pub fn spawn_management(
    cfg: SharedConfig,
    view: Arc<dyn DatapathView>,
    stop: Arc<AtomicBool>,
    extras: ManagementExtras,
) -> Result<ManagementHandle, MgmtError> {
    // The control and metrics settings never change at runtime.
    let settings = cfg.read().unwrap_or_else(|e| e.into_inner()).clone();
    let control = control::ControlServer::bind(&settings.control.socket)?;
    let metrics = match settings.metrics.listen_addr() {
        Some(addr) => Some(metrics::MetricsServer::bind(addr)?),
        None => None,
    };
    let control_path = control.path().to_path_buf();
    let metrics_addr = metrics.as_ref().and_then(|m| m.local_addr());

    let mut threads = Vec::new();
    let tunnel = extras.tunnel;
    let handler: control::Handler = {
        let (cfg, view) = (Arc::clone(&cfg), Arc::clone(&view));
        let tunnel_commands = tunnel
            .as_ref()
            .map(|t| tunnel_env::commands(Arc::clone(t), Arc::clone(&cfg)));
        let ext = match (extras.commands, tunnel_commands) {
            (Some(c), Some(t)) => Some(c.chain(t)),
            (c, t) => c.or(t),
        };
        Arc::new(move |req: &Request| control::dispatch(req, &*view, &cfg, ext.as_ref()))
    };
    let started = (|| -> Result<(), MgmtError> {
        threads.push(control.spawn(handler, Arc::clone(&stop))?);
        if let Some(m) = metrics {
            threads.push(m.spawn(Arc::clone(&view), Arc::clone(&stop))?);
        }
        if let Some(t) = tunnel {
            let t = rtnl::spawn(t, Arc::clone(&cfg), Arc::clone(&stop)).map_err(|source| {
                MgmtError::Thread {
                    what: "route table",
                    source,
                }
            })?;
            threads.push(t);
        }
        {
            let out = extras
                .log_out
                .unwrap_or_else(|| Box::new(std::io::stderr()));
            let (view, stop) = (Arc::clone(&view), Arc::clone(&stop));
            let t = std::thread::Builder::new()
                .name("mgmt-links".to_string())
                .spawn(move || link_watch_loop(&*view, &stop, out))
                .map_err(|source| MgmtError::Thread {
                    what: "link watch",
                    source,
                })?;
            threads.push(t);
        }
        if settings.metrics.console {
            let out = extras
                .console_out
                .unwrap_or_else(|| Box::new(std::io::stdout()));
            let (view, stop) = (Arc::clone(&view), Arc::clone(&stop));
            let t = std::thread::Builder::new()
                .name("mgmt-console".to_string())
                .spawn(move || console_loop(&*view, &stop, out))
                .map_err(|source| MgmtError::Thread {
                    what: "console",
                    source,
                })?;
            threads.push(t);
        }
        Ok(())
    })();
    if let Err(e) = started {
        // Stop what did start; the caller never got a handle to stop it.
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            let _ = t.join();
        }
        return Err(e);
    }
    Ok(ManagementHandle {
        threads,
        control_path,
        metrics_addr,
    })
}

/// How often port links are looked at for up/down events.
const LINK_WATCH_EVERY: Duration = Duration::from_millis(200);

/// Logs every change of a port's link (a VM's driver attaching to its vhost
/// port or going away, a tap brought up, a cable): one line per event, until
/// `stop`. The state itself is the `ferroswitch_port_link_up` gauge.
fn link_watch_loop(view: &dyn DatapathView, stop: &AtomicBool, mut out: Box<dyn Write + Send>) {
    let mut known: std::collections::HashMap<(String, String), bool> =
        std::collections::HashMap::new();
    let mut first = true;
    // Relaxed: `stop` is a standalone flag; no data is published with it.
    while !stop.load(Ordering::Relaxed) {
        let ports = view.ports();
        for p in &ports {
            let key = (p.bridge.clone(), p.name.clone());
            let was = known.insert(key, p.link_up);
            // The ports of the start are taken as they are; a port added later
            // (ctl add-port) is logged if it comes up, then every change.
            let event = match was {
                Some(w) => w != p.link_up,
                None => !first && p.link_up,
            };
            if event {
                let state = if p.link_up { "up" } else { "down" };
                let _ = writeln!(
                    out,
                    "ferroswitch: bridge {} port {}: link {state}",
                    p.bridge, p.name
                );
                let _ = out.flush();
            }
        }
        known.retain(|(b, n), _| ports.iter().any(|p| &p.bridge == b && &p.name == n));
        first = false;
        std::thread::sleep(LINK_WATCH_EVERY);
    }
}

/// One rate line per second, on whole-second deadlines from the start (no
/// drift), until `stop`.
fn console_loop(view: &dyn DatapathView, stop: &AtomicBool, mut out: Box<dyn Write + Send>) {
    let start = Instant::now();
    let mut meter = console::RateMeter::new();
    meter.update(Duration::ZERO, &view.ports());
    let mut tick: u32 = 1;
    loop {
        let deadline = start + Duration::from_secs(u64::from(tick));
        loop {
            // Relaxed: `stop` is a standalone flag; no data is published with it.
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            std::thread::sleep((deadline - now).min(Duration::from_millis(100)));
        }
        if let Some(line) = meter.update(start.elapsed(), &view.ports()) {
            // A closed stdout (daemon detached) must not stop the switch.
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
        // Skip ticks missed while suspended rather than printing a burst.
        let elapsed = start.elapsed().as_secs();
        tick = u32::try_from(elapsed).unwrap_or(u32::MAX).saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpStream;
    use std::sync::Mutex;

    /// A Write that appends to a shared buffer.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("fs-mgmt-lib-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn port(name: &str, rx: u64) -> PortSnapshot {
        PortSnapshot {
            bridge: "br0".into(),
            name: name.into(),
            ofport: 1,
            rx_packets: rx,
            rx_bytes: rx * 64,
            ..Default::default()
        }
    }

    #[test]
    fn management_threads_serve_and_stop() {
        let dir = temp_dir("all");
        let mut cfg = Config::default();
        cfg.control.socket = dir.join("ctl/ferroswitch.ctl");
        cfg.metrics.listen = "127.0.0.1:0".to_string();
        let view = Arc::new(StaticView::new(vec![port("dpdk0", 0)], vec![]));
        let stop = Arc::new(AtomicBool::new(false));
        let sink = Sink::default();
        let log = Sink::default();
        let extras = ManagementExtras {
            commands: Some(CommandExtension {
                commands: vec!["ping".into()],
                handler: Arc::new(|r: &Request| {
                    (r.cmd == "ping").then(|| Response::success("pong"))
                }),
            }),
            console_out: Some(Box::new(sink.clone())),
            log_out: Some(Box::new(log.clone())),
            tunnel: Some(tunnel_env::TunnelTables::shared(
                &neigh::NeighConfig::default(),
            )),
        };
        let handle = spawn_management(
            Arc::new(std::sync::RwLock::new(cfg.clone())),
            Arc::clone(&view) as Arc<dyn DatapathView>,
            Arc::clone(&stop),
            extras,
        )
        .unwrap();

        // Binding again fails before anything starts, naming the socket.
        let err = spawn_management(
            Arc::new(std::sync::RwLock::new(cfg.clone())),
            Arc::clone(&view) as Arc<dyn DatapathView>,
            Arc::new(AtomicBool::new(false)),
            ManagementExtras::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("already running"), "{err}");

        let ping = control::call(handle.control_path(), &Request::new("ping", vec![])).unwrap();
        assert_eq!(ping, Response::success("pong"));
        // The tunnel tables' commands (no bridge, so no routes) after the
        // extension's.
        let routes = control::call(
            handle.control_path(),
            &Request::new("route", vec!["show".into()]),
        )
        .unwrap();
        assert_eq!(routes, Response::success("Route Table:\n"));
        let help = control::call(handle.control_path(), &Request::new("help", vec![])).unwrap();
        assert!(
            help.output.contains("\n  ping\n  route add PREFIX/LEN"),
            "{}",
            help.output
        );
        let ps = control::call(handle.control_path(), &Request::new("port-stats", vec![])).unwrap();
        assert!(ps.output.contains("\"dpdk0\": rx pkts=0"), "{}", ps.output);

        // 1000 packets arrive before the first tick.
        view.set(vec![port("dpdk0", 1000)], vec![]);
        let addr = handle.metrics_addr().unwrap();
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        assert!(
            body.contains(
                "\nferroswitch_port_rx_packets_total{bridge=\"br0\",port=\"dpdk0\"} 1000\n"
            ),
            "{body}"
        );

        // dpdk0's link comes up (a guest attached), then goes down: two events.
        let mut up = port("dpdk0", 1000);
        up.link_up = true;
        view.set(vec![up], vec![]);
        let logged = |want: &str| {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
                if text == want || Instant::now() > deadline {
                    return text;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        let up_line = "ferroswitch: bridge br0 port dpdk0: link up\n";
        assert_eq!(logged(up_line), up_line);
        view.set(vec![port("dpdk0", 1000)], vec![]);
        let both = format!("{up_line}ferroswitch: bridge br0 port dpdk0: link down\n");
        assert_eq!(logged(&both), both);

        // Wait for the first console line.
        let deadline = Instant::now() + Duration::from_secs(5);
        while sink.0.lock().unwrap().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        stop.store(true, Ordering::Relaxed);
        handle.join();
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let first = text.lines().next().unwrap_or("");
        // Exact rates depend on scheduling; RateMeter's own tests pin the format.
        assert!(first.starts_with("[   1s] dpdk0 rx "), "{text}");
        assert!(first.ends_with("bps | drops 0 (+0/s)"), "{text}");
        assert!(!cfg.control.socket.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn metrics_bind_error_starts_nothing() {
        let dir = temp_dir("bind");
        let blocker = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = blocker.local_addr().unwrap();
        let mut cfg = Config::default();
        cfg.control.socket = dir.join("ferroswitch.ctl");
        cfg.metrics.listen = addr.to_string();
        let err = spawn_management(
            Arc::new(std::sync::RwLock::new(cfg.clone())),
            Arc::new(StaticView::default()),
            Arc::new(AtomicBool::new(false)),
            ManagementExtras::default(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("metrics.listen: cannot bind {addr}: Address in use")
        );
        // The control socket bound first was removed again.
        assert!(!cfg.control.socket.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
