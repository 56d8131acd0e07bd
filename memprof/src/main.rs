use clap::Parser as _;
use memprof::{
    cli::{Cli, Command},
    error::Error,
};

fn main() {
    env_logger::init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => memprof::run::run(args),
        Command::Top(args) => memprof::top::run(args),
    };
    if let Err(err) = result {
        eprintln!("memprof: error: {err:#}");
        let code = err.downcast_ref::<Error>().map_or(1, Error::exit_code);
        std::process::exit(code);
    }
}
