//! `cargo xtask bench`: memprof's overhead on the project's own storms, against an untraced
//! run and against the tools people use for the same question.
//!
//! Every storm runs under every configuration `runs` times, interleaved: run i runs each
//! configuration once, in an order rotated by i (and reversed when i is odd), so that drifts
//! of the machine (frequency, host noise, page cache) spread over all configurations alike.
//! The time compared is the one the workload measures around the storm itself
//! (CLOCK_MONOTONIC), so that start-up and a tracer's attach time are not in it. The slowdown
//! is the median over runs of traced_i / untraced_i, each pair from the same run i. Where
//! memprof's ratios spread widely, a storm runs further rounds (see [`more_runs`]).
//!
//! This file holds the entry point, the options and the run order; `storm` says what runs and
//! how, `measure` runs one configuration and reads its figures, `report` prints them.

mod frameless;
mod measure;
mod report;
mod server;
mod soak;
mod storm;

use anyhow::{Context, Result, bail, ensure};
use std::{
    env,
    ffi::OsString,
    fs,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::Command,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use self::{
    measure::{Run, run_once},
    report::{Report, iqr, machine_line, ratios},
    server::Server,
    storm::{Commands, Config, Storm, configurations},
};
use crate::{run, setup, show, stdout, workspace_root};

const USAGE: &str = "\
Usage: cargo xtask bench [--quick] [--runs N] [--scale F] [--storm NAME]... [--json PATH]
                         [--readme]
       cargo xtask bench --soak MINUTES

Runs setup, builds memprof (release), then each storm (faults, syscalls, mixed of the
project's workload; frameless, a C program without frame pointers that the bench builds
with gcc) untraced, under memprof, under memprof --fault-stacks, and under the peers that
are installed (bpftrace, perf record, strace, strace -k), N times interleaved; and the host
storm, a syscall-bound process memprof does not trace, alone, beside memprof tracing
another process and beside memprof agent; then two servers, untraced and launched under
memprof (throughput and p99 latency ratios): redis, Debian's redis-server under
redis-benchmark, and gin, the gin hello world (Go) under wrk. The floors: the fault and
syscall storms beside memprof tracing another process (its hooks alone), and these under
memprof with its programs empty (what the kernel's calling them costs; the host storm
beside it).
Where the interquartile range of memprof's paired ratios is wider than 0.10 after N rounds,
further rounds run, up to 3N. Prints a markdown table per storm and memprof's budgets with
PASS or OVER, each ratio's beside its floor.

  --quick        Scale the storms by 0.25
  --runs N       Runs of each configuration (default 5)
  --scale F      Scale the storms' sizes and round counts by F (default 1, in (0, 4])
  --storm NAME   Only this storm (repeatable): faults, syscalls, mixed, frameless, host,
                 redis or gin
  --json PATH    Also write every run's raw figures to PATH
  --readme       Also write what it prints into README.md, between its bench markers
  --soak MINUTES Instead, run memprof agent for MINUTES against process churn and a
                 memory storm, printing its RSS and CPU over time and its budget
                 (at most 150 MB, flat)
";

#[derive(Debug, PartialEq)]
struct Options {
    scale: f64,
    runs: usize,
    storms: Vec<Storm>,
    /// The real-server benches.
    servers: Vec<Server>,
    json: Option<PathBuf>,
    /// Write the figures into README.md.
    readme: bool,
    /// Minutes of the agent's soak, which runs instead of the storms.
    soak: Option<f64>,
    /// Internal: already set up and built, binaries in this target directory (the re-run
    /// through sudo).
    prebuilt: Option<PathBuf>,
}

fn parse(args: &[OsString]) -> Result<Options> {
    let mut options = Options {
        scale: 1.0,
        runs: 5,
        storms: Vec::new(),
        servers: Vec::new(),
        json: None,
        readme: false,
        soak: None,
        prebuilt: None,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let arg = arg.to_str().context("arguments must be UTF-8")?;
        let mut value = || {
            args.next()
                .and_then(|v| v.to_str())
                .with_context(|| format!("{arg} needs a value\n\n{USAGE}"))
        };
        match arg {
            "--quick" => options.scale = 0.25,
            "--runs" => {
                let v = value()?;
                options.runs = v.parse().with_context(|| format!("--runs {v}"))?;
                ensure!(options.runs > 0, "--runs must be at least 1");
            }
            "--scale" => {
                let v = value()?;
                options.scale = v.parse().with_context(|| format!("--scale {v}"))?;
                ensure!(
                    options.scale > 0.0 && options.scale <= 4.0,
                    "--scale {v}: not in (0, 4]"
                );
            }
            "--storm" => {
                let v = value()?;
                if let Some(server) = Server::ALL.into_iter().find(|s| s.name() == v) {
                    if !options.servers.contains(&server) {
                        options.servers.push(server);
                    }
                    continue;
                }
                let storm = Storm::ALL
                    .into_iter()
                    .find(|s| s.name() == v)
                    .with_context(|| {
                        format!(
                            "--storm {v}: not faults, syscalls, mixed, frameless, host, redis \
                             or gin"
                        )
                    })?;
                if !options.storms.contains(&storm) {
                    options.storms.push(storm);
                }
            }
            "--json" => options.json = Some(PathBuf::from(value()?)),
            "--readme" => options.readme = true,
            "--soak" => {
                let v = value()?;
                let minutes: f64 = v.parse().with_context(|| format!("--soak {v}"))?;
                ensure!(
                    minutes > 0.0 && minutes <= 7.0 * 24.0 * 60.0,
                    "--soak {v}: give minutes, more than 0 and at most a week"
                );
                options.soak = Some(minutes);
            }
            "--prebuilt" => options.prebuilt = Some(PathBuf::from(value()?)),
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            _ => bail!("unknown bench argument `{arg}`\n\n{USAGE}"),
        }
    }
    if options.soak.is_some() {
        ensure!(
            options.storms.is_empty()
                && options.servers.is_empty()
                && options.json.is_none()
                && !options.readme,
            "--soak runs alone: no --storm, --json or --readme with it"
        );
        return Ok(options);
    }
    // The README's figures are the full bench's, which its prose quotes.
    ensure!(
        !options.readme
            || (options.storms.is_empty() && options.servers.is_empty() && options.scale == 1.0),
        "--readme writes the full bench's figures: no --storm, --scale or --quick with it"
    );
    if options.storms.is_empty() && options.servers.is_empty() {
        options.storms = Storm::ALL.to_vec();
        options.servers = Server::ALL.to_vec();
    }
    Ok(options)
}

pub(crate) fn bench(args: &[OsString]) -> Result<()> {
    let options = parse(args)?;
    let target = match &options.prebuilt {
        Some(target) => target.clone(),
        None => {
            let setup = setup()?;
            let build = ["build", "--release", "--package", "memprof", "--bins"];
            run(setup.cargo().args(build))?;
            // The build ran in the workspace root, so a relative CARGO_TARGET_DIR is
            // relative to it.
            let target = env::var_os("CARGO_TARGET_DIR").unwrap_or_else(|| "target".into());
            let target = workspace_root().join(target);
            if !setup.root {
                // memprof runs as root, and the bench follows it with ptrace (for its own CPU
                // time and peak RSS): the whole bench runs as root.
                eprintln!("xtask: bench runs as root: re-running through sudo");
                let exe = env::current_exe().context("cannot locate xtask's executable")?;
                let mut sudo = Command::new("sudo");
                sudo.arg(exe)
                    .arg("bench")
                    .args(args)
                    .arg("--prebuilt")
                    .arg(&target);
                sudo.env_remove("CARGO_TARGET_DIR");
                return Err(sudo.exec()).with_context(|| format!("cannot run {}", show(&sudo)));
            }
            target
        }
    };
    if let Some(minutes) = options.soak {
        return soak::run(&target, minutes);
    }
    Bench::new(options, &target)?.run()
}

/// Rounds beyond `--runs N` run while memprof's ratios spread, up to this many times N.
const RUNS_CAP_FACTOR: usize = 3;
/// The interquartile range of a memprof configuration's paired ratios above which a storm
/// (or server) runs another round: wider, and the median moves with single runs.
const IQR_MAX: f64 = 0.10;

/// Whether a storm (or server) that has run `done` rounds of the `runs` asked runs another:
/// until it has `runs`, then while the paired ratios of any memprof configuration (`ratios`,
/// one list each) have an interquartile range wider than [`IQR_MAX`], up to
/// [`RUNS_CAP_FACTOR`] × `runs`.
fn more_runs(ratios: &[Vec<f64>], done: usize, runs: usize) -> bool {
    done < runs
        || (done < runs * RUNS_CAP_FACTOR
            && ratios.iter().any(|r| iqr(r).is_some_and(|q| q > IQR_MAX)))
}

/// "2/5" for the progress lines; a round beyond them says why it runs.
fn round(index: usize, runs: usize) -> String {
    let extra = if index < runs { "" } else { " (ratios spread)" };
    format!("{}/{runs}{extra}", index + 1)
}

/// The README's figures, between these markers, are what `--readme` rewrites.
const README_START: &str = "<!-- bench:start -->";
const README_END: &str = "<!-- bench:end -->";

/// `readme` with what lies between its bench markers replaced by `figures`.
fn splice_readme(readme: &str, figures: &str) -> Result<String> {
    let (before, rest) = readme
        .split_once(README_START)
        .with_context(|| format!("README.md has no `{README_START}`"))?;
    let (between, after) = rest
        .split_once(README_END)
        .with_context(|| format!("README.md has no `{README_END}` after `{README_START}`"))?;
    ensure!(
        !between.contains(README_START)
            && !after.contains(README_START)
            && !before.contains(README_END),
        "README.md has more than one pair of bench markers"
    );
    let figures = figures.trim_end();
    Ok(format!(
        "{before}{README_START}\n\n{figures}\n\n{README_END}{after}"
    ))
}

/// The order of run `index`: every configuration once, rotated by `index`, and reversed when
/// `index` is odd so that a configuration does not always follow the same one.
fn run_order(configs: &[Config], index: usize) -> Vec<Config> {
    let n = configs.len();
    let mut order: Vec<Config> = (0..n).map(|j| configs[(j + index) % n]).collect();
    if index % 2 == 1 {
        order.reverse();
    }
    order
}

struct Bench {
    options: Options,
    commands: Commands,
    /// The configurations that run, in the order of the tables' rows.
    configs: Vec<Config>,
    /// Configurations skipped or dropped, and why.
    notes: Vec<String>,
    runs: Vec<Run>,
}

impl Bench {
    fn new(options: Options, target: &Path) -> Result<Self> {
        let commands = Commands::new(target, options.scale, &options.storms)?;
        let (configs, notes) = configurations(&options.storms, options.scale);
        Ok(Self {
            options,
            commands,
            configs,
            notes,
            runs: Vec::new(),
        })
    }

    fn run(mut self) -> Result<()> {
        // Named now, as it was built: the tree may change while the bench runs.
        let machine = machine_line();
        let result = self.run_all().and_then(|()| self.run_servers());
        fs::remove_dir_all(self.commands.dir()).ok();
        let servers = result?;
        let report = Report {
            scale: self.options.scale,
            runs_per_configuration: self.options.runs,
            storms: &self.options.storms,
            configs: &self.configs,
            notes: &self.notes,
            runs: &self.runs,
        };
        let mut text = if self.options.storms.is_empty() {
            let mut text = format!("memprof overhead on a server: {machine}\n");
            for note in &self.notes {
                text.push_str(&format!("- {note}\n"));
            }
            text
        } else {
            report.text(&machine)
        };
        for (server, runs) in &servers {
            text.push_str(&format!("\n{}", server::text(*server, runs)));
        }
        print!("{text}");
        if self.options.readme {
            let path = workspace_root().join("README.md");
            let readme =
                fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            let date = stdout(Command::new("date").args(["-u", "+%Y-%m-%d"]))?;
            let figures = format!("Latest figures ({}):\n\n{text}", date.trim());
            fs::write(&path, splice_readme(&readme, &figures)?)
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!("xtask: wrote the figures into {}", path.display());
        }
        if let Some(path) = &self.options.json {
            let unix_time = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let json = serde_json::to_string_pretty(&report.json(&machine, unix_time))?;
            fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
            eprintln!("xtask: wrote {}", path.display());
        }
        Ok(())
    }

    /// Each server's runs; a note for each that cannot run here.
    fn run_servers(&mut self) -> Result<Vec<(Server, Vec<server::ServerRun>)>> {
        let mut servers = Vec::new();
        for &server in &self.options.servers {
            if let Some(note) = server.missing() {
                eprintln!("xtask: {note}");
                self.notes.push(note);
                continue;
            }
            // Said, not fatal: the storms' figures, measured already, are still printed.
            match server::run(
                server,
                self.commands.memprof(),
                self.commands.dir(),
                self.options.runs,
            ) {
                Ok(runs) => servers.push((server, runs)),
                Err(e) => {
                    let note = format!("FAILED: {}: {e:#}", server.name());
                    eprintln!("xtask: {note}");
                    self.notes.push(note);
                }
            }
        }
        Ok(servers)
    }

    fn run_all(&mut self) -> Result<()> {
        let started = Instant::now();
        let scale = self.options.scale;
        for storm in self.options.storms.clone() {
            let mut configs: Vec<Config> = self
                .configs
                .iter()
                .copied()
                .filter(|&c| c.runs_on(storm, scale))
                .collect();
            // One untraced run first, not counted: it warms the page cache and the allocator.
            run_once(&self.commands, storm, Config::Untraced, 0)
                .with_context(|| format!("{} storm, warm-up run", storm.name()))?;
            let mut index = 0;
            loop {
                let spread: Vec<Vec<f64>> = configs
                    .iter()
                    .filter(|c| c.is_memprof())
                    .map(|&c| ratios(&self.runs, storm, c))
                    .collect();
                if !more_runs(&spread, index, self.options.runs) {
                    break;
                }
                for config in run_order(&configs, index) {
                    match run_once(&self.commands, storm, config, index) {
                        Ok(run) => {
                            eprintln!(
                                "xtask: bench {} {}: {:<40} {:>9.3} s{}",
                                storm.name(),
                                round(index, self.options.runs),
                                config.name(),
                                run.elapsed_ns as f64 / 1e9,
                                run.memprof.as_ref().map_or(String::new(), |m| m.stacks())
                            );
                            self.runs.push(run);
                        }
                        // A peer that fails is left out; memprof or the workload failing is
                        // what the bench is there to find.
                        Err(e) if config.peer().is_some() => {
                            let note = format!(
                                "dropped: {} on the {} storm failed: {e:#}",
                                config.name(),
                                storm.name()
                            );
                            eprintln!("xtask: {note}");
                            self.notes.push(note);
                            configs.retain(|&c| c != config);
                            self.runs
                                .retain(|r| !(r.storm == storm && r.config == config));
                        }
                        Err(e) => {
                            return Err(e.context(format!(
                                "{} storm, run {}, {}",
                                storm.name(),
                                index + 1,
                                config.name()
                            )));
                        }
                    }
                }
                index += 1;
            }
        }
        if !self.options.storms.is_empty() {
            eprintln!("xtask: bench took {:.0} s", started.elapsed().as_secs_f64());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_words(words: &[&str]) -> Result<Options> {
        let args: Vec<OsString> = words.iter().map(OsString::from).collect();
        parse(&args)
    }

    #[test]
    fn defaults() {
        let options = parse_words(&[]).unwrap();
        assert_eq!(
            options,
            Options {
                scale: 1.0,
                runs: 5,
                storms: Storm::ALL.to_vec(),
                servers: Server::ALL.to_vec(),
                json: None,
                readme: false,
                soak: None,
                prebuilt: None,
            }
        );
    }

    #[test]
    fn options() {
        let options = parse_words(&[
            "--quick",
            "--runs",
            "1",
            "--storm",
            "mixed",
            "--storm",
            "frameless",
            "--storm",
            "faults",
            "--storm",
            "mixed",
            "--json",
            "out.json",
        ])
        .unwrap();
        assert_eq!(options.scale, 0.25);
        assert_eq!(options.runs, 1);
        // In the order given, each once.
        assert_eq!(
            options.storms,
            [Storm::Mixed, Storm::Frameless, Storm::Faults]
        );
        assert_eq!(options.json, Some(PathBuf::from("out.json")));
        assert!(!options.readme);
        assert!(options.servers.is_empty());
        assert!(parse_words(&["--readme", "--runs", "7"]).unwrap().readme);
        // The last of --quick and --scale wins.
        assert_eq!(
            parse_words(&["--quick", "--scale", "4"]).unwrap().scale,
            4.0
        );
        assert_eq!(
            parse_words(&["--scale", "0.1", "--quick"]).unwrap().scale,
            0.25
        );
        let prebuilt = parse_words(&["--prebuilt", "/t"]).unwrap().prebuilt;
        assert_eq!(prebuilt, Some(PathBuf::from("/t")));
    }

    #[test]
    fn bad_options() {
        let error = |words: &[&str]| format!("{:#}", parse_words(words).unwrap_err());
        assert!(error(&["--runs", "0"]).contains("at least 1"));
        assert!(error(&["--runs", "x"]).contains("--runs x"));
        assert!(error(&["--scale", "0"]).contains("not in (0, 4]"));
        assert!(error(&["--scale", "4.5"]).contains("not in (0, 4]"));
        assert!(
            error(&["--storm", "brk"])
                .contains("not faults, syscalls, mixed, frameless, host, redis or gin")
        );
        // A server alone runs no storm.
        let gin = parse_words(&["--storm", "gin", "--storm", "redis", "--storm", "gin"]).unwrap();
        assert!(gin.storms.is_empty());
        assert_eq!(gin.servers, [Server::Gin, Server::Redis]);
        assert!(error(&["--json"]).starts_with("--json needs a value"));
        assert!(error(&["--fast"]).starts_with("unknown bench argument `--fast`"));
        assert!(error(&["--soak", "0"]).contains("more than 0"));
        assert!(error(&["--soak", "x"]).contains("--soak x"));
        assert!(error(&["--soak", "1", "--storm", "faults"]).contains("--soak runs alone"));
        assert!(error(&["--soak", "1", "--readme"]).contains("--soak runs alone"));
        for partial in [&["--quick"][..], &["--storm", "gin"], &["--scale", "2"]] {
            let words = [&["--readme"][..], partial].concat();
            assert!(error(&words).contains("--readme writes the full bench's figures"));
        }
        let soak = parse_words(&["--soak", "1.5"]).unwrap();
        assert_eq!(soak.soak, Some(1.5));
        assert!(soak.storms.is_empty() && soak.servers.is_empty());
    }

    #[test]
    fn more_runs_while_the_ratios_spread_up_to_three_times_the_runs() {
        let steady = || vec![1.10, 1.12, 1.11, 1.13, 1.09];
        let wide = || vec![1.0, 1.3, 1.1, 1.4, 1.05];
        // The runs asked for run whatever the spread, and no more when it is narrow.
        assert!(more_runs(&[], 0, 5));
        assert!(more_runs(&[steady()], 4, 5));
        assert!(!more_runs(&[steady()], 5, 5));
        // Any configuration's wide spread asks for more, up to 3 × 5.
        assert!(more_runs(&[steady(), wide()], 5, 5));
        assert!(more_runs(&[wide()], 14, 5));
        assert!(!more_runs(&[wide()], 15, 5));
        // The quartiles here are the second and fourth values.
        assert!(!more_runs(&[vec![1.0, 1.0, 1.05, 1.09, 1.09]], 5, 5));
        assert!(more_runs(&[vec![1.0, 1.0, 1.05, 1.11, 1.11]], 5, 5));
        // A single run has no spread.
        assert!(!more_runs(&[vec![1.5]], 1, 1));
        assert!(!more_runs(&[vec![]], 1, 1));
    }

    #[test]
    fn rounds_beyond_the_runs_asked_say_why() {
        assert_eq!(round(0, 5), "1/5");
        assert_eq!(round(5, 5), "6/5 (ratios spread)");
    }

    #[test]
    fn readme_figures_spliced_between_the_markers() {
        let readme = "# memprof\n\n## Overhead\n\nprose\n\n<!-- bench:start -->\n\nold \
                      figures\n\n<!-- bench:end -->\n\nmore prose\n";
        let spliced = splice_readme(readme, "new figures\n| a | b |\n").unwrap();
        assert_eq!(
            spliced,
            "# memprof\n\n## Overhead\n\nprose\n\n<!-- bench:start -->\n\nnew figures\n\
             | a | b |\n\n<!-- bench:end -->\n\nmore prose\n"
        );
        // Splicing again gives the same README.
        assert_eq!(
            splice_readme(&spliced, "new figures\n| a | b |").unwrap(),
            spliced
        );
        let error = |readme: &str| format!("{:#}", splice_readme(readme, "x").unwrap_err());
        assert!(error("no markers").contains("no `<!-- bench:start -->`"));
        assert!(
            error("<!-- bench:end --> <!-- bench:start -->").contains("no `<!-- bench:end -->`")
        );
        assert!(
            error("<!-- bench:start --><!-- bench:end --><!-- bench:start --><!-- bench:end -->")
                .contains("more than one pair")
        );
        assert!(
            error("<!-- bench:start --><!-- bench:start --><!-- bench:end -->")
                .contains("more than one pair")
        );
    }

    #[test]
    fn run_order_rotates_and_reverses_every_other_run() {
        use Config::{Memprof as M, Perf as P, Untraced as U};
        let configs = [U, M, P];
        assert_eq!(run_order(&configs, 0), [U, M, P]);
        assert_eq!(run_order(&configs, 1), [U, P, M]);
        assert_eq!(run_order(&configs, 2), [P, U, M]);
        assert_eq!(run_order(&configs, 3), [P, M, U]);
        assert_eq!(run_order(&configs, 4), [M, P, U]);
        assert_eq!(run_order(&[], 1), []);
    }
}
