//! `icos oci push` and `pull` against a real OCI distribution registry: Debian's docker-registry
//! (distribution 2.8), run on a free loopback port with its storage in a temporary directory,
//! over plain HTTP, over HTTPS with a self-signed certificate, and behind htpasswd Basic auth.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use icos::oci::registry::{Credentials, Registry, RegistryError};
use icos::oci::{verify_archive, write_archive, ArchiveOptions, Digest, ImageDigest, Pin, Store};
use icos::rootfs::{InputFormat, Rootfs};

use crate::common::{icos, run, tool};

const NAME: &str = "guestos-base";
const USER: &str = "builder";
const PASSWORD: &str = "correct horse battery staple";

/// How the test registry is set up.
#[derive(Default)]
struct Setup {
    /// Serve HTTPS with a self-signed certificate for 127.0.0.1.
    tls: bool,
    /// Require HTTP Basic auth of USER and PASSWORD (an htpasswd file of bcrypt hashes).
    htpasswd: bool,
}

/// A docker-registry serving on a free loopback port, killed when dropped.
struct TestRegistry {
    child: Child,
    dir: tempfile::TempDir,
    url: String,
    /// The self-signed certificate, for the client to trust (with `tls`).
    ca_cert: Option<PathBuf>,
}

impl TestRegistry {
    fn start(setup: Setup) -> TestRegistry {
        let dir = tempfile::tempdir().unwrap();
        // A port free a moment ago; the registry binds it right away.
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut config = format!(
            "version: 0.1\n\
             log:\n  level: error\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: '{}'\n  delete:\n    enabled: true\n  \
             maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: icos-test-secret\n",
            dir.path().join("storage").display()
        );
        let mut ca_cert = None;
        if setup.tls {
            let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
            let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
            fs::write(&cert, certified.cert.pem()).unwrap();
            fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
            config += &format!("  tls:\n    certificate: '{}'\n    key: '{}'\n", cert.display(), key.display());
            ca_cert = Some(cert);
        }
        if setup.htpasswd {
            let htpasswd = dir.path().join("htpasswd");
            // The lowest bcrypt cost: this only has to be a valid hash, quickly.
            fs::write(&htpasswd, format!("{USER}:{}\n", bcrypt::hash(PASSWORD, 4).unwrap())).unwrap();
            config += &format!("auth:\n  htpasswd:\n    realm: icos-test\n    path: '{}'\n", htpasswd.display());
        }
        let config_path = dir.path().join("config.yml");
        fs::write(&config_path, config).unwrap();
        let log = fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(tool("docker-registry"))
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let scheme = if setup.tls { "https" } else { "http" };
        let mut registry = TestRegistry { child, dir, url: format!("{scheme}://127.0.0.1:{port}"), ca_cert };
        registry.wait_until_ready();
        registry
    }

