//! The runtime's hooks of `config.json`, run by the `palisade-oci` binary around a busybox
//! container: `prestart`, `createRuntime`, `poststart` and `poststop` on the host,
//! `createContainer` and `startContainer` in the container. Shell scripts the tests write log
//! what they read on their standard input and in their environment; the hooks in the container
//! log into a directory of the test's bound into it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use palisade_test_support::require_root;
use serde_json::{json, Value};

mod common;

use common::Ran;

/// A bundle, a state root and the containers a test made (see `common::Env`), and the hooks'
/// log.
struct Env {
    base: common::Env,
    log: PathBuf,
}

impl std::ops::Deref for Env {
    type Target = common::Env;
    fn deref(&self) -> &common::Env {
        &self.base
    }
}

impl std::ops::DerefMut for Env {
    fn deref_mut(&mut self) -> &mut common::Env {
        &mut self.base
    }
}

/// A hook script: logs `NAME status=… pid=… id=… env=$FOO` from its arguments (`NAME LOG`)
/// and its standard input, keeps its initial environment (which the shell's own variables do
/// not change) in `LOG.NAME.env`, and the cgroup of the container's process in
/// `LOG.NAME.cgroup`. PATH may be unset: the tools are named by path.
const LOGGER: &str = r#"#!/bin/sh
input=$(/usr/bin/cat)
field() { printf '%s' "$input" | /usr/bin/sed -n "s/.*\"$1\":\"\{0,1\}\([^\",}]*\).*/\1/p"; }
pid=$(field pid)
echo "$1 status=$(field status) pid=$pid id=$(field id) env=$FOO" >> "$2"
/usr/bin/tr '\0' '\n' < /proc/$$/environ > "$2.$1.env"
/usr/bin/cat "/proc/$pid/cgroup" > "$2.$1.cgroup" 2>/dev/null
exit 0
"#;

impl Env {
    fn new(tag: &str, args: &[&str]) -> Env {
        let base = common::Env::new(
            &format!("hook-{tag}"),
            args,
            &["pid", "mount", "ipc", "uts"],
            &["sh", "sleep", "echo"],
        );
        let log = base.dir.path().join("hooks.log");
        let env = Env { base, log };
        env.script("logger", LOGGER);
        env
    }

    /// Writes an executable script `name` into the test's directory.
    fn script(&self, name: &str, text: &str) -> String {
        use std::os::unix::fs::PermissionsExt;
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path.to_str().unwrap().to_owned()
    }

    /// A hook entry running the logger as `name`, with `FOO=bar` as its whole environment.
    fn logger(&self, name: &str) -> Value {
        let path = self.dir.path().join("logger");
        json!({
            "path": path,
            "args": [path, name, self.log],
            "env": ["FOO=bar"],
        })
    }

    fn hooks(&self, hooks: Value) {
        self.edit_config(|c| c["hooks"] = hooks);
    }

    fn create(&self, id: &str) -> Ran {
        self.oci(&["create", id, "--bundle", self.bundle()])
    }

    /// The lines the hooks logged.
    fn logged(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// What a logging hook kept of itself: `env` or `cgroup`.
    fn kept(&self, name: &str, what: &str) -> String {
        let path = format!("{}.{name}.{what}", self.log.display());
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// Asserts that nothing of the container `id` is left: no state, no process, no cgroup.
    fn assert_gone(&self, id: &str, pid: u32, cgroup: &str) {
        let state = self.oci(&["state", id]);
        assert_eq!(state.code, 1, "{state:?}");
        assert!(state.err.contains("does not exist"), "{state:?}");
        assert!(!common::alive(u64::from(pid)), "{pid} lives");
        // `N:controllers:/path` lines of v1 and `0::/path` of v2, each of which is looked for
        // under every cgroup mount, whatever hierarchy it holds.
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
        let roots: Vec<&str> = mounts
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                matches!(f.get(2), Some(&"cgroup") | Some(&"cgroup2")).then(|| f[1])
            })
            .collect();
        let groups: Vec<&str> = cgroup
            .lines()
            .filter_map(|line| line.splitn(3, ':').nth(2))
            .filter(|rel| rel.contains(id))
            .collect();
        assert!(
            !groups.is_empty(),
            "{id} had no cgroup of its own: {cgroup}"
        );
        for rel in groups {
            for root in &roots {
                let dir = Path::new(root).join(rel.trim_start_matches('/'));
                assert!(!dir.exists(), "{} is left", dir.display());
            }
        }
    }
}

