//! The filesystem VIEW (the sandbox root is an empty tmpfs with only the policy's paths bound): host
//! unix sockets, unlisted paths and host mounts are not there at all; read_write paths outside the
//! workdir are writable; with an `executable` list, writable places are `noexec` (no `ld.so ./bin`,
//! no memfd execution); the workdir's git hooks and config are read-only. Each escape has its positive
//! control (the same probe without the sandbox must succeed).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use libc::{EACCES, ENOENT, EPERM, EROFS};
use openshell_e2e::sandbox::{Ctx, User};

use super::common::{Failures, notice, offline, require_root};
use super::corpus::errno_ok;

/// A unix socket listener on the HOST that greets every client with a nonce and counts them.
struct HostSocket {
    dir: PathBuf,
    path: PathBuf,
    nonce: String,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HostSocket {
    /// In `dir` (created 0711: traversable, not listable, as /run/user/$UID is for others).
    fn start(dir: &Path) -> HostSocket {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).unwrap();
        let path = dir.join("agent-must-not-reach.sock");
        let listener = UnixListener::bind(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let nonce = format!("HOST-SOCKET-{}-{}", std::process::id(), dir.display());
        let (accepted, stop) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
        let (a, s, n) = (accepted.clone(), stop.clone(), nonce.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut c, _)) => {
                        a.fetch_add(1, Ordering::Relaxed);
                        let _ = c.write_all(n.as_bytes());
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
                }
            }
        });
        HostSocket { dir: dir.to_path_buf(), path, nonce, accepted, stop, thread: Some(thread) }
    }
}

