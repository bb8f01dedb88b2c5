//! Building image layouts and archives for the archive tests, and looking at what the store
//! unpacked.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use palisade_image::{Compression, ImageConfig, LayerBuilder, LayerStore, LayoutWriter};
use serde_json::{json, Value};
use sha2::Digest as _;

pub fn sha_hex(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The payload of the base layer: busybox if the machine has it (as CI does), else a small
/// script.
pub fn payload(dir: &Path) -> PathBuf {
    let busybox = Path::new("/bin/busybox");
    if busybox.is_file() {
        return busybox.to_path_buf();
    }
    let path = dir.join("payload");
    fs::write(&path, b"#!/bin/sh\necho payload\n").unwrap();
    path
}

pub fn base_layer(payload: &Path, compression: Compression) -> LayerBuilder {
    let mut base = LayerBuilder::new();
    base.dir("/", 0o755)
        .dir("/bin", 0o755)
        .file_from("/bin/busybox", payload, 0o755)
        .symlink("/bin/sh", "busybox")
        .hardlink("/bin/ls", "/bin/busybox")
        .dir("/etc", 0o755)
        .file("/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n", 0o644)
        .file("/etc/gone", "lower only\n", 0o600)
        .dir("/data", 0o755)
        .file("/data/a", "a\n", 0o644)
        .file("/data/b", "b\n", 0o644)
        .compression(compression);
    base
}

pub fn top_layer(compression: Compression) -> LayerBuilder {
    let mut top = LayerBuilder::new();
    top.dir("/etc", 0o755)
        .whiteout("/etc/gone")
        .file("/etc/top", "top\n", 0o644)
        .dir("/data", 0o755)
        .opaque("/data")
        .file("/data/c", "c\n", 0o644)
        .compression(compression);
    top
}

pub fn config() -> ImageConfig {
    let mut config = ImageConfig::default();
    config.env = vec!["PATH=/bin".into()];
    config.cmd = vec!["/bin/sh".into()];
    config.working_dir = Some("/data".into());
    config
}

/// Writes a two-layer layout (busybox and files; a whiteout and an opaque directory) tagged
/// `tag`.
pub fn write_layout(
    dir: &Path,
    payload: &Path,
    tag: &str,
    base: Compression,
    top: Compression,
) -> palisade_image::Digest {
    let mut writer = LayoutWriter::create(dir).unwrap();
    writer.add_layer(&base_layer(payload, base)).unwrap();
    writer.add_layer(&top_layer(top)).unwrap();
    writer.finish(Some(tag), &config()).unwrap()
}

/// The config and the layer blobs of the only image of a layout.
pub struct Parts {
    pub config: Vec<u8>,
    pub layers: Vec<Vec<u8>>,
    pub diff_ids: Vec<String>,
}

pub fn blob(dir: &Path, digest: &Value) -> Vec<u8> {
    let digest = digest.as_str().unwrap();
    let hex = digest.strip_prefix("sha256:").unwrap();
    fs::read(dir.join("blobs/sha256").join(hex)).unwrap()
}

pub fn parts(dir: &Path) -> Parts {
    let index: Value = serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    let manifest: Value =
        serde_json::from_slice(&blob(dir, &index["manifests"][0]["digest"])).unwrap();
    let config = blob(dir, &manifest["config"]["digest"]);
    let parsed: Value = serde_json::from_slice(&config).unwrap();
    Parts {
        layers: manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| blob(dir, &l["digest"]))
            .collect(),
        diff_ids: parsed["rootfs"]["diff_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_str().unwrap().to_owned())
            .collect(),
        config,
    }
}

/// A tar built entry by entry, names and link names written raw into the header (the `tar`
/// crate refuses `..` and absolute paths, which the attacks need).
pub struct Tar(tar::Builder<Vec<u8>>);

impl Default for Tar {
    fn default() -> Tar {
        Tar::new()
    }
}

impl Tar {
    pub fn new() -> Tar {
        Tar(tar::Builder::new(Vec::new()))
    }

    fn header(kind: tar::EntryType, path: &str, link: Option<&str>, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_mtime(1_600_000_000);
        let old = h.as_old_mut();
        assert!(path.len() < 100, "{path}");
        old.name = [0; 100];
        old.name[..path.len()].copy_from_slice(path.as_bytes());
        if let Some(link) = link {
            assert!(link.len() < 100, "{link}");
            old.linkname = [0; 100];
            old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_cksum();
        h
    }

    pub fn file(&mut self, path: &str, data: &[u8]) -> &mut Tar {
        let h = Tar::header(tar::EntryType::Regular, path, None, data.len() as u64);
        self.0.append(&h, data).unwrap();
        self
    }

    pub fn dir(&mut self, path: &str) -> &mut Tar {
        let h = Tar::header(tar::EntryType::Directory, path, None, 0);
        self.0.append(&h, &[][..]).unwrap();
        self
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Tar {
        let h = Tar::header(tar::EntryType::Symlink, path, Some(target), 0);
        self.0.append(&h, &[][..]).unwrap();
        self
    }

    pub fn hardlink(&mut self, path: &str, target: &str) -> &mut Tar {
        let h = Tar::header(tar::EntryType::Link, path, Some(target), 0);
        self.0.append(&h, &[][..]).unwrap();
        self
    }

    /// Adds every file of a layout directory under its own name.
    pub fn layout(&mut self, dir: &Path) -> &mut Tar {
        self.file("oci-layout", &fs::read(dir.join("oci-layout")).unwrap());
        self.file("index.json", &fs::read(dir.join("index.json")).unwrap());
        self.dir("blobs/").dir("blobs/sha256/");
        let mut names: Vec<_> = fs::read_dir(dir.join("blobs/sha256"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        for name in names {
            let data = fs::read(dir.join("blobs/sha256").join(&name)).unwrap();
            self.file(&format!("blobs/sha256/{name}"), &data);
        }
        self
    }

    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::replace(&mut self.0, tar::Builder::new(Vec::new()))
            .into_inner()
            .unwrap()
    }
}

/// One image of a docker-archive's `manifest.json`.
pub fn docker_image(config: &str, tags: &[&str], layers: &[&str]) -> Value {
    json!({"Config": config, "RepoTags": tags, "Layers": layers})
}

/// A classic `docker save` archive of the layout's image, tagged `tags`: `<hex>.json` for the
/// config, `<diff_id hex>/layer.tar` for every layer blob as the layout has it.
pub fn docker_archive(parts: &Parts, tags: &[&str]) -> Vec<u8> {
    let config = format!("{}.json", sha_hex(&parts.config));
    let mut tar = Tar::new();
    let mut layers = Vec::new();
    for (blob, diff_id) in parts.layers.iter().zip(&parts.diff_ids) {
        let dir = diff_id.strip_prefix("sha256:").unwrap();
        tar.dir(&format!("{dir}/"))
            .file(&format!("{dir}/VERSION"), b"1.0")
            .file(&format!("{dir}/layer.tar"), blob);
        layers.push(format!("{dir}/layer.tar"));
    }
    let layers: Vec<&str> = layers.iter().map(String::as_str).collect();
    tar.file(&config, &parts.config);
    let manifest = json!([docker_image(&config, tags, &layers)]);
    tar.file("manifest.json", manifest.to_string().as_bytes());
    tar.finish()
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
}

/// What a node of an unpacked layer is.
#[derive(Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    /// A regular file: the sha256 of its content, and its inode's link count.
    File(String, u64),
    Symlink(PathBuf),
    /// An overlayfs whiteout (character device 0:0).
    Whiteout,
    Other,
}

/// A node: its kind, mode, owner and opaque xattr.
pub type Node = (Kind, u32, u32, u32, Option<Vec<u8>>);

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let mut buf = [0u8; 64];
    // SAFETY: valid C strings and a writable buffer of the size passed.
    let len =
        unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (len >= 0).then(|| buf[..len as usize].to_vec())
}

/// Every node of an unpacked layer, by path inside it (the layer's root as "").
pub fn tree(root: &Path) -> BTreeMap<PathBuf, Node> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Node>) {
        let meta = fs::symlink_metadata(dir).unwrap();
        let kind = if meta.is_dir() {
            Kind::Dir
        } else if meta.is_file() {
            Kind::File(sha_hex(&fs::read(dir).unwrap()), meta.nlink())
        } else if meta.file_type().is_symlink() {
            Kind::Symlink(fs::read_link(dir).unwrap())
        } else if meta.file_type().is_char_device() && meta.rdev() == 0 {
            Kind::Whiteout
        } else {
            Kind::Other
        };
        let is_dir = kind == Kind::Dir;
        out.insert(
            dir.strip_prefix(root).unwrap().to_path_buf(),
            (
                kind,
                meta.mode() & 0o7777,
                meta.uid(),
                meta.gid(),
                xattr(dir, "trusted.overlay.opaque"),
            ),
        );
        if is_dir {
            for entry in fs::read_dir(dir).unwrap() {
                walk(root, &entry.unwrap().path(), out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// The trees of an image's layers, bottom first.
pub fn trees(image: &palisade_image::Image) -> Vec<BTreeMap<PathBuf, Node>> {
    image.layers.iter().map(|l| tree(&l.path)).collect()
}

/// Everything under the store's `tmp/`.
pub fn tmp_entries(store: &LayerStore) -> Vec<PathBuf> {
    fs::read_dir(store.root().join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

/// Every path under `dir` with its content (for files) or link target, to see that nothing
/// was written or changed there.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path).unwrap();
        let content = if meta.is_dir() {
            for entry in fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
            Vec::new()
        } else if meta.is_file() {
            fs::read(&path).unwrap()
        } else if meta.file_type().is_symlink() {
            fs::read_link(&path)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec()
        } else {
            Vec::new()
        };
        out.insert(path, content);
    }
    out
}
