//! Tests for the key ring and for access-token issue and verification, including the classic
//! JWT attacks. Time is always passed in; nothing here sleeps.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use ed25519_dalek::pkcs8::EncodePublicKey;
use jsonwebtoken::{decode_header, EncodingKey};
use time::macros::datetime;
use time::Duration;

use super::*;

const ISSUER: &str = "https://unhidra.test";
const AUDIENCE: &str = "unhidra";
const NOW: OffsetDateTime = datetime!(2030-01-01 12:00 UTC);
const TTL: Duration = Duration::minutes(15);

fn tokens(dir: &Path) -> AccessTokens {
    AccessTokens::new(KeyRing::load_or_create(dir).unwrap(), ISSUER, AUDIENCE, TTL)
}

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn key_file(dir: &Path, kid: &str) -> PathBuf {
    dir.join(format!("jwt-{kid}.pem"))
}

/// The ring's real private key for `kid`, read from disk, for forging tokens in tests.
fn private_key(dir: &Path, kid: &str) -> EncodingKey {
    EncodingKey::from_ed_pem(&fs::read(key_file(dir, kid)).unwrap()).unwrap()
}

fn public_key_bytes(dir: &Path, kid: &str) -> [u8; 32] {
    let pem = fs::read_to_string(key_file(dir, kid)).unwrap();
    SigningKey::from_pkcs8_pem(&pem)
        .unwrap()
        .verifying_key()
        .to_bytes()
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn claims_at(now: OffsetDateTime) -> AccessClaims {
    let iat = now.unix_timestamp();
    AccessClaims {
        iss: ISSUER.to_owned(),
        aud: AUDIENCE.to_owned(),
        sub: "user-1".to_owned(),
        sid: "session-1".to_owned(),
        iat,
        nbf: iat,
        exp: iat + TTL.whole_seconds(),
        jti: Uuid::now_v7().to_string(),
    }
}

/// Sign arbitrary claims with an arbitrary header, as an attacker holding `key` would.
fn sign(header: &Header, claims: &impl Serialize, key: &EncodingKey) -> String {
    jsonwebtoken::encode(header, claims, key).unwrap()
}

fn eddsa_header(kid: Option<&str>) -> Header {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = kid.map(str::to_owned);
    header
}

// ---- key ring on disk ----

#[test]
fn load_or_create_makes_a_0700_dir_with_one_0600_key() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("keys");
    let ring = KeyRing::load_or_create(&dir).unwrap();
    assert_eq!(mode_of(&dir), 0o700);
    assert_eq!(ring.kids(), vec![ring.active_kid().to_owned()]);
    let path = key_file(&dir, ring.active_kid());
    assert_eq!(mode_of(&path), 0o600);
    let pem = fs::read_to_string(&path).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{pem}");
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 1, "no stray files");
}

#[test]
fn kid_is_a_uuid_v7() {
    let dir = tempfile::tempdir().unwrap();
    let ring = KeyRing::load_or_create(dir.path()).unwrap();
    let kid = Uuid::parse_str(ring.active_kid()).unwrap();
    assert_eq!(kid.get_version_num(), 7);
}

#[test]
fn reload_gives_the_same_kid_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let first = tokens(dir.path());
    let (token, _) = first.issue("user-1", "session-1", NOW).unwrap();
    let second = tokens(dir.path());
    assert_eq!(first.keys().active_kid(), second.keys().active_kid());
    assert_eq!(first.keys().kids(), second.keys().kids());
    assert_eq!(first.jwks(), second.jwks());
    second.verify(&token, NOW).unwrap();
}

#[test]
fn group_or_world_readable_key_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ring = KeyRing::load_or_create(dir.path()).unwrap();
    let path = key_file(dir.path(), ring.active_kid());
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    match KeyRing::load_or_create(dir.path()) {
        Err(KeyError::File(KeyFileError::TooOpen { mode, .. })) => assert_eq!(mode, 0o644),
        other => panic!("expected TooOpen, got {other:?}"),
    }
}

