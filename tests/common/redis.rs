//! Real Redis servers for integration tests: one durable server, or a small
//! Redis Cluster, each on free loopback ports with its files in a temporary
//! directory. Tests never use the machine's shared Redis on 6379.
//!
//! Every `redis-server` is started by one long-lived thread with
//! `PR_SET_PDEATHSIG`, so no server outlives the test process, even when the
//! process is killed; non-shared instances are also killed on drop.

use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Once, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tempfile::TempDir;

/// Overrides the `redis-server` binary (a path, or a name looked up on PATH).
pub const SERVER_VAR: &str = "RUNG_TEST_REDIS_SERVER";
/// Overrides the `redis-cli` binary (a path, or a name looked up on PATH).
pub const CLI_VAR: &str = "RUNG_TEST_REDIS_CLI";

/// How long a server (or a cluster) may take to answer before the test fails.
const STARTUP_DEADLINE: Duration = Duration::from_secs(20);
/// Attempts at a fresh port when another process takes ours between the
/// moment we find it free and the moment redis binds it.
const PORT_ATTEMPTS: usize = 5;

/// How long a restart waits for its port to come free before trying again.
const PORT_WAIT: Duration = Duration::from_secs(5);

/// Blocks until a listener can bind `port` on loopback (as redis-server
/// will), or [`PORT_WAIT`] has passed; each look is a bind, not a sleep.
fn wait_until_free(port: u16) {
    let deadline = Instant::now() + PORT_WAIT;
    while TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_err() && Instant::now() < deadline {
        thread::yield_now();
    }
}
/// Redis's cluster bus listens on the client port + 10000.
const BUS_OFFSET: u16 = 10_000;
const SHARED_REDIS_PORT: u16 = 6379;

/// One redis-server process on a free loopback port, AOF on with appendfsync
/// always, its files in a fresh temporary directory (removed on drop). Killed
/// on drop.
pub struct RedisServer {
    port: u16,
    binary: PathBuf,
    /// Arguments after the common ones: the role's (AOF, or cluster mode) and
    /// the caller's. Kept so `restart` starts the very same server.
    args: Vec<String>,
    /// From `--requirepass`, so the readiness probe can AUTH: without it a
    /// restarted server answers NOAUTH before it has replayed its AOF.
    password: Option<String>,
    child: Option<Child>,
    /// Declared last: dropped after `Drop::drop` has killed the process.
    dir: TempDir,
}

enum Role {
    Standalone,
    ClusterNode,
}

/// Why a start attempt failed; `port_taken` failures are retried.
struct StartFailure {
    port_taken: bool,
    reason: String,
}

impl RedisServer {
    /// Starts a server and blocks until it answers PING.
    pub fn start() -> RedisServer {
        Self::start_with_args(&[])
    }

