//! std interop (issue 17): `Stdio` from std's child pipes, `Command`-like getters, and one
//! builder cloned to serve many spawns.

mod common;

use std::ffi::OsStr;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio as StdStdio};

use common::sh;
use palisade::{Sandbox, Stdio};
use palisade_test_support::{require_root, TempDir};

/// Kills and reaps a std child however the test ends.
struct Reap(std::process::Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_std_childs_stdout_feeds_a_sandbox() {
    require_root!();
    let mut seq = Reap(
        Command::new("seq")
            .arg("5")
            .stdout(StdStdio::piped())
            .spawn()
            .unwrap(),
    );
    let seq_out = seq.0.stdout.take().unwrap();
    let out = Sandbox::builder("wc")
        .arg("-l")
        .stdin(seq_out)
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", out.status);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "5");
    assert!(seq.0.wait().unwrap().success());
}

#[test]
fn a_sandbox_feeds_a_std_childs_stdin_and_stderr() {
    require_root!();
    let mut cat = Reap(
        Command::new("cat")
            .stdin(StdStdio::piped())
            .stdout(StdStdio::piped())
            .spawn()
            .unwrap(),
    );
    let cat_in = cat.0.stdin.take().unwrap();
    let status = sh("echo from-the-sandbox").stdout(cat_in).status().unwrap();
    assert!(status.success(), "{status}");
    // The sandbox's copy of the pipe is closed with it, ours moved into the builder and
    // dropped with it: cat sees end-of-file.
    let mut text = String::new();
    cat.0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(text, "from-the-sandbox\n");

    // A std child's stderr pipe, as the sandbox's stdin.
    let mut noisy = Reap(
        Command::new("sh")
            .args(["-c", "echo on-stderr >&2"])
            .stderr(StdStdio::piped())
            .spawn()
            .unwrap(),
    );
    let noisy_err = noisy.0.stderr.take().unwrap();
    let out = Sandbox::builder("cat")
        .stdin(noisy_err)
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"on-stderr\n");
}

#[test]
fn getters_read_back_what_the_builder_was_told() {
    let mut b = Sandbox::builder("/bin/echo");
    assert_eq!(b.get_program(), "/bin/echo");
    assert_eq!(b.get_args().len(), 0);
    assert_eq!(b.get_envs().len(), 0);
    assert_eq!(b.get_current_dir(), None);
    b.args(["a", "b"])
        .arg("c")
        .env("Z", "26")
        .env("A", "1")
        .env_remove("HOME")
        .current_dir("/srv");
    assert_eq!(b.get_args().collect::<Vec<_>>(), ["a", "b", "c"]);
    assert_eq!(b.get_args().next_back(), Some(OsStr::new("c")));
    assert_eq!(
        b.get_envs().collect::<Vec<_>>(),
        [
            (OsStr::new("A"), Some(OsStr::new("1"))),
            (OsStr::new("HOME"), None),
            (OsStr::new("Z"), Some(OsStr::new("26"))),
        ]
    );
    assert_eq!(b.get_current_dir(), Some(Path::new("/srv")));
    // As with std, env_clear forgets the edits made before it.
    b.env_clear().env("ONLY", "this");
    assert_eq!(
        b.get_envs().collect::<Vec<_>>(),
        [(OsStr::new("ONLY"), Some(OsStr::new("this")))]
    );
    // The same answers std's Command gives for the same calls.
    let mut c = Command::new("/bin/echo");
    c.args(["a", "b"]).arg("c").current_dir("/srv");
    assert!(c.get_args().eq(Sandbox::builder("/bin/echo")
        .args(["a", "b", "c"])
        .get_args()));
    assert_eq!(c.get_current_dir(), b.get_current_dir());
}

#[test]
fn one_builder_cloned_serves_many_spawns() {
    require_root!();
    let dir = TempDir::new("clone");
    let log = dir.path().join("log");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .unwrap();
    let mut template = sh("echo \"$REQUEST\"; hostname");
    template.hostname("worker").stdout(file);
    let mut children = Vec::new();
    for i in 0..10 {
        let mut b = template.clone();
        b.env("REQUEST", format!("request-{i}"));
        assert_eq!(b.get_program(), "sh");
        children.push(b.spawn().unwrap());
    }
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    // The template itself is untouched by its clones' edits, and still spawns.
    assert!(template.get_envs().next().is_none());
    let mut b = template.clone();
    b.stdout(Stdio::piped());
    let out = b.output().unwrap();
    assert_eq!(out.stdout, b"\nworker\n");
    drop(template);
    let mut text = String::new();
    std::fs::File::open(&log)
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    let mut want: Vec<String> = (0..10)
        .flat_map(|i| [format!("request-{i}"), "worker".to_owned()])
        .collect();
    want.sort_unstable();
    assert_eq!(lines, want);
}
