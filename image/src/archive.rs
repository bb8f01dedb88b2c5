//! Imports of `docker save` archives (docker-archive) and tars of OCI layouts (oci-archive).
