//! Running the real `unhidra` binary: a [`Server`] guard for `unhidra serve` (port 0, JSON
//! logs, killed on drop), [`cli`] for the one-shot commands, and the small HTTP, metrics and
//! JWT helpers the tests share.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use futures::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{connect_async, MaybeTlsStream, WebSocketStream};

/// How long a server may take to report both of its addresses.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a one-shot command (`config`, `admin`, `keys`, a failing `serve`) may run.
const CLI_TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(10);

/// A password that satisfies the policy (≥ 12 characters, zxcvbn score ≥ 3).
pub const PASSWORD: &str = "correct horse battery staple";

/// A config file body that lifts the per-IP limits out of the way of a test.
pub const RAISED_LIMITS: &str = "[rate_limits]\n\
    login_per_minute = 1000\n\
    register_per_hour = 1000\n\
    device_register_per_hour = 1000\n";

/// Which stream a captured line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

type Lines = Arc<Mutex<Vec<(Stream, String)>>>;

/// A running `unhidra` process whose stdout and stderr are collected line by line.
/// Killed (SIGKILL) on drop if it is still running.
pub struct Process {
    child: Child,
    lines: Lines,
    readers: Vec<JoinHandle<()>>,
    status: Option<ExitStatus>,
}

/// The `unhidra` binary with a clean, predictable environment: no inherited `UNHIDRA_*`
/// settings, `info` logs, no backtraces or colours in error output.
/// With a `wrapper` (such as `prlimit --nofile=1024:1024 --`, which must exec it), the binary
/// is run by that.
fn command_under(wrapper: &[&str], args: &[&str], env: &[(&str, &str)]) -> Command {
    let binary = env!("CARGO_BIN_EXE_unhidra");
    let mut cmd = match wrapper.split_first() {
        Some((program, wrapper_args)) => {
            let mut cmd = Command::new(program);
            cmd.args(wrapper_args).arg(binary);
            cmd
        }
        None => Command::new(binary),
    };
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("UNHIDRA_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("RUST_LOG", "info")
        .env("RUST_BACKTRACE", "0")
        .env("RUST_LIB_BACKTRACE", "0")
        .env("NO_COLOR", "1");
    for (key, value) in env {
        cmd.env(key, value);
    }
    cmd.args(args);
    cmd
}

fn collect(stream: impl Read + Send + 'static, which: Stream, lines: Lines) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf)
                        .trim_end_matches(['\n', '\r'])
                        .to_owned();
                    lines.lock().unwrap().push((which, line));
                }
            }
        }
    })
}

impl Process {
    /// Spawns `unhidra ARGS` in `cwd` (the test's working directory if `None`), feeding `stdin`
    /// (then closing it) if given.
    pub fn spawn(
        args: &[&str],
        env: &[(&str, &str)],
        cwd: Option<&Path>,
        stdin: Option<&str>,
    ) -> Process {
        Self::spawn_under(&[], args, env, cwd, stdin)
    }

