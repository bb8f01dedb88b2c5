//! A registry of the test's own: Debian's `docker-registry` (distribution 2.8) on a loopback
//! port with a temporary storage, and `skopeo` to push images into it, for the tests of every
//! crate that pulls.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::TempDir;

/// Fails the test when a program the tests need is missing: CI installs them, so a missing one
/// is an error, never a reason to skip.
pub fn require_program(name: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{name}` is not installed: the registry tests need it (apt-get install {package})"
    );
}

/// A free loopback port: bound to port 0 and released (the registry binds it right after).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("local address").port()
}

/// A `docker-registry serve` of its own: temporary storage, loopback port, `info` logs in a
/// file. Killed and reaped on drop.
pub struct Registry {
    child: Child,
    port: u16,
    dir: TempDir,
    sentinel: AtomicUsize,
}

impl Registry {
    /// Starts a registry on a free loopback port; fails the test if it does not answer.
    pub fn start() -> Registry {
        require_program("docker-registry", "docker-registry");
        require_program("skopeo", "skopeo");
        let mut last_log = String::new();
        for _ in 0..5 {
            let dir = TempDir::new("registry");
            let port = free_port();
            let config = dir.path().join("config.yml");
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    \
                     rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                    dir.path().join("storage").display()
                ),
            )
            .expect("write the registry config");
            let log = std::fs::File::create(dir.path().join("registry.log")).expect("log file");
            let child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("dup the log file"))
                .stderr(log)
                .spawn()
                .expect("start docker-registry");
            let mut child = child;
            if wait_ready(&mut child, port) {
                return Registry {
                    child,
                    port,
                    dir,
                    sentinel: AtomicUsize::new(0),
                };
            }
            // Most likely the port was taken meanwhile: try another.
            let _ = child.kill();
            let _ = child.wait();
            last_log = std::fs::read_to_string(dir.path().join("registry.log")).unwrap_or_default();
        }
        panic!("docker-registry did not start; its last log:\n{last_log}");
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The registry's address.
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Waits until every request answered so far is in the log: a request of its own is made
    /// and waited for in the log (the registry logs a request after answering it).
    pub fn sync_log(&self) {
        let n = self.sentinel.fetch_add(1, Ordering::Relaxed);
        let path = format!("/v2/?sentinel={n}");
        let mut s = TcpStream::connect(self.socket_addr()).expect("connect to the registry");
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr()
        );
        s.write_all(req.as_bytes()).expect("send");
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        for _ in 0..400 {
            if self.log().contains(&format!("\"GET {path} ")) {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("the registry never logged {path}");
    }

    /// The blob GETs of repository `name` logged so far (the digests, in order).
    pub fn blob_gets(&self, name: &str) -> Vec<String> {
        self.sync_log();
        let needle = format!("\"GET /v2/{name}/blobs/");
        self.log()
            .lines()
            .filter_map(|l| l.split_once(&needle).map(|(_, rest)| rest))
            .filter_map(|rest| rest.split(' ').next())
            .map(str::to_owned)
            .collect()
    }

    /// How many manifest GETs of repository `name` were logged.
    pub fn manifest_gets(&self, name: &str) -> usize {
        self.sync_log();
        let needle = format!("\"GET /v2/{name}/manifests/");
        self.log().lines().filter(|l| l.contains(&needle)).count()
    }

    /// The file holding a blob in the registry's storage (distribution's filesystem driver).
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Pushes the image tagged `tag` of the OCI layout `layout` as `name:tag`.
    pub fn push(&self, layout: &Path, tag: &str, name: &str) {
        self.push_with(layout, tag, name, &[]);
    }

    /// [`push`](Self::push) with more options of `skopeo copy`, such as `--format v2s2` (Docker
    /// v2 schema 2 manifests and media types).
    pub fn push_with(&self, layout: &Path, tag: &str, name: &str, options: &[&str]) {
        let source = format!("oci:{}:{tag}", layout.display());
        let destination = format!("docker://{}/{name}:{tag}", self.addr());
        let mut args = vec!["copy", "--quiet", "--dest-tls-verify=false"];
        args.extend_from_slice(options);
        args.extend([source.as_str(), destination.as_str()]);
        skopeo(&args, self.dir.path());
    }
}

/// Runs `skopeo --insecure-policy ARGS` (the tests need it and CI installs it: a missing skopeo
/// fails the test, saying what to install), with `scratch` as its home and temporary directory.
///
/// skopeo keeps a blob-info cache under `/var/lib/containers/cache` when it runs as root (and
/// under `$HOME/.local/share/containers` otherwise): it runs where that is a throwaway place, a
/// tmpfs over `/var/lib` in a mount namespace of its own for root (`unshare -m` makes its mounts
/// private), a temporary `HOME` otherwise, so that the host's files are never touched.
pub fn skopeo(args: &[&str], scratch: &Path) {
    require_program("skopeo", "skopeo");
    let home = scratch.join("skopeo-home");
    let mut cmd = if crate::is_root() {
        let mut c = Command::new("unshare");
        c.args(["-m", "--", "sh", "-c"])
            .arg(
                "mount -t tmpfs -o mode=0700,size=64m palisade-skopeo /var/lib && \
                 exec skopeo \"$@\"",
            )
            .arg("sh");
        c
    } else {
        Command::new("skopeo")
    };
    let out = cmd
        .arg("--insecure-policy")
        .args(args)
        .env("HOME", &home)
        .env("XDG_DATA_HOME", home.join("data"))
        .env("TMPDIR", scratch)
        .stdin(Stdio::null())
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until the registry on `port` answers `GET /v2/`; false if it exits or never does.
fn wait_ready(child: &mut Child, port: u16) -> bool {
    for _ in 0..200 {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let req = format!(
                "GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
                port
            );
            let mut answer = String::new();
            if s.write_all(req.as_bytes()).is_ok()
                && s.read_to_string(&mut answer).is_ok()
                && answer.starts_with("HTTP/1.1 200")
            {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}
