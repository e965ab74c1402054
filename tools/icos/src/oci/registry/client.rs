//! The HTTP side of the registry client: one ureq agent (rustls, the system's CA certificates and
//! an optional extra CA file), authentication (Basic, and Bearer tokens cached per repository
//! scope), and registry errors turned into [`RegistryError`]s that name the request and show what
//! the registry said.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::time::Duration;

use super::auth::{parse_challenges, Challenge, Credentials, TokenResponse, PASSWORD_ENV, USER_ENV};
use super::RegistryError;
use crate::rootfs::stream::Section;
use crate::tls::tls_config;

/// A registry that does not answer a connection attempt within this is taken to be down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest a registry may leave one read or write of a socket waiting; a whole transfer may
/// take longer (a multi-gigabyte layer does).
const IO_TIMEOUT: Duration = Duration::from_secs(300);
/// How much of an error response or a token response is read: they are small JSON documents.
const MAX_SMALL_BODY: u64 = 1 << 20;
/// How much of an error body a message shows when it is not the distribution API's JSON.
const MAX_SHOWN_TEXT: usize = 200;

/// The body of a request. A file section can be sent twice (after a 401), unlike a reader.
#[derive(Clone, Copy)]
pub(crate) enum Body<'a> {
    Empty,
    Bytes(&'a [u8]),
    /// `size` bytes of `file` from `offset`: a blob inside an archive, streamed from the disk.
    File {
        file: &'a File,
        offset: u64,
        size: u64,
    },
}

/// What a registry said about an error: the codes and messages of a distribution API error body
/// (`{"errors":[{"code":..,"message":..}]}`), else the start of its text; shown after a colon,
/// or not at all when the body was empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorBody(String);

#[derive(serde::Deserialize)]
struct ApiErrors {
    errors: Vec<ApiError>,
}

#[derive(serde::Deserialize)]
struct ApiError {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

impl ErrorBody {
    pub(crate) fn parse(bytes: &[u8]) -> ErrorBody {
        if let Ok(ApiErrors { errors }) = serde_json::from_slice::<ApiErrors>(bytes) {
            if !errors.is_empty() {
                let each = errors.iter().map(|error| match (error.code.is_empty(), error.message.is_empty()) {
                    (false, false) => format!("{}: {}", error.code, error.message),
                    (false, true) => error.code.clone(),
                    (true, _) => error.message.clone(),
                });
                return ErrorBody(each.collect::<Vec<_>>().join("; "));
            }
        }
        let text = String::from_utf8_lossy(bytes);
        let words = text.split_whitespace().collect::<Vec<_>>().join(" ");
        match words.char_indices().nth(MAX_SHOWN_TEXT) {
            Some((cut, _)) => ErrorBody(format!("{}...", &words[..cut])),
            None => ErrorBody(words),
        }
    }
}

impl fmt::Display for ErrorBody {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            Ok(())
        } else {
            write!(formatter, ": {}", self.0)
        }
    }
}

/// A transport error without the URL that ureq puts first: the caller names the request.
fn transport_message(transport: &ureq::Transport) -> String {
    let mut message = transport.kind().to_string();
    if let Some(detail) = transport.message() {
        message.push_str(&format!(": {detail}"));
    }
    if let Some(source) = std::error::Error::source(transport) {
        message.push_str(&format!(": {source}"));
    }
    message
}

/// Reads at most `limit` bytes of `response`.
pub(crate) fn read_small(response: ureq::Response, limit: u64) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    response.into_reader().take(limit).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The error for an answer `status` to `method url`, with what the registry said in its body.
fn status_error(method: &'static str, url: &str, status: u16, response: ureq::Response) -> RegistryError {
    // A body that cannot be read is one the registry did not manage to send: show none.
    let body = ErrorBody::parse(&read_small(response, MAX_SMALL_BODY).unwrap_or_default());
    RegistryError::Status { method, url: url.to_owned(), status, body }
}

/// An HTTP client for one registry and its token server.
pub(crate) struct Client {
    agent: ureq::Agent,
    credentials: Option<Credentials>,
    /// Bearer tokens by the scope they were asked for (`repository:<name>:pull,push`).
    tokens: HashMap<String, String>,
    /// How many tokens were fetched: tests see the cache work through it.
    pub tokens_fetched: usize,
}

