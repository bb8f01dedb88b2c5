//! The builder's mounts in the sandbox's root: volumes and tmpfs mounts with their options, and
//! volumes id-mapped so that the sandbox's user owns what the caller owns.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use palisade_overlay::rootfs::{Access, IdRange, MountIdMap, Tmpfs, TmpfsOptions, Volume};

use super::SandboxBuilder;

/// Mounts: each implies [`Rootfs::host`](palisade_overlay::rootfs::Rootfs::host) if no root file
/// system was set, and a mount at the same place as an earlier one (or as the sandbox's own
/// `/tmp`, `/dev/shm`, `/dev/mqueue`) replaces it rather than covering it.
impl SandboxBuilder {
    /// Mounts an empty tmpfs as `tmpfs` and `options` describe it: its mode, size bound,
    /// `noexec`, and the owner of its root directory (`tmpfs(5)`: `mode=`, `size=`, `uid=`,
    /// `gid=`), e.g. `--tmpfs /run:size=64m,mode=1777,uid=1000,gid=1000`. The owner's ids are
    /// those of the sandbox's user namespace, and must be mapped in it. Checked by
    /// [`build`](Self::build): a mode above `07777`, a size or number of inodes of 0 and an id
    /// of -1 are refused.
    ///
    /// ```no_run
    /// use palisade::overlay::rootfs::{Tmpfs, TmpfsOptions};
    /// use palisade::Sandbox;
    ///
    /// let tmpfs = Tmpfs { mode: 0o700, size: Some(64 << 20), ..Tmpfs::new("/run") };
    /// let options = TmpfsOptions { uid: Some(1000), gid: Some(1000), ..TmpfsOptions::default() };
    /// let status = Sandbox::builder("true").tmpfs_with(tmpfs, options).user(1000, 1000).status()?;
    /// assert!(status.success());
    /// # Ok::<(), palisade::Error>(())
    /// ```
    pub fn tmpfs_with(&mut self, tmpfs: Tmpfs, options: TmpfsOptions) -> &mut Self {
        self.edit_rootfs(|r| r.tmpfs_with_options(tmpfs, options))
    }

    /// Binds a host path as `volume` describes it: recursion, attributes, propagation and an
    /// id map ([`Volume`]).
    pub fn volume_with(&mut self, volume: Volume) -> &mut Self {
        self.edit_rootfs(|r| r.volume_with(volume))
    }

    /// Binds the host's `host` at `guest` as an id-mapped mount (`mount_setattr(2)` with
    /// `MOUNT_ATTR_IDMAP`) that shows what the owner of `host` owns as owned by `uid`:`gid`,
    /// and stores what `uid`:`gid` makes in it as the owner's: a sandbox running as uid 1000,
    /// or as root in a user namespace, writes to a directory of the caller's, and its files
    /// belong to the caller on the host. Other ids show as the overflow id (65534) through
    /// the mount and cannot make files.
    ///
    /// `uid` and `gid` are ids as the sandbox sees them (usually its [`user`](Self::user)'s):
    /// in a user namespace of its own, `build` maps them to kernel ids through its
    /// [`uid_map`](Self::uid_map) and [`gid_map`](Self::gid_map) ([`Error::Unmapped`] if they
    /// have no mapping); in a [joined](Self::join_namespace) one, give the kernel ids. The
    /// owner is read when this is called. Making an id-mapped mount takes `CAP_SYS_ADMIN` in
    /// the initial user namespace (the caller must be root: an unprivileged caller's sandbox
    /// writes to the caller's directories as its root anyway, which maps to the caller), and a
    /// file system that supports them (ext4, xfs, btrfs, tmpfs, …); the spawn fails naming
    /// `mount_setattr` otherwise.
    ///
    /// [`Error::Unmapped`]: crate::Error::Unmapped
    pub fn volume_owned(
        &mut self,
        host: impl Into<PathBuf>,
        guest: impl Into<PathBuf>,
        access: Access,
        uid: u32,
        gid: u32,
    ) -> &mut Self {
        let host = host.into();
        let mut volume = Volume::new(host.clone(), guest, access);
        // A missing host path is reported by `build`, as for any volume.
        if let Ok(meta) = std::fs::metadata(&host) {
            let one = |stored, shown| {
                vec![IdRange {
                    stored,
                    shown,
                    count: 1,
                }]
            };
            volume.id_map = Some(MountIdMap {
                uid: one(meta.uid(), uid),
                gid: one(meta.gid(), gid),
                recursive: false,
            });
            self.isolation.owned_volumes.push(volume.guest.clone());
        }
        self.volume_with(volume)
    }
}
