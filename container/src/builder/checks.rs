//! Checks [`SandboxBuilder::build`](super::SandboxBuilder::build) makes so that a sandbox that
//! could never start, or a limit that could never bind, is refused with what to do instead of
//! failing later with a bare errno: a pids limit below what the init and the command need, a
//! CPU limit above the host's CPUs, a user or group the sandbox's user namespace does not map.

use palisade_cgroup::{Max, Resource};
use palisade_ns::IdMap;
use palisade_overlay::rootfs::Rootfs;

use crate::error::{Error, Result};
use crate::security::SecuritySpec;
use crate::spawn::plan::{CgroupPlan, UserPlan};

/// Checks the limits against what starting the sandbox takes and against this host.
///
/// `init`: whether the sandbox runs an init, which counts against `pids.max` as the command
/// does (`cgroups(7)`: the pids controller counts every task of the group). `cpus`: the count
/// given to [`SandboxBuilder::cpus`](super::SandboxBuilder::cpus), which must not exceed the
/// CPUs online; a raw [`Resource::CpuMax`] (an OCI bundle's) is applied as given, as runc does.
pub(super) fn limits(cgroup: Option<&CgroupPlan>, init: bool, cpus: Option<f64>) -> Result<()> {
    let Some(cgroup) = cgroup else {
        return Ok(());
    };
    let minimum = if init { 2 } else { 1 };
    for r in &cgroup.resources {
        if let Resource::PidsMax(Max::Limit(limit)) = r {
            if *limit < minimum {
                return Err(Error::PidsLimitTooLow {
                    limit: *limit,
                    minimum,
                });
            }
        }
    }
    if let Some(cpus) = cpus {
        Resource::cpus(cpus)?.validate_on_host()?;
    }
    Ok(())
}

/// Checks that the command's user, group and supplementary groups are mapped in the sandbox's
/// new user namespace (`user`), which `setresuid(2)`, `setresgid(2)` and `setgroups(2)` need
/// (`user_namespaces(7)`: an unmapped id is `EINVAL`).
pub(super) fn ids_mapped(user: Option<&UserPlan>, security: &SecuritySpec) -> Result<()> {
    let Some(user) = user else {
        return Ok(());
    };
    if let Some((uid, gid)) = security.user {
        mapped("uid", uid, "uid_map", &user.uid_map)?;
        mapped("gid", gid, "gid_map", &user.gid_map)?;
    }
    for &gid in security.groups.iter().flatten() {
        mapped("supplementary gid", gid, "gid_map", &user.gid_map)?;
    }
    Ok(())
}

/// Maps the ids the volumes given to
/// [`volume_owned`](super::SandboxBuilder::volume_owned) (at the guest paths `owned`) show,
/// given as the sandbox sees them, to the kernel ids of the caller's user namespace that an
/// id-mapped mount shows (`mount_setattr(2)`), through the sandbox's new user namespace's maps.
pub(super) fn owned_volumes(
    mut rootfs: Rootfs,
    owned: &[std::path::PathBuf],
    user: &UserPlan,
) -> Result<Rootfs> {
    for volume in rootfs.volumes_mut() {
        let Some(id_map) = volume
            .id_map
            .as_mut()
            .filter(|_| owned.contains(&volume.guest))
        else {
            continue;
        };
        for range in &mut id_map.uid {
            range.shown = mapped("volume owner uid", range.shown, "uid_map", &user.uid_map)?;
        }
        for range in &mut id_map.gid {
            range.shown = mapped("volume owner gid", range.shown, "gid_map", &user.gid_map)?;
        }
    }
    Ok(rootfs)
}

/// `id` outside the namespace whose map is `ids`, or [`Error::Unmapped`].
fn mapped(kind: &'static str, id: u32, map: &'static str, ids: &IdMap) -> Result<u32> {
    if let Some(outside) = ids.to_outside(id) {
        return Ok(outside);
    }
    let mapped = ids
        .mappings()
        .iter()
        .map(|m| {
            let plural = if m.count == 1 { "" } else { "s" };
            format!("{}→{} ({} id{plural})", m.inside, m.outside, m.count)
        })
        .collect::<Vec<_>>()
        .join(", ");
    Err(Error::Unmapped {
        kind,
        id,
        map,
        mapped: if mapped.is_empty() {
            "nothing".to_owned()
        } else {
            mapped
        },
    })
}
