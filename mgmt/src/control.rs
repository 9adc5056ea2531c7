//! The control socket behind `ferroswitch ctl`.
//!
//! A unix stream socket (mode 0600, default
//! `/var/run/ferroswitch/ferroswitch.ctl`) speaking newline-delimited JSON: each
//! line a client sends is one [`Request`], each line the daemon answers is one
//! [`Response`]. A malformed line gets an error response naming the reason; it
//! never stops the server.
//!
//! The server side is [`ControlServer`] (bind, then [`ControlServer::spawn`] a
//! thread); the client side is [`call`]; the built-in commands are [`handle`]:
//!
//! | command | like | output |
//! |---|---|---|
//! | `show` | `ovs-vsctl show` + `dpif-netdev/pmd-rxq-show` | bridges, ports, interfaces, PMD rx queues |
//! | `port-stats [PORT]` | `ovs-ofctl dump-ports` | rx/tx packets, bytes, drops, errors per port |
//! | `pmd-stats-show` | `ovs-appctl dpif-netdev/pmd-stats-show` | per PMD packets, cycles, drops, parse errors |
//! | `version`, `help` | | |
//!
//! Every command takes `--json` (or `"json": true` in the request) for output
//! scripts can parse.
//!
//! # Threads
//! One accept thread (`mgmt-ctl`) polls a non-blocking listener and the stop
//! flag every 50 ms; each connection gets a thread of its own (at most
//! [`MAX_CONNECTIONS`]), so a client that never sends a newline cannot block
//! others. All of them end within ~100 ms of `stop`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs::{self, DirBuilder, Permissions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::json;
use thiserror::Error;

use crate::config::{io_reason, Config, DEFAULT_CONTROL_SOCKET};
use crate::view::{DatapathView, PortSnapshot};

/// Environment variable that overrides the client's socket path.
pub const SOCKET_ENV: &str = "FERROSWITCH_CTL";
/// Longest request line accepted, in bytes.
pub const MAX_REQUEST_BYTES: u64 = 1 << 20;
/// Most connections served at once; more are answered with an error.
pub const MAX_CONNECTIONS: usize = 16;
/// A connection idle this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the client waits for an answer.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// The built-in commands, in help order.
pub const COMMANDS: &[(&str, &str)] = &[
    (
        "show",
        "bridges, ports and PMD rx queues (like ovs-vsctl show)",
    ),
    (
        "port-stats [PORT]",
        "per-port counters (like ovs-ofctl dump-ports)",
    ),
    (
        "pmd-stats-show",
        "per-PMD counters (like ovs-appctl dpif-netdev/pmd-stats-show)",
    ),
    (
        "pmd-rxq-show",
        "each PMD's rx queues and their share of its cycles (like ovs-appctl dpif-netdev/pmd-rxq-show)",
    ),
    (
        "pmd-stats-clear",
        "restart what pmd-stats-show counts (metrics are unaffected)",
    ),
    ("version", "the daemon's version"),
    ("help", "this list"),
];

/// One request line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Command name, e.g. `show`.
    pub cmd: String,
    /// Command arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Ask for JSON output.
    #[serde(default)]
    pub json: bool,
}

impl Request {
    /// A request without `--json`.
    pub fn new(cmd: impl Into<String>, args: Vec<String>) -> Self {
        Request {
            cmd: cmd.into(),
            args,
            json: false,
        }
    }
}

/// One response line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// Whether the command succeeded.
    pub ok: bool,
    /// Human text, or JSON text when the request asked for JSON.
    pub output: String,
    /// Why it failed, when `ok` is false.
    pub error: Option<String>,
}

impl Response {
    /// A successful response.
    pub fn success(output: impl Into<String>) -> Self {
        Response {
            ok: true,
            output: output.into(),
            error: None,
        }
    }

    /// A failed response.
    pub fn failure(error: impl Into<String>) -> Self {
        Response {
            ok: false,
            output: String::new(),
            error: Some(error.into()),
        }
    }
}

/// Control socket errors, each naming the path.
#[derive(Debug, Error)]
pub enum ControlError {
    /// The client could not connect.
    #[error("cannot connect to {}: {reason}", path.display())]
    Connect {
        /// Socket path.
        path: PathBuf,
        /// Why, with a hint.
        reason: String,
    },
    /// Another daemon answers on the socket.
    #[error("control.socket: another ferroswitch is already running on {} (it accepted a connection); stop it or choose another control.socket", path.display())]
    AlreadyRunning {
        /// Socket path.
        path: PathBuf,
    },
    /// The path exists and is not a socket: refuse to delete it.
    #[error("control.socket: {} exists and is not a socket; refusing to replace it", path.display())]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// A file-system or socket operation failed.
    #[error("control.socket: cannot {op} {}: {reason}", path.display())]
    Io {
        /// What we tried, e.g. `bind`.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS reason.
        reason: String,
    },
    /// The peer sent something that is not the protocol.
    #[error("control protocol error on {}: {reason}", path.display())]
    Protocol {
        /// Socket path.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
}

fn io_err(op: &'static str, path: &Path, e: &io::Error) -> ControlError {
    ControlError::Io {
        op,
        path: path.to_path_buf(),
        reason: io_reason(e),
    }
}

/// The socket path the client uses: `$FERROSWITCH_CTL` if set and non-empty,
/// else `/var/run/ferroswitch/ferroswitch.ctl`.
pub fn default_socket_path() -> PathBuf {
    match std::env::var_os(SOCKET_ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(DEFAULT_CONTROL_SOCKET),
    }
}

/// The request handler a server runs for every well-formed request.
pub type Handler = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

/// A bound control socket, not yet serving. Dropping it removes the socket
/// file (if it is still the one we bound).
#[derive(Debug)]
pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
    /// (dev, ino) of the socket we bound, so drop never removes a successor's.
    identity: (u64, u64),
}

