//! `rung serve` as a separate process, as a user or an installed service
//! runs it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The binary, with none of the settings a developer's shell may hold
/// (`RUNG_*`, `RUST_LOG`): only what a test sets steers it.
pub fn rung_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rung"));
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with("RUNG_")) {
            cmd.env_remove(key);
        }
    }
    cmd.env_remove("RUST_LOG").env_remove("RUST_BACKTRACE");
    cmd
}

/// `rung serve` on ephemeral ports (gRPC and metrics), logging JSON; add
/// flags, environment and a working directory, then [`ServeProcess::start`].
pub fn serve_command() -> Command {
    let mut cmd = rung_command();
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .args(["--metrics-listen", "127.0.0.1:0"]);
    cmd
}

/// A running `rung serve`; SIGKILLed on drop, so a failing test leaves no
/// server behind.
pub struct ServeProcess {
    child: Child,
    /// Where it serves gRPC, `host:port`.
    pub addr: String,
}

impl ServeProcess {
    /// Starts `cmd` (from [`serve_command`]) and waits (blocking) for its
    /// "serving" log line; panics with what the server said if none comes.
    pub fn start(mut cmd: Command) -> ServeProcess {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("rung starts");
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            // Keeps reading after the line is found, so the pipe never fills.
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut said = Vec::new();
        let serving = loop {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(line) if line.contains("\"serving\"") => break line,
                Ok(line) => said.push(line),
                Err(e) => panic!("no \"serving\" line ({e}); the server said:\n{said:#?}"),
            }
        };
        let log: serde_json::Value = serde_json::from_str(&serving).unwrap();
        let addr = log["addr"]
            .as_str()
            .expect("addr in the log line")
            .to_string();
        ServeProcess { child, addr }
    }

    /// `http://host:port`, for a tonic client.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
