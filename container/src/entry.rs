//! What a command run in a running sandbox takes from it: the sandbox command's privileges,
//! filter, environment and working directory ([`Entry`]), kept by the sandbox's [`Child`](crate::Child)
//! and, for a named sandbox, recorded for other processes (`exec.json`, see [`crate::state`]).

use std::collections::BTreeMap;
use std::ffi::{CString, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::Arc;

use crate::security::SecurityPlan;

/// What an exec into a sandbox takes from the sandbox, kept by its [`Child`](crate::Child).
#[derive(Debug)]
pub(crate) struct Entry {
    /// The command's privileges and filter.
    pub security: Arc<SecurityPlan>,
    /// The command's environment.
    pub env: BTreeMap<OsString, OsString>,
    /// The command's working directory, where an exec starts unless told otherwise.
    pub cwd: Option<CString>,
    /// Whether the sandbox dies with its caller: so does an exec into it.
    pub die_with_parent: bool,
    /// Whether the sandbox has a root of its own (and so a devpts for an exec's terminal).
    pub own_root: bool,
    /// How the sandbox's child became root of its user namespace: `(root_uid, root_gid,
    /// setgroups allowed)`.
    pub become_root: Option<(bool, bool, bool)>,
}

/// [`Entry`] as a sandbox's record keeps it (`exec.json`).
#[derive(serde::Serialize, serde::Deserialize)]
struct EntryRecord {
    security: crate::security::SecurityRecord,
    env: Vec<(Vec<u8>, Vec<u8>)>,
    cwd: Option<Vec<u8>>,
    own_root: bool,
    become_root: Option<(bool, bool, bool)>,
}

impl Entry {
    /// The record of this entry, for a command run in the sandbox from another process.
    pub(crate) fn encode(&self) -> serde_json::Result<Vec<u8>> {
        let record = EntryRecord {
            security: self.security.to_record(),
            env: self
                .env
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect(),
            cwd: self.cwd.as_ref().map(|c| c.as_bytes().to_vec()),
            own_root: self.own_root,
            become_root: self.become_root,
        };
        serde_json::to_vec(&record)
    }

    /// The entry back from its record. A command run from another process never dies with that
    /// process: the sandbox does not either (it outlives its creator, or dies with it).
    pub(crate) fn decode(bytes: &[u8]) -> std::result::Result<Entry, String> {
        let r: EntryRecord = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let cwd = r
            .cwd
            .map(CString::new)
            .transpose()
            .map_err(|e| e.to_string())?;
        Ok(Entry {
            security: Arc::new(SecurityPlan::from_record(r.security).map_err(|e| e.to_string())?),
            env: r
                .env
                .into_iter()
                .map(|(k, v)| (OsString::from_vec(k), OsString::from_vec(v)))
                .collect(),
            cwd,
            die_with_parent: false,
            own_root: r.own_root,
            become_root: r.become_root,
        })
    }
}
