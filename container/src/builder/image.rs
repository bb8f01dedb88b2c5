//! The builder's image settings: a root made of an image's layers, and the defaults its config
//! gives the process (OCI image-spec, "Image Configuration" § `config`): `Env`, `WorkingDir`,
//! `User`, and `Entrypoint` + `Cmd` for [`Sandbox::from_image`]. Users given by name, the
//! image's or the caller's ([`SandboxBuilder::user_name`]), are resolved by
//! [`build`](SandboxBuilder::build) in the sandbox's root.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use palisade_image::{Image, User};
use palisade_overlay::rootfs::{RootSource, Rootfs};

use super::SandboxBuilder;
use crate::derive::RootChoice;
use crate::error::{Error, Result};
use crate::Sandbox;

/// What [`SandboxBuilder::image`] and [`SandboxBuilder::user_name`] recorded.
#[derive(Debug, Default, Clone)]
pub(super) struct ImageSpec {
    /// The image config's `Env`, `NAME=value` entries in its order.
    env: Vec<(OsString, OsString)>,
    /// The image config's `WorkingDir`.
    working_dir: Option<PathBuf>,
    /// The image config's `User`.
    user: Option<String>,
    /// The caller's user spec, for any root.
    user_name: Option<String>,
}

impl Sandbox {
    /// Starts describing a sandbox that runs `image` as `docker run` runs it: its layers as the
    /// root and its config's defaults (see [`SandboxBuilder::image`]), and the command line of
    /// [`ImageConfig::command`](palisade_image::ImageConfig::command): the image's
    /// `Entrypoint` and `Cmd`, `cmd` (when not empty) replacing `Cmd`, `entrypoint` (when
    /// given) replacing `Entrypoint` and dropping the image's `Cmd`.
    ///
    /// The program is looked up in the sandbox's `PATH`, the image's when its `Env` sets one.
    /// Fails with [`Error::Image`] ([`palisade_image::Error::NoCommand`]) when that leaves no
    /// command.
    ///
    /// ```no_run
    /// use palisade::image::LayerStore;
    /// use palisade::Sandbox;
    ///
    /// let store = LayerStore::open("/var/lib/palisade/layers")?;
    /// let image = store.import("/tmp/busybox-oci", Some("latest"))?;
    /// // `docker run IMAGE`, then `docker run IMAGE id -u`.
    /// let status = Sandbox::from_image(&image, None, &[])?.status()?;
    /// let cmd = ["id".to_owned(), "-u".to_owned()];
    /// let status = Sandbox::from_image(&image, None, &cmd)?.status()?;
    /// # Ok::<(), palisade::Error>(())
    /// ```
    pub fn from_image(
        image: &Image,
        entrypoint: Option<&[String]>,
        cmd: &[String],
    ) -> Result<SandboxBuilder> {
        let line = image.config.command(entrypoint, cmd)?;
        let (program, args) = line
            .split_first()
            .ok_or(Error::Image(palisade_image::Error::NoCommand))?;
        let mut builder = Sandbox::builder(program);
        builder.args(args).image(image);
        Ok(builder)
    }
}