#[test]
fn other_files_in_the_dir_are_ignored_but_a_bad_kid_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ring = KeyRing::load_or_create(dir.path()).unwrap();
    fs::write(dir.path().join("README"), "hello").unwrap();
    fs::write(dir.path().join("jwt-notes.txt"), "hello").unwrap();
    let reloaded = KeyRing::load_or_create(dir.path()).unwrap();
    assert_eq!(reloaded.kids(), ring.kids());

    keyfile::write_new(&dir.path().join("jwt-not-a-uuid.pem"), b"x").unwrap();
    assert!(matches!(
        KeyRing::load_or_create(dir.path()),
        Err(KeyError::Invalid { .. })
    ));
}

#[test]
fn a_key_file_that_is_not_a_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    KeyRing::load_or_create(dir.path()).unwrap();
    let kid = Uuid::now_v7().to_string();
    keyfile::write_new(&key_file(dir.path(), &kid), b"not a pem").unwrap();
    assert!(matches!(
        KeyRing::load_or_create(dir.path()),
        Err(KeyError::Invalid { .. })
    ));
}

#[test]
fn debug_does_not_print_private_keys() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens(dir.path());
    let pem = fs::read_to_string(key_file(dir.path(), tokens.keys().active_kid())).unwrap();
    let body = pem.lines().nth(1).unwrap();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap();
    // The last 32 bytes of an Ed25519 PKCS#8 v1 document are the private seed.
    let seed = &der[der.len() - 32..];
    for debug in [format!("{tokens:?}"), format!("{:?}", tokens.keys())] {
        assert!(debug.contains(tokens.keys().active_kid()), "{debug}");
        assert!(!debug.contains(body), "{debug}");
        assert!(!debug.contains(&b64(seed)), "{debug}");
        assert!(!debug.contains(&format!("{seed:?}")), "{debug}");
        assert!(!debug.contains(&format!("{:?}", &seed[..8])), "{debug}");
    }
}

// ---- rotation and retirement ----

#[test]
fn rotate_signs_with_the_new_key_and_old_tokens_still_verify() {
    let dir = tempfile::tempdir().unwrap();
    let mut ring = KeyRing::load_or_create(dir.path()).unwrap();
    let old_kid = ring.active_kid().to_owned();
    let old_token = AccessTokens::new(
        KeyRing::load_or_create(dir.path()).unwrap(),
        ISSUER,
        AUDIENCE,
        TTL,
    )
    .issue("user-1", "session-1", NOW)
    .unwrap()
    .0;

    let new_kid = ring.rotate(dir.path()).unwrap();
    assert_ne!(new_kid, old_kid);
    assert!(new_kid > old_kid, "kids must sort by creation time");
    assert_eq!(ring.active_kid(), new_kid);
    assert_eq!(ring.kids(), vec![old_kid.clone(), new_kid.clone()]);
    assert_eq!(mode_of(&key_file(dir.path(), &new_kid)), 0o600);

    let tokens = AccessTokens::new(ring, ISSUER, AUDIENCE, TTL);
    let (new_token, _) = tokens.issue("user-1", "session-1", NOW).unwrap();
    assert_eq!(
        decode_header(&new_token).unwrap().kid.as_deref(),
        Some(new_kid.as_str())
    );
    tokens.verify(&new_token, NOW).unwrap();
    tokens.verify(&old_token, NOW).unwrap();

    // A fresh load agrees on which key is active.
    let reloaded = KeyRing::load_or_create(dir.path()).unwrap();
    assert_eq!(reloaded.active_kid(), new_kid);
}

#[test]
fn rotating_twice_quickly_keeps_kids_ordered() {
    let dir = tempfile::tempdir().unwrap();
    let mut ring = KeyRing::load_or_create(dir.path()).unwrap();
    let mut kids = vec![ring.active_kid().to_owned()];
    for _ in 0..5 {
        kids.push(ring.rotate(dir.path()).unwrap());
    }
    assert_eq!(ring.kids(), kids, "creation order is kid order");
    assert_eq!(
        KeyRing::load_or_create(dir.path()).unwrap().active_kid(),
        kids.last().unwrap()
    );
}