/// Parses a logged line `NAME status=S pid=P id=I env=E` into its fields.
fn fields(line: &str) -> (String, String, u32, String, String) {
    let mut parts = line.splitn(5, ' ');
    let name = parts.next().unwrap_or_default().to_owned();
    let mut value = |key: &str| {
        let part = parts.next().unwrap_or_default();
        part.strip_prefix(key)
            .unwrap_or_else(|| panic!("{key} in {line:?}"))
            .to_owned()
    };
    let status = value("status=");
    let pid = value("pid=")
        .parse()
        .unwrap_or_else(|_| panic!("pid in {line:?}"));
    let id = value("id=");
    let env = value("env=");
    (name, status, pid, id, env)
}

#[test]
fn hooks_run_in_order_with_the_state() {
    require_root!();
    let mut env = Env::new("order", &["sleep", "1000"]);
    // The second createRuntime hook is busybox, which picks its applet by argv[0]: `sh` only
    // runs if args[0] is the program's argv[0].
    let argv = format!("echo argv0=$0 argv1=$1 >> {}", env.log.display());
    env.hooks(json!({
        "prestart": [env.logger("prestart")],
        "createRuntime": [
            env.logger("createRuntime"),
            {"path": "/usr/bin/busybox", "args": ["sh", "-c", argv, "zero", "one"]},
        ],
        "poststart": [env.logger("poststart")],
        "poststop": [env.logger("poststop")],
    }));
    let id = env.id("order");

    env.create(&id).ok();
    let state = env.state(&id);
    assert_eq!(state["status"], "created");
    let pid = state["pid"].as_u64().unwrap() as u32;
    let logged = env.logged();
    assert_eq!(logged.len(), 3, "{logged:?}");
    for (line, want) in logged.iter().zip(["prestart", "createRuntime"]) {
        assert_eq!(
            fields(line),
            (
                want.to_owned(),
                "creating".to_owned(),
                pid,
                id.clone(),
                "bar".to_owned()
            )
        );
    }
    assert_eq!(logged[2], "argv0=zero argv1=one");
    // Exactly the hook's environment: nothing of the runtime's.
    let hook_env = env.kept("prestart", "env");
    assert_eq!(hook_env.trim(), "FOO=bar", "{hook_env:?}");
    assert!(std::env::var_os("PATH").is_some());

    env.oci(&["start", &id]).ok();
    let logged = env.logged();
    assert_eq!(logged.len(), 4, "{logged:?}");
    assert_eq!(
        fields(&logged[3]),
        (
            "poststart".to_owned(),
            "running".to_owned(),
            pid,
            id.clone(),
            "bar".to_owned()
        )
    );

    env.oci(&["kill", &id, "KILL"]).ok();
    env.wait_status(&id, "stopped");
    assert_eq!(env.logged().len(), 4);
    env.oci(&["delete", &id]).ok();
    let logged = env.logged();
    assert_eq!(logged.len(), 5, "{logged:?}");
    let (name, status, _, logged_id, _) = fields(&logged[4]);
    assert_eq!(
        (name.as_str(), status.as_str(), logged_id.as_str()),
        ("poststop", "stopped", id.as_str())
    );
    let state = env.oci(&["state", &id]);
    assert_eq!(state.code, 1, "{state:?}");
}

#[test]
fn run_runs_every_hook() {
    require_root!();
    let mut env = Env::new("run", &["echo", "hi"]);
    env.hooks(json!({
        "prestart": [env.logger("prestart")],
        "createRuntime": [env.logger("createRuntime")],
        "poststart": [env.logger("poststart")],
        "poststop": [env.logger("poststop")],
    }));
    let id = env.id("run");
    let ran = env.oci(&["run", &id, "--bundle", env.bundle()]).ok();
    assert_eq!(ran.out, "hi\n");
    let names: Vec<String> = env.logged().iter().map(|l| fields(l).0).collect();
    assert_eq!(
        names,
        ["prestart", "createRuntime", "poststart", "poststop"],
        "{ran:?}"
    );
}

