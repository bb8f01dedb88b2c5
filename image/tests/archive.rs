//! Image archives imported into the layer store: `docker save` archives (docker-archive) and
//! tars of OCI layouts (oci-archive), written by the real skopeo from layouts built with the
//! public [`LayoutWriter`], or by hand with the `tar` crate for the deduplicating links of
//! `docker save`, several images, compressions, and attacks. Each import is checked against a
//! direct import of the layout (same `diff_ids`, same unpacked trees); each refusal leaves
//! nothing in the store and touches nothing outside it.

#[path = "archive/support.rs"]
mod support;

use std::fs;
use std::path::Path;

use palisade_image::{ArchiveFormat, Compression, Digest, Error, Image, LayerStore};
use palisade_test_support::registry::skopeo;
use palisade_test_support::{require_root, TempDir};
use serde_json::json;
use support::*;

fn diff_ids(image: &Image) -> Vec<&Digest> {
    image.layers.iter().map(|l| &l.diff_id).collect()
}

/// The store holds no layer and nothing in `tmp/`.
fn assert_store_empty(store: &LayerStore) {
    assert!(store.layers().unwrap().is_empty(), "{:?}", store.layers());
    assert!(tmp_entries(store).is_empty(), "{:?}", tmp_entries(store));
}

/// Both images have the same layers once unpacked.
fn assert_same_image(archived: &Image, direct: &Image) {
    assert_eq!(diff_ids(archived), diff_ids(direct));
    assert_eq!(trees(archived), trees(direct));
    assert_eq!(archived.config, direct.config);
}

