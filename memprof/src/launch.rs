//! Launch mode: start a command so that it is traced from its first instruction.
//!
//! The child is forked before memprof loads anything and waits on a pipe; once its pid is in
//! the in-kernel filter it is released to exec. It asks to be ptraced, so the kernel stops it
//! right after exec: memprof reads the fresh address space from /proc, then detaches.
use std::{
    env,
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};

use crate::{error::Error, procfs::Snapshot};

/// Finds `program` the way a shell would: as a path when it has a slash, else on $PATH.
/// One that is there but cannot run says why, as a shell does.
pub fn resolve(program: &str) -> Result<PathBuf, Error> {
    let executable = |p: &Path| {
        let c = CString::new(p.as_os_str().as_bytes()).unwrap_or_default();
        // SAFETY: valid NUL-terminated path.
        p.is_file() && unsafe { libc::access(c.as_ptr(), libc::X_OK) == 0 }
    };
    let candidates: Vec<PathBuf> = if program.contains('/') {
        vec![PathBuf::from(program)]
    } else {
        env::var_os("PATH")
            .map(|path| {
                env::split_paths(&path)
                    .map(|dir| dir.join(program))
                    .collect()
            })
            .unwrap_or_default()
    };
    if let Some(found) = candidates.iter().find(|p| executable(p)) {
        return Ok(found.clone());
    }
    let cannot = |why: &str| Error::CannotExecute {
        program: program.to_string(),
        why: why.to_string(),
    };
    match candidates.iter().find(|p| p.exists()) {
        Some(p) if p.is_dir() => Err(cannot("it is a directory")),
        Some(_) => Err(cannot(
            "permission denied (not executable: `chmod +x` it, or run it through its interpreter)",
        )),
        None => Err(Error::CommandNotFound(program.to_string())),
    }
}

/// A forked child waiting for [`Launched::start`] before it execs.
pub struct Launched {
    pub pid: u32,
    go: OwnedFd,
    /// The child's errno when its exec fails; closed by a successful exec (close-on-exec).
    failed: OwnedFd,
    program: String,
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 returned two fresh descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

impl Launched {
    /// Forks the child. Call while memprof is single-threaded (before the runtime starts).
    pub fn fork(path: &Path, args: &[String]) -> anyhow::Result<Self> {
        let path = CString::new(path.as_os_str().as_bytes())?;
        let argv: Vec<CString> = args
            .iter()
            .map(|a| CString::new(a.as_bytes()))
            .collect::<Result<_, _>>()?;
        let envp: Vec<CString> = env::vars_os()
            .map(|(k, v)| CString::new([k.as_bytes(), b"=", v.as_bytes()].concat()))
            .collect::<Result<_, _>>()?;
        let pointers = |strings: &[CString]| {
            let mut p: Vec<*const libc::c_char> = strings.iter().map(|s| s.as_ptr()).collect();
            p.push(std::ptr::null());
            p
        };
        let (argv_ptrs, envp_ptrs) = (pointers(&argv), pointers(&envp));
        let (wait, go) = pipe().context("pipe")?;
        let (failed, report_failure) = pipe().context("pipe")?;

        // SAFETY: the child only calls async-signal-safe functions before exec or _exit.
        match unsafe { libc::fork() } {
            -1 => Err(io::Error::last_os_error()).context("fork"),
            // SAFETY: in the child, before exec: the same async-signal-safe calls.
            0 => unsafe {
                libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0);
                // Rust's runtime ignores SIGPIPE in memprof, and an ignored signal stays
                // ignored across exec: the command would see EPIPE where it expects to die
                // quietly (`yes | head -1` printing "Broken pipe"). The only disposition
                // memprof changes before it forks (tokio installs its handlers later).
                libc::signal(libc::SIGPIPE, libc::SIG_DFL);
                // The child's copy of the write end would keep the pipe open: memprof failing
                // before `start` would leave it waiting forever instead of reading EOF.
                libc::close(go.as_raw_fd());
                libc::close(failed.as_raw_fd());
                let mut byte = 0u8;
                // EOF means memprof gave up: exit without running the command.
                if libc::read(wait.as_raw_fd(), (&raw mut byte).cast(), 1) == 1 {
                    libc::execve(path.as_ptr(), argv_ptrs.as_ptr(), envp_ptrs.as_ptr());
                    let errno = *libc::__errno_location();
                    libc::write(
                        report_failure.as_raw_fd(),
                        (&raw const errno).cast(),
                        size_of::<libc::c_int>(),
                    );
                }
                libc::_exit(127)
            },
            pid => {
                // Only the child writes: its exit (or exec) must leave the pipe at EOF.
                drop(report_failure);
                Ok(Self {
                    pid: pid as u32,
                    go,
                    failed,
                    program: args.first().cloned().unwrap_or_default(),
                })
            }
        }
    }

    /// Lets the child exec, waits for the stop that follows exec, reads its address space,
    /// and lets it run.
    pub fn start(self) -> anyhow::Result<Snapshot> {
        let pid = self.pid as libc::pid_t;
        // SAFETY: writing one byte from a valid buffer to our pipe.
        if unsafe { libc::write(self.go.as_raw_fd(), [1u8].as_ptr().cast(), 1) } != 1 {
            return Err(io::Error::last_os_error()).context("releasing the command");
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
            return Err(io::Error::last_os_error()).context("waiting for the command to exec");
        }
        if !libc::WIFSTOPPED(status) {
            let mut errno: libc::c_int = 0;
            // SAFETY: reading at most an int into one, from our pipe; the child exited, so
            // its end is closed and this does not block.
            let n = unsafe {
                libc::read(
                    self.failed.as_raw_fd(),
                    (&raw mut errno).cast(),
                    size_of::<libc::c_int>(),
                )
            };
            if n == size_of::<libc::c_int>() as isize {
                // "Exec format error (os error 8)": the words, as a shell says them.
                let why = io::Error::from_raw_os_error(errno).to_string();
                let why = why
                    .split(" (os error")
                    .next()
                    .unwrap_or_default()
                    .to_lowercase();
                let hint = match errno {
                    libc::ENOEXEC => " (not a program this machine runs, or a script without #!)",
                    libc::ENOENT => " (a script whose interpreter is missing, or a missing loader)",
                    _ => "",
                };
                return Err(Error::CannotExecute {
                    program: self.program,
                    why: format!("{why}{hint}"),
                }
                .into());
            }
            bail!("the command could not be executed (exit status {status:#x})");
        }
        let snapshot = Snapshot::read(self.pid).context("reading the command's address space");
        // SAFETY: detaching our stopped tracee; signal 0 lets it continue as if never stopped.
        unsafe { libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0) };
        snapshot
    }
}
