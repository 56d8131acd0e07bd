//! What the bench runs: the storms of the project's workload and the frameless storm of C
//! (`frameless`), the configurations each storm runs under (untraced, memprof, the peers that
//! are installed), and the command of each.

use anyhow::{Context, Result, ensure};
use std::{
    env,
    ffi::OsString,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use super::{frameless, report::group};
use crate::find_in_path;

/// bpftrace counting the workload's page faults by user stack.
const BPFTRACE_PROGRAM: &str =
    "tracepoint:exceptions:page_fault_user /pid == cpid/ { @[ustack] = count(); }";
/// strace -k is hundreds of times slower: it runs on the syscall storm at this scale or less.
const STRACE_STACKS_MAX_SCALE: f64 = 0.1;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Storm {
    Faults,
    Syscalls,
    Mixed,
    /// malloc/free of mapped blocks in C without frame pointers (not the workload's).
    Frameless,
    /// A syscall-bound process memprof does not trace, beside memprof tracing another one,
    /// and beside memprof agent tracing the host (where it makes no memory syscall to see).
    Host,
}

impl Storm {
    pub(super) const ALL: [Storm; 5] = [
        Storm::Faults,
        Storm::Syscalls,
        Storm::Mixed,
        Storm::Frameless,
        Storm::Host,
    ];

    pub(super) fn name(self) -> &'static str {
        match self {
            Storm::Faults => "faults",
            Storm::Syscalls => "syscalls",
            Storm::Mixed => "mixed",
            Storm::Frameless => "frameless",
            Storm::Host => "host",
        }
    }

    pub(super) fn describe(self, scale: f64) -> String {
        let touched = (1024.0 * scale).round();
        let rounds = |full: f64| group(((full * scale) as u64).max(1));
        match self {
            Storm::Faults => format!(
                "reserve 4 GiB, touch {touched} MiB page by page, 4 rounds (MADV_DONTNEED between)"
            ),
            Storm::Syscalls => format!(
                "{} rounds of mmap 64 KiB, touch one page, munmap",
                rounds(200_000.0)
            ),
            Storm::Mixed => format!(
                "one round of the fault storm ({touched} MiB), then {} rounds of the syscall storm",
                rounds(50_000.0)
            ),
            Storm::Frameless => format!(
                "{} rounds of malloc 256 KiB (a mmap), touch one page, free (a munmap), \
                 in C without frame pointers",
                group(frameless::rounds(scale))
            ),
            Storm::Host => format!(
                "{} rounds of a 1-byte read of /dev/zero and write to /dev/null (dd bs=1), \
                 alone, beside memprof tracing another (idle) process, and beside memprof agent \
                 tracing the host",
                rounds(1_500_000.0)
            ),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Config {
    Untraced,
    Memprof,
    MemprofFaultStacks,
    Bpftrace,
    Perf,
    Strace,
    StraceStacks,
    /// memprof agent tracing the host, beside the host storm.
    Agent,
    /// The storm not traced, beside memprof tracing an idle process: what memprof's hooks
    /// alone cost it (the kernel's tracepoint machinery, the programs returning at once),
    /// the floor under what tracing it costs.
    Hooks,
    /// memprof with its programs empty (`run --empty-programs`), tracing the storm (beside
    /// the host storm): what the kernel's calling them costs, the floor under any program on
    /// those hooks, measured in the same rounds.
    Empty,
}

impl Config {
    const ALL: [Config; 10] = [
        Config::Untraced,
        Config::Memprof,
        Config::MemprofFaultStacks,
        Config::Hooks,
        Config::Empty,
        Config::Bpftrace,
        Config::Perf,
        Config::Strace,
        Config::StraceStacks,
        Config::Agent,
    ];

    pub(super) fn name(self) -> &'static str {
        match self {
            Config::Untraced => "untraced",
            Config::Memprof => "memprof",
            Config::MemprofFaultStacks => "memprof --fault-stacks",
            Config::Bpftrace => "bpftrace (faults by ustack)",
            Config::Perf => "perf record -e page-faults -c 1 -g",
            Config::Strace => "strace -f -e trace=mmap,munmap,brk",
            Config::StraceStacks => "strace -f -k -e trace=mmap,munmap,brk",
            Config::Agent => "memprof agent",
            Config::Hooks => "memprof's hooks alone (storm not traced)",
            Config::Empty => "memprof, its programs empty",
        }
    }

    /// The peer's program, which must be on PATH.
    pub(super) fn peer(self) -> Option<&'static str> {
        match self {
            Config::Untraced
            | Config::Memprof
            | Config::MemprofFaultStacks
            | Config::Agent
            | Config::Hooks
            | Config::Empty => None,
            Config::Bpftrace => Some("bpftrace"),
            Config::Perf => Some("perf"),
            Config::Strace | Config::StraceStacks => Some("strace"),
        }
    }

    /// memprof itself (not a peer, not untraced).
    pub(super) fn is_memprof(self) -> bool {
        matches!(
            self,
            Config::Memprof
                | Config::MemprofFaultStacks
                | Config::Agent
                | Config::Hooks
                | Config::Empty
        )
    }

    /// Whether this configuration runs on `storm` at `scale`: all do, but strace -k, which
    /// runs only on the syscall storm at a small scale, and on the host storm, where only
    /// memprof's cost to what it does not trace is measured, untraced, memprof and the agent
    /// (which runs on the host storm only); memprof's hooks alone run beside the fault and
    /// syscall storms, and memprof with its programs empty on those and the host storm.
    pub(super) fn runs_on(self, storm: Storm, scale: f64) -> bool {
        match (self, storm) {
            (Config::Untraced | Config::Memprof | Config::Agent | Config::Empty, Storm::Host) => {
                true
            }
            (Config::Hooks | Config::Empty, Storm::Faults | Storm::Syscalls) => true,
            (_, Storm::Host) | (Config::Agent | Config::Hooks | Config::Empty, _) => false,
            (Config::StraceStacks, _) => {
                storm == Storm::Syscalls && scale <= STRACE_STACKS_MAX_SCALE
            }
            _ => true,
        }
    }
}

/// The configurations that run (those whose peer is installed), and a note for each that
/// does not, in the order of the tables.
pub(super) fn configurations(storms: &[Storm], scale: f64) -> (Vec<Config>, Vec<String>) {
    let mut configs = Vec::new();
    let mut notes = Vec::new();
    if storms.is_empty() {
        // Only servers: no configuration to skip.
        return (configs, notes);
    }
    for config in Config::ALL {
        match config.peer() {
            Some(program) if find_in_path(program).is_none() => {
                let note = format!("skipped: {program} not installed");
                if !notes.contains(&note) {
                    eprintln!("xtask: {note}");
                    notes.push(note);
                }
            }
            _ => configs.push(config),
        }
    }
    if configs.contains(&Config::StraceStacks)
        && !storms
            .iter()
            .any(|&storm| Config::StraceStacks.runs_on(storm, scale))
    {
        notes.push(format!(
            "skipped: strace -k (hundreds of times slower) runs only on the syscall storm \
             at --scale {STRACE_STACKS_MAX_SCALE} or less"
        ));
    }
    (configs, notes)
}

/// The programs that runs spawn, and the directory where they leave their files.
pub(super) struct Commands {
    memprof: PathBuf,
    workload: PathBuf,
    /// The frameless storm's program, built in `dir` when that storm runs.
    frameless: Option<PathBuf>,
    /// Holds one run's perf.data or memprof's report.json at a time.
    dir: PathBuf,
    scale: f64,
}

impl Commands {
    /// memprof and the workload from a release build in `target`, a new scratch directory,
    /// and the frameless storm's program built there when `storms` has it.
    pub(super) fn new(target: &Path, scale: f64, storms: &[Storm]) -> Result<Self> {
        let memprof = target.join("release/memprof");
        let workload = target.join("release/memprof-workload");
        for binary in [&memprof, &workload] {
            ensure!(binary.is_file(), "{} is missing", binary.display());
        }
        let dir = env::temp_dir().join(format!("memprof-bench-{}", std::process::id()));
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let frameless = if storms.contains(&Storm::Frameless) {
            let built = frameless::build(&dir);
            if built.is_err() {
                fs::remove_dir_all(&dir).ok();
            }
            Some(built.context("building the frameless storm")?)
        } else {
            None
        };
        Ok(Self {
            memprof,
            workload,
            frameless,
            dir,
            scale,
        })
    }

    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    /// memprof's release build.
    pub(super) fn memprof(&self) -> &Path {
        &self.memprof
    }

    /// Where memprof writes its JSON report.
    pub(super) fn report_json(&self) -> PathBuf {
        self.dir.join("report.json")
    }

    /// Where perf record writes its samples.
    pub(super) fn perf_data(&self) -> PathBuf {
        self.dir.join("perf.data")
    }

    /// The storm's command line: the workload's, or the frameless program's.
    fn workload_args(&self, storm: Storm) -> Vec<OsString> {
        if storm == Storm::Frameless {
            let program = self
                .frameless
                .as_ref()
                .expect("the frameless storm's program is built when that storm runs");
            return vec![
                program.clone().into(),
                frameless::rounds(self.scale).to_string().into(),
            ];
        }
        vec![
            self.workload.clone().into(),
            "--storm".into(),
            storm.name().into(),
            "--scale".into(),
            self.scale.to_string().into(),
        ]
    }

    /// memprof tracing the process `pid` until interrupted: the host storm runs beside it.
    pub(super) fn memprof_beside(&self, pid: u32, config: Config) -> Command {
        let mut cmd = self.memprof_run(config);
        cmd.arg("--pid").arg(pid.to_string());
        cmd
    }

    /// `memprof run` writing its JSON report, as `config` runs it.
    fn memprof_run(&self, config: Config) -> Command {
        let mut cmd = Command::new(&self.memprof);
        cmd.arg("run").arg("--json").arg(self.report_json());
        match config {
            Config::MemprofFaultStacks => cmd.arg("--fault-stacks"),
            Config::Empty => cmd.arg("--empty-programs"),
            _ => &mut cmd,
        };
        cmd
    }

    /// memprof agent, tracing the host until interrupted, serving on `port` of loopback (the
    /// default port may be taken).
    pub(super) fn agent(&self, port: u16) -> Command {
        let mut cmd = Command::new(&self.memprof);
        cmd.arg("agent")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"));
        cmd
    }

    /// The command that runs `storm` under `config` (but memprof on the host storm, which is
    /// [`Commands::memprof_beside`], and the agent, [`Commands::agent`]); its standard
    /// streams are the caller's to set.
    pub(super) fn command(&self, storm: Storm, config: Config) -> Command {
        let workload = self.workload_args(storm);
        let mut cmd;
        match config {
            Config::Untraced => {
                cmd = Command::new(&workload[0]);
                cmd.args(&workload[1..]);
            }
            Config::Agent | Config::Hooks => {
                unreachable!("{} runs only beside the storm", config.name())
            }
            Config::Memprof | Config::MemprofFaultStacks | Config::Empty => {
                cmd = self.memprof_run(config);
                cmd.arg("--").args(&workload);
            }
            Config::Bpftrace => {
                let words: Vec<_> = workload.iter().map(|w| w.to_string_lossy()).collect();
                cmd = Command::new("bpftrace");
                cmd.args(["-e", BPFTRACE_PROGRAM, "-c"])
                    .arg(words.join(" "));
            }
            Config::Perf => {
                cmd = Command::new("perf");
                cmd.args(["record", "-e", "page-faults", "-c", "1", "-g", "-o"])
                    .arg(self.perf_data())
                    .arg("--")
                    .args(&workload);
            }
            Config::Strace | Config::StraceStacks => {
                cmd = Command::new("strace");
                cmd.arg("-f");
                if config == Config::StraceStacks {
                    cmd.arg("-k");
                }
                cmd.args(["-e", "trace=mmap,munmap,brk", "-o", "/dev/null"])
                    .args(&workload);
            }
        }
        cmd
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::show;

    #[test]
    fn storms_described_as_the_readme_shows_them() {
        let cases = [
            (
                Storm::Faults,
                1.0,
                "reserve 4 GiB, touch 1024 MiB page by page, 4 rounds (MADV_DONTNEED between)",
            ),
            (
                Storm::Syscalls,
                1.0,
                "200,000 rounds of mmap 64 KiB, touch one page, munmap",
            ),
            (
                Storm::Mixed,
                1.0,
                "one round of the fault storm (1024 MiB), then 50,000 rounds of the syscall storm",
            ),
            (
                Storm::Mixed,
                0.25,
                "one round of the fault storm (256 MiB), then 12,500 rounds of the syscall storm",
            ),
            // At least one round, however small the scale.
            (
                Storm::Syscalls,
                0.000_001,
                "1 rounds of mmap 64 KiB, touch one page, munmap",
            ),
            (
                Storm::Frameless,
                1.0,
                "100,000 rounds of malloc 256 KiB (a mmap), touch one page, free (a munmap), \
                 in C without frame pointers",
            ),
            (
                Storm::Frameless,
                0.25,
                "25,000 rounds of malloc 256 KiB (a mmap), touch one page, free (a munmap), \
                 in C without frame pointers",
            ),
            (
                Storm::Host,
                1.0,
                "1,500,000 rounds of a 1-byte read of /dev/zero and write to /dev/null \
                 (dd bs=1), alone, beside memprof tracing another (idle) process, and beside \
                 memprof agent tracing the host",
            ),
        ];
        for (storm, scale, description) in cases {
            assert_eq!(
                storm.describe(scale),
                description,
                "{} at {scale}",
                storm.name()
            );
        }
    }

    #[test]
    fn strace_stacks_runs_only_on_small_syscall_storms_and_the_host_storm_untraced_or_beside_memprof()
     {
        assert!(Config::StraceStacks.runs_on(Storm::Syscalls, 0.1));
        assert!(!Config::StraceStacks.runs_on(Storm::Syscalls, 0.25));
        assert!(!Config::StraceStacks.runs_on(Storm::Faults, 0.1));
        assert!(Config::Strace.runs_on(Storm::Faults, 4.0));
        assert!(Config::Memprof.runs_on(Storm::Mixed, 1.0));
        assert!(Config::Untraced.runs_on(Storm::Host, 1.0));
        assert!(Config::Memprof.runs_on(Storm::Host, 1.0));
        assert!(!Config::MemprofFaultStacks.runs_on(Storm::Host, 1.0));
        assert!(!Config::Perf.runs_on(Storm::Host, 1.0));
        assert!(Config::Agent.runs_on(Storm::Host, 1.0));
        assert!(!Config::Agent.runs_on(Storm::Faults, 1.0));
        assert!(Config::Hooks.runs_on(Storm::Syscalls, 1.0));
        assert!(!Config::Hooks.runs_on(Storm::Host, 1.0));
        assert!(Config::Empty.runs_on(Storm::Host, 1.0));
        assert!(Config::Empty.runs_on(Storm::Faults, 1.0));
        assert!(!Config::Empty.runs_on(Storm::Mixed, 1.0));
    }

    #[test]
    fn commands() {
        let commands = Commands {
            memprof: "/t/memprof".into(),
            workload: "/t/memprof-workload".into(),
            frameless: Some("/d/frameless".into()),
            dir: "/d".into(),
            scale: 0.25,
        };
        let show = |config| show(&commands.command(Storm::Mixed, config));
        let workload = "/t/memprof-workload --storm mixed --scale 0.25";
        let cases = [
            (Config::Untraced, workload.to_string()),
            (
                Config::MemprofFaultStacks,
                format!("/t/memprof run --json /d/report.json --fault-stacks -- {workload}"),
            ),
            (
                Config::Bpftrace,
                format!("bpftrace -e {BPFTRACE_PROGRAM} -c {workload}"),
            ),
            (
                Config::Perf,
                format!("perf record -e page-faults -c 1 -g -o /d/perf.data -- {workload}"),
            ),
            (
                Config::StraceStacks,
                format!("strace -f -k -e trace=mmap,munmap,brk -o /dev/null {workload}"),
            ),
        ];
        for (config, words) in cases {
            assert_eq!(show(config), format!("`{words}`"));
        }
        // The frameless storm is its own program, given its rounds.
        assert_eq!(
            crate::show(&commands.command(Storm::Frameless, Config::Memprof)),
            "`/t/memprof run --json /d/report.json -- /d/frameless 25000`"
        );
        assert_eq!(
            crate::show(&commands.memprof_beside(42, Config::Memprof)),
            "`/t/memprof run --json /d/report.json --pid 42`"
        );
        assert_eq!(
            crate::show(&commands.memprof_beside(42, Config::Empty)),
            "`/t/memprof run --json /d/report.json --empty-programs --pid 42`"
        );
        assert_eq!(
            crate::show(&commands.agent(6060)),
            "`/t/memprof agent --listen 127.0.0.1:6060`"
        );
        assert_eq!(
            crate::show(&commands.command(Storm::Host, Config::Untraced)),
            "`/t/memprof-workload --storm host --scale 0.25`"
        );
    }
}