#[test]
fn skopeo_docker_and_oci_archives_import_like_the_layout() {
    require_root!();
    let tmp = TempDir::new("archive-skopeo");
    let layout = tmp.path().join("layout");
    let manifest = write_layout(
        &layout,
        &payload(tmp.path()),
        "v1",
        Compression::Gzip,
        Compression::Gzip,
    );
    let direct_store = LayerStore::open(tmp.path().join("direct")).unwrap();
    let direct = direct_store.import(&layout, Some("v1")).unwrap();
    assert_eq!(direct.layers.len(), 2);
    assert_eq!(direct.manifest_digest, manifest);

    let src = format!("oci:{}:v1", layout.display());
    let docker = tmp.path().join("docker.tar");
    skopeo(
        &[
            "copy",
            &src,
            &format!("docker-archive:{}:palisade/busybox:v1", docker.display()),
        ],
        tmp.path(),
    );
    let oci = tmp.path().join("oci.tar");
    skopeo(
        &["copy", &src, &format!("oci-archive:{}:v1", oci.display())],
        tmp.path(),
    );
    assert_eq!(
        ArchiveFormat::detect(&docker).unwrap(),
        ArchiveFormat::Docker
    );
    assert_eq!(ArchiveFormat::detect(&oci).unwrap(), ArchiveFormat::Oci);

    // docker-archive: skopeo stores the layers uncompressed, so they are new blobs with the
    // same diff_ids; both spellings of the RepoTag, and no name, pick the image.
    let store = LayerStore::open(tmp.path().join("docker-store")).unwrap();
    let image = store
        .import_archive(&docker, Some("palisade/busybox:v1"))
        .unwrap();
    assert_same_image(&image, &direct);
    for layer in &image.layers {
        assert_eq!(layer.digest, layer.diff_id, "an uncompressed layer.tar");
    }
    for name in [Some("docker.io/palisade/busybox:v1"), None] {
        assert_eq!(store.import_archive(&docker, name).unwrap(), image);
    }
    assert!(tmp_entries(&store).is_empty());

    // oci-archive: the very blobs of the layout.
    let store = LayerStore::open(tmp.path().join("oci-store")).unwrap();
    let image = store.import_archive(&oci, Some("v1")).unwrap();
    assert_same_image(&image, &direct);
    assert_eq!(image.manifest_digest, direct.manifest_digest);
    assert_eq!(image.config_digest, direct.config_digest);
    let digests = |i: &Image| {
        i.layers
            .iter()
            .map(|l| l.digest.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(digests(&image), digests(&direct));
    assert_eq!(store.import_archive(&oci, None).unwrap(), image);
    match store.import_archive(&oci, Some("v2")) {
        Err(Error::ArchiveImageNotFound {
            name, available, ..
        }) => assert_eq!((name.as_str(), available), ("v2", vec!["v1".to_owned()])),
        other => panic!("expected ArchiveImageNotFound, got {other:?}"),
    }
    assert!(tmp_entries(&store).is_empty());

    // Both archives gzip-compressed as a whole, and the docker-archive zstd-compressed.
    let bytes = fs::read(&docker).unwrap();
    let gz = tmp.path().join("docker.tar.gz");
    fs::write(&gz, gzip(&bytes)).unwrap();
    let zst = tmp.path().join("docker.tar.zst");
    fs::write(&zst, zstd(&bytes)).unwrap();
    let oci_gz = tmp.path().join("oci.tar.gz");
    fs::write(&oci_gz, gzip(&fs::read(&oci).unwrap())).unwrap();
    for (archive, format) in [
        (&gz, ArchiveFormat::Docker),
        (&zst, ArchiveFormat::Docker),
        (&oci_gz, ArchiveFormat::Oci),
    ] {
        assert_eq!(ArchiveFormat::detect(archive).unwrap(), format);
        let store = LayerStore::open(tmp.path().join("compressed-store")).unwrap();
        let image = store.import_archive(archive, None).unwrap();
        assert_same_image(&image, &direct);
        assert!(tmp_entries(&store).is_empty());
        drop(store);
        fs::remove_dir_all(tmp.path().join("compressed-store")).unwrap();
    }
}

#[test]
fn repo_tags_choose_the_image_of_a_docker_archive() {
    require_root!();
    let tmp = TempDir::new("archive-tags");
    let layout = tmp.path().join("layout");
    write_layout(
        &layout,
        &payload(tmp.path()),
        "v1",
        Compression::None,
        Compression::None,
    );
    let parts = parts(&layout);
    // Two images: the whole one, and one of its base layer only (its own config).
    let mut base_config: serde_json::Value = serde_json::from_slice(&parts.config).unwrap();
    base_config["rootfs"]["diff_ids"] = json!([parts.diff_ids[0]]);
    let base_config = base_config.to_string();
    let dirs: Vec<String> = parts
        .diff_ids
        .iter()
        .map(|d| format!("{}/layer.tar", d.strip_prefix("sha256:").unwrap()))
        .collect();
    let mut tar = Tar::new();
    tar.file(&dirs[0], &parts.layers[0])
        .file(&dirs[1], &parts.layers[1])
        .file("full.json", &parts.config)
        .file("base.json", base_config.as_bytes());
    let manifest = json!([
        docker_image(
            "full.json",
            &["localhost:5000/tools/full:2", "full:latest"],
            &[&dirs[0], &dirs[1]]
        ),
        docker_image("base.json", &["base:1"], &[&dirs[0]]),
    ]);
    tar.file("manifest.json", manifest.to_string().as_bytes())
        .file("repositories", br#"{"base":{"1":"x"}}"#);
    let archive = tmp.path().join("two.tar");
    fs::write(&archive, tar.finish()).unwrap();

    let store = LayerStore::open(tmp.path().join("store")).unwrap();
    match store.import_archive(&archive, None) {
        Err(Error::AmbiguousArchive { images, .. }) => assert_eq!(
            images,
            ["localhost:5000/tools/full:2 full:latest", "base:1"]
        ),
        other => panic!("expected AmbiguousArchive, got {other:?}"),
    }
    match store.import_archive(&archive, Some("base:2")) {
        Err(Error::ArchiveImageNotFound { available, .. }) => assert_eq!(
            available,
            ["localhost:5000/tools/full:2", "full:latest", "base:1"]
        ),
        other => panic!("expected ArchiveImageNotFound, got {other:?}"),
    }
    assert_store_empty(&store);

    for name in [
        "base:1",
        "docker.io/library/base:1",
        "index.docker.io/library/base:1",
    ] {
        let image = store.import_archive(&archive, Some(name)).unwrap();
        assert_eq!(image.layers.len(), 1, "{name}");
        assert_eq!(image.layers[0].diff_id.as_str(), parts.diff_ids[0]);
    }
    for name in [
        "full",
        "docker.io/library/full:latest",
        "localhost:5000/tools/full:2",
    ] {
        let image = store.import_archive(&archive, Some(name)).unwrap();
        assert_eq!(image.layers.len(), 2, "{name}");
        assert_eq!(image.config.env, ["PATH=/bin"]);
    }
    assert!(tmp_entries(&store).is_empty());
}

#[test]
fn deduplicating_links_and_compressed_layers_of_a_docker_archive() {
    require_root!();
    let tmp = TempDir::new("archive-links");
    // The layers as gzip and zstd blobs: docker-archives may carry compressed layer.tar files.
    let layout = tmp.path().join("layout");
    write_layout(
        &layout,
        &payload(tmp.path()),
        "v1",
        Compression::Gzip,
        Compression::Zstd,
    );
    let direct_store = LayerStore::open(tmp.path().join("direct")).unwrap();
    let direct = direct_store.import(&layout, None).unwrap();
    let parts = parts(&layout);

    // As `docker save` deduplicates: the second image's base layer is a link to the first's,
    // here through a chain of a symbolic link, a directory link and a hard link.
    let mut tar = Tar::new();
    tar.dir("aaa/")
        .file("aaa/layer.tar", &parts.layers[0])
        .file("store/top.bin", &parts.layers[1])
        .symlink("bbb/layer.tar", "../ccc/layer.tar")
        .symlink("ccc", "./ddd/")
        .hardlink("ddd/layer.tar", "aaa/layer.tar")
        .symlink("eee/layer.tar", "../store/../store/top.bin")
        .file("config.json", &parts.config);
    let manifest = json!([
        docker_image(
            "config.json",
            &["first:1"],
            &["aaa/layer.tar", "store/top.bin"]
        ),
        docker_image(
            "config.json",
            &["second:1"],
            &["bbb/layer.tar", "eee/layer.tar"]
        ),
    ]);
    tar.file("manifest.json", manifest.to_string().as_bytes());
    let archive = tmp.path().join("links.tar");
    fs::write(&archive, tar.finish()).unwrap();

    let store = LayerStore::open(tmp.path().join("store")).unwrap();
    let first = store.import_archive(&archive, Some("first:1")).unwrap();
    let second = store.import_archive(&archive, Some("second:1")).unwrap();
    assert_same_image(&first, &direct);
    assert_eq!(first, second);
    // The blobs are the layout's own: the media types were told by their first bytes.
    let digests = |i: &Image| {
        i.layers
            .iter()
            .map(|l| l.digest.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(digests(&first), digests(&direct));
    assert!(tmp_entries(&store).is_empty());
}

#[test]
fn docker_25_saves_read_as_oci_archives() {
    require_root!();
    let tmp = TempDir::new("archive-docker25");
    let layout = tmp.path().join("layout");
    write_layout(
        &layout,
        &payload(tmp.path()),
        "v1",
        Compression::None,
        Compression::None,
    );
    let direct_store = LayerStore::open(tmp.path().join("direct")).unwrap();
    let direct = direct_store.import(&layout, None).unwrap();
    let parts = parts(&layout);

    // Docker 25+ writes an OCI layout whose index.json names the image twice (the tag, and the
    // full reference for containerd), with the classic manifest.json besides.
    let mut index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    index["manifests"][0]["annotations"] = json!({
        "io.containerd.image.name": "docker.io/library/busybox:latest",
        "org.opencontainers.image.ref.name": "latest",
    });
    let mut full = Tar::new();
    full.layout(&layout);
    let layout_tar = full.finish();
    let mut tar = Tar::new();
    let mut archive = tar::Archive::new(&layout_tar[..]);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_str().unwrap().to_owned();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
        match name.as_str() {
            "index.json" => tar.file(&name, index.to_string().as_bytes()),
            _ if entry.header().entry_type().is_dir() => tar.dir(&name),
            _ => tar.file(&name, &data),
        };
    }
    let blob = |d: &str| format!("blobs/sha256/{}", d.strip_prefix("sha256:").unwrap());
    let config = blob(&format!("sha256:{}", sha_hex(&parts.config)));
    let layers: Vec<String> = parts.diff_ids.iter().map(|d| blob(d)).collect();
    let manifest = json!([docker_image(
        &config,
        &["busybox:latest"],
        &[&layers[0], &layers[1]]
    )]);
    tar.file("manifest.json", manifest.to_string().as_bytes())
        .file("repositories", br#"{"busybox":{"latest":"x"}}"#);
    let path = tmp.path().join("docker25.tar");
    fs::write(&path, tar.finish()).unwrap();

    assert_eq!(ArchiveFormat::detect(&path).unwrap(), ArchiveFormat::Oci);
    let store = LayerStore::open(tmp.path().join("store")).unwrap();
    for name in [
        Some("busybox:latest"),
        Some("busybox"),
        Some("docker.io/library/busybox:latest"),
        Some("latest"),
        None,
    ] {
        let image = store.import_archive(&path, name).unwrap();
        assert_same_image(&image, &direct);
        assert_eq!(image.manifest_digest, direct.manifest_digest);
    }
    match store.import_archive(&path, Some("busybox:1")) {
        Err(Error::ArchiveImageNotFound { available, .. }) => {
            assert_eq!(available, ["latest docker.io/library/busybox:latest"])
        }
        other => panic!("expected ArchiveImageNotFound, got {other:?}"),
    }
    assert!(tmp_entries(&store).is_empty());
}

/// An archive whose import must fail with `check`, with nothing left in the store, nothing
/// written in `outside`, and /etc/passwd untouched.
fn expect_refused(
    tmp: &Path,
    name: &str,
    archive: &[u8],
    tag: Option<&str>,
    check: impl FnOnce(&Error) -> bool,
) {
    let path = tmp.join(format!("{name}.tar"));
    fs::write(&path, archive).unwrap();
    let outside = tmp.join("outside");
    let store = LayerStore::open(tmp.join(format!("store-{name}"))).unwrap();
    let before = (
        snapshot(&outside),
        snapshot(store.root()),
        fs::read("/etc/passwd").unwrap(),
    );
    let err = store.import_archive(&path, tag).unwrap_err();
    assert!(check(&err), "{name}: unexpected error {err:?}");
    // Refusals of the archive itself name it.
    if matches!(
        err,
        Error::ArchiveEntry { .. }
            | Error::ArchiveRead { .. }
            | Error::InvalidArchive { .. }
            | Error::ArchiveTooLarge { .. }
            | Error::ArchiveImageNotFound { .. }
            | Error::AmbiguousArchive { .. }
    ) {
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }
    assert_store_empty(&store);
    let after = (
        snapshot(&outside),
        snapshot(store.root()),
        fs::read("/etc/passwd").unwrap(),
    );
    assert!(before == after, "{name}: something changed");
}

fn refused_entry<'a>(entry: &'a str, reason: &'a str) -> impl FnOnce(&Error) -> bool + 'a {
    move |e| {
        matches!(e, Error::ArchiveEntry { entry: got, reason: why, .. }
            if got == entry && why.contains(reason))
    }
}

#[test]
fn attacks_through_archive_names_and_links_are_refused() {
    require_root!();
    let tmp = TempDir::new("archive-attacks");
    let tmp = tmp.path();
    let outside = tmp.join("outside");
    fs::create_dir(&outside).unwrap();
    let canary = outside.join("passwd");
    fs::write(&canary, "canary:x:0:0::/:/bin/sh\n").unwrap();
    let canary = canary.to_str().unwrap();

    let layout = tmp.join("layout");
    write_layout(
        &layout,
        &payload(tmp),
        "v1",
        Compression::None,
        Compression::None,
    );
    let parts = parts(&layout);
    let config = parts.config.clone();
    // A docker-archive whose second layer is `entry`, with the extra entries given.
    let docker = |top: &str, extra: &dyn Fn(&mut Tar)| {
        let mut tar = Tar::new();
        tar.file("base/layer.tar", &parts.layers[0])
            .file("config.json", &config);
        extra(&mut tar);
        let manifest = json!([docker_image(
            "config.json",
            &["x:1"],
            &["base/layer.tar", top]
        )]);
        tar.file("manifest.json", manifest.to_string().as_bytes());
        tar.finish()
    };

    // Positive control: the same archive with the real top layer imports.
    let good = docker("top/layer.tar", &|t| {
        t.file("top/layer.tar", &parts.layers[1]);
    });
    let path = tmp.join("good.tar");
    fs::write(&path, &good).unwrap();
    let store = LayerStore::open(tmp.join("good-store")).unwrap();
    assert_eq!(store.import_archive(&path, None).unwrap().layers.len(), 2);

    let none = |_: &mut Tar| {};
    expect_refused(
        tmp,
        "dotdot-layer",
        &docker("../../etc/passwd", &none),
        None,
        refused_entry("../../etc/passwd", "climb out"),
    );
    let mut dotdot_config = Tar::new();
    dotdot_config.file("base/layer.tar", &parts.layers[0]).file(
        "manifest.json",
        json!([docker_image("../outside/passwd", &[], &["base/layer.tar"])])
            .to_string()
            .as_bytes(),
    );
    expect_refused(
        tmp,
        "dotdot-config",
        &dotdot_config.finish(),
        None,
        refused_entry("../outside/passwd", "climb out"),
    );
    expect_refused(
        tmp,
        "absolute-layer",
        &docker(canary, &none),
        None,
        refused_entry(canary, "absolute"),
    );
    expect_refused(
        tmp,
        "symlink-etc-passwd",
        &docker("top/layer.tar", &|t| {
            t.symlink("top/layer.tar", "/etc/passwd");
        }),
        None,
        refused_entry("top/layer.tar", "leaves the archive"),
    );
    expect_refused(
        tmp,
        "symlink-canary",
        &docker("top/layer.tar", &|t| {
            t.symlink("top/layer.tar", canary);
        }),
        None,
        refused_entry("top/layer.tar", "leaves the archive"),
    );
    expect_refused(
        tmp,
        "symlink-dotdot",
        &docker("top/layer.tar", &|t| {
            t.symlink("top/layer.tar", "../../../../../../../../etc/passwd");
        }),
        None,
        refused_entry("top/layer.tar", "climb out"),
    );
    // A directory link out of the archive on the way.
    expect_refused(
        tmp,
        "symlink-dir",
        &docker("top/passwd", &|t| {
            t.symlink("top", "/etc");
        }),
        None,
        refused_entry("top/passwd", "leaves the archive"),
    );
    expect_refused(
        tmp,
        "symlink-loop",
        &docker("top/layer.tar", &|t| {
            t.symlink("top/layer.tar", "../loop/layer.tar")
                .symlink("loop", "top");
        }),
        None,
        refused_entry("top/layer.tar", "loops"),
    );
    expect_refused(
        tmp,
        "hardlink-etc-passwd",
        &docker("top/layer.tar", &|t| {
            t.hardlink("top/layer.tar", "/etc/passwd");
        }),
        None,
        refused_entry("top/layer.tar", "leaves the archive"),
    );
    expect_refused(
        tmp,
        "hardlink-dotdot",
        &docker("top/layer.tar", &|t| {
            t.hardlink("top/layer.tar", "../outside/passwd");
        }),
        None,
        refused_entry("top/layer.tar", "climb out"),
    );
    // Entries with absolute names or `..` components are never found by a name: the layer the
    // manifest names is absent, whatever such entries hold.
    expect_refused(
        tmp,
        "absolute-entry",
        &docker("top/layer.tar", &|t| {
            t.file("/top/layer.tar", &parts.layers[1])
                .file(&format!("{canary}.new"), b"pwned\n");
        }),
        None,
        refused_entry("top/layer.tar", "absent"),
    );
    expect_refused(
        tmp,
        "dotdot-entry",
        &docker("top/layer.tar", &|t| {
            t.file("x/../top/layer.tar", &parts.layers[1])
                .file("../../../outside/pwned", b"pwned\n");
        }),
        None,
        refused_entry("top/layer.tar", "absent"),
    );
    expect_refused(
        tmp,
        "directory",
        &docker("top/layer.tar", &|t| {
            t.dir("top/layer.tar/");
        }),
        None,
        refused_entry("top/layer.tar", "not a regular file"),
    );
    // Only absolute entries at the top: neither format.
    let mut absolute = Tar::new();
    absolute
        .file("/manifest.json", b"[]")
        .file("/oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    expect_refused(tmp, "absolute-top", &absolute.finish(), None, |e| {
        matches!(e, Error::InvalidArchive { .. })
    });
    // A manifest.json too large to read.
    let mut large = Tar::new();
    large.file("manifest.json", &vec![b' '; 5 << 20]);
    expect_refused(tmp, "large-manifest", &large.finish(), None, |e| {
        matches!(
            e,
            Error::ArchiveTooLarge {
                what: "manifest.json",
                ..
            }
        )
    });

    // An oci-archive with entries named `blobs/sha256/../../…`: ignored, the import works and
    // nothing is written where they point.
    let mut oci = Tar::new();
    oci.layout(&layout)
        .file("blobs/sha256/../../pwned", b"pwned\n")
        .file("blobs/sha256/../../../outside/pwned", b"pwned\n")
        .symlink("blobs/sha256/evil", canary);
    let path = tmp.join("oci-dotdot.tar");
    fs::write(&path, oci.finish()).unwrap();
    let store = LayerStore::open(tmp.join("oci-store")).unwrap();
    let before = snapshot(&outside);
    let image = store.import_archive(&path, Some("v1")).unwrap();
    assert_eq!(image.layers.len(), 2);
    assert_eq!(snapshot(&outside), before);
    assert!(tmp_entries(&store).is_empty());
    assert!(!store.root().join("pwned").exists() && !tmp.join("pwned").exists());

    // An oci-archive whose layer blob is only there under a `..` name, or as a link out.
    let top = format!(
        "blobs/sha256/{}",
        parts.diff_ids[1].strip_prefix("sha256:").unwrap()
    );
    let without_top = |extra: &dyn Fn(&mut Tar)| {
        let mut full = Tar::new();
        full.layout(&layout);
        let bytes = full.finish();
        let mut tar = Tar::new();
        let mut archive = tar::Archive::new(&bytes[..]);
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().to_str().unwrap().to_owned();
            if name != top {
                let mut data = Vec::new();
                std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
                if entry.header().entry_type().is_dir() {
                    tar.dir(&name);
                } else {
                    tar.file(&name, &data);
                }
            }
        }
        extra(&mut tar);
        tar.finish()
    };
    let hidden = format!("blobs/sha256/../sha256/{}", &top["blobs/sha256/".len()..]);
    expect_refused(
        tmp,
        "oci-dotdot-blob",
        &without_top(&|t| {
            t.file(&hidden, &parts.layers[1]);
        }),
        Some("v1"),
        refused_entry(&top, "absent"),
    );
    expect_refused(
        tmp,
        "oci-symlink-blob",
        &without_top(&|t| {
            t.symlink(&top, "../../../outside/passwd");
        }),
        Some("v1"),
        refused_entry(&top, "climb out"),
    );
    // A blob that is not what its name says.
    expect_refused(
        tmp,
        "oci-wrong-blob",
        &without_top(&|t| {
            let mut wrong = parts.layers[1].clone();
            let last = wrong.len() - 1;
            wrong[last] ^= 1;
            t.file(&top, &wrong);
        }),
        Some("v1"),
        |e| matches!(e, Error::DigestMismatch { what: "layer", .. }),
    );
}

#[test]
fn truncated_archives_are_refused_and_leave_nothing() {
    require_root!();
    let tmp = TempDir::new("archive-truncated");
    let tmp = tmp.path();
    fs::create_dir(tmp.join("outside")).unwrap();
    let layout = tmp.join("layout");
    write_layout(
        &layout,
        &payload(tmp),
        "v1",
        Compression::None,
        Compression::None,
    );
    let parts = parts(&layout);
    let whole = docker_archive(&parts, &["x:1"]);
    // Cut in the middle of the base layer's data (the archive begins with it), and nearer the
    // end; the same, gzip-compressed.
    let base_end = 2048 + parts.layers[0].len();
    for (name, cut) in [
        ("middle", whole.len() / 2),
        ("base-layer", base_end / 2),
        ("near-end", whole.len() - 700),
    ] {
        expect_refused(tmp, name, &whole[..cut], None, |e| {
            matches!(e, Error::ArchiveRead { .. })
        });
    }
    let gz = gzip(&whole);
    expect_refused(tmp, "gzip", &gz[..gz.len() * 2 / 3], None, |e| {
        matches!(e, Error::ArchiveRead { .. })
    });
    // The whole archive imports.
    let path = tmp.join("whole.tar");
    fs::write(&path, &whole).unwrap();
    let store = LayerStore::open(tmp.join("store")).unwrap();
    assert_eq!(store.import_archive(&path, None).unwrap().layers.len(), 2);
}

#[test]
fn a_compressed_archive_decompresses_within_a_bound() {
    require_root!();
    let tmp = TempDir::new("archive-bomb");
    let tmp = tmp.path();
    fs::create_dir(tmp.join("outside")).unwrap();
    // 80 MiB of zeros in a small gzip file; a store bounded to 1 MiB images reads at most
    // 2 MiB + 64 MiB of a decompressed archive.
    let zeros = vec![0u8; 80 << 20];
    let mut tar = Tar::new();
    tar.file("layer.tar", &zeros).file("manifest.json", b"[]");
    let gz = gzip(&tar.finish());
    drop(zeros);
    let path = tmp.join("bomb.tar.gz");
    fs::write(&path, &gz).unwrap();
    let store = LayerStore::open_with(
        tmp.join("store"),
        palisade_image::StoreOptions::new().max_expanded_size(1 << 20),
    )
    .unwrap();
    match store.import_archive(&path, None) {
        Err(Error::ArchiveTooLarge { what, limit, .. }) => {
            assert_eq!(
                (what, limit),
                ("decompressed archive", (2 << 20) + (64 << 20))
            )
        }
        other => panic!("expected ArchiveTooLarge, got {other:?}"),
    }
    assert_store_empty(&store);
    // Positive control: the default bound reads it through (and finds no image in it).
    let store = LayerStore::open(tmp.join("store2")).unwrap();
    assert!(matches!(
        store.import_archive(&path, None),
        Err(Error::InvalidArchive { .. })
    ));
    assert_store_empty(&store);
}
