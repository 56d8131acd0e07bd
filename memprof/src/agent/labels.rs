//! Labels read from a process's cgroup v2 path: the systemd unit it runs in and the
//! container it belongs to, which is how people name what runs on a host. Both derive from
//! the cgroup, so they add no series: they only let a query say `unit="nginx.service"`.

/// The systemd unit of `cgroup`: its innermost component that names a unit holding
/// processes (`nginx.service`, `session-3.scope`, `init.scope`); "" when none does. The
/// innermost, so that a user's services (`/user.slice/user-1000.slice/user@1000.service/
/// app.slice/foo.service`) and a service's delegated sub-cgroups are named as systemd does.
pub(crate) fn unit(cgroup: &str) -> &str {
    // Slices only group units; processes live in services and scopes (and briefly in the
    // others while systemd runs their commands).
    const UNITS: [&str; 5] = [".service", ".scope", ".socket", ".mount", ".swap"];
    cgroup
        .rsplit('/')
        .find(|c| UNITS.iter().any(|u| c.len() > u.len() && c.ends_with(u)))
        .unwrap_or("")
}

/// The container id in `cgroup` (64 hexadecimal digits), "" when it is in none: the
/// innermost one, for containers in containers. The forms engines make:
/// - docker: `/system.slice/docker-ID.scope` (systemd driver), `/docker/ID` (cgroupfs);
/// - containerd under Kubernetes: `/kubepods.slice/.../cri-containerd-ID.scope`, or
///   `/kubepods/besteffort/podUID/ID`; nerdctl `/system.slice/nerdctl-ID.scope`,
///   `/default/ID`;
/// - cri-o: `/kubepods.slice/.../crio-ID.scope` (its `crio-conmon-ID.scope`, the monitor
///   beside the container, is not the container);
/// - podman: `/machine.slice/libpod-ID.scope`, rootless under `user@UID.service`, or
///   `/libpod_parent/libpod-ID` (cgroupfs); `libpod-conmon-ID.scope` is its monitor.
pub(crate) fn container(cgroup: &str) -> &str {
    const ENGINES: [&str; 5] = ["docker-", "cri-containerd-", "crio-", "libpod-", "nerdctl-"];
    cgroup
        .rsplit('/')
        .find_map(|c| {
            let c = c.strip_suffix(".scope").unwrap_or(c);
            let id = ENGINES
                .iter()
                .find_map(|engine| c.strip_prefix(engine))
                .unwrap_or(c);
            is_container_id(id).then_some(id)
        })
        .unwrap_or("")
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f3c2a1b9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b";
    const POD: &str = "kubepods-burstable-pod1f2e3d4c_5b6a_7980_a1b2_c3d4e5f60718.slice";

    #[test]
    fn units_are_the_innermost_service_or_scope() {
        for (cgroup, want) in [
            ("/system.slice/nginx.service", "nginx.service"),
            (
                "/system.slice/system-getty.slice/getty@tty1.service",
                "getty@tty1.service",
            ),
            (
                "/user.slice/user-1000.slice/session-3.scope",
                "session-3.scope",
            ),
            (
                "/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service",
                "foo.service",
            ),
            // A service that delegates its subtree (systemd's Delegate=yes).
            (
                "/system.slice/containerd.service/sub/leaf",
                "containerd.service",
            ),
            ("/init.scope", "init.scope"),
            ("/system.slice/var-lib-x.mount", "var-lib-x.mount"),
            (
                &format!("/system.slice/docker-{ID}.scope"),
                &format!("docker-{ID}.scope"),
            ),
            ("/", ""),
            ("", ""),
            ("/user.slice", ""),
            ("/kubepods/besteffort/pod1234/abc", ""),
            // A name that is only the suffix is no unit.
            ("/.service", ""),
        ] {
            assert_eq!(unit(cgroup), want, "{cgroup}");
        }
    }

    #[test]
    fn containers_of_docker_containerd_cri_o_and_podman() {
        let kubepods = format!("/kubepods.slice/kubepods-burstable.slice/{POD}");
        for cgroup in [
            format!("/system.slice/docker-{ID}.scope"),
            format!("/docker/{ID}"),
            format!("{kubepods}/cri-containerd-{ID}.scope"),
            format!("/kubepods/burstable/pod1f2e3d4c-5b6a-7980-a1b2-c3d4e5f60718/{ID}"),
            format!("{kubepods}/crio-{ID}.scope"),
            format!("/machine.slice/libpod-{ID}.scope"),
            format!("/machine.slice/libpod-{ID}.scope/container"),
            format!("/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope"),
            format!("/libpod_parent/libpod-{ID}"),
            format!("/system.slice/nerdctl-{ID}.scope"),
            format!("/default/{ID}"),
            // systemd inside the container: its own units below the container's cgroup.
            format!("/system.slice/docker-{ID}.scope/init.scope"),
            format!("/system.slice/docker-{ID}.scope/system.slice/nginx.service"),
        ] {
            assert_eq!(container(&cgroup), ID, "{cgroup}");
        }
    }

    #[test]
    fn no_container_where_there_is_none() {
        for cgroup in [
            "/".to_string(),
            String::new(),
            "/system.slice/nginx.service".into(),
            "/user.slice/user-1000.slice/session-3.scope".into(),
            // The monitors beside containers.
            format!("/kubepods.slice/kubepods-besteffort.slice/crio-conmon-{ID}.scope"),
            format!("/machine.slice/libpod-conmon-{ID}.scope"),
            // The pod's own cgroup holds no process of a container.
            format!("/kubepods.slice/kubepods-burstable.slice/{POD}"),
            // Too short, too long, not hexadecimal.
            format!("/docker/{}", &ID[..12]),
            format!("/docker/{ID}0"),
            format!("/docker/{}x", &ID[..63]),
            format!("/system.slice/docker-{}.scope", &ID[1..]),
        ] {
            assert_eq!(container(&cgroup), "", "{cgroup}");
        }
        // Docker in docker: the innermost id.
        let inner: String = ID.chars().rev().collect();
        assert_eq!(container(&format!("/docker/{ID}/docker/{inner}")), inner);
    }
}
