//! Images without docker: pulls from registries, imports OCI layouts and archives into the layer
//! store, lists, inspects, verifies and removes them, and builds a small busybox image.
//!
//! ```text
//! cargo run --example image -- pull REF [--platform OS/ARCH[/VARIANT]] [--insecure] [--store DIR]
//! cargo run --example image -- import DIR[:TAG] | FILE.tar [--name NAME] [--store DIR]
//! cargo run --example image -- list | layers [--store DIR]
//! cargo run --example image -- inspect NAME [--store DIR]
//! cargo run --example image -- rm NAME [--store DIR]
//! cargo run --example image -- gc | verify [--store DIR]
//! cargo run --example image -- build-busybox DIR [--tag TAG]
//!
//! cargo run --example image -- pull --insecure localhost:5000/busybox:latest
//! cargo run --example run -- --image localhost:5000/busybox -- echo hi
//! ```
//!
//! `pull` shows a progress bar per layer and a summary on a terminal, and only the summary
//! otherwise. A layer already in the store is never fetched again, and an interrupted pull resumes
//! where it stopped. `import` takes an OCI image layout directory, or a file: a `docker save`
//! archive (docker-archive) or a tar of a layout (oci-archive). Images are recorded under their
//! names (a registry reference such as `docker.io/library/alpine:3.20`, or the name given to
//! `import`); `gc` removes the layers no recorded image uses, and `verify` re-checks every stored
//! layer against the digest of its tree recorded at import, quarantining damaged ones (the next pull
//! or import fetches them again).
//!
//! `build-busybox` needs the host's static busybox, `/bin/busybox` (Debian: `apt-get install
//! busybox-static`). Its base layer holds busybox, a few applet links and the usual top-level
//! directories; its top layer deletes `/etc/palisade-base` (a whiteout) and replaces the
//! contents of `/data` (an opaque directory). Layers are built deterministically, so building
//! twice gives the same digests and the store unpacks each layer once. The store defaults to
//! `$PALISADE_STORE`, else `/var/lib/palisade/layers`.

use std::collections::{BTreeSet, HashMap};
use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Instant;

use clap::{Parser, Subcommand};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use palisade::image::registry::{LayerOutcome, Platform, Progress, PullOptions, Reference};
use palisade::image::{Digest, Image, ImageConfig, LayerBuilder, LayerStore, LayoutWriter};

/// Pull, import, list, inspect, verify and remove OCI images.
#[derive(Debug, Parser)]
#[command(name = "image", version)]
struct Options {
    #[command(subcommand)]
    command: Command,
    /// The layer store (default: $PALISADE_STORE or /var/lib/palisade/layers).
    #[arg(long, value_name = "STORE_DIR", global = true)]
    store: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Pull an image from a registry into the store and record it under its full name.
    Pull {
        /// The image: `alpine`, `alpine:3.20`, `docker.io/library/alpine@sha256:…`,
        /// `localhost:5000/x/y:tag`.
        reference: String,
        /// The platform to take from a multi-platform image (default: this machine's).
        #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
        platform: Option<String>,
        /// Allow plain HTTP (for a registry on this machine).
        #[arg(long)]
        insecure: bool,
    },
    /// Import an OCI image layout directory, a docker-archive or an oci-archive.
    Import {
        /// The layout (with the image's tag if it holds several) or the archive file.
        #[arg(value_name = "DIR[:TAG]|FILE")]
        image: String,
        /// The name to record the image under (default: the layout or archive and its tag).
        #[arg(long)]
        name: Option<String>,
    },
    /// List the recorded images.
    List,
    /// List the layers in the store.
    Layers,
    /// Show a recorded image: its config and layers.
    Inspect {
        /// The image's name, as `list` shows it (or as given to `pull`).
        name: String,
    },
    /// Forget a recorded image (its layers stay until `gc`).
    Rm {
        /// The image's name.
        name: String,
    },
    /// Remove the layers no recorded image uses, and what dead imports left behind.
    Gc,
    /// Re-check every stored layer; damaged ones are quarantined.
    Verify,
    /// Build a two-layer OCI image layout in DIR from the host's static /bin/busybox.
    BuildBusybox {
        /// The layout directory (absent or empty).
        dir: PathBuf,
        /// The image's tag (`org.opencontainers.image.ref.name`).
        #[arg(long, default_value = "latest")]
        tag: String,
    },
}