#[test]
fn run_with_only_later_hooks_runs_poststart_and_poststop() {
    require_root!();
    // Nothing runs between create and start: run starts the process with its creation.
    let mut env = Env::new("later", &["echo", "hi"]);
    env.hooks(json!({
        "poststart": [env.logger("poststart")],
        "poststop": [env.logger("poststop")],
    }));
    let id = env.id("later");
    let ran = env.oci(&["run", &id, "--bundle", env.bundle()]).ok();
    assert_eq!(ran.out, "hi\n");
    let logged = env.logged();
    assert_eq!(logged.len(), 2, "{logged:?}");
    let (name, status, pid, logged_id, foo) = fields(&logged[0]);
    assert_eq!(
        (
            name.as_str(),
            status.as_str(),
            logged_id.as_str(),
            foo.as_str()
        ),
        ("poststart", "running", id.as_str(), "bar")
    );
    assert_ne!(pid, 0, "{logged:?}");
    let (name, status, pid, logged_id, _) = fields(&logged[1]);
    assert_eq!(
        (name.as_str(), status.as_str(), pid, logged_id.as_str()),
        ("poststop", "stopped", 0, id.as_str())
    );
    let state = env.oci(&["state", &id]);
    assert_eq!(state.code, 1, "{state:?}");
}

#[test]
fn failing_create_runtime_hook_destroys_the_container() {
    require_root!();
    let mut env = Env::new("fail", &["sleep", "1000"]);
    let fail = env.script("fail", "#!/bin/sh\necho setup broke >&2\nexit 3\n");
    env.hooks(json!({
        "createRuntime": [env.logger("createRuntime"), {"path": fail}],
        "poststart": [env.logger("poststart")],
    }));
    let id = env.id("fail");
    let ran = env.create(&id);
    assert_eq!(ran.code, 1, "{ran:?}");
    assert!(
        ran.err
            .contains(&format!("hooks.createRuntime[1] {fail}: exit status: 3")),
        "{ran:?}"
    );
    assert!(ran.err.contains("setup broke"), "{ran:?}");
    let logged = env.logged();
    assert_eq!(logged.len(), 1, "{logged:?}");
    let (_, _, pid, _, _) = fields(&logged[0]);
    env.assert_gone(&id, pid, &env.kept("createRuntime", "cgroup"));
}

#[test]
fn hook_timeout_kills_it_and_fails_create() {
    require_root!();
    let mut env = Env::new("timeout", &["sleep", "1000"]);
    let slow = env.script("slow", "#!/bin/sh\n/usr/bin/sleep 5\n");
    env.hooks(json!({
        "prestart": [env.logger("prestart")],
        "createRuntime": [{"path": slow, "timeout": 1}],
    }));
    let id = env.id("timeout");
    assert_create_times_out(
        &env,
        &id,
        &format!("hooks.createRuntime[0] {slow}"),
        "prestart",
    );
}

/// Creates `id`, whose hook `hook` (its field and path) outlives its one-second timeout: the
/// create fails after that second, naming it, and nothing is left but what the hook of
/// `logged` (which ran before it) made.
fn assert_create_times_out(env: &Env, id: &str, hook: &str, logged: &str) {
    let began = Instant::now();
    let ran = env.create(id);
    let took = began.elapsed();
    assert_eq!(ran.code, 1, "{ran:?}");
    assert!(
        ran.err.contains(&format!("{hook}: timed out after 1s")),
        "{ran:?}"
    );
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(4),
        "took {took:?}"
    );
    let (_, _, pid, _, _) = fields(&env.logged()[0]);
    env.assert_gone(id, pid, &env.kept(logged, "cgroup"));
}

#[test]
fn failing_poststart_and_poststop_hooks_only_warn() {
    require_root!();
    let mut env = Env::new("warn", &["sleep", "1000"]);
    let fail = env.script("fail", "#!/bin/sh\nexit 7\n");
    env.hooks(json!({
        "poststart": [{"path": fail}, env.logger("poststart")],
        "poststop": [{"path": fail}, env.logger("poststop")],
    }));
    let id = env.id("warn");
    env.create(&id).ok();
    let log = env.dir.path().join("runtime.log");
    let log_arg = log.to_str().unwrap();
    let ran = env
        .oci(&["--log", log_arg, "--log-format", "json", "start", &id])
        .ok();
    assert!(
        ran.err
            .contains(&format!("hooks.poststart[0] {fail}: exit status: 7")),
        "{ran:?}"
    );
    // The hooks after a failed one still run.
    let logged = env.logged();
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert_eq!(fields(&logged[0]).1, "running");
    assert_eq!(env.state(&id)["status"], "running");
    let ran = env
        .oci(&[
            "--log",
            log_arg,
            "--log-format",
            "json",
            "delete",
            "--force",
            &id,
        ])
        .ok();
    assert!(ran.err.contains("hooks.poststop[0]"), "{ran:?}");
    let logged = env.logged();
    assert_eq!(logged.len(), 2, "{logged:?}");
    assert_eq!(fields(&logged[1]).1, "stopped");
    assert_eq!(env.oci(&["state", &id]).code, 1);
    let lines: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    for (line, hook) in lines
        .iter()
        .zip(["hooks.poststart[0]", "hooks.poststop[0]"])
    {
        assert_eq!(line["level"], "warning", "{line}");
        assert!(line["msg"].as_str().unwrap().contains(hook), "{line}");
    }
}

