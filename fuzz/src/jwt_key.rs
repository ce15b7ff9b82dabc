//! A fixed Ed25519 key for the token target, so that committed seeds can hold tokens with
//! valid signatures. It signs nothing outside fuzzing.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use ed25519_dalek::{Signer, SigningKey};
use time::OffsetDateTime;
use unhidra_tokens::jwt::{AccessTokens, KeyRing};

pub const KID: &str = "01890000-0000-7000-8000-00000000f022";
pub const ISSUER: &str = "unhidra-fuzz";
pub const AUDIENCE: &str = "unhidra-fuzz-api";

/// The clock of every verification: 2030-01-01T00:00:00Z.
pub fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_893_456_000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

pub fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&[0x42; 32])
}

/// `header.payload.signature`, signed with the fixed key whatever the header says.
pub fn sign(header: &[u8], payload: &[u8]) -> String {
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let signature = signing_key().sign(signed.as_bytes());
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
}

/// The verifier under test, holding only the fixed key (loaded the way the server loads its
/// ring: from a 0700 directory of 0600 PEM files).
pub fn tokens() -> &'static AccessTokens {
    static TOKENS: OnceLock<AccessTokens> = OnceLock::new();
    TOKENS.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let keys = dir.path().join("keys");
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&keys)
            .expect("the key directory");
        let pem = signing_key()
            .to_pkcs8_pem(Default::default())
            .expect("the key as PEM");
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(keys.join(format!("jwt-{KID}.pem")))
            .and_then(|mut f| f.write_all(pem.as_bytes()))
            .expect("the key file");
        let ring = KeyRing::load_or_create(&keys).expect("the key ring");
        assert_eq!(ring.active_kid(), KID);
        AccessTokens::new(ring, ISSUER, AUDIENCE, time::Duration::minutes(15))
    })
}