/// The applets the base layer links to busybox.
const APPLETS: &[&str] = &[
    "sh", "ls", "cat", "echo", "id", "hostname", "ps", "mount", "grep", "wc", "sleep", "true",
    "false", "env", "uname", "head", "tail", "touch", "rm", "mkdir",
];

const BUSYBOX: &str = "/bin/busybox";

fn main() -> ExitCode {
    let options = Options::parse();
    let store = options.store;
    let result = match options.command {
        Command::BuildBusybox { dir, tag } => {
            let fresh = !dir.exists();
            let built = build_busybox(&dir, &tag);
            if built.is_err() && fresh {
                // Leave no half-written layout behind.
                let _ = std::fs::remove_dir_all(&dir);
            }
            built
        }
        Command::Pull {
            reference,
            platform,
            insecure,
        } => open_store(store).and_then(|s| pull(&s, &reference, platform.as_deref(), insecure)),
        Command::Import { image, name } => open_store(store).and_then(|s| import(&s, &image, name)),
        Command::List => open_store(store).and_then(|s| list(&s)),
        Command::Layers => open_store(store).and_then(|s| layers(&s)),
        Command::Inspect { name } => open_store(store).and_then(|s| inspect(&s, &name)),
        Command::Rm { name } => open_store(store).and_then(|s| remove(&s, &name)),
        Command::Gc => open_store(store).and_then(|s| gc(&s)),
        Command::Verify => open_store(store).and_then(|s| verify(&s)),
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

/// Per-layer progress bars on a terminal (indicatif hides them elsewhere), and counts for the
/// summary.
struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<Digest, ProgressBar>>,
    outcomes: Mutex<Vec<(LayerOutcome, u64)>>,
}

impl Bars {
    fn new() -> Bars {
        Bars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            bars: Mutex::new(HashMap::new()),
            outcomes: Mutex::new(Vec::new()),
        }
    }

    fn bar(&self, digest: &Digest) -> Option<ProgressBar> {
        self.bars.lock().ok()?.get(digest).cloned()
    }
}

impl Progress for Bars {
    fn layer_start(&self, digest: &Digest, total: u64, already: u64) {
        let bar = self.multi.add(ProgressBar::new(total));
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix(digest.hex()[..12].to_owned());
        bar.set_position(already);
        if let Ok(mut bars) = self.bars.lock() {
            bars.insert(digest.clone(), bar);
        }
    }

    fn layer_progress(&self, digest: &Digest, done: u64) {
        if let Some(bar) = self.bar(digest) {
            bar.set_position(done);
        }
    }

    fn layer_done(&self, digest: &Digest, outcome: LayerOutcome) {
        let bar = self.bars.lock().ok().and_then(|mut b| b.remove(digest));
        let size = bar.as_ref().and_then(|b| b.length()).unwrap_or(0);
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        if let Ok(mut outcomes) = self.outcomes.lock() {
            outcomes.push((outcome, size));
        }
    }
}

fn pull(
    store: &LayerStore,
    reference: &str,
    platform: Option<&str>,
    insecure: bool,
) -> Result<(), Box<dyn Error>> {
    let reference: Reference = reference.parse()?;
    let mut options = PullOptions::new().insecure(insecure);
    if let Some(platform) = platform {
        options = options.platform(platform.parse::<Platform>()?);
    }
    let bars = Bars::new();
    let started = Instant::now();
    let image = store.pull(&reference, &options, &bars)?;
    let outcomes = bars.outcomes.into_inner().unwrap_or_default();
    let fetched: Vec<_> = outcomes
        .iter()
        .filter(|(o, _)| *o != LayerOutcome::InStore)
        .collect();
    let bytes: u64 = fetched.iter().map(|(_, size)| size).sum();
    println!(
        "pulled {reference} ({}): {} layers, {} fetched ({bytes} bytes), {} already in the store, in {:.2?}",
        image.manifest_digest,
        image.layers.len(),
        fetched.len(),
        image.layers.len().saturating_sub(fetched.len()),
        started.elapsed(),
    );
    Ok(())
}

