//! The `memprof` command: its command line (cli/) turned into the library's plain options.
#![expect(
    unused_crate_dependencies,
    reason = "the package's dependencies are the library's; the binary uses a few"
)]

mod cli;

use clap::Parser as _;
use memprof::error::Error;

fn main() {
    let cli = cli::Cli::parse();
    cli.init_logging();
    if let Err(err) = cli.run() {
        eprintln!("memprof: error: {err:#}");
        let code = err.downcast_ref::<Error>().map_or(1, Error::exit_code);
        std::process::exit(code);
    }
}
