//! Pulls from registries (OCI distribution spec).
