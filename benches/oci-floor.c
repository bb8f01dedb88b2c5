/*
 * The kernel's floor under `run` of /bin/true from the bundle benches/oci-run.sh makes: the
 * least any runtime must do for that config.json, and nothing else. One clone(2) into new
 * mount, PID, IPC, UTS, cgroup and network namespaces; in the child, the root's bind mount,
 * the spec's mounts but /sys/fs/cgroup (/proc, a tmpfs /dev with its six device nodes bound
 * from the host, /dev/pts, /dev/shm, /dev/mqueue, /sys), pivot_root(2), the old root's lazy
 * unmount, and execve(2) of /bin/true; the parent waits.
 *
 * Left out, and so below every runtime's figure: reading config.json, the cgroups, the state
 * files, the masked and read-only paths, capabilities, rlimits, no_new_privs, a seccomp
 * filter, the loopback interface's bring-up, and the clean-up. It is a measuring tool, not a
 * sandbox; benches/oci-run.sh builds and times it beside the runtimes. As root: everything it
 * mounts is in the child's own mount namespace, made private before the first mount.
 *
 * Usage: oci-floor ROOTFS
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static char child_stack[1 << 16];

/* Exits with the number of the step that failed. */
static void step(int failed, int code)
{
	if (failed)
		_exit(code);
}

static int child(void *rootfs)
{
	static const char *const devices[] = { "null", "zero", "full", "random", "urandom", "tty" };
	char host[32], inside[32];

	step(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0, 10);
	step(mount(rootfs, rootfs, NULL, MS_BIND | MS_REC, NULL) != 0, 11);
	step(chdir(rootfs) != 0, 12);
	step(mount("proc", "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0, 13);
	step(mount("tmpfs", "dev", "tmpfs", MS_NOSUID | MS_STRICTATIME, "mode=755,size=65536k") != 0, 14);
	for (size_t i = 0; i < sizeof devices / sizeof devices[0]; i++) {
		snprintf(host, sizeof host, "/dev/%s", devices[i]);
		snprintf(inside, sizeof inside, "dev/%s", devices[i]);
		int fd = open(inside, O_WRONLY | O_CREAT | O_CLOEXEC, 0666);
		step(fd < 0, 15);
		close(fd);
		step(mount(host, inside, NULL, MS_BIND, NULL) != 0, 16);
	}
	step(mkdir("dev/pts", 0755) != 0 || mkdir("dev/shm", 0755) != 0 || mkdir("dev/mqueue", 0755) != 0, 17);
	step(mount("devpts", "dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
		   "newinstance,ptmxmode=0666,mode=0620") != 0, 18);
	step(mount("shm", "dev/shm", "tmpfs", MS_NOSUID | MS_NOEXEC | MS_NODEV, "mode=1777,size=65536k") != 0, 19);
	step(mount("mqueue", "dev/mqueue", "mqueue", MS_NOSUID | MS_NOEXEC | MS_NODEV, NULL) != 0, 20);
	step(mount("sysfs", "sys", "sysfs", MS_NOSUID | MS_NOEXEC | MS_NODEV | MS_RDONLY, NULL) != 0, 21);
	step(syscall(SYS_pivot_root, ".", ".") != 0, 22);
	step(umount2(".", MNT_DETACH) != 0, 23);
	char *argv[] = { "/bin/true", NULL };
	char *envp[] = { NULL };
	execve(argv[0], argv, envp);
	_exit(24);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s ROOTFS\n", argv[0]);
		return 2;
	}
	int flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP |
		    CLONE_NEWNET | SIGCHLD;
	pid_t pid = clone(child, child_stack + sizeof child_stack, flags, argv[1]);
	if (pid < 0) {
		perror("clone");
		return 1;
	}
	int status;
	if (waitpid(pid, &status, 0) != pid) {
		perror("waitpid");
		return 1;
	}
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		fprintf(stderr, "the child failed: status %#x (its exit code is the step)\n", status);
		return 1;
	}
	return 0;
}
