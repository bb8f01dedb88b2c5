//! `palisade-oci`: an OCI runtime on top of [`palisade`].
//!
//! [`bundle`] maps an OCI runtime bundle (`config.json`, read with the `oci-spec` crate) to a
//! [`palisade::SandboxBuilder`], applying each field or refusing it by name; [`hooks`] runs the
//! six hooks of `config.json`, on the host or in the container as the specification places
//! them.

pub mod bundle;
pub mod error;
pub mod hooks;

pub use bundle::Bundle;
pub use error::{Error, Result};
