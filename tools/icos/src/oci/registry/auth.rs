//! Authentication to a registry: HTTP Basic with configured credentials, and the token flow of
//! the distribution spec, where a `401` names (in `WWW-Authenticate: Bearer realm=...,
//! service=...,scope=...`) a token server that hands out a token for a repository scope.

use std::env;
use std::fmt;

use base64::Engine as _;

use super::RegistryError;

/// The environment variables that hold the registry credentials. They are read from the
/// environment only, never from the command line, where any user of the machine could see them.
pub const USER_ENV: &str = "ICOS_REGISTRY_USER";
pub const PASSWORD_ENV: &str = "ICOS_REGISTRY_PASSWORD";

/// A user name and password for HTTP Basic authentication, to the registry or its token server.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the password: a Debug of a config can end up in a log.
        formatter.debug_struct("Credentials").field("user", &self.user).finish_non_exhaustive()
    }
}

impl Credentials {
    /// The credentials in `ICOS_REGISTRY_USER` and `ICOS_REGISTRY_PASSWORD`, or None when neither
    /// is set. One without the other is an error rather than anonymous access that then fails
    /// with a puzzling `401`.
    pub fn from_env() -> Result<Option<Credentials>, RegistryError> {
        let read = |name: &'static str| match env::var(name) {
            Ok(value) if value.is_empty() => Ok(None),
            Ok(value) => Ok(Some(value)),
            Err(env::VarError::NotPresent) => Ok(None),
            Err(env::VarError::NotUnicode(_)) => {
                Err(RegistryError::Credentials { problem: format!("{name} is not valid UTF-8") })
            }
        };
        match (read(USER_ENV)?, read(PASSWORD_ENV)?) {
            (Some(user), Some(password)) => Ok(Some(Credentials { user, password })),
            (None, None) => Ok(None),
            (Some(_), None) => {
                Err(RegistryError::Credentials { problem: format!("{USER_ENV} is set but {PASSWORD_ENV} is not") })
            }
            (None, Some(_)) => {
                Err(RegistryError::Credentials { problem: format!("{PASSWORD_ENV} is set but {USER_ENV} is not") })
            }
        }
    }

    /// The value of an `Authorization` header for them.
    pub(crate) fn basic(&self) -> String {
        let pair = format!("{}:{}", self.user, self.password);
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair))
    }
}

/// A challenge of a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    Basic,
    /// Get a token from `realm` (for `service` and `scope`, as query parameters) and retry.
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
    /// A scheme this client does not speak, named.
    Other(String),
}

/// Parses a `WWW-Authenticate` header value (RFC 7235): one or more challenges, each a scheme
/// and `key=value` or `key="quoted value"` parameters, all separated by commas. Quoted values may
/// hold commas (`scope="repository:a:pull,push"`), which is why this is not a split on `,`.
pub(crate) fn parse_challenges(header: &str) -> Result<Vec<Challenge>, String> {
    let mut challenges = Vec::new();
    let mut rest = header.trim_start();
    while !rest.is_empty() {
        let (scheme, after) = token(rest);
        if scheme.is_empty() {
            return Err(format!("{header:?}: expected an authentication scheme at {rest:?}"));
        }
        rest = after.trim_start();
        let mut parameters = Vec::new();
        loop {
            rest = rest.trim_start_matches([',', ' ', '\t']);
            let (key, after) = token(rest);
            let after_key = after.trim_start();
            // A token not followed by '=' starts the next challenge.
            if key.is_empty() || !after_key.starts_with('=') {
                break;
            }
            let value_text = after_key[1..].trim_start();
            let (value, after_value) = if let Some(quoted) = value_text.strip_prefix('"') {
                quoted_string(quoted).ok_or_else(|| format!("{header:?}: an unterminated quoted string"))?
            } else {
                let (value, after) = token(value_text);
                (value.to_owned(), after)
            };
            parameters.push((key.to_ascii_lowercase(), value));
            rest = after_value;
        }
        let parameter = |name: &str| parameters.iter().find(|(key, _)| key == name).map(|(_, value)| value.clone());
        challenges.push(if scheme.eq_ignore_ascii_case("basic") {
            Challenge::Basic
        } else if scheme.eq_ignore_ascii_case("bearer") {
            let realm = parameter("realm").ok_or_else(|| format!("{header:?}: a Bearer challenge without a realm"))?;
            Challenge::Bearer { realm, service: parameter("service"), scope: parameter("scope") }
        } else {
            Challenge::Other(scheme.to_owned())
        });
        if !rest.is_empty() && token(rest).0.is_empty() {
            return Err(format!("{header:?}: unexpected {rest:?}"));
        }
    }
    Ok(challenges)
}