impl ControlServer {
    /// Bind `path`: create its directory (mode 0755), refuse if a live daemon
    /// answers there, remove a stale socket, bind with mode 0600.
    ///
    /// The socket is bound under a temporary name, chmod'ed, then renamed into
    /// place, so the final path never exists with looser permissions.
    pub fn bind(path: &Path) -> Result<ControlServer, ControlError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)
                .map_err(|e| io_err("create directory", parent, &e))?;
        }
        match fs::symlink_metadata(path) {
            Ok(meta) if !meta.file_type().is_socket() => {
                return Err(ControlError::NotASocket {
                    path: path.to_path_buf(),
                })
            }
            Ok(_) => match UnixStream::connect(path) {
                Ok(_) => {
                    return Err(ControlError::AlreadyRunning {
                        path: path.to_path_buf(),
                    })
                }
                // Nobody listens: a stale socket from a daemon that died.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    fs::remove_file(path).map_err(|e| io_err("remove stale socket", path, &e))?
                }
                Err(e) => return Err(io_err("check existing socket", path, &e)),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("stat", path, &e)),
        }

        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "ferroswitch.ctl".to_string());
        let tmp = path.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
        // A leftover from a crash of this very pid number; ignore "not found".
        let _ = fs::remove_file(&tmp);
        let listener = UnixListener::bind(&tmp).map_err(|e| io_err("bind", path, &e))?;
        let placed = fs::set_permissions(&tmp, Permissions::from_mode(0o600))
            .map_err(|e| io_err("chmod 0600", path, &e))
            .and_then(|()| {
                fs::rename(&tmp, path).map_err(|e| io_err("rename socket to", path, &e))
            });
        if let Err(e) = placed {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        let meta = fs::metadata(path).map_err(|e| io_err("stat", path, &e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| io_err("set non-blocking", path, &e))?;
        Ok(ControlServer {
            listener,
            path: path.to_path_buf(),
            identity: (meta.dev(), meta.ino()),
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serve on a thread named `mgmt-ctl` until `stop` is set; the socket file
    /// is removed when the thread ends.
    pub fn spawn(
        self,
        handler: Handler,
        stop: Arc<AtomicBool>,
    ) -> Result<JoinHandle<()>, ControlError> {
        let path = self.path.clone();
        std::thread::Builder::new()
            .name("mgmt-ctl".to_string())
            .spawn(move || self.run(&handler, &stop))
            .map_err(|e| io_err("start thread for", &path, &e))
    }

    fn run(self, handler: &Handler, stop: &Arc<AtomicBool>) {
        let mut conns: Vec<JoinHandle<()>> = Vec::new();
        // Relaxed: `stop` is a standalone flag; no data is published with it.
        while !stop.load(Ordering::Relaxed) {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    conns.retain(|h| !h.is_finished());
                    if conns.len() >= MAX_CONNECTIONS {
                        let mut stream = stream;
                        let _ = write_response(
                            &mut stream,
                            &Response::failure(format!(
                                "too many control connections (at most {MAX_CONNECTIONS}); try again"
                            )),
                        );
                        continue;
                    }
                    let handler = Arc::clone(handler);
                    let stop = Arc::clone(stop);
                    let spawned = std::thread::Builder::new()
                        .name("mgmt-ctl-conn".to_string())
                        .spawn(move || serve_connection(stream, &handler, &stop));
                    // If no thread can be made the stream was dropped with the
                    // closure: the client sees EOF and reports it.
                    if let Ok(h) = spawned {
                        conns.push(h);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // E.g. EMFILE: back off instead of spinning.
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        for h in conns {
            let _ = h.join();
        }
        // `self` drops here and removes the socket file.
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        if let Ok(meta) = fs::symlink_metadata(&self.path) {
            if (meta.dev(), meta.ino()) == self.identity {
                let _ = fs::remove_file(&self.path);
            }
        }
    }
}

fn write_response(stream: &mut UnixStream, resp: &Response) -> io::Result<()> {
    let mut line = serde_json::to_string(resp).map_err(io::Error::other)?;
    line.push('\n');
    stream.write_all(line.as_bytes())?;
    stream.flush()
}

/// Parse one request line and run it.
fn answer(line: &[u8], handler: &Handler) -> Response {
    match serde_json::from_slice::<Request>(line) {
        Ok(req) => handler(&req),
        Err(e) => Response::failure(format!(
            "malformed request: {e} (expected one JSON object per line: {{\"cmd\": \"show\", \"args\": [], \"json\": false}})"
        )),
    }
}

fn serve_connection(stream: UnixStream, handler: &Handler, stop: &AtomicBool) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    if stream.set_nonblocking(false).is_err()
        || stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .is_err()
        || writer
            .set_write_timeout(Some(Duration::from_secs(5)))
            .is_err()
    {
        return;
    }
    let mut reader = BufReader::new(stream);
    let mut line: Vec<u8> = Vec::new();
    let mut last_activity = Instant::now();
    loop {
        if stop.load(Ordering::Relaxed) || last_activity.elapsed() > IDLE_TIMEOUT {
            return;
        }
        let room = (MAX_REQUEST_BYTES + 1).saturating_sub(line.len() as u64);
        let read = (&mut reader).take(room).read_until(b'\n', &mut line);
        let eof = match read {
            Ok(0) => true,
            Ok(_) => false,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(_) => return,
        };
        if line.len() as u64 > MAX_REQUEST_BYTES {
            let _ = write_response(
                &mut writer,
                &Response::failure(format!(
                    "malformed request: line longer than {MAX_REQUEST_BYTES} bytes"
                )),
            );
            return;
        }
        let complete = line.last() == Some(&b'\n');
        if complete || (eof && !line.is_empty()) {
            last_activity = Instant::now();
            let text = line.trim_ascii();
            if !text.is_empty() {
                let resp = answer(text, handler);
                if write_response(&mut writer, &resp).is_err() {
                    return;
                }
            }
            line.clear();
        }
        if eof {
            return;
        }
    }
}

fn connect_reason(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "No such file (is ferroswitch running?)".to_string(),
        io::ErrorKind::ConnectionRefused => {
            "Connection refused (is ferroswitch running? the socket file is stale)".to_string()
        }
        io::ErrorKind::PermissionDenied => {
            "Permission denied (the socket is mode 0600: run as the user that runs ferroswitch)"
                .to_string()
        }
        _ => io_reason(e),
    }
}

/// Send one request to the daemon at `path` and wait for its response.
pub fn call(path: &Path, req: &Request) -> Result<Response, ControlError> {
    let protocol = |reason: String| ControlError::Protocol {
        path: path.to_path_buf(),
        reason,
    };
    let stream = UnixStream::connect(path).map_err(|e| ControlError::Connect {
        path: path.to_path_buf(),
        reason: connect_reason(&e),
    })?;
    stream
        .set_read_timeout(Some(CLIENT_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(CLIENT_TIMEOUT)))
        .map_err(|e| io_err("configure", path, &e))?;
    let mut line = serde_json::to_string(req).map_err(|e| protocol(e.to_string()))?;
    line.push('\n');
    (&stream)
        .write_all(line.as_bytes())
        .map_err(|e| io_err("send request to", path, &e))?;
    let mut answer = String::new();
    BufReader::new(&stream)
        .read_line(&mut answer)
        .map_err(|e| match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                protocol(format!("no answer within {} s", CLIENT_TIMEOUT.as_secs()))
            }
            _ => io_err("read response from", path, &e),
        })?;
    if answer.is_empty() {
        return Err(protocol(
            "the daemon closed the connection without answering".to_string(),
        ));
    }
    serde_json::from_str(&answer).map_err(|e| protocol(format!("bad response: {e}")))
}

/// An id for this daemon run, shown first by `show` (as `ovs-vsctl show`
/// shows the Open_vSwitch record's UUID). Random per process, UUID-shaped.
pub fn system_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let word = |salt: u64| {
            // RandomState is seeded from the OS per process.
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(salt);
            h.write_u32(std::process::id());
            h.write_u128(nanos);
            h.finish()
        };
        let (a, b) = (word(1), word(2));
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            0x8000 | ((b >> 48) & 0x3fff),
            b & 0xffff_ffff_ffff
        )
    })
}

