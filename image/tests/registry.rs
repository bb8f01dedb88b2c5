//! Pulls from a real registry: Debian's `docker-registry` (distribution 2.8), started by each
//! test on a loopback port with a temporary storage, holding images built here with
//! [`LayoutWriter`] and pushed with `skopeo`. What the registry served is read from its own
//! log; test-side proxies cut connections and demand authentication for real.
//!
//! None of this needs root, and none of it is skipped: without `docker-registry` or `skopeo`
//! the tests fail, saying what to install.

#[path = "registry/support.rs"]
mod support;

use std::fs;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use palisade_image::registry::{
    Credentials, LayerOutcome, NoProgress, Platform, Progress, PullOptions, Reference,
};
use palisade_image::{
    Compression, Digest, Error, Image, ImageConfig, LayerBuilder, LayerStore, LayoutWriter,
};
use palisade_test_support::TempDir;
use support::{Demand, Proxy, Registry, TokenServer};

// ---------------------------------------------------------------------------------------------
// Fixtures

/// Deterministic bytes that do not compress: a layer of them stays as large as they are.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn layer(files: &[(&str, &[u8])]) -> LayerBuilder {
    let mut b = LayerBuilder::new();
    for (path, content) in files {
        b.file(path, content.to_vec(), 0o644);
    }
    b
}

fn config(architecture: Option<&str>) -> ImageConfig {
    let mut c = ImageConfig::default();
    c.env = vec!["PATH=/bin".into()];
    c.cmd = vec!["/bin/sh".into()];
    c.architecture = architecture.map(str::to_owned);
    c
}

/// A layout at `dir` of one image tagged `tag` made of `layers`; returns its manifest digest.
fn image_layout(dir: &Path, tag: &str, layers: &[LayerBuilder]) -> Digest {
    let mut w = LayoutWriter::create(dir).expect("create the layout");
    for l in layers {
        w.add_layer(l).expect("add a layer");
    }
    w.finish(Some(tag), &config(None))
        .expect("finish the layout")
}

fn insecure() -> PullOptions {
    PullOptions::new().insecure(true)
}