impl SandboxBuilder {
    /// Roots the sandbox in `image` and applies its config's defaults to the process, as
    /// `docker run` does (OCI image-spec, "Image Configuration" § `config`):
    ///
    /// - the root is the image's layers under a throwaway writable layer, as
    ///   [`Rootfs::layers`]`(image.lower_dirs())` makes it, replacing the root set so far: call
    ///   [`volume`](Self::volume), [`tmpfs`](Self::tmpfs) and
    ///   [`read_only_root`](Self::read_only_root) after this;
    /// - `Env` comes over the sandbox's default environment (so the image's `PATH` replaces
    ///   the default one), and under the caller's [`env`](Self::env) edits, whatever the order
    ///   of the calls; [`env_clear`](Self::env_clear) leaves it out too, and entries without
    ///   `=` are ignored;
    /// - `WorkingDir` is the working directory unless [`current_dir`](Self::current_dir) sets
    ///   one (it must exist in the image: the spawn fails otherwise);
    /// - `User` is the user unless [`user`](Self::user) or [`user_name`](Self::user_name) sets
    ///   one, resolved by [`build`](Self::build) with the image's own `/etc/passwd` and
    ///   `/etc/group` as [`user_name`](Self::user_name) describes.
    ///
    /// The command stays the builder's: the image's `Entrypoint` and `Cmd` are not prepended
    /// (as with `docker run --entrypoint PROGRAM IMAGE ARGS…`); [`Sandbox::from_image`] runs
    /// them. `StopSignal` is the caller's to send ([`Child::signal`](crate::Child::signal)), and
    /// `ExposedPorts` only documents ports: publish them with [`publish`](Self::publish).
    /// Calling this again replaces the image.
    pub fn image(&mut self, image: &Image) -> &mut Self {
        let config = &image.config;
        self.isolation.rootfs = RootChoice::Own(Rootfs::layers(image.lower_dirs()));
        self.image.env = config
            .env
            .iter()
            .filter_map(|entry| entry.split_once('='))
            .map(|(key, value)| (key.into(), value.into()))
            .collect();
        self.image.working_dir = config
            .working_dir
            .as_deref()
            .filter(|dir| !dir.is_empty())
            .map(PathBuf::from);
        self.image.user = config.user.clone().filter(|user| !user.is_empty());
        self
    }

    /// Runs the command as the user of the spec `spec`, as `docker run --user` takes it:
    /// `user`, `uid`, `user:group`, `uid:gid`, `user:gid` or `uid:group`, names resolved by
    /// [`build`](Self::build) with the `/etc/passwd` and `/etc/group` of the sandbox's root, read
    /// from its layers as overlayfs merges them and never through a link out of it
    /// ([`palisade_image::resolve_user`]): an [image](Self::image)'s layers, a
    /// [`Rootfs::dir`], a [`Rootfs::layers`] (its upper layer first), or for the host's root
    /// (the default, and [`host_mounts`](Self::host_mounts)) the host's `/`. Volumes are not
    /// looked at.
    ///
    /// As with Docker and runc: a number is an id even without an entry, with group 0 unless
    /// the spec gives one; a user found in `/etc/passwd` gets its group from there unless the
    /// spec names one, and its supplementary groups from the `/etc/group` entries that list it
    /// (unless [`groups`](Self::groups) sets them, or the sandbox's user namespace denies
    /// `setgroups(2)`); `HOME` becomes its home directory unless the image's `Env` or
    /// [`env`](Self::env) sets one. A name without an entry fails the build with
    /// [`Error::Image`] ([`palisade_image::Error::UnknownUser`] or
    /// [`UnknownGroup`](palisade_image::Error::UnknownGroup)).
    ///
    /// It replaces the image's `User`; [`user`](Self::user), with ids, wins over both.
    pub fn user_name(&mut self, spec: impl Into<String>) -> &mut Self {
        self.image.user_name = Some(spec.into());
        self
    }

    /// The user spec to resolve: none when [`user`](Self::user) gave ids.
    fn user_spec(&self) -> Option<&str> {
        if self.security.user.is_some() {
            return None;
        }
        self.image
            .user_name
            .as_deref()
            .or(self.image.user.as_deref())
    }

    /// The user given by name, the caller's or the image's, resolved in the sandbox's root.
    pub(super) fn named_user(&self) -> Result<Option<User>> {
        let Some(spec) = self.user_spec() else {
            return Ok(None);
        };
        let layers = self.root_layers(spec)?;
        let layers: Vec<&Path> = layers.iter().map(PathBuf::as_path).collect();
        Ok(Some(palisade_image::resolve_user(&layers, spec)?))
    }

    /// The sandbox's root as layers whose files can be read before it is mounted, top first.
    fn root_layers(&self, spec: &str) -> Result<Vec<PathBuf>> {
        let host = || vec![PathBuf::from("/")];
        Ok(match &self.isolation.rootfs {
            RootChoice::Default | RootChoice::HostMounts => host(),
            RootChoice::Own(rootfs) => match rootfs.source() {
                RootSource::HostOverlay => host(),
                RootSource::Dir(dir) => vec![dir.clone()],
                RootSource::Layers { lower, upper } => upper
                    .iter()
                    .map(|(upper, _)| upper.clone())
                    .chain(lower.iter().cloned())
                    .collect(),
                _ => {
                    return Err(Error::InvalidValue {
                        what: "user name",
                        value: spec.to_owned(),
                        reason: "the sandbox's root is of a kind whose users cannot be read",
                    })
                }
            },
        })
    }

