//! `--all`: which of the host's processes are traced, by command name, cgroup and uid. The
//! kernel applies it to processes created or exec'd during the run; [`ProcessFilter::matches`]
//! applies the same test, from /proc, to those already running when tracing starts.
use std::{fs, os::unix::fs::MetadataExt as _, path::Path};

use memprof_common::{ANY_UID, Filter};

use crate::{error::Error, procfs};

/// Which processes to trace, as the user named them; every field narrows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FilterSpec {
    /// A command name (as `ps -o comm` shows it).
    pub comm: Option<String>,
    /// A cgroup v2 path, with or without the cgroup2 mount point in front.
    pub cgroup: Option<String>,
    /// A real user id.
    pub uid: Option<u32>,
}

impl FilterSpec {
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// The kernel keeps a command name in 16 bytes, NUL included.
const COMM_LEN: usize = 15;

/// A cgroup v2 directory, as the kernel identifies it.
#[derive(Debug)]
struct Cgroup {
    /// From the cgroup v2 root: `/system.slice/nginx.service`.
    path: String,
    /// Its directory's inode number, which is the kernel's cgroup id.
    id: u64,
    /// How deep it is below the root.
    level: u32,
}

#[derive(Debug, Default)]
pub struct ProcessFilter {
    comm: Option<String>,
    cgroup: Option<Cgroup>,
    uid: Option<u32>,
}

/// `path` relative to the cgroup v2 root, with one leading slash and none trailing; the root
/// itself may be given in front of it.
fn cgroup_path(path: &str, root: &str) -> String {
    let relative = path.strip_prefix(root).unwrap_or(path);
    let parts: Vec<&str> = relative.split('/').filter(|p| !p.is_empty()).collect();
    format!("/{}", parts.join("/"))
}

impl ProcessFilter {
    pub fn new(args: &FilterSpec) -> Result<Self, Error> {
        let cgroup = args.cgroup.as_deref().map(find_cgroup).transpose()?;
        Ok(Self {
            // What the kernel keeps of a longer name, as `ps` shows it.
            comm: args
                .comm
                .as_ref()
                .map(|c| c.chars().take(COMM_LEN).collect()),
            cgroup,
            uid: args.uid,
        })
    }

    /// The filter for the kernel side, which never traces `self_tgid`.
    pub fn kernel(&self, self_tgid: u32) -> Filter {
        let mut comm = [0u8; 16];
        if let Some(name) = &self.comm {
            let bytes = name.as_bytes();
            let len = bytes.len().min(COMM_LEN);
            comm[..len].copy_from_slice(&bytes[..len]);
        }
        Filter {
            all: 1,
            self_tgid,
            uid: self.uid.unwrap_or(ANY_UID),
            cgroup_level: self.cgroup.as_ref().map_or(0, |c| c.level),
            cgroup_id: self.cgroup.as_ref().map_or(0, |c| c.id),
            comm,
        }
    }

    /// Whether a running process passes the filter, read from /proc as the kernel would
    /// see it; false when it is gone.
    pub fn matches(&self, pid: u32) -> bool {
        if let Some(comm) = &self.comm
            && procfs::read_comm(pid).ok().as_ref() != Some(comm)
        {
            return false;
        }
        if let Some(uid) = self.uid
            && procfs::read_uid(pid).ok().flatten() != Some(uid)
        {
            return false;
        }
        if let Some(cgroup) = &self.cgroup {
            let Some(path) = procfs::read_cgroup(pid).ok().flatten() else {
                return false;
            };
            if !in_cgroup(&path, &cgroup.path) {
                return false;
            }
        }
        true
    }

    /// What is traced, for the "tracing" line.
    pub fn describe(&self) -> String {
        let mut parts = vec!["every process".to_string()];
        if let Some(comm) = &self.comm {
            parts.push(format!("named {comm}"));
        }
        if let Some(cgroup) = &self.cgroup {
            parts.push(format!("in cgroup {}", cgroup.path));
        }
        if let Some(uid) = self.uid {
            parts.push(format!("of uid {uid}"));
        }
        parts.join(" ")
    }
}

/// Whether cgroup `path` is `ancestor` or below it.
fn in_cgroup(path: &str, ancestor: &str) -> bool {
    ancestor == "/"
        || path
            .strip_prefix(ancestor)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

fn find_cgroup(path: &str) -> Result<Cgroup, Error> {
    let mounts = procfs::read_own_mounts().unwrap_or_default();
    let root = procfs::cgroup2_root(&mounts).ok_or_else(|| Error::NoSuchCgroup {
        path: path.to_string(),
        why: "cgroup v2 is not mounted (memprof filters on the unified hierarchy only)".into(),
    })?;
    let relative = cgroup_path(path, root);
    let dir = Path::new(root).join(relative.trim_start_matches('/'));
    let meta = fs::metadata(&dir).map_err(|e| Error::NoSuchCgroup {
        path: path.to_string(),
        why: format!("{}: {e}", dir.display()),
    })?;
    if !meta.is_dir() {
        return Err(Error::NoSuchCgroup {
            path: path.to_string(),
            why: format!("{} is not a cgroup directory", dir.display()),
        });
    }
    let level = relative.split('/').filter(|p| !p.is_empty()).count() as u32;
    Ok(Cgroup {
        path: relative,
        id: meta.ino(),
        level,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_paths_are_taken_from_the_root_with_or_without_it() {
        let root = "/sys/fs/cgroup";
        for given in ["/sys/fs/cgroup/a/b/", "a/b", "/a//b"] {
            assert_eq!(cgroup_path(given, root), "/a/b");
        }
        assert_eq!(cgroup_path("/", root), "/");
    }

    #[test]
    fn a_cgroup_contains_its_descendants_only() {
        assert!(in_cgroup("/a/b", "/a/b"));
        assert!(in_cgroup("/a/b/c", "/a/b"));
        assert!(!in_cgroup("/a/bc", "/a/b"));
        assert!(!in_cgroup("/a", "/a/b"));
        assert!(in_cgroup("/anything", "/"));
    }

    /// Against this machine: this test process passes a filter built from its own /proc
    /// entries, the kernel's cgroup id is its directory's inode, and a missing cgroup is
    /// refused with its own exit code.
    #[test]
    fn this_process_matches_a_filter_made_of_its_own_attributes() {
        let pid = std::process::id();
        let args = FilterSpec {
            comm: Some(procfs::read_comm(pid).unwrap()),
            cgroup: Some(procfs::read_cgroup(pid).unwrap().unwrap()),
            uid: procfs::read_uid(pid).unwrap(),
        };
        let filter = ProcessFilter::new(&args).unwrap();
        assert!(filter.matches(pid), "{filter:?}");
        let kernel = filter.kernel(1);
        assert_eq!((kernel.all, kernel.self_tgid), (1, 1));
        assert_eq!(Some(kernel.uid), args.uid);
        let other = ProcessFilter::new(&FilterSpec {
            comm: Some("no-such-command".into()),
            ..args
        })
        .unwrap();
        assert!(!other.matches(pid));
        let missing = ProcessFilter::new(&FilterSpec {
            cgroup: Some("/memprof-no-such-cgroup".into()),
            comm: None,
            uid: None,
        })
        .unwrap_err();
        assert_eq!(missing.exit_code(), 8);
    }
}
