//! `spawn_app()` and typed client helpers.

use std::net::SocketAddr;
use std::sync::Arc;

use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use unhidra_server::{Config, Listeners, ManualClock};

pub const PASSWORD: &str = "correct horse battery staple";

pub struct TestApp {
    pub addr: SocketAddr,
    /// The native MQTT listener.
    pub mqtt: SocketAddr,
    pub client: reqwest::Client,
    pub clock: Arc<ManualClock>,
    pub config: Config,
    shutdown: CancellationToken,
    server: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

/// A server with rate limits raised, so tests can make many accounts from one address.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|c| {
        c.rate_limits.login_per_minute = 10_000;
        c.rate_limits.register_per_hour = 10_000;
        c.rate_limits.device_register_per_hour = 10_000;
    })
    .await
}

/// A server with the default configuration changed by `tweak` (data dir and listener set
/// here).
pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        data_dir: dir.path().join("data"),
        ..Config::default()
    };
    // Python workers only for the tests about them (tests/api/ml.rs).
    config.ml.enabled = false;
    tweak(&mut config);
    let api = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = api.local_addr().unwrap();
    let mqtt_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mqtt = mqtt_listener.local_addr().unwrap();
    let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
    let shutdown = CancellationToken::new();
    let server = tokio::spawn({
        let config = config.clone();
        let shutdown = shutdown.clone();
        let clock = Arc::clone(&clock);
        async move {
            unhidra_server::launch_with_clock(
                config,
                Listeners {
                    api,
                    metrics: None,
                    mqtt: Some(mqtt_listener),
                },
                shutdown,
                clock,
            )
            .await
            .unwrap();
        }
    });
    let app = TestApp {
        addr,
        mqtt,
        client: reqwest::Client::new(),
        clock,
        config,
        shutdown,
        server: Some(server),
        _dir: dir,
    };
    // Ready when the store answers.
    for _ in 0..100 {
        if let Ok(r) = app.client.get(app.url("/readyz")).send().await {
            if r.status() == StatusCode::OK {
                return app;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("server did not become ready");
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A logged-in user.
#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub access: String,
    pub refresh: String,
}

impl TestApp {
    /// The server's clock now, in Unix seconds.
    pub fn clock_now_unix(&self) -> i64 {
        use unhidra_server::Clock;
        self.clock.now().unix_timestamp()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Stops the server and waits until `launch()` has returned.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            tokio::time::timeout(std::time::Duration::from_secs(10), server)
                .await
                .expect("launch() did not return after shutdown")
                .unwrap();
        }
    }

    pub async fn post(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn post_as(&self, token: &str, path: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn get_as(&self, token: &str, path: &str) -> Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    pub async fn patch_as(&self, token: &str, path: &str, body: &Value) -> Response {
        self.client
            .patch(self.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn put_as(&self, token: &str, path: &str) -> Response {
        self.client
            .put(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    pub async fn delete_as(&self, token: &str, path: &str) -> Response {
        self.client
            .delete(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    pub async fn register(&self, username: &str) -> Response {
        self.post(
            "/api/v1/auth/register",
            &json!({"username": username, "password": PASSWORD}),
        )
        .await
    }

    pub async fn login(&self, username: &str, password: &str) -> Response {
        self.post(
            "/api/v1/auth/login",
            &json!({"username": username, "password": password}),
        )
        .await
    }

    /// Registers and logs in a user.
    pub async fn user(&self, username: &str) -> User {
        let r = self.register(username).await;
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "{}",
            r.text().await.unwrap()
        );
        let id = body(r).await["user_id"].as_str().unwrap().to_owned();
        let r = self.login(username, PASSWORD).await;
        assert_eq!(r.status(), StatusCode::OK);
        let tokens = body(r).await;
        User {
            id,
            access: tokens["access_token"].as_str().unwrap().to_owned(),
            refresh: tokens["refresh_token"].as_str().unwrap().to_owned(),
        }
    }

    /// How many telemetry points of `metric` the device has stored in the last hour, as its
    /// owner reads them over REST.
    pub async fn stored_points(&self, owner: &User, device: &str, metric: &str) -> i64 {
        let now = self.clock_now_unix();
        let path = format!(
            "/api/v1/devices/{device}/telemetry?metric={metric}&from={}&to={}&bucket=3600",
            now - 3600,
            now + 60
        );
        let r = self.get_as(&owner.access, &path).await;
        assert_eq!(r.status(), StatusCode::OK);
        body(r).await["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|bucket| bucket["count"].as_i64().unwrap())
            .sum()
    }

    /// Registers a device for `user`; returns (device_id, api_key).
    pub async fn device(&self, user: &User, name: &str) -> (String, String) {
        let r = self
            .post_as(&user.access, "/api/v1/devices", &json!({"name": name}))
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let b = body(r).await;
        (
            b["device_id"].as_str().unwrap().to_owned(),
            b["api_key"].as_str().unwrap().to_owned(),
        )
    }

    /// The PEM of the active signing key, read from the data dir as an attacker with disk
    /// access would (to forge tokens with otherwise-valid signatures).
    pub fn signing_key_pem(&self) -> (String, Vec<u8>) {
        let dir = unhidra_server::paths::signing_keys(&self.config.data_dir);
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "pem"))
            .collect();
        entries.sort();
        let path = entries.pop().unwrap();
        let stem = path.file_stem().unwrap().to_str().unwrap();
        let kid = stem.strip_prefix("jwt-").unwrap().to_owned();
        (kid, std::fs::read(&path).unwrap())
    }
}

pub async fn body(r: Response) -> Value {
    let text = r.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Asserts an error response: status, the documented shape, and the stable code.
pub async fn assert_error(r: Response, status: u16, code: &str) -> Value {
    assert_eq!(r.status().as_u16(), status);
    let b = body(r).await;
    assert_eq!(b["error"]["code"], code, "{b}");
    assert!(b["error"]["message"].is_string(), "{b}");
    assert_eq!(b.as_object().unwrap().len(), 1, "{b}");
    b
}
