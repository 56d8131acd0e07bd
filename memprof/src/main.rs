//! The `memprof` command: its command line (cli/) turned into the library's plain options.
#![expect(
    unused_crate_dependencies,
    reason = "the package's dependencies are the library's; the binary uses a few"
)]

mod cli;

use std::{io::Write as _, process::ExitCode};

use memprof::error::Error;

fn main() -> ExitCode {
    let cli = cli::parse();
    cli.init_logging();
    match cli.run() {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            // Not eprintln!, which panics when nobody reads stderr any more.
            let _ = writeln!(std::io::stderr(), "memprof: error: {err:#}");
            ExitCode::from(err.downcast_ref::<Error>().map_or(1, Error::exit_code))
        }
    }
}
