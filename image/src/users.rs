//! Files and users of an image's root, read through its layers as overlayfs would merge them.
