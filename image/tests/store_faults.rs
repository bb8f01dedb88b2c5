//! The layer store under faults, as a fault-injection run would put it: importers killed with
//! SIGKILL at random points, layouts with broken blobs, read-only directories, a full disk,
//! stored layers and records damaged on disk. After each fault the store must hold nothing
//! half-made, collect what the dead left, find and quarantine what was damaged, and import again.
//! Also: images recorded by name, and the collection of temporary entries by owner.

#[path = "store_faults/support.rs"]
mod support;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use palisade_image::{
    Error, Image, ImageConfig, LayerBuilder, LayerStore, LayoutWriter, OpaqueXattr, StoreOptions,
};
use palisade_test_support::{ignored_test_command, require_root, run_ignored_test_as, TempDir};
use support::{
    build_image, child_env, own_start_time, tmp_entries, tree_listing, ChildGuard, Rng, StateGuard,
};

/// Runs the ignored test `name` of this binary as a child process, with `env`.
fn spawn_child(name: &str, env: &[(&str, &Path)]) -> ChildGuard {
    let mut command = ignored_test_command(&std::env::current_exe().unwrap(), name);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    ChildGuard::new(command.spawn().unwrap())
}

/// The layers of `image`, each as a listing of its tree.
fn listings(image: &Image) -> Vec<BTreeMap<PathBuf, String>> {
    image.layers.iter().map(|l| tree_listing(&l.path)).collect()
}

// ---------------------------------------------------------------------------------------------
// Killed importers

/// The importer the kill test starts and kills: imports the layout and records it by name.
#[test]
#[ignore = "run by killed_imports_leave_nothing_and_the_next_import_succeeds"]
fn importer_child() {
    let (Some(store), Some(layout)) = (
        child_env("PALISADE_FAULT_STORE"),
        child_env("PALISADE_FAULT_LAYOUT"),
    ) else {
        return;
    };
    let store = LayerStore::open(store).unwrap();
    let image = store.import(layout, None).unwrap();
    store.tag("fault:1", &image).unwrap();
}

