//! `palisade-oci`: runc's command line on top of Palisade, as containerd's runc shim and
//! podman/conmon call it. See [`cli`] for the commands.

mod cli;

fn main() {
    std::process::exit(cli::main());
}