fn reference(s: &str) -> Reference {
    Reference::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// The content of `path` in the image: the top-most layer that has it.
fn file_in(image: &Image, path: &str) -> Option<Vec<u8>> {
    image
        .lower_dirs()
        .into_iter()
        .find_map(|dir| fs::read(dir.join(path)).ok())
}

/// Names in `dir`, sorted (empty when it does not exist).
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Records what a pull reports.
#[derive(Default)]
struct Recorder {
    manifests: Mutex<Vec<Digest>>,
    starts: Mutex<Vec<(Digest, u64, u64)>>,
    done: Mutex<Vec<(Digest, LayerOutcome)>>,
    progress_calls: Mutex<usize>,
}

impl Progress for Recorder {
    fn manifest(&self, _: &Reference, digest: &Digest) {
        self.manifests.lock().unwrap().push(digest.clone());
    }
    fn layer_start(&self, layer: &Digest, total: u64, already: u64) {
        self.starts
            .lock()
            .unwrap()
            .push((layer.clone(), total, already));
    }
    fn layer_progress(&self, _: &Digest, _: u64) {
        *self.progress_calls.lock().unwrap() += 1;
    }
    fn layer_done(&self, layer: &Digest, outcome: LayerOutcome) {
        self.done.lock().unwrap().push((layer.clone(), outcome));
    }
}

impl Recorder {
    fn outcome(&self, layer: &Digest) -> Option<LayerOutcome> {
        self.done
            .lock()
            .unwrap()
            .iter()
            .find(|(d, _)| d == layer)
            .map(|(_, o)| *o)
    }
}

/// The layer digests of a layout's image `manifest`.
fn layer_digests(layout: &Path, manifest: &Digest) -> Vec<Digest> {
    let bytes = fs::read(layout.join("blobs/sha256").join(manifest.hex())).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| Digest::parse(l["digest"].as_str().unwrap()).unwrap())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Pulls

#[test]
fn pull_by_tag_and_by_digest() {
    let registry = Registry::start();
    let tmp = TempDir::new("reg-tag");
    let layout = tmp.path().join("layout");
    let manifest = image_layout(
        &layout,
        "v1",
        &[layer(&[("etc/hello", b"hello from the base\n")]), {
            let mut l = layer(&[("etc/motd", b"top layer\n")]);
            l.file_from("bin/busybox", "/bin/busybox", 0o755);
            l
        }],
    );
    registry.push(&layout, "v1", "test/tagged");

    let store = LayerStore::open(tmp.path().join("store")).unwrap();
    let recorder = Recorder::default();
    let r = reference(&format!("{}/test/tagged:v1", registry.addr()));
    let image = store.pull(&r, &insecure(), &recorder).unwrap();
    assert_eq!(image.manifest_digest, manifest);
    assert_eq!(image.layers.len(), 2);
    assert_eq!(
        file_in(&image, "etc/hello").as_deref(),
        Some(&b"hello from the base\n"[..])
    );
    assert_eq!(
        file_in(&image, "etc/motd").as_deref(),
        Some(&b"top layer\n"[..])
    );
    assert_eq!(
        file_in(&image, "bin/busybox").unwrap(),
        fs::read("/bin/busybox").unwrap()
    );
    assert_eq!(image.config.cmd, vec!["/bin/sh".to_owned()]);
    assert_eq!(*recorder.manifests.lock().unwrap(), vec![manifest.clone()]);
    for l in &image.layers {
        assert_eq!(recorder.outcome(&l.digest), Some(LayerOutcome::Fetched));
    }
    assert!(*recorder.progress_calls.lock().unwrap() >= 2);
    // Nothing of the download is left once the layers are in the store.
    let downloads = names(&tmp.path().join("store/downloads"));
    assert!(
        downloads.iter().all(|n| n.ends_with(".lock")),
        "{downloads:?}"
    );

    // By digest, into another store: the same image.
    let store2 = LayerStore::open(tmp.path().join("store2")).unwrap();
    let r = reference(&format!("{}/test/tagged@{manifest}", registry.addr()));
    let by_digest = store2.pull(&r, &insecure(), &NoProgress).unwrap();
    assert_eq!(by_digest.manifest_digest, manifest);
    assert_eq!(by_digest.config_digest, image.config_digest);
    assert_eq!(
        file_in(&by_digest, "etc/motd").as_deref(),
        Some(&b"top layer\n"[..])
    );

    // A digest that the registry does not have, and a tag it does not have.
    let missing = Digest::of(b"no such manifest");
    let r = reference(&format!("{}/test/tagged@{missing}", registry.addr()));
    match store2.pull(&r, &insecure(), &NoProgress) {
        Err(Error::RegistryStatus { status: 404, .. }) => {}
        other => panic!("expected a 404, got {other:?}"),
    }
    let r = reference(&format!("{}/test/tagged:nope", registry.addr()));
    match store2.pull(&r, &insecure(), &NoProgress) {
        Err(Error::RegistryStatus {
            status: 404,
            message,
            ..
        }) => assert!(message.contains("MANIFEST_UNKNOWN"), "{message}"),
        other => panic!("expected a 404, got {other:?}"),
    }
    // HTTPS is the default: this plain-HTTP registry is not spoken to without `insecure`.
    let r = reference(&format!("{}/test/tagged:v1", registry.addr()));
    assert!(matches!(
        store2.pull(&r, &PullOptions::new(), &NoProgress),
        Err(Error::RegistryTransport { .. })
    ));
}

/// A layout being written with an image for this machine's architecture (tagged `host`) and
/// one for another (`other`), each a layer holding the file `arch` that names it.
struct TwoPlatforms {
    host: Platform,
    other: &'static str,
    host_manifest: Digest,
    other_manifest: Digest,
    writer: LayoutWriter,
}

fn two_platforms(layout: &Path) -> TwoPlatforms {
    let host = Platform::host();
    let other = if host.architecture() == "arm64" {
        "amd64"
    } else {
        "arm64"
    };
    let mut writer = LayoutWriter::create(layout).unwrap();
    writer
        .add_layer(&layer(&[("arch", host.architecture().as_bytes())]))
        .unwrap();
    let host_manifest = writer
        .finish_manifest(Some("host"), &config(Some(host.architecture())))
        .unwrap();
    writer
        .add_layer(&layer(&[("arch", other.as_bytes())]))
        .unwrap();
    let other_manifest = writer
        .finish_manifest(Some("other"), &config(Some(other)))
        .unwrap();
    TwoPlatforms {
        host,
        other,
        host_manifest,
        other_manifest,
        writer,
    }
}

/// Puts by hand (OCI distribution spec, "Pushing Manifests") the index `repo:tag` of media type
/// `index_type`, listing `manifests` (digest, size, platform), each of `manifest_type`.
fn put_index(
    registry: &Registry,
    repo: &str,
    tag: &str,
    index_type: &str,
    manifest_type: &str,
    manifests: [(&Digest, u64, &Platform); 2],
) {
    let manifests: Vec<serde_json::Value> = manifests
        .iter()
        .map(|(digest, size, platform)| {
            let mut p = serde_json::json!({"os": platform.os(), "architecture": platform.architecture()});
            if let Some(v) = platform.variant() {
                p["variant"] = v.into();
            }
            serde_json::json!({"mediaType": manifest_type, "digest": digest.as_str(), "size": size, "platform": p})
        })
        .collect();
    let index =
        serde_json::json!({"schemaVersion": 2, "mediaType": index_type, "manifests": manifests});
    let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
    agent
        .put(format!(
            "http://{}/v2/{repo}/manifests/{tag}",
            registry.addr()
        ))
        .header("Content-Type", index_type)
        .send(index.to_string())
        .expect("put the index");
}

#[test]
fn multi_arch_index_picks_the_platform() {
    let registry = Registry::start();
    let tmp = TempDir::new("reg-multi");
    let layout = tmp.path().join("layout");
    let TwoPlatforms {
        host,
        other,
        host_manifest,
        other_manifest,
        writer,
    } = two_platforms(&layout);
    writer.close().unwrap();
    registry.push(&layout, "host", "test/multi");
    registry.push(&layout, "other", "test/multi");

    // The index, put by hand (OCI distribution spec, "Pushing Manifests").
    let size = |d: &Digest| {
        fs::metadata(layout.join("blobs/sha256").join(d.hex()))
            .unwrap()
            .len()
    };
    put_index(
        &registry,
        "test/multi",
        "multi",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        [
            (
                &other_manifest,
                size(&other_manifest),
                &Platform::new("linux", other, None),
            ),
            (&host_manifest, size(&host_manifest), &host),
        ],
    );

    let r = reference(&format!("{}/test/multi:multi", registry.addr()));
    let store = LayerStore::open(tmp.path().join("store")).unwrap();
    let image = store.pull(&r, &insecure(), &NoProgress).unwrap();
    assert_eq!(image.manifest_digest, host_manifest);
    assert_eq!(
        file_in(&image, "arch").as_deref(),
        Some(host.architecture().as_bytes())
    );

    let theirs = insecure().platform(Platform::new("linux", other, None));
    let image = store.pull(&r, &theirs, &NoProgress).unwrap();
    assert_eq!(image.manifest_digest, other_manifest);
    assert_eq!(file_in(&image, "arch").as_deref(), Some(other.as_bytes()));
    assert_eq!(image.config.architecture.as_deref(), Some(other));

    let none = insecure().platform(Platform::parse("linux/s390x").unwrap());
    match store.pull(&r, &none, &NoProgress) {
        Err(Error::PlatformNotFound {
            platform,
            available,
            ..
        }) => {
            assert_eq!(platform, "linux/s390x");
            assert_eq!(available.len(), 2);
        }
        other => panic!("expected PlatformNotFound, got {other:?}"),
    }
}

/// The manifest `name:tag` as the registry serves it for `accept`: its media type and digest.
fn served_manifest(registry: &Registry, name: &str, tag: &str, accept: &str) -> (String, Digest) {
    let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
    let mut answer = agent
        .get(format!(
            "http://{}/v2/{name}/manifests/{tag}",
            registry.addr()
        ))
        .header("Accept", accept)
        .call()
        .expect("get the manifest");
    let media_type = answer
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = answer.body_mut().read_to_vec().expect("read the manifest");
    (media_type, Digest::of(&body))
}

#[test]
fn docker_schema_2_manifests_and_manifest_lists_and_zstd_layers() {
    const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    let registry = Registry::start();
    let tmp = TempDir::new("reg-docker");
    let layout = tmp.path().join("layout");
    let TwoPlatforms {
        host,
        other,
        writer: mut w,
        ..
    } = two_platforms(&layout);
    let mut zstd = layer(&[("etc/zstd", b"a zstd layer\n")]);
    zstd.compression(Compression::Zstd);
    let zstd_layer = w.add_layer(&zstd).unwrap();
    w.finish_manifest(Some("zstd"), &config(None)).unwrap();
    w.close().unwrap();

    // skopeo converts to Docker v2 schema 2: the manifest and the layers' media types.
    for tag in ["host", "other"] {
        registry.push_with(&layout, tag, "test/docker", &["--format", "v2s2"]);
    }
    let (media_type, host_manifest) =
        served_manifest(&registry, "test/docker", "host", DOCKER_MANIFEST);
    assert_eq!(media_type, DOCKER_MANIFEST);
    let (_, other_manifest) = served_manifest(&registry, "test/docker", "other", DOCKER_MANIFEST);
    let store = LayerStore::open(tmp.path().join("store")).unwrap();
    let image = store
        .pull(
            &reference(&format!("{}/test/docker:host", registry.addr())),
            &insecure(),
            &NoProgress,
        )
        .unwrap();
    assert_eq!(image.manifest_digest, host_manifest);
    assert_eq!(
        file_in(&image, "arch").as_deref(),
        Some(host.architecture().as_bytes())
    );

    // A Docker manifest list, put by hand, of the two.
    let size = |d: &Digest| {
        let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
        agent
            .get(format!(
                "http://{}/v2/test/docker/manifests/{d}",
                registry.addr()
            ))
            .header("Accept", DOCKER_MANIFEST)
            .call()
            .unwrap()
            .body_mut()
            .read_to_vec()
            .unwrap()
            .len() as u64
    };
    put_index(
        &registry,
        "test/docker",
        "list",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        DOCKER_MANIFEST,
        [
            (
                &other_manifest,
                size(&other_manifest),
                &Platform::new("linux", other, None),
            ),
            (&host_manifest, size(&host_manifest), &host),
        ],
    );
    let r = reference(&format!("{}/test/docker:list", registry.addr()));
    let store = LayerStore::open(tmp.path().join("store-list")).unwrap();
    let image = store.pull(&r, &insecure(), &NoProgress).unwrap();
    assert_eq!(image.manifest_digest, host_manifest);
    let theirs = insecure().platform(Platform::new("linux", other, None));
    let image = store.pull(&r, &theirs, &NoProgress).unwrap();
    assert_eq!(image.manifest_digest, other_manifest);
    assert_eq!(file_in(&image, "arch").as_deref(), Some(other.as_bytes()));

    // A zstd layer (OCI `tar+zstd`), pushed as it is.
    registry.push(&layout, "zstd", "test/zstd");
    let image = store
        .pull(
            &reference(&format!("{}/test/zstd:zstd", registry.addr())),
            &insecure(),
            &NoProgress,
        )
        .unwrap();
    // The blob the layout wrote, unconverted.
    assert_eq!(image.layers[0].digest, zstd_layer.digest);
    assert_eq!(
        file_in(&image, "etc/zstd").as_deref(),
        Some(&b"a zstd layer\n"[..])
    );
}

#[test]
fn shared_layers_are_fetched_once_and_a_second_pull_fetches_no_blob() {
    let registry = Registry::start();
    let tmp = TempDir::new("reg-shared");
    let layout = tmp.path().join("layout");
    let base = layer(&[("base", &noise(64 << 10, 1)[..])]);
    let mut w = LayoutWriter::create(&layout).unwrap();
    w.add_layer(&base).unwrap();
    w.add_layer(&layer(&[("a", b"image a")])).unwrap();
    let a = w.finish_manifest(Some("a"), &config(None)).unwrap();
    w.add_layer(&base).unwrap();
    w.add_layer(&layer(&[("b", b"image b")])).unwrap();
    let b = w.finish_manifest(Some("b"), &config(None)).unwrap();
    w.close().unwrap();
    let a_layers = layer_digests(&layout, &a);
    let b_layers = layer_digests(&layout, &b);
    assert_eq!(a_layers[0], b_layers[0], "the base layer is the same blob");
    registry.push(&layout, "a", "test/shared");
    registry.push(&layout, "b", "test/shared");
    let before = registry.blob_gets("test/shared").len();

    let store = LayerStore::open(tmp.path().join("store")).unwrap();
    let ra = reference(&format!("{}/test/shared:a", registry.addr()));
    let rb = reference(&format!("{}/test/shared:b", registry.addr()));
    store.pull(&ra, &insecure(), &NoProgress).unwrap();
    let recorder = Recorder::default();
    let image_b = store.pull(&rb, &insecure(), &recorder).unwrap();
    assert_eq!(file_in(&image_b, "b").as_deref(), Some(&b"image b"[..]));
    assert_eq!(recorder.outcome(&b_layers[0]), Some(LayerOutcome::InStore));

    let gets = registry.blob_gets("test/shared")[before..].to_vec();
    let count = |d: &Digest| gets.iter().filter(|g| *g == d.as_str()).count();
    assert_eq!(
        count(&a_layers[0]),
        1,
        "the shared layer is fetched once: {gets:?}"
    );
    assert_eq!(count(&a_layers[1]), 1);
    assert_eq!(count(&b_layers[1]), 1);

    // Again: one manifest request, no blob. (And a cache file that a dead process was
    // writing, beyond any pid the kernel gives, is collected.)
    let dead = tmp.path().join("store/blobs/sha256/.tmp-4999999-0");
    fs::write(&dead, b"half a config").unwrap();
    let blobs_before = registry.blob_gets("test/shared").len();
    let manifests_before = registry.manifest_gets("test/shared");
    let again = store.pull(&ra, &insecure(), &NoProgress).unwrap();
    assert_eq!(again.manifest_digest, a);
    assert_eq!(file_in(&again, "a").as_deref(), Some(&b"image a"[..]));
    assert_eq!(registry.blob_gets("test/shared").len(), blobs_before);
    assert_eq!(registry.manifest_gets("test/shared"), manifests_before + 1);
    assert!(!dead.exists());

    // With the cache cleared, only the config is fetched again: the layers are in the store.
    store.clear_pull_cache().unwrap();
    assert!(names(&tmp.path().join("store/blobs/sha256")).is_empty());
    store.pull(&ra, &insecure(), &NoProgress).unwrap();
    let gets = registry.blob_gets("test/shared")[blobs_before..].to_vec();
    assert_eq!(gets.len(), 1, "{gets:?}");
    assert_ne!(gets[0], a_layers[0].as_str());
    assert_ne!(gets[0], a_layers[1].as_str());
}

#[test]
fn two_pullers_of_one_image_fetch_each_layer_once() {
    let registry = Registry::start();
    let tmp = TempDir::new("reg-two");
    let layout = tmp.path().join("layout");
    let manifest = image_layout(
        &layout,
        "v1",
        &[
            layer(&[("one", &noise(512 << 10, 21)[..])]),
            layer(&[("two", &noise(512 << 10, 22)[..])]),
        ],
    );
    let layers = layer_digests(&layout, &manifest);
    registry.push(&layout, "v1", "test/two");
    let before = registry.blob_gets("test/two").len();
    let root = tmp.path().join("store");
    let r = reference(&format!("{}/test/two:v1", registry.addr()));
    std::thread::scope(|s| {
        let pullers: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    // Each with its own handle, as two processes would have.
                    let store = LayerStore::open(&root).unwrap();
                    store.pull(&r, &insecure(), &NoProgress).unwrap()
                })
            })
            .collect();
        for p in pullers {
            let image = p.join().unwrap();
            assert_eq!(file_in(&image, "two").unwrap(), noise(512 << 10, 22));
        }
    });
    let gets = registry.blob_gets("test/two")[before..].to_vec();
    for l in &layers {
        let n = gets.iter().filter(|g| *g == l.as_str()).count();
        assert_eq!(n, 1, "layer {l} fetched {n} times: {gets:?}");
    }
    let left: Vec<String> = names(&root.join("downloads"))
        .into_iter()
        .filter(|n| !n.ends_with(".lock"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_corrupted_blob_is_refused_and_leaves_the_store_clean() {
    let registry = Registry::start();
    let tmp = TempDir::new("reg-corrupt");
    let layout = tmp.path().join("layout");
    let manifest = image_layout(
        &layout,
        "v1",
        &[layer(&[("big", &noise(256 << 10, 7)[..])])],
    );
    let digest = layer_digests(&layout, &manifest).remove(0);
    registry.push(&layout, "v1", "test/corrupt");
    let data = registry.blob_data(digest.as_str());
    let original = fs::read(&data).unwrap();
    let mut bad = original.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x55;
    fs::write(&data, &bad).unwrap();

    let root = tmp.path().join("store");
    let store = LayerStore::open(&root).unwrap();
    let r = reference(&format!("{}/test/corrupt:v1", registry.addr()));
    match store.pull(&r, &insecure(), &NoProgress) {
        Err(Error::DigestMismatch {
            what: "layer",
            expected,
            ..
        }) => assert_eq!(expected, digest),
        other => panic!("expected a layer digest mismatch, got {other:?}"),
    }
    assert!(store.layer(&digest).unwrap().is_none());
    assert!(store.layers().unwrap().is_empty());
    let left: Vec<String> = names(&root.join("downloads"))
        .into_iter()
        .filter(|n| !n.ends_with(".lock"))
        .collect();
    assert!(left.is_empty(), "downloads left: {left:?}");
    assert!(!root.join("blobs/sha256").join(digest.hex()).exists());
    assert!(
        names(&root.join("tmp")).is_empty(),
        "{:?}",
        names(&root.join("tmp"))
    );

    // The positive control: the same pull with the blob intact.
    fs::write(&data, &original).unwrap();
    let image = store.pull(&r, &insecure(), &NoProgress).unwrap();
    assert_eq!(image.layers[0].digest, digest);
    assert_eq!(file_in(&image, "big").unwrap(), noise(256 << 10, 7));
}

/// A big layer's image pushed as `name:v1`; returns the layer's digest and size.
fn big_image(registry: &Registry, tmp: &Path, name: &str) -> (Digest, u64, Vec<u8>) {
    let layout = tmp.join("layout");
    let content = noise(1536 << 10, 11);
    let manifest = image_layout(&layout, "v1", &[layer(&[("big", &content[..])])]);
    let digest = layer_digests(&layout, &manifest).remove(0);
    let size = fs::metadata(layout.join("blobs/sha256").join(digest.hex()))
        .unwrap()
        .len();
    registry.push(&layout, "v1", name);
    (digest, size, content)
}

/// The `Range` headers of the proxy's GETs of blob `digest`, in order (`None` for a GET
/// without one).
fn blob_ranges(proxy: &Proxy, digest: &Digest) -> Vec<Option<String>> {
    proxy
        .requests()
        .iter()
        .filter(|r| r.line().starts_with("GET ") && r.line().contains(digest.as_str()))
        .map(|r| r.header("range"))
        .collect()
}

#[test]
fn a_dropped_connection_is_resumed_with_a_range_request() {
    let registry = Registry::start();
    let tmp = TempDir::new("reg-drop");
    let (digest, size, content) = big_image(&registry, tmp.path(), "test/drop");
    let proxy = Proxy::start(registry.socket_addr(), Demand::Nothing);
    proxy.cut_next(digest.as_str(), 400 << 10);

    let store = LayerStore::open(tmp.path().join("store")).unwrap();
    let recorder = Recorder::default();
    let r = reference(&format!("{}/test/drop:v1", proxy.addr()));
    let image = store.pull(&r, &insecure(), &recorder).unwrap();
    assert_eq!(file_in(&image, "big").unwrap(), content);
    assert_eq!(recorder.outcome(&digest), Some(LayerOutcome::Resumed));

    let ranges = blob_ranges(&proxy, &digest);
    assert_eq!(ranges.len(), 2, "{ranges:?}");
    assert_eq!(ranges[0], None);
    let range = ranges[1].as_deref().expect("the retry asks for a range");
    let from: u64 = range
        .strip_prefix("bytes=")
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected Range {range:?}"));
    assert!(from > 0 && from < size, "resumed from {from} of {size}");
}

#[test]
fn a_later_pull_resumes_an_interrupted_download() {
    let registry = Registry::start();
    let tmp = TempDir::new("reg-resume");
    let (digest, size, content) = big_image(&registry, tmp.path(), "test/resume");
    let proxy = Proxy::start(registry.socket_addr(), Demand::Nothing);
    proxy.cut_next(digest.as_str(), 600 << 10);
    let root = tmp.path().join("store");
    let r = reference(&format!("{}/test/resume:v1", proxy.addr()));

    // A pull in another process that gives up at the first drop leaves its bytes.
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "interrupted_pull_in_a_child_process",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("PAL_REG_STORE", &root)
        .env("PAL_REG_REF", r.to_string())
        .env("PAL_REG_LAYER", digest.as_str())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("1 passed"),
        "the child pull: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let partial = root
        .join("downloads")
        .join(format!("sha256-{}.partial", digest.hex()));
    let kept = fs::metadata(&partial)
        .expect("the partial download is kept")
        .len();
    assert!(kept > 0 && kept < size, "{kept} of {size}");

    // A new handle (as a new process would open it) asks only for the rest.
    let store = LayerStore::open(&root).unwrap();
    let recorder = Recorder::default();
    let image = store.pull(&r, &insecure().retries(0), &recorder).unwrap();
    assert_eq!(file_in(&image, "big").unwrap(), content);
    assert_eq!(recorder.outcome(&digest), Some(LayerOutcome::Resumed));
    assert!(recorder
        .starts
        .lock()
        .unwrap()
        .contains(&(digest.clone(), size, kept)));
    let ranges = blob_ranges(&proxy, &digest);
    assert_eq!(ranges.len(), 2, "{ranges:?}");
    assert_eq!(ranges[1].as_deref(), Some(&*format!("bytes={kept}-")));
    assert!(!partial.exists());

    // A partial download that nobody resumes goes with the pull cache.
    let stale = root
        .join("downloads")
        .join(format!("sha256-{}.partial", Digest::of(b"stale").hex()));
    fs::write(&stale, b"half").unwrap();
    fs::write(
        root.join("downloads")
            .join(format!("sha256-{}.lock", Digest::of(b"stale").hex())),
        b"",
    )
    .unwrap();
    store.clear_pull_cache().unwrap();
    assert!(!stale.exists());
    assert!(store.layer(&digest).unwrap().is_some());
}

/// The first half of [`a_later_pull_resumes_an_interrupted_download`], run by it in a process
/// of its own (ignored otherwise).
#[test]
#[ignore = "run by a_later_pull_resumes_an_interrupted_download"]
fn interrupted_pull_in_a_child_process() {
    let (Some(root), Some(r), Some(layer)) = (
        std::env::var_os("PAL_REG_STORE"),
        std::env::var("PAL_REG_REF").ok(),
        std::env::var("PAL_REG_LAYER").ok(),
    ) else {
        return;
    };
    let store = LayerStore::open(root).unwrap();
    match store.pull(&reference(&r), &insecure().retries(0), &NoProgress) {
        Err(Error::RegistryTransport { .. }) => {}
        other => panic!("expected the cut to fail the pull, got {other:?}"),
    }
    assert!(store
        .layer(&Digest::parse(&layer).unwrap())
        .unwrap()
        .is_none());
}

#[test]
fn bad_partial_bytes_restart_the_download_from_zero() {
    let registry = Registry::start();
    let tmp = TempDir::new("reg-badpartial");
    let (digest, _, content) = big_image(&registry, tmp.path(), "test/badpartial");
    let root = tmp.path().join("store");
    let store = LayerStore::open(&root).unwrap();
    // A partial download whose bytes are not the blob's (as after bit rot).
    let partial = root
        .join("downloads")
        .join(format!("sha256-{}.partial", digest.hex()));
    fs::create_dir_all(partial.parent().unwrap()).unwrap();
    fs::write(&partial, noise(100 << 10, 99)).unwrap();
    let proxy = Proxy::start(registry.socket_addr(), Demand::Nothing);
    let r = reference(&format!("{}/test/badpartial:v1", proxy.addr()));
    let image = store.pull(&r, &insecure(), &NoProgress).unwrap();
    assert_eq!(file_in(&image, "big").unwrap(), content);
    let ranges = blob_ranges(&proxy, &digest);
    assert_eq!(
        ranges,
        vec![Some(format!("bytes={}-", 100 << 10)), None],
        "a resume whose result does not verify starts over"
    );
}

#[test]
fn a_stalled_download_is_given_up_and_resumed() {
    let registry = Registry::start();
    let tmp = TempDir::new("reg-stall");
    let (digest, _, content) = big_image(&registry, tmp.path(), "test/stall");
    let proxy = Proxy::start(registry.socket_addr(), Demand::Nothing);
    proxy.stall_next(digest.as_str(), 300 << 10);
    let store = LayerStore::open(tmp.path().join("store")).unwrap();
    let recorder = Recorder::default();
    let r = reference(&format!("{}/test/stall:v1", proxy.addr()));
    let options = insecure().stall_timeout(Duration::from_secs(1));
    let image = store.pull(&r, &options, &recorder).unwrap();
    assert_eq!(file_in(&image, "big").unwrap(), content);
    assert_eq!(recorder.outcome(&digest), Some(LayerOutcome::Resumed));
    let ranges = blob_ranges(&proxy, &digest);
    assert_eq!(ranges.len(), 2, "{ranges:?}");
    assert!(ranges[1]
        .as_deref()
        .is_some_and(|r| r.starts_with("bytes=")));
}

#[test]
fn layers_download_concurrently_within_the_bound() {
    let registry = Registry::start();
    let tmp = TempDir::new("reg-bound");
    let layout = tmp.path().join("layout");
    let layers: Vec<LayerBuilder> = (0..6)
        .map(|i| layer(&[(&*format!("l{i}"), &noise(200 << 10, 100 + i)[..])]))
        .collect();
    image_layout(&layout, "v1", &layers);
    registry.push(&layout, "v1", "test/bound");
    for bound in [1, 2] {
        let proxy = Proxy::start(registry.socket_addr(), Demand::Nothing);
        let store = LayerStore::open(tmp.path().join(format!("store{bound}"))).unwrap();
        let r = reference(&format!("{}/test/bound:v1", proxy.addr()));
        let image = store
            .pull(&r, &insecure().concurrency(bound), &NoProgress)
            .unwrap();
        assert_eq!(image.layers.len(), 6);
        for i in 0..6u64 {
            assert_eq!(
                file_in(&image, &format!("l{i}")).unwrap(),
                noise(200 << 10, 100 + i)
            );
        }
        let most = proxy.max_blob_gets_at_once();
        assert!(
            most >= 1 && most <= bound,
            "{most} blob GETs at once, bound {bound}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Authentication

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn token_auth_with_credentials_from_docker_config() {
    let registry = Registry::start();
    let tmp = TempDir::new("reg-token");
    let layout = tmp.path().join("layout");
    image_layout(&layout, "v1", &[layer(&[("secret", b"only for alice")])]);
    registry.push(&layout, "v1", "test/private");
    let tokens = TokenServer::start(&b64("alice:wonderland"), "good-token-123");
    let proxy = Proxy::start(
        registry.socket_addr(),
        Demand::Bearer {
            token: "good-token-123".into(),
            realm: tokens.realm(),
            service: "test-registry".into(),
        },
    );
    let r = reference(&format!("{}/test/private:v1", proxy.addr()));
    let empty_config = tmp.path().join("empty.json");
    fs::write(&empty_config, "{}").unwrap();

    // Anonymous: the token server gives a token the registry refuses.
    let store = LayerStore::open(tmp.path().join("store")).unwrap();
    let anonymous = insecure().docker_config(&empty_config);
    match store.pull(&r, &anonymous, &NoProgress) {
        Err(Error::RegistryAuth { .. }) => {}
        other => panic!("expected an auth error, got {other:?}"),
    }
    assert!(tokens
        .requests()
        .iter()
        .all(|t| t.header("authorization").is_none()));

    // Wrong credentials: the token server refuses them; the password is never shown.
    let wrong = insecure().credentials(Credentials::new("alice", "hunter2-wrong"));
    let err = store.pull(&r, &wrong, &NoProgress).unwrap_err();
    assert!(matches!(err, Error::RegistryAuth { .. }), "{err:?}");
    assert!(!format!("{err} {err:?} {wrong:?}").contains("hunter2"));

    // The right ones, from a Docker config.json.
    let docker_config = tmp.path().join("config.json");
    fs::write(
        &docker_config,
        serde_json::json!({"auths": {proxy.addr(): {"auth": b64("alice:wonderland")}}}).to_string(),
    )
    .unwrap();
    let image = store
        .pull(&r, &insecure().docker_config(&docker_config), &NoProgress)
        .unwrap();
    assert_eq!(
        file_in(&image, "secret").as_deref(),
        Some(&b"only for alice"[..])
    );
    let asked = tokens.requests();
    let last = asked.last().unwrap();
    assert!(
        last.line().contains("service=test-registry"),
        "{}",
        last.line()
    );
    assert!(
        last.line()
            .contains("scope=repository%3Atest%2Fprivate%3Apull"),
        "{}",
        last.line()
    );
    // Every request that reached the registry carried the token.
    let forwarded: Vec<_> = proxy
        .requests()
        .into_iter()
        .filter(|q| q.header("authorization").as_deref() == Some("Bearer good-token-123"))
        .collect();
    assert!(forwarded.iter().any(|q| q.line().contains("/blobs/")));
}

#[test]
fn redirected_blobs_never_get_the_registry_credentials() {
    let registry = Registry::start();
    let tmp = TempDir::new("reg-redirect");
    let layout = tmp.path().join("layout");
    image_layout(&layout, "v1", &[layer(&[("f", b"redirected")])]);
    registry.push(&layout, "v1", "test/redirect");
    let tokens = TokenServer::start(&b64("carol:pw"), "carols-token");
    // The "storage" the registry redirects blobs to: another origin.
    let storage = Proxy::start(registry.socket_addr(), Demand::Nothing);
    let front = Proxy::start(
        registry.socket_addr(),
        Demand::Bearer {
            token: "carols-token".into(),
            realm: tokens.realm(),
            service: "test-registry".into(),
        },
    );
    front.redirect_blobs_to(&format!("http://{}", storage.addr()));
    let store = LayerStore::open(tmp.path().join("store")).unwrap();
    let r = reference(&format!("{}/test/redirect:v1", front.addr()));
    let options = insecure().credentials(Credentials::new("carol", "pw"));
    let image = store.pull(&r, &options, &NoProgress).unwrap();
    assert_eq!(file_in(&image, "f").as_deref(), Some(&b"redirected"[..]));
    let stored: Vec<_> = storage
        .requests()
        .into_iter()
        .filter(|q| q.line().contains("/blobs/"))
        .collect();
    assert!(stored.len() >= 2, "config and layer come from the storage");
    assert!(
        stored.iter().all(|q| q.header("authorization").is_none()),
        "{stored:?}"
    );
    assert!(front
        .requests()
        .iter()
        .filter(|q| q.line().contains("/blobs/"))
        .any(|q| q.header("authorization").as_deref() == Some("Bearer carols-token")));
}

#[test]
fn basic_auth() {
    let registry = Registry::start();
    let tmp = TempDir::new("reg-basic");
    let layout = tmp.path().join("layout");
    image_layout(&layout, "v1", &[layer(&[("f", b"basic")])]);
    registry.push(&layout, "v1", "test/basic");
    let proxy = Proxy::start(
        registry.socket_addr(),
        Demand::Basic {
            b64: b64("bob:builder"),
        },
    );
    let r = reference(&format!("{}/test/basic:v1", proxy.addr()));
    let store = LayerStore::open(tmp.path().join("store")).unwrap();
    let empty_config = tmp.path().join("empty.json");
    fs::write(&empty_config, "{}").unwrap();
    match store.pull(&r, &insecure().docker_config(&empty_config), &NoProgress) {
        Err(Error::RegistryAuth { .. }) => {}
        other => panic!("expected an auth error, got {other:?}"),
    }
    let ok = insecure().credentials(Credentials::new("bob", "builder"));
    let image = store.pull(&r, &ok, &NoProgress).unwrap();
    assert_eq!(file_in(&image, "f").as_deref(), Some(&b"basic"[..]));
}

// ---------------------------------------------------------------------------------------------
// References

#[test]
fn references_follow_docker_naming() {
    let hex = "a".repeat(64);
    for (given, full) in [
        ("alpine", "docker.io/library/alpine:latest".to_owned()),
        ("alpine:3.20", "docker.io/library/alpine:3.20".to_owned()),
        (
            &*format!("docker.io/library/alpine@sha256:{hex}"),
            format!("docker.io/library/alpine@sha256:{hex}"),
        ),
        (
            "localhost:5000/x/y:tag",
            "localhost:5000/x/y:tag".to_owned(),
        ),
        (
            &*format!("ghcr.io/o/r:t@sha256:{hex}"),
            format!("ghcr.io/o/r:t@sha256:{hex}"),
        ),
    ] {
        let r = reference(given);
        assert_eq!(r.to_string(), full);
        assert_eq!(reference(&full), r);
    }
    assert!(matches!(
        Reference::parse("Alpine:x"),
        Err(Error::InvalidReference { .. })
    ));
}
