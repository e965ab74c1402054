//! Where things are in a registry: the configured registry URL, the repository of an image, the
//! URLs of the distribution API, and the upload URL a registry hands back in `Location`.
//!
//! These are composed by hand rather than with a URL library: the forms are few and fixed, and a
//! name is checked against the distribution grammar before it goes into a path, so nothing here
//! ever needs escaping.

use std::fmt;

use super::RegistryError;
use crate::oci::Digest;

/// The distribution reference library (and so every registry built on it) refuses longer
/// repository names.
const MAX_REPOSITORY_LEN: usize = 255;
/// A tag is at most 128 characters: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
const MAX_TAG_LEN: usize = 128;

/// A registry as configured: `http[s]://host[:port][/prefix]`. An image named N lives in the
/// repository `<prefix>/N`, or `N` without a prefix, so that one setting says where all images go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryUrl {
    /// `http` or `https`.
    scheme: &'static str,
    /// `host[:port]`, as given.
    authority: String,
    /// The repository prefix without slashes at its ends; empty for none.
    prefix: String,
}

impl RegistryUrl {
    /// Parses `text`. Credentials, queries and fragments are refused rather than dropped: a URL
    /// that says more than it means here is a mistake worth hearing about.
    pub fn parse(text: &str) -> Result<RegistryUrl, RegistryError> {
        let invalid = |problem: String| RegistryError::InvalidUrl { url: text.to_owned(), problem };
        let (scheme, rest) = if let Some(rest) = strip_prefix_ignore_case(text, "https://") {
            ("https", rest)
        } else if let Some(rest) = strip_prefix_ignore_case(text, "http://") {
            ("http", rest)
        } else {
            return Err(invalid("expected http://HOST[:PORT][/PREFIX] or https://...".into()));
        };
        if let Some(bad) = rest.chars().find(|&c| matches!(c, '?' | '#' | '@') || c.is_whitespace() || c.is_control()) {
            let why = match bad {
                '@' => "credentials do not belong in the URL (set ICOS_REGISTRY_USER and ICOS_REGISTRY_PASSWORD)",
                '?' | '#' => "a registry URL has no query or fragment",
                _ => "white space or control characters",
            };
            return Err(invalid(format!("{bad:?} is not allowed: {why}")));
        }
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        check_authority(authority).map_err(invalid)?;
        let prefix = path.trim_end_matches('/');
        if !prefix.is_empty() {
            for component in prefix.split('/') {
                check_component(component)
                    .map_err(|problem| invalid(format!("the repository prefix {prefix:?}: {problem}")))?;
            }
        }
        Ok(RegistryUrl { scheme, authority: authority.to_owned(), prefix: prefix.to_owned() })
    }

    /// The repository of the image `name`: `<prefix>/<name>`, checked against the distribution
    /// spec's grammar for repository names.
    pub fn repository(&self, name: &str) -> Result<String, RegistryError> {
        let repository = if self.prefix.is_empty() { name.to_owned() } else { format!("{}/{name}", self.prefix) };
        check_repository(&repository)
            .map_err(|problem| RegistryError::InvalidName { name: repository.clone(), problem })?;
        Ok(repository)
    }

    /// `scheme://host[:port]`.
    pub fn origin(&self) -> String {
        format!("{}://{}", self.scheme, self.authority)
    }

    /// The URL of `path` under the API root: `api("r/manifests/d")` is `<origin>/v2/r/manifests/d`.
    pub(crate) fn api(&self, path: &str) -> String {
        format!("{}/v2/{path}", self.origin())
    }
}

impl fmt::Display for RegistryUrl {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}://{}", self.scheme, self.authority)?;
        if !self.prefix.is_empty() {
            write!(formatter, "/{}", self.prefix)?;
        }
        Ok(())
    }
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &text[prefix.len()..])
}

/// Checks `host[:port]`, where host is a name, an IPv4 address or a bracketed IPv6 address.
fn check_authority(authority: &str) -> Result<(), String> {
    let (host, port) = if authority.starts_with('[') {
        let close = authority.find(']').ok_or("an IPv6 address lacks its closing ']'")?;
        let address = &authority[1..close];
        if address.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("{address:?} is not an IPv6 address"));
        }
        let after = &authority[close + 1..];
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or_else(|| format!("{after:?} after the IPv6 address"))?),
        };
        (&authority[..=close], port)
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        if host.is_empty() {
            return Err("the host is missing".into());
        }
        if let Some(bad) = host.chars().find(|&c| !(c.is_ascii_alphanumeric() || c == '-' || c == '.')) {
            return Err(format!("{bad:?} is not allowed in a host name"));
        }
        (host, port)
    };
    if let Some(port) = port {
        if !port.bytes().all(|byte| byte.is_ascii_digit()) || !port.parse::<u16>().is_ok_and(|port| port > 0) {
            return Err(format!("the port {port:?} of {host} is not a number from 1 to 65535"));
        }
    }
    Ok(())
}