    /// Like [`RedisServer::start`], with extra redis-server arguments, e.g.
    /// `["--requirepass", "s3cret"]`.
    pub fn start_with_args(extra: &[&str]) -> RedisServer {
        Self::launch(Role::Standalone, extra)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT/` (without any password).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The directory holding the server's AOF, cluster config and `redis.log`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// SIGKILLs the process and waits for it; its files stay for `restart`.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and directory (so the AOF is
    /// replayed) and blocks until it answers PING. A running server is
    /// stopped first.
    pub fn restart(&mut self) {
        self.stop();
        for _ in 0..PORT_ATTEMPTS {
            match self.spawn_and_wait() {
                Ok(()) => return,
                // Something holds our port for a moment (say, a client's
                // ephemeral port); we cannot move, so wait until it is free.
                Err(f) if f.port_taken => wait_until_free(self.port),
                Err(f) => self.fail("restart", &f.reason),
            }
        }
        self.fail("restart", "the port stayed taken by another process");
    }

    fn launch(role: Role, extra: &[&str]) -> RedisServer {
        let dir = fresh_dir();
        let mut args: Vec<String> = match role {
            Role::Standalone => vec![
                "--appendonly".into(),
                "yes".into(),
                "--appendfsync".into(),
                "always".into(),
            ],
            Role::ClusterNode => vec![
                "--cluster-enabled".into(),
                "yes".into(),
                "--cluster-config-file".into(),
                dir.path().join("nodes.conf").display().to_string(),
                "--appendonly".into(),
                "no".into(),
            ],
        };
        args.extend(extra.iter().map(|a| a.to_string()));
        let password = extra
            .windows(2)
            .find(|w| w[0] == "--requirepass")
            .map(|w| w[1].to_owned());
        let mut server = RedisServer {
            port: 0,
            binary: server_binary(),
            args,
            password,
            child: None,
            dir,
        };
        let mut last = String::new();
        for _ in 0..PORT_ATTEMPTS {
            server.port = free_port(matches!(role, Role::ClusterNode));
            match server.spawn_and_wait() {
                Ok(()) => return server,
                Err(f) if f.port_taken => last = f.reason,
                Err(f) => server.fail("start", &f.reason),
            }
        }
        server.fail(
            "start",
            &format!("no free port after {PORT_ATTEMPTS} attempts ({last})"),
        )
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// One attempt: spawn redis-server and wait for PONG, or for it to exit.
    fn spawn_and_wait(&mut self) -> Result<(), StartFailure> {
        let log = self.log_path();
        // Only this attempt's lines decide whether the port was taken.
        let log_start = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        // Errors in the arguments are printed before redis opens its log
        // file, so stdout and stderr go to the same file.
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        let err = out.try_clone().expect("duplicate the log file handle");
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--bind")
            .arg("127.0.0.1")
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--daemonize", "no", "--save", ""])
            .arg("--logfile")
            .arg(&log)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let mut child = spawn(cmd).map_err(|e| StartFailure {
            port_taken: false,
            reason: format!("cannot run {}: {e}", self.binary.display()),
        })?;

        let deadline = Instant::now() + STARTUP_DEADLINE;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let new_lines = read_from(&log, log_start);
                return Err(StartFailure {
                    port_taken: new_lines.contains("Address already in use"),
                    reason: format!("redis-server exited ({status}) on port {}", self.port),
                });
            }
            if let Ok(Ok(pong)) = query(self.port, self.password.as_deref(), &["PING"]) {
                if pong == "PONG" {
                    self.child = Some(child);
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(StartFailure {
                    port_taken: false,
                    reason: format!("no PONG on port {} within {STARTUP_DEADLINE:?}", self.port),
                });
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn fail(&mut self, what: &str, reason: &str) -> ! {
        self.stop();
        panic!(
            "redis-server failed to {what}: {reason}\n--- last lines of {} ---\n{}",
            self.log_path().display(),
            tail(&read_from(&self.log_path(), 0), 30)
        );
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Redis Cluster of `masters` master nodes (no replicas), each its own
/// redis-server in its own temporary directory. Killed on drop.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts the nodes, joins them with `redis-cli --cluster create`, and
    /// returns once every node reports `cluster_state:ok`, all 16384 slots
    /// assigned and every other node known.
    pub fn start(masters: usize) -> RedisCluster {
        // redis-cli refuses to build a cluster of fewer than three masters.
        assert!(
            masters >= 3,
            "a Redis Cluster needs at least 3 masters, not {masters}"
        );
        let cli = cli_binary();
        // One at a time: a started node holds its port and bus port, so the
        // next node's free-port search cannot pick them.
        let nodes: Vec<RedisServer> = (0..masters)
            .map(|_| RedisServer::launch(Role::ClusterNode, &[]))
            .collect();
        let cluster = RedisCluster { nodes };

        let output = Command::new(&cli)
            .args(["--cluster", "create"])
            .args(cluster.ports().iter().map(|p| format!("127.0.0.1:{p}")))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", cli.display()));
        let cli_said = || {
            format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
        };
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed ({}):\n{}",
            output.status,
            cli_said()
        );

        let deadline = Instant::now() + STARTUP_DEADLINE;
        loop {
            let infos: Vec<String> = cluster
                .ports()
                .into_iter()
                .map(|p| match query(p, None, &["CLUSTER", "INFO"]) {
                    Ok(Ok(info)) => info,
                    Ok(Err(e)) => format!("error reply: {e}"),
                    Err(e) => format!("no answer: {e}"),
                })
                .collect();
            if infos.iter().all(|info| cluster_is_ready(info, masters)) {
                return cluster;
            }
            if Instant::now() > deadline {
                panic!(
                    "the cluster on ports {:?} did not become ready within {STARTUP_DEADLINE:?}\n\
                     --- CLUSTER INFO per node ---\n{}\n--- redis-cli said ---\n{}",
                    cluster.ports(),
                    infos.join("\n--\n"),
                    cli_said()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// `redis://127.0.0.1:P1/,redis://127.0.0.1:P2/,...`
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(RedisServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(RedisServer::port).collect()
    }
}

fn cluster_is_ready(info: &str, masters: usize) -> bool {
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.trim_end().strip_prefix(name)?.strip_prefix(':'))
    };
    field("cluster_state") == Some("ok")
        && field("cluster_slots_assigned") == Some("16384")
        && field("cluster_known_nodes") == Some(masters.to_string().as_str())
}