    /// [`spawn`](Self::spawn) with the binary run by `wrapper` (see [`command_under`]).
    pub fn spawn_under(
        wrapper: &[&str],
        args: &[&str],
        env: &[(&str, &str)],
        cwd: Option<&Path>,
        stdin: Option<&str>,
    ) -> Process {
        let mut cmd = command_under(wrapper, args, env);
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawning the unhidra binary");
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A failed write means the process exited early; its status tells the story.
            let _ = pipe.write_all(text.as_bytes());
        }
        let lines: Lines = Arc::default();
        let readers = vec![
            collect(
                child.stdout.take().expect("piped stdout"),
                Stream::Stdout,
                Arc::clone(&lines),
            ),
            collect(
                child.stderr.take().expect("piped stderr"),
                Stream::Stderr,
                Arc::clone(&lines),
            ),
        ];
        Process {
            child,
            lines,
            readers,
            status: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, if the process has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("polling the child");
        }
        self.status
    }

    /// Waits (at most `timeout`) for the process to exit, then for its output to be read to
    /// the end. Panics with the output so far if it does not exit in time.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.try_status() {
                break status;
            }
            if Instant::now() >= deadline {
                panic!(
                    "unhidra (pid {}) did not exit within {timeout:?}; output:\n{}",
                    self.pid(),
                    self.text()
                );
            }
            tokio::time::sleep(POLL).await;
        };
        for reader in self.readers.drain(..) {
            reader.join().expect("output reader thread");
        }
        status
    }

    /// Every captured line of both streams, in arrival order.
    pub fn lines(&self) -> Vec<String> {
        let lines = self.lines.lock().unwrap();
        lines.iter().map(|(_, line)| line.clone()).collect()
    }

    fn stream(&self, which: Stream) -> String {
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .filter(|(stream, _)| *stream == which)
            .map(|(_, line)| format!("{line}\n"))
            .collect()
    }

    pub fn stdout(&self) -> String {
        self.stream(Stream::Stdout)
    }

    pub fn stderr(&self) -> String {
        self.stream(Stream::Stderr)
    }

    /// Both streams as one text.
    pub fn text(&self) -> String {
        self.lines().join("\n")
    }

    /// The captured lines that are JSON log records.
    pub fn json_lines(&self) -> Vec<Value> {
        self.lines()
            .iter()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(Value::is_object)
            .collect()
    }

    /// Sends SIGTERM (through `kill(1)`, which keeps the tests free of unsafe code).
    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    /// Sends SIGKILL: the process dies at once, with no chance to flush or close anything.
    pub fn sigkill(&self) {
        self.signal("KILL");
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{name} {} failed", self.pid());
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.try_status().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The outcome of a one-shot command.
pub struct CliOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    /// Asserts success and returns stdout.
    pub fn ok(&self) -> &str {
        assert!(
            self.status.success(),
            "expected success, got {}\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        &self.stdout
    }

    /// Asserts a non-zero exit and returns stdout and stderr together.
    pub fn failed(&self) -> String {
        assert!(
            !self.status.success(),
            "expected failure, got {}\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs `unhidra ARGS` to completion (bounded), with an optional line on stdin.
pub async fn cli(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> CliOutput {
    cli_in(None, args, env, stdin).await
}

/// [`cli`] in a chosen working directory.
pub async fn cli_in(
    cwd: Option<&Path>,
    args: &[&str],
    env: &[(&str, &str)],
    stdin: Option<&str>,
) -> CliOutput {
    let mut process = Process::spawn(args, env, cwd, stdin);
    let status = process.wait_exit(CLI_TIMEOUT).await;
    CliOutput {
        status,
        stdout: process.stdout(),
        stderr: process.stderr(),
    }
}

/// `--data-dir DIR` as arguments.
pub fn data_dir_args(dir: &Path) -> [&str; 2] {
    ["--data-dir", dir.to_str().expect("UTF-8 temp path")]
}

/// Writes a TOML config file into `dir` and returns its path.
pub fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("unhidra.toml");
    std::fs::write(&path, text).expect("writing the config file");
    path
}

/// Permission bits of a file or directory.
pub fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

pub fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {} {mode:o}: {e}", path.display()));
}

/// The signing-key files in a data dir, sorted by name (so by kid, so by age).
pub fn key_files(data_dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data_dir.join("keys"))
        .expect("listing the key dir")
        .map(|entry| entry.expect("key dir entry").path())
        .filter(|path| {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with("jwt-") && name.ends_with(".pem")
        })
        .collect();
    files.sort();
    files
}

/// A running `unhidra serve` on port 0 with JSON logs.
pub struct Server {
    pub process: Process,
    pub api: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub client: reqwest::Client,
}

fn logged_addr(record: &Value, message: &str) -> Option<SocketAddr> {
    let fields = record.get("fields")?;
    if fields.get("message")?.as_str()? != message {
        return None;
    }
    fields.get("addr")?.as_str()?.parse().ok()
}

impl Server {
    /// Starts `unhidra serve` on `data_dir` with ports 0 and JSON logs, plus `extra_args`
    /// and `env`, and waits (bounded) until it logs both of its addresses.
    pub async fn start(data_dir: &Path, extra_args: &[&str], env: &[(&str, &str)]) -> Server {
        Self::start_under(&[], data_dir, extra_args, env).await
    }

    /// [`start`](Self::start) with the binary run by `wrapper` (such as `prlimit`).
    pub async fn start_under(
        wrapper: &[&str],
        data_dir: &Path,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let mut args = vec!["serve"];
        args.extend(data_dir_args(data_dir));
        args.extend([
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ]);
        args.extend(extra_args);
        let mut process = Process::spawn_under(wrapper, &args, env, None, None);
        let deadline = Instant::now() + START_TIMEOUT;
        let (api, metrics_addr) = loop {
            let records = process.json_lines();
            let api = records.iter().find_map(|r| logged_addr(r, "API listening"));
            let metrics = records
                .iter()
                .find_map(|r| logged_addr(r, "metrics listening on /metrics"));
            if let (Some(api), Some(metrics)) = (api, metrics) {
                break (api, metrics);
            }
            if let Some(status) = process.try_status() {
                process.wait_exit(CLI_TIMEOUT).await;
                panic!(
                    "unhidra serve exited with {status} before listening; output:\n{}",
                    process.text()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "unhidra serve did not log its addresses within {START_TIMEOUT:?}; output:\n{}",
                    process.text()
                );
            }
            tokio::time::sleep(POLL).await;
        };
        Server {
            process,
            api,
            metrics_addr,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("building the HTTP client"),
        }
    }

    /// Starts a server with limits raised by a config file written into `config_dir`.
    pub async fn start_with_raised_limits(data_dir: &Path, config_dir: &Path) -> Server {
        let config = write_config(config_dir, RAISED_LIMITS);
        Server::start(
            data_dir,
            &["--config", config.to_str().expect("UTF-8 temp path")],
            &[],
        )
        .await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.api)
    }

    /// The Prometheus text from the metrics listener.
    pub async fn metrics(&self) -> String {
        let response = self
            .client
            .get(format!("http://{}/metrics", self.metrics_addr))
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(response.status(), StatusCode::OK);
        response.text().await.expect("metrics body")
    }

    /// Every line the server wrote so far, stdout and stderr.
    pub fn logs(&self) -> Vec<String> {
        self.process.lines()
    }

    pub fn json_logs(&self) -> Vec<Value> {
        self.process.json_lines()
    }

    pub fn sigterm(&self) {
        self.process.sigterm();
    }

    pub fn sigkill(&self) {
        self.process.sigkill();
    }

    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        self.process.wait_exit(timeout).await
    }

    /// SIGTERM, then asserts a clean exit (status 0) within ten seconds.
    pub async fn stop(mut self) {
        self.sigterm();
        let status = self.wait_exit(Duration::from_secs(10)).await;
        assert!(
            status.success(),
            "expected exit 0 after SIGTERM, got {status}; output:\n{}",
            self.process.text()
        );
    }

    // ---- HTTP ----

    /// Sends a request; `bearer` goes into `Authorization`, `body` as JSON.
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<&Value>,
    ) -> reqwest::Response {
        let mut request = self.client.request(method.clone(), self.url(path));
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// A request whose response is read as JSON (an empty body reads as `null`).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let response = self.request(method, path, bearer, body).await;
        let status = response.status();
        let text = response.text().await.expect("response body");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{path} answered {status} with non-JSON {text:?}: {e}"))
        };
        (status, value)
    }

    pub async fn get(&self, path: &str, bearer: Option<&str>) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path, bearer, None).await
    }

    pub async fn post(
        &self,
        path: &str,
        bearer: Option<&str>,
        body: &Value,
    ) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, path, bearer, Some(body))
            .await
    }

    /// Registers a user; asserts 201 and returns the user id.
    pub async fn register(&self, username: &str, password: &str) -> String {
        let (status, body) = self
            .post(
                "/api/v1/auth/register",
                None,
                &json!({ "username": username, "password": password }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "register {username}: {body}");
        str_field(&body, "user_id")
    }

    /// A raw login request.
    pub async fn login_response(&self, username: &str, password: &str) -> reqwest::Response {
        self.request(
            reqwest::Method::POST,
            "/api/v1/auth/login",
            None,
            Some(&json!({ "username": username, "password": password })),
        )
        .await
    }

    /// Logs in; asserts 200 and returns the token pair.
    pub async fn login(&self, username: &str, password: &str) -> Tokens {
        let (status, body) = self
            .post(
                "/api/v1/auth/login",
                None,
                &json!({ "username": username, "password": password }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "login {username}: {body}");
        Tokens::from_body(&body)
    }

    /// Exchanges a refresh token; returns the raw status and body.
    pub async fn refresh(&self, refresh_token: &str) -> (StatusCode, Value) {
        self.post(
            "/api/v1/auth/refresh",
            None,
            &json!({ "refresh_token": refresh_token }),
        )
        .await
    }

    /// Registers a device; asserts 201 and returns its id and API key.
    pub async fn create_device(&self, access_token: &str, name: &str) -> (String, String) {
        let (status, body) = self
            .post(
                "/api/v1/devices",
                Some(access_token),
                &json!({ "name": name, "kind": "sensor" }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "create device {name}: {body}");
        (str_field(&body, "device_id"), str_field(&body, "api_key"))
    }
}

/// The tokens a login or refresh hands out.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub access: String,
    pub refresh: String,
}

impl Tokens {
    pub fn from_body(body: &Value) -> Tokens {
        assert_eq!(body["token_type"], "Bearer", "{body}");
        Tokens {
            access: str_field(body, "access_token"),
            refresh: str_field(body, "refresh_token"),
        }
    }
}

/// A string field of a JSON object; panics naming the field if it is missing.
pub fn str_field(body: &Value, field: &str) -> String {
    body.get(field)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string {field:?} in {body}"))
        .to_owned()
}

/// The `error.code` of an error body.
pub fn error_code(body: &Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error body: {body}"))
}

/// The `kid` in a JWT's header (its first segment, base64url without padding).
pub fn jwt_kid(token: &str) -> String {
    let header = token.split('.').next().expect("a JWT has a header");
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .expect("base64url JWT header");
    let header: Value = serde_json::from_slice(&bytes).expect("JSON JWT header");
    str_field(&header, "kid")
}

/// The secret part of a device key `unh_dk_<key_id>_<secret>`.
pub fn device_key_secret(api_key: &str) -> String {
    let rest = api_key
        .strip_prefix("unh_dk_")
        .unwrap_or_else(|| panic!("not a device key: {api_key}"));
    let (key_id, secret) = rest.split_once('_').expect("unh_dk_<id>_<secret>");
    assert_eq!(key_id.len(), 16, "device key id {key_id:?}");
    secret.to_owned()
}

/// Waits (bounded) until `condition` holds, polling every few milliseconds.
pub async fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}