#[test]
fn killed_imports_leave_nothing_and_the_next_import_succeeds() {
    let tmp = TempDir::new("store-kill");
    let layout = tmp.path().join("layout");
    // Four layers of a few hundred files each, so that kills land in every stage of an import.
    build_image(&layout, 1, 4, 400);
    let reference_store = LayerStore::open(tmp.path().join("reference")).unwrap();
    let reference = reference_store.import(&layout, None).unwrap();
    let expected = listings(&reference);

    let seed = std::env::var("PALISADE_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_u64);
    eprintln!("fault seed {seed} (set PALISADE_FAULT_SEED to replay)");
    let mut rng = Rng::new(seed);

    // How long a whole run of the importer takes, start-up included: kills are drawn within it.
    let root = tmp.path().join("store-0");
    let started = Instant::now();
    let out = spawn_child(
        "importer_child",
        &[
            ("PALISADE_FAULT_STORE", &root),
            ("PALISADE_FAULT_LAYOUT", &layout),
        ],
    )
    .wait_with_output();
    let whole = started.elapsed();
    assert!(out.status.success(), "{}", out.text());

    let mut leftovers_seen = 0;
    let mut killed = 0;
    for i in 0..10 {
        // A fresh store each time; every other time a second importer is killed too, resuming
        // from what the first left.
        let root = tmp.path().join(format!("store-{}", 1 + i));
        for _ in 0..1 + i % 2 {
            let mut child = spawn_child(
                "importer_child",
                &[
                    ("PALISADE_FAULT_STORE", &root),
                    ("PALISADE_FAULT_LAYOUT", &layout),
                ],
            );
            if i == 0 {
                // The positive control: killed as soon as its first temporary entry is there,
                // so that there is a leftover to collect.
                let tmp_dir = root.join("tmp");
                loop {
                    if tmp_dir.exists() && fs::read_dir(&tmp_dir).unwrap().next().is_some() {
                        break;
                    }
                    assert!(child.try_wait().is_none(), "the importer ended first");
                    std::thread::sleep(Duration::from_micros(200));
                }
            } else {
                let delay = rng.below(whole.as_micros() as u64);
                std::thread::sleep(Duration::from_micros(delay));
            }
            if child.kill_and_wait() {
                killed += 1;
            }
            if root.join("tmp").exists() {
                leftovers_seen += fs::read_dir(root.join("tmp")).unwrap().count();
            }
            if i == 0 {
                assert!(
                    leftovers_seen > 0,
                    "the killed importer left nothing in tmp/"
                );
            }
        }

        // Opening collects the leftovers of the dead importer.
        let store = LayerStore::open(&root).unwrap();
        assert!(tmp_entries(&store).is_empty(), "{:?}", tmp_entries(&store));
        // No torn layer is visible: every layer there verifies.
        let report = store.verify().unwrap();
        assert!(report.is_clean(), "iteration {i}: {report:?}");
        for layer in store.layers().unwrap() {
            let index = reference
                .layers
                .iter()
                .position(|l| l.digest == layer.digest)
                .unwrap();
            assert_eq!(tree_listing(&layer.path), expected[index], "iteration {i}");
        }
        // A record, if the importer got that far, names the whole image.
        if let Some(image) = store.image("fault:1").unwrap() {
            assert_eq!(listings(&image), expected);
        }
        // And the import succeeds with the right content.
        let image = store.import(&layout, None).unwrap();
        assert_eq!(listings(&image), expected, "iteration {i}");
        assert_eq!(image.manifest_digest, reference.manifest_digest);
        assert!(tmp_entries(&store).is_empty());
    }
    eprintln!("{killed} importers killed, {leftovers_seen} leftovers collected");
    assert!(killed > 0);
}

// ---------------------------------------------------------------------------------------------
// Injected errors

/// The store holds exactly the whole layers `digests` of `image`, verified, and nothing else:
/// no temporary entry, no record.
fn assert_holds_only(store: &LayerStore, layers: &[&palisade_image::Layer]) {
    assert!(tmp_entries(store).is_empty(), "{:?}", tmp_entries(store));
    let stored: Vec<_> = store
        .layers()
        .unwrap()
        .into_iter()
        .map(|l| l.digest)
        .collect();
    let mut wanted: Vec<_> = layers.iter().map(|l| l.digest.clone()).collect();
    wanted.sort();
    assert_eq!(stored, wanted);
    assert_eq!(
        fs::read_dir(store.root().join("layers/sha256"))
            .unwrap()
            .count(),
        layers.len()
    );
    let report = store.verify().unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.verified.len(), layers.len());
    assert!(store.images().unwrap().is_empty());
}

#[test]
fn broken_blobs_leave_nothing_half_made() {
    let tmp = TempDir::new("store-blobs");
    let layout = tmp.path().join("layout");
    build_image(&layout, 2, 3, 50);
    let reference = LayerStore::open(tmp.path().join("reference"))
        .unwrap()
        .import(&layout, None)
        .unwrap();
    let top = &reference.layers[2];
    let blob = layout.join("blobs/sha256").join(top.digest.hex());
    let original = fs::read(&blob).unwrap();

    type Breaker = fn(&Path, &[u8]);
    type Expected = fn(&Error) -> bool;
    let cases: [(&str, Breaker, Expected); 4] = [
        (
            "truncated",
            |blob, bytes| fs::write(blob, &bytes[..bytes.len() / 2]).unwrap(),
            |e| matches!(e, Error::SizeMismatch { what: "layer", .. }),
        ),
        (
            // Same size, one byte changed deep inside a file's content: the layer unpacks
            // whole before its digest is known to be wrong.
            "flipped byte",
            |blob, bytes| {
                let mut bytes = bytes.to_vec();
                let at = bytes.len() / 2;
                bytes[at] ^= 0x40;
                fs::write(blob, bytes).unwrap();
            },
            |e| matches!(e, Error::DigestMismatch { what: "layer", .. }),
        ),
        (
            "missing",
            |blob, _| fs::remove_file(blob).unwrap(),
            |e| matches!(e, Error::InvalidImage { .. }),
        ),
        (
            "a directory",
            |blob, _| {
                fs::remove_file(blob).unwrap();
                fs::create_dir(blob).unwrap();
            },
            |e| matches!(e, Error::InvalidImage { .. }),
        ),
    ];
    for (i, (what, break_blob, expected)) in cases.iter().enumerate() {
        break_blob(&blob, &original);
        let store = LayerStore::open(tmp.path().join(format!("store-{i}"))).unwrap();
        let err = store.import(&layout, None).unwrap_err();
        assert!(expected(&err), "{what}: {err:?}");
        // The two layers below are whole; nothing of the broken one is anywhere.
        assert_holds_only(&store, &[&reference.layers[0], &reference.layers[1]]);
        // Repaired, the layout imports.
        if blob.is_dir() {
            fs::remove_dir(&blob).unwrap();
        }
        fs::write(&blob, &original).unwrap();
        let image = store.import(&layout, None).unwrap();
        assert_eq!(listings(&image), listings(&reference), "{what}");
        assert!(tmp_entries(&store).is_empty());
    }
}

