//! Registering simulated devices over the REST API with a user's login, and finding the
//! ids of devices known only by their keys.

use anyhow::{bail, Context};
use futures::{StreamExt, TryStreamExt};
use serde_json::{json, Value};
use unhidra_proto::devices::{CreatedDevice, Device};

/// Id lookups in flight at once.
const LOOKUPS_AT_ONCE: usize = 16;

fn http_client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .context("building the HTTP client")
}

/// Logs in as `username` and registers `count` devices named `<prefix>-<n>`; returns their
/// ids and API keys. The server limits registrations per user and hour
/// (`rate_limits.device_register_per_hour`, 10 by default).
pub async fn register_devices(
    base_url: &str,
    username: &str,
    password: &str,
    count: usize,
    prefix: &str,
) -> anyhow::Result<Vec<CreatedDevice>> {
    let client = http_client()?;
    let base = base_url.trim_end_matches('/');
    let response = client
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .context("logging in")?;
    if !response.status().is_success() {
        bail!("login refused: HTTP {}", response.status());
    }
    let tokens: Value = response.json().await.context("reading the login answer")?;
    let access = tokens
        .get("access_token")
        .and_then(Value::as_str)
        .context("no access_token in the login answer")?
        .to_owned();
    let mut devices = Vec::with_capacity(count);
    for n in 1..=count {
        let response = client
            .post(format!("{base}/api/v1/devices"))
            .bearer_auth(&access)
            .json(&json!({"name": format!("{prefix}-{n}"), "kind": "sim"}))
            .send()
            .await
            .with_context(|| format!("registering device {n}"))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            bail!("registering device {n}: HTTP {status}: {body}");
        }
        let created: CreatedDevice = response.json().await.context("reading the device")?;
        devices.push(created);
    }
    Ok(devices)
}

/// The id of the device behind each key (`GET /api/v1/device`), in order.
pub async fn device_ids(base_url: &str, keys: &[String]) -> anyhow::Result<Vec<String>> {
    let client = http_client()?;
    let url = format!("{}/api/v1/device", base_url.trim_end_matches('/'));
    let lookups = keys.iter().cloned().enumerate().map(|(n, key)| {
        let request = client.get(&url).bearer_auth(key);
        async move {
            let response = request
                .send()
                .await
                .with_context(|| format!("asking for device {}", n + 1))?;
            let status = response.status();
            if !status.is_success() {
                bail!("the key of device {} was refused: HTTP {status}", n + 1);
            }
            let device: Device = response.json().await.context("reading the device")?;
            Ok(device.device_id)
        }
    });
    let lookups: Vec<_> = lookups.collect();
    futures::stream::iter(lookups)
        .buffered(LOOKUPS_AT_ONCE)
        .try_collect()
        .await
}

/// One key per line; blank lines and `#` comments are skipped.
pub fn parse_keys(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_files_skip_blanks_and_comments() {
        assert_eq!(
            parse_keys("# fleet\nunh_dk_a_1\n\n  unh_dk_b_2  \n"),
            ["unh_dk_a_1", "unh_dk_b_2"]
        );
    }
}