/// What a hook in the container logs, as busybox's `sh -c` with `$0` its `argv[0]`, `$1`
/// its name and `$2` a path of the host's, into the directory bound at `/pal-out`: the line
/// `NAME argv0=… host=… mnt=… sees=yes|no env=$FOO` in the shared log (`sees`: whether `$2`
/// exists where it runs), its standard input in `NAME.json`, its initial environment
/// in `NAME.env`, its privileges in `NAME.status` and its cgroups in `NAME.cgroup`. The tools are the container's busybox.
const IN_CONTAINER: &str = r#"bb=/bin/busybox
input=$($bb cat)
mnt=$($bb stat -L -c %i /proc/self/ns/mnt)
sees=no
[ -e "$2" ] && sees=yes
echo "$1 argv0=$0 host=$($bb hostname) mnt=$mnt sees=$sees env=$FOO" >> /pal-out/hooks.log
printf '%s' "$input" > /pal-out/$1.json
$bb tr '\0' '\n' < /proc/$$/environ > /pal-out/$1.env
$bb grep -E '^(CapEff|CapBnd|NoNewPrivs|Uid):' /proc/self/status > /pal-out/$1.status
$bb cat /proc/self/cgroup > /pal-out/$1.cgroup
"#;

/// A bundle whose container binds the test's `out` directory at `/pal-out`, where every hook
/// logs (those on the host into the same `hooks.log`), and named `pal-hooked`.
fn bound_env(tag: &str, args: &[&str]) -> (Env, PathBuf) {
    let mut env = Env::new(tag, args);
    let out = env.dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::create_dir(env.bundle.join("rootfs/pal-out")).unwrap();
    env.log = out.join("hooks.log");
    env.edit_config(|c| {
        c["hostname"] = "pal-hooked".into();
        c["mounts"].as_array_mut().unwrap().push(
            json!({"destination": "/pal-out", "type": "bind", "source": out,
                "options": ["rbind", "rw"]}),
        );
    });
    (env, out)
}

/// The host's static busybox, copied where only the host sees it: the test's directory.
fn host_only_busybox(env: &Env) -> PathBuf {
    let path = env.dir.path().join("pal-hook-busybox");
    std::fs::copy("/usr/bin/busybox", &path).unwrap();
    path
}

/// A `createContainer` hook: the host-only busybox as `sh`, logging as `name`.
fn in_container(program: &Path, name: &str) -> Value {
    json!({
        "path": program,
        "args": ["sh", "-c", IN_CONTAINER, format!("pal-{name}"), name, program],
        "env": ["FOO=in"],
    })
}

/// The mount namespace inode of process `pid`, from its `/proc` link: `mnt:[N]`.
fn mnt_inode(pid: u32) -> String {
    let link = std::fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap();
    let link = link.to_string_lossy();
    link.trim_start_matches("mnt:[")
        .trim_end_matches(']')
        .to_owned()
}

