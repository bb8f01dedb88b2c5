//! The overlayfs mount builder: [`Overlay`].

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rustix::mount::MountFlags;

use super::sys::{self, FsmountFlags, FsopenFlags, MountAttr};
use crate::error::{Error, Result};

/// The most lower layers overlayfs stacks (`OVL_MAX_STACK` in the kernel); more fail with
/// "too many lower directories, limit is 500".
pub const MAX_LOWER_LAYERS: usize = 500;

/// The longest string value `fsconfig(2)` `FSCONFIG_SET_STRING` takes, in bytes (the kernel
/// copies at most 256 bytes, the terminating NUL included).
pub const FSCONFIG_MAX_STRING: usize = 255;

const FSTYPE: &str = "overlay";
const CALL_FSOPEN: &str = "fsopen overlay";
const IFACE_FSCONFIG: &str = "fsconfig(2) lowerdir";
const IFACE_MOUNT: &str = "mount(2) options";

/// The `redirect_dir` option of overlayfs (Documentation/filesystems/overlayfs.rst, "Redirect
/// dir"): whether renaming a merged directory is allowed and redirects are followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RedirectDir {
    /// `redirect_dir=on`: create and follow redirects (directory renames work).
    On,
    /// `redirect_dir=follow`: follow existing redirects, create none (renames fail `EXDEV`).
    Follow,
    /// `redirect_dir=nofollow`: neither create nor follow redirects.
    NoFollow,
    /// `redirect_dir=off`: create none; follow them only if the module parameter
    /// `redirect_always_follow` is set.
    Off,
}

impl RedirectDir {
    /// The option value.
    pub fn as_str(self) -> &'static str {
        match self {
            RedirectDir::On => "on",
            RedirectDir::Follow => "follow",
            RedirectDir::NoFollow => "nofollow",
            RedirectDir::Off => "off",
        }
    }
}

/// How the kernel takes the lower layers through `fsconfig(2)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LowerApi {
    /// Linux 6.8+: one `lowerdir+` per layer.
    Append,
    /// Linux 6.5–6.7: overlayfs parses `fsconfig(2)` itself but only takes one `lowerdir`
    /// string.
    Joined,
    /// Before Linux 6.5: the "legacy" fs-context, which glues `key=value` pairs into a
    /// `mount(2)` option string (values may not contain commas).
    LegacyContext,
}

/// Asks the kernel once per process which [`LowerApi`] it has, on a throwaway context.
fn lower_api() -> Result<LowerApi> {
    static API: OnceLock<LowerApi> = OnceLock::new();
    if let Some(api) = API.get() {
        return Ok(*api);
    }
    let fs = open_context()?;
    // A native overlayfs context refuses an unknown option; the legacy context appends anything.
    let api = if sys::fsconfig_set_flag(fs.as_fd(), "palisade-probe").is_ok() {
        LowerApi::LegacyContext
    } else if sys::fsconfig_set_string(fs.as_fd(), "lowerdir+", "/").is_ok() {
        LowerApi::Append
    } else {
        // Only "Unknown parameter 'lowerdir+'" means the kernel lacks it; "/" being refused
        // as a layer for another reason says nothing about the kernel.
        let log = sys::fs_context_log(fs.as_fd());
        if log.iter().any(|l| l.contains("Unknown parameter")) {
            LowerApi::Joined
        } else {
            LowerApi::Append
        }
    };
    Ok(*API.get_or_init(|| api))
}

fn open_context() -> Result<OwnedFd> {
    sys::fsopen(c"overlay", FsopenFlags::CLOEXEC).map_err(|source| Error::Mount {
        call: CALL_FSOPEN,
        path: None,
        source,
    })
}

/// Escapes a layer for a `lowerdir` list: `\`, `:` (the layer separator) and, when `comma`,
/// `,` (the `mount(2)` option separator) get a backslash, which overlayfs removes.
fn escape_into(out: &mut Vec<u8>, path: &Path, colon: bool, comma: bool) {
    for &b in path.as_os_str().as_bytes() {
        if b == b'\\' || (colon && b == b':') || (comma && b == b',') {
            out.push(b'\\');
        }
        out.push(b);
    }
}