// ---- WebSocket ----

/// A config file body that lifts the per-IP limits and the WebSocket limits (handshakes per
/// IP and per user, frames per second) out of the way of a test.
pub const RAISED_WS_LIMITS: &str = "[rate_limits]\n\
    login_per_minute = 1000\n\
    register_per_hour = 1000\n\
    device_register_per_hour = 1000\n\
    ws_connect_per_minute_per_ip = 10000\n\
    ws_connect_per_minute_per_user = 10000\n\
    ws_messages_per_second = 100000\n";

/// How long a test waits for the next WebSocket frame it expects.
pub const WS_TIMEOUT: Duration = Duration::from_secs(30);

/// A client WebSocket connection to `/ws`.
pub type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

impl Server {
    /// Starts a server with [`RAISED_WS_LIMITS`] in a config file written into `config_dir`.
    pub async fn start_with_raised_ws_limits(data_dir: &Path, config_dir: &Path) -> Server {
        let config = write_config(config_dir, RAISED_WS_LIMITS);
        Server::start(
            data_dir,
            &["--config", config.to_str().expect("UTF-8 temp path")],
            &[],
        )
        .await
    }

    /// Opens `/ws` as a user: offers `unhidra.v1` and `bearer.<access token>`, checks the
    /// server chose `unhidra.v1`, and reads the `welcome` frame, which it returns.
    pub async fn ws_connect(&self, access_token: &str) -> (Ws, Value) {
        self.ws_connect_with(&format!("bearer.{access_token}"))
            .await
    }

