//! The Kubernetes level: containerd's CRI plugin, what the kubelet talks to (`runtime.v1` over
//! gRPC, here through the `k8s-cri` client), drives `palisade-oci` as the `BinaryName` of a
//! runtime handler of the runc shim (what a `RuntimeClass` selects), configured by README.md's
//! own snippet, and runc as the control through a handler of its own: the same pods, the same
//! calls and checks with both, and their results compared.
//!
//! containerd runs privately (its root, state, sockets, plugin directories and the runtimes'
//! state roots under the test's own directory, its pods' cgroups under a parent of the test's
//! own), from Debian's package, in mount, network and UTS namespaces the test makes for it: the
//! pods use the node's network (no CNI), and that node is the test's namespace, not the host.
//! The busybox image is written with Palisade's own OCI layout writer and imported with `ctr
//! image import` into the `k8s.io` namespace; it is the sandbox ("pause") image too, its command
//! blocking until it is told to stop.

mod common;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, ContainerState, ContainerStatus, ContainerStatusRequest,
    CreateContainerRequest, ExecSyncRequest, ImageSpec, ImageStatusRequest, LinuxContainerConfig,
    LinuxContainerSecurityContext, LinuxPodSandboxConfig, LinuxSandboxSecurityContext,
    ListContainersRequest, ListPodSandboxRequest, NamespaceMode, NamespaceOption, PodSandboxConfig,
    PodSandboxMetadata, PodSandboxState, PodSandboxStatusRequest, RemoveContainerRequest,
    RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest, StopContainerRequest,
    StopPodSandboxRequest, VersionRequest,
};
use palisade_test_support::{require_root, TempDir};
use tonic::transport::{Channel, Endpoint, Uri};

use common::containerd;

/// The image's full name (pods and the sandbox image name it so).
const IMAGE: &str = "docker.io/palisade/busybox:1";
/// The containerd namespace of the CRI plugin's images, pods and containers.
const K8S: &str = "k8s.io";
/// The image's command, which the sandbox container and the long-running containers run:
/// blocks until a `SIGTERM`, then exits 0 (as a pause container does).
const BLOCK: [&str; 3] = [
    "/bin/sh",
    "-c",
    "trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done",
];
/// The host name of the node: of the UTS namespace containerd runs in.
const NODE: &str = "pal-node";
/// How long one CRI call may take.
const CALL: Duration = Duration::from_secs(60);