/// Splits an RFC 7230 token off the start of `text`.
fn token(text: &str) -> (&str, &str) {
    let end =
        text.find(|c: char| !(c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~/:".contains(c))).unwrap_or(text.len());
    text.split_at(end)
}

/// The content of a quoted string whose opening quote is already consumed, and what follows it.
fn quoted_string(text: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut characters = text.char_indices();
    while let Some((at, c)) = characters.next() {
        match c {
            '"' => return Some((value, &text[at + 1..])),
            '\\' => value.push(characters.next()?.1),
            _ => value.push(c),
        }
    }
    None
}

/// What a token server answers: the token is `token`, or `access_token` in the OAuth form.
#[derive(serde::Deserialize)]
pub(crate) struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
}

impl TokenResponse {
    pub fn into_token(self) -> Option<String> {
        self.token.or(self.access_token).filter(|token| !token.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(realm: &str, service: Option<&str>, scope: Option<&str>) -> Challenge {
        Challenge::Bearer { realm: realm.into(), service: service.map(Into::into), scope: scope.map(Into::into) }
    }

    #[test]
    fn bearer_challenges_give_realm_service_and_scope() {
        let header = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/debian:pull,push""#;
        assert_eq!(
            parse_challenges(header).unwrap(),
            [bearer(
                "https://auth.docker.io/token",
                Some("registry.docker.io"),
                Some("repository:library/debian:pull,push")
            )]
        );
        // Unquoted values, odd spacing and case, escapes, and no scope.
        assert_eq!(
            parse_challenges(r#"bearer  Realm = http://127.0.0.1:1/token , service="a \"b\"""#).unwrap(),
            [bearer("http://127.0.0.1:1/token", Some("a \"b\""), None)]
        );
        assert_eq!(parse_challenges(r#"Basic realm="Registry Realm""#).unwrap(), [Challenge::Basic]);
        assert_eq!(
            parse_challenges(r#"Basic realm="r", Bearer realm="https://t/token",scope="x:y:pull""#).unwrap(),
            [Challenge::Basic, bearer("https://t/token", None, Some("x:y:pull"))]
        );
        assert_eq!(parse_challenges("Negotiate").unwrap(), [Challenge::Other("Negotiate".into())]);
    }

    #[test]
    fn malformed_challenges_are_errors() {
        for (header, problem) in [
            (r#"Bearer service="s""#, "without a realm"),
            (r#"Bearer realm="unterminated"#, "unterminated"),
            ("=x", "expected an authentication scheme"),
            (r#"Bearer realm="r" ; x"#, "unexpected"),
        ] {
            let error = parse_challenges(header).unwrap_err();
            assert!(error.contains(problem), "{header}: {error}");
        }
        assert_eq!(parse_challenges("").unwrap(), []);
    }

    #[test]
    fn basic_credentials_are_base64_and_never_shown() {
        let credentials = Credentials { user: "Aladdin".into(), password: "open sesame".into() };
        assert_eq!(credentials.basic(), "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        assert!(!format!("{credentials:?}").contains("sesame"));
    }

    #[test]
    fn token_responses_take_either_field() {
        let parse = |json: &str| serde_json::from_str::<TokenResponse>(json).unwrap().into_token();
        assert_eq!(parse(r#"{"token":"t","expires_in":60}"#).as_deref(), Some("t"));
        assert_eq!(parse(r#"{"access_token":"a"}"#).as_deref(), Some("a"));
        assert_eq!(parse(r#"{"token":""}"#), None);
    }
}