#[test]
fn retire_removes_the_old_key_and_its_tokens_fail() {
    let dir = tempfile::tempdir().unwrap();
    let mut ring = KeyRing::load_or_create(dir.path()).unwrap();
    let old_kid = ring.active_kid().to_owned();
    let old_token = tokens(dir.path()).issue("user-1", "s", NOW).unwrap().0;
    ring.rotate(dir.path()).unwrap();

    ring.retire(dir.path(), &old_kid).unwrap();
    assert!(!key_file(dir.path(), &old_kid).exists());
    assert!(!ring.kids().contains(&old_kid));
    assert!(!ring.jwks().to_string().contains(&old_kid));

    let tokens = AccessTokens::new(ring, ISSUER, AUDIENCE, TTL);
    assert_eq!(tokens.verify(&old_token, NOW), Err(TokenError::UnknownKey));
    let (new_token, _) = tokens.issue("user-1", "s", NOW).unwrap();
    tokens.verify(&new_token, NOW).unwrap();

    // Gone from disk too: a fresh load does not know it either.
    let reloaded = AccessTokens::new(
        KeyRing::load_or_create(dir.path()).unwrap(),
        ISSUER,
        AUDIENCE,
        TTL,
    );
    assert_eq!(
        reloaded.verify(&old_token, NOW),
        Err(TokenError::UnknownKey)
    );
}

#[test]
fn retiring_the_active_key_fails() {
    let dir = tempfile::tempdir().unwrap();
    let mut ring = KeyRing::load_or_create(dir.path()).unwrap();
    let active = ring.active_kid().to_owned();
    assert!(matches!(
        ring.retire(dir.path(), &active),
        Err(KeyError::RetireActive(kid)) if kid == active
    ));
    assert!(key_file(dir.path(), &active).exists());
    assert_eq!(ring.kids(), vec![active]);
}

#[test]
fn retiring_an_unknown_key_fails() {
    let dir = tempfile::tempdir().unwrap();
    let mut ring = KeyRing::load_or_create(dir.path()).unwrap();
    let stranger = Uuid::now_v7().to_string();
    assert!(matches!(
        ring.retire(dir.path(), &stranger),
        Err(KeyError::UnknownKid(kid)) if kid == stranger
    ));
    // Not a way to delete arbitrary files either.
    assert!(matches!(
        ring.retire(dir.path(), "../../etc/passwd"),
        Err(KeyError::UnknownKid(_))
    ));
}

// ---- issue and verify ----

#[test]
fn a_valid_token_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens(dir.path());
    let (token, claims) = tokens.issue("user-1", "session-1", NOW).unwrap();
    assert_eq!(tokens.verify(&token, NOW), Ok(claims.clone()));

    assert_eq!(claims.iss, ISSUER);
    assert_eq!(claims.aud, AUDIENCE);
    assert_eq!(claims.sub, "user-1");
    assert_eq!(claims.sid, "session-1");
    assert_eq!(claims.iat, NOW.unix_timestamp());
    assert_eq!(claims.nbf, NOW.unix_timestamp());
    assert_eq!(claims.exp, (NOW + TTL).unix_timestamp());
    assert_eq!(Uuid::parse_str(&claims.jti).unwrap().get_version_num(), 7);
    assert_eq!(tokens.ttl(), TTL);

    let header = decode_header(&token).unwrap();
    assert_eq!(header.alg, Algorithm::EdDSA);
    assert_eq!(header.typ.as_deref(), Some("JWT"));
    assert_eq!(header.kid.as_deref(), Some(tokens.keys().active_kid()));
}

#[test]
fn every_token_gets_a_fresh_jti() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens(dir.path());
    let (_, a) = tokens.issue("user-1", "s", NOW).unwrap();
    let (_, b) = tokens.issue("user-1", "s", NOW).unwrap();
    assert_ne!(a.jti, b.jti);
}

#[test]
fn alg_none_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens(dir.path());
    let claims = serde_json::to_vec(&claims_at(NOW)).unwrap();
    for header in [
        serde_json::json!({"alg": "none"}),
        serde_json::json!({"alg": "none", "typ": "JWT", "kid": tokens.keys().active_kid()}),
        serde_json::json!({"alg": "None", "kid": tokens.keys().active_kid()}),
    ] {
        let token = format!("{}.{}.", b64(header.to_string()), b64(&claims));
        assert_eq!(
            tokens.verify(&token, NOW),
            Err(TokenError::BadAlgorithm),
            "{header}"
        );
    }
}

