//! The API listener over TLS: HTTPS and WSS with a certificate made at test time (rcgen),
//! trusted by the clients and by nothing else; and the start-up refusals of a bad setup.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use reqwest::StatusCode;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use unhidra_server::{Config, LaunchError, Listeners};

use crate::helpers::{body, PASSWORD};

const WAIT: Duration = Duration::from_secs(5);

/// A self-signed certificate for `localhost` and 127.0.0.1, with its key written 0600.
struct TestCert {
    cert: PathBuf,
    key: PathBuf,
    pem: String,
}

fn make_cert(dir: &Path, name: &str) -> TestCert {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let cert_path = dir.join(format!("{name}.crt"));
    let key_path = dir.join(format!("{name}.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key_path)
        .unwrap()
        .write_all(signing_key.serialize_pem().as_bytes())
        .unwrap();
    TestCert {
        cert: cert_path,
        key: key_path,
        pem: cert.pem(),
    }
}

/// A server whose API listener speaks TLS, and clients that trust its certificate.
struct TlsApp {
    addr: SocketAddr,
    /// The MQTT listener, on TLS too.
    mqtt: SocketAddr,
    /// Trusts the test certificate only.
    client: reqwest::Client,
    cert: TestCert,
    shutdown: CancellationToken,
    server: Option<JoinHandle<Result<(), LaunchError>>>,
    _dir: tempfile::TempDir,
}

impl Drop for TlsApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A temp dir with a certificate in it, and the configuration that serves it.
fn tls_config() -> (tempfile::TempDir, TestCert, Config) {
    let dir = tempfile::tempdir().unwrap();
    let cert = make_cert(dir.path(), "server");
    let config = Config {
        data_dir: dir.path().join("data"),
        tls_cert: Some(cert.cert.clone()),
        tls_key: Some(cert.key.clone()),
        ..Config::default()
    };
    (dir, cert, config)
}

async fn spawn_tls_app() -> TlsApp {
    let (dir, cert, config) = tls_config();
    let api = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = api.local_addr().unwrap();
    let mqtt_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mqtt = mqtt_listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(unhidra_server::launch(
        config,
        Listeners {
            api,
            metrics: None,
            mqtt: Some(mqtt_listener),
        },
        shutdown.clone(),
    ));
    let client = trusting_client(&cert.pem);
    let app = TlsApp {
        addr,
        mqtt,
        client,
        cert,
        shutdown,
        server: Some(server),
        _dir: dir,
    };
    for _ in 0..100 {
        if let Ok(r) = app.client.get(app.url("/readyz")).send().await {
            if r.status() == StatusCode::OK {
                return app;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the TLS server did not become ready");
}

/// An HTTPS client that trusts `pem` and nothing else.
fn trusting_client(pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap())
        .build()
        .unwrap()
}

impl TlsApp {
    /// `GET path` on a new connection (so with a new handshake), not one from the pool.
    async fn get_fresh(&self, path: &str) -> reqwest::Result<reqwest::Response> {
        trusting_client(&self.cert.pem)
            .get(self.url(path))
            .send()
            .await
    }

    fn url(&self, path: &str) -> String {
        format!("https://{}{}", self.addr, path)
    }

    /// Registers and logs in a user over HTTPS; returns (user id, access token).
    async fn user(&self, username: &str) -> (String, String) {
        let credentials = json!({"username": username, "password": PASSWORD});
        let r = self
            .client
            .post(self.url("/api/v1/auth/register"))
            .json(&credentials)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        let id = body(r).await["user_id"].as_str().unwrap().to_owned();
        let r = self
            .client
            .post(self.url("/api/v1/auth/login"))
            .json(&credentials)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let access = body(r).await["access_token"].as_str().unwrap().to_owned();
        (id, access)
    }

    /// A TLS connection to the API listener for `localhost`, offering `versions` and ALPN
    /// `h2` and `http/1.1`.
    async fn tls_connect(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Result<TlsStream<TcpStream>, std::io::Error> {
        self.tls_connect_to(self.addr, versions, &[b"h2", b"http/1.1"])
            .await
    }

    /// A TLS connection to `addr` for `localhost`, offering `alpn`.
    async fn tls_connect_to(
        &self,
        addr: SocketAddr,
        versions: &[&'static rustls::SupportedProtocolVersion],
        alpn: &[&[u8]],
    ) -> Result<TlsStream<TcpStream>, std::io::Error> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.cert.pem.as_bytes()).unwrap())
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from("localhost").unwrap();
        tokio::time::timeout(
            WAIT,
            tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp),
        )
        .await
        .expect("TLS handshake timed out")
    }

    /// Stops the server and returns what `launch()` returned.
    async fn stop(mut self) -> Result<(), LaunchError> {
        self.shutdown.cancel();
        let server = self.server.take().unwrap();
        tokio::time::timeout(Duration::from_secs(15), server)
            .await
            .expect("launch() did not return after shutdown")
            .unwrap()
    }
}

/// What `launch()` says to `config`; it must refuse to start.
async fn launch_refusal(config: Config) -> LaunchError {
    let api = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let shutdown = CancellationToken::new();
    let result = tokio::time::timeout(
        WAIT,
        unhidra_server::launch(
            config,
            Listeners {
                api,
                metrics: None,
                mqtt: None,
            },
            shutdown.clone(),
        ),
    )
    .await;
    shutdown.cancel();
    match result {
        Ok(Err(err)) => err,
        Ok(Ok(())) => panic!("launch() succeeded"),
        Err(_) => panic!("launch() started serving"),
    }
}

#[tokio::test]
async fn https_serves_the_api_with_the_configured_certificate() {
    let app = spawn_tls_app().await;
    let r = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // The same client over the name rather than the address (the other SAN).
    let url = format!("https://localhost:{}/healthz", app.addr.port());
    let r = app.client.get(url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_certificate_is_refused() {
    let app = spawn_tls_app().await;
    let stranger = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .build()
        .unwrap();
    let err = stranger
        .get(app.url("/healthz"))
        .send()
        .await
        .expect_err("a certificate nobody vouches for was accepted");
    assert!(err.is_connect(), "{err:?}");
}

#[tokio::test]
async fn plain_http_on_the_tls_port_fails_and_the_listener_carries_on() {
    let app = spawn_tls_app().await;
    let plain = format!("http://{}/healthz", app.addr);
    let result = reqwest::Client::new().get(plain).send().await;
    assert!(result.is_err(), "plain HTTP was answered: {result:?}");
    let r = app.get_fresh("/healthz").await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_stalled_handshake_does_not_hold_up_other_clients() {
    let app = spawn_tls_app().await;
    // One client connects and never says anything; another sends half a ClientHello.
    let _silent = TcpStream::connect(app.addr).await.unwrap();
    let mut partial = TcpStream::connect(app.addr).await.unwrap();
    partial
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
        .await
        .unwrap();
    // Both may go on handshaking for 10 s; this client must not wait for them.
    let r = tokio::time::timeout(Duration::from_secs(6), app.get_fresh("/healthz"))
        .await
        .expect("a stalled handshake blocked the listener")
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Nor does shutdown: unfinished handshakes are dropped with the listener.
    tokio::time::timeout(Duration::from_secs(5), app.stop())
        .await
        .expect("shutdown waited for the stalled handshakes")
        .unwrap();
}

#[tokio::test]
async fn the_handshake_offers_tls_1_3_and_1_2_and_only_http_1_1() {
    let app = spawn_tls_app().await;
    let tls = app.tls_connect(rustls::ALL_VERSIONS).await.unwrap();
    let (_, session) = tls.get_ref();
    assert_eq!(
        session.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    // h2 is offered but not chosen: the server speaks HTTP/1.1 only.
    assert_eq!(session.alpn_protocol(), Some(&b"http/1.1"[..]));
    // Older clients (and firmware TLS stacks) that stop at TLS 1.2 still connect.
    let tls = app.tls_connect(&[&rustls::version::TLS12]).await.unwrap();
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
}

#[tokio::test]
async fn wss_opens_a_session_and_shutdown_closes_it_with_1001() {
    let app = spawn_tls_app().await;
    let (user_id, access) = app.user("alice").await;
    let tls = app.tls_connect(rustls::DEFAULT_VERSIONS).await.unwrap();
    let mut request = format!("wss://localhost:{}/ws", app.addr.port())
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        format!("unhidra.v1, bearer.{access}").parse().unwrap(),
    );
    let (mut ws, response) =
        tokio::time::timeout(WAIT, tokio_tungstenite::client_async(request, tls))
            .await
            .expect("WebSocket handshake timed out")
            .unwrap();
    assert_eq!(response.status().as_u16(), 101);
    assert_eq!(response.headers()["sec-websocket-protocol"], "unhidra.v1");
    let welcome = next_text(&mut ws).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    assert_eq!(welcome["principal"]["id"], user_id.as_str(), "{welcome}");

    // Draining works over TLS as over TCP: the session is told the server is going away,
    // and launch() returns.
    let stopping = tokio::spawn(app.stop());
    let close = loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("no close frame within 5 s")
        {
            Some(Ok(Message::Close(frame))) => break frame,
            // Pings, and the user's own presence going online.
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Text(_))) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(close.map(|f| u16::from(f.code)), Some(1001));
    stopping.await.unwrap().unwrap();
}

async fn next_text(ws: &mut WebSocketStream<TlsStream<TcpStream>>) -> Value {
    loop {
        let frame = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("no frame within 5 s")
            .expect("stream ended")
            .expect("read failed");
        match frame {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_key_file_others_can_read_stops_the_start() {
    let (_dir, cert, config) = tls_config();
    std::fs::set_permissions(&cert.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = launch_refusal(config.clone()).await;
    assert!(matches!(err, LaunchError::Tls(_)), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains(&cert.key.display().to_string()),
        "{message}"
    );
    assert!(message.contains("mode 644"), "{message}");
    assert!(message.contains("chmod 600"), "{message}");
    // Refused before anything was created.
    assert!(!config.data_dir.exists());
}

#[tokio::test]
async fn a_certificate_without_its_key_or_a_key_without_its_certificate_is_a_config_error() {
    let (_dir, cert, config) = tls_config();
    for config in [
        Config {
            tls_key: None,
            ..config.clone()
        },
        Config {
            tls_cert: None,
            ..config.clone()
        },
    ] {
        let err = launch_refusal(config).await;
        assert!(matches!(err, LaunchError::Config(_)), "{err:?}");
        assert!(err.to_string().contains("tls_cert and tls_key"), "{err}");
    }
    assert!(cert.key.exists());
}

#[tokio::test]
async fn a_key_that_does_not_match_the_certificate_stops_the_start() {
    let (dir, cert, config) = tls_config();
    let other = make_cert(dir.path(), "other");
    let err = launch_refusal(Config {
        tls_key: Some(other.key.clone()),
        ..config
    })
    .await;
    assert!(matches!(err, LaunchError::Tls(_)), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains(&cert.cert.display().to_string()),
        "{message}"
    );
    assert!(
        message.contains(&other.key.display().to_string()),
        "{message}"
    );
}

#[tokio::test]
async fn a_file_that_is_not_a_pem_certificate_stops_the_start() {
    let (dir, _cert, config) = tls_config();
    let garbage = dir.path().join("garbage.crt");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let err = launch_refusal(Config {
        tls_cert: Some(garbage.clone()),
        ..config
    })
    .await;
    let message = err.to_string();
    assert!(message.contains("no PEM certificate"), "{message}");
    assert!(
        message.contains(&garbage.display().to_string()),
        "{message}"
    );
}

#[tokio::test]
async fn mqtt_speaks_tls_with_the_same_certificate() {
    use futures::SinkExt;
    use rumqttc::mqttbytes::{v4, QoS};
    use tokio_util::codec::Framed;

    let app = spawn_tls_app().await;
    let (_, access) = app.user("alice").await;
    let r = app
        .client
        .post(app.url("/api/v1/devices"))
        .bearer_auth(&access)
        .json(&json!({"name": "secure"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let created = body(r).await;
    let (device, key) = (
        created["device_id"].as_str().unwrap().to_owned(),
        created["api_key"].as_str().unwrap().to_owned(),
    );
    let codec = || v4::Codec {
        max_incoming_size: 1 << 16,
        max_outgoing_size: 1 << 16,
    };
    // With no ALPN, and with the "mqtt" ALPN some clients send: both are served.
    for alpn in [&[][..], &[&b"mqtt"[..]][..]] {
        let tls = app
            .tls_connect_to(app.mqtt, &[&rustls::version::TLS13], alpn)
            .await
            .expect("TLS handshake on the MQTT listener");
        let mut c = Framed::new(tls, codec());
        let mut connect = v4::Connect::new("tls-client");
        connect.set_login(&device, &key);
        c.send(v4::Packet::Connect(connect)).await.unwrap();
        match tokio::time::timeout(WAIT, c.next()).await.unwrap() {
            Some(Ok(v4::Packet::ConnAck(ack))) => {
                assert_eq!(ack.code, v4::ConnectReturnCode::Success)
            }
            other => panic!("expected CONNACK, got {other:?}"),
        }
        let mut p = v4::Publish::new(
            format!("unhidra/devices/{device}/telemetry"),
            QoS::AtLeastOnce,
            json!({"metrics": {"t": 1}}).to_string(),
        );
        p.pkid = 1;
        c.send(v4::Packet::Publish(p)).await.unwrap();
        match tokio::time::timeout(WAIT, c.next()).await.unwrap() {
            Some(Ok(v4::Packet::PubAck(ack))) => assert_eq!(ack.pkid, 1),
            other => panic!("expected PUBACK, got {other:?}"),
        }
        c.send(v4::Packet::Disconnect).await.unwrap();
    }
    // Plain MQTT on the TLS port gets no CONNACK.
    let mut plain = Framed::new(TcpStream::connect(app.mqtt).await.unwrap(), codec());
    let mut connect = v4::Connect::new("plain-client");
    connect.set_login(&device, &key);
    plain.send(v4::Packet::Connect(connect)).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(15), plain.next())
        .await
        .expect("the TLS listener neither answered nor closed");
    assert!(
        !matches!(answer, Some(Ok(v4::Packet::ConnAck(_)))),
        "a plain CONNECT was accepted on the TLS listener: {answer:?}"
    );
}
