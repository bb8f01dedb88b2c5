//! `palisade-oci`: runc's command line on top of Palisade, as containerd's runc shim and
//! podman/conmon call it. See [`cli`] for the commands.

mod cli;

/// In the static build, dlmalloc (the allocator Rust's standard library uses on WebAssembly)
/// instead of musl's: musl's returns freed memory to the kernel at once, so each call of the
/// runtime mapped and unmapped some fifty small regions, and a `run` took about 7% longer.
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

fn main() {
    std::process::exit(cli::main());
}
