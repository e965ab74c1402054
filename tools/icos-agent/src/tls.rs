//! The TLS client configuration of every HTTPS download: the OCI registry client of `icos` and
//! the release downloads of `icos release fetch` and `icos-agent upgrade-install URL`.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("CA certificate file {path}: {problem}")]
    CaCert { path: PathBuf, problem: String },
    #[error("cannot set up TLS: {problem}")]
    Setup { problem: String },
}

/// The TLS configuration: the system's CA certificates (`SSL_CERT_FILE` and `SSL_CERT_DIR` when
/// set, as OpenSSL has it, so a proxy's CA installed there is trusted) and those in `ca_cert`, a
/// PEM file, such as a test server's self-signed certificate.
pub fn tls_config(ca_cert: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    // As in ureq's own default: an unreadable system store leaves fewer roots, and whatever then
    // fails to verify says so.
    if let Ok(certificates) = rustls_native_certs::load_native_certs() {
        roots.add_parsable_certificates(certificates);
    }
    if let Some(path) = ca_cert {
        let problem = |problem: String| TlsError::CaCert { path: path.to_owned(), problem };
        let pem = fs::read(path).map_err(|error| problem(format!("cannot read it: {error}")))?;
        let certificates = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| problem(format!("not a PEM file of certificates: {error}")))?;
        if certificates.is_empty() {
            return Err(problem("it holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into()));
        }
        for certificate in certificates {
            roots.add(certificate).map_err(|error| problem(format!("an unusable certificate: {error}")))?;
        }
    }
    // ring, as ureq 2 itself uses: rustls 0.23.48 deprecates it for lacking post-quantum key
    // exchange, and the provider that has it (aws-lc-rs) needs a C and assembler build that the
    // build of these tools does not have. Classic ECDHE is what a registry offers anyway.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| TlsError::Setup { problem: error.to_string() })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_must_hold_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let error = tls_config(Some(&missing)).unwrap_err().to_string();
        assert!(error.contains("missing.pem") && error.contains("cannot read"), "{error}");
        let empty = dir.path().join("empty.pem");
        fs::write(&empty, "not a certificate\n").unwrap();
        let error = tls_config(Some(&empty)).unwrap_err().to_string();
        assert!(error.contains("empty.pem") && error.contains("no PEM certificate"), "{error}");
        assert!(tls_config(None).is_ok());
    }
}
