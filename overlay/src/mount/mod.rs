//! Mounting: overlayfs and the new mount API (being written).