#[test]
fn all_six_hooks_run_in_order_and_where_the_spec_says() {
    require_root!();
    let (mut env, out) = bound_env("six", &["sleep", "1000"]);
    let busybox = host_only_busybox(&env);
    // A startContainer hook that only the container's root holds.
    std::fs::copy("/usr/bin/busybox", env.bundle.join("rootfs/pal-start")).unwrap();
    assert!(!Path::new("/pal-start").exists());
    env.hooks(json!({
        "prestart": [env.logger("prestart")],
        "createRuntime": [env.logger("createRuntime")],
        "createContainer": [in_container(&busybox, "createContainer")],
        "startContainer": [{
            "path": "/pal-start",
            "args": ["sh", "-c", IN_CONTAINER, "pal-startContainer", "startContainer", busybox],
            "env": ["FOO=in"],
        }],
        "poststart": [env.logger("poststart")],
        "poststop": [env.logger("poststop")],
    }));
    let id = env.id("six");
    env.create(&id).ok();
    let pid = env.state(&id)["pid"].as_u64().unwrap() as u32;
    let names = |env: &Env| -> Vec<String> {
        env.logged()
            .iter()
            .map(|l| l.split(' ').next().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(
        names(&env),
        ["prestart", "createRuntime", "createContainer"]
    );
    env.oci(&["start", &id]).ok();
    assert_eq!(
        names(&env),
        [
            "prestart",
            "createRuntime",
            "createContainer",
            "startContainer",
            "poststart"
        ]
    );
    // In the container: its hostname and mount namespace, argv[0] and env as given.
    let mnt = mnt_inode(pid);
    assert_ne!(mnt, mnt_inode(std::process::id()));
    let logged = env.logged();
    for (line, name, status) in [
        (&logged[2], "createContainer", "creating"),
        (&logged[3], "startContainer", "created"),
    ] {
        assert_eq!(
            *line,
            format!("{name} argv0=pal-{name} host=pal-hooked mnt={mnt} sees=no env=in"),
            "{logged:?}"
        );
        let state: Value =
            serde_json::from_slice(&std::fs::read(out.join(format!("{name}.json"))).unwrap())
                .unwrap();
        assert_eq!(state["status"], status, "{state}");
        assert_eq!(state["id"], id.as_str(), "{state}");
        assert_eq!(state["pid"], pid, "{state}");
        // Exactly the hook's environment: nothing of the runtime's or the container's.
        let hook_env = std::fs::read_to_string(out.join(format!("{name}.env"))).unwrap();
        assert_eq!(hook_env.trim(), "FOO=in", "{name}: {hook_env:?}");
        // The container's cgroup (it has no cgroup namespace: the paths are the host's).
        let cgroup = std::fs::read_to_string(out.join(format!("{name}.cgroup"))).unwrap();
        let its = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        assert_eq!(cgroup, its, "{name}");
        assert!(cgroup.contains(&id), "{cgroup}");
    }

    env.oci(&["kill", &id, "KILL"]).ok();
    env.wait_status(&id, "stopped");
    env.oci(&["delete", &id]).ok();
    assert_eq!(names(&env).last().map(String::as_str), Some("poststop"));
    assert_eq!(names(&env).len(), 6);
}

#[test]
fn a_hook_in_the_container_holds_no_more_than_its_process() {
    require_root!();
    let (mut env, out) = bound_env("caps", &["sleep", "1000"]);
    let busybox = host_only_busybox(&env);
    let chown = json!(["CAP_CHOWN"]);
    env.edit_config(|c| {
        c["process"]["capabilities"] = json!({
            "bounding": chown, "effective": chown, "permitted": chown,
        });
        c["process"]["noNewPrivileges"] = true.into();
    });
    env.hooks(json!({
        "createContainer": [in_container(&busybox, "createContainer")],
    }));
    let id = env.id("caps");
    env.create(&id).ok();
    let status = std::fs::read_to_string(out.join("createContainer.status")).unwrap();
    // Positive control: the runtime that ran it holds every capability.
    let ours = std::fs::read_to_string("/proc/self/status").unwrap();
    assert!(!ours.contains("CapEff:\t0000000000000001"), "{ours}");
    for want in [
        "CapEff:\t0000000000000001",
        "CapBnd:\t0000000000000001",
        "NoNewPrivs:\t1",
    ] {
        assert!(status.contains(want), "{want} in {status}");
    }
}

#[test]
fn a_failing_create_container_hook_destroys_the_container() {
    require_root!();
    let (mut env, _) = bound_env("cc-fail", &["sleep", "1000"]);
    let busybox = host_only_busybox(&env);
    env.hooks(json!({
        "createRuntime": [env.logger("createRuntime")],
        "createContainer": [{
            "path": busybox,
            "args": ["sh", "-c", "echo setup broke >&2; exit 3"],
        }],
        "poststart": [env.logger("poststart")],
    }));
    let id = env.id("ccfail");
    let ran = env.create(&id);
    assert_eq!(ran.code, 1, "{ran:?}");
    assert!(
        ran.err.contains(&format!(
            "hooks.createContainer[0] {}: exit status: 3",
            busybox.display()
        )),
        "{ran:?}"
    );
    assert!(ran.err.contains("setup broke"), "{ran:?}");
    let logged = env.logged();
    assert_eq!(logged.len(), 1, "{logged:?}");
    let (_, _, pid, _, _) = fields(&logged[0]);
    env.assert_gone(&id, pid, &env.kept("createRuntime", "cgroup"));
}

#[test]
fn a_create_container_hook_that_times_out_is_killed_and_fails_create() {
    require_root!();
    let (mut env, _) = bound_env("cc-timeout", &["sleep", "1000"]);
    let busybox = host_only_busybox(&env);
    env.hooks(json!({
        "createRuntime": [env.logger("createRuntime")],
        "createContainer": [{"path": busybox, "args": ["sleep", "5"], "timeout": 1}],
    }));
    let id = env.id("cctimeout");
    let hook = format!("hooks.createContainer[0] {}", busybox.display());
    assert_create_times_out(&env, &id, &hook, "createRuntime");
}

#[test]
fn a_script_cannot_be_a_create_container_hook() {
    require_root!();
    let (mut env, _) = bound_env("cc-script", &["sleep", "1000"]);
    let script = env.script("pal-hook.sh", "#!/bin/sh\nexit 0\n");
    env.hooks(json!({
        "createRuntime": [env.logger("createRuntime")],
        "createContainer": [{"path": script}],
    }));
    let id = env.id("ccscript");
    let ran = env.create(&id);
    assert_eq!(ran.code, 1, "{ran:?}");
    assert!(
        ran.err.contains("hooks.createContainer[0]") && ran.err.contains("script"),
        "{ran:?}"
    );
    let (_, _, pid, _, _) = fields(&env.logged()[0]);
    env.assert_gone(&id, pid, &env.kept("createRuntime", "cgroup"));
}

#[test]
fn a_failing_start_container_hook_fails_start_and_stops_the_container() {
    require_root!();
    let (mut env, _) = bound_env("sc-fail", &["sleep", "1000"]);
    let fail = env.bundle.join("rootfs/pal-fail");
    std::fs::write(&fail, "#!/bin/sh\necho start broke >&2\nexit 4\n").unwrap();
    std::fs::set_permissions(&fail, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    env.hooks(json!({
        "createRuntime": [env.logger("createRuntime")],
        "startContainer": [{"path": "/pal-fail"}],
        "poststart": [env.logger("poststart")],
        "poststop": [env.logger("poststop")],
    }));
    let id = env.id("scfail");
    env.create(&id).ok();
    let ran = env.oci(&["start", &id]);
    assert_eq!(ran.code, 1, "{ran:?}");
    assert!(
        ran.err
            .contains("hooks.startContainer[0] /pal-fail: exit status: 4"),
        "{ran:?}"
    );
    assert!(ran.err.contains("start broke"), "{ran:?}");
    // Stopped, its process never run; poststart not run; delete runs poststop.
    assert_eq!(env.status(&id), "stopped");
    let logged = env.logged();
    assert_eq!(logged.len(), 1, "{logged:?}");
    env.oci(&["delete", &id]).ok();
    let logged = env.logged();
    assert_eq!(fields(&logged[1]).0, "poststop", "{logged:?}");
    let (_, _, pid, _, _) = fields(&logged[0]);
    env.assert_gone(&id, pid, &env.kept("createRuntime", "cgroup"));
}

#[test]
fn a_start_container_hook_that_times_out_fails_run_and_leaves_nothing() {
    require_root!();
    let (mut env, _) = bound_env("sc-timeout", &["echo", "never"]);
    env.hooks(json!({
        "createRuntime": [env.logger("createRuntime")],
        "startContainer": [{"path": "/bin/sleep", "args": ["sleep", "5"], "timeout": 1}],
        "poststop": [env.logger("poststop")],
    }));
    let id = env.id("sctimeout");
    let ran = env.oci(&["run", &id, "--bundle", env.bundle()]);
    assert_eq!(ran.code, 1, "{ran:?}");
    assert!(
        ran.err
            .contains("hooks.startContainer[0] /bin/sleep: timed out after 1s"),
        "{ran:?}"
    );
    assert!(!ran.out.contains("never"), "{ran:?}");
    let logged = env.logged();
    let names: Vec<String> = logged.iter().map(|l| fields(l).0).collect();
    assert_eq!(names, ["createRuntime", "poststop"], "{logged:?}");
    let (_, _, pid, _, _) = fields(&logged[0]);
    env.assert_gone(&id, pid, &env.kept("createRuntime", "cgroup"));
}
