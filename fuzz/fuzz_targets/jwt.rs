//! Access-token verification (`AccessTokens::verify`) with a fixed key.
//!
//! First byte 0: the rest is `header JSON 0xff claims JSON`, signed with the verifier's key
//! (so the fuzzer reaches what is checked after the signature): an accepted token must be
//! EdDSA, name the key, and carry the right issuer and audience and a current time window.
//! Otherwise the input is a token as a client would send it: one accepted must have exactly
//! the signature the key makes (no second encoding of a signature verifies).

#![no_main]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::Signer;
use libfuzzer_sys::fuzz_target;
use unhidra_fuzz::jwt_key::{self, AUDIENCE, ISSUER, KID};
use unhidra_tokens::jwt::LEEWAY_SECS;

fuzz_target!(|data: &[u8]| {
    let tokens = jwt_key::tokens();
    let now = jwt_key::now();
    match data.split_first() {
        Some((0, rest)) => {
            let split = rest.iter().position(|&b| b == 0xff).unwrap_or(rest.len());
            let (header, claims) = rest.split_at(split);
            let claims = claims.get(1..).unwrap_or_default();
            let token = jwt_key::sign(header, claims);
            if let Ok(accepted) = tokens.verify(&token, now) {
                let header: serde_json::Value =
                    serde_json::from_slice(header).expect("an accepted header is JSON");
                assert_eq!(header["alg"], "EdDSA", "{token}");
                assert_eq!(header["kid"], KID, "{token}");
                assert_eq!(accepted.iss, ISSUER);
                assert_eq!(accepted.aud, AUDIENCE);
                let now = now.unix_timestamp();
                assert!(accepted.exp > now - LEEWAY_SECS, "expired: {accepted:?}");
                assert!(
                    accepted.nbf <= now + LEEWAY_SECS,
                    "not yet valid: {accepted:?}"
                );
            }
        }
        _ => {
            let Ok(token) = std::str::from_utf8(data) else {
                return;
            };
            if tokens.verify(token, now).is_ok() {
                let (signed, signature) = token.rsplit_once('.').expect("three parts");
                let expected = jwt_key::signing_key().sign(signed.as_bytes());
                assert_eq!(
                    signature,
                    URL_SAFE_NO_PAD.encode(expected.to_bytes()),
                    "a second encoding of a signature was accepted"
                );
            }
        }
    }
});
