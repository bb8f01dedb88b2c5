//! Helpers of palisade-netns's integration tests (included as `mod common;`, beside
//! `mod support;`): a throwaway "host" namespace, and fake sandboxes.
#![allow(dead_code)]

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

use palisade_netns::ipam::Subnet;
use palisade_netns::link::Netlink;

use crate::support::in_new_netns;

/// Runs `f` in a fresh thread with its own network namespace (lo up), which dies with it.
pub fn in_host<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    in_new_netns(|| {
        Netlink::open().unwrap().set_up("lo").unwrap();
        f()
    })
}

/// A child process, killed and reaped on drop.
pub struct Reaped(pub Child);

impl Reaped {
    /// A fake sandbox: `sleep` in a network namespace of its own.
    pub fn sandbox() -> Reaped {
        let mut cmd = Command::new("sleep");
        cmd.arg("1000");
        // SAFETY: unshare(2) is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::unshare(libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Reaped(cmd.spawn().unwrap())
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// A netlink socket in the process's network namespace.
    pub fn netlink(&self) -> Netlink {
        let ns = File::open(format!("/proc/{}/ns/net", self.pid())).unwrap();
        Netlink::open_in(ns.as_fd()).unwrap()
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn subnet(s: &str) -> Subnet {
    s.parse().unwrap()
}