/// Handler of extension commands: `None` means "not mine".
pub type ExtensionHandler = Arc<dyn Fn(&Request) -> Option<Response> + Send + Sync>;

/// Extra, datapath-specific commands the binary adds to the built-in ones.
#[derive(Clone)]
pub struct CommandExtension {
    /// Names (with argument synopsis) listed by `help` and in the unknown
    /// command error.
    pub commands: Vec<String>,
    /// Returns `None` for a command it does not know.
    pub handler: ExtensionHandler,
}

impl CommandExtension {
    /// These commands, then `then`'s: the first that knows a command answers.
    pub fn chain(self, then: CommandExtension) -> CommandExtension {
        let mut commands = self.commands;
        commands.extend(then.commands);
        let (first, second) = (self.handler, then.handler);
        CommandExtension {
            commands,
            handler: Arc::new(move |req: &Request| first(req).or_else(|| second(req))),
        }
    }
}

impl std::fmt::Debug for CommandExtension {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandExtension")
            .field("commands", &self.commands)
            .finish()
    }
}

/// Run a built-in command.
pub fn handle(req: &Request, view: &dyn DatapathView, topo: &Config) -> Response {
    dispatch(req, view, &RwLock::new(topo.clone()), None)
}

/// Run a built-in command, else an extension command, else answer with the
/// list of known commands.
pub fn dispatch(
    req: &Request,
    view: &dyn DatapathView,
    topo: &RwLock<Config>,
    extension: Option<&CommandExtension>,
) -> Response {
    let json = req.json || req.args.iter().any(|a| a == "--json");
    let args: Vec<&str> = req
        .args
        .iter()
        .map(String::as_str)
        .filter(|a| *a != "--json")
        .collect();
    let no_args = |cmd: &str| -> Option<Response> {
        (!args.is_empty()).then(|| {
            Response::failure(format!(
                "{cmd}: unexpected argument \"{}\" (usage: {cmd} [--json])",
                args.join(" ")
            ))
        })
    };
    match req.cmd.as_str() {
        // The running config, read only for the time of `show` (extension
        // commands such as add-br change it).
        "show" => no_args("show")
            .unwrap_or_else(|| show(view, &topo.read().unwrap_or_else(|e| e.into_inner()), json)),
        "port-stats" => port_stats(view, &args, json),
        "pmd-stats-show" => no_args("pmd-stats-show").unwrap_or_else(|| pmd_stats_show(view, json)),
        "pmd-rxq-show" => no_args("pmd-rxq-show").unwrap_or_else(|| pmd_rxq_show(view, json)),
        "pmd-stats-clear" => no_args("pmd-stats-clear").unwrap_or_else(|| {
            view.clear_pmd_stats();
            Response::success(String::new())
        }),
        "version" => no_args("version").unwrap_or_else(|| {
            if json {
                Response::success(json!({ "version": env!("CARGO_PKG_VERSION") }).to_string())
            } else {
                Response::success(format!("ferroswitch {}\n", env!("CARGO_PKG_VERSION")))
            }
        }),
        "help" => {
            let mut out = String::from("commands:\n");
            for (name, what) in COMMANDS {
                let _ = writeln!(out, "  {name:<20} {what}");
            }
            for name in extension.map(|e| e.commands.as_slice()).unwrap_or_default() {
                let _ = writeln!(out, "  {name}");
            }
            out.push_str("every command takes --json\n");
            Response::success(out)
        }
        cmd => {
            if let Some(resp) = extension.and_then(|e| (e.handler)(req)) {
                return resp;
            }
            let mut known: Vec<String> = COMMANDS
                .iter()
                .map(|(name, _)| name.split(' ').next().unwrap_or(name).to_string())
                .collect();
            if let Some(e) = extension {
                known.extend(
                    e.commands
                        .iter()
                        .map(|c| c.split(' ').next().unwrap_or(c).to_string()),
                );
            }
            Response::failure(format!(
                "unknown command \"{cmd}\" (known commands: {})",
                known.join(", ")
            ))
        }
    }
}

/// Format a string as ovsdb does in `ovs-vsctl show`: bare if it looks like
/// an identifier, else double-quoted with JSON escapes.
fn ovsdb_string(s: &str) -> String {
    let bare = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && s != "true"
        && s != "false";
    if bare {
        s.to_string()
    } else {
        serde_json::Value::String(s.to_string()).to_string()
    }
}

/// A vhost port's mode as OVS's Interface status has it: the switch is the
/// `client` of QEMU's socket, or its `server`.
fn vhost_mode(p: &crate::config::PortConfig) -> &'static str {
    if p.is_vhost_client() {
        "client"
    } else {
        "server"
    }
}

/// A vhost port's state: a guest driver attached (`connected`) or not.
fn vhost_state(link_up: Option<bool>) -> &'static str {
    if link_up == Some(true) {
        "connected"
    } else {
        "disconnected"
    }
}

