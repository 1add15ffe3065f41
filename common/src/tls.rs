//! TLS set-up shared by the servers (hello-cf's HTTPS mode) and the clients (reqwest with ring).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Installs ring as the process's rustls crypto provider. Idempotent; call before building any
/// TLS client or server.
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is what we want either way.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path} is not valid PEM: {cause}")]
    Pem { path: PathBuf, cause: pem::Error },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no PEM private key")]
    NoKey { path: PathBuf },
    #[error("certificate {cert} and key {key} do not make a TLS config: {cause}")]
    Config {
        cert: PathBuf,
        key: PathBuf,
        cause: rustls::Error,
    },
}

/// Builds a server config from a PEM certificate chain and a PEM private key, offering
/// HTTP/1.1 over ALPN.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    install_crypto_provider();
    let read = |path: &Path| {
        std::fs::read(path).map_err(|cause| TlsError::Read {
            path: path.to_owned(),
            cause,
        })
    };
    let cert_pem = read(cert)?;
    let key_pem = read(key)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|cause| TlsError::Pem {
            path: cert.to_owned(),
            cause,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert.to_owned(),
        });
    }
    let private_key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|cause| match cause {
        pem::Error::NoItemsFound => TlsError::NoKey {
            path: key.to_owned(),
        },
        cause => TlsError::Pem {
            path: key.to_owned(),
            cause,
        },
    })?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(|cause| TlsError::Config {
            cert: cert.to_owned(),
            key: key.to_owned(),
            cause,
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
