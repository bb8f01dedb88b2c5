//! The sandbox's threat model, as attacks against the real kernel.
//!
//! Each module is one class of escape that an attacker's audit found (issue 11). Every test does
//! the attack for real, as root, and asserts that it fails; where it makes sense a positive
//! control turns the protection off on purpose and shows that the same probe then succeeds, so
//! the assertion cannot pass by accident.
//!
//! | module | the attack |
//! |---|---|
//! | `store` | a host user runs an image's setuid-root file straight from the layer store; a small layer expands to fill the disk; a layer ships device nodes |
//! | `fds` | a directory the caller holds open without `O_CLOEXEC` becomes the working directory, or is climbed with `/proc/self/fd/N/..` or `openat(N, "..")` |
//! | `init` | a command with `CAP_SYS_PTRACE` reads the caller's secrets in PID 1's memory; PID 1 shows the caller's argv and environment, holds more capabilities than the command, lacks `no_new_privs` and a filter |
//! | `mounts` | an image's `/proc`, `/sys` or `/dev` is a link out of its root; a volume or tmpfs target passes through a link (the image's, or the host's `/var/run`) |
//! | `devices` | the command `mknod`s a host block device and reads it; an image ships device nodes that open for an unprivileged user; a command that may mount makes a file system without `nodev` for its nodes; an unprivileged caller's sandbox, which has no device policy, makes device nodes |
//! | `seccomp` | a profile refuses every call, or suspends `execve` with nobody listening: the spawn hangs |
//! | `lifetime` | the sandbox dies with the thread that spawned it; outlives its caller's SIGKILL, and so does a command run in it with `Child::exec`; leaves its cgroups behind |
//! | `network` | a killed caller's published-port rules stay, and send its port's traffic to the next sandbox given its address |
//! | `net_forwarder` | a flood of connections to a published port takes every descriptor of the caller |
//! | `net_nat` | the LAN reaches a loopback publish, or a sandbox's ports through a route to its subnet; one network reaches another; a sandbox reaches its neighbour on an isolated bridge, over the bridge or through the host; a publish takes over a live sandbox's; a thousand ports; a hand-made SYN to `127.0.0.1` from the LAN |
//! | `net_l2` | a sandbox given `CAP_NET_RAW` forges frames on its bridge: a gratuitous ARP for the gateway's or another sandbox's address, a made-up MAC or source address, VLAN-tagged frames, an IPv6 router advertisement that would give the host's bridge and the other sandboxes an address and a default route |
//! | `net_state` | an emptied or corrupt bridge state file hands a running sandbox's address to the next, whose end takes the first's `eth0`; a corrupt state at teardown turns the exit status into an error |
//! | `defaults` | the caller's environment and the host's secrets and home directories reach a default sandbox |
//! | `input` | hostnames that are none, a memory limit too small to start, a volume mode that is none, a sysctl with the host's network namespace joined by path |
//! | `state` | a named sandbox's command writes a forged status through PID 1's descriptor of its record; a started program keeps the start gate; a stale record's pid signals whoever has that pid now; a link planted at a name's place makes the record elsewhere |
//! | `exhaustion` | a sandbox writes until the host's memory is gone, through its throwaway layer or `/tmp` |
//! | `joins` | a spawn into a pod's PID namespace leaves the caller's thread making its later children there, where the pod sees and signals them |
//! | `image_user` | an image's `/etc/passwd`, `/etc/group` or `/etc` links to the host's so that its `User` resolves to host users; a whiteout of `/etc/passwd` is ignored; a link loop, a FIFO or a huge passwd hangs or floods the build |
//! | `mount_options` | an id-mapped volume hands the sandbox more than the volume's owner has (root's files, chown, creating as root); a tmpfs path full of option text injects mount options; a rootless sandbox's mount points, made through `/lib` or under `/usr/local`, appear on the host |

mod common;

/// The network tests' throwaway host, fake sandboxes and LAN peer, shared with palisade-netns.
#[path = "../../netns/tests/common/mod.rs"]
mod netcommon;

#[path = "escapes/store.rs"]
mod store;

#[path = "escapes/fds.rs"]
mod fds;

#[path = "escapes/init.rs"]
mod init;

#[path = "escapes/mounts.rs"]
mod mounts;

#[path = "escapes/devices.rs"]
mod devices;

#[path = "escapes/seccomp.rs"]
mod seccomp;

#[path = "escapes/lifetime.rs"]
mod lifetime;

#[path = "escapes/defaults.rs"]
mod defaults;

#[path = "escapes/input.rs"]
mod input;

#[path = "escapes/exhaustion.rs"]
mod exhaustion;

#[path = "escapes/state.rs"]
mod state;

#[path = "escapes/joins.rs"]
mod joins;

#[path = "escapes/network.rs"]
mod network;

#[path = "escapes/net_state.rs"]
mod net_state;

#[path = "escapes/net_l2.rs"]
mod net_l2;

#[path = "escapes/net_forwarder.rs"]
mod net_forwarder;

#[path = "escapes/net_nat.rs"]
mod net_nat;

#[path = "escapes/image_user.rs"]
mod image_user;

#[path = "escapes/mount_options.rs"]
mod mount_options;
