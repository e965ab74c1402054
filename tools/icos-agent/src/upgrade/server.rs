//! The upgrade channel of images nobody logs in to (prod): `icos-agent serve` answers HTTP/1.1 on a
//! TCP port, one request at a time (the next connection waits until an install is done).
//!
//! - `PUT /upgrade` (or `POST`) with a release bundle as the body, its length given
//!   (`Content-Length`; chunked bodies are refused): the bundle is installed as it arrives, as
//!   `upgrade-install URL` installs a download ([`Agent::install_release_stream`]: only a bundle
//!   signed with one of the image's release keys, and not older than the running version), then
//!   committed for the next boot with the default trial deadline. The answer is 200 with the
//!   result; the caller of [`handle`] then reboots the machine into the upgrade, whose trial boot
//!   must confirm itself or fall back.
//! - `GET /status`: the agent's status, as JSON.
//!
//! Anything else gets a status code and one line of text: 422 for a bundle that is refused (its
//! signature, its version, its contents), 409 when the boot state allows no install (an upgrade
//! waiting for its trial boot), 400, 404, 405 or 411 for a request that is not one of the above.
//! The channel needs no secret: what it installs must be signed, so whoever can reach the port can
//! at most install a newer release, and make the machine reboot into it.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use super::{trial, Agent, Committed, InstallEvent, Installed, UpgradeError};

/// The port `icos-agent serve` listens on unless told otherwise.
pub const DEFAULT_PORT: u16 = 8180;
/// The longest request head read: a request line and a few headers.
const MAX_HEAD: u64 = 16 << 10;
/// How long a client may pause while it sends.
const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// What a request did.
#[derive(Debug)]
pub enum Outcome {
    /// An upgrade was installed and committed: the machine should reboot into it.
    Committed(Installed, Committed),
    /// Anything else: a status answered, a request refused.
    Answered,
}

/// An answer: status code, reason, content type and body.
struct Answer {
    status: u16,
    reason: &'static str,
    content_type: &'static str,
    body: String,
}

impl Answer {
    fn text(status: u16, reason: &'static str, body: impl Into<String>) -> Answer {
        let mut body = body.into();
        body.push('\n');
        Answer { status, reason, content_type: "text/plain; charset=utf-8", body }
    }
}

/// The request line and the headers that matter.
#[derive(Debug, PartialEq, Eq)]
struct RequestHead {
    method: String,
    path: String,
    content_length: Option<u64>,
    chunked: bool,
}