fn escaped(path: &Path, colon: bool, comma: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.as_os_str().len());
    escape_into(&mut out, path, colon, comma);
    out
}

/// The `lowerdir` list: layers top-most first, `:`-separated, escaped.
fn joined_lowers(lowers: &[PathBuf], comma: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, l) in lowers.iter().enumerate() {
        if i > 0 {
            out.push(b':');
        }
        escape_into(&mut out, l, true, comma);
    }
    out
}

fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

/// A builder for an overlayfs mount (Documentation/filesystems/overlayfs.rst).
///
/// Lower layers are listed **top-most first**, as in the `lowerdir=` option: the first layer
/// given hides files of the same name in the later ones. An upper layer (with its work
/// directory, an empty directory on the same file system) receives every change; without one
/// the overlay is read-only.
///
/// ```no_run
/// use palisade_overlay::mount::{Overlay, RedirectDir};
/// # fn main() -> palisade_overlay::Result<()> {
/// Overlay::new()
///     .lower("/layers/app") // top-most
///     .lower("/layers/base") // bottom-most
///     .upper("/run/c1/upper", "/run/c1/work")
///     .index(true)
///     .redirect_dir(RedirectDir::On)
///     .mount_at("/run/c1/rootfs")?;
/// # Ok(()) }
/// ```
///
/// Kernel rules checked before any system call ([`validate`](Self::validate)):
///
/// - at least one lower layer and at most [`MAX_LOWER_LAYERS`];
/// - an upper layer needs a work directory and the other way round;
/// - **without an upper layer, at least two lower layers** (the kernel refuses a single one,
///   "at least 2 lowerdir are needed while upperdir nonexistent", as of Linux 6.18); for a
///   read-only view of one directory use [`bind_tree`](super::bind_tree) and
///   [`set_read_only`](super::set_read_only);
/// - `volatile` needs an upper layer;
/// - every layer exists and is a directory (else [`Error::Layer`] names it).
///
/// The kernel checks the rest (upper and work on the same file system, option conflicts such
/// as `metacopy=on` with `redirect_dir=off`, ...), reported as [`Error::FsContext`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overlay {
    lowers: Vec<PathBuf>,
    upper: Option<PathBuf>,
    work: Option<PathBuf>,
    read_only: bool,
    index: Option<bool>,
    redirect_dir: Option<RedirectDir>,
    metacopy: Option<bool>,
    userxattr: bool,
    volatile: bool,
    attrs: MountAttr,
}

impl Overlay {
    /// An overlay with no layers yet.
    pub fn new() -> Overlay {
        Overlay::default()
    }

    /// Adds a lower layer below the ones already given (the first one given is the top-most).
    pub fn lower(mut self, dir: impl Into<PathBuf>) -> Overlay {
        self.lowers.push(dir.into());
        self
    }

    /// Adds lower layers, top-most first, below the ones already given.
    pub fn lowers<I>(mut self, dirs: I) -> Overlay
    where
        I: IntoIterator,
        I::Item: Into<PathBuf>,
    {
        self.lowers.extend(dirs.into_iter().map(Into::into));
        self
    }

    /// Sets the upper layer (`upperdir`), which receives every change, and its work directory
    /// (`workdir`): an empty directory on the same file system, which overlayfs uses to
    /// prepare files before moving them into place.
    pub fn upper(mut self, dir: impl Into<PathBuf>, work: impl Into<PathBuf>) -> Overlay {
        self.upper = Some(dir.into());
        self.work = Some(work.into());
        self
    }

    /// Sets only the upper layer (`upperdir`); [`validate`](Self::validate) refuses it without
    /// a [`work_dir`](Self::work_dir).
    pub fn upper_dir(mut self, dir: impl Into<PathBuf>) -> Overlay {
        self.upper = Some(dir.into());
        self
    }

    /// Sets only the work directory (`workdir`); [`validate`](Self::validate) refuses it
    /// without an [`upper_dir`](Self::upper_dir).
    pub fn work_dir(mut self, dir: impl Into<PathBuf>) -> Overlay {
        self.work = Some(dir.into());
        self
    }