#[test]
fn hs256_signed_with_the_raw_public_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens(dir.path());
    let kid = tokens.keys().active_kid().to_owned();
    let public = public_key_bytes(dir.path(), &kid);
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid);
    let token = sign(&header, &claims_at(NOW), &EncodingKey::from_secret(&public));
    assert_eq!(tokens.verify(&token, NOW), Err(TokenError::BadAlgorithm));
}

#[test]
fn hs256_signed_with_the_published_public_key_strings_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens(dir.path());
    let kid = tokens.keys().active_kid().to_owned();
    let public = public_key_bytes(dir.path(), &kid);
    let pem = ed25519_dalek::VerifyingKey::from_bytes(&public)
        .unwrap()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    let jwks = tokens.jwks();
    let x = jwks["keys"][0]["x"].as_str().unwrap().to_owned();
    assert_eq!(x, b64(public));

    for secret in [pem.as_bytes(), x.as_bytes()] {
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            let mut header = Header::new(alg);
            header.kid = Some(kid.clone());
            let token = sign(&header, &claims_at(NOW), &EncodingKey::from_secret(secret));
            assert_eq!(
                tokens.verify(&token, NOW),
                Err(TokenError::BadAlgorithm),
                "{alg:?}"
            );
        }
    }
}

#[test]
fn expired_token_is_refused_and_leeway_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens(dir.path());
    let (token, claims) = tokens.issue("user-1", "s", NOW).unwrap();
    let exp = OffsetDateTime::from_unix_timestamp(claims.exp).unwrap();
    let leeway = Duration::seconds(LEEWAY_SECS);

    assert!(tokens.verify(&token, exp - Duration::seconds(1)).is_ok());
    assert!(tokens.verify(&token, exp).is_ok(), "inside leeway");
    assert!(
        tokens
            .verify(&token, exp + leeway - Duration::seconds(1))
            .is_ok(),
        "just inside leeway"
    );
    assert_eq!(
        tokens.verify(&token, exp + leeway),
        Err(TokenError::Expired)
    );
    assert_eq!(
        tokens.verify(&token, exp + Duration::days(1)),
        Err(TokenError::Expired)
    );
}

#[test]
fn token_not_yet_valid_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens(dir.path());
    let (token, _) = tokens.issue("user-1", "s", NOW).unwrap();
    let leeway = Duration::seconds(LEEWAY_SECS);
    assert!(
        tokens.verify(&token, NOW - leeway).is_ok(),
        "clock skew within leeway"
    );
    assert_eq!(
        tokens.verify(&token, NOW - leeway - Duration::seconds(1)),
        Err(TokenError::NotYetValid)
    );

    // Also a validly signed token whose nbf lies in the future.
    let mut claims = claims_at(NOW);
    claims.nbf = (NOW + Duration::minutes(5)).unix_timestamp();
    let kid = tokens.keys().active_kid();
    let token = sign(
        &eddsa_header(Some(kid)),
        &claims,
        &private_key(dir.path(), kid),
    );
    assert_eq!(tokens.verify(&token, NOW), Err(TokenError::NotYetValid));
}

#[test]
fn wrong_audience_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let issuing = AccessTokens::new(
        KeyRing::load_or_create(dir.path()).unwrap(),
        ISSUER,
        "some-other-service",
        TTL,
    );
    let (token, _) = issuing.issue("user-1", "s", NOW).unwrap();
    assert_eq!(
        tokens(dir.path()).verify(&token, NOW),
        Err(TokenError::WrongAudience)
    );
}

#[test]
fn wrong_issuer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let issuing = AccessTokens::new(
        KeyRing::load_or_create(dir.path()).unwrap(),
        "https://evil.test",
        AUDIENCE,
        TTL,
    );
    let (token, _) = issuing.issue("user-1", "s", NOW).unwrap();
    assert_eq!(
        tokens(dir.path()).verify(&token, NOW),
        Err(TokenError::WrongIssuer)
    );
}

