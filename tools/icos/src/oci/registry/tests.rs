//! Push and pull against a small in-process registry that speaks the parts of the distribution
//! API a client sees, behind the token flow (which the real registry of the build-root tests
//! cannot show without a token server): one request per connection, state in memory.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread;

use super::*;
use crate::oci::tests::written;
use crate::oci::{Pin, Store};

const TOKEN: &str = "secret-token";

#[derive(Default)]
struct State {
    blobs: HashMap<String, Vec<u8>>,
    /// (repository, reference) to (content type, bytes).
    manifests: HashMap<(String, String), (String, Vec<u8>)>,
    /// The query strings of token requests.
    token_queries: Vec<String>,
    /// Every request as "METHOD path".
    requests: Vec<String>,
}

struct FakeRegistry {
    url: String,
    state: Arc<Mutex<State>>,
}

struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
    }
}

fn read_request(stream: &TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next()?.to_owned(), parts.next()?.to_owned());
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (key, value) = line.split_once(':')?;
        headers.push((key.trim().to_owned(), value.trim().to_owned()));
    }
    let mut request = Request { method, target, headers, body: Vec::new() };
    let length: usize = request.header("Content-Length").map_or(0, |length| length.parse().unwrap());
    request.body = vec![0; length];
    reader.read_exact(&mut request.body).ok()?;
    Some(request)
}

fn respond(mut stream: &TcpStream, status: u16, headers: &[(&str, String)], body: &[u8]) {
    let mut head = format!("HTTP/1.1 {status} X\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
}

fn api_error(code: &str) -> Vec<u8> {
    let message = code.to_lowercase().replace('_', " ");
    format!(r#"{{"errors":[{{"code":"{code}","message":"{message}"}}]}}"#).into_bytes()
}

impl FakeRegistry {
    fn start() -> FakeRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State::default()));
        let (shared, origin) = (state.clone(), url.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                if let Some(request) = read_request(&stream) {
                    serve(&stream, &request, &mut shared.lock().unwrap(), &origin);
                }
            }
        });
        FakeRegistry { url, state }
    }
}

fn serve(stream: &TcpStream, request: &Request, state: &mut State, origin: &str) {
    let (path, query) = request.target.split_once('?').unwrap_or((&request.target, ""));
    state.requests.push(format!("{} {path}", request.method));
    if path == "/token" {
        state.token_queries.push(query.to_owned());
        return respond(stream, 200, &[], format!(r#"{{"token":"{TOKEN}"}}"#).as_bytes());
    }
    let path = path.strip_prefix("/v2/").unwrap();
    if request.header("Authorization") != Some(&format!("Bearer {TOKEN}")) {
        let challenge = format!(r#"Bearer realm="{origin}/token",service="fake",scope="repository:x:pull""#);
        return respond(stream, 401, &[("WWW-Authenticate", challenge)], &api_error("UNAUTHORIZED"));
    }
    let (repository, rest) = ["/blobs/uploads/", "/blobs/", "/manifests/"]
        .iter()
        .find_map(|&kind| path.split_once(kind).map(|(repository, rest)| (repository.to_owned(), (kind, rest))))
        .unwrap();
    match (request.method.as_str(), rest) {
        ("POST", ("/blobs/uploads/", "")) => {
            // A relative Location with state in its query, as some registries answer.
            let location = format!("/v2/{repository}/blobs/uploads/session-1?_state=a%3Db");
            respond(stream, 202, &[("Location", location)], b"");
        }
        ("PUT", ("/blobs/uploads/", "session-1")) => {
            let digest = query.strip_prefix("_state=a%3Db&digest=").unwrap().replace("%3A", ":");
            assert_eq!(Digest::of(&request.body).to_string(), digest);
            state.blobs.insert(digest, request.body.clone());
            respond(stream, 201, &[], b"");
        }
        ("HEAD" | "GET", ("/blobs/", digest)) => match state.blobs.get(digest) {
            Some(blob) if request.method == "GET" => respond(stream, 200, &[], blob),
            Some(blob) => respond(stream, 200, &[("Content-Length", blob.len().to_string())], b""),
            None => respond(stream, 404, &[], &api_error("BLOB_UNKNOWN")),
        },
        ("PUT", ("/manifests/", reference)) => {
            let content_type = request.header("Content-Type").unwrap_or_default().to_owned();
            let digest = Digest::of(&request.body).to_string();
            state.manifests.insert((repository, reference.to_owned()), (content_type, request.body.clone()));
            respond(stream, 201, &[("Docker-Content-Digest", digest)], b"");
        }
        ("GET", ("/manifests/", reference)) => match state.manifests.get(&(repository, reference.to_owned())) {
            Some((content_type, body)) => respond(stream, 200, &[("Content-Type", content_type.clone())], body),
            None => respond(stream, 404, &[], &api_error("MANIFEST_UNKNOWN")),
        },
        _ => respond(stream, 405, &[], b""),
    }
}

/// The files under `dir`, at any depth: a failed pull must leave none.
fn files_under(dir: &Path) -> Vec<String> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).into_iter().flatten() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path.display().to_string());
        }
    }
    files
}

/// A store in `dir` holding the image of `written`.
fn store_with_image(dir: &Path) -> (Store, Digest) {
    let (archive, image) = written(dir);
    let store = Store::new(dir.join("store"));
    store.put(&archive).unwrap();
    (store, image.digest)
}

