//! OCI image layouts without docker: builds a two-layer busybox image, imports images into the
//! layer store, and shows which layers images share.
//!
//! ```text
//! cargo run --example image -- build-busybox DIR [--tag TAG]
//! cargo run --example image -- import DIR[:TAG] [--store STORE_DIR]
//! cargo run --example image -- list [--store STORE_DIR]
//!
//! cargo run --example image -- build-busybox /tmp/bb && cargo run --example image -- import /tmp/bb
//! cargo run --example run -- --image /tmp/bb -- sh -c 'ls /data; cat /etc/palisade-top'
//! ```
//!
//! `build-busybox` needs the host's static busybox, `/bin/busybox` (Debian: `apt-get install
//! busybox-static`). Its base layer holds busybox, a few applet links and the usual top-level
//! directories; its top layer deletes `/etc/palisade-base` (a whiteout) and replaces the
//! contents of `/data` (an opaque directory). Layers are built deterministically, so building
//! twice gives the same digests and the store unpacks each layer once. The store defaults to
//! `$PALISADE_STORE`, else `/var/lib/palisade/layers`.

use std::collections::BTreeSet;
use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use palisade::image::{ImageConfig, LayerBuilder, LayerStore, LayoutWriter};

/// Build, import and list OCI images.
#[derive(Debug, Parser)]
#[command(name = "image", version)]
struct Options {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build a two-layer OCI image layout in DIR from the host's static /bin/busybox.
    BuildBusybox {
        /// The layout directory (absent or empty).
        dir: PathBuf,
        /// The image's tag (`org.opencontainers.image.ref.name`).
        #[arg(long, default_value = "latest")]
        tag: String,
    },
    /// Import an image into the layer store and list its layers, top first.
    Import {
        /// The OCI image layout, with the image's tag if it holds several.
        #[arg(value_name = "DIR[:TAG]")]
        image: String,
        /// The layer store (default: $PALISADE_STORE or /var/lib/palisade/layers).
        #[arg(long, value_name = "STORE_DIR")]
        store: Option<PathBuf>,
    },
    /// List the layers in the store.
    List {
        /// The layer store (default: $PALISADE_STORE or /var/lib/palisade/layers).
        #[arg(long, value_name = "STORE_DIR")]
        store: Option<PathBuf>,
    },
}

/// The applets the base layer links to busybox.
const APPLETS: &[&str] = &[
    "sh", "ls", "cat", "echo", "id", "hostname", "ps", "mount", "grep", "wc", "sleep", "true",
    "false", "env", "uname", "head", "tail", "touch", "rm", "mkdir",
];

const BUSYBOX: &str = "/bin/busybox";

fn main() -> ExitCode {
    let result = match Options::parse().command {
        Command::BuildBusybox { dir, tag } => {
            let fresh = !dir.exists();
            let built = build_busybox(&dir, &tag);
            if built.is_err() && fresh {
                // Leave no half-written layout behind.
                let _ = std::fs::remove_dir_all(&dir);
            }
            built
        }
        Command::Import { image, store } => import(&image, store),
        Command::List { store } => list(store),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("image: {err}");
            ExitCode::FAILURE
        }
    }
}

fn build_busybox(dir: &Path, tag: &str) -> Result<(), Box<dyn Error>> {
    check_static(Path::new(BUSYBOX))?;

    let mut base = LayerBuilder::new();
    base.dir("/", 0o755).dir("/bin", 0o755);
    base.file_from(BUSYBOX, BUSYBOX, 0o755);
    for applet in APPLETS {
        base.symlink(format!("/bin/{applet}"), "busybox");
    }
    for (dir, mode) in [
        ("/dev", 0o755),
        ("/proc", 0o555),
        ("/sys", 0o555),
        ("/tmp", 0o1777),
        ("/root", 0o700),
        ("/etc", 0o755),
    ] {
        base.dir(dir, mode);
    }
    base.file("/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n", 0o644)
        .file("/etc/group", "root:x:0:\n", 0o644)
        .file("/etc/hostname", "palisade\n", 0o644)
        .file("/etc/palisade-base", "from the base layer\n", 0o644)
        .dir("/data", 0o755)
        .file("/data/a", "a\n", 0o644)
        .file("/data/b", "b\n", 0o644);

    let mut top = LayerBuilder::new();
    top.dir("/etc", 0o755)
        .whiteout("/etc/palisade-base")
        .file("/etc/palisade-top", "from the top layer\n", 0o644)
        .dir("/data", 0o755)
        .opaque("/data")
        .file("/data/c", "c\n", 0o644);

    let mut config = ImageConfig::default();
    config.cmd = vec!["/bin/sh".into()];
    config.env = vec!["PATH=/bin".into()];

    let mut layout = LayoutWriter::create(dir)?;
    let layers = [
        ("base", layout.add_layer(&base)?),
        ("top", layout.add_layer(&top)?),
    ];
    let manifest = layout.finish(Some(tag), &config)?;
    println!("built {}:{tag}, manifest {manifest}", dir.display());
    for (name, layer) in layers.iter().rev() {
        println!(
            "  {name:<4} {} {:>8} bytes (diff_id {})",
            layer.digest, layer.size, layer.diff_id
        );
    }
    Ok(())
}

