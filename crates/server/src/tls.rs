//! TLS on the API listener, so that HTTPS and WSS work without a proxy in front.
//!
//! [`load`] reads the PEM certificate chain and private key named in the configuration and
//! builds a rustls server configuration: the `ring` provider, passed explicitly (no
//! process-wide default is installed or relied on), TLS 1.2 and 1.3 only, ALPN `http/1.1` (the
//! server speaks HTTP/1.1, which WebSocket upgrades need anyway). The key file must be a
//! regular file that group and others cannot access, the same rule as every other key file.
//!
//! Handshakes run in each connection's own task, bounded by
//! [`connections::HANDSHAKE_TIMEOUT`](crate::connections::HANDSHAKE_TIMEOUT) and counted under
//! the connection limits, so a client that stalls or fails its handshake never holds up the
//! next one (see [`connections`](crate::connections)).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use secrecy::{ExposeSecret, SecretSlice};
use unhidra_tokens::keyfile::{self, KeyFileError};

/// Why the TLS configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading TLS certificate file {}: {source}", path.display())]
    ReadCert { path: PathBuf, source: io::Error },
    #[error("TLS certificate file {}: {source}", path.display())]
    ParseCert {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("TLS certificate file {} holds no PEM certificate", path.display())]
    NoCert { path: PathBuf },
    /// Unreadable, or readable by group or others (the message says how to fix it).
    #[error("TLS private key: {0}")]
    KeyFile(#[from] KeyFileError),
    #[error(
        "TLS private key file {}: expected a PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC): {source}",
        path.display()
    )]
    ParseKey {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    /// The key does not match the certificate, or is of a kind rustls cannot use.
    #[error("TLS certificate {} with key {}: {source}", cert.display(), key.display())]
    Unusable {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
}

/// Reads the certificate chain (leaf first) and private key, both PEM, and builds the server
/// configuration.
pub fn load(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = read_chain(cert)?;
    // The PEM text of the key is wiped from memory when dropped.
    let key_pem = SecretSlice::from(keyfile::read(key)?);
    let private_key = PrivateKeyDer::from_pem_slice(key_pem.expose_secret()).map_err(|source| {
        TlsError::ParseKey {
            path: key.to_owned(),
            source,
        }
    })?;
    let unusable = |source| TlsError::Unusable {
        cert: cert.to_owned(),
        key: key.to_owned(),
        source,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(unusable)?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(unusable)?;
    // HTTP/2 is not compiled into the server; WebSocket clients need HTTP/1.1 in any case.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(path).map_err(|source| TlsError::ReadCert {
        path: path.to_owned(),
        source,
    })?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::ParseCert {
            path: path.to_owned(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCert {
            path: path.to_owned(),
        });
    }
    Ok(chain)
}
