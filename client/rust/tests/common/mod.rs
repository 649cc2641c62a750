//! Starts a real wfe-sqlite server process on a fresh SQLite file for a test.
//!
//! The binary comes from `WFE_SQLITE_BIN`, by default `../../.venv/bin/wfe-sqlite` relative to
//! this crate (what `make install` creates). A missing binary fails the test: it is never
//! skipped.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running `wfe-sqlite serve` process with its own temporary database; killed on drop.
pub struct ServerProcess {
    child: Child,
    /// `127.0.0.1:PORT` as printed by the server.
    pub addr: String,
    /// The database file (inside `_dir`).
    pub db_path: PathBuf,
    /// Where the server's stderr goes (inside `_dir`).
    log_path: PathBuf,
    /// The `metrics on URL` line's URL, once printed (servers started with `--metrics-listen`).
    metrics_url: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    _dir: tempfile::TempDir,
}

/// A server process and a persistence provider connected to it: how most tests begin.
pub async fn server_and_store() -> (ServerProcess, wfe_grpc::GrpcPersistenceProvider) {
    let server = tokio::task::spawn_blocking(ServerProcess::start)
        .await
        .unwrap();
    let store = wfe_grpc::GrpcPersistenceProvider::connect(&server.addr)
        .await
        .unwrap();
    (server, store)
}

pub fn server_binary() -> PathBuf {
    match std::env::var_os("WFE_SQLITE_BIN") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/wfe-sqlite"),
    }
}

impl ServerProcess {
    /// Starts the server on port 0 and waits (up to 60 s) for its `listening on` line.
    pub fn start() -> ServerProcess {
        Self::start_with(&[], &[])
    }

    /// [`start`](Self::start) with extra `serve` arguments (e.g. `--tls-cert FILE`) and
    /// environment variables (e.g. `WFE_SQLITE_TOKENS`). `WFE_SQLITE_TOKENS` is never inherited
    /// from the test's own environment.
    pub fn start_with(args: &[&str], env: &[(&str, &str)]) -> ServerProcess {
        let bin = server_binary();
        assert!(
            bin.exists(),
            "wfe-sqlite server binary not found at {} (run `make install` or set WFE_SQLITE_BIN)",
            bin.display()
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let db_path = dir.path().join("wfe.db");
        let log_path = dir.path().join("server.log");
        let log = std::fs::File::create(&log_path).expect("server log file");
        let mut child = Command::new(&bin)
            .arg("serve")
            .arg("--db")
            .arg(format!(
                "sqlite:///{}",
                db_path.display().to_string().trim_start_matches('/')
            ))
            .arg("--listen")
            .arg("127.0.0.1:0")
            .args(args)
            .env_remove("WFE_SQLITE_TOKENS")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));

        // Read stdout on a thread: find the address, then keep draining so the server never
        // blocks on a full pipe.
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        let metrics_url = std::sync::Arc::new(std::sync::Mutex::new(None));
        let metrics_seen = std::sync::Arc::clone(&metrics_url);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = line.trim().strip_prefix("metrics on ") {
                    *metrics_seen.lock().unwrap() = Some(url.trim().to_string());
                }
                if let Some(addr) = line.trim().strip_prefix("listening on ") {
                    // Only the first send is received; later ones fail harmlessly.
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait();
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                panic!(
                    "wfe-sqlite did not print `listening on` within 60 s (exit: {status:?}); stderr:\n{log}"
                );
            }
        };
        ServerProcess {
            child,
            addr,
            db_path,
            log_path,
            metrics_url,
            _dir: dir,
        }
    }

    /// The URL of the server's Prometheus endpoint (started with `--metrics-listen`), waiting
    /// up to 10 s for its line.
    pub fn metrics_url(&self) -> String {
        for _ in 0..400 {
            if let Some(url) = self.metrics_url.lock().unwrap().clone() {
                return url;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("no `metrics on` line from the server at {}", self.addr);
    }

    /// How many calls of `wfe.persistence.v1.{service}`/`method` the server has answered (any
    /// status), from its Prometheus endpoint (servers started with `--metrics-listen`).
    pub fn handled_calls(&self, service: &str, method: &str) -> u64 {
        use std::io::{Read, Write};
        let url = self.metrics_url();
        let rest = url.strip_prefix("http://").expect("http URL");
        let (host, path) = rest.split_once('/').expect("a path");
        let mut stream = std::net::TcpStream::connect(host).expect("metrics endpoint");
        write!(
            stream,
            "GET /{path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        let service_label = format!("grpc_service=\"wfe.persistence.v1.{service}\"");
        let method_label = format!("grpc_method=\"{method}\"");
        text.lines()
            .filter(|line| {
                line.starts_with("grpc_server_handled_total{")
                    && line.contains(&service_label)
                    && line.contains(&method_label)
            })
            .map(|line| line.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64)
            .sum()
    }

    /// Everything the server wrote to stderr so far (with `--access-log`, a line per call).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Stops the server gracefully (SIGTERM: it drains, then exits) and waits for it; its exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        self.signal("-TERM");
        self.child.wait().expect("wait for the server").code()
    }

    /// Kills the server process now (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ServerProcess {
    /// Stops the server process (SIGSTOP): it keeps its connections but answers nothing.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused server run again (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(signal)
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} failed");
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
