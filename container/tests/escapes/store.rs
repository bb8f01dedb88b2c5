//! The layer store as an attacker sees it: the store sits on the host, outside every sandbox,
//! and holds whatever the images put in their layers.
//!
//! - An image's set-user-ID-root program, unpacked into the store, must not be runnable by
//!   another host user straight from its store path (the store's own directories are `0700`).
//! - A layer of a few KiB must not expand to fill the host's disk: a GNU sparse file is unpacked
//!   with holes, and an import is bounded in what it expands to.
//! - A layer must not plant device nodes (the host's disk, `/dev/mem`) in the store, where any
//!   sandbox whose image has them could open them.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use palisade::image::Error;
use palisade::image::{
    Compression, ImageConfig, LayerBuilder, LayerStore, LayoutWriter, StoreOptions,
};

use palisade_test_support::{require_root, TempDir};

/// The host user that attacks the store.
const OTHER_UID: u32 = 64_002;
/// Set for the probe when it is run on purpose.
const PROBE_ENV: &str = "PALISADE_STORE_EUID_PROBE";
const PROBE_TEST: &str = "store::euid_probe";
const GIB: u64 = 1 << 30;

/// A temporary directory every user may traverse, so that only the store's own modes stand
/// between the other user and the layers.
fn open_temp_dir(tag: &str) -> TempDir {
    let dir = TempDir::new(tag);
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Writes a one-image layout (tag `latest`) of `layers` into `dir`.
fn layout_of(dir: &Path, layers: &[&LayerBuilder]) -> PathBuf {
    let mut writer = LayoutWriter::create(dir).unwrap();
    for layer in layers {
        writer.add_layer(layer).unwrap();
    }
    writer
        .finish(Some("latest"), &ImageConfig::default())
        .unwrap();
    dir.to_path_buf()
}

/// Writes a one-image layout whose only layer is the raw tar stream `tar`.
fn layout_of_tar(dir: &Path, tar: &[u8]) -> PathBuf {
    let mut writer = LayoutWriter::create(dir).unwrap();
    writer.add_tar_layer(tar, Compression::Gzip).unwrap();
    writer
        .finish(Some("latest"), &ImageConfig::default())
        .unwrap();
    dir.to_path_buf()
}

// ---------------------------------------------------------------------------------------------
// Set-user-ID programs in the store

/// Prints the probe's real and effective user ids. Run by
/// `setuid_file_in_the_store_cannot_be_run_by_another_host_user`, as another user, from a copy
/// of this test binary that an image made set-user-ID root.
#[test]
#[ignore = "run by setuid_file_in_the_store_cannot_be_run_by_another_host_user"]
fn euid_probe() {
    if std::env::var_os(PROBE_ENV).is_none() {
        return;
    }
    // SAFETY: getuid and geteuid cannot fail and touch no memory.
    let (uid, euid) = unsafe { (libc::getuid(), libc::geteuid()) };
    println!("PALISADE-PROBE uid={uid} euid={euid}");
}

/// Runs the probe at `path` as the other user, retrying while the kernel refuses to run a file
/// someone has open for writing (a child forked by another test thread may hold a descriptor
/// for a moment).
fn run_probe_as_other_user(path: &Path) -> std::io::Result<Output> {
    let mut attempts = 0;
    loop {
        let run = Command::new(path)
            .args([
                "--exact",
                PROBE_TEST,
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(PROBE_ENV, "1")
            .current_dir("/")
            .uid(OTHER_UID)
            .gid(OTHER_UID)
            .output();
        match run {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempts < 100 => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

#[test]
fn setuid_file_in_the_store_cannot_be_run_by_another_host_user() {
    require_root!();
    let tmp = open_temp_dir("store-suid");
    let mut layer = LayerBuilder::new();
    layer
        .dir("/", 0o755)
        .dir("/bin", 0o755)
        .file_from("/bin/probe", std::env::current_exe().unwrap(), 0o4755)
        // The probe is large: hashing it is what costs, not compressing it.
        .compression(Compression::None);
    let layout = layout_of(&tmp.path().join("layout"), &[&layer]);
    let store = LayerStore::open(tmp.path().join("store")).unwrap();
    let image = store.import(&layout, Some("latest")).unwrap();
    let probe = image.layers[0].path.join("bin/probe");

    // The image's set-user-ID-root program really is in the store, as the image made it.
    let meta = fs::metadata(&probe).unwrap();
    assert_eq!(meta.uid(), 0);
    assert_eq!(meta.permissions().mode() & 0o7777, 0o4755);
    // The layer's tree keeps the image's modes (it becomes the sandbox's `/`).
    assert_eq!(
        fs::metadata(&image.layers[0].path)
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o755
    );

    // The attack: another host user runs it through its store path.
    match run_probe_as_other_user(&probe) {
        Err(e) => assert_eq!(
            e.raw_os_error(),
            Some(libc::EACCES),
            "the probe failed to start, but not for want of access to the store: {e}"
        ),
        Ok(out) => panic!(
            "user {OTHER_UID} ran the image's set-user-ID program from the store: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }

    // Positive control: with the store's wrapper directories opened up as they used to be,
    // the same attempt runs the program as root.
    let root = store.root();
    let layer_dir = image.layers[0].path.parent().unwrap();
    for dir in [
        root.to_path_buf(),
        root.join("layers"),
        root.join("layers/sha256"),
        layer_dir.to_path_buf(),
    ] {
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out = run_probe_as_other_user(&probe).expect("the control probe should start");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("PALISADE-PROBE uid={OTHER_UID} euid=0")),
        "the control probe did not run as root: {}{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );

    // Reopening the store closes it again.
    let store = LayerStore::open(tmp.path().join("store")).unwrap();
    assert_eq!(
        fs::metadata(store.root()).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let err = run_probe_as_other_user(&probe).expect_err("the store was not closed again");
    assert_eq!(err.raw_os_error(), Some(libc::EACCES));
}

// ---------------------------------------------------------------------------------------------
// Raw tar headers (this crate does not depend on a tar library)

/// Writes `value` as an octal number NUL-terminated in `field`.
fn octal(field: &mut [u8], value: u64) {
    let digits = format!("{value:0width$o}", width = field.len() - 1);
    assert_eq!(digits.len(), field.len() - 1, "{value} does not fit");
    field[..digits.len()].copy_from_slice(digits.as_bytes());
    field[digits.len()] = 0;
}

/// A GNU tar header (GNU tar manual, "Basic Tar Format" and "GNU Extensions to the Archive
/// Format") of type `kind`, its checksum set last by [`seal`].
fn gnu_header(kind: u8, name: &str, mode: u32, size: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut h[100..108], u64::from(mode));
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], 0);
    h[156] = kind;
    h[257..265].copy_from_slice(b"ustar  \0");
    h
}

fn seal(h: &mut [u8; 512]) {
    h[148..156].copy_from_slice(b"        ");
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    let text = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(text.as_bytes());
}

/// Appends `data` padded to whole 512-byte blocks.
fn append_padded(tar: &mut Vec<u8>, data: &[u8]) {
    tar.extend_from_slice(data);
    tar.resize(tar.len().div_ceil(512) * 512, 0);
}

/// A GNU sparse file (type `S`) of logical size `real_size` with these data segments (at most
/// four, in the header; all but the last a multiple of 512 bytes long) and holes elsewhere.
fn sparse_entry(tar: &mut Vec<u8>, name: &str, real_size: u64, segments: &[(u64, &[u8])]) {
    assert!(segments.len() <= 4);
    let stored: u64 = segments.iter().map(|s| s.1.len() as u64).sum();
    let mut h = gnu_header(b'S', name, 0o644, stored);
    for (i, (offset, data)) in segments.iter().enumerate() {
        let at = 386 + i * 24;
        octal(&mut h[at..at + 12], *offset);
        octal(&mut h[at + 12..at + 24], data.len() as u64);
    }
    octal(&mut h[483..495], real_size);
    seal(&mut h);
    tar.extend_from_slice(&h);
    let data: Vec<u8> = segments.iter().flat_map(|s| s.1.iter().copied()).collect();
    append_padded(tar, &data);
}

/// A character (`'3'`) or block (`'4'`) device entry.
fn device_entry(tar: &mut Vec<u8>, kind: u8, name: &str, major: u64, minor: u64) {
    let mut h = gnu_header(kind, name, 0o666, 0);
    octal(&mut h[329..337], major);
    octal(&mut h[337..345], minor);
    seal(&mut h);
    tar.extend_from_slice(&h);
}

fn regular_entry(tar: &mut Vec<u8>, name: &str, data: &[u8]) {
    let mut h = gnu_header(b'0', name, 0o644, data.len() as u64);
    seal(&mut h);
    tar.extend_from_slice(&h);
    append_padded(tar, data);
}

fn end_archive(tar: &mut Vec<u8>) {
    tar.extend_from_slice(&[0u8; 1024]);
}

/// The store has no layer and nothing in `tmp/`.
fn assert_store_empty(store: &LayerStore) {
    assert!(store.layers().unwrap().is_empty());
    for dir in ["layers/sha256", "tmp"] {
        let left: Vec<_> = fs::read_dir(store.root().join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(left.is_empty(), "left in the store: {left:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Expansion bombs

#[test]
fn a_sparse_layer_cannot_fill_the_disk() {
    require_root!();
    let tmp = open_temp_dir("store-sparse");
    let mut tar = Vec::new();
    sparse_entry(
        &mut tar,
        "bomb",
        GIB,
        &[(0, &[b'x'; 512]), (GIB - 5, b"tail\n")],
    );
    end_archive(&mut tar);
    let layout = layout_of_tar(&tmp.path().join("layout"), &tar);
    // The attack is real: a blob of a few KiB describes a 1 GiB file.
    let blob_size: u64 = fs::read_dir(layout.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .max()
        .unwrap();
    assert!(blob_size < 10_000, "the layer blob is {blob_size} bytes");

    // Unpacked with holes: a 1 GiB file that takes next to nothing on disk.
    let store = LayerStore::open(tmp.path().join("store")).unwrap();
    let image = store.import(&layout, Some("latest")).unwrap();
    let bomb = image.layers[0].path.join("bomb");
    let meta = fs::metadata(&bomb).unwrap();
    assert_eq!(meta.len(), GIB);
    assert!(
        meta.blocks() * 512 < 1 << 20,
        "a 1 GiB sparse file takes {} bytes of disk",
        meta.blocks() * 512
    );
    assert_eq!(image.expanded_size(), GIB);

    // Bounded: with a bound of 64 MiB on what an import expands to, it is refused, with the
    // layer and the bound named, and nothing is left behind.
    const LIMIT: u64 = 64 << 20;
    let bounded = LayerStore::open_with(
        tmp.path().join("bounded"),
        StoreOptions::new().max_expanded_size(LIMIT),
    )
    .unwrap();
    match bounded.import(&layout, Some("latest")) {
        Err(Error::ExpandedSizeExceeded { layer, size, limit }) => {
            assert_eq!(layer, image.layers[0].digest);
            assert_eq!(limit, LIMIT);
            assert!(size >= GIB);
        }
        other => panic!("expected the bound to refuse the layer, got {other:?}"),
    }
    assert_store_empty(&bounded);
}

// ---------------------------------------------------------------------------------------------
// Device nodes

#[test]
fn a_layer_cannot_plant_device_nodes_in_the_store() {
    require_root!();
    let tmp = open_temp_dir("store-devices");
    // The device of the host's root file system: the disk an attacker would read.
    let root_dev = fs::metadata("/").unwrap().dev();
    let (major, minor) = (
        u64::from(libc::major(root_dev)),
        u64::from(libc::minor(root_dev)),
    );
    let mut tar = Vec::new();
    device_entry(&mut tar, b'4', "rootdisk", major, minor);
    device_entry(&mut tar, b'3', "null", 1, 3);
    device_entry(&mut tar, b'3', "mem", 1, 1);
    regular_entry(&mut tar, "file", b"an ordinary file\n");
    end_archive(&mut tar);
    let layout = layout_of_tar(&tmp.path().join("layout"), &tar);

    // Positive control: this process could make such nodes (it has CAP_MKNOD), so it is the
    // store that declines to.
    let control = tmp.path().join("control-node");
    let path = std::ffi::CString::new(control.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `path` is a valid C string for the duration of the call.
    let rc = unsafe {
        libc::mknod(
            path.as_ptr(),
            libc::S_IFBLK | 0o600,
            libc::makedev(major as u32, minor as u32),
        )
    };
    assert_eq!(rc, 0, "mknod: {}", std::io::Error::last_os_error());
    assert!(fs::symlink_metadata(&control)
        .unwrap()
        .file_type()
        .is_block_device());
    fs::remove_file(&control).unwrap();

    let store = LayerStore::open(tmp.path().join("store")).unwrap();
    let image = store.import(&layout, Some("latest")).unwrap();
    let dir = &image.layers[0].path;
    for name in ["rootdisk", "null", "mem"] {
        assert!(
            fs::symlink_metadata(dir.join(name)).is_err(),
            "the layer planted {name} in the store"
        );
    }
    assert_eq!(
        fs::read(dir.join("file")).unwrap(),
        b"an ordinary file\n",
        "the rest of the layer is unpacked"
    );
    assert_eq!(image.layers[0].skipped_devices, 3);
    assert_eq!(image.skipped_devices(), 3);

    // Nowhere in the store is there a device node.
    fn devices(dir: &Path, found: &mut Vec<PathBuf>) {
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                devices(&entry.path(), found);
            } else if kind.is_block_device() || kind.is_char_device() {
                found.push(entry.path());
            }
        }
    }
    let mut found = Vec::new();
    devices(store.root(), &mut found);
    assert!(found.is_empty(), "device nodes in the store: {found:?}");
}