    /// Makes a read-only overlay: no upper layer (one given is refused by
    /// [`validate`](Self::validate)), and the mount itself read-only (`MOUNT_ATTR_RDONLY`,
    /// `MS_RDONLY`, shown as `ro`). Writes fail with `EROFS`.
    pub fn read_only(mut self) -> Overlay {
        self.read_only = true;
        self
    }

    /// Sets `index=on|off`: the inode index, which keeps hard links of lower files together on
    /// copy up (needs the upper file system to support file handles).
    pub fn index(mut self, on: bool) -> Overlay {
        self.index = Some(on);
        self
    }

    /// Sets `redirect_dir=...` (see [`RedirectDir`]).
    pub fn redirect_dir(mut self, mode: RedirectDir) -> Overlay {
        self.redirect_dir = Some(mode);
        self
    }

    /// Sets `metacopy=on|off`: copy up only the metadata on a metadata change (the kernel
    /// enables `redirect_dir` with it, and refuses it with `userxattr`).
    pub fn metacopy(mut self, on: bool) -> Overlay {
        self.metacopy = Some(on);
        self
    }

    /// Sets `userxattr`: use `user.overlay.*` extended attributes instead of `trusted.*`, as a
    /// rootless overlay (mounted in a user namespace) must. Turns `redirect_dir` and
    /// `metacopy` off; explicitly enabling them conflicts.
    pub fn userxattr(mut self, on: bool) -> Overlay {
        self.userxattr = on;
        self
    }

    /// Sets `volatile`: no `sync` of the upper layer; after a crash the upper and work
    /// directories must be recreated. Needs an upper layer.
    pub fn volatile(mut self, on: bool) -> Overlay {
        self.volatile = on;
        self
    }

    /// Adds per-mount attributes (e.g. [`MountAttr::NOSUID`] | [`MountAttr::NODEV`]) to the
    /// mount this makes.
    pub fn attributes(mut self, attrs: MountAttr) -> Overlay {
        self.attrs |= attrs;
        self
    }

    /// The lower layers, top-most first.
    pub fn lower_layers(&self) -> &[PathBuf] {
        &self.lowers
    }

    /// The upper layer, if any.
    pub fn upper_path(&self) -> Option<&Path> {
        self.upper.as_deref()
    }

    /// The work directory, if any.
    pub fn work_path(&self) -> Option<&Path> {
        self.work.as_deref()
    }

    fn mount_attrs(&self) -> MountAttr {
        if self.read_only {
            self.attrs | MountAttr::RDONLY
        } else {
            self.attrs
        }
    }

    /// The layers as `(role, index, path)`: lower ones top-most first, then upper and work.
    fn layers(&self) -> impl Iterator<Item = (&'static str, usize, &Path)> {
        let lowers = self
            .lowers
            .iter()
            .enumerate()
            .map(|(i, l)| ("lower", i, l.as_path()));
        let upper = self.upper.iter().map(|u| ("upper", 0, u.as_path()));
        let work = self.work.iter().map(|w| ("work", 0, w.as_path()));
        lowers.chain(upper).chain(work)
    }

    /// The options other than layers, as `(key, value)`; `None` values are flags.
    fn options(&self) -> Vec<(&'static str, Option<&'static str>)> {
        let mut opts = Vec::new();
        if self.userxattr {
            opts.push(("userxattr", None));
        }
        if let Some(on) = self.index {
            opts.push(("index", Some(on_off(on))));
        }
        if let Some(mode) = self.redirect_dir {
            opts.push(("redirect_dir", Some(mode.as_str())));
        }
        if let Some(on) = self.metacopy {
            opts.push(("metacopy", Some(on_off(on))));
        }
        if self.volatile {
            opts.push(("volatile", None));
        }
        opts
    }

