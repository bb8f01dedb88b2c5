//! OCI image layouts and the layer store (being written).
