//! `palisade-oci`: an OCI runtime on top of [`palisade`].
//!
//! [`bundle`] maps an OCI runtime bundle (`config.json`, read with the `oci-spec` crate) to a
//! [`palisade::SandboxBuilder`], applying each field or refusing it by name; [`hooks`] runs the
//! hooks of `config.json` that run in the runtime's namespace.

pub mod bundle;
pub mod error;
pub mod hooks;

pub use bundle::Bundle;
pub use error::{Error, Result};
