//! What a [`SandboxBuilder`] was told, read back as [`std::process::Command`]'s getters read
//! it: the program, the arguments, the caller's environment edits and the working directory.

use std::ffi::OsStr;
use std::path::Path;

use super::SandboxBuilder;

impl SandboxBuilder {
    /// The program given to [`Sandbox::builder`](crate::Sandbox::builder), as given (not yet
    /// looked up in `PATH`), like [`Command::get_program`](std::process::Command::get_program).
    ///
    /// ```
    /// use palisade::Sandbox;
    ///
    /// let builder = Sandbox::builder("sh");
    /// assert_eq!(builder.get_program(), "sh");
    /// ```
    pub fn get_program(&self) -> &OsStr {
        &self.process.program
    }

    /// The arguments after the program, in order, like
    /// [`Command::get_args`](std::process::Command::get_args).
    ///
    /// ```
    /// use std::ffi::OsStr;
    /// use palisade::Sandbox;
    ///
    /// let mut builder = Sandbox::builder("sh");
    /// builder.arg("-c").arg("echo hi");
    /// let args: Vec<&OsStr> = builder.get_args().collect();
    /// assert_eq!(args, ["-c", "echo hi"]);
    /// ```
    pub fn get_args(&self) -> impl ExactSizeIterator<Item = &OsStr> + DoubleEndedIterator + '_ {
        self.process.args.iter().map(|a| a.as_os_str())
    }

    /// The caller's edits of the environment, sorted by name, like
    /// [`Command::get_envs`](std::process::Command::get_envs): `(name, Some(value))` for a
    /// variable set with [`env`](Self::env) (or passed with
    /// [`env_inherit`](Self::env_inherit), with the caller's value), `(name, None)` for one
    /// removed with [`env_remove`](Self::env_remove) (or inherited but unset in the caller).
    ///
    /// The base the edits apply to is not listed: Docker's minimal environment, an
    /// [image](Self::image)'s `Env`, or nothing after [`env_clear`](Self::env_clear), which
    /// also forgets the edits made before it (as [`env_inherit_all`](Self::env_inherit_all)
    /// does).
    ///
    /// ```
    /// use std::ffi::OsStr;
    /// use palisade::Sandbox;
    ///
    /// let mut builder = Sandbox::builder("env");
    /// builder.env("B", "2").env("A", "1").env_remove("HOME");
    /// let envs: Vec<(&OsStr, Option<&OsStr>)> = builder.get_envs().collect();
    /// assert_eq!(
    ///     envs,
    ///     [
    ///         (OsStr::new("A"), Some(OsStr::new("1"))),
    ///         (OsStr::new("B"), Some(OsStr::new("2"))),
    ///         (OsStr::new("HOME"), None),
    ///     ]
    /// );
    /// ```
    pub fn get_envs(
        &self,
    ) -> impl ExactSizeIterator<Item = (&OsStr, Option<&OsStr>)> + DoubleEndedIterator + '_ {
        self.process
            .env
            .iter()
            .map(|(k, v)| (k.as_os_str(), v.as_deref()))
    }

    /// The working directory given with [`current_dir`](Self::current_dir), if any, like
    /// [`Command::get_current_dir`](std::process::Command::get_current_dir). It is a path
    /// inside the sandbox; without one the command starts in the [image](Self::image)'s
    /// `WorkingDir`, else in the sandbox's `/`.
    ///
    /// ```
    /// use std::path::Path;
    /// use palisade::Sandbox;
    ///
    /// let mut builder = Sandbox::builder("pwd");
    /// assert_eq!(builder.get_current_dir(), None);
    /// builder.current_dir("/tmp");
    /// assert_eq!(builder.get_current_dir(), Some(Path::new("/tmp")));
    /// ```
    pub fn get_current_dir(&self) -> Option<&Path> {
        self.process.cwd.as_deref()
    }
}

/// A root choice is cloned with the builder (see [`SandboxBuilder`]'s `Clone`): a [`Rootfs`]
/// is a description, holding no descriptor.
///
/// [`Rootfs`]: palisade_overlay::rootfs::Rootfs
impl Clone for crate::derive::RootChoice {
    fn clone(&self) -> Self {
        use crate::derive::RootChoice;
        match self {
            RootChoice::Default => RootChoice::Default,
            RootChoice::Own(rootfs) => RootChoice::Own(rootfs.clone()),
            RootChoice::HostMounts => RootChoice::HostMounts,
        }
    }
}