    /// Opens `/ws` as a device, with its API key (see [`Server::ws_connect`]).
    pub async fn ws_connect_device(&self, api_key: &str) -> (Ws, Value) {
        self.ws_connect_with(&format!("device.{api_key}")).await
    }

    /// Opens `/ws` offering `unhidra.v1` and the credential subprotocol `credential`.
    async fn ws_connect_with(&self, credential: &str) -> (Ws, Value) {
        let mut request = format!("ws://{}/ws", self.api)
            .into_client_request()
            .expect("a WebSocket request");
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_str(&format!("unhidra.v1, {credential}")).expect("a header value"),
        );
        let (mut ws, response) = tokio::time::timeout(WS_TIMEOUT, connect_async(request))
            .await
            .expect("the WebSocket handshake timed out")
            .unwrap_or_else(|e| panic!("WebSocket handshake: {e}"));
        assert_eq!(
            response
                .headers()
                .get("Sec-WebSocket-Protocol")
                .and_then(|v| v.to_str().ok()),
            Some("unhidra.v1")
        );
        let welcome = ws_recv_json(&mut ws).await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        (ws, welcome)
    }

    /// Creates a private channel as the owner of `owner_token`, adds `members`, and returns
    /// the channel id.
    pub async fn create_channel(&self, owner_token: &str, name: &str, members: &[&str]) -> String {
        let (status, body) = self
            .post(
                "/api/v1/channels",
                Some(owner_token),
                &json!({ "name": name, "private": true }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "create channel {name}: {body}");
        let id = str_field(&body, "id");
        for member in members {
            let (status, body) = self
                .post(
                    &format!("/api/v1/channels/{id}/members"),
                    Some(owner_token),
                    &json!({ "user_id": member }),
                )
                .await;
            assert_eq!(
                status,
                StatusCode::NO_CONTENT,
                "add {member} to {name}: {body}"
            );
        }
        id
    }
}