    /// The image's `Env`, to layer over the base environment.
    pub(super) fn image_env(&self) -> &[(OsString, OsString)] {
        &self.image.env
    }

    /// The working directory: the caller's, else the image's.
    pub(super) fn working_dir(&self) -> Option<&Path> {
        self.process
            .cwd
            .as_deref()
            .or(self.image.working_dir.as_deref())
    }
}

/// The `HOME` of a user resolved by name.
pub(super) fn home(user: &User) -> OsString {
    std::ffi::OsStr::from_bytes(user.home.as_bytes()).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn the_callers_user_wins_over_the_images() {
        let mut b = Sandbox::builder("true");
        assert_eq!(b.user_spec(), None);
        b.image.user = Some("app".into());
        assert_eq!(b.user_spec(), Some("app"));
        b.user_name("other:staff");
        assert_eq!(b.user_spec(), Some("other:staff"));
        b.user(5, 5);
        assert_eq!(b.user_spec(), None);
    }

    #[test]
    fn the_images_env_lies_between_the_defaults_and_the_callers() {
        let mut b = Sandbox::builder("true");
        b.env("CALLER", "caller");
        b.image.env = [
            ("PATH", "/image/bin"),
            ("CALLER", "image"),
            ("IMAGE", "image"),
        ]
        .map(|(k, v)| (k.into(), v.into()))
        .to_vec();
        b.env_remove("GONE");
        b.image.env.push(("GONE".into(), "image".into()));
        let env = b.environment(None);
        assert_eq!(env[OsStr::new("PATH")], "/image/bin");
        assert_eq!(env[OsStr::new("CALLER")], "caller");
        assert_eq!(env[OsStr::new("IMAGE")], "image");
        assert_eq!(env[OsStr::new("HOME")], "/root");
        assert!(!env.contains_key(OsStr::new("GONE")));
        // A user resolved by name gives HOME, unless the image or the caller sets it.
        let user = palisade_image::resolve_user(&[Path::new("/")], "root").unwrap();
        let mut with_home = user.clone();
        with_home.home = "/home/someone".into();
        assert_eq!(
            b.environment(Some(&with_home))[OsStr::new("HOME")],
            "/home/someone"
        );
        b.image.env.push(("HOME".into(), "/image/home".into()));
        assert_eq!(
            b.environment(Some(&with_home))[OsStr::new("HOME")],
            "/image/home"
        );
        // Nothing of it after env_clear.
        b.env_clear().env("A", "1");
        assert_eq!(b.environment(None).len(), 1);
    }

    #[test]
    fn the_callers_directory_wins_over_the_images() {
        let mut b = Sandbox::builder("true");
        assert_eq!(b.working_dir(), None);
        b.image.working_dir = Some("/srv".into());
        assert_eq!(b.working_dir(), Some(Path::new("/srv")));
        b.current_dir("/tmp");
        assert_eq!(b.working_dir(), Some(Path::new("/tmp")));
    }

    #[test]
    fn names_are_read_from_the_roots_layers() {
        let b = Sandbox::builder("true");
        assert_eq!(b.root_layers("x").unwrap(), [PathBuf::from("/")]);
        let mut b = Sandbox::builder("true");
        b.rootfs(Rootfs::layers(["/top", "/bottom"]).upper("/up", "/work"));
        assert_eq!(
            b.root_layers("x").unwrap(),
            [
                PathBuf::from("/up"),
                PathBuf::from("/top"),
                PathBuf::from("/bottom")
            ]
        );
        let mut b = Sandbox::builder("true");
        b.rootfs(Rootfs::dir("/srv/root"));
        assert_eq!(b.root_layers("x").unwrap(), [PathBuf::from("/srv/root")]);
        // The host's users: root is in every /etc/passwd.
        let mut b = Sandbox::builder("true");
        b.user_name("root");
        let root = b.named_user().unwrap().unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert_eq!(home(&root), OsStr::new(&root.home));
    }
}