    /// Checks the builder against the rules of overlayfs (listed on [`Overlay`]) and that
    /// every layer is an existing directory, without mounting anything.
    pub fn validate(&self) -> Result<()> {
        let invalid = |value: String, reason: &'static str| Error::InvalidValue {
            what: "overlay",
            value,
            reason,
        };
        if self.lowers.is_empty() {
            return Err(invalid(String::new(), "at least one lower layer is needed"));
        }
        if self.lowers.len() > MAX_LOWER_LAYERS {
            return Err(Error::InvalidValue {
                what: "overlay lower layer count",
                value: self.lowers.len().to_string(),
                reason: "overlayfs stacks at most 500 lower layers",
            });
        }
        let show = |p: &Path| p.display().to_string();
        match (&self.upper, &self.work) {
            (Some(u), _) if self.read_only => {
                return Err(invalid(show(u), "a read-only overlay has no upper layer"));
            }
            (Some(u), None) => {
                return Err(invalid(show(u), "an upper layer needs a work directory"));
            }
            (None, Some(w)) => {
                return Err(invalid(show(w), "a work directory needs an upper layer"));
            }
            (None, None) if self.lowers.len() < 2 => {
                return Err(invalid(
                    show(&self.lowers[0]),
                    "an overlay without an upper layer needs at least 2 lower layers",
                ));
            }
            (None, None) if self.volatile => {
                return Err(invalid(String::new(), "volatile needs an upper layer"));
            }
            _ => {}
        }
        for (role, index, path) in self.layers() {
            check_layer(role, index, path)?;
        }
        Ok(())
    }

    /// Makes the overlay as a **detached** mount with the new mount API: `fsopen(2)`
    /// `"overlay"`, one `fsconfig(2)` per option and one `lowerdir+` per lower layer (Linux
    /// 6.8+, which lifts the one-page limit of `mount(2)` options), `FSCONFIG_CMD_CREATE`,
    /// `fsmount(2)`. Attach it with [`attach`](super::attach) (`move_mount(2)`); dropping the
    /// file descriptor unattached frees it.
    ///
    /// Layers are given as strings of at most [`FSCONFIG_MAX_STRING`] bytes; longer paths are
    /// passed as open directories (`FSCONFIG_SET_FD`, Linux 6.13+). On kernels without
    /// `lowerdir+` the layers go in one escaped `lowerdir` string, which must fit in
    /// [`FSCONFIG_MAX_STRING`] bytes, else [`Error::TooManyLayers`].
    ///
    /// Errors: [`Error::InvalidValue`] or [`Error::Layer`] from [`validate`](Self::validate);
    /// [`Error::Layer`] when the kernel refuses a layer; [`Error::FsContext`] (with the
    /// context's log) when it refuses an option or the combination; [`Error::Mount`] for
    /// `fsopen(2)` (`ENOSYS` before Linux 5.2) and `fsmount(2)`.
    pub fn fsmount(&self) -> Result<OwnedFd> {
        self.validate()?;
        let api = lower_api()?;
        let fs = open_context()?;
        let fs = fs.as_fd();
        self.configure_layers(fs, api)?;
        for (key, value) in self.options() {
            let res = match value {
                Some(v) => sys::fsconfig_set_string(fs, key, v),
                None => sys::fsconfig_set_flag(fs, key),
            };
            res.map_err(|source| context_error(fs, option_call(key), source))?;
        }
        sys::fsconfig_create(fs)
            .map_err(|source| context_error(fs, "fsconfig FSCONFIG_CMD_CREATE", source))?;
        sys::fsmount(fs, FsmountFlags::CLOEXEC, self.mount_attrs()).map_err(|source| Error::Mount {
            call: "fsmount",
            path: None,
            source,
        })
    }

    fn configure_layers(&self, fs: BorrowedFd<'_>, api: LowerApi) -> Result<()> {
        match api {
            LowerApi::Append => {
                for (index, lower) in self.lowers.iter().enumerate() {
                    // `lowerdir+` takes the path as it is: no escaping.
                    set_layer(fs, "lowerdir+", "lower", index, lower, lower.as_os_str())?;
                }
            }
            LowerApi::Joined | LowerApi::LegacyContext => {
                let value = joined_lowers(&self.lowers, false);
                if value.len() > FSCONFIG_MAX_STRING {
                    return Err(Error::TooManyLayers {
                        interface: IFACE_FSCONFIG,
                        layers: self.lowers.len(),
                        needed: value.len() + 1,
                        limit: FSCONFIG_MAX_STRING + 1,
                    });
                }
                sys::fsconfig_set_string(fs, "lowerdir", OsStr::from_bytes(&value))
                    .map_err(|source| context_error(fs, "fsconfig lowerdir", source))?;
            }
        }
        // `upperdir` and `workdir` strings are unescaped by overlayfs (`\x` -> `x`).
        if let (Some(upper), Some(work)) = (&self.upper, &self.work) {
            let esc = escaped(upper, false, false);
            set_layer(fs, "upperdir", "upper", 0, upper, OsStr::from_bytes(&esc))?;
            let esc = escaped(work, false, false);
            set_layer(fs, "workdir", "work", 0, work, OsStr::from_bytes(&esc))?;
        }
        Ok(())
    }

    /// The `mount(2)` option string: `lowerdir=` (top-most first, `\`, `:` and `,` escaped),
    /// `upperdir=`, `workdir=` (`\` and `,` escaped), then the options.
    pub(crate) fn legacy_options(&self) -> Result<CString> {
        let mut data = b"lowerdir=".to_vec();
        data.extend(joined_lowers(&self.lowers, true));
        if let (Some(upper), Some(work)) = (&self.upper, &self.work) {
            data.extend_from_slice(b",upperdir=");
            escape_into(&mut data, upper, false, true);
            data.extend_from_slice(b",workdir=");
            escape_into(&mut data, work, false, true);
        }
        for (key, value) in self.options() {
            data.push(b',');
            data.extend_from_slice(key.as_bytes());
            if let Some(v) = value {
                data.push(b'=');
                data.extend_from_slice(v.as_bytes());
            }
        }
        let limit = page_size();
        if data.len() + 1 > limit {
            return Err(Error::TooManyLayers {
                interface: IFACE_MOUNT,
                layers: self.lowers.len(),
                needed: data.len() + 1,
                limit,
            });
        }
        // Validation refused NUL bytes in the layers; the options have none.
        CString::new(data).map_err(|_| Error::InvalidValue {
            what: "overlay",
            value: String::new(),
            reason: "a layer path contains a NUL byte",
        })
    }

    /// Mounts the overlay at `target`: [`fsmount`](Self::fsmount) and `move_mount(2)`, or
    /// [`mount_legacy_at`](Self::mount_legacy_at) when the kernel lacks the new mount API
    /// (`fsopen(2)` fails with `ENOSYS`) or lacks `lowerdir+` and the layers do not fit in an
    /// `fsconfig(2)` string. On error nothing is mounted.
    pub fn mount_at(&self, target: impl AsRef<Path>) -> Result<()> {
        let target = target.as_ref();
        match self.fsmount() {
            Ok(fd) => super::attach(&fd, target),
            Err(Error::Mount { call, source, .. })
                if call == CALL_FSOPEN && source.raw_os_error() == Some(libc::ENOSYS) =>
            {
                self.mount_legacy_at(target)
            }
            Err(Error::TooManyLayers { interface, .. }) if interface == IFACE_FSCONFIG => {
                self.mount_legacy_at(target)
            }
            Err(e) => Err(e),
        }
    }

    /// Mounts the overlay at `target` with the legacy `mount(2)` and one option string, which
    /// the kernel takes only up to one page (4096 bytes on x86-64): a longer one (too many
    /// layers) is refused as [`Error::TooManyLayers`] before the call. Layer paths are escaped
    /// (`\`, `:`, `,`) as overlayfs requires.
    pub fn mount_legacy_at(&self, target: impl AsRef<Path>) -> Result<()> {
        let target = target.as_ref();
        self.validate()?;
        let data = self.legacy_options()?;
        let mut flags = MountFlags::empty();
        let attrs = self.mount_attrs();
        for (attr, flag) in [
            (MountAttr::RDONLY, MountFlags::RDONLY),
            (MountAttr::NOSUID, MountFlags::NOSUID),
            (MountAttr::NODEV, MountFlags::NODEV),
            (MountAttr::NOEXEC, MountFlags::NOEXEC),
        ] {
            if attrs.contains(attr) {
                flags |= flag;
            }
        }
        sys::mount(OsStr::new(FSTYPE), target, c"overlay", flags, Some(&data)).map_err(|source| {
            Error::Mount {
                call: "mount overlay",
                path: Some(target.to_owned()),
                source,
            }
        })
    }
}