/// Sends one JSON text frame.
pub async fn ws_send(ws: &mut Ws, frame: &Value) {
    tokio::time::timeout(WS_TIMEOUT, ws.send(WsMessage::text(frame.to_string())))
        .await
        .expect("a WebSocket send timed out")
        .unwrap_or_else(|e| panic!("sending {frame}: {e}"));
}

/// The next frame that is not a ping or pong (`None`: the stream ended). Panics if none
/// arrives within `timeout`.
pub async fn ws_next(
    ws: &mut Ws,
    timeout: Duration,
) -> Option<Result<WsMessage, tokio_tungstenite::tungstenite::Error>> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let next = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no WebSocket frame within {timeout:?}"));
        match next {
            Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => {}
            Some(Ok(WsMessage::Text(ref text))) if is_passing(text) => {}
            other => return other,
        }
    }
}

/// Whether a text frame is one of the frames sent as things happen (presence, typing…),
/// which these tests do not follow.
fn is_passing(text: &str) -> bool {
    const PASSING: [&str; 6] = [
        "presence",
        "typing",
        "receipt",
        "channel_added",
        "channel_removed",
        "device_state",
    ];
    serde_json::from_str::<Value>(text)
        .is_ok_and(|f| PASSING.contains(&f["type"].as_str().unwrap_or_default()))
}