/// Reads the request head (up to the empty line) from `reader`.
fn read_head(reader: &mut impl BufRead) -> Result<RequestHead, String> {
    let mut limited = reader.take(MAX_HEAD);
    let mut line = String::new();
    let mut read_line = |line: &mut String| -> Result<(), String> {
        line.clear();
        let count = limited.read_line(line).map_err(|error| format!("cannot read the request: {error}"))?;
        if count == 0 || !line.ends_with('\n') {
            return Err(format!("the request head ends early or is longer than {MAX_HEAD} bytes"));
        }
        Ok(())
    };
    read_line(&mut line)?;
    let mut parts = line.trim_end().split(' ');
    let (Some(method), Some(path), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("not an HTTP request line: {:?}", line.trim_end()));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(format!("{version}: this server speaks HTTP/1.1"));
    }
    let mut head =
        RequestHead { method: method.to_owned(), path: path.to_owned(), content_length: None, chunked: false };
    loop {
        read_line(&mut line)?;
        let header = line.trim_end();
        if header.is_empty() {
            return Ok(head);
        }
        let Some((name, value)) = header.split_once(':') else {
            return Err(format!("not a header: {header:?}"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let length = value.parse().map_err(|_| format!("Content-Length {value:?} is not a number"))?;
            if head.content_length.replace(length).is_some_and(|earlier| earlier != length) {
                return Err("two different Content-Length headers".into());
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = true;
        }
    }
}

/// The status code of an install or commit that failed.
fn refusal_status(error: &UpgradeError) -> (u16, &'static str) {
    match error {
        UpgradeError::WrongCycle { .. } | UpgradeError::OneSlot | UpgradeError::NothingInstalled { .. } => {
            (409, "Conflict")
        }
        UpgradeError::Read { .. }
        | UpgradeError::Write { .. }
        | UpgradeError::GrubEnv(_)
        | UpgradeError::System { .. }
        | UpgradeError::Layout(_)
        | UpgradeError::NoReleaseKeys { .. } => (500, "Internal Server Error"),
        _ => (422, "Unprocessable Content"),
    }
}

/// Answers one connection; `progress` reports an install as it goes.
pub fn handle(
    agent: &Agent,
    stream: TcpStream,
    progress: &mut dyn FnMut(InstallEvent<'_>),
) -> io::Result<(String, u16, Outcome)> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    let peer = stream.peer_addr().map(|address| address.to_string()).unwrap_or_else(|_| "?".into());
    let mut reader = BufReader::new(stream.try_clone()?);
    let (answer, outcome, request) = match read_head(&mut reader) {
        Err(problem) => (Answer::text(400, "Bad Request", problem), Outcome::Answered, "?".to_owned()),
        Ok(head) => {
            let request = format!("{} {}", head.method, head.path);
            let (answer, outcome) = answer(agent, &head, &peer, &mut reader, progress);
            (answer, outcome, request)
        }
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        answer.status,
        answer.reason,
        answer.content_type,
        answer.body.len(),
        answer.body
    )?;
    stream.flush()?;
    Ok((format!("{peer}: {request}"), answer.status, outcome))
}

fn answer(
    agent: &Agent,
    head: &RequestHead,
    peer: &str,
    body: &mut impl Read,
    progress: &mut dyn FnMut(InstallEvent<'_>),
) -> (Answer, Outcome) {
    match (head.method.as_str(), head.path.as_str()) {
        ("GET", "/status") => match agent.status() {
            Ok(status) => {
                let json = serde_json::to_string_pretty(&status).expect("a status serializes");
                (
                    Answer { status: 200, reason: "OK", content_type: "application/json", body: json + "\n" },
                    Outcome::Answered,
                )
            }
            Err(error) => {
                let (code, reason) = refusal_status(&error);
                (Answer::text(code, reason, error.to_string()), Outcome::Answered)
            }
        },
        ("PUT" | "POST", "/upgrade") => {
            let length = match (head.content_length, head.chunked) {
                (Some(length), false) => length,
                _ => {
                    return (
                        Answer::text(411, "Length Required", "send the bundle with a Content-Length, not chunked"),
                        Outcome::Answered,
                    )
                }
            };
            let source = format!("the bundle from {peer}");
            let mut bundle = body.take(length);
            let result = agent
                .install_release_stream(&source, || Ok(&mut bundle), false, progress)
                .and_then(|installed| Ok((installed, agent.upgrade_commit(trial::DEFAULT_TRIAL_TIMEOUT)?)));
            // A client reads the answer once it has sent its body: closing before it has would
            // reset the connection and lose the answer.
            let _ = io::copy(&mut bundle, &mut io::sink());
            match result {
                Ok((installed, committed)) => {
                    let text = format!(
                        "upgrade {} installed in slot {} (sha256 {}) and committed: {committed}",
                        installed.version, installed.slot, installed.sha256
                    );
                    (Answer::text(200, "OK", text), Outcome::Committed(installed, committed))
                }
                Err(error) => {
                    let (code, reason) = refusal_status(&error);
                    (Answer::text(code, reason, error.to_string()), Outcome::Answered)
                }
            }
        }
        (_, "/status" | "/upgrade") => {
            (Answer::text(405, "Method Not Allowed", "GET /status, PUT /upgrade"), Outcome::Answered)
        }
        (_, path) => (Answer::text(404, "Not Found", format!("{path}: GET /status, PUT /upgrade")), Outcome::Answered),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<RequestHead, String> {
        read_head(&mut text.as_bytes())
    }

    #[test]
    fn request_heads_are_read_up_to_the_empty_line_and_malformed_ones_named() {
        assert_eq!(
            head("PUT /upgrade HTTP/1.1\r\nHost: x\r\ncontent-length: 42\r\n\r\nbody").unwrap(),
            RequestHead { method: "PUT".into(), path: "/upgrade".into(), content_length: Some(42), chunked: false }
        );
        let chunked = head("POST /upgrade HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
        assert!(chunked.chunked && chunked.content_length.is_none());
        assert!(head("GET /status HTTP/1.0\n\n").is_ok());
        for (text, problem) in [
            ("", "ends early"),
            ("GET /status\r\n\r\n", "not an HTTP request line"),
            ("GET /status SPDY/3\r\n\r\n", "speaks HTTP/1.1"),
            ("GET /status HTTP/1.1\r\nno colon\r\n\r\n", "not a header"),
            ("PUT /upgrade HTTP/1.1\r\nContent-Length: -1\r\n\r\n", "is not a number"),
            ("PUT /upgrade HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "two different"),
            ("GET /status HTTP/1.1\r\nHost: x\r\n", "ends early"),
        ] {
            let error = head(text).unwrap_err();
            assert!(error.contains(problem), "{text:?}: {error}");
        }
        let long = format!("GET /status HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD as usize));
        assert!(head(&long).unwrap_err().contains("longer than"));
    }
}