#[test]
fn read_only_directories_leave_nothing_half_made() {
    require_root!();
    let tmp = TempDir::new("store-readonly");
    let layout = tmp.path().join("layout");
    build_image(&layout, 3, 2, 50);
    let reference = LayerStore::open(tmp.path().join("reference"))
        .unwrap()
        .import(&layout, None)
        .unwrap();

    // `layers/sha256/` immutable (`chattr +i`, which binds root too): each layer is unpacked
    // and made durable, and then its publishing rename fails.
    let store = LayerStore::open(tmp.path().join("store")).unwrap();
    let layers = store.root().join("layers/sha256");
    {
        let _immutable = StateGuard::immutable(&layers);
        let err = store.import(&layout, None).unwrap_err();
        assert_eq!(err.errno(), Some(libc::EPERM), "{err:?}");
        assert!(matches!(err, Error::Io { .. }), "{err:?}");
    }
    assert_holds_only(&store, &[]);

    // `tmp/` immutable: not even a temporary directory can be made.
    {
        let _immutable = StateGuard::immutable(&store.root().join("tmp"));
        let err = store.import(&layout, None).unwrap_err();
        assert_eq!(err.errno(), Some(libc::EPERM), "{err:?}");
    }
    assert_holds_only(&store, &[]);

    let image = store.import(&layout, None).unwrap();
    assert_eq!(listings(&image), listings(&reference));
}

/// The full-disk test's child: a private mount namespace whose small tmpfs holds the store.
#[test]
#[ignore = "run by a_full_disk_gives_a_clean_error_and_leaves_nothing"]
fn full_disk_child() {
    let (Some(mount_point), Some(layout)) = (
        child_env("PALISADE_FAULT_MOUNT"),
        child_env("PALISADE_FAULT_LAYOUT"),
    ) else {
        return;
    };
    let small = child_env("PALISADE_FAULT_SMALL").unwrap();
    support::private_tmpfs(&mount_point, "size=2m");
    let store = LayerStore::open(mount_point.join("store")).unwrap();

    // The first layer fits, the second (8 MiB) does not.
    let err = store.import(&layout, None).unwrap_err();
    assert_eq!(err.errno(), Some(libc::ENOSPC), "{err:?}");
    assert!(tmp_entries(&store).is_empty(), "{:?}", tmp_entries(&store));
    let layers = store.layers().unwrap();
    assert_eq!(layers.len(), 1);
    assert_eq!(
        fs::read_dir(store.root().join("layers/sha256"))
            .unwrap()
            .count(),
        1
    );
    let report = store.verify().unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.verified.len(), 1);

    // The space is free again: a small image fits.
    let image = store.import(&small, None).unwrap();
    assert_eq!(
        fs::read(image.layers[0].path.join("small")).unwrap(),
        b"small\n"
    );
    println!("FULL-DISK-OK");
}

#[test]
fn a_full_disk_gives_a_clean_error_and_leaves_nothing() {
    require_root!();
    let tmp = TempDir::new("store-full");
    let layout = tmp.path().join("layout");
    support::build_big_image(&layout);
    let small = tmp.path().join("small");
    support::build_small_image(&small);
    let mount_point = tmp.path().join("mnt");
    fs::create_dir(&mount_point).unwrap();
    let out = spawn_child(
        "full_disk_child",
        &[
            ("PALISADE_FAULT_MOUNT", &mount_point),
            ("PALISADE_FAULT_LAYOUT", &layout),
            ("PALISADE_FAULT_SMALL", &small),
        ],
    )
    .wait_with_output();
    let text = out.text();
    assert!(
        out.status.success() && text.contains("FULL-DISK-OK"),
        "{text}"
    );
    // The tmpfs was the child's alone: nothing is mounted here, nothing was written.
    assert_eq!(fs::read_dir(&mount_point).unwrap().count(), 0);
}

