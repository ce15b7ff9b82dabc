//! One Unhidra server per fuzzing process, run in-process on loopback exactly as `launch()`
//! runs it (SQLite in a temporary data dir, the API and MQTT listeners), with a user, a
//! channel and a device made over its API. Rate limits are raised so that the fuzzer's pace is
//! not refused, and connections come from many loopback addresses (`127.x.y.z`) so that neither
//! the per-address caps nor TIME_WAIT run out.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;
use unhidra_server::{Config, Listeners};

const PASSWORD: &str = "correct horse battery staple";

pub struct Server {
    /// A current-thread runtime: the server's tasks run while a target is in `block_on`.
    pub rt: Runtime,
    pub api: SocketAddr,
    pub mqtt: SocketAddr,
    pub access_token: String,
    pub channel_id: String,
    pub device_id: String,
    pub device_key: String,
    _dir: tempfile::TempDir,
}

pub fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(start)
}

fn start() -> Server {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut config = Config {
        data_dir: dir.path().join("data"),
        ..Config::default()
    };
    config.ml.enabled = false;
    config.auth.access_token_ttl_secs = 7 * 24 * 3600;
    config.rate_limits.login_per_minute = 1_000_000;
    config.rate_limits.register_per_hour = 1_000_000;
    config.rate_limits.device_register_per_hour = 1_000_000;
    config.rate_limits.ws_connect_per_minute_per_ip = 1_000_000;
    config.rate_limits.ws_connect_per_minute_per_user = 1_000_000;
    config.rate_limits.ws_messages_per_second = 1_000_000;
    let (api_listener, mqtt_listener) = rt.block_on(async {
        (
            TcpListener::bind("127.0.0.1:0")
                .await
                .expect("the API listener"),
            TcpListener::bind("127.0.0.1:0")
                .await
                .expect("the MQTT listener"),
        )
    });
    let api = api_listener.local_addr().expect("an address");
    let mqtt = mqtt_listener.local_addr().expect("an address");
    rt.spawn(async move {
        let listeners = Listeners {
            api: api_listener,
            metrics: None,
            mqtt: Some(mqtt_listener),
        };
        if let Err(err) = unhidra_server::launch(config, listeners, CancellationToken::new()).await
        {
            panic!("the server under fuzzing stopped: {err}");
        }
    });
    let (access_token, channel_id, device_id, device_key) = rt.block_on(setup(api));
    Server {
        rt,
        api,
        mqtt,
        access_token,
        channel_id,
        device_id,
        device_key,
        _dir: dir,
    }
}

async fn setup(api: SocketAddr) -> (String, String, String, String) {
    let client = reqwest::Client::new();
    let url = |path: &str| format!("http://{api}{path}");
    for _ in 0..500 {
        if let Ok(r) = client.get(url("/readyz")).send().await {
            if r.status().is_success() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let post = |path: &str, token: Option<&str>, body: Value| {
        let mut request = client.post(url(path)).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let path = path.to_owned();
        async move {
            let r = request.send().await.expect("the server answers");
            let status = r.status();
            let body: Value = r.json().await.expect("a JSON answer");
            assert!(status.is_success(), "{path}: {status} {body}");
            body
        }
    };
    let credentials = json!({"username": "fuzzer", "password": PASSWORD});
    post("/api/v1/auth/register", None, credentials.clone()).await;
    let login = post("/api/v1/auth/login", None, credentials).await;
    let token = login["access_token"].as_str().expect("a token").to_owned();
    let channel = post(
        "/api/v1/channels",
        Some(&token),
        json!({"name": "fuzz", "private": false}),
    )
    .await;
    let device = post(
        "/api/v1/devices",
        Some(&token),
        json!({"name": "fuzz-device"}),
    )
    .await;
    let text = |v: &Value, key: &str| v[key].as_str().expect(key).to_owned();
    (
        token,
        text(&channel, "id"),
        text(&device, "device_id"),
        text(&device, "api_key"),
    )
}

/// A TCP connection to `addr` from the next of many loopback source addresses.
pub async fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % 0x00ff_fff0;
    let [_, a, b, c] = (n + 2).to_be_bytes();
    let source = SocketAddr::from((Ipv4Addr::new(127, a, b, c), 0));
    let socket = TcpSocket::new_v4()?;
    socket.bind(source)?;
    socket.connect(addr).await
}
