//! Collecting what sandboxes of a dead caller left behind: see [`gc`].

use crate::Result;

/// What [`gc`] removed.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct GcReport {
    /// The cgroups of dead owners, beneath this process's own group in each hierarchy.
    pub cgroups: palisade_cgroup::GcReport,
    /// The bridge networks' leases of dead owners, their stale NAT tables in this thread's
    /// network namespace, and networks left without a live sandbox
    /// ([`palisade_netns::gc`]).
    pub network: palisade_netns::GcReport,
}

impl GcReport {
    /// Whether nothing was left to collect.
    pub fn is_empty(&self) -> bool {
        self.cgroups.is_empty() && self.network.is_empty()
    }
}

/// Removes what sandboxes of dead callers left behind: their cgroups beneath this process's own
/// group, and what their bridge networks hold in the default state directory and this thread's
/// network namespace. Whatever belongs to a live caller, and groups named by their user, are
/// never touched.
///
/// Most of what a sandbox owns dies with it by the kernel's own rules: its namespaces with
/// their last process, its processes with the init (which follows the caller process, see
/// [`SandboxBuilder::die_with_parent`](crate::SandboxBuilder::die_with_parent)), its
/// published-port rules with the netlink socket that made them. Directories in the cgroup file
/// system and the bridge network's address leases are not tied to anyone: a caller killed with
/// SIGKILL leaves them behind. Their names record the owner, by pid and start time (`proc(5)`,
/// field 22 of `/proc/<pid>/stat`), so that anyone can tell a dead owner's from a live one's:
/// every spawn with a cgroup collects the dead owners' groups beside its own, every bridge
/// spawn the dead owners' leases and tables, and this function collects everything on request. A
/// sandbox's published-port rules are in an nftables table owned by the caller's netlink socket
/// (`NFT_TABLE_F_OWNER`), which the kernel deletes with the socket, SIGKILL or not.
pub fn gc() -> Result<GcReport> {
    let hierarchy = palisade_cgroup::Hierarchy::detect()?;
    Ok(GcReport {
        cgroups: palisade_cgroup::gc(&hierarchy, None)?,
        network: palisade_netns::gc()?,
    })
}