fn import(store: &LayerStore, image: &str, name: Option<String>) -> Result<(), Box<dyn Error>> {
    let before: BTreeSet<_> = store.layers()?.into_iter().map(|l| l.digest).collect();
    let (imported, default_name) = if Path::new(image).is_file() {
        (store.import_archive(image, None)?, image.to_owned())
    } else {
        let (dir, tag) = match image.rsplit_once(':') {
            Some((dir, tag)) if !tag.contains('/') => (dir, Some(tag)),
            _ => (image, None),
        };
        (store.import(dir, tag)?, image.to_owned())
    };
    let name = name.unwrap_or(default_name);
    store.tag(&name, &imported)?;
    println!(
        "imported {name} into {}: manifest {}, runs {:?}",
        store.root().display(),
        imported.manifest_digest,
        imported.config.process_args(),
    );
    println!("layers, top first (shared: already in the store before this import):");
    for (i, layer) in imported.layers.iter().enumerate().rev() {
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

fn list(store: &LayerStore) -> Result<(), Box<dyn Error>> {
    println!("{:<50} {:<19} {:>6}", "NAME", "MANIFEST", "LAYERS");
    for record in store.images()? {
        println!(
            "{:<50} {:<19} {:>6}",
            record.name,
            &record.manifest_digest.to_string()[..19],
            record.layers.len(),
        );
    }
    Ok(())
}

fn layers(store: &LayerStore) -> Result<(), Box<dyn Error>> {
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

fn inspect(store: &LayerStore, name: &str) -> Result<(), Box<dyn Error>> {
    let image = find(store, name)?;
    let c = &image.config;
    println!("name:        {name}");
    println!("manifest:    {}", image.manifest_digest);
    println!("config:      {}", image.config_digest);
    println!(
        "platform:    {}/{}",
        c.os.as_deref().unwrap_or("?"),
        c.architecture.as_deref().unwrap_or("?")
    );
    println!("entrypoint:  {:?}", c.entrypoint);
    println!("cmd:         {:?}", c.cmd);
    println!("env:         {:?}", c.env);
    println!("workdir:     {}", c.working_dir.as_deref().unwrap_or(""));
    println!("user:        {}", c.user.as_deref().unwrap_or(""));
    println!("ports:       {:?}", c.exposed_ports);
    println!("stop signal: {}", c.stop_signal.as_deref().unwrap_or(""));
    for (key, value) in &c.labels {
        println!("label:       {key}={value}");
    }
    println!(
        "layers (bottom first), {} bytes unpacked:",
        image.expanded_size()
    );
    for layer in &image.layers {
        println!("  {} {:>10} bytes", layer.digest, layer.size);
    }
    Ok(())
}

/// The recorded image `name`, also found by its short registry form (`alpine` for
/// `docker.io/library/alpine:latest`).
fn find(store: &LayerStore, name: &str) -> Result<Image, Box<dyn Error>> {
    if let Some(image) = store.image(name)? {
        return Ok(image);
    }
    if let Ok(reference) = name.parse::<Reference>() {
        if let Some(image) = store.image(&reference.to_string())? {
            return Ok(image);
        }
    }
    Err(format!("no image named {name:?} in {}", store.root().display()).into())
}

fn remove(store: &LayerStore, name: &str) -> Result<(), Box<dyn Error>> {
    let full = name
        .parse::<Reference>()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| name.to_owned());
    if store.untag(name)? || store.untag(&full)? {
        println!("removed {name} (its layers go with the next gc)");
        Ok(())
    } else {
        Err(format!("no image named {name:?} in {}", store.root().display()).into())
    }
}

fn gc(store: &LayerStore) -> Result<(), Box<dyn Error>> {
    let removed = store.gc(&[])?;
    // The manifests and configs kept for pulls, and unfinished downloads: the next pull of an
    // image fetches its config again.
    store.clear_pull_cache()?;
    println!("removed {} layers no recorded image uses", removed.len());
    for digest in removed {
        println!("  {digest}");
    }
    Ok(())
}

fn verify(store: &LayerStore) -> Result<(), Box<dyn Error>> {
    let report = store.verify()?;
    println!(
        "{} layers verified, {} without a recorded tree digest (taken as good)",
        report.verified.len(),
        report.unverifiable.len()
    );
    for layer in &report.quarantined {
        println!(
            "quarantined layer {}: {:?} (now {})",
            layer.name,
            layer.damage,
            layer.moved_to.display()
        );
    }
    for record in &report.damaged_records {
        println!(
            "damaged image record {}: {} (now {})",
            record.path.display(),
            record.reason,
            record.moved_to.display()
        );
    }
    for image in &report.incomplete_images {
        println!(
            "image {} lacks {} layers: pull or import it again",
            image.name,
            image.missing.len()
        );
    }
    if report.is_clean() {
        Ok(())
    } else {
        Err("the store had damage (repaired as listed above)".into())
    }
}
