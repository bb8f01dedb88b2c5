/*
 * Runs inside a sandbox (built by tests/escapes/init.rs): attaches to PID 1, the sandbox's init,
 * reads its whole memory through /proc/1/mem, and looks for a secret that only the sandbox's
 * caller holds. argv[1] is the secret reversed, so that the forward form is in no memory but the
 * caller's (and the init's, if the init is a copy of the caller). Prints, one per line:
 *   self CAPEFF CAPBND      this process's capability sets
 *   init CAPEFF CAPBND      PID 1's
 *   seize RC ERRNO          ptrace(PTRACE_SEIZE, 1)
 *   mem RC ERRNO            open of /proc/1/mem
 *   found 0|1 BYTES         whether the secret was in the BYTES read
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <unistd.h>

static void caps(const char *who, const char *path)
{
	char line[256], eff[32] = "?", bnd[32] = "?";
	FILE *f = fopen(path, "r");
	if (!f) {
		printf("%s ? ?\n", who);
		return;
	}
	while (fgets(line, sizeof line, f)) {
		sscanf(line, "CapEff: %31s", eff);
		sscanf(line, "CapBnd: %31s", bnd);
	}
	fclose(f);
	printf("%s %s %s\n", who, eff, bnd);
}

int main(int argc, char **argv)
{
	if (argc < 2)
		return 2;
	size_t len = strlen(argv[1]);
	char *secret = malloc(len + 1);
	for (size_t i = 0; i < len; i++)
		secret[i] = argv[1][len - 1 - i];
	secret[len] = 0;

	caps("self", "/proc/self/status");
	caps("init", "/proc/1/status");

	long rc = ptrace(PTRACE_SEIZE, 1, 0, 0);
	printf("seize %ld %d\n", rc, rc == -1 ? errno : 0);

	int mem = open("/proc/1/mem", O_RDONLY);
	printf("mem %d %d\n", mem < 0 ? -1 : 0, mem < 0 ? errno : 0);
	FILE *maps = fopen("/proc/1/maps", "r");
	int found = 0;
	unsigned long long total = 0;
	if (mem >= 0 && maps) {
		size_t chunk = 1 << 20;
		char *buf = malloc(chunk + len);
		char line[512];
		while (!found && fgets(line, sizeof line, maps)) {
			unsigned long long start, end;
			char perms[8];
			if (sscanf(line, "%llx-%llx %7s", &start, &end, perms) != 3 || perms[0] != 'r')
				continue;
			size_t carry = 0;
			for (unsigned long long at = start; at < end && !found;) {
				size_t want = end - at < chunk ? end - at : chunk;
				ssize_t n = pread(mem, buf + carry, want, (off_t)at);
				if (n <= 0)
					break;
				total += n;
				if (memmem(buf, carry + n, secret, len))
					found = 1;
				/* Keep the tail, for a secret across the chunk boundary. */
				size_t keep = carry + n < len - 1 ? carry + n : len - 1;
				memmove(buf, buf + carry + n - keep, keep);
				carry = keep;
				at += n;
			}
		}
	}
	printf("found %d %llu\n", found, total);
	fflush(stdout);
	return 0;
}