/// The runtime handlers under test, as `RunPodSandbox` names them, with their runtimes: the
/// control first.
fn handlers() -> [(&'static str, PathBuf); 2] {
    [
        ("runc", PathBuf::from("/usr/bin/runc")),
        ("palisade", PathBuf::from(&*common::BIN)),
    ]
}

/// README.md's `config.toml` snippet for the CRI plugin's `palisade` handler, with the binary
/// the tests built where it names `/usr/local/bin/palisade-oci`.
fn readme_handler() -> String {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(&readme).unwrap();
    let mut blocks = readme.split("```toml\n").skip(1).filter_map(|b| {
        let (block, _) = b.split_once("```")?;
        block
            .contains("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.palisade]")
            .then_some(block)
    });
    let block = blocks
        .next()
        .expect("README.md has no toml block for the CRI plugin's palisade handler");
    assert!(blocks.next().is_none(), "README.md has two CRI snippets");
    assert!(block.contains("/usr/local/bin/palisade-oci"), "{block}");
    block.replace("/usr/local/bin/palisade-oci", &common::BIN)
}

/// A private containerd with its CRI plugin, the busybox image imported into `k8s.io`, and a CRI
/// client connected to it.
struct Node {
    dir: TempDir,
    daemon: Child,
    rt: tokio::runtime::Runtime,
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    /// The cgroup its pods go under (`linux.cgroup_parent`), the test's own: named as its
    /// directory, `palisade-test-cri-<pid>-<n>`.
    cgroup_parent: String,
    /// The host directories the shim makes, removed after the last instance.
    _host_dirs: common::HostDirs,
}

impl Node {
    fn new() -> Node {
        let dir = TempDir::new("cri");
        let host_dirs = common::HostDirs::acquire();
        let config = Node::config(dir.path());
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        for sub in ["runc", "palisade", "logs", "cni/bin", "cni/net.d"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let socket = dir.path().join("c.sock");
        // The channel connects lazily (containerd need not be up yet), its connection driven
        // by `rt`.
        let channel = {
            let _rt = rt.enter();
            Endpoint::from_static("http://[::]:50051").connect_with_connector_lazy(
                tower::service_fn(move |_: Uri| {
                    let socket = socket.clone();
                    async move {
                        let stream = tokio::net::UnixStream::connect(socket).await?;
                        Ok::<_, std::io::Error>(TokioIo::new(stream))
                    }
                }),
            )
        };
        let log = std::fs::File::create(dir.path().join("containerd.log")).unwrap();
        // unshare(1) without --fork executes its command, and sh executes containerd: the
        // child's pid is containerd's. Its mounts stay in its mount namespace (private
        // propagation), and end with it and its shims.
        let daemon = Command::new("unshare")
            .args(["--mount", "--net", "--uts", "--", "sh", "-c"])
            .arg(format!(
                "hostname {NODE} && ip link set lo up && exec containerd --config \"$0\""
            ))
            .arg(dir.path().join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let name = dir.path().file_name().unwrap().to_string_lossy();
        let cgroup_parent = format!("/{name}");
        let mut node = Node {
            dir,
            daemon,
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
            rt,
            cgroup_parent,
            _host_dirs: host_dirs,
        };
        node.wait_ready();
        node.import_busybox();
        node
    }

    /// The instance's `config.toml`: the CRI plugin with the `runc` handler, and the
    /// `palisade` one from README.md, each with a state root (`Root`, the runtime's `--root`)
    /// under the test's directory.
    fn config(dir: &Path) -> String {
        let at = |sub: &str| dir.join(sub).display().to_string();
        let mut config = containerd::base_config(dir, &[]);
        // The node's network, so no CNI: its directories are the test's own all the same, as
        // the plugin watches them. AppArmor and a negative OOM score adjustment (which needs
        // CAP_SYS_RESOURCE, that this host's root lacks) are left out; the streaming server
        // listens on the node's loopback.
        config.push_str(&format!(
            r#"[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{IMAGE}"
  disable_apparmor = true
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{cni_conf}"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
    BinaryName = "/usr/bin/runc"
    Root = "{runc_root}"
"#,
            cni_bin = at("cni/bin"),
            cni_conf = at("cni/net.d"),
            runc_root = at("runc"),
        ));
        let snippet = readme_handler();
        // The state root goes into the snippet's last table, which must be its options.
        let last_table = snippet
            .lines()
            .rfind(|l| l.trim_start().starts_with('['))
            .unwrap_or_default();
        assert!(
            last_table.ends_with(".containerd.runtimes.palisade.options]"),
            "README.md's snippet does not end in the handler's options: {snippet}"
        );
        config.push_str(&snippet);
        config.push_str(&format!("    Root = \"{}\"\n", at("palisade")));
        config
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("c.sock")
    }

    /// The runtime's state root of `handler` (the shim adds the namespace).
    fn runtime_root(&self, handler: &str) -> PathBuf {
        self.dir.path().join(handler).join(K8S)
    }

    /// The bundles of the shim's tasks.
    fn bundles(&self) -> PathBuf {
        self.dir
            .path()
            .join("state/io.containerd.runtime.v2.task")
            .join(K8S)
    }

    /// A CRI call's answer, or why there is none.
    fn try_call<T>(
        &self,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, String> {
        // The timer needs the runtime: made inside it.
        match self
            .rt
            .block_on(async { tokio::time::timeout(CALL, call).await })
        {
            Ok(Ok(answer)) => Ok(answer.into_inner()),
            Ok(Err(status)) => Err(format!("{:?}: {}", status.code(), status.message())),
            Err(_) => Err(format!("no answer in {CALL:?}")),
        }
    }

    /// A CRI call's answer; the call `what` must succeed.
    fn call<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> T {
        self.try_call(call)
            .unwrap_or_else(|e| panic!("{what}: {e}\n{}", self.diagnostics()))
    }

    fn rs(&self) -> RuntimeServiceClient<Channel> {
        self.runtime.clone()
    }

    /// Waits until containerd answers on its socket.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.daemon.try_wait().unwrap() {
                panic!("containerd exited: {status}\n{}", self.diagnostics());
            }
            let up = self.socket().exists()
                && self
                    .ctr()
                    .arg("version")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
            if up {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "containerd did not come up\n{}",
                self.diagnostics()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn ctr(&self) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("-a").arg(self.socket()).args(["-n", K8S]);
        cmd
    }

    /// Imports the busybox image into `k8s.io`, and waits until the CRI plugin lists it.
    fn import_busybox(&self) {
        let archive = containerd::busybox_archive(self.dir.path(), IMAGE, &BLOCK);
        let out = self
            .ctr()
            .args(["image", "import"])
            .arg(&archive)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ctr image import: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.diagnostics()
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let status = self.call(
                "ImageStatus",
                self.images.clone().image_status(ImageStatusRequest {
                    image: Some(image()),
                    verbose: false,
                }),
            );
            if status.image.is_some() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the CRI plugin never listed {IMAGE}\n{}",
                self.diagnostics()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// What explains a failure: containerd's log (where the shims' and the runtimes' errors
    /// go), and where the bundles' `config.json` were kept.
    fn diagnostics(&self) -> String {
        format!(
            "containerd log (tail):\n{}\nconfig.json of the containers: {}",
            containerd::tail(&self.dir.path().join("containerd.log"), 60),
            kept_dir("").display()
        )
    }

    /// A pod named `name` on the node's network, its cgroups under the test's parent.
    fn pod_config(&self, name: &str) -> PodSandboxConfig {
        let logs = self.dir.path().join("logs").join(name);
        std::fs::create_dir_all(&logs).unwrap();
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.to_owned(),
                uid: format!("{name}-uid"),
                namespace: "pal".to_owned(),
                attempt: 0,
            }),
            log_directory: logs.display().to_string(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: self.cgroup_parent.clone(),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(namespaces()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Creates and starts container `name` of the pod, running `command`; its id.
    fn start(
        &self,
        handler: &str,
        pod: &(String, PodSandboxConfig),
        name: &str,
        command: &[&str],
    ) -> String {
        let config = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.to_owned(),
                attempt: 0,
            }),
            image: Some(image()),
            command: command.iter().map(|a| a.to_string()).collect(),
            log_path: format!("{name}.log"),
            linux: Some(LinuxContainerConfig {
                security_context: Some(LinuxContainerSecurityContext {
                    namespace_options: Some(namespaces()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let id = self
            .call(
                &format!("{handler}: CreateContainer {name}"),
                self.rs().create_container(CreateContainerRequest {
                    pod_sandbox_id: pod.0.clone(),
                    config: Some(config),
                    sandbox_config: Some(pod.1.clone()),
                }),
            )
            .container_id;
        let status = self.status(&id);
        assert_eq!(
            status.state,
            ContainerState::ContainerCreated as i32,
            "{handler}: {name}: {status:?}"
        );
        let started = self.try_call(self.rs().start_container(StartContainerRequest {
            container_id: id.clone(),
        }));
        self.keep_config(handler, name, &id);
        if let Err(e) = started {
            panic!(
                "{handler}: StartContainer {name}: {e}\n{}",
                self.diagnostics()
            );
        }
        id
    }

    /// Keeps a copy of the `config.json` containerd wrote for task `id` (`kept_dir`), for
    /// diagnosis.
    fn keep_config(&self, handler: &str, name: &str, id: &str) {
        let kept = kept_dir(handler);
        std::fs::create_dir_all(&kept).unwrap();
        let _ = std::fs::copy(
            self.bundles().join(id).join("config.json"),
            kept.join(format!("{name}.json")),
        );
    }

    fn status(&self, id: &str) -> ContainerStatus {
        self.call(
            "ContainerStatus",
            self.rs().container_status(ContainerStatusRequest {
                container_id: id.to_owned(),
                verbose: false,
            }),
        )
        .status
        .unwrap_or_else(|| panic!("ContainerStatus of {id}: no status"))
    }

    /// Waits until container `id` has exited; its status.
    fn wait_exited(&self, what: &str, id: &str) -> ContainerStatus {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let status = self.status(id);
            if status.state == ContainerState::ContainerExited as i32 {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: never exited: {status:?}\n{}",
                self.diagnostics()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `ExecSync` of `cmd` in container `id`: (stdout, stderr, exit code).
    fn exec(&self, what: &str, id: &str, cmd: &[&str]) -> (String, String, i32) {
        let out = self.call(
            &format!("{what}: ExecSync {cmd:?}"),
            self.rs().exec_sync(ExecSyncRequest {
                container_id: id.to_owned(),
                cmd: cmd.iter().map(|a| a.to_string()).collect(),
                timeout: 20,
            }),
        );
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            out.exit_code,
        )
    }

    /// What the test's objects left in the node: shims, containers of the runtimes, task
    /// bundles, the CRI plugin's records, mounts under the test's directory (in containerd's
    /// mount namespace), and cgroups under the test's parent.
    fn leftovers(&self) -> Vec<String> {
        let mut left: Vec<String> = containerd::shims(&self.socket())
            .into_iter()
            .map(|(pid, argv)| format!("shim {pid}: {}", argv.join(" ")))
            .collect();
        let dir = self.dir.path();
        let listed = [
            self.runtime_root("runc"),
            self.runtime_root("palisade"),
            self.bundles(),
            dir.join("state/io.containerd.grpc.v1.cri/sandboxes"),
            dir.join("state/io.containerd.grpc.v1.cri/containers"),
            dir.join("root/io.containerd.grpc.v1.cri/sandboxes"),
            dir.join("root/io.containerd.grpc.v1.cri/containers"),
        ];
        for parent in listed {
            for entry in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
                left.push(format!("file {}", entry.path().display()));
            }
        }
        let mounts =
            std::fs::read_to_string(format!("/proc/{}/mountinfo", self.daemon.id())).unwrap();
        left.extend(
            mounts
                .lines()
                .filter_map(|l| l.split(' ').nth(4))
                .filter(|p| Path::new(p).starts_with(dir))
                .map(|p| format!("mount {p}")),
        );
        let parent = self.cgroup_parent.trim_start_matches('/');
        let hierarchies = std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
            .map(|h| h.path().join(parent))
            .chain([Path::new("/sys/fs/cgroup").join(parent)]);
        for group in hierarchies {
            for entry in std::fs::read_dir(&group).into_iter().flatten().flatten() {
                if entry.path().is_dir() {
                    left.push(format!("cgroup {}", entry.path().display()));
                }
            }
        }
        left
    }

    /// Waits until nothing is left of the pods (the shims exit once their last task is
    /// deleted).
    fn wait_clean(&self, handler: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = self.leftovers();
            if left.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{handler}: left behind: {left:#?}\n{}",
                self.diagnostics()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let alive = std::fs::read_to_string(format!("/proc/{}/stat", self.daemon.id()))
            .is_ok_and(|s| !s.contains(") Z"));
        // What a failed test left: its pods (and their containers), through the CRI.
        if alive {
            let pods = self
                .try_call(
                    self.rs()
                        .list_pod_sandbox(ListPodSandboxRequest { filter: None }),
                )
                .map(|l| l.items)
                .unwrap_or_default();
            for pod in pods {
                let id = pod.id;
                let _ = self.try_call(self.rs().stop_pod_sandbox(StopPodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                }));
                let _ = self.try_call(
                    self.rs()
                        .remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id }),
                );
            }
        }
        // containerd itself: TERM, then KILL if it lingers.
        let pid = self.daemon.id() as i32;
        // SAFETY: kill(2) on our own child, which we have not reaped: the pid is still ours.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.daemon.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = self.daemon.kill();
                let _ = self.daemon.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Its shims, then whatever containers they still held, through their runtimes.
        containerd::kill_shims(&self.socket(), &self.bundles());
        for (handler, runtime) in handlers() {
            containerd::delete_containers(&runtime, &self.runtime_root(handler));
        }
        // Mounts are in containerd's namespace, gone with it and its shims; any on the host
        // would be under the test's directory.
        common::unmount_under(self.dir.path());
        common::remove_cgroups(&self.cgroup_parent);
    }
}

/// Where the `config.json` of `handler`'s containers are kept, beside the tests' build.
fn kept_dir(handler: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("cri-config")
        .join(handler)
}

fn image() -> ImageSpec {
    ImageSpec {
        image: IMAGE.to_owned(),
        ..Default::default()
    }
}

/// What the kubelet asks for by default, on the node's network: the pod's IPC namespace, a
/// PID namespace of each container's own.
fn namespaces() -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Node as i32,
        pid: NamespaceMode::Container as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

/// The namespaces (`ipc`, `uts`, `net`, `pid`, `mnt`) of process `pid`, as `readlink` shows them.
fn host_namespaces(pid: impl std::fmt::Display) -> Vec<String> {
    ["ipc", "uts", "net", "pid", "mnt"]
        .iter()
        .map(|n| {
            std::fs::read_link(format!("/proc/{pid}/ns/{n}"))
                .unwrap()
                .display()
                .to_string()
        })
        .collect()
}

/// The lines of `/proc/self/status` that the runtime sets from `config.json` (user, groups,
/// capabilities, `no_new_privs`, seccomp): the same under both runtimes.
const STATUS_FIELDS: [&str; 10] = [
    "Uid",
    "Gid",
    "Groups",
    "CapInh",
    "CapPrm",
    "CapEff",
    "CapBnd",
    "CapAmb",
    "NoNewPrivs",
    "Seccomp",
];

/// What one handler's pod showed: everything in it must be the same for both runtimes.
#[derive(Debug, PartialEq)]
struct Seen {
    hostname: String,
    etc_hostname: String,
    uid: String,
    exec: (String, String, i32),
    status: Vec<String>,
    exited: (i32, String),
    log: Vec<String>,
    stopped: i32,
    killed: i32,
}

/// One pod's life, with `handler`: sandbox, three containers, execs, statuses, stops and
/// removals, checking each step; what it showed.
fn pod_life(node: &Node, handler: &str) -> Seen {
    let _ = std::fs::remove_dir_all(kept_dir(handler));
    let name = format!("pal-pod-{handler}");
    let config = node.pod_config(&name);
    let started = node.try_call(node.rs().run_pod_sandbox(RunPodSandboxRequest {
        config: Some(config.clone()),
        runtime_handler: handler.to_owned(),
    }));
    let pod_id = match started {
        Ok(answer) => answer.pod_sandbox_id,
        Err(e) => {
            // containerd removed the failed task's bundle; the CRI plugin writes the same
            // config.json for every handler but for the ids and cgroupsPath (the control's is
            // kept).
            panic!("{handler}: RunPodSandbox: {e}\n{}", node.diagnostics())
        }
    };
    node.keep_config(handler, "sandbox", &pod_id);
    let pod = (pod_id.clone(), config);
    let status = node.call(
        &format!("{handler}: PodSandboxStatus"),
        node.rs().pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod_id.clone(),
            verbose: true,
        }),
    );
    let sandbox = status.status.unwrap();
    assert_eq!(
        sandbox.state,
        PodSandboxState::SandboxReady as i32,
        "{handler}: {sandbox:?}"
    );
    let info: serde_json::Value = serde_json::from_str(&status.info["info"]).unwrap();
    assert_eq!(info["runtimeHandler"], handler, "{handler}: {info}");
    let sandbox_pid = info["pid"].as_u64().unwrap();
    // The handler's runtime ran it: its state is under that runtime's root, not the other's.
    for (other, _) in handlers() {
        let state = node.runtime_root(other).join(&pod_id);
        assert_eq!(
            state.exists(),
            other == handler,
            "{handler}: {}",
            state.display()
        );
    }

    let main = node.start(handler, &pod, "main", &BLOCK);
    let peer = node.start(handler, &pod, "peer", &BLOCK);
    for id in [&main, &peer] {
        let status = node.status(id);
        assert_eq!(
            status.state,
            ContainerState::ContainerRunning as i32,
            "{handler}: {status:?}"
        );
    }
    let what = format!("{handler}: main");
    let hostname = node.exec(&what, &main, &["hostname"]);
    assert_eq!(hostname.2, 0, "{what}: {hostname:?}");
    assert_eq!(
        hostname.0.trim(),
        NODE,
        "{what}: the pod's UTS namespace is the node's"
    );
    let etc_hostname = node.exec(&what, &main, &["cat", "/etc/hostname"]);
    let uid = node.exec(&what, &main, &["id", "-u"]);
    assert_eq!(uid, ("0\n".to_owned(), String::new(), 0), "{what}");
    let exec = node.exec(
        &what,
        &main,
        &["sh", "-c", "echo out; echo err >&2; exit 4"],
    );
    assert_eq!(exec, ("out\n".into(), "err\n".into(), 4), "{what}");
    let (proc_status, _, code) = node.exec(&what, &main, &["cat", "/proc/self/status"]);
    assert_eq!(code, 0, "{what}: {proc_status}");
    let proc_status: Vec<String> = proc_status
        .lines()
        .filter(|l| {
            STATUS_FIELDS
                .iter()
                .any(|f| l.starts_with(&format!("{f}:")))
        })
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        proc_status.len(),
        STATUS_FIELDS.len(),
        "{what}: {proc_status:?}"
    );

    // Namespaces: the pod's IPC (the sandbox's, not the node's), the node's UTS and network
    // (containerd's, not the host's), a PID and mount namespace of each container's own.
    let script = "for n in ipc uts net pid mnt; do readlink /proc/self/ns/$n; done";
    let ns_of = |id: &str| -> Vec<String> {
        let (out, err, code) = node.exec(&what, id, &["sh", "-c", script]);
        assert_eq!(code, 0, "{what}: {err}");
        out.lines().map(str::to_owned).collect()
    };
    let (in_main, in_peer) = (ns_of(&main), ns_of(&peer));
    let in_sandbox = host_namespaces(sandbox_pid);
    let node_ns = host_namespaces(node.daemon.id());
    let host = host_namespaces("self");
    let [ipc, uts, net, pid, mnt] = [0, 1, 2, 3, 4];
    let ns = format!(
        "{handler}: main {in_main:?}, peer {in_peer:?}, sandbox {in_sandbox:?}, node {node_ns:?}, \
         host {host:?}"
    );
    assert_eq!(in_main.len(), 5, "{ns}");
    assert_eq!(in_main[ipc], in_sandbox[ipc], "{ns}");
    assert_eq!(in_peer[ipc], in_sandbox[ipc], "{ns}");
    assert_ne!(in_sandbox[ipc], node_ns[ipc], "{ns}");
    for kind in [uts, net] {
        assert_eq!(in_main[kind], node_ns[kind], "{ns}");
        assert_eq!(in_peer[kind], node_ns[kind], "{ns}");
        assert_eq!(in_sandbox[kind], node_ns[kind], "{ns}");
        assert_ne!(node_ns[kind], host[kind], "{ns}");
    }
    for kind in [pid, mnt] {
        assert_ne!(in_main[kind], in_peer[kind], "{ns}");
        assert_ne!(in_main[kind], in_sandbox[kind], "{ns}");
    }

    // The pod's containers share its /dev/shm (the sandbox's, bound into each).
    let (_, err, code) = node.exec(&what, &main, &["sh", "-c", "echo shared > /dev/shm/pal"]);
    assert_eq!(code, 0, "{what}: {err}");
    let shared = node.exec(&what, &peer, &["cat", "/dev/shm/pal"]);
    assert_eq!(
        shared,
        ("shared\n".into(), String::new(), 0),
        "{handler}: peer does not see main's /dev/shm"
    );

    // A container that exits by itself: its status and its log.
    let exiter = node.start(handler, &pod, "exiter", &["sh", "-c", "echo bye; exit 3"]);
    let status = node.wait_exited(&format!("{handler}: exiter"), &exiter);
    let exited = (status.exit_code, status.reason.clone());
    assert_eq!(exited.0, 3, "{handler}: {status:?}");
    let log = std::fs::read_to_string(Path::new(&pod.1.log_directory).join("exiter.log"))
        .unwrap_or_default();
    // CRI's log format: `<time> <stream> <tag> <line>`; the time differs.
    let log: Vec<String> = log
        .lines()
        .map(|l| l.split_once(' ').map_or(l, |(_, rest)| rest).to_owned())
        .collect();
    assert_eq!(log, ["stdout F bye"], "{handler}: exiter's log");

    // Stopping: main with time to handle SIGTERM (it exits 0), peer without (SIGKILL).
    node.call(
        &format!("{handler}: StopContainer main"),
        node.rs().stop_container(StopContainerRequest {
            container_id: main.clone(),
            timeout: 10,
        }),
    );
    let stopped = node
        .wait_exited(&format!("{handler}: main"), &main)
        .exit_code;
    node.call(
        &format!("{handler}: StopContainer peer"),
        node.rs().stop_container(StopContainerRequest {
            container_id: peer.clone(),
            timeout: 0,
        }),
    );
    let killed = node
        .wait_exited(&format!("{handler}: peer"), &peer)
        .exit_code;
    for id in [&main, &peer, &exiter] {
        node.call(
            &format!("{handler}: RemoveContainer"),
            node.rs().remove_container(RemoveContainerRequest {
                container_id: id.clone(),
            }),
        );
    }
    let left = node.call(
        "ListContainers",
        node.rs()
            .list_containers(ListContainersRequest { filter: None }),
    );
    assert!(
        left.containers.is_empty(),
        "{handler}: {:?}",
        left.containers
    );

    node.call(
        &format!("{handler}: StopPodSandbox"),
        node.rs().stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod_id.clone(),
        }),
    );
    let status = node
        .call(
            &format!("{handler}: PodSandboxStatus"),
            node.rs().pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: pod_id.clone(),
                verbose: false,
            }),
        )
        .status
        .unwrap();
    assert_eq!(
        status.state,
        PodSandboxState::SandboxNotready as i32,
        "{handler}: {status:?}"
    );
    node.call(
        &format!("{handler}: RemovePodSandbox"),
        node.rs().remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod_id,
        }),
    );
    let pods = node.call(
        "ListPodSandbox",
        node.rs()
            .list_pod_sandbox(ListPodSandboxRequest { filter: None }),
    );
    assert!(pods.items.is_empty(), "{handler}: {:?}", pods.items);
    node.wait_clean(handler);

    Seen {
        hostname: hostname.0,
        etc_hostname: etc_hostname.0,
        uid: uid.0,
        exec,
        status: proc_status,
        exited,
        log,
        stopped,
        killed,
    }
}

#[test]
fn cri_runs_pods_with_runc_and_palisade_handlers() {
    require_root!();
    if !containerd::have_containerd() {
        palisade_test_support::skip("needs containerd and ctr (apt-get install containerd)");
        return;
    }
    let node = Node::new();
    // containerd 1.6 serves the CRI's `runtime.v1`, what the kubelet of Kubernetes 1.26 and
    // later requires.
    let version = node.call(
        "Version",
        node.rs().version(VersionRequest {
            version: "v1".to_owned(),
        }),
    );
    assert_eq!(version.runtime_name, "containerd", "{version:?}");
    assert_eq!(version.runtime_api_version, "v1", "{version:?}");

    let mut seen = Vec::new();
    for (handler, _) in handlers() {
        seen.push((handler, pod_life(&node, handler)));
    }
    let (control, palisade) = (&seen[0], &seen[1]);
    assert_eq!(
        control.1, palisade.1,
        "{} (left) and {} (right) differ",
        control.0, palisade.0
    );
}
