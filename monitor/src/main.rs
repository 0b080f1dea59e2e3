//! The `nestmon` executable: parses the command line and runs it (see
//! `monitor::cli`); its exit statuses are listed in `monitor::exit_status`
//! (and by `nestmon run --help`).

fn main() {
    std::process::exit(monitor::cli::main_with_args(std::env::args_os()));
}
