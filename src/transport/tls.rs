//! TLS (RFC 3261 §26.3.1, `sips:`): the server side only. Connections are
//! run by the stream hub (`tcp.rs`) like TCP ones; this file turns the
//! configured PEM files into an acceptor.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;
use tokio_rustls::TlsAcceptor;

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("{0}: no PEM certificate (-----BEGIN CERTIFICATE-----) found")]
    NoCertificate(PathBuf),
    #[error("{0}: bad PEM certificate: {1}")]
    BadCertificate(PathBuf, String),
    #[error("{0}: no PEM private key (PKCS#8, PKCS#1 or SEC1) found: {1}")]
    NoKey(PathBuf, String),
    #[error("certificate {cert} and key {key} do not form a usable TLS identity: {error}")]
    Identity {
        cert: PathBuf,
        key: PathBuf,
        error: rustls::Error,
    },
}

/// A TLS acceptor from a PEM certificate chain (leaf first) and a PEM key.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let chain = certificates(cert)?;
    let key_der = private_key(key)?;
    let identity = |error| TlsError::Identity {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        error,
    };
    // The provider is named, not taken from a process default: exactly one
    // is compiled in (ring), and nothing else has to install it first.
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(identity)?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(identity)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(path).map_err(|e| TlsError::Read(path.to_path_buf(), e))?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadCertificate(path.to_path_buf(), e.to_string()))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(path.to_path_buf()));
    }
    Ok(chain)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = std::fs::read(path).map_err(|e| TlsError::Read(path.to_path_buf(), e))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::NoKey(path.to_path_buf(), e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn missing_and_invalid_files_are_named() {
        let dir = tempfile::TempDir::new().unwrap();
        let nowhere = dir.path().join("nope.pem");
        let e = acceptor(&nowhere, &nowhere).err().unwrap();
        assert!(matches!(e, TlsError::Read(..)), "{e}");
        assert!(e.to_string().contains("nope.pem"), "{e}");

        let junk = write(dir.path(), "junk.pem", "not a certificate\n");
        let e = acceptor(&junk, &junk).err().unwrap();
        assert!(matches!(e, TlsError::NoCertificate(..)), "{e}");

        let cert = write(
            dir.path(),
            "cert.pem",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        let e = acceptor(&cert, &junk).err().unwrap();
        assert!(matches!(e, TlsError::NoKey(..)), "{e}");
        assert!(e.to_string().contains("junk.pem"), "{e}");
    }
}