/// A server shared by the whole test process, for tests that only need *a*
/// Redis and isolate themselves with [`unique_prefix`]. Never restarted.
pub fn shared_server() -> &'static RedisServer {
    static SERVER: OnceLock<RedisServer> = OnceLock::new();
    SERVER.get_or_init(RedisServer::start)
}

/// A 3-master cluster shared by the whole test process, like [`shared_server`].
pub fn shared_cluster() -> &'static RedisCluster {
    static CLUSTER: OnceLock<RedisCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| RedisCluster::start(3))
}

/// A key prefix unique to this process and call, e.g. `t4242-7-1767225600123456789:`.
/// It has no `{` or `}`, so a caller's hash tag after it still decides the slot.
pub fn unique_prefix() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    // The time guards against a reused pid meeting an earlier run's keys.
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("t{}-{n}-{nanos}:", std::process::id())
}

/// The binary to run for `tool`: `env_value` (the override variable's
/// value) or else `tool` itself, as a path or looked up on PATH. Takes the
/// value rather than reading the variable so tests need not set it.
pub fn resolve_binary(tool: &str, env_value: Option<&OsStr>) -> Result<PathBuf, String> {
    let wanted = env_value.unwrap_or(OsStr::new(tool));
    let wanted_path = Path::new(wanted);
    let found = if wanted_path.components().count() > 1 {
        Some(wanted_path.to_path_buf()).filter(|p| is_executable(p))
    } else {
        std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .map(|dir| dir.join(wanted))
            .find(|p| is_executable(p))
    };
    found.ok_or_else(|| {
        let overridden = match env_value {
            Some(v) => format!(" (looked for {v:?}, from the override variable)"),
            None => String::new(),
        };
        format!(
            "{tool} is not installed: the Redis-backed tests need it. On Debian/Ubuntu: \
             sudo apt-get install -y redis-server (the .ci/run script installs it when absent){overridden}"
        )
    })
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn server_binary() -> PathBuf {
    binary("redis-server", SERVER_VAR)
}

fn cli_binary() -> PathBuf {
    binary("redis-cli", CLI_VAR)
}

fn binary(tool: &str, var: &str) -> PathBuf {
    let value: Option<OsString> = std::env::var_os(var);
    resolve_binary(tool, value.as_deref()).unwrap_or_else(|message| panic!("{message}"))
}

/// A port nobody listens on right now (a race remains; callers retry). For a
/// cluster node the bus port, `port + 10000`, must be free too.
fn free_port(with_bus: bool) -> u16 {
    loop {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local address").port();
        if port == SHARED_REDIS_PORT {
            continue;
        }
        if !with_bus {
            return port;
        }
        if port < u16::MAX - BUS_OFFSET
            && TcpListener::bind((Ipv4Addr::LOCALHOST, port + BUS_OFFSET)).is_ok()
        {
            return port;
        }
    }
}

/// A fresh directory under Cargo's scratch space. A directory whose owner
/// never dropped it (the shared servers, a killed test process) is named
/// after a pid that is gone by the next run, which removes it.
fn fresh_dir() -> TempDir {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("redis");
    static SWEEP: Once = Once::new();
    SWEEP.call_once(|| remove_dirs_of_dead_processes(&root));
    std::fs::create_dir_all(&root)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", root.display()));
    tempfile::Builder::new()
        .prefix(&format!("{}-", std::process::id()))
        .tempdir_in(&root)
        .unwrap_or_else(|e| panic!("cannot create a directory in {}: {e}", root.display()))
}

fn remove_dirs_of_dead_processes(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.split('-').next()?.parse::<u32>().ok());
        if pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Spawns `cmd` so that the child is SIGKILLed when the test process dies.
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits,
/// and the test harness runs each test on a thread of its own, so all
/// children are forked by one thread that lives as long as the process.
fn spawn(mut cmd: Command) -> io::Result<Child> {
    type Request = (Command, mpsc::Sender<io::Result<Child>>);
    static SPAWNER: OnceLock<mpsc::Sender<Request>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        thread::Builder::new()
            .name("redis-spawner".into())
            .spawn(move || {
                // Never ends: the sender lives in a static.
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("start the redis-spawner thread");
        tx
    });

    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe calls (prctl, getppid); it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(io::Error::last_os_error());
            }
            // The test process may have died before prctl took effect.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let (tx, rx) = mpsc::channel();
    spawner
        .send((cmd, tx))
        .expect("the redis-spawner thread is alive");
    rx.recv().expect("the redis-spawner thread replies")
}

