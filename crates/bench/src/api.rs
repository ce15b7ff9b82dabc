//! A small typed client for the REST calls the benchmarks make.
//!
//! Setup calls (`register`, `login`, `create_device`, `create_channel`, `add_member`) fail with the server's error body. The
//! measured calls (`login_status`, `device_status`, `get_status`) return only the status, or
//! `None` when no response came, after reading the whole body, so a sample's latency covers the
//! full response; `get_authed` returns the body too.

use anyhow::{bail, Context};
use reqwest::{Client, RequestBuilder, StatusCode};
use unhidra_proto::auth::{LoginRequest, RegisterRequest, RegisterResponse, TokenPair};
use unhidra_proto::channels::{AddMemberRequest, CreateChannelRequest, CreatedChannel};
use unhidra_proto::devices::{CreateDeviceRequest, CreatedDevice};

/// A password the server's policy accepts (at least 12 characters, zxcvbn score ≥ 3).
pub const PASSWORD: &str = "correct horse battery staple";

/// A username that is new on any server: `bench-` and 8 random hex digits.
pub fn fresh_username() -> String {
    format!("bench-{:08x}", rand::random::<u32>())
}

#[derive(Debug, Clone)]
pub struct Api {
    base: String,
    http: Client,
}

impl Api {
    /// A client with its own connection pool.
    pub fn new(base: &str) -> anyhow::Result<Self> {
        let http = Client::builder()
            // Longer than any queueing the server allows (hash queue 10 s, request 30 s).
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            base: base.to_owned(),
            http,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Registers a user; returns the new user's id.
    pub async fn register(&self, username: &str, password: &str) -> anyhow::Result<String> {
        let body = RegisterRequest {
            username: username.to_owned(),
            password: password.to_owned(),
        };
        let request = self
            .http
            .post(self.url("/api/v1/auth/register"))
            .json(&body);
        let response = expect(request, StatusCode::CREATED, "registering the user").await?;
        let created: RegisterResponse = response
            .json()
            .await
            .context("reading the registration response")?;
        Ok(created.user_id)
    }

    pub async fn login(&self, username: &str, password: &str) -> anyhow::Result<TokenPair> {
        let request = self.login_request(username, password);
        let response = expect(request, StatusCode::OK, "logging in").await?;
        response.json().await.context("reading the login response")
    }

    /// Registers `count` devices named `bench-device-<i>` for the user of `access`, at most
    /// `concurrency` requests in flight; returns their API keys in order.
    pub async fn register_devices(
        &self,
        access: &str,
        count: u32,
        concurrency: usize,
    ) -> anyhow::Result<Vec<String>> {
        let api = self.clone();
        let access = access.to_owned();
        let created = crate::workers::for_each((0..count).collect(), concurrency, move |i: u32| {
            let (api, access) = (api.clone(), access.clone());
            async move {
                api.create_device(&access, &format!("bench-device-{i}"))
                    .await
            }
        })
        .await?;
        created.into_iter().map(|c| c.map(|c| c.api_key)).collect()
    }

    pub async fn create_device(&self, access: &str, name: &str) -> anyhow::Result<CreatedDevice> {
        let body = CreateDeviceRequest {
            name: name.to_owned(),
            kind: None,
            metadata: None,
        };
        let request = self
            .http
            .post(self.url("/api/v1/devices"))
            .bearer_auth(access)
            .json(&body);
        let response = expect(request, StatusCode::CREATED, "registering a device").await?;
        response
            .json()
            .await
            .context("reading the device registration response")
    }

    /// Creates a channel (the caller becomes its first member); returns its id.
    pub async fn create_channel(
        &self,
        access: &str,
        name: &str,
        private: bool,
    ) -> anyhow::Result<String> {
        let body = CreateChannelRequest {
            name: name.to_owned(),
            private,
        };
        let request = self
            .http
            .post(self.url("/api/v1/channels"))
            .bearer_auth(access)
            .json(&body);
        let response = expect(request, StatusCode::CREATED, "creating a channel").await?;
        let created: CreatedChannel = response
            .json()
            .await
            .context("reading the channel creation response")?;
        Ok(created.id)
    }

    /// Adds `user_id` to a channel (a user may add themselves to a public one).
    pub async fn add_member(
        &self,
        access: &str,
        channel_id: &str,
        user_id: &str,
    ) -> anyhow::Result<()> {
        let body = AddMemberRequest {
            user_id: user_id.to_owned(),
        };
        let request = self
            .http
            .post(self.url(&format!("/api/v1/channels/{channel_id}/members")))
            .bearer_auth(access)
            .json(&body);
        expect(request, StatusCode::NO_CONTENT, "joining a channel").await?;
        Ok(())
    }

    /// `POST /api/v1/auth/login`, measured.
    pub async fn login_status(&self, username: &str, password: &str) -> Option<u16> {
        status_of(self.login_request(username, password)).await
    }

    /// `GET /api/v1/device` with a device key, measured.
    pub async fn device_status(&self, api_key: &str) -> Option<u16> {
        status_of(
            self.http
                .get(self.url("/api/v1/device"))
                .bearer_auth(api_key),
        )
        .await
    }

    /// `GET path`, measured.
    pub async fn get_status(&self, path: &str) -> Option<u16> {
        status_of(self.http.get(self.url(path))).await
    }

    /// `GET path?query` with an access token, measured: the status and the whole body.
    pub async fn get_authed(
        &self,
        path: &str,
        query: &[(&str, String)],
        access: &str,
    ) -> Option<(u16, Vec<u8>)> {
        let response = self
            .http
            .get(self.url(path))
            .query(query)
            .bearer_auth(access)
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        let body = response.bytes().await.ok()?;
        Some((status, body.to_vec()))
    }

    fn login_request(&self, username: &str, password: &str) -> RequestBuilder {
        let body = LoginRequest {
            username: username.to_owned(),
            password: password.to_owned(),
        };
        self.http.post(self.url("/api/v1/auth/login")).json(&body)
    }
}

async fn status_of(request: RequestBuilder) -> Option<u16> {
    let response = request.send().await.ok()?;
    let status = response.status().as_u16();
    response.bytes().await.ok()?;
    Some(status)
}

async fn expect(
    request: RequestBuilder,
    want: StatusCode,
    what: &str,
) -> anyhow::Result<reqwest::Response> {
    let response = request.send().await.with_context(|| what.to_owned())?;
    if response.status() != want {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        bail!("{what}: expected {want}, got {status}: {body}");
    }
    Ok(response)
}