impl Client {
    pub fn new(credentials: Option<Credentials>, ca_cert: Option<&Path>) -> Result<Client, RegistryError> {
        let agent = ureq::AgentBuilder::new()
            .tls_config(tls_config(ca_cert)?)
            .timeout_connect(CONNECT_TIMEOUT)
            .timeout_read(IO_TIMEOUT)
            .timeout_write(IO_TIMEOUT)
            .user_agent(concat!("icos/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Client { agent, credentials, tokens: HashMap::new(), tokens_fetched: 0 })
    }

    /// Sends `method url` with `headers` and `body`, authenticated for `scope`, and returns a
    /// successful (2xx) response. GET and HEAD follow redirects (blob downloads often end on a
    /// storage service), without the `Authorization` header.
    ///
    /// Authentication: a cached token for `scope` if there is one, else the Basic credentials if
    /// configured. A `401` with a Bearer challenge fetches a token for `scope` from the realm (with
    /// the Basic credentials, if any) and sends once more: that also renews an expired token.
    pub fn send(
        &mut self,
        method: &'static str,
        url: &str,
        scope: &str,
        headers: &[(&str, &str)],
        body: Body<'_>,
    ) -> Result<ureq::Response, RegistryError> {
        let mut retried = false;
        loop {
            let authorization = match self.tokens.get(scope) {
                Some(token) => Some(format!("Bearer {token}")),
                None => self.credentials.as_ref().map(Credentials::basic),
            };
            let mut request = self.agent.request(method, url);
            for (name, value) in headers {
                request = request.set(name, value);
            }
            if let Some(authorization) = &authorization {
                request = request.set("Authorization", authorization);
            }
            let result = match body {
                Body::Empty => request.call(),
                Body::Bytes(bytes) => request.send_bytes(bytes),
                Body::File { file, offset, size } => {
                    request.set("Content-Length", &size.to_string()).send(Section::new(file, offset, size))
                }
            };
            match result {
                Ok(response) if (200..300).contains(&response.status()) => return Ok(response),
                Ok(response) => {
                    let status = response.status();
                    return Err(status_error(method, url, status, response));
                }
                Err(ureq::Error::Status(401, response)) => {
                    let challenges: Vec<Challenge> = response
                        .all("WWW-Authenticate")
                        .into_iter()
                        .filter_map(|header| parse_challenges(header).ok())
                        .flatten()
                        .collect();
                    let bearer = challenges.into_iter().find_map(|challenge| match challenge {
                        Challenge::Bearer { realm, service, scope } => Some((realm, service, scope)),
                        _ => None,
                    });
                    match bearer {
                        Some((realm, service, challenge_scope)) if !retried => {
                            let token =
                                self.fetch_token(&realm, service.as_deref(), scope, challenge_scope.as_deref())?;
                            self.tokens.insert(scope.to_owned(), token);
                            retried = true;
                        }
                        _ => {
                            let hint = match &self.credentials {
                                None => format!("the registry needs credentials: set {USER_ENV} and {PASSWORD_ENV}"),
                                Some(credentials) => format!(
                                    "the registry refused the credentials of {:?} ({USER_ENV}, {PASSWORD_ENV})",
                                    credentials.user
                                ),
                            };
                            let body = ErrorBody::parse(&read_small(response, MAX_SMALL_BODY).unwrap_or_default());
                            return Err(RegistryError::Unauthorized { method, url: url.to_owned(), body, hint });
                        }
                    }
                }
                Err(ureq::Error::Status(status, response)) => return Err(status_error(method, url, status, response)),
                Err(ureq::Error::Transport(transport)) => {
                    return Err(RegistryError::Connection {
                        method,
                        url: url.to_owned(),
                        message: transport_message(&transport),
                    })
                }
            }
        }
    }

    /// A token for `scope` (and the challenge's own scope, when it differs; none when both are
    /// empty) from the token server at `realm`, as the distribution token flow has it:
    /// `GET realm?service=..&scope=..`.
    fn fetch_token(
        &mut self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        challenge_scope: Option<&str>,
    ) -> Result<String, RegistryError> {
        let protocol = |problem: String| RegistryError::Protocol { url: realm.to_owned(), problem };
        let lower = realm.to_ascii_lowercase();
        if !lower.starts_with("https://") && !lower.starts_with("http://") {
            return Err(protocol("the token realm of the registry's challenge is not an http(s) URL".into()));
        }
        let mut request = self.agent.get(realm);
        if let Some(service) = service {
            request = request.query("service", service);
        }
        if !scope.is_empty() {
            request = request.query("scope", scope);
        }
        if let Some(other) = challenge_scope.filter(|&other| other != scope && !other.is_empty()) {
            request = request.query("scope", other);
        }
        if let Some(credentials) = &self.credentials {
            request = request.set("Authorization", &credentials.basic());
        }
        let url = request.url().to_owned();
        let response = match request.call() {
            Ok(response) => response,
            Err(ureq::Error::Status(status, response)) => return Err(status_error("GET", &url, status, response)),
            Err(ureq::Error::Transport(transport)) => {
                return Err(RegistryError::Connection { method: "GET", url, message: transport_message(&transport) })
            }
        };
        let bytes = read_small(response, MAX_SMALL_BODY)
            .map_err(|source| RegistryError::Receive { url: url.clone(), source })?;
        let token =
            serde_json::from_slice::<TokenResponse>(&bytes).ok().and_then(TokenResponse::into_token).ok_or_else(
                || RegistryError::Protocol { url, problem: "the token server answered without a token".into() },
            )?;
        self.tokens_fetched += 1;
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_show_codes_and_messages() {
        let body = ErrorBody::parse(
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"x"}},{"code":"DENIED","message":""}]}"#,
        );
        assert_eq!(body.to_string(), ": MANIFEST_UNKNOWN: manifest unknown; DENIED");
        assert_eq!(ErrorBody::parse(br#"{"errors":[{"message":"only a message"}]}"#).to_string(), ": only a message");
        assert_eq!(ErrorBody::parse(b"").to_string(), "");
        assert_eq!(ErrorBody::parse(b"  \n").to_string(), "");
        assert_eq!(
            ErrorBody::parse(b"<html>\n  <body>Bad   Gateway</body>\n</html>").to_string(),
            ": <html> <body>Bad Gateway</body> </html>"
        );
        assert_eq!(ErrorBody::parse(br#"{"errors":[]}"#).to_string(), r#": {"errors":[]}"#);
        let long = ErrorBody::parse("é".repeat(300).as_bytes()).to_string();
        assert_eq!(long, format!(": {}...", "é".repeat(MAX_SHOWN_TEXT)));
        let status = RegistryError::Status {
            method: "GET",
            url: "http://r/v2/a/manifests/sha256:00".into(),
            status: 404,
            body: ErrorBody::parse(br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#),
        };
        assert_eq!(
            status.to_string(),
            "GET http://r/v2/a/manifests/sha256:00: HTTP 404: MANIFEST_UNKNOWN: manifest unknown"
        );
    }
}
