//! Pushing images from a [`Store`](super::Store) to an OCI distribution registry and pulling
//! them back, by digest.
//!
//! A store is per machine; a registry is where the images a pin names are shared, so that a
//! machine that lacks one fetches it instead of rebuilding it. Nothing read from a registry is
//! trusted: every manifest and blob is hashed as it arrives and checked against the digest that
//! named it, and the archive assembled from them goes into the store through
//! [`Store::put`](super::Store::put), which verifies it once more. The archive a pull assembles
//! has the member order and headers of [`write_archive`](super::write_archive), so pulling an
//! image icos wrote gives back the very bytes that were pushed.
//!
//! The registry is `http[s]://host[:port][/prefix]` ([`RegistryUrl`]); the image named N (in a
//! pin, or in index.json of a pushed archive) lives in the repository `<prefix>/N`.

mod address;
mod auth;
mod client;
mod pull;
mod push;

use std::io;
use std::path::{Path, PathBuf};

use super::{Digest, OciError};

pub use address::RegistryUrl;
pub use auth::{Credentials, PASSWORD_ENV, USER_ENV};
pub use client::ErrorBody;
pub use pull::{present, PullReport};
pub use push::{PushReport, PushedBlob};

use client::Client;

/// The environment variables of the registry settings that the command line also takes.
pub const REGISTRY_ENV: &str = "ICOS_REGISTRY";
pub const CA_ENV: &str = "ICOS_REGISTRY_CA";

pub(crate) const DOCKER_MANIFEST_MEDIA_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub(crate) const DOCKER_LIST_MEDIA_TYPE: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("no registry configured: set {REGISTRY_ENV} or --registry")]
    NotConfigured,
    #[error("registry URL {url:?}: {problem}")]
    InvalidUrl { url: String, problem: String },
    #[error("repository {name:?}: {problem}")]
    InvalidName { name: String, problem: String },
    #[error("tag {tag:?}: {problem}")]
    InvalidTag { tag: String, problem: String },
    #[error("registry credentials: {problem}")]
    Credentials { problem: String },
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("{method} {url}: {message}")]
    Connection { method: &'static str, url: String, message: String },
    #[error("{method} {url}: HTTP {status}{body}")]
    Status { method: &'static str, url: String, status: u16, body: ErrorBody },
    #[error("{method} {url}: HTTP 401 Unauthorized{body}; {hint}")]
    Unauthorized { method: &'static str, url: String, body: ErrorBody, hint: String },
    #[error("{url}: cannot read the response: {source}")]
    Receive { url: String, source: io::Error },
    #[error("{url}: {problem}")]
    Protocol { url: String, problem: String },
    #[error("{url}: the content's SHA-256 is {actual}, expected {expected}")]
    DigestMismatch { url: String, expected: Digest, actual: Digest },
    #[error("{url}: blob {digest} is {actual}, expected {expected} bytes")]
    SizeMismatch { url: String, digest: Digest, expected: u64, actual: String },
    #[error(
        "{archive}: index.json gives the image no name (org.opencontainers.image.ref.name), so it has no repository"
    )]
    NoName { archive: PathBuf },
    #[error(transparent)]
    Oci(#[from] OciError),
}

/// A registry client: where the registry is, and an HTTP client with its credentials and cached
/// tokens.
pub struct Registry {
    url: RegistryUrl,
    client: Client,
}

impl Registry {
    /// The registry at `url` (`http[s]://host[:port][/prefix]`), authenticated with `credentials`
    /// (see [`Credentials::from_env`]), trusting the system's CA certificates and those in the PEM
    /// file `ca_cert`. Nothing is sent yet.
    pub fn new(url: &str, credentials: Option<Credentials>, ca_cert: Option<&Path>) -> Result<Registry, RegistryError> {
        Ok(Registry { url: RegistryUrl::parse(url)?, client: Client::new(credentials, ca_cert)? })
    }

    pub fn url(&self) -> &RegistryUrl {
        &self.url
    }

    /// `GET /v2/`: checks that the registry answers, speaks the distribution API and takes the
    /// credentials (a registry that wants tokens gets one without a repository scope).
    pub fn check(&mut self) -> Result<(), RegistryError> {
        let url = self.url.api("");
        let response = self.client.send("GET", &url, "", &[], client::Body::Empty)?;
        let _ = client::read_small(response, 1 << 16);
        Ok(())
    }

    /// How many tokens this client fetched from a token server: each repository scope needs one,
    /// and then again only when the registry refuses it.
    pub fn tokens_fetched(&self) -> usize {
        self.client.tokens_fetched
    }
}

/// The token scope of a pull from `repository`, or of a push to it.
fn scope(repository: &str, push: bool) -> String {
    format!("repository:{repository}:{}", if push { "pull,push" } else { "pull" })
}

#[cfg(test)]
mod tests;
