//! The device registry: registration with a key shown once, listing, revocation, and a
//! device authenticating with its key.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

fn is_key_shaped(key: &str) -> bool {
    let Some(rest) = key.strip_prefix("unh_dk_") else {
        return false;
    };
    let (id, secret) = rest.split_at(16);
    id.chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        && secret.len() == 44
        && secret.starts_with('_')
        && secret[1..]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[tokio::test]
async fn a_device_is_registered_with_a_key_shown_once() {
    let app = spawn_app().await;
    let owner = app.user("owner").await;
    let r = app
        .post_as(
            &owner.access,
            "/api/v1/devices",
            &json!({"name": "boiler", "kind": "esp32", "metadata": {"floor": 2}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let created = body(r).await;
    let key = created["api_key"].as_str().unwrap().to_owned();
    let id = created["device_id"].as_str().unwrap().to_owned();
    assert!(is_key_shaped(&key), "{key}");

    let list = app.get_as(&owner.access, "/api/v1/devices").await;
    assert_eq!(list.status(), StatusCode::OK);
    let text = list.text().await.unwrap();
    let secret = &key[7 + 17..];
    assert!(
        !text.contains(secret) && !text.contains("api_key") && !text.contains("hash"),
        "{text}"
    );
    let list: serde_json::Value = serde_json::from_str(&text).unwrap();
    let devices = list["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 1);
    let d = &devices[0];
    assert_eq!(d["device_id"], id.as_str());
    assert_eq!(d["owner_id"], owner.id.as_str());
    assert_eq!(d["name"], "boiler");
    assert_eq!(d["kind"], "esp32");
    assert_eq!(d["metadata"], json!({"floor": 2}));
    assert_eq!(d["key_id"], &key[7..23]);
    assert!(d["revoked_at"].is_null());

    let one = body(
        app.get_as(&owner.access, &format!("/api/v1/devices/{id}"))
            .await,
    )
    .await;
    assert_eq!(&one, d);
    assert!(!one.to_string().contains(secret));

    // The device authenticates with its key.
    let me = app.get_as(&key, "/api/v1/device").await;
    assert_eq!(me.status(), StatusCode::OK);
    assert_eq!(body(me).await["device_id"], id.as_str());
}

#[tokio::test]
async fn keys_are_stored_only_as_keyed_hashes() {
    let app = spawn_app().await;
    let owner = app.user("owner").await;
    let (_id, key) = app.device(&owner, "meter").await;
    let secret = key.as_bytes()[7 + 17..].to_vec();
    let data = &app.config.data_dir;
    let mut scanned = 0;
    for entry in std::fs::read_dir(data).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file()
            && path
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("unhidra.db")
        {
            let bytes = std::fs::read(&path).unwrap();
            scanned += bytes.len();
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_slice()),
                "device key secret found in {}",
                path.display()
            );
            assert!(!bytes
                .windows(PASSWORD.len())
                .any(|w| w == PASSWORD.as_bytes()));
        }
    }
    assert!(scanned > 0, "no database files found to scan");
}

#[tokio::test]
async fn revoking_a_device_stops_its_key_at_once() {
    let app = spawn_app().await;
    let owner = app.user("owner").await;
    let (id, key) = app.device(&owner, "lock").await;
    let (_id2, key2) = app.device(&owner, "window").await;
    assert_eq!(
        app.get_as(&key, "/api/v1/device").await.status(),
        StatusCode::OK
    );
    let r = app
        .delete_as(&owner.access, &format!("/api/v1/devices/{id}"))
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_error(
        app.get_as(&key, "/api/v1/device").await,
        401,
        "unauthorized",
    )
    .await;
    // Revoking again is fine; the other device is unaffected.
    let r = app
        .delete_as(&owner.access, &format!("/api/v1/devices/{id}"))
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.get_as(&key2, "/api/v1/device").await.status(),
        StatusCode::OK
    );
    let d = body(
        app.get_as(&owner.access, &format!("/api/v1/devices/{id}"))
            .await,
    )
    .await;
    assert!(d["revoked_at"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn another_users_device_is_404_not_403() {
    let app = spawn_app().await;
    let owner = app.user("owner").await;
    let other = app.user("other").await;
    let (id, key) = app.device(&owner, "camera").await;
    let path = format!("/api/v1/devices/{id}");
    assert_error(app.get_as(&other.access, &path).await, 404, "not_found").await;
    assert_error(app.delete_as(&other.access, &path).await, 404, "not_found").await;
    assert_error(
        app.get_as(&owner.access, "/api/v1/devices/nope").await,
        404,
        "not_found",
    )
    .await;
    let theirs = body(app.get_as(&other.access, "/api/v1/devices").await).await;
    assert_eq!(theirs["devices"], json!([]));
    // Still working after the other user's attempt.
    assert_eq!(
        app.get_as(&key, "/api/v1/device").await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn wrong_malformed_and_user_credentials_are_refused_on_device_routes() {
    let app = spawn_app().await;
    let owner = app.user("owner").await;
    let (_id, key) = app.device(&owner, "pump").await;
    // Right key id, wrong secret.
    let mut forged = key.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    for bad in [
        forged.as_str(),
        "unh_dk_0000000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "unh_dk_short",
        owner.access.as_str(),
    ] {
        assert_error(app.get_as(bad, "/api/v1/device").await, 401, "unauthorized").await;
    }
    let r = app
        .client
        .get(app.url("/api/v1/device"))
        .send()
        .await
        .unwrap();
    assert_error(r, 401, "unauthorized").await;
}

#[tokio::test]
async fn invalid_device_fields_are_refused_and_store_nothing() {
    let app = spawn_app().await;
    let owner = app.user("owner").await;
    let big = "x".repeat(5000);
    for bad in [
        json!({"name": ""}),
        json!({"name": "   "}),
        json!({"name": "x".repeat(65)}),
        json!({"name": "bell\u{7}"}),
        json!({"name": "ok", "kind": "no spaces please"}),
        json!({"name": "ok", "metadata": [1, 2]}),
        json!({"name": "ok", "metadata": {"blob": big}}),
    ] {
        let r = app.post_as(&owner.access, "/api/v1/devices", &bad).await;
        assert_error(r, 400, "invalid_field").await;
    }
    let r = app
        .post_as(&owner.access, "/api/v1/devices", &json!({"nom": "x"}))
        .await;
    assert_error(r, 400, "invalid_json").await;
    let list = body(app.get_as(&owner.access, "/api/v1/devices").await).await;
    assert_eq!(list["devices"], json!([]));
    let r = app
        .client
        .post(app.url("/api/v1/devices"))
        .json(&json!({"name": "anon"}))
        .send()
        .await
        .unwrap();
    assert_error(r, 401, "unauthorized").await;
}