#[test]
fn tampered_payload_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens(dir.path());
    let (token, claims) = tokens.issue("user-1", "s", NOW).unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let mut forged = claims.clone();
    forged.sub = "admin".to_owned();
    let forged_payload = b64(serde_json::to_vec(&forged).unwrap());
    assert_ne!(forged_payload, parts[1]);
    let tampered = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
    assert_eq!(tokens.verify(&tampered, NOW), Err(TokenError::BadSignature));

    // Same with a longer lifetime instead of another subject.
    let mut forged = claims;
    forged.exp += 86_400 * 365;
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64(serde_json::to_vec(&forged).unwrap()),
        parts[2]
    );
    assert_eq!(tokens.verify(&tampered, NOW), Err(TokenError::BadSignature));
}

#[test]
fn tampered_signature_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens(dir.path());
    let (token, _) = tokens.issue("user-1", "s", NOW).unwrap();
    let (message, signature) = token.rsplit_once('.').unwrap();
    let mut sig = URL_SAFE_NO_PAD.decode(signature).unwrap();
    sig[0] ^= 1;
    let tampered = format!("{message}.{}", b64(&sig));
    assert_eq!(tokens.verify(&tampered, NOW), Err(TokenError::BadSignature));
    // An empty signature on an EdDSA header is a bad signature, too.
    assert_eq!(
        tokens.verify(&format!("{message}."), NOW),
        Err(TokenError::BadSignature)
    );
}

#[test]
fn signature_from_another_key_with_the_same_kid_is_refused() {
    let ours = tempfile::tempdir().unwrap();
    let theirs = tempfile::tempdir().unwrap();
    let tokens = tokens(ours.path());
    let attacker = KeyRing::load_or_create(theirs.path()).unwrap();
    let kid = tokens.keys().active_kid();
    let token = sign(
        &eddsa_header(Some(kid)),
        &claims_at(NOW),
        &private_key(theirs.path(), attacker.active_kid()),
    );
    assert_eq!(decode_header(&token).unwrap().kid.as_deref(), Some(kid));
    assert_eq!(tokens.verify(&token, NOW), Err(TokenError::BadSignature));
}

#[test]
fn unknown_kid_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens(dir.path());
    let real = private_key(dir.path(), tokens.keys().active_kid());
    // Even correctly signed, a kid the ring does not know is refused.
    let stranger = Uuid::now_v7().to_string();
    let token = sign(&eddsa_header(Some(&stranger)), &claims_at(NOW), &real);
    assert_eq!(tokens.verify(&token, NOW), Err(TokenError::UnknownKey));
}

#[test]
fn missing_kid_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens(dir.path());
    let real = private_key(dir.path(), tokens.keys().active_kid());
    let token = sign(&eddsa_header(None), &claims_at(NOW), &real);
    assert_eq!(tokens.verify(&token, NOW), Err(TokenError::UnknownKey));
}

#[test]
fn missing_claims_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens(dir.path());
    let kid = tokens.keys().active_kid();
    let real = private_key(dir.path(), kid);
    let full = serde_json::to_value(claims_at(NOW)).unwrap();
    for claim in ["iss", "aud", "sub", "sid", "iat", "nbf", "exp", "jti"] {
        let mut claims = full.clone();
        claims.as_object_mut().unwrap().remove(claim);
        let token = sign(&eddsa_header(Some(kid)), &claims, &real);
        assert_eq!(
            tokens.verify(&token, NOW),
            Err(TokenError::Malformed),
            "without {claim}"
        );
    }
    // The full set, signed the same way, is fine: the failures above are the missing claims.
    let token = sign(&eddsa_header(Some(kid)), &full, &real);
    assert!(tokens.verify(&token, NOW).is_ok());
}

