//! palisade-image on its own: pulls an image into a layer store and prints what a sandbox (or
//! any overlayfs mount) needs of it, with nothing of the rest of Palisade.
//!
//! ```text
//! cargo run -p palisade-image --example pull -- REF STORE_DIR [--insecure]
//! cargo run -p palisade-image --example pull -- localhost:5000/busybox /tmp/pal-store --insecure
//! ```
//!
//! It prints the layers' directories top first, ready for overlayfs's `lowerdir` option, and the
//! image's default command line; each layer's progress goes to stderr as it arrives.

use std::process::ExitCode;

use palisade_image::{Digest, LayerOutcome, LayerStore, Progress, PullOptions, Reference};

/// Reports each layer on stderr when it is done.
struct Lines;

impl Progress for Lines {
    fn layer_done(&self, layer: &Digest, outcome: LayerOutcome) {
        eprintln!("{layer}: {outcome:?}");
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let insecure = args.iter().any(|a| a == "--insecure");
    let positional: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let [reference, store] = positional[..] else {
        eprintln!("usage: pull REF STORE_DIR [--insecure]");
        return ExitCode::from(2);
    };
    let pulled = reference.parse::<Reference>().and_then(|reference| {
        let store = LayerStore::open(store)?;
        store.pull(&reference, &PullOptions::new().insecure(insecure), &Lines)
    });
    match pulled {
        Ok(image) => {
            println!("manifest {}", image.manifest_digest);
            println!("runs {:?}", image.config.process_args());
            for dir in image.lower_dirs() {
                println!("{}", dir.display());
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("pull: {err}");
            ExitCode::FAILURE
        }
    }
}