fn option_call(key: &str) -> &'static str {
    match key {
        "userxattr" => "fsconfig userxattr",
        "index" => "fsconfig index",
        "redirect_dir" => "fsconfig redirect_dir",
        "metacopy" => "fsconfig metacopy",
        "volatile" => "fsconfig volatile",
        _ => "fsconfig",
    }
}

fn context_error(fs: BorrowedFd<'_>, call: &'static str, source: io::Error) -> Error {
    Error::FsContext {
        fstype: FSTYPE,
        call,
        source,
        log: sys::fs_context_log(fs),
    }
}

/// Sets one layer: as a string when it fits, else as an open directory.
fn set_layer(
    fs: BorrowedFd<'_>,
    key: &str,
    role: &'static str,
    index: usize,
    path: &Path,
    value: &OsStr,
) -> Result<()> {
    let layer_error = |source| Error::Layer {
        role,
        index,
        path: path.to_owned(),
        source,
    };
    let res = if value.len() <= FSCONFIG_MAX_STRING {
        sys::fsconfig_set_string(fs, key, value)
    } else {
        let dir = File::options()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(path)
            .map_err(layer_error)?;
        sys::fsconfig_set_fd(fs, key, dir.as_fd())
    };
    // Drop what the kernel logged: the layer and errno say more than "failed to resolve".
    res.map_err(|source| {
        let _ = sys::fs_context_log(fs);
        layer_error(source)
    })
}