#[test]
fn garbage_is_malformed() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens(dir.path());
    let (token, _) = tokens.issue("user-1", "s", NOW).unwrap();
    let (header, rest) = token.split_once('.').unwrap();
    for garbage in [
        String::new(),
        "garbage".to_owned(),
        "a.b".to_owned(),
        "a.b.c".to_owned(),
        "...".to_owned(),
        format!("{token}.extra"),
        format!("!!{header}.{rest}"),
        format!("{}.{rest}", b64("not json")),
        format!("{}.{rest}", b64("{\"kid\":\"x\"}")),
        // A critical extension we do not implement (RFC 7515 says refuse it).
        format!(
            "{}.{rest}",
            b64(serde_json::json!({
                "alg": "EdDSA",
                "kid": tokens.keys().active_kid(),
                "crit": ["exp"],
            })
            .to_string())
        ),
    ] {
        assert_eq!(
            tokens.verify(&garbage, NOW),
            Err(TokenError::Malformed),
            "{garbage:?}"
        );
    }

    // A payload that is not JSON claims is malformed once its signature checks out...
    let real = private_key(dir.path(), tokens.keys().active_kid());
    for payload in [b64("not json"), b64("[1,2]"), "not-base64!".to_owned()] {
        let message = format!("{header}.{payload}");
        let signature =
            jsonwebtoken::crypto::sign(message.as_bytes(), &real, Algorithm::EdDSA).unwrap();
        let token = format!("{message}.{signature}");
        assert_eq!(
            tokens.verify(&token, NOW),
            Err(TokenError::Malformed),
            "{payload}"
        );
        // ...and unsigned, it is a bad signature: the payload is never parsed before that.
        let token = format!("{message}.c2ln");
        assert_eq!(
            tokens.verify(&token, NOW),
            Err(TokenError::BadSignature),
            "{payload}"
        );
    }
}

#[test]
fn error_reasons_are_stable_labels() {
    let all = [
        (TokenError::Malformed, "malformed"),
        (TokenError::UnknownKey, "unknown_key"),
        (TokenError::BadAlgorithm, "bad_algorithm"),
        (TokenError::BadSignature, "bad_signature"),
        (TokenError::Expired, "expired"),
        (TokenError::NotYetValid, "not_yet_valid"),
        (TokenError::WrongIssuer, "wrong_issuer"),
        (TokenError::WrongAudience, "wrong_audience"),
        (TokenError::Signing, "signing"),
    ];
    for (error, reason) in all {
        assert_eq!(error.reason(), reason);
    }
}

// ---- JWKS ----

#[test]
fn jwks_lists_every_public_key_and_nothing_private() {
    let dir = tempfile::tempdir().unwrap();
    let mut ring = KeyRing::load_or_create(dir.path()).unwrap();
    ring.rotate(dir.path()).unwrap();
    let jwks = ring.jwks();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    for (jwk, kid) in keys.iter().zip(ring.kids()) {
        assert_eq!(jwk["kid"], kid.as_str());
        assert_eq!(jwk["kty"], "OKP");
        assert_eq!(jwk["crv"], "Ed25519");
        assert_eq!(jwk["alg"], "EdDSA");
        assert_eq!(jwk["use"], "sig");
        assert!(jwk.get("d").is_none(), "private key leaked: {jwk}");
        assert_eq!(
            jwk.as_object().unwrap().len(),
            6,
            "unexpected members: {jwk}"
        );
        assert_eq!(
            jwk["x"].as_str().unwrap(),
            b64(public_key_bytes(dir.path(), &kid))
        );
    }
    // It parses as a JWK set, too.
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks).unwrap();
    assert_eq!(set.keys.len(), 2);
}

#[test]
fn jwks_x_is_really_the_verifying_key() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens(dir.path());
    let (token, claims) = tokens.issue("user-1", "s", NOW).unwrap();
    let jwks = tokens.jwks();
    let x = jwks["keys"][0]["x"].as_str().unwrap();

    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.validate_exp = false;
    validation.set_audience(&[AUDIENCE]);
    let decoded = jsonwebtoken::decode::<AccessClaims>(
        &token,
        &DecodingKey::from_ed_components(x).unwrap(),
        &validation,
    )
    .unwrap();
    assert_eq!(decoded.claims, claims);

    // Another key's x does not verify it, so the check above means something.
    let other = tempfile::tempdir().unwrap();
    let other_x = KeyRing::load_or_create(other.path()).unwrap().jwks()["keys"][0]["x"]
        .as_str()
        .unwrap()
        .to_owned();
    let err = jsonwebtoken::decode::<AccessClaims>(
        &token,
        &DecodingKey::from_ed_components(&other_x).unwrap(),
        &validation,
    )
    .unwrap_err();
    assert_eq!(*err.kind(), ErrorKind::InvalidSignature);
}