fn show(view: &dyn DatapathView, topo: &Config, json: bool) -> Response {
    let live = view.ports();
    let link = |name: &str| live.iter().find(|p| p.name == name).map(|p| p.link_up);
    let pmds = view.pmds();
    if json {
        let bridges: Vec<serde_json::Value> = topo
            .bridges
            .iter()
            .map(|b| {
                let ofports: BTreeMap<String, u32> = b
                    .ofports()
                    .into_iter()
                    .map(|(n, o)| (n, crate::config::ofport_display(o)))
                    .collect();
                let ports: Vec<serde_json::Value> = b
                    .all_ports()
                    .iter()
                    .map(|p| {
                        if p.is_bond() {
                            let ifaces: Vec<serde_json::Value> = p
                                .interface_ports()
                                .iter()
                                .map(|i| {
                                    json!({
                                        "name": i.name,
                                        "type": i.port_type,
                                        "ofport": ofports.get(&i.name),
                                        "n_rxq": i.n_rxq,
                                        "options": i.options,
                                        "link_up": link(&i.name),
                                    })
                                })
                                .collect();
                            return json!({
                                "name": p.name,
                                "type": "bond",
                                "bond_mode": p.bond_mode.as_deref().unwrap_or("active-backup"),
                                "lacp": p.lacp.as_deref().unwrap_or("off"),
                                "other_config": p.other_config,
                                "tag": p.tag,
                                "trunks": p.trunks,
                                "vlan_mode": p.vlan_mode,
                                "interfaces": ifaces,
                            });
                        }
                        json!({
                            "name": p.name,
                            "type": p.port_type,
                            "ofport": ofports.get(&p.name),
                            "n_rxq": p.n_rxq,
                            "options": p.options,
                            "tag": p.tag,
                            "trunks": p.trunks,
                            "vlan_mode": p.vlan_mode,
                            "link_up": link(&p.name),
                            "vhost": topo.vhost_socket(p).map(|sock| json!({
                                "mode": vhost_mode(p),
                                "socket": sock,
                                "status": vhost_state(link(&p.name)),
                            })),
                        })
                    })
                    .collect();
                json!({
                    "name": b.name,
                    "datapath_type": "netdev",
                    "ports": ports,
                    "forwards": b.forwards,
                })
            })
            .collect();
        let pmds: Vec<serde_json::Value> = pmds
            .iter()
            .map(|p| {
                let rxqs: Vec<serde_json::Value> = p
                    .rxqs
                    .iter()
                    .map(|r| json!({ "port": r.port, "queue": r.queue }))
                    .collect();
                json!({ "id": p.id, "cpu": p.cpu, "lcore": p.lcore, "rxqs": rxqs })
            })
            .collect();
        let out = json!({
            "id": system_id(),
            "ferroswitch_version": env!("CARGO_PKG_VERSION"),
            "bridges": bridges,
            "pmds": pmds,
        });
        return Response::success(out.to_string());
    }

    let mut out = format!("{}\n", system_id());
    let mut bridges: Vec<_> = topo.bridges.iter().collect();
    bridges.sort_by(|a, b| a.name.cmp(&b.name));
    for b in bridges {
        let _ = writeln!(out, "    Bridge {}", ovsdb_string(&b.name));
        out.push_str("        datapath_type: netdev\n");
        // The bridge's own port (`Port br0`, `type: internal`) among the others.
        let mut ports = b.all_ports();
        ports.sort_by(|x, y| x.name.cmp(&y.name));
        for p in &ports {
            let name = ovsdb_string(&p.name);
            let _ = writeln!(out, "        Port {name}");
            // ovs-vsctl show prints the Port's tag and trunks (a set: sorted,
            // bracketed) when set.
            if let Some(tag) = p.tag {
                let _ = writeln!(out, "            tag: {tag}");
            }
            if !p.trunks.is_empty() {
                let trunks: BTreeSet<u16> = p.trunks.iter().copied().collect();
                let trunks: Vec<String> = trunks.iter().map(u16::to_string).collect();
                let _ = writeln!(out, "            trunks: [{}]", trunks.join(", "));
            }
            // A bond's interfaces, by name as ovs-vsctl sorts them; a plain
            // port is its own interface.
            let mut ifaces = p.interface_ports();
            ifaces.sort_by(|x, y| x.name.cmp(&y.name));
            for i in &ifaces {
                let _ = writeln!(out, "            Interface {}", ovsdb_string(&i.name));
                let _ = writeln!(out, "                type: {}", ovsdb_string(&i.port_type));
                if !i.options.is_empty() {
                    let opts: Vec<String> = i
                        .options
                        .iter()
                        .map(|(k, v)| format!("{}={}", ovsdb_string(k), ovsdb_string(v)))
                        .collect();
                    let _ = writeln!(out, "                options: {{{}}}", opts.join(", "));
                }
                if let Some(sock) = topo.vhost_socket(i) {
                    // OVS's Interface status keys for vhost ports.
                    let _ = writeln!(
                        out,
                        "                status: {{mode={}, socket={}, status={}}}",
                        vhost_mode(i),
                        ovsdb_string(&sock.to_string_lossy()),
                        vhost_state(link(&i.name)),
                    );
                }
                if link(&i.name) == Some(false) {
                    out.push_str("                link_state: down\n");
                }
            }
        }
    }
    let _ = writeln!(
        out,
        "    ferroswitch_version: \"{}\"",
        env!("CARGO_PKG_VERSION")
    );
    for p in &pmds {
        let rxqs: Vec<String> = p
            .rxqs
            .iter()
            .map(|r| format!("{}:{}", r.port, r.queue))
            .collect();
        let rxqs = if rxqs.is_empty() {
            "(none)".to_string()
        } else {
            rxqs.join(" ")
        };
        let _ = writeln!(
            out,
            "pmd thread on cpu {} (pmd {}, lcore {}): rxqs {rxqs}",
            p.cpu, p.id, p.lcore
        );
    }
    Response::success(out)
}

/// `pmd-rxq-show`: as `ovs-appctl dpif-netdev/pmd-rxq-show`, each PMD's rx
/// queues with the share of the PMD's cycles (busy and idle, since start or
/// the last `pmd-stats-clear`) spent on each queue's packets, and the
/// overhead: busy cycles not spent on any queue's bursts (tx flushes,
/// commands, the loop itself).
fn pmd_rxq_show(view: &dyn DatapathView, json: bool) -> Response {
    /// One PMD's line of the report.
    struct Row {
        pmd: usize,
        cpu: usize,
        isolated: bool,
        /// (port, queue, pinned, usage %).
        queues: Vec<(String, u16, bool, u64)>,
        overhead: u64,
    }
    let share = |cycles: u64, total: u64| {
        cycles
            .saturating_mul(100)
            .checked_div(total)
            .unwrap_or(0)
            .min(100)
    };
    let rows: Vec<Row> = view
        .pmds_since_clear()
        .iter()
        .map(|p| {
            let total = p.busy_cycles.saturating_add(p.idle_cycles);
            let in_queues: u64 = p.rxqs.iter().map(|r| r.cycles).sum();
            Row {
                pmd: p.id,
                cpu: p.cpu,
                isolated: p.rxqs.iter().any(|r| r.pinned),
                queues: p
                    .rxqs
                    .iter()
                    .map(|r| (r.port.clone(), r.queue, r.pinned, share(r.cycles, total)))
                    .collect(),
                overhead: share(p.busy_cycles.saturating_sub(in_queues), total),
            }
        })
        .collect();
    if json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                let qs: Vec<serde_json::Value> = r
                    .queues
                    .iter()
                    .map(|(port, q, pinned, usage)| {
                        json!({ "port": port, "queue": q, "pinned": pinned, "usage_percent": usage })
                    })
                    .collect();
                json!({
                    "pmd": r.pmd,
                    "cpu": r.cpu,
                    "isolated": r.isolated,
                    "rxqs": qs,
                    "overhead_percent": r.overhead,
                })
            })
            .collect();
        return Response::success(serde_json::Value::Array(v).to_string());
    }
    let mut out = String::new();
    for r in &rows {
        let _ = writeln!(out, "pmd thread numa_id 0 core_id {}:", r.cpu);
        let _ = writeln!(out, "  isolated : {}", r.isolated);
        for (port, q, pinned, usage) in &r.queues {
            let pin = if *pinned { " (pinned)" } else { "" };
            let _ = writeln!(
                out,
                "  port: {port:<16} queue-id: {q:>2} (enabled)   pmd usage: {usage:>2} %{pin}"
            );
        }
        let _ = writeln!(out, "  overhead: {:>2} %", r.overhead);
    }
    Response::success(out)
}