    /// Waits until `GET /v2/` answers (a 401 of an auth registry is an answer too).
    fn wait_until_ready(&mut self) {
        let mut client = Registry::new(&self.url, None, self.ca_cert.as_deref()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match client.check() {
                Ok(()) | Err(RegistryError::Unauthorized { .. }) => return,
                Err(RegistryError::Connection { .. }) if Instant::now() < deadline => {}
                Err(error) => panic!("the registry does not answer: {error}\n{}", self.log()),
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("docker-registry exited ({status}):\n{}", self.log());
            }
            sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// A client of this registry under the repository prefix `ic`.
    fn client(&self, credentials: Option<Credentials>) -> Registry {
        Registry::new(&format!("{}/ic", self.url), credentials, self.ca_cert.as_deref()).unwrap()
    }

    /// Where the registry keeps the bytes of blob `digest`.
    fn blob_data(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.dir.path().join("storage/docker/registry/v2/blobs/sha256").join(&hex[..2]).join(hex).join("data")
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn credentials() -> Credentials {
    Credentials { user: USER.into(), password: PASSWORD.into() }
}

/// An image archive written by `write_archive` from a small canonical rootfs tar whose layer is
/// larger than the 1 MiB buffers of push and pull, in `dir`.
fn image_archive(dir: &Path) -> (PathBuf, ImageDigest) {
    let big: Vec<u8> = (0u32..3 << 20).map(|index| (index.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in [("etc/motd", &b"hello from the registry test\n"[..]), ("usr/lib/big.bin", &big[..])] {
        let mut header = tar::Header::new_ustar();
        header.set_path(name).unwrap();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1_700_000_000);
        header.set_cksum();
        builder.append(&header, data).unwrap();
    }
    let export = dir.join("export.tar");
    fs::write(&export, builder.into_inner().unwrap()).unwrap();
    let rootfs = Rootfs::read(&export, InputFormat::Tar).unwrap();
    let canonical = dir.join("rootfs.tar");
    rootfs.write_tar_file(&rootfs.whole(), Some(86_400), &canonical, None).unwrap();
    let archive = dir.join("image.oci.tar");
    let image =
        write_archive(&canonical, &archive, &ArchiveOptions { created: 86_400, ..ArchiveOptions::new(NAME) }).unwrap();
    (archive, image)
}

/// Every file under `dir`, at any depth: a failed pull must leave none in the store.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).into_iter().flatten() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// Pushes the image of `archive` to `registry` twice (the second time uploading nothing), pulls
/// it into a fresh store, and checks that the pulled archive is the pushed one, byte for byte.
fn round_trip(registry: &mut Registry, archive: &Path, image: &ImageDigest, work: &Path) {
    let store = Store::new(work.join("store"));
    store.put(archive).unwrap();
    let report = registry.push(&store, &image.digest, Some("latest")).unwrap();
    assert_eq!(report.repository, format!("ic/{NAME}"));
    assert_eq!(report.image, *image);
    assert_eq!(report.blobs.len(), 2, "{report:?}");
    assert!(report.blobs.iter().all(|blob| blob.uploaded), "{report:?}");
    let again = registry.push(&store, &image.digest, None).unwrap();
    assert!(again.blobs.iter().all(|blob| !blob.uploaded), "the second push uploaded: {again:?}");
    assert_eq!(again.uploaded(), (0, 0));
    fs::remove_dir_all(work.join("store")).unwrap();

    let fresh = Store::new(work.join("fresh"));
    let pin = Pin { name: NAME.into(), digest: image.digest.clone() };
    let pulled = registry.pull(&fresh, &pin).unwrap();
    assert_eq!(pulled.fetched.as_ref(), Some(image));
    assert_eq!(pulled.path, fresh.path(&image.digest));
    assert_eq!(verify_archive(&pulled.path, Some(&image.digest)).unwrap(), *image);
    assert_eq!(fs::read(&pulled.path).unwrap(), fs::read(archive).unwrap());
    // Pulling what the store has sends nothing and keeps it.
    let kept = registry.pull(&fresh, &pin).unwrap();
    assert_eq!((kept.fetched, kept.path), (None, pulled.path));
}

#[test]
fn push_and_pull_round_trip_over_http() {
    let server = TestRegistry::start(Setup::default());
    let work = tempfile::tempdir().unwrap();
    let (archive, image) = image_archive(work.path());
    round_trip(&mut server.client(None), &archive, &image, work.path());
}

#[test]
fn the_command_line_pushes_and_pulls_with_the_registry_from_the_environment() {
    let server = TestRegistry::start(Setup::default());
    let work = tempfile::tempdir().unwrap();
    let (archive, image) = image_archive(work.path());
    let store = work.path().join("store");
    Store::new(&store).put(&archive).unwrap();
    let registry = format!("{}/ic", server.url);
    let icos_oci = |args: &[&str]| {
        let mut command = icos();
        command.arg("oci").args(args).arg("--store").arg(&store);
        command.env("ICOS_REGISTRY", &registry).env_remove("ICOS_REGISTRY_USER").env_remove("ICOS_REGISTRY_PASSWORD");
        command
    };
    let digest = image.digest.to_string();
    let pushed = run(&mut icos_oci(&["push", "--tag", "v1", &digest]));
    assert_eq!(String::from_utf8_lossy(&pushed.stdout), format!("ic/{NAME}@{digest}\n"));

    fs::remove_dir_all(&store).unwrap();
    let pin = work.path().join("docker-base.dev");
    fs::write(&pin, format!("# the base image\n{NAME}@{digest}\n")).unwrap();
    let pin_argument = pin.display().to_string();
    let pulled = run(&mut icos_oci(&["pull", "--pin", &pin_argument]));
    let path = Store::new(&store).path(&image.digest);
    assert_eq!(String::from_utf8_lossy(&pulled.stdout), format!("{digest} {}\n", path.display()));
    assert_eq!(fs::read(&path).unwrap(), fs::read(&archive).unwrap());
    // The store has it: no registry is needed, and none is asked.
    let again = run(icos_oci(&["pull", "--pin", &pin_argument]).env_remove("ICOS_REGISTRY"));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already in the store"), "{again:?}");

    let missing = format!("{NAME}@{}", Digest::of(b"not pushed"));
    let output = icos_oci(&["pull", &missing]).env_remove("ICOS_REGISTRY").output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("no registry configured: set ICOS_REGISTRY or --registry"),
        "{output:?}"
    );
}

#[test]
fn failed_pulls_name_the_digest_and_leave_nothing_in_the_store() {
    let server = TestRegistry::start(Setup::default());
    let work = tempfile::tempdir().unwrap();
    let (archive, image) = image_archive(work.path());
    let store = Store::new(work.path().join("store"));
    store.put(&archive).unwrap();
    let mut registry = server.client(None);
    registry.push(&store, &image.digest, None).unwrap();
    let fresh = Store::new(work.path().join("fresh"));

    let unknown = Digest::of(b"an image the registry does not have");
    let error = registry.pull(&fresh, &Pin { name: NAME.into(), digest: unknown.clone() }).unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, RegistryError::Status { status: 404, .. }), "{message}");
    let url = format!("{}/v2/ic/{NAME}/manifests/{unknown}", server.url);
    assert!(message.contains(&url) && message.contains("MANIFEST_UNKNOWN"), "{message}");
    assert_eq!(files_under(fresh.dir()), Vec::<PathBuf>::new());

    // Damage the layer where the registry keeps it: same size, other bytes.
    let layer = layer_digest(&store, &image);
    let data = server.blob_data(&layer);
    let mut bytes = fs::read(&data).unwrap();
    bytes[1000] ^= 0x55;
    fs::write(&data, bytes).unwrap();
    let error = registry.pull(&fresh, &Pin { name: NAME.into(), digest: image.digest.clone() }).unwrap_err();
    let message = error.to_string();
    let RegistryError::DigestMismatch { url, expected, actual } = &error else { panic!("{message}") };
    assert_eq!(url, &format!("{}/v2/ic/{NAME}/blobs/{layer}", server.url));
    assert_eq!(expected, &layer);
    assert!(message.contains(&layer.to_string()) && message.contains(&actual.to_string()), "{message}");
    assert_eq!(files_under(fresh.dir()), Vec::<PathBuf>::new());

    // A manifest that is still valid JSON (the registry parses it before serving it), but not
    // the bytes whose digest names the image: checked before any blob is fetched.
    let manifest = server.blob_data(&image.digest);
    let mut bytes = fs::read(&manifest).unwrap();
    bytes.push(b'\n');
    fs::write(&manifest, bytes).unwrap();
    let error = registry.pull(&fresh, &Pin { name: NAME.into(), digest: image.digest.clone() }).unwrap_err();
    let message = error.to_string();
    assert!(matches!(&error, RegistryError::DigestMismatch { expected, .. } if *expected == image.digest), "{message}");
    assert!(message.contains(&format!("/v2/ic/{NAME}/manifests/{}", image.digest)), "{message}");
    assert_eq!(files_under(fresh.dir()), Vec::<PathBuf>::new());
}

/// The digest of the one layer of `image` in `store`, as its manifest names it.
fn layer_digest(store: &Store, image: &ImageDigest) -> Digest {
    let mut archive = tar::Archive::new(fs::File::open(store.path(&image.digest)).unwrap());
    let name = format!("blobs/sha256/{}", image.digest.hex());
    let mut manifest = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().to_str() == Some(name.as_str()) {
            std::io::Read::read_to_end(&mut entry, &mut manifest).unwrap();
        }
    }
    let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    Digest::parse(manifest["layers"][0]["digest"].as_str().unwrap()).unwrap()
}

#[test]
fn push_and_pull_over_https_trusting_a_self_signed_certificate() {
    let server = TestRegistry::start(Setup { tls: true, ..Setup::default() });
    let work = tempfile::tempdir().unwrap();
    let (archive, image) = image_archive(work.path());
    round_trip(&mut server.client(None), &archive, &image, work.path());

    // Without the certificate the system's CAs do not vouch for the registry.
    let mut untrusting = Registry::new(&server.url, None, None).unwrap();
    let error = untrusting.check().unwrap_err();
    assert!(matches!(error, RegistryError::Connection { .. }), "{error}");
    assert!(error.to_string().to_lowercase().contains("certificate"), "{error}");
}

#[test]
fn push_and_pull_with_basic_auth() {
    let server = TestRegistry::start(Setup { tls: true, htpasswd: true });
    let work = tempfile::tempdir().unwrap();
    let (archive, image) = image_archive(work.path());
    round_trip(&mut server.client(Some(credentials())), &archive, &image, work.path());

    let store = Store::new(work.path().join("anonymous"));
    let pin = Pin { name: NAME.into(), digest: image.digest.clone() };
    let error = server.client(None).pull(&store, &pin).unwrap_err();
    assert!(matches!(error, RegistryError::Unauthorized { .. }), "{error}");
    assert!(error.to_string().contains("set ICOS_REGISTRY_USER and ICOS_REGISTRY_PASSWORD"), "{error}");
    let wrong = Credentials { user: USER.into(), password: "wrong".into() };
    let error = server.client(Some(wrong)).pull(&store, &pin).unwrap_err();
    assert!(error.to_string().contains(&format!("refused the credentials of \"{USER}\"")), "{error}");
    assert_eq!(files_under(store.dir()), Vec::<PathBuf>::new());
}