/// The next frame, which must be a JSON text frame.
pub async fn ws_recv_json(ws: &mut Ws) -> Value {
    match ws_next(ws, WS_TIMEOUT).await {
        Some(Ok(WsMessage::Text(text))) => serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("a non-JSON text frame {text:?}: {e}")),
        other => panic!("expected a JSON text frame, got {other:?}"),
    }
}

/// Subscribes to `channel` with `since` and collects the replayed `message` frames up to
/// the `subscribed` frame; returns them with the seq that frame reports.
pub async fn ws_subscribe(ws: &mut Ws, channel: &str, since: Option<i64>) -> (Vec<Value>, i64) {
    let mut frame = json!({ "type": "subscribe", "channel": channel });
    if let Some(since) = since {
        frame["since"] = json!(since);
    }
    ws_send(ws, &frame).await;
    let mut messages = Vec::new();
    loop {
        let frame = ws_recv_json(ws).await;
        match frame["type"].as_str() {
            Some("message") => {
                assert_eq!(frame["channel"], channel, "{frame}");
                messages.push(frame);
            }
            Some("subscribed") => {
                assert_eq!(frame["channel"], channel, "{frame}");
                let seq = frame["seq"].as_i64().expect("a numeric seq");
                return (messages, seq);
            }
            // Channel events (members joining…) replay too; these tests follow messages.
            Some(_) if frame["seq"].is_i64() => {}
            _ => panic!("unexpected frame while subscribing: {frame}"),
        }
    }
}

