//! What [`LayerStore::verify`](crate::LayerStore::verify) finds.

use std::path::PathBuf;

use crate::digest::Digest;

/// What was wrong with a stored layer.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LayerDamage {
    /// The layer's description (`layer.json`) is missing, does not parse, names another
    /// layer, or the layer's directory lacks its `diff/` tree; or the directory's name is not a
    /// digest.
    Metadata {
        /// What is wrong.
        reason: String,
    },
    /// The tree differs from the one stored: a file was changed, truncated, added or lost, or
    /// a mode or owner changed.
    Tree {
        /// The tree digest recorded when the layer was stored.
        expected: Digest,
        /// The tree digest of what is there now.
        actual: Digest,
    },
    /// The tree could not be read to the end (an I/O error, a file that changed while it was
    /// read, …).
    Unreadable {
        /// The file or directory that could not be read.
        path: PathBuf,
        /// What was attempted: `"open"`, `"read"`, `"list"`, …
        op: &'static str,
        /// The OS error number, if there is one.
        errno: Option<i32>,
        /// The error as text.
        message: String,
    },
}

/// A layer that [`LayerStore::verify`](crate::LayerStore::verify) moved out of `layers/` into
/// the store's `quarantine/` directory: it is no longer used, and the next import or pull of an
/// image that has it stores it again.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct QuarantinedLayer {
    /// The layer, or `None` when its directory's name is not a digest.
    pub digest: Option<Digest>,
    /// The name its directory had in `layers/sha256/`.
    pub name: String,
    /// What was wrong.
    pub damage: LayerDamage,
    /// Where it is now, under `quarantine/` (removed by the next
    /// [`LayerStore::gc`](crate::LayerStore::gc)).
    pub moved_to: PathBuf,
}

/// An image record (see [`LayerStore::tag`](crate::LayerStore::tag)) that does not parse or
/// does not belong where it is, moved into `quarantine/`. The image it recorded is no longer
/// listed: tag it again.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DamagedRecord {
    /// Where the record was.
    pub path: PathBuf,
    /// What is wrong.
    pub reason: String,
    /// Where it is now, under `quarantine/`.
    pub moved_to: PathBuf,
}

/// A recorded image that lacks layers (removed, or quarantined by this verification): import
/// or pull it again.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct IncompleteImage {
    /// The name the image is recorded under.
    pub name: String,
    /// The layers that are not in the store, bottom layer first.
    pub missing: Vec<Digest>,
}

/// The state of one layer, as [`LayerStore::verify_layer`](crate::LayerStore::verify_layer)
/// found it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LayerCheck {
    /// Its tree matches the digest recorded when it was stored.
    Verified,
    /// It was stored by a version of this crate that did not record a tree digest: it cannot
    /// be checked, and is taken as good.
    Unverifiable,
    /// It is not in the store.
    Absent,
    /// It was damaged, and moved into quarantine.
    Quarantined(QuarantinedLayer),
}

/// What [`LayerStore::verify`](crate::LayerStore::verify) found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Layers whose tree matches its recorded digest, ordered by digest.
    pub verified: Vec<Digest>,
    /// Layers without a recorded tree digest (stored by an older version), taken as good.
    pub unverifiable: Vec<Digest>,
    /// Damaged layers, now in quarantine.
    pub quarantined: Vec<QuarantinedLayer>,
    /// Damaged image records, now in quarantine.
    pub damaged_records: Vec<DamagedRecord>,
    /// Recorded images that lack layers.
    pub incomplete_images: Vec<IncompleteImage>,
}

impl VerifyReport {
    /// Whether nothing was found wrong (unverifiable layers aside).
    pub fn is_clean(&self) -> bool {
        self.quarantined.is_empty()
            && self.damaged_records.is_empty()
            && self.incomplete_images.is_empty()
    }
}
