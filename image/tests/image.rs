//! OCI image layouts imported into the layer store, on the real file system: layouts are built
//! with the public [`LayoutWriter`] (from [`LayerBuilder`]s, or from raw tar streams written here
//! with the `tar` crate for malicious archives) or by hand for malformed ones, imported, and the
//! unpacked trees checked — overlayfs whiteouts, opaque xattrs, links, sharing, digests, and
//! malicious archives.

use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use palisade_image::Error;
use palisade_image::{
    Compression, Digest, ImageConfig, LayerBuilder, LayerStore, LayoutWriter, OpaqueXattr,
    StoreOptions, WrittenLayer, DEFAULT_MAX_EXPANDED_SIZE,
};
use palisade_test_support::{is_root, require_root, run_ignored_test_as, TempDir};
use serde_json::{json, Value};
use sha2::Digest as _;

// ---------------------------------------------------------------------------------------------
// Building layouts

/// One tar entry.
enum E<'a> {
    Dir(&'a str, u32),
    File(&'a str, &'a [u8], u32),
    /// A file with an owner.
    Owned(&'a str, &'a [u8], u32, u64, u64),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    Fifo(&'a str),
    CharDev(&'a str, u32, u32),
    BlockDev(&'a str, u32, u32),
    /// A GNU sparse file (type `S`) of this logical size, holding these data segments (offset,
    /// bytes; every segment but the last a multiple of 512 bytes long) and holes elsewhere. The
    /// first four segments go in the header, the others in extension headers.
    Sparse(&'a str, u64, &'a [(u64, &'a [u8])]),
    /// A file whose long path goes through a GNU long-name entry.
    LongFile(&'a str, &'a [u8]),
    /// A file described by a PAX extended header: these `key=value` records, then a header
    /// whose own name is a placeholder.
    Pax(&'a [(&'a str, &'a str)], &'a [u8]),
}

const MTIME: u64 = 1_600_000_000;

/// A header whose name and link name are written raw: the `tar` crate refuses `..` and absolute
/// paths, which these tests need.
fn header(
    kind: tar::EntryType,
    path: &str,
    link: Option<&str>,
    size: u64,
    mode: u32,
) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(MTIME);
    h.set_uid(0);
    h.set_gid(0);
    let old = h.as_old_mut();
    assert!(path.len() < 100);
    old.name = [0; 100];
    old.name[..path.len()].copy_from_slice(path.as_bytes());
    if let Some(link) = link {
        old.linkname = [0; 100];
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_cksum();
    h
}

fn tar_of(entries: &[E<'_>]) -> Vec<u8> {
    use tar::EntryType as T;
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        match *e {
            E::Dir(p, mode) => b
                .append(&header(T::Directory, p, None, 0, mode), &[][..])
                .unwrap(),
            E::File(p, data, mode) => b
                .append(&header(T::Regular, p, None, data.len() as u64, mode), data)
                .unwrap(),
            E::Owned(p, data, mode, uid, gid) => {
                let mut h = header(T::Regular, p, None, data.len() as u64, mode);
                h.set_uid(uid);
                h.set_gid(gid);
                h.set_cksum();
                b.append(&h, data).unwrap()
            }
            E::Symlink(p, t) => b
                .append(&header(T::Symlink, p, Some(t), 0, 0o777), &[][..])
                .unwrap(),
            E::Hardlink(p, t) => b
                .append(&header(T::Link, p, Some(t), 0, 0o644), &[][..])
                .unwrap(),
            E::Fifo(p) => b
                .append(&header(T::Fifo, p, None, 0, 0o640), &[][..])
                .unwrap(),
            E::CharDev(p, major, minor) | E::BlockDev(p, major, minor) => {
                let kind = if matches!(e, E::CharDev(..)) {
                    T::Char
                } else {
                    T::Block
                };
                let mut h = header(kind, p, None, 0, 0o666);
                h.set_device_major(major).unwrap();
                h.set_device_minor(minor).unwrap();
                h.set_cksum();
                b.append(&h, &[][..]).unwrap()
            }
            E::Sparse(p, real_size, segments) => {
                let data: Vec<u8> = segments.iter().flat_map(|s| s.1.iter().copied()).collect();
                let mut h = header(T::GNUSparse, p, None, data.len() as u64, 0o644);
                let gnu = h.as_gnu_mut().unwrap();
                gnu.set_real_size(real_size);
                let (first, rest) = segments.split_at(segments.len().min(4));
                for (slot, (offset, bytes)) in gnu.sparse.iter_mut().zip(first) {
                    slot.set_offset(*offset);
                    slot.set_length(bytes.len() as u64);
                }
                gnu.set_is_extended(!rest.is_empty());
                h.set_cksum();
                // Extension headers come right after the header, before the data, and are not
                // counted in its size.
                let mut body = Vec::new();
                let chunks: Vec<_> = rest.chunks(21).collect();
                for (i, chunk) in chunks.iter().enumerate() {
                    let mut ext = tar::GnuExtSparseHeader::new();
                    for (slot, (offset, bytes)) in ext.sparse.iter_mut().zip(chunk.iter()) {
                        slot.set_offset(*offset);
                        slot.set_length(bytes.len() as u64);
                    }
                    ext.set_is_extended(i + 1 < chunks.len());
                    body.extend_from_slice(ext.as_bytes());
                }
                body.extend_from_slice(&data);
                b.append(&h, &body[..]).unwrap()
            }
            E::LongFile(p, data) => {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(T::Regular);
                h.set_size(data.len() as u64);
                h.set_mode(0o644);
                h.set_mtime(MTIME);
                b.append_data(&mut h, p, data).unwrap()
            }
            E::Pax(records, data) => {
                let mut pax = Vec::new();
                for (key, value) in records {
                    // "<length> <key>=<value>\n", the length counting itself.
                    let rest = format!(" {key}={value}\n");
                    let mut len = rest.len() + 1;
                    while format!("{len}").len() + rest.len() != len {
                        len += 1;
                    }
                    pax.extend_from_slice(format!("{len}{rest}").as_bytes());
                }
                let h = header(
                    T::XHeader,
                    "PaxHeaders/placeholder",
                    None,
                    pax.len() as u64,
                    0o644,
                );
                b.append(&h, &pax[..]).unwrap();
                let h = header(T::Regular, "placeholder", None, data.len() as u64, 0o644);
                b.append(&h, data).unwrap()
            }
        }
    }
    b.into_inner().unwrap()
}

#[derive(Clone, Copy, PartialEq)]
enum Comp {
    Plain,
    Gzip,
    /// Docker's gzip media type.
    DockerGzip,
    Zstd,
}

fn sha(bytes: &[u8]) -> String {
    let sum = sha2::Sha256::digest(bytes);
    format!(
        "sha256:{}",
        sum.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

impl Comp {
    /// The writer's compression, for the OCI media types.
    fn writer(self) -> Option<Compression> {
        match self {
            Comp::Plain => Some(Compression::None),
            Comp::Gzip => Some(Compression::Gzip),
            Comp::Zstd => Some(Compression::Zstd),
            Comp::DockerGzip => None,
        }
    }
}

/// An OCI image layout written by hand, for what [`LayoutWriter`] would not write: foreign
/// platforms, nested indexes, Docker media types, broken descriptors.
struct Layout {
    dir: PathBuf,
    index: Vec<Value>,
}

impl Layout {
    fn new(dir: PathBuf) -> Layout {
        fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Layout {
            dir,
            index: Vec::new(),
        }
    }

    /// Writes a blob and returns its descriptor.
    fn blob(&self, media_type: &str, bytes: &[u8]) -> Value {
        let digest = sha(bytes);
        fs::write(self.blob_path(&digest), bytes).unwrap();
        json!({"mediaType": media_type, "digest": digest, "size": bytes.len()})
    }

    fn blob_path(&self, digest: &str) -> PathBuf {
        self.dir
            .join("blobs/sha256")
            .join(digest.strip_prefix("sha256:").unwrap())
    }

    /// Writes a layer; returns its descriptor and diff_id.
    fn layer(&self, tar: &[u8], comp: Comp) -> (Value, String) {
        let (media_type, blob) = match comp {
            Comp::Plain => ("application/vnd.oci.image.layer.v1.tar", tar.to_vec()),
            Comp::Gzip | Comp::DockerGzip => {
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                enc.write_all(tar).unwrap();
                let media_type = if comp == Comp::Gzip {
                    "application/vnd.oci.image.layer.v1.tar+gzip"
                } else {
                    "application/vnd.docker.image.rootfs.diff.tar.gzip"
                };
                (media_type, enc.finish().unwrap())
            }
            Comp::Zstd => (
                "application/vnd.oci.image.layer.v1.tar+zstd",
                ruzstd::encoding::compress_to_vec(tar, ruzstd::encoding::CompressionLevel::Fastest),
            ),
        };
        (self.blob(media_type, &blob), sha(tar))
    }

    /// Writes a config and a manifest for `layers`; returns the manifest's descriptor.
    fn manifest(&self, layers: &[(Value, String)], arch: &str, run: Value) -> Value {
        let config = json!({
            "architecture": arch,
            "os": "linux",
            "config": run,
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.1.clone()).collect::<Vec<_>>()},
        });
        let config = self.blob(
            "application/vnd.oci.image.config.v1+json",
            config.to_string().as_bytes(),
        );
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config,
            "layers": layers.iter().map(|l| l.0.clone()).collect::<Vec<_>>(),
        });
        self.blob(
            "application/vnd.oci.image.manifest.v1+json",
            manifest.to_string().as_bytes(),
        )
    }

    /// Adds a manifest (or index) descriptor to `index.json`, tagged if `tag` is given.
    fn tag(&mut self, mut descriptor: Value, tag: Option<&str>) {
        if let Some(tag) = tag {
            descriptor["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
        }
        self.index.push(descriptor);
        let index = json!({"schemaVersion": 2, "manifests": self.index});
        fs::write(self.dir.join("index.json"), index.to_string()).unwrap();
    }

    /// A one-image layout of these layers, written by [`LayoutWriter`] from raw tar streams
    /// (by hand when a layer has Docker's media type).
    fn image(dir: PathBuf, layers: &[(&[E<'_>], Comp)], tag: Option<&str>) -> Layout {
        if layers.iter().any(|(_, c)| c.writer().is_none()) {
            let mut layout = Layout::new(dir);
            let layers: Vec<_> = layers
                .iter()
                .map(|(e, c)| layout.layer(&tar_of(e), *c))
                .collect();
            let manifest = layout.manifest(&layers, host_arch(), json!({}));
            layout.tag(manifest, tag);
            return layout;
        }
        let mut writer = LayoutWriter::create(&dir).unwrap();
        for (entries, comp) in layers {
            let tar = tar_of(entries);
            let layer = writer
                .add_tar_layer(&tar[..], comp.writer().unwrap())
                .unwrap();
            assert_eq!(layer.diff_id.as_str(), sha(&tar));
        }
        writer.finish(tag, &ImageConfig::default()).unwrap();
        Layout {
            dir,
            index: Vec::new(),
        }
    }
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let mut buf = [0u8; 64];
    // SAFETY: valid C strings and a writable buffer of the size passed.
    let len =
        unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (len >= 0).then(|| buf[..len as usize].to_vec())
}

fn is_whiteout(path: &Path) -> bool {
    let meta = fs::symlink_metadata(path).unwrap();
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// Everything under the store's `tmp/`.
fn tmp_entries(store: &LayerStore) -> Vec<PathBuf> {
    fs::read_dir(store.root().join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The layer tree

fn base_layer() -> Vec<E<'static>> {
    vec![
        E::Dir("./", 0o755),
        E::Dir("etc/", 0o755),
        E::File("etc/hosts", b"127.0.0.1 localhost\n", 0o644),
        E::File("etc/gone", b"lower only\n", 0o644),
        E::Hardlink("etc/hosts.link", "etc/hosts"),
        // A link to itself (some archivers write these) must not lose the file.
        E::Hardlink("etc/hosts", "./etc/hosts"),
        E::Symlink("hosts", "etc/hosts"),
        E::Symlink("abs", "/etc/passwd"),
        E::Dir("var/", 0o755),
        E::Dir("var/cache/", 0o755),
        E::File("var/cache/old", b"old\n", 0o644),
        // Implied parents a/ a/b/.
        E::File("a/b/c/deep", b"deep\n", 0o600),
        E::Dir("ro/", 0o555),
        E::File(
            "ro/inside",
            b"written before the dir turned read-only\n",
            0o444,
        ),
        E::Owned("suid", b"#!/bin/sh\n", 0o4755, 1234, 5678),
        E::Fifo("pipe"),
    ]
}

fn top_layer() -> Vec<E<'static>> {
    vec![
        E::File("etc/.wh.gone", b"", 0o644),
        E::File("var/cache/.wh..wh..opq", b"", 0o644),
        E::File("var/cache/new", b"new\n", 0o644),
        // Hides something only the lower layer might have: kept as a whiteout.
        E::File(".wh.ghost", b"", 0o644),
        // A whiteout and the same name in this layer: the file wins.
        E::File(".wh.both", b"", 0o644),
        E::File("both", b"kept\n", 0o644),
    ]
}

#[test]
fn imports_layers_with_whiteouts_opaque_dirs_and_links() {
    require_root!();
    let tmp = TempDir::new("image-tree");
    let run = json!({
        "Env": ["PATH=/usr/bin:/bin", "LANG=C"],
        "Entrypoint": ["/bin/sh", "-c"],
        "Cmd": ["echo hi"],
        "WorkingDir": "/work",
        "User": "1000:1000",
    });
    let mut layout = Layout::new(tmp.path().join("layout"));
    let base = layout.layer(&tar_of(&base_layer()), Comp::Gzip);
    let top = layout.layer(&tar_of(&top_layer()), Comp::Plain);
    let manifest = layout.manifest(&[base, top], host_arch(), run);
    let manifest_digest = manifest["digest"].as_str().unwrap().to_owned();
    layout.tag(manifest, Some("latest"));

    let store = LayerStore::open(tmp.path().join("store")).unwrap();
    let image = store.import(&layout.dir, Some("latest")).unwrap();
    assert_eq!(image.manifest_digest.as_str(), manifest_digest);
    assert_eq!(image.layers.len(), 2);
    let (lower, upper) = (&image.layers[0].path, &image.layers[1].path);
    assert_eq!(
        image.lower_dirs(),
        vec![upper.as_path(), lower.as_path()],
        "top layer first"
    );

    // Config.
    assert_eq!(image.config.env, ["PATH=/usr/bin:/bin", "LANG=C"]);
    assert_eq!(image.config.process_args(), ["/bin/sh", "-c", "echo hi"]);
    assert_eq!(image.config.working_dir.as_deref(), Some("/work"));
    assert_eq!(image.config.user.as_deref(), Some("1000:1000"));

    // Base layer.
    assert_eq!(
        fs::read(lower.join("etc/hosts")).unwrap(),
        b"127.0.0.1 localhost\n"
    );
    let hosts = fs::metadata(lower.join("etc/hosts")).unwrap();
    assert_eq!(
        hosts.ino(),
        fs::metadata(lower.join("etc/hosts.link")).unwrap().ino(),
        "hard link"
    );
    assert_eq!(hosts.mtime(), MTIME as i64);
    assert_eq!(
        fs::read_link(lower.join("hosts")).unwrap(),
        Path::new("etc/hosts")
    );
    assert_eq!(
        fs::read_link(lower.join("abs")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert_eq!(fs::read(lower.join("a/b/c/deep")).unwrap(), b"deep\n");
    assert_eq!(
        fs::metadata(lower.join("a/b"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o755
    );
    let ro = fs::metadata(lower.join("ro")).unwrap();
    assert_eq!(ro.permissions().mode() & 0o7777, 0o555);
    assert_eq!(
        ro.mtime(),
        MTIME as i64,
        "directory times are set after their contents"
    );
    assert_eq!(
        fs::read(lower.join("ro/inside")).unwrap(),
        b"written before the dir turned read-only\n"
    );
    let suid = fs::metadata(lower.join("suid")).unwrap();
    assert_eq!((suid.uid(), suid.gid()), (1234, 5678));
    assert_eq!(
        suid.permissions().mode() & 0o7777,
        0o4755,
        "chown did not clear set-user-ID"
    );
    assert!(fs::metadata(lower.join("pipe"))
        .unwrap()
        .file_type()
        .is_fifo());
    assert_eq!(
        fs::metadata(lower).unwrap().permissions().mode() & 0o7777,
        0o755
    );

    // Top layer: overlayfs whiteouts and opaque dir.
    assert!(is_whiteout(&upper.join("etc/gone")));
    assert!(!upper.join("etc/.wh.gone").exists());
    assert!(is_whiteout(&upper.join("ghost")));
    assert_eq!(fs::read(upper.join("both")).unwrap(), b"kept\n");
    assert_eq!(
        xattr(&upper.join("var/cache"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(xattr(&upper.join("var"), "trusted.overlay.opaque"), None);
    assert!(!upper.join("var/cache/.wh..wh..opq").exists());
    assert_eq!(fs::read(upper.join("var/cache/new")).unwrap(), b"new\n");

    // The store lists both layers.
    let stored: Vec<Digest> = store
        .layers()
        .unwrap()
        .into_iter()
        .map(|l| l.digest)
        .collect();
    let mut expected: Vec<Digest> = image.layers.iter().map(|l| l.digest.clone()).collect();
    expected.sort();
    assert_eq!(stored, expected);
    assert!(tmp_entries(&store).is_empty());
    assert_eq!(
        image.layers[1].digest, image.layers[1].diff_id,
        "an uncompressed blob is its diff"
    );

    // What overlayfs makes of it: the whiteout hides the lower file, the opaque directory
    // hides the lower directory's contents.
    let merged = tmp.path().join("merged");
    fs::create_dir(&merged).unwrap();
    let lowerdir: Vec<_> = image
        .lower_dirs()
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let _mount = ReadOnlyOverlay::mount(&lowerdir.join(":"), &merged);
    assert_eq!(
        fs::read(merged.join("etc/hosts")).unwrap(),
        b"127.0.0.1 localhost\n"
    );
    assert!(!merged.join("etc/gone").exists());
    assert!(!merged.join("var/cache/old").exists());
    assert_eq!(fs::read(merged.join("var/cache/new")).unwrap(), b"new\n");
    assert_eq!(fs::read(merged.join("both")).unwrap(), b"kept\n");
    assert!(fs::symlink_metadata(merged.join("ghost")).is_err());
}

/// A read-only overlay of lower layers only, unmounted on drop.
struct ReadOnlyOverlay(CString);

impl ReadOnlyOverlay {
    fn mount(lowerdir: &str, target: &Path) -> ReadOnlyOverlay {
        let target = CString::new(target.as_os_str().as_bytes()).unwrap();
        let data = CString::new(format!("lowerdir={lowerdir}")).unwrap();
        // SAFETY: valid C strings for the duration of the call.
        let ret = unsafe {
            libc::mount(
                c"overlay".as_ptr(),
                target.as_ptr(),
                c"overlay".as_ptr(),
                libc::MS_RDONLY,
                data.as_ptr().cast(),
            )
        };
        assert_eq!(ret, 0, "mount overlay: {}", std::io::Error::last_os_error());
        ReadOnlyOverlay(target)
    }
}

impl Drop for ReadOnlyOverlay {
    fn drop(&mut self) {
        // SAFETY: a valid C string for the duration of the call.
        unsafe { libc::umount2(self.0.as_ptr(), libc::MNT_DETACH) };
    }
}

#[test]
fn user_xattr_namespace_for_rootless_overlays() {
    let tmp = TempDir::new("image-userxattr");
    let layout = Layout::image(
        tmp.path().join("layout"),
        &[(
            &[
                E::Dir("d/", 0o755),
                E::File("d/.wh..wh..opq", b"", 0o644),
                E::File("d/f", b"f", 0o644),
                E::File("d/.wh.gone", b"", 0o644),
                E::Dir("ro/", 0o500),
                E::File("ro/f", b"f", 0o400),
            ],
            Comp::Gzip,
        )],
        None,
    );
    let root = tmp.path().join("store");
    let store =
        LayerStore::open_with(&root, StoreOptions::new().opaque_xattr(OpaqueXattr::User)).unwrap();
    let image = store.import(&layout.dir, None).unwrap();
    let dir = image.layers[0].path.join("d");
    // Whiteouts need no privilege (a character device 0:0 is exempt from CAP_MKNOD).
    assert!(is_whiteout(&dir.join("gone")));
    assert_eq!(
        xattr(&dir, "user.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(xattr(&dir, "trusted.overlay.opaque"), None);

    // The namespace is fixed when the store is created.
    match LayerStore::open(&root) {
        Err(Error::InvalidValue {
            what: "opaque xattr namespace",
            ..
        }) => {}
        other => panic!("expected a namespace mismatch, got {other:?}"),
    }
    let store =
        LayerStore::open_with(&root, StoreOptions::new().opaque_xattr(OpaqueXattr::User)).unwrap();
    // Removal copes with read-only directories, also without privilege.
    assert_eq!(store.gc(&[]).unwrap().len(), 1);
    assert!(!image.layers[0].path.exists());
}

#[test]
fn importing_twice_and_shared_base_layers_reuse_directories() {
    let tmp = TempDir::new("image-share");
    let base: &[E<'_>] = &[E::File("base", b"shared base\n", 0o644)];
    let one = Layout::image(
        tmp.path().join("one"),
        &[
            (base, Comp::Gzip),
            (&[E::File("one", b"1", 0o644)], Comp::Plain),
        ],
        None,
    );
    let two = Layout::image(
        tmp.path().join("two"),
        &[
            (base, Comp::Gzip),
            (&[E::File("two", b"2", 0o644)], Comp::Gzip),
        ],
        Some("v2"),
    );

    let store = LayerStore::open(tmp.path().join("store")).unwrap();
    let first = store.import(&one.dir, None).unwrap();
    let marker = first.layers[0].path.join("base");
    let inode = fs::metadata(&marker).unwrap().ino();

    let again = store.import(&one.dir, None).unwrap();
    assert_eq!(
        again, first,
        "importing twice gives the same image and directories"
    );
    assert_eq!(
        fs::metadata(&marker).unwrap().ino(),
        inode,
        "the layer was not unpacked again"
    );

    let other = store.import(&two.dir, Some("v2")).unwrap();
    assert_eq!(
        other.layers[0].path, first.layers[0].path,
        "the base layer is shared"
    );
    assert_ne!(other.layers[1].path, first.layers[1].path);
    assert_eq!(store.layers().unwrap().len(), 3);

    // A second handle on the same store sees the same layers.
    let reopened = LayerStore::open(tmp.path().join("store")).unwrap();
    assert_eq!(reopened.import(&two.dir, None).unwrap(), other);
    assert_eq!(
        reopened.layer(&other.layers[1].digest).unwrap().unwrap(),
        other.layers[1]
    );
}

#[test]
fn concurrent_imports_of_the_same_layers_unpack_them_once() {
    let tmp = TempDir::new("image-concurrent");
    let files: Vec<String> = (0..200).map(|i| format!("dir{}/file{i}", i % 10)).collect();
    let entries: Vec<E<'_>> = files
        .iter()
        .map(|f| E::File(f, b"some content\n", 0o644))
        .collect();
    let layout = Layout::image(
        tmp.path().join("layout"),
        &[
            (&entries, Comp::Gzip),
            (&[E::File("x", b"x", 0o644)], Comp::Plain),
        ],
        None,
    );
    let root = tmp.path().join("store");
    let images: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    LayerStore::open(&root)
                        .unwrap()
                        .import(&layout.dir, None)
                        .unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(images.windows(2).all(|w| w[0] == w[1]));
    let store = LayerStore::open(&root).unwrap();
    assert_eq!(store.layers().unwrap().len(), 2);
    assert!(
        tmp_entries(&store).is_empty(),
        "no temporary directory left: {:?}",
        tmp_entries(&store)
    );
    let count = fs::read_dir(images[0].layers[0].path.join("dir3"))
        .unwrap()
        .count();
    assert_eq!(count, 20);
}

#[test]
fn digest_and_size_mismatches_are_refused_and_leave_nothing() {
    let tmp = TempDir::new("image-digest");
    let store = LayerStore::open(tmp.path().join("store")).unwrap();
    let entries: &[E<'_>] = &[E::File("f", b"content of f\n", 0o644)];

    // A layer blob corrupted in place (same size).
    let layout = Layout::image(tmp.path().join("layer"), &[(entries, Comp::Plain)], None);
    let manifest: Value =
        serde_json::from_slice(&fs::read(layout.dir.join("index.json")).unwrap()).unwrap();
    let manifest_blob = layout.blob_path(manifest["manifests"][0]["digest"].as_str().unwrap());
    let manifest: Value = serde_json::from_slice(&fs::read(&manifest_blob).unwrap()).unwrap();
    let layer_digest = manifest["layers"][0]["digest"].as_str().unwrap().to_owned();
    let layer_blob = layout.blob_path(&layer_digest);
    let mut bytes = fs::read(&layer_blob).unwrap();
    let at = bytes.windows(7).position(|w| w == b"content").unwrap();
    bytes[at] = b'C';
    fs::write(&layer_blob, &bytes).unwrap();
    match store.import(&layout.dir, None) {
        Err(Error::DigestMismatch {
            what: "layer",
            expected,
            ..
        }) => assert_eq!(expected.as_str(), layer_digest),
        other => panic!("expected a layer digest mismatch, got {other:?}"),
    }
    assert!(store.layers().unwrap().is_empty());
    assert!(tmp_entries(&store).is_empty());

    // The same, gzip-compressed: the corrupt stream may fail to decompress, but the digest is
    // what is reported.
    let layout = Layout::image(tmp.path().join("gz"), &[(entries, Comp::Gzip)], None);
    let manifest: Value =
        serde_json::from_slice(&fs::read(layout.dir.join("index.json")).unwrap()).unwrap();
    let manifest: Value = serde_json::from_slice(
        &fs::read(layout.blob_path(manifest["manifests"][0]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    let layer_blob = layout.blob_path(manifest["layers"][0]["digest"].as_str().unwrap());
    let mut bytes = fs::read(&layer_blob).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&layer_blob, &bytes).unwrap();
    assert!(matches!(
        store.import(&layout.dir, None),
        Err(Error::DigestMismatch { what: "layer", .. })
    ));
    assert!(store.layers().unwrap().is_empty());
    assert!(tmp_entries(&store).is_empty());

    // A layer blob of another size.
    fs::write(&layer_blob, b"short").unwrap();
    assert!(matches!(
        store.import(&layout.dir, None),
        Err(Error::SizeMismatch { what: "layer", .. })
    ));

    // A corrupt manifest.
    let layout = Layout::image(tmp.path().join("manifest"), &[(entries, Comp::Plain)], None);
    let index: Value =
        serde_json::from_slice(&fs::read(layout.dir.join("index.json")).unwrap()).unwrap();
    let manifest_blob = layout.blob_path(index["manifests"][0]["digest"].as_str().unwrap());
    let mut bytes = fs::read(&manifest_blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] = b' ';
    fs::write(&manifest_blob, &bytes).unwrap();
    assert!(matches!(
        store.import(&layout.dir, None),
        Err(Error::DigestMismatch {
            what: "manifest",
            ..
        })
    ));

    // A config whose diff_id does not match the layer.
    let mut layout = Layout::new(tmp.path().join("diffid"));
    let (descriptor, _) = layout.layer(&tar_of(entries), Comp::Gzip);
    let manifest = layout.manifest(
        &[(descriptor, sha(b"something else"))],
        host_arch(),
        json!({}),
    );
    layout.tag(manifest, None);
    assert!(matches!(
        store.import(&layout.dir, None),
        Err(Error::DigestMismatch {
            what: "layer diff_id",
            ..
        })
    ));
    assert!(store.layers().unwrap().is_empty());
    assert!(tmp_entries(&store).is_empty());
}

/// Imports a one-layer image of `entries` and expects an [`Error::UnsafeEntry`] for `path`.
fn expect_refused(tag: &str, entries: &[E<'_>], path: &str) {
    let tmp = TempDir::new(tag);
    let layout = Layout::image(tmp.path().join("layout"), &[(entries, Comp::Plain)], None);
    let store = LayerStore::open(tmp.path().join("store")).unwrap();
    match store.import(&layout.dir, None) {
        Err(Error::UnsafeEntry { path: p, .. }) => assert_eq!(p, path),
        other => panic!("{tag}: expected entry {path:?} to be refused, got {other:?}"),
    }
    assert!(
        store.layers().unwrap().is_empty(),
        "{tag}: a layer was stored"
    );
    assert!(
        tmp_entries(&store).is_empty(),
        "{tag}: left {:?}",
        tmp_entries(&store)
    );
    let mut names: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["layout", "store"],
        "{tag}: something was written beside the store"
    );
}

#[test]
fn path_traversal_is_refused() {
    expect_refused(
        "image-dotdot",
        &[E::File("../escape", b"x", 0o644)],
        "../escape",
    );
    expect_refused(
        "image-dotdot-deep",
        &[E::Dir("a/", 0o755), E::File("a/../../escape", b"x", 0o644)],
        "a/../../escape",
    );
    expect_refused(
        "image-abs",
        &[E::File("/abs/path", b"x", 0o644)],
        "/abs/path",
    );
    expect_refused(
        "image-hardlink-out",
        &[E::Hardlink("passwd", "../../etc/passwd")],
        "passwd",
    );
    expect_refused(
        "image-hardlink-abs",
        &[E::Hardlink("passwd", "/etc/passwd")],
        "passwd",
    );
    expect_refused(
        "image-hardlink-missing",
        &[E::Hardlink("later", "not/yet")],
        "later",
    );
}

#[test]
fn symlinks_are_never_followed_while_extracting() {
    let passwd = fs::read("/etc/passwd").unwrap();
    let passwd_mtime = fs::metadata("/etc/passwd").unwrap().mtime();
    expect_refused(
        "image-symlink-etc",
        &[
            E::Symlink("evil", "/etc"),
            E::File("evil/passwd", b"pwned\n", 0o644),
        ],
        "evil/passwd",
    );
    assert_eq!(
        fs::read("/etc/passwd").unwrap(),
        passwd,
        "/etc/passwd was written"
    );
    assert_eq!(fs::metadata("/etc/passwd").unwrap().mtime(), passwd_mtime);
    assert!(!Path::new("/etc/.wh.x").exists());

    // Through a symlink to a directory of the layer itself.
    expect_refused(
        "image-symlink-dir",
        &[
            E::Dir("d/", 0o755),
            E::Symlink("link", "d"),
            E::File("link/file", b"x", 0o644),
        ],
        "link/file",
    );
    // A relative symlink escaping the layer, then a directory and a whiteout through it.
    expect_refused(
        "image-symlink-up",
        &[E::Symlink("up", "../.."), E::Dir("up/dir/", 0o755)],
        "up/dir/",
    );
    expect_refused(
        "image-symlink-wh",
        &[
            E::Symlink("etc", "/etc"),
            E::File("etc/.wh.passwd", b"", 0o644),
        ],
        "etc/.wh.passwd",
    );
    expect_refused(
        "image-symlink-opq",
        &[
            E::Symlink("etc", "/etc"),
            E::File("etc/.wh..wh..opq", b"", 0o644),
        ],
        "etc/.wh..wh..opq",
    );
    // A hard link whose target goes through a symlink.
    expect_refused(
        "image-hardlink-symlink",
        &[
            E::Symlink("etc", "/etc"),
            E::Hardlink("passwd", "etc/passwd"),
        ],
        "passwd",
    );

    // A file entry that replaces a symlink replaces the link, not its target.
    let tmp = TempDir::new("image-replace-symlink");
    let victim = tmp.path().join("victim");
    fs::write(&victim, b"untouched").unwrap();
    let target = victim.to_str().unwrap().to_owned();
    let layout = Layout::image(
        tmp.path().join("layout"),
        &[(
            &[E::Symlink("f", &target), E::File("f", b"replaced", 0o644)],
            Comp::Plain,
        )],
        None,
    );
    let store = LayerStore::open(tmp.path().join("store")).unwrap();
    let image = store.import(&layout.dir, None).unwrap();
    assert_eq!(fs::read(&victim).unwrap(), b"untouched");
    assert_eq!(
        fs::read(image.layers[0].path.join("f")).unwrap(),
        b"replaced"
    );
}

#[test]
fn long_names_fifos_and_no_devices() {
    let tmp = TempDir::new("image-long");
    let long = format!("{}/{}", "d".repeat(120), "f".repeat(150));
    let pax_path = format!("p/{}", "x".repeat(200));
    let pax = [
        ("path", pax_path.as_str()),
        ("mtime", "1234567890.25"),
        ("SCHILY.xattr.user.palisade", "yes"),
        ("SCHILY.xattr.user.overlay.opaque", "y"),
        ("SCHILY.xattr.trusted.overlay.redirect", "/etc"),
    ];
    let entries = [
        E::LongFile(&long, b"long\n"),
        E::Pax(&pax, b"pax\n"),
        E::CharDev("null", 1, 3),
        E::Fifo("fifo"),
    ];
    let layout = Layout::image(tmp.path().join("layout"), &[(&entries, Comp::Gzip)], None);

    let store = LayerStore::open(tmp.path().join("store")).unwrap();
    let image = store.import(&layout.dir, None).unwrap();
    let dir = &image.layers[0].path;
    assert_eq!(fs::read(dir.join(&long)).unwrap(), b"long\n");
    let pax_file = dir.join(&pax_path);
    assert_eq!(fs::read(&pax_file).unwrap(), b"pax\n");
    assert!(!dir.join("placeholder").exists());
    assert_eq!(fs::metadata(&pax_file).unwrap().mtime(), 1_234_567_890);
    // User xattrs are kept; overlayfs's own and trusted ones from an image are not.
    assert_eq!(
        xattr(&pax_file, "user.palisade").as_deref(),
        Some(&b"yes"[..])
    );
    assert_eq!(xattr(&pax_file, "user.overlay.opaque"), None);
    assert_eq!(xattr(&pax_file, "trusted.overlay.redirect"), None);
    assert!(fs::metadata(dir.join("fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    // Devices are never created, even as root: see `device_entries_are_never_created`.
    assert!(fs::symlink_metadata(dir.join("null")).is_err());
    assert_eq!(image.layers[0].skipped_devices, 1);
}

#[test]
fn zstd_layers() {
    let tmp = TempDir::new("image-zstd");
    let entries = [
        E::Dir("z/", 0o755),
        E::File("z/file", b"zstd content\n", 0o644),
    ];
    let layout = Layout::image(tmp.path().join("layout"), &[(&entries, Comp::Zstd)], None);
    let store = LayerStore::open(tmp.path().join("store")).unwrap();
    let image = store.import(&layout.dir, None).unwrap();
    assert_eq!(
        fs::read(image.layers[0].path.join("z/file")).unwrap(),
        b"zstd content\n"
    );

    // Written by the reference implementation, in two frames with a skippable frame between
    // them, when the `zstd` tool is there.
    let Ok(status) = std::process::Command::new("zstd").arg("--version").output() else {
        eprintln!("zstd tool not found: the multi-frame case is left out");
        return;
    };
    assert!(status.status.success());
    let tar = tar_of(&[
        E::File("one", b"first frame\n", 0o644),
        E::File("two", &[7u8; 100_000], 0o644),
    ]);
    let (first, second) = tar.split_at(tar.len() / 3);
    let compress = |data: &[u8], name: &str| {
        let path = tmp.path().join(name);
        fs::write(&path, data).unwrap();
        let ok = std::process::Command::new("zstd")
            .args(["-q", "-f", "-19"])
            .arg(&path)
            .status()
            .unwrap();
        assert!(ok.success());
        fs::read(tmp.path().join(format!("{name}.zst"))).unwrap()
    };
    let mut blob = compress(first, "part1");
    blob.extend_from_slice(&0x184D2A50u32.to_le_bytes());
    blob.extend_from_slice(&4u32.to_le_bytes());
    blob.extend_from_slice(b"skip");
    blob.extend(compress(second, "part2"));
    let mut layout = Layout::new(tmp.path().join("cli"));
    let layer = (
        layout.blob("application/vnd.oci.image.layer.v1.tar+zstd", &blob),
        sha(&tar),
    );
    let manifest = layout.manifest(&[layer], host_arch(), json!({}));
    layout.tag(manifest, None);
    let image = store.import(&layout.dir, None).unwrap();
    assert_eq!(
        fs::read(image.layers[0].path.join("one")).unwrap(),
        b"first frame\n"
    );
    assert_eq!(
        fs::read(image.layers[0].path.join("two")).unwrap(),
        vec![7u8; 100_000]
    );
}

#[test]
fn docker_media_types_and_unsupported_ones() {
    let tmp = TempDir::new("image-media");
    let entries = [E::File("docker", b"gzip\n", 0o644)];
    let layout = Layout::image(
        tmp.path().join("docker"),
        &[(&entries, Comp::DockerGzip)],
        None,
    );
    let store = LayerStore::open(tmp.path().join("store")).unwrap();
    let image = store.import(&layout.dir, None).unwrap();
    assert_eq!(
        fs::read(image.layers[0].path.join("docker")).unwrap(),
        b"gzip\n"
    );

    let mut layout = Layout::new(tmp.path().join("bzip"));
    let layer = (
        layout.blob("application/x-bzip2-layer", b"BZh9"),
        sha(b"whatever"),
    );
    let manifest = layout.manifest(&[layer], host_arch(), json!({}));
    layout.tag(manifest, None);
    match store.import(&layout.dir, None) {
        Err(Error::UnsupportedMediaType {
            what: "layer",
            media_type,
        }) => assert_eq!(media_type, "application/x-bzip2-layer"),
        other => panic!("expected an unsupported media type, got {other:?}"),
    }

    // Not a layout at all.
    let empty = tmp.path().join("empty");
    fs::create_dir(&empty).unwrap();
    assert!(matches!(
        store.import(&empty, None),
        Err(Error::InvalidImage { .. })
    ));
    // A descriptor with a digest that would be a path.
    let mut layout = Layout::new(tmp.path().join("evil-digest"));
    layout.tag(json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:../../../etc/passwd", "size": 3}), None);
    assert!(matches!(
        store.import(&layout.dir, None),
        Err(Error::InvalidDigest { .. })
    ));
}

#[test]
fn tags_and_nested_indexes_choose_the_manifest() {
    let tmp = TempDir::new("image-index");
    let mut layout = Layout::new(tmp.path().join("layout"));
    let layer = layout.layer(&tar_of(&[E::File("f", b"f", 0o644)]), Comp::Gzip);
    let a = layout.manifest(
        std::slice::from_ref(&layer),
        host_arch(),
        json!({"Cmd": ["a"]}),
    );
    let b = layout.manifest(
        std::slice::from_ref(&layer),
        host_arch(),
        json!({"Cmd": ["b"]}),
    );
    layout.tag(a, Some("a"));
    layout.tag(b, Some("b"));
    let store = LayerStore::open(tmp.path().join("store")).unwrap();
    assert_eq!(
        store.import(&layout.dir, Some("a")).unwrap().config.cmd,
        ["a"]
    );
    assert_eq!(
        store.import(&layout.dir, Some("b")).unwrap().config.cmd,
        ["b"]
    );
    match store.import(&layout.dir, None) {
        Err(Error::AmbiguousImage { count: 2, .. }) => {}
        other => panic!("expected an ambiguous image, got {other:?}"),
    }
    match store.import(&layout.dir, Some("c")) {
        Err(Error::TagNotFound { tag, available, .. }) => {
            assert_eq!(tag, "c");
            assert_eq!(available, ["a", "b"]);
        }
        other => panic!("expected a missing tag, got {other:?}"),
    }

    // A manifest list: the manifest for this machine is chosen.
    let mut layout = Layout::new(tmp.path().join("multi"));
    let layer = layout.layer(&tar_of(&[E::File("f", b"f", 0o644)]), Comp::Gzip);
    let other_arch = if host_arch() == "arm64" {
        "amd64"
    } else {
        "arm64"
    };
    let mut foreign = layout.manifest(
        std::slice::from_ref(&layer),
        other_arch,
        json!({"Cmd": ["foreign"]}),
    );
    foreign["platform"] = json!({"os": "linux", "architecture": other_arch});
    let mut attestation = layout.manifest(std::slice::from_ref(&layer), "unknown", json!({}));
    attestation["platform"] = json!({"os": "unknown", "architecture": "unknown"});
    let mut native = layout.manifest(
        std::slice::from_ref(&layer),
        host_arch(),
        json!({"Cmd": ["native"]}),
    );
    native["platform"] = json!({"os": "linux", "architecture": host_arch()});
    let list = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [foreign.clone(), attestation, native],
    });
    let list = layout.blob(
        "application/vnd.oci.image.index.v1+json",
        list.to_string().as_bytes(),
    );
    layout.tag(list, Some("multi"));
    let image = store.import(&layout.dir, None).unwrap();
    assert_eq!(image.config.cmd, ["native"]);
    assert_eq!(image.config.architecture.as_deref(), Some(host_arch()));

    // A list without this machine's platform.
    let mut layout = Layout::new(tmp.path().join("foreign"));
    let layer = layout.layer(&tar_of(&[E::File("f", b"f", 0o644)]), Comp::Gzip);
    let mut foreign = layout.manifest(&[layer], other_arch, json!({}));
    foreign["platform"] = json!({"os": "linux", "architecture": other_arch});
    let list = json!({"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json", "manifests": [foreign]});
    let list = layout.blob(
        "application/vnd.docker.distribution.manifest.list.v2+json",
        list.to_string().as_bytes(),
    );
    layout.tag(list, None);
    match store.import(&layout.dir, None) {
        Err(Error::NoMatchingPlatform {
            os: "linux",
            architecture,
            ..
        }) => assert_eq!(architecture, host_arch()),
        other => panic!("expected no matching platform, got {other:?}"),
    }
}

#[test]
fn remove_layer_and_gc() {
    let tmp = TempDir::new("image-gc");
    let base: &[E<'_>] = &[E::Dir("ro/", 0o500), E::File("ro/base", b"base", 0o400)];
    let one = Layout::image(
        tmp.path().join("one"),
        &[
            (base, Comp::Gzip),
            (&[E::File("one", b"1", 0o644)], Comp::Plain),
        ],
        None,
    );
    let two = Layout::image(
        tmp.path().join("two"),
        &[
            (base, Comp::Gzip),
            (&[E::File("two", b"2", 0o644)], Comp::Plain),
        ],
        None,
    );
    let store = LayerStore::open(tmp.path().join("store")).unwrap();
    let first = store.import(&one.dir, None).unwrap();
    let second = store.import(&two.dir, None).unwrap();
    assert_eq!(store.layers().unwrap().len(), 3);

    // A leftover of a crashed import.
    let stale = store
        .root()
        .join("tmp")
        .join(format!("palisade-{}-1-0", first.layers[1].digest.hex()));
    fs::create_dir_all(stale.join("diff/x")).unwrap();

    let removed = store.gc(&[&first]).unwrap();
    assert_eq!(removed, [second.layers[1].digest.clone()]);
    assert!(!second.layers[1].path.exists());
    assert!(first.layers.iter().all(|l| l.path.exists()));
    assert!(
        tmp_entries(&store).is_empty(),
        "stale temporary directories are removed"
    );

    assert!(store.remove_layer(&first.layers[0].digest).unwrap());
    assert!(!store.remove_layer(&first.layers[0].digest).unwrap());
    assert!(!first.layers[0].path.exists());
    assert_eq!(store.gc(&[]).unwrap(), [first.layers[1].digest.clone()]);
    assert!(store.layers().unwrap().is_empty());

    // Importing again brings the layers back.
    let again = store.import(&one.dir, None).unwrap();
    assert_eq!(again, first);
    assert_eq!(
        fs::read(again.layers[0].path.join("ro/base")).unwrap(),
        b"base"
    );
    // Read-only directories do not stop removal, with or without privilege.
    assert_eq!(store.gc(&[]).unwrap().len(), 2);
    assert!(store.layers().unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------------
// LayoutWriter

/// A base layer of every kind of entry the writer makes, with a file copied from `host`.
fn writer_base(host: &Path) -> LayerBuilder {
    let long_dir = format!("/{}", "l".repeat(120));
    let long_target = format!("/{}", "t".repeat(150));
    let mut base = LayerBuilder::new();
    base.dir("/", 0o755)
        .dir("/bin", 0o755)
        .file_from("/bin/tool", host, 0o4755)
        .symlink("/bin/sh", "tool")
        .hardlink("/bin/tool2", "/bin/tool")
        .dir("/etc", 0o755)
        .file("/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n", 0o644)
        .file("etc/gone", "lower only\n", 0o600)
        .dir("/tmp", 0o1777)
        .dir("/data", 0o755)
        .file("/data/a", "a\n", 0o644)
        .file("/data/b", "b\n", 0o644)
        .dir(&long_dir, 0o700)
        .file(format!("{long_dir}/{}", "f".repeat(150)), "long\n", 0o644)
        .symlink("/long-link", &long_target);
    base
}

fn writer_top() -> LayerBuilder {
    let mut top = LayerBuilder::new();
    top.dir("/etc", 0o755)
        .whiteout("/etc/gone")
        .file("/etc/top", "top\n", 0o644)
        .dir("/data", 0o755)
        .opaque("/data")
        .file("/data/c", "c\n", 0o644);
    top
}

fn writer_config() -> ImageConfig {
    let mut config = ImageConfig::default();
    config.env = vec!["PATH=/bin".into()];
    config.entrypoint = vec!["/bin/sh".into(), "-c".into()];
    config.cmd = vec!["echo hi".into()];
    config.working_dir = Some("/data".into());
    config.user = Some("0:0".into());
    config.labels.insert("org.example".into(), "yes".into());
    config.stop_signal = Some("SIGTERM".into());
    config
}

/// The names in a layout's `blobs/sha256/`, sorted.
fn blob_names(layout: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(layout.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn layout_writer_builds_images_the_store_imports() {
    let tmp = TempDir::new("image-writer");
    let host = tmp.path().join("host-tool");
    fs::write(&host, b"#!/bin/sh\necho tool\n").unwrap();
    let dir = tmp.path().join("layout");

    let mut writer = LayoutWriter::create(&dir).unwrap();
    let base = writer.add_layer(&writer_base(&host)).unwrap();
    let mut top = writer_top();
    top.compression(Compression::None).mtime(MTIME);
    let top = writer.add_layer(&top).unwrap();
    assert_eq!(writer.pending_layers(), [base.clone(), top.clone()]);
    assert_eq!(
        base.media_type(),
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    assert_eq!(top.media_type(), "application/vnd.oci.image.layer.v1.tar");
    assert_eq!(top.digest, top.diff_id, "an uncompressed blob is its diff");
    let manifest = writer.finish(Some("v1.0"), &writer_config()).unwrap();

    // The layout: oci-layout, index.json with the tag, every blob named by its digest.
    let oci_layout: Value =
        serde_json::from_slice(&fs::read(dir.join("oci-layout")).unwrap()).unwrap();
    assert_eq!(oci_layout, json!({"imageLayoutVersion": "1.0.0"}));
    let index: Value = serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(index["manifests"][0]["digest"], manifest.as_str());
    assert_eq!(
        index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
        "v1.0"
    );
    let names = blob_names(&dir);
    assert_eq!(
        names.len(),
        4,
        "two layers, a config, a manifest: {names:?}"
    );
    for name in &names {
        let bytes = fs::read(dir.join("blobs/sha256").join(name)).unwrap();
        assert_eq!(sha(&bytes), format!("sha256:{name}"));
    }
    let blob = fs::read(dir.join("blobs/sha256").join(base.digest.hex())).unwrap();
    assert_eq!(blob.len() as u64, base.size);

    let store = LayerStore::open_with(
        tmp.path().join("store"),
        StoreOptions::new().opaque_xattr(OpaqueXattr::User),
    )
    .unwrap();
    let image = store.import(&dir, Some("v1.0")).unwrap();
    assert_eq!(image.manifest_digest, manifest);
    let digests: Vec<_> = image
        .layers
        .iter()
        .map(|l| (&l.digest, &l.diff_id))
        .collect();
    assert_eq!(
        digests,
        [(&base.digest, &base.diff_id), (&top.digest, &top.diff_id)]
    );
    assert_eq!(image.config, {
        let mut expected = writer_config();
        expected.os = Some("linux".into());
        expected.architecture = Some(host_arch().into());
        expected
    });

    // The base layer.
    let lower = &image.layers[0].path;
    let tool = fs::metadata(lower.join("bin/tool")).unwrap();
    assert_eq!(
        fs::read(lower.join("bin/tool")).unwrap(),
        b"#!/bin/sh\necho tool\n"
    );
    assert_eq!(tool.permissions().mode() & 0o7777, 0o4755);
    assert_eq!(tool.mtime(), 0);
    if is_root() {
        assert_eq!((tool.uid(), tool.gid()), (0, 0));
    }
    assert_eq!(
        fs::metadata(lower.join("bin/tool2")).unwrap().ino(),
        tool.ino(),
        "hard link"
    );
    assert_eq!(
        fs::read_link(lower.join("bin/sh")).unwrap(),
        Path::new("tool")
    );
    assert_eq!(
        fs::read_link(lower.join("long-link")).unwrap(),
        PathBuf::from(format!("/{}", "t".repeat(150)))
    );
    let long = lower.join("l".repeat(120));
    assert_eq!(
        fs::metadata(&long).unwrap().permissions().mode() & 0o7777,
        0o700
    );
    assert_eq!(fs::read(long.join("f".repeat(150))).unwrap(), b"long\n");
    assert_eq!(
        fs::metadata(lower.join("tmp"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o1777
    );
    assert_eq!(
        fs::metadata(lower.join("etc/gone"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o600
    );
    assert!(lower.join("data/a").exists() && lower.join("data/b").exists());

    // The top layer: a whiteout, an opaque directory, and the builder's mtime.
    let upper = &image.layers[1].path;
    assert!(is_whiteout(&upper.join("etc/gone")));
    assert!(!upper.join("etc/.wh.gone").exists());
    assert_eq!(
        xattr(&upper.join("data"), "user.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert!(!upper.join("data/.wh..wh..opq").exists());
    assert_eq!(fs::read(upper.join("data/c")).unwrap(), b"c\n");
    assert_eq!(
        fs::metadata(upper.join("etc/top")).unwrap().mtime(),
        MTIME as i64
    );
}

#[test]
fn layout_writer_is_deterministic_and_layers_are_shared() {
    let tmp = TempDir::new("image-writer-share");
    let host = tmp.path().join("host-tool");
    fs::write(&host, vec![42u8; 100_000]).unwrap();

    // One layout of two images (tags) over the same base, another of one image.
    let one = tmp.path().join("one");
    let mut writer = LayoutWriter::create(&one).unwrap();
    let base = writer.add_layer(&writer_base(&host)).unwrap();
    let top = writer.add_layer(&writer_top()).unwrap();
    let mut config = ImageConfig::default();
    config.cmd = vec!["a".into()];
    let a = writer.finish_manifest(Some("a"), &config).unwrap();
    assert!(writer.pending_layers().is_empty());
    assert_eq!(writer.add_layer(&writer_base(&host)).unwrap(), base);
    let mut zstd = writer_top();
    zstd.compression(Compression::Zstd);
    let top_zstd = writer.add_layer(&zstd).unwrap();
    config.cmd = vec!["b".into()];
    let b = writer.finish_manifest(Some("b"), &config).unwrap();
    writer.close().unwrap();
    assert_ne!(a, b);
    assert_eq!(
        top_zstd.diff_id, top.diff_id,
        "the diff does not depend on compression"
    );
    assert_ne!(top_zstd.digest, top.digest);
    assert_eq!(
        top_zstd.media_type(),
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );

    let two = tmp.path().join("two");
    let mut writer = LayoutWriter::create(&two).unwrap();
    assert_eq!(writer.add_layer(&writer_base(&host)).unwrap(), base);
    assert_eq!(writer.add_layer(&writer_top()).unwrap(), top);
    let mut config = ImageConfig::default();
    config.cmd = vec!["a".into()];
    assert_eq!(
        writer.finish(None, &config).unwrap(),
        a,
        "the same layers and config give the same manifest"
    );
    assert_eq!(
        fs::read(one.join("blobs/sha256").join(base.digest.hex())).unwrap(),
        fs::read(two.join("blobs/sha256").join(base.digest.hex())).unwrap()
    );

    // The user xattr namespace, to run unprivileged too.
    let store = LayerStore::open_with(
        tmp.path().join("store"),
        StoreOptions::new().opaque_xattr(OpaqueXattr::User),
    )
    .unwrap();
    match store.import(&one, None) {
        Err(Error::AmbiguousImage { count: 2, .. }) => {}
        other => panic!("expected an ambiguous image, got {other:?}"),
    }
    let image_a = store.import(&one, Some("a")).unwrap();
    let image_b = store.import(&one, Some("b")).unwrap();
    let image_two = store.import(&two, None).unwrap();
    assert_eq!(image_a.config.cmd, ["a"]);
    assert_eq!(image_b.config.cmd, ["b"]);
    assert_eq!(
        image_a.layers[0].path, image_b.layers[0].path,
        "shared base"
    );
    assert_eq!(image_two, image_a, "the same image from another layout");
    assert_eq!(
        fs::read(image_b.layers[1].path.join("data/c")).unwrap(),
        b"c\n"
    );
    assert_eq!(
        fs::read(image_a.layers[0].path.join("bin/tool")).unwrap(),
        vec![42u8; 100_000]
    );
    assert_eq!(store.layers().unwrap().len(), 3, "base, gzip top, zstd top");
}

#[test]
fn layout_writer_refuses_bad_input_and_leaves_no_temporary_blob() {
    let tmp = TempDir::new("image-writer-bad");
    let dir = tmp.path().join("layout");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("stray"), b"x").unwrap();
    assert!(matches!(
        LayoutWriter::create(&dir),
        Err(Error::InvalidValue {
            what: "image layout directory",
            ..
        })
    ));
    fs::remove_file(dir.join("stray")).unwrap();
    let mut writer = LayoutWriter::create(&dir).unwrap();

    let refused = |writer: &mut LayoutWriter, layer: &LayerBuilder| -> Error {
        let err = writer.add_layer(layer).unwrap_err();
        assert!(blob_names(&dir).is_empty(), "left {:?}", blob_names(&dir));
        err
    };
    for (path, what) in [
        ("a/../b", "layer file"),
        ("/etc/.wh.passwd", "layer file"),
        ("/", "layer file"),
        ("", "layer file"),
    ] {
        let mut layer = LayerBuilder::new();
        layer.dir("/etc", 0o755).file(path, "x", 0o644);
        match refused(&mut writer, &layer) {
            Error::InvalidValue { what: w, value, .. } => {
                assert_eq!((w, value.as_str()), (what, path))
            }
            other => panic!("{path:?}: expected an invalid value, got {other:?}"),
        }
    }
    let mut layer = LayerBuilder::new();
    layer.whiteout("/");
    assert!(matches!(
        refused(&mut writer, &layer),
        Error::InvalidValue {
            what: "whiteout",
            ..
        }
    ));
    let mut layer = LayerBuilder::new();
    layer.hardlink("x", "../outside");
    assert!(matches!(
        refused(&mut writer, &layer),
        Error::InvalidValue {
            what: "hard link target",
            ..
        }
    ));
    let mut layer = LayerBuilder::new();
    layer.file_from("/bin/x", tmp.path().join("missing"), 0o755);
    match refused(&mut writer, &layer) {
        Error::Io {
            op: "open", path, ..
        } => assert_eq!(path, tmp.path().join("missing")),
        other => panic!("expected an open error, got {other:?}"),
    }
    let mut layer = LayerBuilder::new();
    layer.file_from("/bin/x", tmp.path(), 0o755);
    assert!(matches!(
        refused(&mut writer, &layer),
        Error::InvalidValue {
            what: "layer file source",
            ..
        }
    ));

    // Tags follow the annotation's grammar and are unique; a layout needs a manifest, and no
    // layer may be left out of every manifest.
    let mut layer = LayerBuilder::new();
    layer.file("f", "f", 0o644);
    let written: WrittenLayer = writer.add_layer(&layer).unwrap();
    assert_eq!(blob_names(&dir), [written.digest.hex()]);
    for bad in ["", "bad tag", "-x", "a//b", "a..b"] {
        assert!(
            matches!(
                writer.finish_manifest(Some(bad), &ImageConfig::default()),
                Err(Error::InvalidValue {
                    what: "image tag",
                    ..
                })
            ),
            "{bad:?} accepted"
        );
    }
    writer
        .finish_manifest(Some("ok"), &ImageConfig::default())
        .unwrap();
    writer.add_layer(&layer).unwrap();
    assert!(matches!(
        writer.finish_manifest(Some("ok"), &ImageConfig::default()),
        Err(Error::InvalidValue {
            what: "image tag",
            ..
        })
    ));
    assert!(matches!(
        writer.close(),
        Err(Error::InvalidValue {
            what: "image layout",
            ..
        })
    ));
    assert!(!dir.join("index.json").exists());
    let empty = LayoutWriter::create(tmp.path().join("empty")).unwrap();
    assert!(matches!(
        empty.close(),
        Err(Error::InvalidValue {
            what: "image layout",
            ..
        })
    ));
}

#[test]
fn layout_writer_image_mounts_as_an_overlay() {
    require_root!();
    let tmp = TempDir::new("image-writer-mount");
    let host = tmp.path().join("host-tool");
    fs::write(&host, b"tool").unwrap();
    let dir = tmp.path().join("layout");
    let mut writer = LayoutWriter::create(&dir).unwrap();
    writer.add_layer(&writer_base(&host)).unwrap();
    writer.add_layer(&writer_top()).unwrap();
    writer.finish(None, &ImageConfig::default()).unwrap();
    let store = LayerStore::open(tmp.path().join("store")).unwrap();
    let image = store.import(&dir, None).unwrap();

    let merged = tmp.path().join("merged");
    fs::create_dir(&merged).unwrap();
    let lowerdir: Vec<_> = image
        .lower_dirs()
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let _mount = ReadOnlyOverlay::mount(&lowerdir.join(":"), &merged);
    let mut data: Vec<_> = fs::read_dir(merged.join("data"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    data.sort();
    assert_eq!(data, ["c"], "the opaque directory hides the base's files");
    assert!(fs::symlink_metadata(merged.join("etc/gone")).is_err());
    assert_eq!(fs::read(merged.join("etc/top")).unwrap(), b"top\n");
    assert_eq!(fs::read(merged.join("bin/sh")).unwrap(), b"tool");
}

mod digest {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parse_accepts_only_canonical_sha256() {
        let hex = "a".repeat(64);
        let d = Digest::parse(&format!("sha256:{hex}")).unwrap();
        assert_eq!(d.hex(), hex);
        assert_eq!(d.algorithm(), "sha256");
        assert_eq!(d.to_string(), format!("sha256:{hex}"));
        assert_eq!(format!("sha256:{hex}").parse::<Digest>().unwrap(), d);
        for bad in [
            "",
            "sha256:",
            "sha256",
            &format!("sha512:{hex}"),
            &format!("SHA256:{hex}"),
            &format!("sha256:{}", "A".repeat(64)),
            &format!("sha256:{}", "a".repeat(63)),
            &format!("sha256:{}", "a".repeat(65)),
            &format!("sha256:{}/..", "a".repeat(61)),
            "sha256:../../../../../../../../../../../../../../../../../etc/passwd",
            &format!(" sha256:{hex}"),
            &format!("sha256:{hex}\n"),
        ] {
            assert!(
                matches!(Digest::parse(bad), Err(Error::InvalidDigest { .. })),
                "{bad:?} accepted"
            );
        }
        assert_eq!(
            Digest::of(b"").as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC*") {
            let _ = Digest::parse(&s);
        }

        #[test]
        fn parse_never_panics_near_valid(s in "(sha256|sha512|SHA256)?:?[0-9a-fA-F./]{0,70}") {
            if let Ok(d) = Digest::parse(&s) {
                prop_assert_eq!(d.as_str(), s.as_str());
                prop_assert_eq!(d.hex().len(), 64);
                prop_assert!(d.hex().bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
            }
        }

        #[test]
        fn valid_digests_round_trip(bytes in proptest::collection::vec(any::<u8>(), 32)) {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            let text = format!("sha256:{hex}");
            let d = Digest::parse(&text).unwrap();
            prop_assert_eq!(d.to_string(), text.clone());
            prop_assert_eq!(d.hex(), hex.as_str());
            prop_assert_eq!(Digest::parse(d.as_str()).unwrap(), d.clone());
            let sum: [u8; 32] = bytes.clone().try_into().unwrap();
            prop_assert_eq!(Digest::from_sha256(sum), d);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The store as a boundary: private directories, sparse files and the expansion bound, devices

fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

/// Every directory of the store's own: the root, `layers/`, `layers/sha256/`, each layer's
/// directory, `locks/`, `images/`, `quarantine/`, `tmp/` and what is in it.
fn store_dirs(store: &LayerStore) -> Vec<PathBuf> {
    let root = store.root();
    let mut dirs = vec![
        root.to_path_buf(),
        root.join("layers"),
        root.join("layers/sha256"),
        root.join("locks"),
        root.join("images"),
        root.join("quarantine"),
        root.join("tmp"),
    ];
    for parent in [root.join("layers/sha256"), root.join("tmp")] {
        for entry in fs::read_dir(parent).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                dirs.push(entry.path());
            }
        }
    }
    dirs
}

fn assert_private(store: &LayerStore) {
    for dir in store_dirs(store) {
        assert_eq!(mode_of(&dir), 0o700, "{} is not private", dir.display());
    }
}

/// A layer whose root the image gives mode 0750, with a set-user-ID file.
fn private_test_image(dir: PathBuf) -> Layout {
    let entries = [
        E::Dir("./", 0o750),
        E::Dir("bin/", 0o755),
        E::File("bin/suid", b"#!/bin/sh\n", 0o4755),
    ];
    let second = [E::File("two", b"2\n", 0o644)];
    Layout::image(dir, &[(&entries, Comp::Gzip), (&second, Comp::Plain)], None)
}

fn check_private_store(store: &LayerStore, image: &palisade_image::Image) {
    assert_private(store);
    assert_eq!(store_dirs(store).len(), 9, "{:?}", store_dirs(store));
    // The layers' own trees keep the image's modes: the root of the first is 0750, that of
    // the second (no entry for it) 0755.
    assert_eq!(mode_of(&image.layers[0].path), 0o750);
    assert_eq!(mode_of(&image.layers[1].path), 0o755);
    assert_eq!(mode_of(&image.layers[0].path.join("bin")), 0o755);
    if is_root() {
        assert_eq!(mode_of(&image.layers[0].path.join("bin/suid")), 0o4755);
    }
}

#[test]
fn store_directories_are_private() {
    let tmp = TempDir::new("image-private");
    let layout = private_test_image(tmp.path().join("layout"));
    let store = LayerStore::open(tmp.path().join("a/b/store")).unwrap();
    assert_private(&store);
    let image = store.import(&layout.dir, None).unwrap();
    check_private_store(&store, &image);
    // The root's parents are not the store's: they get the usual modes.
    assert_ne!(mode_of(&tmp.path().join("a/b")), 0o700);
    // A failed import leaves no temporary directory behind, and a later one is private too.
    let other = private_test_image(tmp.path().join("layout2"));
    let image = store.import(&other.dir, None).unwrap();
    check_private_store(&store, &image);
}

#[test]
fn a_loose_store_is_tightened_when_opened() {
    let tmp = TempDir::new("image-tighten");
    let layout = private_test_image(tmp.path().join("layout"));
    let root = tmp.path().join("store");
    // A root made beforehand, world-writable, as an administrator might.
    fs::create_dir(&root).unwrap();
    fs::set_permissions(&root, fs::Permissions::from_mode(0o777)).unwrap();
    let image = {
        let store = LayerStore::open(&root).unwrap();
        assert_eq!(mode_of(&root), 0o700);
        store.import(&layout.dir, None).unwrap()
    };
    // What an older version of the store left: everything world-readable and traversable,
    // and a temporary directory of a live process (this one), which opening leaves alone; one
    // of no known owner is collected.
    let start = own_start_time();
    let live = root.join(format!(
        "tmp/palisade-work-{}-{start}-0",
        std::process::id()
    ));
    fs::create_dir(&live).unwrap();
    fs::create_dir(root.join("tmp/palisade-leftover")).unwrap();
    let store = LayerStore::open(&root).unwrap();
    assert!(!root.join("tmp/palisade-leftover").exists());
    let dirs = store_dirs(&store);
    assert_eq!(dirs.len(), 10, "{dirs:?}");
    for dir in &dirs {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    }
    fs::set_permissions(&root, fs::Permissions::from_mode(0o2777)).unwrap();
    drop(store);
    let store = LayerStore::open(&root).unwrap();
    assert_private(&store);
    // The layers' trees are untouched.
    assert_eq!(mode_of(&image.layers[0].path), 0o750);
    assert_eq!(mode_of(&image.layers[1].path), 0o755);
    assert_eq!(store.import(&layout.dir, None).unwrap(), image);
    assert!(live.exists());
}

/// This process's start time: field 22 of `/proc/self/stat` (`proc_pid_stat(5)`), which the
/// store puts in its temporary names.
fn own_start_time() -> u64 {
    let stat = fs::read_to_string("/proc/self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 1..];
    after.split_whitespace().nth(19).unwrap().parse().unwrap()
}

#[test]
fn a_rootless_store_is_private_to_its_owner() {
    require_root!();
    let (passed, text) = run_ignored_test_as(
        64_001,
        "rootless_store_inner",
        &[("PALISADE_ROOTLESS_STORE", "1")],
    );
    assert!(passed, "{text}");
}

/// Runs only as the unprivileged user of `a_rootless_store_is_private_to_its_owner`.
#[test]
#[ignore = "run by a_rootless_store_is_private_to_its_owner"]
fn rootless_store_inner() {
    assert!(std::env::var_os("PALISADE_ROOTLESS_STORE").is_some());
    assert!(!is_root());
    let tmp = TempDir::new("image-rootless-private");
    let layout = private_test_image(tmp.path().join("layout"));
    let root = tmp.path().join("store");
    fs::create_dir(&root).unwrap();
    fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
    let store =
        LayerStore::open_with(&root, StoreOptions::new().opaque_xattr(OpaqueXattr::User)).unwrap();
    let image = store.import(&layout.dir, None).unwrap();
    check_private_store(&store, &image);
    assert_eq!(
        fs::metadata(&root).unwrap().uid(),
        // SAFETY: getuid cannot fail.
        unsafe { libc::getuid() }
    );
}

/// Reads `len` bytes of `path` at `offset`.
fn read_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; len];
    fs::File::open(path)
        .unwrap()
        .read_exact_at(&mut buf, offset)
        .unwrap();
    buf
}

const GIB: u64 = 1 << 30;

#[test]
fn sparse_files_are_unpacked_with_holes() {
    let tmp = TempDir::new("image-sparse");
    let head = [b'h'; 512];
    let middle = [b'm'; 1024];
    let many: Vec<(u64, Vec<u8>)> = (0..30u64)
        .map(|i| (i << 20, vec![b'a' + (i % 26) as u8; 512]))
        .collect();
    let mut many_refs: Vec<(u64, &[u8])> = many.iter().map(|(o, d)| (*o, &d[..])).collect();
    many_refs.push((31 << 20, b""));
    let entries = [
        // 1 GiB with data at the start, in the middle and at the very end.
        E::Sparse(
            "big",
            GIB,
            &[(0, &head), (GIB / 2, &middle), (GIB - 5, b"tail\n")],
        ),
        // A trailing hole (a last segment of no data at the logical size).
        E::Sparse("trailing", 8 << 20, &[(4096, &head), (8 << 20, b"")]),
        // More segments than the header holds: extension headers.
        E::Sparse("many", 31 << 20, &many_refs),
        E::File("plain", b"plain\n", 0o644),
    ];
    let layout = Layout::image(tmp.path().join("layout"), &[(&entries, Comp::Gzip)], None);
    let store = LayerStore::open(tmp.path().join("store")).unwrap();
    let image = store.import(&layout.dir, None).unwrap();
    let dir = &image.layers[0].path;

    let big = dir.join("big");
    let meta = fs::metadata(&big).unwrap();
    assert_eq!(meta.len(), GIB);
    assert!(
        meta.blocks() * 512 < 1 << 20,
        "a 1 GiB sparse file takes {} bytes on disk",
        meta.blocks() * 512
    );
    assert_eq!(read_at(&big, 0, 512), head);
    assert_eq!(read_at(&big, 512, 4096), vec![0u8; 4096]);
    assert_eq!(read_at(&big, GIB / 2 - 1, 1026)[1..1025], middle);
    assert_eq!(read_at(&big, GIB / 2 + 1024, 8), vec![0u8; 8]);
    assert_eq!(read_at(&big, GIB - 5, 5), b"tail\n");
    assert_eq!(mode_of(&big), 0o644);

    let trailing = dir.join("trailing");
    let meta = fs::metadata(&trailing).unwrap();
    assert_eq!(meta.len(), 8 << 20);
    assert!(meta.blocks() * 512 < 1 << 20);
    assert_eq!(read_at(&trailing, 4096, 512), head);
    assert_eq!(read_at(&trailing, (8 << 20) - 16, 16), vec![0u8; 16]);

    let many_file = dir.join("many");
    let content = fs::read(&many_file).unwrap();
    assert_eq!(content.len() as u64, 31 << 20);
    let mut expected = vec![0u8; 31 << 20];
    for (offset, data) in &many {
        expected[*offset as usize..*offset as usize + data.len()].copy_from_slice(data);
    }
    assert!(content == expected, "extended sparse map unpacked wrongly");
    assert!(fs::metadata(&many_file).unwrap().blocks() * 512 < 4 << 20);

    assert_eq!(fs::read(dir.join("plain")).unwrap(), b"plain\n");
    // Sparse files count with their logical size.
    let expected = GIB + (8 << 20) + (31 << 20) + 6;
    assert_eq!(image.layers[0].expanded_size, expected);
    assert_eq!(image.expanded_size(), expected);
    // Recorded with the layer.
    assert_eq!(
        store.layer(&image.layers[0].digest).unwrap().unwrap(),
        image.layers[0]
    );
}

/// The store holds nothing but its (empty) skeleton.
fn assert_store_empty(store: &LayerStore) {
    assert!(store.layers().unwrap().is_empty());
    assert!(tmp_entries(store).is_empty(), "{:?}", tmp_entries(store));
    assert_eq!(
        fs::read_dir(store.root().join("layers/sha256"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn the_expanded_size_bound_is_enforced_and_leaves_nothing() {
    assert_eq!(DEFAULT_MAX_EXPANDED_SIZE, 16 << 30);
    assert_eq!(
        StoreOptions::new().max_expanded_size_setting(),
        DEFAULT_MAX_EXPANDED_SIZE
    );
    let tmp = TempDir::new("image-bound");
    const LIMIT: u64 = 64 << 20;

    // A sparse 1 GiB file in a layer of a few KiB.
    let entries = [
        E::Dir("d/", 0o755),
        E::File("d/before", b"written before the bomb\n", 0o644),
        E::Sparse("d/bomb", GIB, &[(GIB - 5, b"tail\n")]),
    ];
    let layout = Layout::image(tmp.path().join("sparse"), &[(&entries, Comp::Gzip)], None);
    let bounded = StoreOptions::new().max_expanded_size(LIMIT);
    assert_eq!(bounded.max_expanded_size_setting(), LIMIT);
    let store = LayerStore::open_with(tmp.path().join("store"), bounded).unwrap();
    let digest = {
        let index: Value =
            serde_json::from_slice(&fs::read(layout.dir.join("index.json")).unwrap()).unwrap();
        let manifest: Value = serde_json::from_slice(
            &fs::read(layout.blob_path(index["manifests"][0]["digest"].as_str().unwrap())).unwrap(),
        )
        .unwrap();
        manifest["layers"][0]["digest"].as_str().unwrap().to_owned()
    };
    match store.import(&layout.dir, None) {
        Err(e @ Error::ExpandedSizeExceeded { .. }) => {
            let Error::ExpandedSizeExceeded { layer, size, limit } = &e else {
                unreachable!()
            };
            assert_eq!(layer.as_str(), digest);
            assert_eq!(*limit, LIMIT);
            assert!(*size > LIMIT);
            let text = e.to_string();
            assert!(
                text.contains(&digest) && text.contains(&LIMIT.to_string()),
                "{text}"
            );
        }
        other => panic!("expected the bound to refuse the layer, got {other:?}"),
    }
    assert_store_empty(&store);

    // The same store opened with a larger bound takes it.
    let roomy = LayerStore::open_with(
        tmp.path().join("store"),
        StoreOptions::new().max_expanded_size(2 * GIB),
    )
    .unwrap();
    let image = roomy.import(&layout.dir, None).unwrap();
    assert_eq!(image.expanded_size(), GIB + 24);
    // Once stored, the layer still counts against a smaller bound: the bound is on the image.
    assert!(matches!(
        store.import(&layout.dir, None),
        Err(Error::ExpandedSizeExceeded { limit: LIMIT, .. })
    ));
    assert!(roomy.remove_layer(&image.layers[0].digest).unwrap());

    // Plain files across layers: the second layer crosses the bound; the first, whole, stays.
    let small = StoreOptions::new().max_expanded_size(100_000);
    let store = LayerStore::open_with(tmp.path().join("store2"), small).unwrap();
    let zeros = vec![0u8; 60_000];
    let first = [E::File("one", &zeros, 0o644)];
    let second = [E::File("two", &zeros, 0o644)];
    let layout = Layout::image(
        tmp.path().join("two"),
        &[(&first, Comp::Gzip), (&second, Comp::Zstd)],
        None,
    );
    match store.import(&layout.dir, None) {
        Err(Error::ExpandedSizeExceeded { size, limit, .. }) => {
            assert_eq!(size, 120_000);
            assert_eq!(limit, 100_000);
        }
        other => panic!("expected the bound to refuse the second layer, got {other:?}"),
    }
    assert_eq!(store.layers().unwrap().len(), 1);
    assert!(tmp_entries(&store).is_empty());
}

/// Every character or block device under `dir`.
fn devices_under(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = fs::symlink_metadata(entry.path()).unwrap();
        let kind = meta.file_type();
        if kind.is_dir() {
            found.extend(devices_under(&entry.path()));
        } else if kind.is_char_device() || kind.is_block_device() {
            found.push((entry.path(), meta.rdev()));
        }
    }
    found
}

#[test]
fn device_entries_are_never_created() {
    let tmp = TempDir::new("image-devices");
    let entries = [
        E::Dir("dev/", 0o755),
        E::CharDev("dev/null", 1, 3),
        E::CharDev("dev/mem", 1, 1),
        E::BlockDev("dev/disk", 8, 0),
        E::BlockDev("dev/zero-block", 0, 0),
        // An overlayfs whiteout as an upper directory holds it: taken as a whiteout.
        E::CharDev("gone", 0, 0),
        E::File("kept", b"kept\n", 0o644),
        // A device where this layer already has a file leaves the file.
        E::CharDev("kept", 1, 3),
        E::Fifo("fifo"),
    ];
    let top = [E::File(".wh.kept", b"", 0o644)];
    let layout = Layout::image(
        tmp.path().join("layout"),
        &[(&entries, Comp::Gzip), (&top, Comp::Plain)],
        None,
    );
    let store = LayerStore::open(tmp.path().join("store")).unwrap();
    let image = store.import(&layout.dir, None).unwrap();
    let dir = &image.layers[0].path;
    for name in ["dev/null", "dev/mem", "dev/disk", "dev/zero-block"] {
        assert!(
            fs::symlink_metadata(dir.join(name)).is_err(),
            "{name} was created"
        );
    }
    assert!(is_whiteout(&dir.join("gone")));
    assert_eq!(fs::read(dir.join("kept")).unwrap(), b"kept\n");
    assert!(fs::metadata(dir.join("fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    assert!(is_whiteout(&image.layers[1].path.join("kept")));
    assert_eq!(image.layers[0].skipped_devices, 5);
    assert_eq!(image.layers[1].skipped_devices, 0);
    assert_eq!(image.skipped_devices(), 5);
    assert_eq!(
        store.layer(&image.layers[0].digest).unwrap().unwrap(),
        image.layers[0]
    );
    // The only device nodes in the whole store are whiteouts.
    let devices = devices_under(store.root());
    assert_eq!(devices.len(), 2, "{devices:?}");
    for (path, rdev) in devices {
        assert_eq!(rdev, 0, "{} is a device", path.display());
        assert!(is_whiteout(&path));
    }
}