/// Reads frames until the stream ends (bounded by `timeout`), so a close handshake the
/// server started can finish.
pub async fn ws_drain(ws: &mut Ws, timeout: Duration) {
    let _ = tokio::time::timeout(timeout, async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// What an ack said about a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub id: String,
    pub seq: i64,
    pub ts: String,
}

impl Ack {
    /// Reads an `ack` frame; returns its `client_msg_id` and the ack.
    pub fn from_frame(frame: &Value) -> (String, Ack) {
        assert_eq!(frame["type"], "ack", "{frame}");
        (
            str_field(frame, "client_msg_id"),
            Ack {
                id: str_field(frame, "id"),
                seq: frame["seq"].as_i64().expect("a numeric seq"),
                ts: str_field(frame, "ts"),
            },
        )
    }

    /// The id, seq and ts of a `message` frame, to compare with an ack.
    pub fn of_message(frame: &Value) -> Ack {
        Ack {
            id: str_field(frame, "id"),
            seq: frame["seq"].as_i64().expect("a numeric seq"),
            ts: str_field(frame, "ts"),
        }
    }
}

/// Publishes one message and waits for its ack (the body is the `client_msg_id`).
pub async fn ws_publish(ws: &mut Ws, channel: &str, client_msg_id: &str) -> Ack {
    ws_send(
        ws,
        &json!({
            "type": "publish",
            "channel": channel,
            "body": client_msg_id,
            "client_msg_id": client_msg_id,
        }),
    )
    .await;
    let (acked, ack) = Ack::from_frame(&ws_recv_json(ws).await);
    assert_eq!(acked, client_msg_id);
    ack
}

/// What a [`publish_until_closed`] publisher saw.
#[derive(Debug, Default)]
pub struct PublishLog {
    /// Every `client_msg_id` sent, in order.
    pub sent: Vec<String>,
    /// Every ack received, in the order received (the server may answer a connection's
    /// publishes in any order).
    pub acks: Vec<(String, Ack)>,
    /// Position in `sent` by `client_msg_id`, and the acked positions with their seqs.
    positions: HashMap<String, usize>,
    acked_at: BTreeMap<usize, i64>,
    /// The close frame, if the server sent one.
    pub close: Option<CloseFrame>,
    /// How the connection ended, for failure messages.
    pub end: String,
}

impl PublishLog {
    /// The ids that were sent but not acked (in flight when the connection ended), in the
    /// order they were sent.
    pub fn in_flight(&self) -> Vec<String> {
        self.sent
            .iter()
            .enumerate()
            .filter(|(at, _)| !self.acked_at.contains_key(at))
            .map(|(_, id)| id.clone())
            .collect()
    }

    fn note_sent(&mut self, client_msg_id: String) {
        self.positions
            .insert(client_msg_id.clone(), self.sent.len());
        self.sent.push(client_msg_id);
    }

    /// Records an ack, checking that it answers a publish in flight and that the seqs of
    /// the acked publishes rise in the order they were sent (the store keeps a
    /// connection's order).
    fn note_ack(&mut self, label: &str, client_msg_id: String, ack: Ack) {
        let at = *self.positions.get(&client_msg_id).unwrap_or_else(|| {
            panic!("publisher {label}: an ack for {client_msg_id}, which it never sent")
        });
        assert!(
            !self.acked_at.contains_key(&at),
            "publisher {label}: {client_msg_id} acked twice"
        );
        if let Some((_, before)) = self.acked_at.range(..at).next_back() {
            assert!(
                *before < ack.seq,
                "publisher {label}: seq fell to {} after {before}",
                ack.seq
            );
        }
        if let Some((_, after)) = self.acked_at.range(at + 1..).next() {
            assert!(
                ack.seq < *after,
                "publisher {label}: seq {} not before {after}",
                ack.seq
            );
        }
        self.acked_at.insert(at, ack.seq);
        self.acks.push((client_msg_id, ack));
    }
}

/// Publishes `<prefix>-0`, `<prefix>-1`, … to `channel` (each body is its `client_msg_id`),
/// keeping up to `window` unacknowledged, until the connection ends: by a close frame, a
/// reset or end of stream. Checks that each ack answers a publish in flight, that the acked
/// seqs rise in publish order, and counts them in `acked`. Panics on an `error` frame or if the connection is still open
/// after `limit`.
pub async fn publish_until_closed(
    ws: Ws,
    channel: String,
    prefix: String,
    window: usize,
    acked: Arc<std::sync::atomic::AtomicUsize>,
    limit: Duration,
) -> PublishLog {
    let ids = (0..).map({
        let prefix = prefix.clone();
        move |n| format!("{prefix}-{n}")
    });
    publish_ids(ws, channel, &prefix, ids, window, acked, limit).await
}

/// [`publish_until_closed`] with the `client_msg_id`s taken from `ids` (each also the body),
/// so that a client can first resend what was in flight on its last connection. Returns
/// when the connection ends, or when `ids` is exhausted and every publish is acked.
/// `label` names the publisher in failure messages.
pub async fn publish_ids(
    mut ws: Ws,
    channel: String,
    label: &str,
    mut ids: impl Iterator<Item = String>,
    window: usize,
    acked: Arc<std::sync::atomic::AtomicUsize>,
    limit: Duration,
) -> PublishLog {
    let deadline = Instant::now() + limit;
    let mut log = PublishLog::default();
    let mut exhausted = false;
    loop {
        assert!(
            Instant::now() < deadline,
            "publisher {label}: the connection was still open after {limit:?}"
        );
        while !exhausted && log.sent.len() - log.acks.len() < window {
            let Some(client_msg_id) = ids.next() else {
                exhausted = true;
                break;
            };
            let frame = json!({
                "type": "publish",
                "channel": channel,
                "body": client_msg_id,
                "client_msg_id": client_msg_id,
            });
            log.note_sent(client_msg_id);
            if let Err(e) = ws.send(WsMessage::text(frame.to_string())).await {
                // The frame may or may not have left: it counts as in flight.
                log.end = format!("send failed: {e}");
                return log;
            }
        }
        if exhausted && log.acks.len() == log.sent.len() {
            log.end = "every publish acked".to_owned();
            return log;
        }
        match ws_next(&mut ws, WS_TIMEOUT).await {
            Some(Ok(WsMessage::Text(text))) => {
                let frame: Value = serde_json::from_str(&text).expect("a JSON frame");
                let (client_msg_id, ack) = match frame["type"].as_str() {
                    Some("ack") => Ack::from_frame(&frame),
                    _ => panic!("publisher {label}: unexpected frame {frame}"),
                };
                log.note_ack(label, client_msg_id, ack);
                acked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            Some(Ok(WsMessage::Close(frame))) => {
                log.end = format!("close frame {frame:?}");
                log.close = frame;
                ws_drain(&mut ws, Duration::from_secs(5)).await;
                return log;
            }
            Some(Ok(other)) => panic!("publisher {label}: unexpected frame {other:?}"),
            Some(Err(e)) => {
                log.end = format!("read failed: {e}");
                return log;
            }
            None => {
                log.end = "end of stream".to_owned();
                return log;
            }
        }
    }
}

// ---- Prometheus text ----

/// One sample line of Prometheus text: name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Parses `name{a="x",b="y"} value` lines (comments skipped). Label values may hold braces
/// and escaped quotes, as route templates like `/api/v1/devices/{id}` do.
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            parse_sample(line).unwrap_or_else(|| panic!("unparseable metrics line {line:?}"))
        })
        .collect()
}

