//! Developer tasks that cargo cannot do alone: installing the eBPF toolchain and test tools,
//! running tests and memprof as root, and measuring memprof's overhead (`bench`).

mod bench;

use anyhow::{Context, Result, bail, ensure};
use std::{
    env,
    ffi::OsString,
    iter,
    os::unix::process::{CommandExt, ExitStatusExt},
    path::{Path, PathBuf},
    process::{Command, ExitStatus, exit},
};

const USAGE: &str = "\
Usage: cargo xtask <COMMAND> [ARGS...]

Commands:
  setup        Install what building and testing need, when it is missing: the rust-src
               component of the eBPF toolchain (nightly; nightly-2026-05-20 when there is
               no nightly), bpf-linker 0.10.4 (cargo install), and the test tools from
               Debian's packages (apt-get): golang-go, tmux, redis-server, redis-tools,
               wrk, nginx, prometheus, openjdk-17-jdk-headless, nodejs and
               golang-github-gin-gonic-gin-dev
  test [ARGS]  setup, then `cargo test --workspace ARGS` (every crate but memprof-ebpf,
               which only builds for BPF), the test binaries run as root (through
               `sudo -E` when not root)
  run [ARGS]   setup, build memprof (release), then run `target/release/memprof ARGS` as
               root (through sudo when not root); a leading `--` is dropped
  completions DIR
               setup, build memprof (debug), then write its shell completions in DIR
               (memprof.bash, _memprof for zsh, memprof.fish, memprof.elv,
               _memprof.ps1), made with clap_complete
  man DIR      setup, build memprof (debug), then write its man pages in DIR
               (memprof.1, memprof-run.1, memprof-top.1), made with clap_mangen
  bench [--quick] [--runs N] [--storm NAME]... [--json PATH] [--readme]
               setup, build memprof (release), then measure its overhead: storms of page
               faults, of mmap/munmap, and of malloc/free in C without frame pointers (built
               with gcc) run untraced, under memprof (default and --fault-stacks) and under
               the installed peers (bpftrace, perf, strace), interleaved; a syscall-bound
               process beside memprof and beside memprof agent; redis and a gin server
               under load; prints the median slowdowns, memprof's events, lost events, CPU,
               peak RSS and time to tracing, and its budgets, and with --readme writes them
               into README.md (`cargo xtask bench --help`)
  bench --soak MINUTES
               setup, build memprof (release), then run memprof agent for MINUTES against
               process churn and a memory storm: its RSS and CPU over time, and its budget
  help         Print this help

Environment:
  MEMPROF_EBPF_TOOLCHAIN  rustup toolchain that builds the eBPF programs (default: nightly)
";

/// The dated channel of the compiler that the machines' preinstalled `nightly` is.
const PINNED_NIGHTLY: &str = "nightly-2026-05-20";
/// bpf-linker 0.10 links with the LLVM of the rustc that drives it, which must be LLVM 22;
/// 0.10.2 fixed the BTF it writes for aya-log's kernel side (the kernel refused a union name).
const BPF_LINKER_VERSION: &str = "0.10.4";
const LLVM_MAJOR: &str = "22";

fn main() {
    if let Err(e) = cli() {
        eprintln!("xtask: error: {e:#}");
        exit(1);
    }
}

fn cli() -> Result<()> {
    let mut args = env::args_os().skip(1);
    let command = args.next();
    let args: Vec<OsString> = args.collect();
    match command.as_ref().and_then(|c| c.to_str()) {
        Some("setup") => {
            ensure!(args.is_empty(), "setup takes no arguments");
            setup()?;
            eprintln!("xtask: setup complete");
            Ok(())
        }
        Some("test") => test(&args),
        Some("run") => run_memprof(&args),
        Some(what @ ("completions" | "man")) => generate(what, &args),
        Some("bench") => bench::bench(&args),
        Some("help" | "-h" | "--help") => {
            print!("{USAGE}");
            Ok(())
        }
        other => {
            if let Some(other) = other {
                eprintln!("xtask: unknown command `{other}`\n");
            }
            eprint!("{USAGE}");
            exit(2)
        }
    }
}

