//! The `nestmon` executable: parses the command line and runs it (see
//! `monitor::cli`); its exit status is the guest's, or 2 for bad input,
//! 3 for a guest that died, 141 when the console was closed, 1 for a host
//! failure.

fn main() {
    std::process::exit(monitor::cli::main_with_args(std::env::args_os()));
}