#[test]
fn push_and_pull_through_the_token_flow_give_back_the_same_archive() {
    let fake = FakeRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let (store, digest) = store_with_image(dir.path());
    let mut registry = Registry::new(&format!("{}/ic", fake.url), None, None).unwrap();

    let report = registry.push(&store, &digest, Some("latest")).unwrap();
    assert_eq!(report.repository, "ic/guestos-base");
    assert_eq!(report.image.digest, digest);
    assert_eq!(report.blobs.len(), 2);
    assert!(report.blobs.iter().all(|blob| blob.uploaded));
    // One token for the push scope, asked for with the challenge's scope too.
    assert_eq!(registry.tokens_fetched(), 1);
    {
        let state = fake.state.lock().unwrap();
        assert_eq!(
            state.token_queries,
            ["service=fake&scope=repository%3Aic%2Fguestos-base%3Apull%2Cpush&scope=repository%3Ax%3Apull"]
        );
        let manifests = &state.manifests;
        let by_digest = &manifests[&("ic/guestos-base".to_owned(), digest.to_string())];
        assert_eq!(by_digest.0, "application/vnd.oci.image.manifest.v1+json");
        assert_eq!(Digest::of(&by_digest.1), digest);
        assert_eq!(manifests[&("ic/guestos-base".to_owned(), "latest".to_owned())], *by_digest);
    }

    let again = registry.push(&store, &digest, None).unwrap();
    assert!(again.blobs.iter().all(|blob| !blob.uploaded), "{again:?}");
    assert_eq!(again.uploaded(), (0, 0));
    assert_eq!(registry.tokens_fetched(), 1, "the token is cached for the scope");

    let pulled = Store::new(dir.path().join("pulled"));
    let pin = Pin { name: "guestos-base".into(), digest: digest.clone() };
    let mut puller = Registry::new(&format!("{}/ic", fake.url), None, None).unwrap();
    let report = puller.pull(&pulled, &pin).unwrap();
    assert_eq!(report.fetched.as_ref().map(|image| &image.digest), Some(&digest));
    assert_eq!(report.path, pulled.path(&digest));
    assert_eq!(fs::read(&report.path).unwrap(), fs::read(store.path(&digest)).unwrap());
    assert_eq!(puller.tokens_fetched(), 1);

    // The store has it now: nothing is sent.
    let requests = fake.state.lock().unwrap().requests.len();
    let report = puller.pull(&pulled, &pin).unwrap();
    assert_eq!((report.fetched, report.path), (None, pulled.path(&digest)));
    assert_eq!(fake.state.lock().unwrap().requests.len(), requests);
}

#[test]
fn a_damaged_blob_or_an_unknown_manifest_fails_the_pull_and_leaves_nothing() {
    let fake = FakeRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let (store, digest) = store_with_image(dir.path());
    let mut registry = Registry::new(&fake.url, None, None).unwrap();
    registry.push(&store, &digest, None).unwrap();
    let pulled = Store::new(dir.path().join("pulled"));

    let unknown = Digest::of(b"no such image");
    let error = registry.pull(&pulled, &Pin { name: "guestos-base".into(), digest: unknown.clone() }).unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, RegistryError::Status { status: 404, .. }), "{message}");
    assert_eq!(
        message,
        format!("GET {}/v2/guestos-base/manifests/{unknown}: HTTP 404: MANIFEST_UNKNOWN: manifest unknown", fake.url)
    );

    let layer = {
        let mut state = fake.state.lock().unwrap();
        let (layer, bytes) = state.blobs.iter_mut().max_by_key(|(_, bytes)| bytes.len()).unwrap();
        bytes[600] ^= 1;
        layer.clone()
    };
    let error = registry.pull(&pulled, &Pin { name: "guestos-base".into(), digest: digest.clone() }).unwrap_err();
    let message = error.to_string();
    let RegistryError::DigestMismatch { url, expected, actual } = &error else { panic!("{message}") };
    assert_eq!(
        (url.as_str(), expected.to_string()),
        (format!("{}/v2/guestos-base/blobs/{layer}", fake.url).as_str(), layer)
    );
    assert!(message.contains(&actual.to_string()), "{message}");
    assert_eq!(files_under(pulled.dir()), Vec::<String>::new());
}

#[test]
fn a_pin_names_the_repository_of_the_pull() {
    let registry = Registry::new("https://registry.example.org/ic/", None, None).unwrap();
    assert_eq!(registry.url().repository("hostos-base-dev").unwrap(), "ic/hostos-base-dev");
    assert!(matches!(registry.url().repository("a___b"), Err(RegistryError::InvalidName { .. })));
    assert!(matches!(Registry::new("registry.example.org", None, None), Err(RegistryError::InvalidUrl { .. })));
    assert_eq!(scope("ic/a", false), "repository:ic/a:pull");
    assert_eq!(scope("ic/a", true), "repository:ic/a:pull,push");
}

#[test]
fn an_unreachable_registry_names_the_request() {
    // A port that was free a moment ago: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let mut registry = Registry::new(&format!("http://127.0.0.1:{port}"), None, None).unwrap();
    let digest = Digest::of(b"x");
    let error = registry.pull(&Store::new(dir.path()), &Pin { name: "a".into(), digest: digest.clone() }).unwrap_err();
    assert!(matches!(error, RegistryError::Connection { .. }), "{error}");
    let message = error.to_string();
    assert!(message.starts_with(&format!("GET http://127.0.0.1:{port}/v2/a/manifests/{digest}: ")), "{message}");
}