/// Sends one command (after AUTH when there is a password) over plain RESP
/// and returns `Ok(text)` for a status, integer or bulk reply and `Err(text)`
/// for an error reply. Dependency-free, so it cannot share a bug with the
/// client under test.
fn query(port: u16, password: Option<&str>, args: &[&str]) -> io::Result<Result<String, String>> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    stream.set_read_timeout(Some(Duration::from_secs(1)))?;
    let mut request = Vec::new();
    let mut encode = |args: &[&str]| {
        request.extend(format!("*{}\r\n", args.len()).bytes());
        for a in args {
            request.extend(format!("${}\r\n{a}\r\n", a.len()).bytes());
        }
    };
    if let Some(password) = password {
        encode(&["AUTH", password]);
    }
    encode(args);
    (&stream).write_all(&request)?;
    let mut reader = BufReader::new(&stream);
    if password.is_some() {
        if let Err(e) = read_reply(&mut reader)? {
            return Ok(Err(e));
        }
    }
    read_reply(&mut reader)
}

fn read_reply(reader: &mut impl BufRead) -> io::Result<Result<String, String>> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let line = line.trim_end();
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected reply {line:?}"),
        )
    };
    match line.split_at_checked(1) {
        Some(("+" | ":", text)) => Ok(Ok(text.to_owned())),
        Some(("-", text)) => Ok(Err(text.to_owned())),
        Some(("$", len)) => {
            let len: usize = len.parse().map_err(|_| bad())?;
            let mut body = vec![0; len + 2];
            reader.read_exact(&mut body)?;
            body.truncate(len);
            Ok(Ok(String::from_utf8_lossy(&body).into_owned()))
        }
        _ => Err(bad()),
    }
}

fn read_from(path: &Path, offset: u64) -> String {
    let mut text = Vec::new();
    if let Ok(mut file) = File::open(path) {
        use std::io::Seek;
        let _ = file.seek(io::SeekFrom::Start(offset));
        let _ = file.read_to_end(&mut text);
    }
    String::from_utf8_lossy(&text).into_owned()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