fn parse_sample(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = line.get(..name_end)?.to_owned();
    let mut rest = line.get(name_end..)?;
    let mut labels = Vec::new();
    if let Some(after_brace) = rest.strip_prefix('{') {
        let mut chars = after_brace.char_indices();
        let mut key = String::new();
        let mut value = String::new();
        let mut in_value = false;
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            if in_value {
                match c {
                    '\\' => {
                        let (_, escaped) = chars.next()?;
                        value.push(match escaped {
                            'n' => '\n',
                            other => other,
                        });
                    }
                    '"' => {
                        labels.push((std::mem::take(&mut key), std::mem::take(&mut value)));
                        in_value = false;
                    }
                    other => value.push(other),
                }
            } else {
                match c {
                    '}' => {
                        end = Some(i);
                        break;
                    }
                    '=' => {
                        let (_, quote) = chars.next()?;
                        if quote != '"' {
                            return None;
                        }
                        in_value = true;
                    }
                    ',' | ' ' => {}
                    other => key.push(other),
                }
            }
        }
        rest = after_brace.get(end? + 1..)?;
    }
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// The sum of every sample named `name` whose labels include all of `labels`; `None` if there
/// is no such sample.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<f64> = parse_metrics(text)
        .into_iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
        })
        .map(|s| s.value)
        .collect();
    (!matching.is_empty()).then(|| matching.iter().sum())
}

#[test]
fn metrics_lines_with_braces_in_labels_parse() {
    let text = "# TYPE x counter\n\
        http_request_duration_seconds_bucket{route=\"/api/v1/devices/{id}\",method=\"GET\",le=\"0.5\"} 3\n\
        auth_login_attempts_total{result=\"ok\"} 2\n\
        plain 7\n";
    let samples = parse_metrics(text);
    assert_eq!(samples.len(), 3);
    assert_eq!(
        samples[0].labels,
        vec![
            ("route".to_owned(), "/api/v1/devices/{id}".to_owned()),
            ("method".to_owned(), "GET".to_owned()),
            ("le".to_owned(), "0.5".to_owned()),
        ]
    );
    assert_eq!(samples[0].value, 3.0);
    assert_eq!(
        metric(text, "auth_login_attempts_total", &[("result", "ok")]),
        Some(2.0)
    );
    assert_eq!(metric(text, "plain", &[]), Some(7.0));
    assert_eq!(
        metric(text, "auth_login_attempts_total", &[("result", "no")]),
        None
    );
}

/// A process's resident memory (`VmRSS`), KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}
