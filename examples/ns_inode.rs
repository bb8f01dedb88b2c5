//! Starts two sandboxes and prints, for each namespace kind, whether they share it, comparing the
//! (device, inode) identity of `/proc/<pid>/ns/<kind>` as `ls -l /proc/<pid>/ns` shows it.
//!
//! ```text
//! cargo run --release --example ns_inode            # default namespaces (needs root)
//! cargo run --release --example ns_inode -- --rootless
//! ```
//!
//! Kinds the sandboxes do not unshare are shared with the host, and so with each other.

use palisade::ns::NsId;
use palisade::{Namespace, Sandbox, Stdio};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rootless = std::env::args().any(|a| a == "--rootless");
    let mut builder = Sandbox::builder("cat");
    builder.stdin(Stdio::piped());
    if rootless {
        builder.rootless();
    }
    let sandbox = builder.build()?;
    let (a, b) = (sandbox.spawn()?, sandbox.spawn()?);
    println!("sandbox A: pid {}, sandbox B: pid {}", a.id(), b.id());
    println!("{:<8} {:<22} {:<22} shared", "kind", "A", "B");
    for kind in Namespace::JOIN_ORDER {
        let ia = NsId::of(a.id() as i32, kind)?;
        let ib = NsId::of(b.id() as i32, kind)?;
        let shared = if ia == ib { "yes" } else { "no" };
        println!(
            "{:<8} {:<22} {:<22} {shared}",
            kind.to_string(),
            ia.to_string(),
            ib.to_string()
        );
    }
    // Dropping the handles kills and reaps both sandboxes.
    Ok(())
}