/// Checks one `/`-separated component of a repository name against the distribution spec:
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`. Returns what is wrong.
fn check_component(component: &str) -> Result<(), String> {
    let alphanumeric = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !component.starts_with(alphanumeric) || !component.ends_with(alphanumeric) {
        return Err(format!("the component {component:?} does not start and end with a lowercase letter or digit"));
    }
    for separator in component.split(alphanumeric).filter(|run| !run.is_empty()) {
        let valid = matches!(separator, "." | "_" | "__") || separator.bytes().all(|byte| byte == b'-');
        if !valid {
            return Err(match separator.chars().find(|&c| !matches!(c, '.' | '_' | '-')) {
                Some(bad) => {
                    format!("{bad:?} is not allowed (only lowercase letters, digits, '.', '_', '-' and '/')")
                }
                None => format!("the component {component:?} has the separator {separator:?}; one of '.', '_', '__' or dashes is allowed"),
            });
        }
    }
    Ok(())
}

/// Checks a repository name against the distribution spec's grammar: components of
/// [`check_component`] joined by single `/`, at most 255 bytes in all. Returns what is wrong.
pub(crate) fn check_repository(repository: &str) -> Result<(), String> {
    if repository.is_empty() {
        return Err("the name is empty".into());
    }
    if repository.len() > MAX_REPOSITORY_LEN {
        return Err(format!("the repository name is longer than {MAX_REPOSITORY_LEN} bytes"));
    }
    repository.split('/').try_for_each(check_component)
}

/// Checks a tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`. Returns what is wrong.
pub(crate) fn check_tag(tag: &str) -> Result<(), String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    if !tag.starts_with(word) {
        return Err("a tag starts with a letter, a digit or '_'".into());
    }
    if tag.len() > MAX_TAG_LEN {
        return Err(format!("a tag is at most {MAX_TAG_LEN} characters"));
    }
    match tag.chars().find(|&c| !(word(c) || c == '.' || c == '-')) {
        Some(bad) => Err(format!("{bad:?} is not allowed in a tag (only letters, digits, '.', '_' and '-')")),
        None => Ok(()),
    }
}

/// `scheme://authority` of the absolute URL `url`, or None when it is not one.
fn origin_of(url: &str) -> Option<&str> {
    let after_scheme = url.find("://")? + 3;
    let end = url[after_scheme..].find('/').map_or(url.len(), |at| after_scheme + at);
    Some(&url[..end])
}

