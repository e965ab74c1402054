//! `icos release fetch`: a bundle downloaded over HTTP(S), resumed where a transfer broke off, then
//! verified and unpacked ([`super::verify`]).
//!
//! The download goes to `<output>.download` and is kept when a transfer fails, so that the next
//! fetch of the same URL asks only for the rest (`Range: bytes=<have>-`; a server that answers
//! 200 instead of 206 sends it all again). Within one fetch a broken transfer is resumed the same
//! way, up to [`ATTEMPTS`] times. Nothing is unpacked before the whole bundle has verified.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{verify, Manifest, ReleaseError, TrustedKey};
use crate::io_error::PathIoError;

/// Transfers of one fetch, the first included.
pub const ATTEMPTS: u32 = 5;
/// How often progress is reported.
const PROGRESS_STEP: u64 = 16 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// What a fetch reports as it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchEvent {
    /// A transfer starts, from byte `from` (not 0 when resuming), of `total` bytes if known.
    Transfer { from: u64, total: Option<u64> },
    /// `bytes` of `total` are downloaded.
    Progress { bytes: u64, total: Option<u64> },
    /// The transfer broke off at `bytes`.
    Interrupted { bytes: u64, problem: String },
    /// The whole bundle is downloaded.
    Downloaded { bytes: u64, elapsed: Duration },
}

/// Where the download of `output` goes.
pub fn download_path(output: &Path) -> PathBuf {
    let mut path = output.as_os_str().to_owned();
    path.push(".download");
    PathBuf::from(path)
}

/// Downloads the bundle at `url`, verifies it against `keys` and unpacks it into `output` (a new
/// directory).
pub fn fetch(
    url: &str,
    keys: &[TrustedKey],
    output: &Path,
    ca_cert: Option<&Path>,
    progress: &mut dyn FnMut(FetchEvent),
) -> Result<Manifest, ReleaseError> {
    if output.exists() {
        return Err(ReleaseError::BadInput { path: output.to_owned(), problem: "it exists already".into() });
    }
    let agent = client(url, ca_cert)?;
    let download = download_path(output);
    let started = Instant::now();
    let bytes = download_resuming(&agent, url, &download, progress)?;
    progress(FetchEvent::Downloaded { bytes, elapsed: started.elapsed() });
    // Complete, the download is of no use once checked: a bundle that does not verify would not
    // verify when resumed either.
    let verified = verify(&download, keys, Some(output));
    fs::remove_file(&download).map_err(PathIoError::with("remove", &download))?;
    verified
}

/// An HTTP(S) client trusting the system's CA certificates and `ca_cert`.
fn client(url: &str, ca_cert: Option<&Path>) -> Result<ureq::Agent, ReleaseError> {
    let tls = crate::tls::tls_config(ca_cert)
        .map_err(|error| ReleaseError::Fetch { url: url.to_owned(), problem: error.to_string() })?;
    Ok(ureq::AgentBuilder::new()
        .tls_config(tls)
        .timeout_connect(CONNECT_TIMEOUT)
        .timeout_read(READ_TIMEOUT)
        .user_agent(concat!("icos/", env!("CARGO_PKG_VERSION")))
        .build())
}

/// Starts the download of `url` and returns its body as a stream, with its length when the
/// server gives it: for a reader that needs no local copy ([`super::stream_signed_file`]).
pub fn open(url: &str, ca_cert: Option<&Path>) -> Result<(Box<dyn Read + Send>, Option<u64>), ReleaseError> {
    let failed = |problem: String| ReleaseError::Fetch { url: url.to_owned(), problem };
    let response = match client(url, ca_cert)?.get(url).call() {
        Ok(response) => response,
        Err(ureq::Error::Status(status, _)) => return Err(failed(format!("the server answered {status}"))),
        Err(ureq::Error::Transport(transport)) => return Err(failed(transport.to_string())),
    };
    let length = response.header("Content-Length").and_then(|value| value.parse().ok());
    Ok((response.into_reader(), length))
}

fn download_resuming(
    agent: &ureq::Agent,
    url: &str,
    download: &Path,
    progress: &mut dyn FnMut(FetchEvent),
) -> Result<u64, ReleaseError> {
    let failed = |problem: String| ReleaseError::Fetch { url: url.to_owned(), problem };
    let mut last_problem = String::new();
    for _ in 0..ATTEMPTS {
        let have = fs::metadata(download).map(|metadata| metadata.len()).unwrap_or(0);
        let mut request = agent.get(url);
        if have > 0 {
            request = request.set("Range", &format!("bytes={have}-"));
        }
        let response = match request.call() {
            Ok(response) => response,
            // All of it is here already.
            Err(ureq::Error::Status(416, _)) if have > 0 => return Ok(have),
            Err(ureq::Error::Status(status, _)) => return Err(failed(format!("the server answered {status}"))),
            Err(ureq::Error::Transport(transport)) => {
                last_problem = transport.to_string();
                progress(FetchEvent::Interrupted { bytes: have, problem: last_problem.clone() });
                continue;
            }
        };
        let length: Option<u64> = response.header("Content-Length").and_then(|value| value.parse().ok());
        let (from, mut file) = match response.status() {
            206 => {
                let range = response.header("Content-Range").unwrap_or_default().to_owned();
                if !range.starts_with(&format!("bytes {have}-")) {
                    return Err(failed(format!("asked for bytes {have}- and got the range {range:?}")));
                }
                let file =
                    fs::OpenOptions::new().append(true).open(download).map_err(PathIoError::with("open", download))?;
                (have, file)
            }
            200 => (0, File::create(download).map_err(PathIoError::with("create", download))?),
            status => return Err(failed(format!("the server answered {status}"))),
        };
        let total = length.map(|length| from + length);
        progress(FetchEvent::Transfer { from, total });
        let mut reader = response.into_reader();
        let mut bytes = from;
        let mut reported = from;
        let mut buffer = vec![0u8; 1 << 16];
        let broke_off = loop {
            match reader.read(&mut buffer) {
                Ok(0) => break None,
                Ok(count) => {
                    file.write_all(&buffer[..count]).map_err(PathIoError::with("write", download))?;
                    bytes += count as u64;
                    if bytes - reported >= PROGRESS_STEP {
                        progress(FetchEvent::Progress { bytes, total });
                        reported = bytes;
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => break Some(error.to_string()),
            }
        };
        file.sync_all().map_err(PathIoError::with("write", download))?;
        match (broke_off, total) {
            (None, Some(total)) if bytes != total => {
                last_problem = format!("the transfer ended at {bytes} of {total} bytes")
            }
            (None, _) => return Ok(bytes),
            (Some(problem), _) => last_problem = problem,
        }
        progress(FetchEvent::Interrupted { bytes, problem: last_problem.clone() });
    }
    Err(failed(format!(
        "{ATTEMPTS} transfers broke off, the last with: {last_problem}; {} is kept, and the next fetch resumes it",
        download.display()
    )))
}