/// Fails unless `path` is a statically linked ELF executable: one without a `PT_INTERP` program
/// header (the dynamic loader it would need is not in the image).
fn check_static(path: &Path) -> Result<(), Box<dyn Error>> {
    let hint = "install a static busybox: apt-get install busybox-static";
    let elf = std::fs::read(path).map_err(|e| format!("{}: {e}; {hint}", path.display()))?;
    let field = |at: usize, len: usize| -> Option<u64> {
        let bytes = elf.get(at..at + len)?;
        let mut value = 0u64;
        for (i, b) in bytes.iter().enumerate() {
            // ELFDATA2LSB = 1; anything else is read big-endian.
            let shift = if elf[5] == 1 { i } else { len - 1 - i };
            value |= u64::from(*b) << (8 * shift);
        }
        Some(value)
    };
    let interp = (|| {
        if elf.get(..4)? != b"\x7fELF" {
            return None;
        }
        // ELFCLASS64 = 2: offsets of e_phoff, e_phentsize and e_phnum differ by class.
        let (phoff, phentsize, phnum) = if *elf.get(4)? == 2 {
            (field(32, 8)?, field(54, 2)?, field(56, 2)?)
        } else {
            (field(28, 4)?, field(42, 2)?, field(44, 2)?)
        };
        let mut has_interp = false;
        for i in 0..phnum {
            let at = usize::try_from(phoff + i * phentsize).ok()?;
            // PT_INTERP = 3.
            has_interp |= field(at, 4)? == 3;
        }
        Some(has_interp)
    })();
    match interp {
        Some(false) => Ok(()),
        Some(true) => Err(format!("{} is dynamically linked; {hint}", path.display()).into()),
        None => Err(format!("{} is not an ELF executable; {hint}", path.display()).into()),
    }
}

fn open_store(store: Option<PathBuf>) -> Result<LayerStore, Box<dyn Error>> {
    let root = store
        .or_else(|| std::env::var_os("PALISADE_STORE").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/var/lib/palisade/layers"));
    Ok(LayerStore::open(root)?)
}

fn import(image: &str, store: Option<PathBuf>) -> Result<(), Box<dyn Error>> {
    let (dir, tag) = match image.rsplit_once(':') {
        Some((dir, tag)) if !tag.contains('/') => (dir, Some(tag)),
        _ => (image, None),
    };
    let store = open_store(store)?;
    let before: BTreeSet<_> = store.layers()?.into_iter().map(|l| l.digest).collect();
    let image = store.import(dir, tag)?;
    println!(
        "imported {} into {}: manifest {}, runs {:?}",
        image_name(dir, tag),
        store.root().display(),
        image.manifest_digest,
        image.config.process_args(),
    );
    println!("layers, top first (shared: already in the store before this import):");
    for (i, layer) in image.layers.iter().enumerate().rev() {
        let sharing = if before.contains(&layer.digest) {
            "shared"
        } else {
            "new"
        };
        println!("  {i}: {} {} bytes, {sharing}", layer.digest, layer.size);
        println!("     {}", layer.path.display());
    }
    Ok(())
}

fn image_name(dir: &str, tag: Option<&str>) -> String {
    match tag {
        Some(tag) => format!("{dir}:{tag}"),
        None => dir.to_owned(),
    }
}

fn list(store: Option<PathBuf>) -> Result<(), Box<dyn Error>> {
    let store = open_store(store)?;
    let layers = store.layers()?;
    println!("{} layers in {}", layers.len(), store.root().display());
    for layer in layers {
        println!(
            "  {} {:>8} bytes {}",
            layer.digest,
            layer.size,
            layer.path.display()
        );
    }
    Ok(())
}