/// The URL that completes an upload: the `Location` a registry answered `request` (the URL of the
/// POST that started it) with, resolved against that URL, with `digest=<digest>` added to its
/// query. A registry keeps its upload state in that query (`?_state=...`), so the digest is
/// appended with `&` when there already is one, never put in its place.
pub(crate) fn upload_url(request: &str, location: &str, digest: &Digest) -> Result<String, String> {
    if location.is_empty() {
        return Err("the registry answered with an empty Location".into());
    }
    if location.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("the registry answered with the Location {location:?}"));
    }
    let absolute = if strip_prefix_ignore_case(location, "http://").is_some()
        || strip_prefix_ignore_case(location, "https://").is_some()
    {
        location.to_owned()
    } else {
        let origin = origin_of(request).ok_or_else(|| format!("{request:?} is not an absolute URL"))?;
        if let Some(network_path) = location.strip_prefix("//") {
            let scheme = &origin[..origin.find("://").unwrap_or(0)];
            format!("{scheme}://{network_path}")
        } else if location.starts_with('/') {
            format!("{origin}{location}")
        } else {
            // Relative to the directory of the request's path (without its query).
            let path_end = request.find(['?', '#']).unwrap_or(request.len());
            let directory_end =
                request[..path_end].rfind('/').filter(|&at| at >= origin.len()).map_or(path_end, |at| at + 1);
            let base = &request[..directory_end];
            if base.ends_with('/') {
                format!("{base}{location}")
            } else {
                format!("{base}/{location}")
            }
        }
    };
    let (without_fragment, _) = absolute.split_once('#').unwrap_or((&absolute, ""));
    let joiner = match without_fragment.find('?') {
        None => "?",
        Some(_) if without_fragment.ends_with(['?', '&']) => "",
        Some(_) => "&",
    };
    // `:` is written %3A, as form encoding (and Go's url.Values, which registries parse with) has it.
    Ok(format!("{without_fragment}{joiner}digest={}", digest.to_string().replace(':', "%3A")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest() -> Digest {
        Digest::of(b"blob")
    }

    #[test]
    fn registry_urls_give_origin_repository_and_api_urls() {
        let plain = RegistryUrl::parse("http://127.0.0.1:5000").unwrap();
        assert_eq!(plain.origin(), "http://127.0.0.1:5000");
        assert_eq!(plain.repository("guestos-base").unwrap(), "guestos-base");
        assert_eq!(plain.api("guestos-base/blobs/uploads/"), "http://127.0.0.1:5000/v2/guestos-base/blobs/uploads/");
        assert_eq!(plain.to_string(), "http://127.0.0.1:5000");

        let prefixed = RegistryUrl::parse("HTTPS://registry.example.org/ic/os-images/").unwrap();
        assert_eq!(prefixed.origin(), "https://registry.example.org");
        assert_eq!(prefixed.repository("hostos-base-dev").unwrap(), "ic/os-images/hostos-base-dev");
        assert_eq!(prefixed.to_string(), "https://registry.example.org/ic/os-images");
        assert_eq!(RegistryUrl::parse("https://[::1]:443/a").unwrap().origin(), "https://[::1]:443");
        assert_eq!(RegistryUrl::parse("http://localhost/").unwrap().repository("a/b").unwrap(), "a/b");
    }

    #[test]
    fn bad_registry_urls_say_what_is_wrong() {
        for (url, problem) in [
            ("registry.example.org", "expected http://"),
            ("ftp://registry.example.org", "expected http://"),
            ("https://", "host is missing"),
            ("https://:5000", "host is missing"),
            ("https://user:secret@host", "credentials do not belong"),
            ("https://host/?x=1", "no query"),
            ("https://host:0", "port \"0\""),
            ("https://host:65536", "port \"65536\""),
            ("https://host:50a", "port \"50a\""),
            ("https://ho_st", "'_' is not allowed in a host name"),
            ("https://[::1", "closing ']'"),
            ("https://[zz]:1", "not an IPv6 address"),
            ("https://host/Images", "the repository prefix \"Images\""),
            ("https://host/a//b", "the repository prefix"),
            ("https://host name", "white space"),
        ] {
            let error = RegistryUrl::parse(url).unwrap_err().to_string();
            assert!(error.contains(url) && error.contains(problem), "{url}: {error}");
        }
    }

    #[test]
    fn repository_names_follow_the_distribution_grammar() {
        for good in ["a", "ubuntu", "ic/guestos-base", "a__b", "a---b", "a.b_c/d0", "0/1/2"] {
            assert_eq!(check_repository(good), Ok(()), "{good}");
        }
        for (bad, problem) in [
            ("", "empty"),
            ("A", "start and end"),
            ("a/", "start and end"),
            ("/a", "start and end"),
            ("a//b", "start and end"),
            ("a___b", "the separator \"___\""),
            ("a._b", "the separator \"._\""),
            ("a..b", "the separator \"..\""),
            ("a:b", "':' is not allowed"),
            ("a@b", "'@' is not allowed"),
        ] {
            let error = check_repository(bad).unwrap_err();
            assert!(error.contains(problem), "{bad}: {error}");
        }
        assert!(check_repository(&"a".repeat(256)).unwrap_err().contains("255"));
        let prefixed = RegistryUrl::parse(&format!("http://host/{}", "p".repeat(250))).unwrap();
        let error = prefixed.repository("guestos-base").unwrap_err().to_string();
        assert!(error.contains("longer than 255"), "{error}");
    }

    #[test]
    fn tags_follow_the_distribution_grammar() {
        for good in ["latest", "v1.2.3-rc_1", "_x", "A"] {
            assert_eq!(check_tag(good), Ok(()), "{good}");
        }
        for (bad, problem) in [("", "starts with"), (".x", "starts with"), ("a/b", "'/'"), ("a:b", "':'")] {
            let error = check_tag(bad).unwrap_err();
            assert!(error.contains(problem), "{bad}: {error}");
        }
        assert!(check_tag(&"a".repeat(128)).is_ok());
        assert!(check_tag(&"a".repeat(129)).unwrap_err().contains("128"));
    }

    #[test]
    fn locations_are_resolved_and_get_the_digest_in_their_query() {
        let hex = digest().hex().to_owned();
        let post = "http://127.0.0.1:5000/v2/ic/base/blobs/uploads/";
        for (location, expected) in [
            (
                "http://127.0.0.1:5000/v2/ic/base/blobs/uploads/u-1?_state=abc%3D",
                format!("http://127.0.0.1:5000/v2/ic/base/blobs/uploads/u-1?_state=abc%3D&digest=sha256%3A{hex}"),
            ),
            (
                "/v2/ic/base/blobs/uploads/u-1",
                format!("http://127.0.0.1:5000/v2/ic/base/blobs/uploads/u-1?digest=sha256%3A{hex}"),
            ),
            ("/upload?", format!("http://127.0.0.1:5000/upload?digest=sha256%3A{hex}")),
            ("/upload?a=1&", format!("http://127.0.0.1:5000/upload?a=1&digest=sha256%3A{hex}")),
            ("u-2?s=1#frag", format!("http://127.0.0.1:5000/v2/ic/base/blobs/uploads/u-2?s=1&digest=sha256%3A{hex}")),
            ("//uploads.example.org/x", format!("http://uploads.example.org/x?digest=sha256%3A{hex}")),
            ("HTTPS://uploads.example.org/x?y", format!("HTTPS://uploads.example.org/x?y&digest=sha256%3A{hex}")),
        ] {
            assert_eq!(upload_url(post, location, &digest()).unwrap(), expected, "{location}");
        }
        assert_eq!(upload_url("http://host", "u", &digest()).unwrap(), format!("http://host/u?digest=sha256%3A{hex}"));
        assert!(upload_url(post, "", &digest()).unwrap_err().contains("empty"));
        assert!(upload_url(post, "/a b", &digest()).unwrap_err().contains("\"/a b\""));
    }
}