fn port_stats(view: &dyn DatapathView, args: &[&str], json: bool) -> Response {
    let mut ports = view.ports();
    match args {
        [] => {}
        [name] => {
            ports.retain(|p| p.name == *name);
            if ports.is_empty() {
                let known: Vec<String> = view.ports().into_iter().map(|p| p.name).collect();
                let known = if known.is_empty() {
                    "there are no ports".to_string()
                } else {
                    format!("known ports: {}", known.join(", "))
                };
                return Response::failure(format!("port-stats: no port \"{name}\" ({known})"));
            }
        }
        _ => {
            return Response::failure(format!(
                "port-stats: too many arguments \"{}\" (usage: port-stats [PORT] [--json])",
                args.join(" ")
            ))
        }
    }
    if json {
        return match serde_json::to_string(&ports) {
            Ok(s) => Response::success(s),
            Err(e) => Response::failure(format!("port-stats: cannot encode JSON: {e}")),
        };
    }
    // Group by bridge, keeping the view's order.
    let mut groups: Vec<(String, Vec<&PortSnapshot>)> = Vec::new();
    for p in &ports {
        match groups.iter_mut().find(|(b, _)| *b == p.bridge) {
            Some((_, list)) => list.push(p),
            None => groups.push((p.bridge.clone(), vec![p])),
        }
    }
    let mut out = String::new();
    for (bridge, mut list) in groups {
        list.sort_by_key(|p| p.ofport);
        let plural = if list.len() == 1 { "" } else { "s" };
        // Tunnel datapath ports (`vxlan_sys_4789`, ...) belong to no bridge.
        let bridge = if bridge.is_empty() {
            "(tunnels)".to_string()
        } else {
            bridge
        };
        let _ = writeln!(out, "{bridge}: {} port{plural}", list.len());
        for p in list {
            let head = format!("  port {:>2} \"{}\": ", p.ofport, p.name);
            let _ = writeln!(
                out,
                "{head}rx pkts={}, bytes={}, drop={}, errs={}",
                p.rx_packets, p.rx_bytes, p.rx_dropped, p.rx_errors
            );
            let _ = writeln!(
                out,
                "{:width$}tx pkts={}, bytes={}, drop={}, errs={}",
                "",
                p.tx_packets,
                p.tx_bytes,
                p.tx_dropped,
                p.tx_errors,
                width = head.chars().count()
            );
        }
    }
    Response::success(out)
}

