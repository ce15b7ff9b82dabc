//! Access-token attacks against a protected route (`GET /api/v1/me`). Forged tokens are
//! signed with the server's real key where the attack needs a valid signature, so each
//! refusal is down to the one property under test. A control forgery with every property
//! right is accepted, which shows the forging itself is sound.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

struct Forge {
    kid: String,
    pem: Vec<u8>,
    claims: Value,
}

async fn setup() -> (TestApp, User, Forge) {
    let app = spawn_app().await;
    let user = app.user("mallory").await;
    let (kid, pem) = app.signing_key_pem();
    // The claims of the user's real token, as a template.
    let payload = user.access.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(&B64.decode(payload).unwrap()).unwrap();
    (app, user, Forge { kid, pem, claims })
}

impl Forge {
    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(
            &header,
            claims,
            &EncodingKey::from_ed_pem(&self.pem).unwrap(),
        )
        .unwrap()
    }

    fn with(&self, key: &str, value: Value) -> Value {
        let mut c = self.claims.clone();
        c[key] = value;
        c
    }
}

async fn refused(app: &TestApp, token: &str) {
    let r = app.get_as(token, "/api/v1/me").await;
    assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"unhidra\"");
    assert_error(r, 401, "unauthorized").await;
}

fn unsigned(header: &Value, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string()),
        signature
    )
}

#[tokio::test]
async fn a_correct_forgery_is_accepted_as_the_control() {
    let (app, _user, forge) = setup().await;
    let token = forge.sign(&forge.with("jti", json!("another-id")));
    assert_eq!(
        app.get_as(&token, "/api/v1/me").await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn alg_none_is_refused() {
    let (app, _user, forge) = setup().await;
    for alg in ["none", "None", "NONE"] {
        let header = json!({"alg": alg, "typ": "JWT", "kid": forge.kid});
        refused(&app, &unsigned(&header, &forge.claims, "")).await;
    }
}

#[tokio::test]
async fn hs256_signed_with_the_public_key_is_refused() {
    let (app, _user, forge) = setup().await;
    let jwks = body(
        app.client
            .get(app.url("/.well-known/jwks.json"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let x = jwks["keys"][0]["x"].as_str().unwrap().to_owned();
    let raw = B64.decode(&x).unwrap();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(forge.kid.clone());
    for secret in [raw.as_slice(), x.as_bytes()] {
        let token = jsonwebtoken::encode(&header, &forge.claims, &EncodingKey::from_secret(secret))
            .unwrap();
        refused(&app, &token).await;
    }
}

#[tokio::test]
async fn expired_tokens_are_refused_and_the_leeway_is_small() {
    let (app, user, _forge) = setup().await;
    app.clock.advance(time::Duration::seconds(900 + 20));
    assert_eq!(
        app.get_as(&user.access, "/api/v1/me").await.status(),
        StatusCode::OK
    );
    app.clock.advance(time::Duration::seconds(11));
    refused(&app, &user.access).await;
}

#[tokio::test]
async fn tokens_not_yet_valid_are_refused() {
    let (app, _user, forge) = setup().await;
    let now = forge.claims["iat"].as_i64().unwrap();
    refused(&app, &forge.sign(&forge.with("nbf", json!(now + 120)))).await;
}

#[tokio::test]
async fn wrong_audience_and_wrong_issuer_are_refused() {
    let (app, _user, forge) = setup().await;
    refused(
        &app,
        &forge.sign(&forge.with("aud", json!("some-other-service"))),
    )
    .await;
    refused(
        &app,
        &forge.sign(&forge.with("iss", json!("https://evil.example"))),
    )
    .await;
}

#[tokio::test]
async fn missing_claims_are_refused() {
    let (app, _user, forge) = setup().await;
    for claim in ["exp", "sid", "aud", "sub"] {
        let mut c = forge.claims.clone();
        c.as_object_mut().unwrap().remove(claim);
        refused(&app, &forge.sign(&c)).await;
    }
}

#[tokio::test]
async fn a_tampered_payload_is_refused() {
    let (app, user, forge) = setup().await;
    let victim = app.user("victim").await;
    let parts: Vec<&str> = user.access.split('.').collect();
    let tampered = forge.with("sub", json!(victim.id));
    let token = format!(
        "{}.{}.{}",
        parts[0],
        B64.encode(tampered.to_string()),
        parts[2]
    );
    refused(&app, &token).await;
}

#[tokio::test]
async fn another_key_under_a_known_kid_is_refused() {
    let (app, _user, forge) = setup().await;
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    let other = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let pem = other.to_pkcs8_pem(Default::default()).unwrap();
    let imposter = Forge {
        kid: forge.kid.clone(),
        pem: pem.as_bytes().to_vec(),
        claims: forge.claims.clone(),
    };
    refused(&app, &imposter.sign(&forge.claims)).await;
}

#[tokio::test]
async fn unknown_or_missing_kid_is_refused() {
    let (app, _user, forge) = setup().await;
    let unknown = Forge {
        kid: "01900000-0000-7000-8000-000000000000".into(),
        pem: forge.pem.clone(),
        claims: forge.claims.clone(),
    };
    refused(&app, &unknown.sign(&forge.claims)).await;
    let header = Header::new(Algorithm::EdDSA);
    let no_kid = jsonwebtoken::encode(
        &header,
        &forge.claims,
        &EncodingKey::from_ed_pem(&forge.pem).unwrap(),
    )
    .unwrap();
    refused(&app, &no_kid).await;
}

#[tokio::test]
async fn garbage_and_device_keys_are_refused_on_user_routes() {
    let (app, user, _forge) = setup().await;
    let (_id, key) = app.device(&user, "sensor").await;
    for token in ["x", "a.b.c", "eyJhbGciOiJFZERTQSJ9..", key.as_str()] {
        refused(&app, token).await;
    }
}

#[tokio::test]
async fn jwks_publishes_the_verification_key_only() {
    let (app, _user, forge) = setup().await;
    let r = app
        .client
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let jwks = body(r).await;
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["kid"], forge.kid.as_str());
    assert_eq!(keys[0]["kty"], "OKP");
    assert_eq!(keys[0]["crv"], "Ed25519");
    assert_eq!(keys[0]["alg"], "EdDSA");
    assert!(keys[0].get("d").is_none());
}

/// A token's session must belong to its subject: `sub` = bob with alice's live `sid` is not
/// bob, and a `sub` naming nobody with a live `sid` is nobody — on REST and on `/ws` alike.
#[tokio::test]
async fn a_live_session_under_another_subject_is_refused_on_rest_and_websocket() {
    let (app, mallory, forge) = setup().await;
    let bob = app.user("bob").await;
    for sub in [json!(bob.id), json!("0190a5b2-0000-7000-8000-000000000000")] {
        let token = forge.sign(&forge.with("sub", sub.clone()));
        refused(&app, &token).await;
        let bearer = format!("bearer.{token}");
        assert_eq!(
            crate::ws::refused_with(&app, &["unhidra.v1", &bearer], &[]).await,
            401,
            "sub {sub} with another user's session was welcomed on /ws"
        );
    }
    // The control: mallory's own subject with mallory's session still works on both.
    let token = forge.sign(&forge.with("sub", json!(mallory.id)));
    assert_eq!(
        app.get_as(&token, "/api/v1/me").await.status(),
        StatusCode::OK
    );
    crate::ws::connect(&app, &format!("bearer.{token}")).await;
}