fn check_layer(role: &'static str, index: usize, path: &Path) -> Result<()> {
    let err = |source| Error::Layer {
        role,
        index,
        path: path.to_owned(),
        source,
    };
    let bytes = path.as_os_str().as_bytes();
    if bytes.is_empty() {
        return Err(err(io::Error::from_raw_os_error(libc::ENOENT)));
    }
    if bytes.contains(&0) {
        return Err(err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "path contains a NUL byte",
        )));
    }
    let meta = std::fs::metadata(path).map_err(err)?;
    if !meta.is_dir() {
        return Err(err(io::Error::from_raw_os_error(libc::ENOTDIR)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What overlayfs does to a `lowerdir` list (`ovl_parse_param_split_lowerdirs`): a
    /// backslash keeps the next byte, an unescaped `:` separates layers.
    fn kernel_split(s: &[u8]) -> Vec<Vec<u8>> {
        let mut layers = vec![Vec::new()];
        let mut it = s.iter();
        while let Some(&b) = it.next() {
            match b {
                b'\\' => {
                    if let Some(&n) = it.next() {
                        layers.last_mut().unwrap().push(n);
                    }
                }
                b':' => layers.push(Vec::new()),
                _ => layers.last_mut().unwrap().push(b),
            }
        }
        layers
    }

    proptest::proptest! {
        #[test]
        fn lowerdir_escaping_round_trips(
            layers in proptest::collection::vec("[a-z:,\\\\/ ]{1,12}", 1..8)
        ) {
            let paths: Vec<PathBuf> = layers.iter().map(PathBuf::from).collect();
            let joined = joined_lowers(&paths, false);
            let back = kernel_split(&joined);
            let want: Vec<Vec<u8>> = layers.iter().map(|l| l.as_bytes().to_vec()).collect();
            proptest::prop_assert_eq!(back, want);
        }
    }

    #[test]
    fn legacy_options_are_ordered_and_escaped() {
        let o = Overlay::new()
            .lower("/a:b")
            .lower("/c,d")
            .upper("/u\\v", "/w,x")
            .index(true)
            .redirect_dir(RedirectDir::Follow)
            .userxattr(true);
        let data = o.legacy_options().unwrap();
        assert_eq!(
            data.to_bytes(),
            b"lowerdir=/a\\:b:/c\\,d,upperdir=/u\\\\v,workdir=/w\\,x,userxattr,index=on,\
              redirect_dir=follow"
        );
    }

    #[test]
    fn legacy_options_respect_the_page() {
        let long = "/x".repeat(100);
        let o = Overlay::new().lowers(std::iter::repeat_n(long.as_str(), 30));
        match o.legacy_options() {
            Err(Error::TooManyLayers {
                interface,
                layers: 30,
                needed,
                limit,
            }) => {
                assert_eq!(interface, IFACE_MOUNT);
                assert!(needed > limit);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
