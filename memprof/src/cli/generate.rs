//! `memprof generate`: shell completions and man pages made from clap's own description of
//! this command line, for `cargo xtask completions` and `cargo xtask man`. They are made here
//! because the command line lives in this binary, over the library and its eBPF programs,
//! which xtask (the tool that sets up their build) cannot depend on. The subcommand is added
//! beside [`Cli`]'s, not among them, so that the completions and pages leave it out.
use std::{io::Write as _, path::PathBuf};

use anyhow::Context as _;

use clap::{Args, CommandFactory as _, FromArgMatches as _, ValueEnum as _};
use clap_complete::Shell;

use super::Cli;

#[derive(Debug, Args)]
struct GenerateArgs {
    what: What,
    /// Where to write them (made if missing).
    dir: PathBuf,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum What {
    /// A completion script per shell clap_complete knows (bash, elvish, fish, powershell, zsh).
    Completions,
    /// A man page for memprof and one for each of its subcommands.
    Man,
}

/// Parses memprof's command line; `memprof generate WHAT DIR` is run here, and exits.
pub(crate) fn parse() -> Cli {
    let generate = GenerateArgs::augment_args(clap::Command::new("generate")).hide(true);
    let matches = Cli::command().subcommand(generate).get_matches();
    let Some(generate) = matches.subcommand_matches("generate") else {
        return Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    };
    let args = GenerateArgs::from_arg_matches(generate).unwrap_or_else(|e| e.exit());
    if let Err(e) = args.run() {
        let _ = writeln!(std::io::stderr(), "memprof: error: {e:#}");
        std::process::exit(1);
    }
    std::process::exit(0)
}

impl GenerateArgs {
    fn run(self) -> anyhow::Result<()> {
        let dir = &self.dir;
        let mut cli = Cli::command();
        std::fs::create_dir_all(dir)
            .and_then(|()| match self.what {
                What::Completions => Shell::value_variants().iter().try_for_each(|&shell| {
                    clap_complete::generate_to(shell, &mut cli, "memprof", dir).map(drop)
                }),
                What::Man => clap_mangen::generate_to(cli, dir),
            })
            .with_context(|| format!("writing in {}", dir.display()))
    }
}