fn pmd_stats_show(view: &dyn DatapathView, json: bool) -> Response {
    let pmds = view.pmds_since_clear();
    if json {
        return match serde_json::to_string(&pmds) {
            Ok(s) => Response::success(s),
            Err(e) => Response::failure(format!("pmd-stats-show: cannot encode JSON: {e}")),
        };
    }
    let mut out = String::new();
    if pmds.is_empty() {
        out.push_str("no pmd threads\n");
    }
    for p in &pmds {
        let total = p.busy_cycles.saturating_add(p.idle_cycles);
        let pct = |c: u64| {
            if total == 0 {
                0.0
            } else {
                c as f64 * 100.0 / total as f64
            }
        };
        let _ = writeln!(
            out,
            "pmd thread {} on cpu {} (lcore {}):",
            p.id, p.cpu, p.lcore
        );
        let _ = writeln!(out, "  iterations: {}", p.iterations);
        let _ = writeln!(out, "  packets received: {}", p.rx_packets);
        let _ = writeln!(out, "  packet recirculations: {}", p.recirculations);
        if p.rx_packets > 0 {
            let _ = writeln!(
                out,
                "  avg. datapath passes per packet: {:.2}",
                (p.rx_packets + p.recirculations) as f64 / p.rx_packets as f64
            );
        }
        let _ = writeln!(out, "  packets sent: {}", p.tx_packets);
        let _ = writeln!(out, "  simple match hits: {}", p.simple_hits);
        let _ = writeln!(out, "  simple MAC match hits: {}", p.simple_mac_hits);
        let _ = writeln!(out, "  emc hits: {}", p.emc_hits);
        let _ = writeln!(out, "  megaflow hits: {}", p.megaflow_hits);
        let lookups_per_hit = if p.megaflow_hits + p.upcalls > 0 {
            p.subtable_lookups as f64 / (p.megaflow_hits + p.upcalls) as f64
        } else {
            0.0
        };
        let _ = writeln!(
            out,
            "  avg. subtable lookups per megaflow hit: {lookups_per_hit:.2}"
        );
        let lost = p
            .drops
            .iter()
            .filter(|(r, _)| *r == "upcall_queue_full")
            .map(|(_, n)| n)
            .sum::<u64>();
        let _ = writeln!(out, "  miss with success upcall: {}", p.upcalls);
        let _ = writeln!(out, "  miss with failed upcall: {lost}");
        let _ = writeln!(
            out,
            "  miss held for an upcall in flight: {}",
            p.upcalls_coalesced
        );
        let _ = writeln!(out, "  megaflows: {}", p.megaflows);
        let _ = writeln!(
            out,
            "  idle cycles: {} ({:.2}%)",
            p.idle_cycles,
            pct(p.idle_cycles)
        );
        let _ = writeln!(
            out,
            "  processing cycles: {} ({:.2}%)",
            p.busy_cycles,
            pct(p.busy_cycles)
        );
        if p.rx_packets > 0 {
            let _ = writeln!(
                out,
                "  avg cycles per packet: {:.2} ({total}/{})",
                total as f64 / p.rx_packets as f64,
                p.rx_packets
            );
            let _ = writeln!(
                out,
                "  avg processing cycles per packet: {:.2} ({}/{})",
                p.busy_cycles as f64 / p.rx_packets as f64,
                p.busy_cycles,
                p.rx_packets
            );
        }
        if p.tsc_hz > 0 {
            let _ = writeln!(out, "  tsc: {:.3} GHz", p.tsc_hz as f64 / 1e9);
        }
        let _ = writeln!(out, "  drops: {}", crate::console::reasons(&p.drops));
        let _ = writeln!(
            out,
            "  parse errors: {}",
            crate::console::reasons(&p.parse_errors)
        );
    }
    Response::success(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::{PmdSnapshot, StaticView};
    use std::sync::atomic::AtomicUsize;

    /// A fresh directory under the system temp dir, removed on drop.
    pub(crate) struct TempDir(pub PathBuf);

    impl TempDir {
        pub(crate) fn new(tag: &str) -> TempDir {
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "fs-mgmt-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    pub(crate) fn topo() -> Config {
        Config::from_toml_str(
            r#"
[[bridge]]
name = "br0"
  [[bridge.port]]
  name = "dpdk1"
  options = { dpdk-devargs = "net_null0" }
  [[bridge.port]]
  name = "dpdk0"
  ofport = 1
  options = { dpdk-devargs = "net_pcap0,rx_pcap=/tmp/in.pcap" }
  [[bridge.forward]]
  in_port = "dpdk0"
  output = "dpdk1"
"#,
        )
        .unwrap()
    }

    #[test]
    fn pmd_rxq_show_gives_each_queue_its_share_of_the_pmd() {
        let v = view();
        let (ports, mut pmds) = (v.ports(), v.pmds());
        // 10000 cycles: dpdk0 (pinned) took 2500, dpdk1 1000 of the 4000 busy.
        pmds[0].rxqs[0].pinned = true;
        pmds[0].rxqs[0].cycles = 2500;
        pmds[0].rxqs[1].cycles = 1000;
        v.set(ports, pmds);
        let r = handle(&Request::new("pmd-rxq-show", vec![]), &v, &topo());
        assert_eq!(
            r.output,
            "pmd thread numa_id 0 core_id 1:\n  isolated : true\n  port: dpdk0            queue-id:  0 (enabled)   pmd usage: 25 % (pinned)\n  port: dpdk1            queue-id:  0 (enabled)   pmd usage: 10 %\n  overhead:  5 %\n"
        );
        let j: serde_json::Value = serde_json::from_str(
            &handle(
                &Request::new("pmd-rxq-show", vec!["--json".into()]),
                &v,
                &topo(),
            )
            .output,
        )
        .unwrap();
        assert_eq!(j[0]["rxqs"][1]["usage_percent"], 10);
        assert_eq!(j[0]["overhead_percent"], 5);
        // Since pmd-stats-clear (the daemon's view subtracts a snapshot):
        // each queue's cycles since.
        let base = v.pmds()[0].clone();
        let mut later = base.clone();
        later.rxqs[0].cycles = 4000;
        let d = later.since(&base);
        assert_eq!((d.rxqs[0].cycles, d.rxqs[1].cycles), (1500, 0));
        assert!(d.rxqs[0].pinned);
    }

    pub(crate) fn view() -> StaticView {
        StaticView::new(
            vec![
                PortSnapshot {
                    bridge: "br0".into(),
                    name: "dpdk1".into(),
                    ofport: 2,
                    port_type: "dpdk".into(),
                    link_up: true,
                    tx_packets: 99,
                    tx_bytes: 6336,
                    tx_dropped: 1,
                    ..Default::default()
                },
                PortSnapshot {
                    bridge: "br0".into(),
                    name: "dpdk0".into(),
                    ofport: 1,
                    port_type: "dpdk".into(),
                    link_up: false,
                    rx_packets: 100,
                    rx_bytes: 6400,
                    rx_errors: 2,
                    ..Default::default()
                },
            ],
            vec![PmdSnapshot {
                id: 0,
                cpu: 1,
                lcore: 1,
                rxqs: vec![
                    crate::view::RxqSnapshot::new("dpdk0", 0),
                    crate::view::RxqSnapshot::new("dpdk1", 0),
                ],
                iterations: 1000,
                busy_cycles: 4000,
                idle_cycles: 6000,
                rx_packets: 100,
                tx_packets: 99,
                simple_hits: 5,
                simple_mac_hits: 4,
                emc_hits: 90,
                megaflow_hits: 8,
                subtable_lookups: 15,
                upcalls: 2,
                upcalls_coalesced: 1,
                recirculations: 25,
                megaflows: 3,
                drops: vec![("tx_full", 1), ("no_forward", 0)],
                parse_errors: vec![("runt", 2)],
                tsc_hz: 2_500_000_000,
            }],
        )
    }

    fn run(cmd: &str, args: &[&str], json: bool) -> Response {
        let req = Request {
            cmd: cmd.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            json,
        };
        handle(&req, &view(), &topo())
    }

    #[test]
    fn show_exact() {
        let r = run("show", &[], false);
        assert!(r.ok, "{r:?}");
        assert_eq!(
            r.output,
            format!(
                "{}\n    Bridge br0\n        datapath_type: netdev\n        Port br0\n            Interface br0\n                type: internal\n        Port dpdk0\n            Interface dpdk0\n                type: dpdk\n                options: {{dpdk-devargs=\"net_pcap0,rx_pcap=/tmp/in.pcap\"}}\n                link_state: down\n        Port dpdk1\n            Interface dpdk1\n                type: dpdk\n                options: {{dpdk-devargs=net_null0}}\n    ferroswitch_version: \"0.1.0\"\npmd thread on cpu 1 (pmd 0, lcore 1): rxqs dpdk0:0 dpdk1:0\n",
                system_id()
            )
        );
        let id = system_id();
        assert_eq!(id.len(), 36);
        assert_eq!(id.matches('-').count(), 4);
    }

    #[test]
    fn show_prints_port_tag_and_trunks_as_ovs_vsctl() {
        let mut t = topo();
        for p in &mut t.bridges[0].ports {
            match p.name.as_str() {
                "dpdk0" => p.tag = Some(10),
                _ => {
                    p.trunks = vec![30, 20, 30];
                    p.vlan_mode = Some("native-untagged".into());
                }
            }
        }
        let r = handle(&Request::new("show", vec![]), &view(), &t);
        assert!(
            r.output
                .contains("        Port dpdk0\n            tag: 10\n            Interface dpdk0\n"),
            "{}",
            r.output
        );
        assert!(
            r.output.contains(
                "        Port dpdk1\n            trunks: [20, 30]\n            Interface dpdk1\n"
            ),
            "{}",
            r.output
        );
        let req = Request {
            cmd: "show".into(),
            args: vec![],
            json: true,
        };
        let v: serde_json::Value = serde_json::from_str(&handle(&req, &view(), &t).output).unwrap();
        let ports = v["bridges"][0]["ports"].as_array().unwrap();
        let dpdk1 = ports.iter().find(|p| p["name"] == "dpdk1").unwrap();
        assert_eq!(dpdk1["trunks"], serde_json::json!([30, 20, 30]));
        assert_eq!(dpdk1["vlan_mode"], "native-untagged");
        assert_eq!(dpdk1["tag"], serde_json::Value::Null);
    }

    #[test]
    fn show_prints_a_bond_with_its_interfaces() {
        let mut t = topo();
        let bond = t.bridges[0]
            .ports
            .iter_mut()
            .find(|p| p.name == "dpdk1")
            .unwrap();
        bond.name = "bond0".into();
        bond.options.clear();
        bond.bond_mode = Some("balance-slb".into());
        bond.interfaces = ["eth1", "eth0"]
            .iter()
            .enumerate()
            .map(|(i, n)| crate::config::InterfaceConfig {
                name: n.to_string(),
                options: [("dpdk-devargs".to_string(), format!("net_null{}", i + 1))].into(),
                ..Default::default()
            })
            .collect();
        let r = handle(&Request::new("show", vec![]), &view(), &t);
        assert!(
            r.output.contains(
                "        Port bond0\n            Interface eth0\n                type: dpdk\n                options: {dpdk-devargs=net_null2}\n            Interface eth1\n                type: dpdk\n                options: {dpdk-devargs=net_null1}\n        Port br0\n"
            ),
            "{}",
            r.output
        );
        let req = Request {
            cmd: "show".into(),
            args: vec![],
            json: true,
        };
        let v: serde_json::Value = serde_json::from_str(&handle(&req, &view(), &t).output).unwrap();
        let ports = v["bridges"][0]["ports"].as_array().unwrap();
        let b = ports.iter().find(|p| p["name"] == "bond0").unwrap();
        assert_eq!(b["type"], "bond");
        assert_eq!(b["bond_mode"], "balance-slb");
        assert_eq!(b["lacp"], "off");
        assert_eq!(b["interfaces"][0]["name"], "eth1");
        assert_eq!(b["interfaces"][0]["ofport"], 2);
        assert_eq!(b["interfaces"][1]["ofport"], 3);
    }

    #[test]
    fn show_json() {
        let r = run("show", &["--json"], false);
        assert!(r.ok, "{r:?}");
        let v: serde_json::Value = serde_json::from_str(&r.output).unwrap();
        assert_eq!(v["id"], system_id());
        assert_eq!(v["ferroswitch_version"], "0.1.0");
        assert_eq!(v["bridges"][0]["name"], "br0");
        assert_eq!(v["bridges"][0]["ports"][0]["name"], "dpdk1");
        assert_eq!(v["bridges"][0]["ports"][0]["ofport"], 2);
        assert_eq!(v["bridges"][0]["ports"][0]["link_up"], true);
        assert_eq!(v["bridges"][0]["ports"][1]["ofport"], 1);
        assert_eq!(
            v["bridges"][0]["ports"][1]["options"]["dpdk-devargs"],
            "net_pcap0,rx_pcap=/tmp/in.pcap"
        );
        assert_eq!(v["bridges"][0]["forwards"][0]["in_port"], "dpdk0");
        assert_eq!(v["pmds"][0]["rxqs"][1]["port"], "dpdk1");
    }

    #[test]
    fn port_stats_exact() {
        let r = run("port-stats", &[], false);
        assert!(r.ok, "{r:?}");
        assert_eq!(
            r.output,
            "br0: 2 ports\n\
             \x20 port  1 \"dpdk0\": rx pkts=100, bytes=6400, drop=0, errs=2\n\
             \x20                  tx pkts=0, bytes=0, drop=0, errs=0\n\
             \x20 port  2 \"dpdk1\": rx pkts=0, bytes=0, drop=0, errs=0\n\
             \x20                  tx pkts=99, bytes=6336, drop=1, errs=0\n"
        );
        let r = run("port-stats", &["dpdk1"], false);
        assert_eq!(
            r.output,
            "br0: 1 port\n\
             \x20 port  2 \"dpdk1\": rx pkts=0, bytes=0, drop=0, errs=0\n\
             \x20                  tx pkts=99, bytes=6336, drop=1, errs=0\n"
        );
        let r = run("port-stats", &["nope"], false);
        assert_eq!(
            r,
            Response::failure("port-stats: no port \"nope\" (known ports: dpdk1, dpdk0)")
        );
        let r = run("port-stats", &["dpdk0"], true);
        let v: Vec<serde_json::Value> = serde_json::from_str(&r.output).unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0]["name"], "dpdk0");
        assert_eq!(v[0]["rx_packets"], 100);
        assert_eq!(v[0]["rx_errors"], 2);
        let r = run("port-stats", &["a", "b"], false);
        assert_eq!(
            r.error.as_deref(),
            Some("port-stats: too many arguments \"a b\" (usage: port-stats [PORT] [--json])")
        );
    }

    #[test]
    fn pmd_stats_exact() {
        let r = run("pmd-stats-show", &[], false);
        assert!(r.ok, "{r:?}");
        assert_eq!(
            r.output,
            "pmd thread 0 on cpu 1 (lcore 1):\n\
             \x20 iterations: 1000\n\
             \x20 packets received: 100\n\
             \x20 packet recirculations: 25\n\
             \x20 avg. datapath passes per packet: 1.25\n\
             \x20 packets sent: 99\n\
             \x20 simple match hits: 5\n\
             \x20 simple MAC match hits: 4\n\
             \x20 emc hits: 90\n\
             \x20 megaflow hits: 8\n\
             \x20 avg. subtable lookups per megaflow hit: 1.50\n\
             \x20 miss with success upcall: 2\n\
             \x20 miss with failed upcall: 0\n\
             \x20 miss held for an upcall in flight: 1\n\
             \x20 megaflows: 3\n\
             \x20 idle cycles: 6000 (60.00%)\n\
             \x20 processing cycles: 4000 (40.00%)\n\
             \x20 avg cycles per packet: 100.00 (10000/100)\n\
             \x20 avg processing cycles per packet: 40.00 (4000/100)\n\
             \x20 tsc: 2.500 GHz\n\
             \x20 drops: tx_full=1 no_forward=0\n\
             \x20 parse errors: runt=2\n"
        );
        let r = run("pmd-stats-show", &[], true);
        let v: serde_json::Value = serde_json::from_str(&r.output).unwrap();
        assert_eq!(v[0]["busy_cycles"], 4000);
        assert_eq!(v[0]["drops"][0][0], "tx_full");
        assert_eq!(v[0]["parse_errors"][0][1], 2);
    }

    #[test]
    fn unknown_and_extension_commands() {
        assert_eq!(
            run("dump-flows", &[], false),
            Response::failure(
                "unknown command \"dump-flows\" (known commands: show, port-stats, pmd-stats-show, pmd-rxq-show, pmd-stats-clear, version, help)"
            )
        );
        assert_eq!(
            run("show", &["br0"], false).error.as_deref(),
            Some("show: unexpected argument \"br0\" (usage: show [--json])")
        );
        let ext = CommandExtension {
            commands: vec!["dump-flows".to_string()],
            handler: Arc::new(|req: &Request| {
                (req.cmd == "dump-flows").then(|| Response::success("flows\n"))
            }),
        };
        let req = Request::new("dump-flows", vec![]);
        assert_eq!(
            dispatch(&req, &view(), &RwLock::new(topo()), Some(&ext)),
            Response::success("flows\n")
        );
        let req = Request::new("nope", vec![]);
        assert_eq!(
            dispatch(&req, &view(), &RwLock::new(topo()), Some(&ext)).error.as_deref(),
            Some("unknown command \"nope\" (known commands: show, port-stats, pmd-stats-show, pmd-rxq-show, pmd-stats-clear, version, help, dump-flows)")
        );
        let help = dispatch(
            &Request::new("help", vec![]),
            &view(),
            &RwLock::new(topo()),
            Some(&ext),
        );
        assert!(help.output.contains("  dump-flows\n"), "{}", help.output);
        assert!(
            help.output.contains("  port-stats [PORT]"),
            "{}",
            help.output
        );
    }

    fn handler() -> Handler {
        let v = view();
        let t = topo();
        Arc::new(move |req: &Request| handle(req, &v, &t))
    }

    fn raw_exchange(path: &Path, lines: &str) -> Vec<Response> {
        let mut s = UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(lines.as_bytes()).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn round_trip_over_unix_socket() {
        let dir = TempDir::new("ctl");
        let path = dir.0.join("run/ferroswitch.ctl");
        let server = ControlServer::bind(&path).unwrap();
        // Directory created 0755, socket 0600.
        let dir_mode = fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o755);
        let meta = fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);

        // A second daemon on the same path is refused.
        let err = ControlServer::bind(&path).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "control.socket: another ferroswitch is already running on {} (it accepted a connection); stop it or choose another control.socket",
                path.display()
            )
        );

        let stop = Arc::new(AtomicBool::new(false));
        let handle = server.spawn(handler(), Arc::clone(&stop)).unwrap();

        let r = call(&path, &Request::new("show", vec![])).unwrap();
        assert!(r.ok);
        assert!(r.output.contains("    Bridge br0\n"), "{}", r.output);

        let r = call(&path, &Request::new("port-stats", vec!["dpdk0".into()])).unwrap();
        assert!(r
            .output
            .starts_with("br0: 1 port\n  port  1 \"dpdk0\": rx pkts=100"));

        let r = call(&path, &Request::new("frobnicate", vec![])).unwrap();
        assert!(!r.ok);
        assert_eq!(
            r.error.as_deref(),
            Some("unknown command \"frobnicate\" (known commands: show, port-stats, pmd-stats-show, pmd-rxq-show, pmd-stats-clear, version, help)")
        );

        // Malformed lines get errors; the connection and server survive them;
        // several requests on one connection; a last line without newline.
        let rs = raw_exchange(
            &path,
            "garbage\n\n{\"cmd\": 5}\n{\"cmd\":\"version\",\"json\":true}\n{\"cmd\":\"version\"}",
        );
        assert_eq!(rs.len(), 4, "{rs:?}");
        assert!(!rs[0].ok);
        let e0 = rs[0].error.as_deref().unwrap();
        assert!(e0.starts_with("malformed request: expected value at line 1 column 1 (expected one JSON object per line"), "{e0}");
        let e1 = rs[1].error.as_deref().unwrap();
        assert!(
            e1.starts_with("malformed request: invalid type: integer `5`, expected a string"),
            "{e1}"
        );
        assert_eq!(rs[2], Response::success("{\"version\":\"0.1.0\"}"));
        assert_eq!(rs[3], Response::success("ferroswitch 0.1.0\n"));

        // Still serving.
        assert!(
            call(&path, &Request::new("pmd-stats-show", vec![]))
                .unwrap()
                .ok
        );

        stop.store(true, Ordering::Relaxed);
        handle.join().unwrap();
        assert!(!path.exists(), "socket file removed on stop");

        let err = call(&path, &Request::new("show", vec![])).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "cannot connect to {}: No such file (is ferroswitch running?)",
                path.display()
            )
        );
    }

    #[test]
    fn stale_socket_is_replaced_and_others_refused() {
        let dir = TempDir::new("stale");
        let path = dir.0.join("ferroswitch.ctl");
        // A socket file nobody listens on: bind then drop the listener
        // without removing the file.
        drop(UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let err = call(&path, &Request::new("show", vec![])).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "cannot connect to {}: Connection refused (is ferroswitch running? the socket file is stale)",
                path.display()
            )
        );
        let server = ControlServer::bind(&path).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let handle = server.spawn(handler(), Arc::clone(&stop)).unwrap();
        assert!(call(&path, &Request::new("show", vec![])).unwrap().ok);
        stop.store(true, Ordering::Relaxed);
        handle.join().unwrap();
        assert!(!path.exists());

        // A regular file is never deleted.
        fs::write(&path, "precious").unwrap();
        let err = ControlServer::bind(&path).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "control.socket: {} exists and is not a socket; refusing to replace it",
                path.display()
            )
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), "precious");

        // Dropping an unspawned server removes its socket too.
        fs::remove_file(&path).unwrap();
        drop(ControlServer::bind(&path).unwrap());
        assert!(!path.exists());
    }

    #[test]
    fn default_path_and_env() {
        // Only this test touches the variable.
        std::env::remove_var(SOCKET_ENV);
        assert_eq!(default_socket_path(), PathBuf::from(DEFAULT_CONTROL_SOCKET));
        std::env::set_var(SOCKET_ENV, "/tmp/x.ctl");
        assert_eq!(default_socket_path(), PathBuf::from("/tmp/x.ctl"));
        std::env::remove_var(SOCKET_ENV);
    }
}