/// What setup found, for the commands that follow it.
struct Setup {
    root: bool,
    /// Environment for spawned cargo commands: the eBPF toolchain when it is not `nightly`,
    /// and PATH when bpf-linker is only in cargo's bin directory.
    envs: Vec<(&'static str, OsString)>,
}

impl Setup {
    /// A cargo command run from the workspace root, whatever directory xtask was run from.
    fn cargo(&self) -> Command {
        let mut cmd = Command::new(cargo_program());
        cmd.current_dir(workspace_root())
            .envs(self.envs.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// `program`, through sudo when not root.
    fn as_root(&self, program: impl Into<OsString>) -> Command {
        if self.root {
            Command::new(program.into())
        } else {
            let mut cmd = Command::new("sudo");
            cmd.arg(program.into());
            cmd
        }
    }
}

fn setup() -> Result<Setup> {
    let mut envs = Vec::new();
    let toolchain = ebpf_toolchain()?;
    rust_src(&toolchain)?;
    if toolchain != "nightly" {
        envs.push(("MEMPROF_EBPF_TOOLCHAIN", toolchain.into()));
    }
    if let Some(dir) = bpf_linker()? {
        let path = env::var_os("PATH").unwrap_or_default();
        let path = env::join_paths(iter::once(dir).chain(env::split_paths(&path)))?;
        envs.push(("PATH", path));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let setup = Setup { root, envs };
    test_tools(&setup)?;
    Ok(setup)
}

/// The rustup toolchain that builds the eBPF programs: `MEMPROF_EBPF_TOOLCHAIN`, else `nightly`,
/// else the pinned nightly (installed if needed). Its LLVM must be the one bpf-linker links with.
fn ebpf_toolchain() -> Result<String> {
    let requested = env::var("MEMPROF_EBPF_TOOLCHAIN").ok();
    let mut toolchain = requested.clone().unwrap_or_else(|| "nightly".into());
    let mut version = rustc_version(&toolchain);
    if version.is_none() && requested.is_none() {
        eprintln!(
            "xtask: no `nightly` toolchain: the eBPF build uses {PINNED_NIGHTLY} (the same compiler)"
        );
        toolchain = PINNED_NIGHTLY.into();
        version = rustc_version(&toolchain);
    }
    let version = version.map_or_else(|| install_toolchain(&toolchain), Ok)?;
    let llvm = version
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .with_context(|| format!("`rustc -vV` of toolchain {toolchain} names no LLVM version"))?;
    ensure!(
        llvm.split('.').next() == Some(LLVM_MAJOR),
        "toolchain {toolchain} has LLVM {llvm}, but bpf-linker {BPF_LINKER_VERSION} needs LLVM \
         {LLVM_MAJOR}: run `rustup toolchain install {PINNED_NIGHTLY} --profile minimal \
         --component rust-src` and set MEMPROF_EBPF_TOOLCHAIN={PINNED_NIGHTLY}"
    );
    Ok(toolchain)
}

/// Installs `toolchain` with rust-src; returns its `rustc -vV`.
fn install_toolchain(toolchain: &str) -> Result<String> {
    eprintln!("xtask: installing toolchain {toolchain} for the eBPF build ...");
    let mut install = Command::new("rustup");
    install.args(["toolchain", "install", toolchain, "--profile", "minimal"]);
    run(install.args(["--component", "rust-src"]))?;
    rustc_version(toolchain).with_context(|| format!("toolchain {toolchain} has no working rustc"))
}

/// `rustc -vV` of an installed toolchain; None when it is not installed.
fn rustc_version(toolchain: &str) -> Option<String> {
    let mut rustc = Command::new("rustup");
    rustc.args(["run", toolchain, "rustc", "-vV"]);
    // A missing toolchain is to be reported, not downloaded behind our back.
    stdout(rustc.env("RUSTUP_AUTO_INSTALL", "0")).ok()
}

/// build-std needs the standard library's source.
fn rust_src(toolchain: &str) -> Result<()> {
    let list = ["component", "list", "--installed", "--toolchain", toolchain];
    let installed = stdout(Command::new("rustup").args(list))?;
    if !installed.lines().any(|l| l.starts_with("rust-src")) {
        eprintln!("xtask: installing rust-src for {toolchain} ...");
        let add = ["component", "add", "rust-src", "--toolchain", toolchain];
        run(Command::new("rustup").args(add))?;
    }
    Ok(())
}

/// Makes sure bpf-linker 0.10.4 is there; returns its directory when PATH must gain it.
fn bpf_linker() -> Result<Option<PathBuf>> {
    let wanted = format!("bpf-linker {BPF_LINKER_VERSION}");
    let is_wanted =
        |path: &Path| stdout(Command::new(path).arg("--version")).is_ok_and(|v| v.trim() == wanted);
    if find_in_path("bpf-linker").is_some_and(|p| is_wanted(&p)) {
        return Ok(None);
    }
    let bin = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::home_dir().map(|home| home.join(".cargo")))
        .context("cannot locate cargo's home: set CARGO_HOME")?
        .join("bin");
    let linker = bin.join("bpf-linker");
    if !is_wanted(&linker) {
        eprintln!("xtask: installing bpf-linker {BPF_LINKER_VERSION} (takes a few minutes) ...");
        let package = format!("bpf-linker@{BPF_LINKER_VERSION}");
        run(Command::new(cargo_program()).args(["install", &package, "--locked"]))?;
        ensure!(
            is_wanted(&linker),
            "`cargo install` did not put {wanted} at {}",
            linker.display()
        );
    }
    Ok(Some(bin))
}

/// What integration tests and the bench run, from Debian's packages: a program on PATH, or a
/// file.
const TEST_TOOLS: [(&str, &str); 10] = [
    ("go", "golang-go"),
    ("tmux", "tmux"),
    ("redis-server", "redis-server"),
    ("redis-benchmark", "redis-tools"),
    // The bench's HTTP load on the gin server.
    ("wrk", "wrk"),
    // Not on PATH for users without sbin in it.
    ("/usr/sbin/nginx", "nginx"),
    // The agent's test scrapes it with a real Prometheus and checks it with promtool.
    ("prometheus", "prometheus"),
    // The breakdown's tests run a JVM (compiling its class) and node.
    ("javac", "openjdk-17-jdk-headless"),
    ("node", "nodejs"),
    // The gin web framework's source, for the Go server tests build (GOPATH mode).
    (
        "/usr/share/gocode/src/github.com/gin-gonic/gin/gin.go",
        "golang-github-gin-gonic-gin-dev",
    ),
];

/// Whether `tool` is here: a program on PATH, or a file by its absolute path.
fn installed(tool: &str) -> bool {
    if tool.starts_with('/') {
        Path::new(tool).exists()
    } else {
        find_in_path(tool).is_some()
    }
}

/// Installs the Debian packages of [`TEST_TOOLS`] that are missing.
fn test_tools(setup: &Setup) -> Result<()> {
    let missing: Vec<&str> = TEST_TOOLS
        .into_iter()
        .filter(|(tool, _)| !installed(tool))
        .map(|(_, package)| package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing {} with apt-get ...", missing.join(" "));
    run(setup.as_root("apt-get").arg("update"))?;
    let install = ["install", "-y", "--no-install-recommends"];
    run(setup
        .as_root("apt-get")
        .args(install)
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn test(args: &[OsString]) -> Result<()> {
    let setup = setup()?;
    let mut cargo = setup.cargo();
    // memprof-ebpf builds only for the BPF target (memprof's build script builds it).
    cargo.args(["test", "--workspace", "--exclude", "memprof-ebpf"]);
    cargo.args(args);
    if !setup.root {
        // Tests load eBPF programs, so the test binaries (not the build) run as root.
        let version = stdout(Command::new("rustc").arg("-vV"))?;
        let host = version
            .lines()
            .find_map(|l| l.strip_prefix("host: "))
            .context("`rustc -vV` names no host")?;
        let runner = format!(
            "CARGO_TARGET_{}_RUNNER",
            host.to_uppercase().replace('-', "_")
        );
        cargo.env(runner, "sudo -E");
    }
    exit(exit_code(status(&mut cargo)?))
}

/// Builds memprof, in release or debug (the tests' build); returns its binary.
fn build_memprof(setup: &Setup, release: bool) -> Result<PathBuf> {
    let mut build = setup.cargo();
    build.args(["build", "--package", "memprof", "--bins"]);
    if release {
        build.arg("--release");
    }
    run(&mut build)?;
    // The build ran in the workspace root, so a relative CARGO_TARGET_DIR is relative to it.
    let target = env::var_os("CARGO_TARGET_DIR").unwrap_or_else(|| "target".into());
    let profile = if release { "release" } else { "debug" };
    Ok(workspace_root().join(target).join(profile).join("memprof"))
}

fn run_memprof(args: &[OsString]) -> Result<()> {
    let setup = setup()?;
    let binary = build_memprof(&setup, true)?;
    let args = args.strip_prefix(&["--".into()]).unwrap_or(args);
    let mut memprof = setup.as_root(binary);
    memprof.args(args);
    // exec: Ctrl-C then reaches memprof alone (which reports and exits), and its exit code is ours.
    Err(memprof.exec()).with_context(|| format!("cannot run {}", show(&memprof)))
}

/// Completions or man pages, written by memprof's hidden `generate` subcommand: the command
/// line they describe lives in memprof's binary, which xtask cannot depend on (it sets up the
/// eBPF build that binary needs).
fn generate(what: &str, args: &[OsString]) -> Result<()> {
    let [dir] = args else {
        bail!("usage: cargo xtask {what} DIR");
    };
    let setup = setup()?;
    // Text made from the command line's description: the tests' build will do.
    let memprof = build_memprof(&setup, false)?;
    run(Command::new(memprof).args(["generate", what]).arg(dir))?;
    let what = if what == "man" { "man pages" } else { what };
    eprintln!("xtask: wrote the {what} in {}", Path::new(dir).display());
    Ok(())
}

/// The cargo that runs xtask, so that its commands use the same toolchain.
fn cargo_program() -> OsString {
    env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    env::split_paths(&env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}

fn show(cmd: &Command) -> String {
    let words = iter::once(cmd.get_program()).chain(cmd.get_args());
    let words: Vec<_> = words.map(|w| w.to_string_lossy()).collect();
    format!("`{}`", words.join(" "))
}

fn status(cmd: &mut Command) -> Result<ExitStatus> {
    cmd.status()
        .with_context(|| format!("cannot run {}", show(cmd)))
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = status(cmd)?;
    ensure!(status.success(), "{} failed ({status})", show(cmd));
    Ok(())
}

/// Stdout of a command that must succeed; its stderr becomes the error otherwise.
fn stdout(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {}", show(cmd)))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success(),
        "{} failed ({}): {}",
        show(cmd),
        out.status,
        stderr.trim()
    );
    String::from_utf8(out.stdout).with_context(|| format!("{} printed non-UTF-8", show(cmd)))
}

/// The shell's convention: the exit code, or 128 + the signal that ended the process.
fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}