impl Drop for HostSocket {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn host_sockets_and_unlisted_paths(user: User, t: &str) {
    if !require_root(t) {
        return;
    }
    let (_ns, ctx) = offline(user);
    let run_dir = PathBuf::from(format!("/run/osh-e2e-view-{}-{}", std::process::id(), user.label()));
    let socks = [HostSocket::start(&ctx.root.join("sockdir")), HostSocket::start(&run_dir)];
    let policy = ctx.policy_file(&ctx.base_policy().to_yaml()).unwrap();
    let mut f = Failures::default();
    for sock in &socks {
        // Positive control: without the sandbox the agent's user reaches the socket.
        let before = sock.accepted.load(Ordering::Relaxed);
        let c = ctx.direct_probe(user, &["unix-connect", &s(&sock.path)]).unwrap();
        let ok = c.probe.as_ref().is_some_and(|p| p.ok && p.detail.contains(&sock.nonce));
        f.check(ok, || {
            format!("control: unix-connect {} should succeed\n{}", sock.path.display(), c.out.describe())
        });
        f.check(sock.accepted.load(Ordering::Relaxed) > before, || "control: listener saw nothing".into());

        let before = sock.accepted.load(Ordering::Relaxed);
        let r = ctx.sandbox(&policy).probe(&["unix-connect", &s(&sock.path)]).unwrap();
        match &r.probe {
            Some(p) if !p.ok && errno_ok(&[ENOENT, EACCES, EPERM], p.errno) => {}
            _ => f.push(format!("unix-connect {} NOT BLOCKED\n{}", sock.path.display(), r.out.describe())),
        }
        f.check(sock.accepted.load(Ordering::Relaxed) == before, || {
            format!("the host listener at {} accepted a connection from the sandbox", sock.path.display())
        });
        f.check(!r.out.stdout.contains(&sock.nonce), || "the host socket's nonce leaked".into());
    }
    // Unlisted paths do not exist at all (no stat, no chdir-able directory, no info leak).
    for path in [&ctx.secret, &ctx.secret_dir, &socks[0].dir, &run_dir, &PathBuf::from("/root")] {
        let r = ctx.sandbox(&policy).probe(&["stat", &s(path)]).unwrap();
        match &r.probe {
            Some(p) if !p.ok && p.errno == Some(ENOENT) => {}
            _ => f.push(format!("stat {} must fail with ENOENT\n{}", path.display(), r.out.describe())),
        }
    }
    let c = ctx.direct_probe(user, &["stat", &s(&ctx.secret)]).unwrap();
    f.check(c.probe.as_ref().is_some_and(|p| p.ok), || format!("control stat\n{}", c.out.describe()));
    // Host mounts are not in the sandbox's mount table.
    let r = ctx.sandbox(&policy).probe(&["read", "/proc/self/mountinfo"]).unwrap();
    let p = r.probe.clone();
    f.check(p.as_ref().is_some_and(|p| p.ok), || format!("read mountinfo\n{}", r.out.describe()));
    let all = ctx.sandbox(&policy).run(&["/bin/cat", "/proc/self/mountinfo"]).unwrap();
    f.check(all.code == Some(0), || format!("cat mountinfo\n{}", all.describe()));
    for needle in [s(&ctx.secret_dir), s(&run_dir), "/run ".into(), "/root ".into(), "/home ".into()] {
        f.check(!all.stdout.contains(&needle), || format!("mountinfo shows {needle}:\n{}", all.stdout));
    }
    f.finish(t);
}

#[test]
fn host_unix_sockets_and_unlisted_paths_are_not_there_as_root() {
    host_sockets_and_unlisted_paths(
        User::Root,
        "view::host_unix_sockets_and_unlisted_paths_are_not_there_as_root",
    );
}

#[test]
fn host_unix_sockets_and_unlisted_paths_are_not_there_unprivileged() {
    host_sockets_and_unlisted_paths(
        User::Unprivileged,
        "view::host_unix_sockets_and_unlisted_paths_are_not_there_unprivileged",
    );
}

fn read_write_paths(user: User, t: &str) {
    if !require_root(t) {
        return;
    }
    let (_ns, ctx) = offline(user);
    let mut pol = ctx.base_policy();
    pol.read_write.push(s(&ctx.drop_dir));
    let policy = ctx.policy_file(&pol.to_yaml()).unwrap();
    let mut f = Failures::default();
    let target = ctx.drop_dir.join("written-by-agent");
    let r = ctx.sandbox(&policy).probe(&["write", &s(&target)]).unwrap();
    f.check(r.probe.as_ref().is_some_and(|p| p.ok), || {
        format!("read_write path not writable\n{}", r.out.describe())
    });
    f.check(target.exists(), || "the write did not reach the host directory".into());
    let r = ctx.sandbox(&policy).probe(&["write", &s(&ctx.ro_dir.join("x"))]).unwrap();
    f.check(r.probe.as_ref().is_some_and(|p| !p.ok && errno_ok(&[EROFS, EACCES], p.errno)), || {
        format!("read_only path writable\n{}", r.out.describe())
    });
    f.finish(t);
}

#[test]
fn read_write_paths_outside_the_workdir_are_writable_as_root() {
    read_write_paths(User::Root, "view::read_write_paths_outside_the_workdir_are_writable_as_root");
}

#[test]
fn read_write_paths_outside_the_workdir_are_writable_unprivileged() {
    read_write_paths(
        User::Unprivileged,
        "view::read_write_paths_outside_the_workdir_are_writable_unprivileged",
    );
}

/// The base policy plus `executable:` (the staged binaries and /usr, where the loader lives).
fn exec_policy(ctx: &Ctx) -> String {
    let yaml = ctx.base_policy().to_yaml();
    let exec = format!("  executable:\n    - {}\n    - /usr\n", ctx.bin_dir.display());
    yaml.replacen("filesystem_policy:\n", &format!("filesystem_policy:\n{exec}"), 1)
}

const LOADER: &str = "/lib64/ld-linux-x86-64.so.2";

fn executable_bypasses(user: User, t: &str) {
    if !require_root(t) {
        return;
    }
    if !Path::new(LOADER).exists() || !Path::new("/usr/bin/true").exists() {
        super::common::skip(t, &format!("{LOADER} or /usr/bin/true missing"));
        return;
    }
    let (_ns, ctx) = offline(user);
    let copy = ctx.workdir.join("true-copy");
    std::fs::copy("/usr/bin/true", &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    let policy = ctx.policy_file(&exec_policy(&ctx)).unwrap();
    let mut f = Failures::default();

    // Controls: the loader runs the copy, and a memfd executes, without the sandbox.
    for args in [vec![LOADER.to_string(), s(&copy)], vec![]] {
        let probe_args: Vec<&str> = if args.is_empty() {
            vec!["memfd-exec"]
        } else {
            std::iter::once("exec-ok").chain(args.iter().map(String::as_str)).collect()
        };
        let c = ctx.direct_probe(user, &probe_args).unwrap();
        f.check(c.probe.as_ref().is_some_and(|p| p.ok), || {
            format!("control {probe_args:?} should succeed\n{}", c.out.describe())
        });
    }
    // Positive: allowed programs still run.
    let r = ctx.sandbox(&policy).probe(&["exec-ok", "/usr/bin/true"]).unwrap();
    f.check(r.probe.as_ref().is_some_and(|p| p.ok), || {
        format!("/usr/bin/true must run\n{}", r.out.describe())
    });

    // The loader cannot map code from the (noexec) workdir or /tmp.
    let r = ctx.sandbox(&policy).probe(&["exec-ok", LOADER, &s(&copy)]).unwrap();
    f.check(r.probe.as_ref().is_some_and(|p| !p.ok), || {
        format!("ld.so ./binary NOT BLOCKED\n{}", r.out.describe())
    });
    let report =
        r.out.events.iter().find_map(|e| e.0.pointer("/detail/enforcement/filesystem_view").cloned());
    let noexec = report.as_ref().and_then(|v| v.get("noexec")).map(|v| v.to_string()).unwrap_or_default();
    f.check(noexec.contains(&s(&ctx.workdir)) && noexec.contains("/tmp"), || {
        format!("enforcement report must list the noexec places: {report:?}")
    });

    // memfd execution: refused by vm.memfd_noexec=2 (root; per pid namespace), else (rootless: the
    // sysctl belongs to host root) by the seccomp rows with the same semantics (EACCES).
    let r = ctx.sandbox(&policy).probe(&["memfd-exec"]).unwrap();
    let memfd =
        report.as_ref().and_then(|v| v.get("memfd_exec")).and_then(|v| v.as_str()).unwrap_or("").to_string();
    let blocked = r.probe.as_ref().is_some_and(|p| !p.ok);
    f.check(blocked, || format!("memfd exec NOT BLOCKED ({memfd})\n{}", r.out.describe()));
    f.check(memfd.starts_with("refused"), || format!("report must say memfd exec is refused: {memfd}"));
    if memfd.starts_with("refused by seccomp") {
        let errno = r.probe.as_ref().and_then(|p| p.errno);
        f.check(errno == Some(EACCES), || {
            format!("seccomp memfd refusal must be EACCES\n{}", r.out.describe())
        });
    }
    if user == User::Root {
        f.check(memfd.contains("vm.memfd_noexec=2"), || format!("as root the sysctl must be set: {memfd}"));
    }
    notice(&format!("[{}] memfd-exec: {memfd}", user.label()));
    // Node (memfd users) still starts with memfd execution refused (sysctl or seccomp).
    if let Some(node) = openshell_e2e::bins::which("node") {
        let out = ctx.sandbox(&policy).run(&[&s(&node), "-e", "console.log(1)"]).unwrap();
        f.check(out.code == Some(0) && out.stdout.trim() == "1", || {
            format!("node -e 'console.log(1)' with executable set\n{}", out.describe())
        });
    }
    f.finish(t);
}

#[test]
fn executable_list_blocks_loader_and_memfd_as_root() {
    executable_bypasses(User::Root, "view::executable_list_blocks_loader_and_memfd_as_root");
}

#[test]
fn executable_list_blocks_loader_and_memfd_unprivileged() {
    executable_bypasses(User::Unprivileged, "view::executable_list_blocks_loader_and_memfd_unprivileged");
}

fn git_files(user: User, t: &str) {
    if !require_root(t) {
        return;
    }
    let (_ns, ctx) = offline(user);
    let git = ctx.workdir.join(".git");
    for d in ["hooks", "objects", "refs"] {
        std::fs::create_dir_all(git.join(d)).unwrap();
    }
    std::fs::write(git.join("config"), "[core]\n\trepositoryformatversion = 0\n").unwrap();
    let owner = if user == User::Root { 10001 } else { openshell_e2e::sandbox::UNPRIV_UID };
    for p in [git.clone(), git.join("hooks"), git.join("objects"), git.join("refs"), git.join("config")] {
        std::os::unix::fs::chown(&p, Some(owner), Some(owner)).unwrap();
    }
    let policy = ctx.policy_file(&ctx.base_policy().to_yaml()).unwrap();
    let mut f = Failures::default();
    let hook = git.join("hooks/pre-commit");
    let probe = |args: &[&str]| ctx.sandbox(&policy).probe(args).unwrap();
    for (args, what) in [
        (vec!["write".to_string(), s(&hook)], "write .git/hooks/pre-commit"),
        (vec!["write".to_string(), s(&git.join("config"))], "write .git/config"),
        (vec!["rename".to_string(), s(&git), s(&ctx.workdir.join("git-moved"))], "rename .git"),
        (vec!["rename".to_string(), s(&git.join("hooks")), s(&git.join("h2"))], "rename .git/hooks"),
    ] {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = probe(&a);
        f.check(r.probe.as_ref().is_some_and(|p| !p.ok), || {
            format!("{what} NOT BLOCKED\n{}", r.out.describe())
        });
    }
    f.check(!hook.exists(), || "a hook was written".into());
    f.check(
        std::fs::read_to_string(git.join("config")).unwrap_or_default().contains("repositoryformatversion"),
        || "config changed".into(),
    );
    // Agents can still commit: objects and refs stay writable.
    let r = probe(&["write", &s(&git.join("objects/obj"))]);
    f.check(r.probe.as_ref().is_some_and(|p| p.ok), || {
        format!(".git/objects must stay writable\n{}", r.out.describe())
    });
    f.finish(t);
}

#[test]
fn git_hooks_and_config_are_read_only_as_root() {
    git_files(User::Root, "view::git_hooks_and_config_are_read_only_as_root");
}

#[test]
fn git_hooks_and_config_are_read_only_unprivileged() {
    git_files(User::Unprivileged, "view::git_hooks_and_config_are_read_only_unprivileged");
}

/// `--rootfs` whose absolute symlinks point at host directories: the (root) supervisor must not
/// create or mount anything there (finding: it created `<victim>/resolv.conf` on the host).
#[test]
fn rootfs_symlinks_do_not_reach_the_host() {
    let t = "view::rootfs_symlinks_do_not_reach_the_host";
    if !require_root(t) {
        return;
    }
    let (_ns, ctx) = offline(User::Root);
    let victim = ctx.root.join("victim");
    std::fs::create_dir_all(&victim).unwrap();
    let rootfs = ctx.root.join("rootfs");
    let probe_in = rootfs.join(ctx.probe.strip_prefix("/").unwrap());
    std::fs::create_dir_all(probe_in.parent().unwrap()).unwrap();
    std::fs::copy(&ctx.probe, &probe_in).unwrap();
    for name in ["etc", "proc", "dev", "usr", "lib64"] {
        std::os::unix::fs::symlink(&victim, rootfs.join(name)).unwrap();
    }
    std::os::unix::fs::symlink("../../../../../../..", rootfs.join("sys")).unwrap();
    let policy = ctx.policy_file(&ctx.base_policy().to_yaml()).unwrap();
    let r =
        ctx.sandbox(&policy).arg("--rootfs").arg(&s(&rootfs)).probe(&["read", "/etc/resolv.conf"]).unwrap();
    let mut f = Failures::default();
    f.check(r.probe.as_ref().is_some_and(|p| p.ok && p.detail.contains("nameserver 127.0.0.1")), || {
        format!("the sandbox must run and see its generated resolv.conf\n{}", r.out.describe())
    });
    let left: Vec<_> =
        std::fs::read_dir(&victim).unwrap().filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
    f.check(left.is_empty(), || {
        format!("the supervisor wrote into the host directory {}: {left:?}", victim.display())
    });
    let r = ctx.sandbox(&policy).arg("--rootfs").arg(&s(&rootfs)).probe(&["stat", &s(&ctx.secret)]).unwrap();
    f.check(r.probe.as_ref().is_some_and(|p| !p.ok), || {
        format!("host file visible from the rootfs\n{}", r.out.describe())
    });
    f.finish(t);
}