// ---------------------------------------------------------------------------------------------
// Damage on disk

type Damage = fn(&Path);

/// A regular file of a layer's tree, the largest (so that a flipped byte is in its content).
fn some_file(layer: &Path) -> PathBuf {
    let mut best: Option<(u64, PathBuf)> = None;
    let mut stack = vec![layer.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() && best.as_ref().is_none_or(|(len, _)| meta.len() > *len) {
                best = Some((meta.len(), entry.path()));
            }
        }
    }
    best.unwrap().1
}

#[test]
fn damaged_layers_are_quarantined_and_imported_again() {
    let tmp = TempDir::new("store-damage");
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    build_image(&one, 4, 2, 30);
    build_image(&two, 5, 2, 30);
    let store = LayerStore::open(tmp.path().join("store")).unwrap();
    let a = store.import(&one, None).unwrap();
    let b = store.import(&two, None).unwrap();
    store.tag("a", &a).unwrap();
    store.tag("b", &b).unwrap();
    let (expected_a, expected_b) = (listings(&a), listings(&b));

    // The positive control: an undamaged store verifies.
    let report = store.verify().unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.verified.len(), 4);

    let cases: [(&str, Damage); 5] = [
        ("truncated", |f| {
            let len = fs::metadata(f).unwrap().len();
            fs::OpenOptions::new()
                .write(true)
                .open(f)
                .unwrap()
                .set_len(len / 2)
                .unwrap();
        }),
        ("flipped byte", |f| {
            let mut bytes = fs::read(f).unwrap();
            let at = bytes.len() / 3;
            bytes[at] ^= 1;
            fs::write(f, bytes).unwrap();
        }),
        ("deleted", |f| fs::remove_file(f).unwrap()),
        ("mode changed", |f| {
            let mode = fs::metadata(f).unwrap().permissions().mode();
            fs::set_permissions(f, fs::Permissions::from_mode(mode ^ 0o001)).unwrap();
        }),
        ("file added", |f| {
            fs::write(f.with_extension("new"), b"x").unwrap()
        }),
    ];
    for (what, damage) in cases {
        let top = store.image("a").unwrap().unwrap().layers[1].clone();
        damage(&some_file(&top.path));

        let report = store.verify().unwrap();
        assert_eq!(report.quarantined.len(), 1, "{what}: {report:?}");
        let quarantined = &report.quarantined[0];
        assert_eq!(quarantined.digest.as_ref(), Some(&top.digest));
        assert!(
            format!("{:?}", quarantined.damage).starts_with("Tree"),
            "{what}: {quarantined:?}"
        );
        assert!(quarantined
            .moved_to
            .starts_with(store.root().join("quarantine")));
        assert!(quarantined.moved_to.exists());
        assert_eq!(report.verified.len(), 3);
        assert_eq!(report.incomplete_images.len(), 1);
        assert_eq!(report.incomplete_images[0].name, "a");
        assert_eq!(
            report.incomplete_images[0].missing,
            std::slice::from_ref(&top.digest)
        );

        // The damaged layer is gone from use; the image says which layer it lacks.
        assert!(!top.path.exists());
        assert!(store.layer(&top.digest).unwrap().is_none());
        assert_eq!(store.layers().unwrap().len(), 3);
        match store.image("a") {
            Err(Error::LayerMissing { image, layer }) => {
                assert_eq!((image.as_str(), &layer), ("a", &top.digest))
            }
            other => panic!("{what}: {other:?}"),
        }
        // The other image is untouched.
        let other = store.image("b").unwrap().unwrap();
        assert_eq!(listings(&other), expected_b);
        assert_eq!(store.images().unwrap().len(), 2);

        // Imported again, the image is whole.
        let again = store.import(&one, None).unwrap();
        assert_eq!(listings(&again), expected_a, "{what}");
        assert!(store.verify().unwrap().is_clean());
        assert_eq!(listings(&store.image("a").unwrap().unwrap()), expected_a);
    }
    // gc empties the quarantine and keeps what the records use.
    assert!(store.gc(&[]).unwrap().is_empty());
    assert_eq!(
        fs::read_dir(store.root().join("quarantine"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(store.layers().unwrap().len(), 4);
}

#[test]
fn garbage_layer_json_and_records_break_nothing() {
    let tmp = TempDir::new("store-garbage");
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    build_image(&one, 6, 2, 10);
    build_image(&two, 7, 2, 10);
    let store = LayerStore::open(tmp.path().join("store")).unwrap();
    let a = store.import(&one, None).unwrap();
    let b = store.import(&two, None).unwrap();
    store.tag("a", &a).unwrap();
    store.tag("b", &b).unwrap();
    let expected_a = listings(&a);
    let meta = |l: &palisade_image::Layer| l.path.parent().unwrap().join("layer.json");

    // Garbage in one layer.json, and another's describing a third layer.
    fs::write(meta(&a.layers[1]), b"{ not json").unwrap();
    fs::copy(meta(&b.layers[0]), meta(&a.layers[0])).unwrap();
    // A garbage record, and a well-formed one in a file that is not its name's.
    let images = store.root().join("images");
    fs::write(images.join("garbage.json"), b"\0\0\0").unwrap();
    let b_record = fs::read_dir(&images)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| fs::read_to_string(p).unwrap().contains("\"b\""))
        .unwrap();
    fs::copy(&b_record, images.join(format!("{}.json", "0".repeat(64)))).unwrap();

    let layers: Vec<_> = store
        .layers()
        .unwrap()
        .into_iter()
        .map(|l| l.digest)
        .collect();
    assert_eq!(layers.len(), 2);
    assert!(layers.contains(&b.layers[0].digest) && layers.contains(&b.layers[1].digest));
    assert!(store.layer(&a.layers[1].digest).unwrap().is_none());
    let names: Vec<_> = store
        .images()
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(listings(&store.image("b").unwrap().unwrap()), listings(&b));
    assert!(matches!(store.image("a"), Err(Error::LayerMissing { .. })));

    // An import replaces the damaged layers (never trusting them).
    let again = store.import(&one, None).unwrap();
    assert_eq!(listings(&again), expected_a);
    assert_eq!(listings(&store.image("a").unwrap().unwrap()), expected_a);

    // verify reports (and quarantines) the damaged records; the images stay listed.
    let report = store.verify().unwrap();
    assert_eq!(report.damaged_records.len(), 2, "{report:?}");
    assert!(report.quarantined.is_empty(), "{report:?}");
    assert_eq!(report.verified.len(), 4);
    assert_eq!(fs::read_dir(&images).unwrap().count(), 2);
    assert_eq!(store.images().unwrap().len(), 2);

    // Damage found by verify rather than by an import: a layer.json gone.
    fs::remove_file(meta(&b.layers[1])).unwrap();
    let report = store.verify().unwrap();
    assert_eq!(report.quarantined.len(), 1, "{report:?}");
    assert!(format!("{:?}", report.quarantined[0].damage).starts_with("Metadata"));
    assert_eq!(report.incomplete_images[0].name, "b");
    assert!(matches!(store.image("b"), Err(Error::LayerMissing { .. })));
    store.import(&two, None).unwrap();
    assert!(store.verify().unwrap().is_clean());
}

// ---------------------------------------------------------------------------------------------
// Temporary entries and their owners

#[test]
fn leftovers_of_dead_owners_are_collected_and_live_ones_kept() {
    let tmp = TempDir::new("store-owners");
    let root = tmp.path().join("store");
    let store = LayerStore::open(&root).unwrap();
    let tmp_dir = root.join("tmp");
    let (pid, start) = (std::process::id(), own_start_time());

    // A pid that was in use and is now free (or reused by a process of another start time).
    let mut dead = Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();

    let live = tmp_dir.join(format!("palisade-pull-{pid}-{start}-0"));
    let recycled = tmp_dir.join(format!("palisade-{}-{pid}-{}-0", "a".repeat(64), start + 1));
    let settings = tmp_dir.join(format!("palisade-settings-{dead_pid}-{start}-3"));
    let record = tmp_dir.join(format!("palisade-record-{dead_pid}-1-0"));
    let foreign = tmp_dir.join("not-ours");
    fs::create_dir_all(live.join("diff")).unwrap();
    fs::create_dir_all(recycled.join("diff/ro/deep")).unwrap();
    fs::write(recycled.join("diff/ro/deep/file"), b"x").unwrap();
    fs::set_permissions(recycled.join("diff/ro"), fs::Permissions::from_mode(0o500)).unwrap();
    fs::write(&settings, b"{}").unwrap();
    fs::write(&record, b"{}").unwrap();
    fs::write(&foreign, b"").unwrap();

    drop(store);
    let store = LayerStore::open(&root).unwrap();
    let mut left = tmp_entries(&store);
    left.sort();
    assert_eq!(left, [foreign.clone(), live.clone()]);

    // gc collects by the same rule.
    fs::write(&settings, b"{}").unwrap();
    store.gc(&[]).unwrap();
    let mut left = tmp_entries(&store);
    left.sort();
    assert_eq!(left, [foreign, live.clone()]);
    fs::remove_dir_all(&live).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Images by name

#[test]
fn images_are_recorded_by_name() {
    let tmp = TempDir::new("store-records");
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    build_image(&one, 8, 2, 5);
    build_image(&two, 9, 1, 5);
    let root = tmp.path().join("store");
    let store = LayerStore::open(&root).unwrap();
    let a = store.import(&one, None).unwrap();
    let b = store.import(&two, None).unwrap();

    for bad in ["", "a\nb", "a\0b", "a\rb"] {
        assert!(
            matches!(
                store.tag(bad, &a),
                Err(Error::InvalidValue {
                    what: "image name",
                    ..
                })
            ),
            "{bad:?}"
        );
    }
    let long = "x".repeat(1025);
    assert!(matches!(
        store.tag(&long, &a),
        Err(Error::InvalidValue { .. })
    ));
    store.tag(&"x".repeat(1024), &a).unwrap();
    assert!(store.untag(&"x".repeat(1024)).unwrap());

    let name = "localhost:5000/x/y:1";
    // A name is never a path: its record is named by its digest.
    let sneaky = "../../../etc/passwd";
    store.tag(name, &a).unwrap();
    store.tag(sneaky, &b).unwrap();
    for entry in fs::read_dir(root.join("images")).unwrap() {
        let file = entry.unwrap().file_name().into_string().unwrap();
        assert_eq!(file.len(), 64 + 5, "{file}");
    }
    assert_eq!(store.image(name).unwrap().unwrap(), a);
    assert_eq!(store.image(sneaky).unwrap().unwrap(), b);
    assert_eq!(store.image("unknown").unwrap(), None);
    assert_eq!(
        store.image_by_digest(&b.manifest_digest).unwrap().unwrap(),
        b
    );
    assert_eq!(store.image_by_digest(&a.config_digest).unwrap(), None);
    let records = store.images().unwrap();
    let names: Vec<_> = records.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, [sneaky, name]);
    assert_eq!(records[1].config, a.config);
    assert_eq!(records[1].manifest_digest, a.manifest_digest);
    assert_eq!(records[1].config_digest, a.config_digest);
    let digests: Vec<_> = a.layers.iter().map(|l| l.digest.clone()).collect();
    assert_eq!(records[1].layers, digests);

    // Re-tagging replaces; records survive the store's reopening; gc keeps their layers.
    store.tag(name, &b).unwrap();
    assert_eq!(store.image(name).unwrap().unwrap(), b);
    store.tag(name, &a).unwrap();
    drop(store);
    let store = LayerStore::open(&root).unwrap();
    assert_eq!(store.image(name).unwrap().unwrap(), a);
    assert!(store.gc(&[]).unwrap().is_empty());
    assert_eq!(store.layers().unwrap().len(), 3);

    // Untagged, an image's layers go at the next gc (unless kept).
    assert!(store.untag(sneaky).unwrap());
    assert!(!store.untag(sneaky).unwrap());
    assert_eq!(store.image(sneaky).unwrap(), None);
    assert_eq!(store.gc(&[]).unwrap(), [b.layers[0].digest.clone()]);
    assert!(store.untag(name).unwrap());
    assert!(store.gc(&[&a]).unwrap().is_empty());
    assert_eq!(store.gc(&[]).unwrap().len(), 2);

    // An image whose layers are not in the store cannot be recorded.
    assert!(matches!(
        store.tag(name, &a),
        Err(Error::LayerMissing { .. })
    ));
    assert!(store.images().unwrap().is_empty());
    assert!(tmp_entries(&store).is_empty());
}

// ---------------------------------------------------------------------------------------------
// A rootless store

#[test]
fn a_rootless_store_verifies_files_its_owner_cannot_read() {
    require_root!();
    let (passed, text) = run_ignored_test_as(
        64_002,
        "rootless_unreadable_inner",
        &[("PALISADE_ROOTLESS_FAULTS", "1")],
    );
    assert!(passed, "{text}");
}

/// Removes a rootless store's layers (whose trees hold directories their owner cannot enter,
/// which `TempDir` alone could not remove), whatever the test did.
struct RemoveLayers(PathBuf);

impl Drop for RemoveLayers {
    fn drop(&mut self) {
        let options = StoreOptions::new().opaque_xattr(OpaqueXattr::User);
        if let Ok(store) = LayerStore::open_with(&self.0, options) {
            for record in store.images().unwrap_or_default() {
                let _ = store.untag(&record.name);
            }
            let _ = store.gc(&[]);
        }
    }
}

/// Runs only as the unprivileged user of
/// `a_rootless_store_verifies_files_its_owner_cannot_read`.
#[test]
#[ignore = "run by a_rootless_store_verifies_files_its_owner_cannot_read"]
fn rootless_unreadable_inner() {
    if std::env::var_os("PALISADE_ROOTLESS_FAULTS").is_none() {
        return;
    }
    assert!(!palisade_test_support::is_root());
    let tmp = TempDir::new("store-rootless");
    let layout = tmp.path().join("layout");
    let mut writer = LayoutWriter::create(&layout).unwrap();
    let mut layer = LayerBuilder::new();
    layer
        .dir("/locked", 0o000)
        .file("/locked/secret", "secret\n", 0o000)
        .dir("/listable", 0o400)
        .file("/listable/hidden", "hidden\n", 0o644)
        .file("/shadow", "root:*:1::::::\n", 0o000)
        .dir("/opaque", 0o755)
        .opaque("/opaque");
    writer.add_layer(&layer).unwrap();
    writer.finish(None, &ImageConfig::default()).unwrap();

    let root = tmp.path().join("store");
    let _cleanup = RemoveLayers(root.clone());
    let options = StoreOptions::new().opaque_xattr(OpaqueXattr::User);
    let store = LayerStore::open_with(&root, options).unwrap();
    let image = store.import(&layout, None).unwrap();
    let tree = &image.layers[0].path;
    let modes = |tree: &Path| -> Vec<u32> {
        ["locked", "listable", "shadow"]
            .iter()
            .map(|name| {
                fs::symlink_metadata(tree.join(name))
                    .unwrap()
                    .permissions()
                    .mode()
                    & 0o7777
            })
            .collect()
    };
    // Unpacking, digesting and verifying leave the image's modes as they are.
    assert_eq!(modes(tree), [0o000, 0o400, 0o000]);
    let report = store.verify().unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.verified.len(), 1);
    assert_eq!(modes(tree), [0o000, 0o400, 0o000]);

    // A change the owner can make is found.
    fs::set_permissions(tree.join("shadow"), fs::Permissions::from_mode(0o400)).unwrap();
    let report = store.verify().unwrap();
    assert_eq!(report.quarantined.len(), 1, "{report:?}");
    let image = store.import(&layout, None).unwrap();
    assert_eq!(modes(&image.layers[0].path), [0o000, 0o400, 0o000]);
    assert!(store.verify().unwrap().is_clean());
    // gc removes the quarantined copy, unreadable directories and all.
    store.gc(&[&image]).unwrap();
    assert_eq!(fs::read_dir(root.join("quarantine")).unwrap().count(), 0);
}
