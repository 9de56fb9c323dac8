//! Seccomp user notification end to end: a child process (a copy of this test binary running only the
//! named test, in the role given by the environment) installs the notify filter and passes the listener
//! to this process over `SCM_RIGHTS`, like the agent does to the supervisor. Refused calls fail with the
//! table's errno once answered, the listener sees who made them, and a closed listener keeps every call
//! refused (`ENOSYS`), pending ones included.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
use openshell_supervisor_sys::seccomp_notify::{self, Listener, Readiness};
use openshell_supervisor_sys::{fdpass, process};

use super::on_own_thread;

/// Set in the child: which role to play, and the inherited socket to send the listener on.
const ROLE: &str = "OPENSHELL_TEST_NOTIFY_ROLE";
const SOCK: &str = "OPENSHELL_TEST_NOTIFY_SOCK";

fn errno_of<T>(r: nix::Result<T>) -> Option<nix::Error> {
    r.err()
}

/// Installs the notify filter on this thread and hands the listener to the parent.
fn child_install_and_send() {
    let fd: i32 = std::env::var(SOCK).unwrap().parse().unwrap();
    let sock = process::adopt_inherited_fd(fd).unwrap();
    let listener = seccomp_notify::install(&seccomp_notify::compile_notify().unwrap()).unwrap();
    fdpass::send(sock.as_fd(), b"listener", &[listener.as_fd()]).unwrap();
    drop(listener); // only the parent can answer
}

fn spawn_child(test: &str, role: &str) -> (Child, OwnedFd) {
    let (ours, theirs) = fdpass::seqpacket_pair().unwrap();
    let inheritable = process::dup_inheritable(theirs.as_fd()).unwrap();
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--test-threads=1", "--nocapture"])
        .env(ROLE, role)
        .env(SOCK, inheritable.as_raw_fd().to_string())
        .spawn()
        .unwrap();
    drop(inheritable);
    (child, ours)
}

fn receive_listener(sock: &OwnedFd) -> Listener {
    assert!(fdpass::wait_readable(sock.as_fd(), Some(Duration::from_secs(20))).unwrap(), "no listener");
    let mut msg = fdpass::recv(sock.as_fd(), 64).unwrap().unwrap();
    assert_eq!(msg.payload, b"listener");
    Listener::new(msg.fds.pop().unwrap())
}

fn tgid_of(tid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("Tgid:")).and_then(|v| v.trim().parse().ok())
}

#[test]
fn refused_calls_reach_the_listener_and_fail_with_the_table_errno() {
    const NAME: &str =
        "suite::seccomp_notify::refused_calls_reach_the_listener_and_fail_with_the_table_errno";
    if std::env::var_os(ROLE).is_some() {
        child_install_and_send();
        assert_eq!(
            errno_of(nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER)),
            Some(nix::Error::EPERM)
        );
        // SAFETY: PTRACE_TRACEME takes no pointers; refused, it changes nothing.
        let rc = unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) };
        assert_eq!((rc, nix::Error::last()), (-1, nix::Error::EPERM));
        let packet = socket(AddressFamily::Packet, SockType::Raw, SockFlag::SOCK_CLOEXEC, None);
        assert_eq!(errno_of(packet), Some(nix::Error::EAFNOSUPPORT));
        // SAFETY: clone3 with a NULL argument block: the filter answers ENOSYS before the kernel reads it.
        let rc = unsafe { libc::syscall(libc::SYS_clone3, std::ptr::null::<libc::c_void>(), 0usize) };
        assert_eq!((rc, nix::Error::last()), (-1, nix::Error::ENOSYS), "clone3 stays ENOSYS, unnotified");
        assert!(nix::unistd::getppid().as_raw() > 0, "allowed calls are untouched");
        // A second listener in the chain is refused by the table (it would receive the refused calls
        // first and could let them run), before the kernel's own EBUSY.
        // SAFETY: seccomp(SET_MODE_FILTER, NEW_LISTENER, NULL): refused before the program is read.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
                std::ptr::null::<libc::c_void>(),
            )
        };
        assert_eq!((rc, nix::Error::last()), (-1, nix::Error::EPERM));
        return;
    }
    let (mut child, sock) = spawn_child(NAME, "answer");
    let listener = receive_listener(&sock);
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        assert!(Instant::now() < deadline, "child did not finish; seen {seen:?}");
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if listener.wait(Some(Duration::from_millis(50))).unwrap() != Readiness::Ready {
            continue;
        }
        let Some(n) = listener.recv().unwrap() else { continue };
        // The caller is blocked in the call: its /proc entry is stable until we answer.
        assert_eq!(tgid_of(n.pid), Some(child.id()), "notification from the child");
        assert!(listener.id_valid(n.id));
        let entry = seccomp_notify::matching_entry(i64::from(n.nr), &n.args).unwrap();
        assert!(listener.deny(n.id, entry.deny.errno()).unwrap());
        assert!(!listener.id_valid(n.id), "answered");
        seen.push(entry.syscall);
    };
    assert!(status.success(), "child saw other errnos than the table's ({status})");
    assert_eq!(seen, ["unshare", "ptrace", "socket", "seccomp"]);
    assert_eq!(listener.wait(Some(Duration::from_secs(5))).unwrap(), Readiness::Hangup);
}

#[test]
fn a_closed_listener_keeps_pending_calls_refused() {
    const NAME: &str = "suite::seccomp_notify::a_closed_listener_keeps_pending_calls_refused";
    if std::env::var_os(ROLE).is_some() {
        child_install_and_send();
        // The parent receives this notification and closes the listener without answering.
        assert_eq!(
            errno_of(nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER)),
            Some(nix::Error::ENOSYS)
        );
        // No listener any more: refused at once, never run.
        // SAFETY: PTRACE_TRACEME takes no pointers; refused, it changes nothing.
        let rc = unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) };
        assert_eq!((rc, nix::Error::last()), (-1, nix::Error::ENOSYS));
        return;
    }
    let (mut child, sock) = spawn_child(NAME, "close");
    let listener = receive_listener(&sock);
    assert_eq!(listener.wait(Some(Duration::from_secs(20))).unwrap(), Readiness::Ready);
    let n = listener.recv().unwrap().unwrap();
    assert_eq!(seccomp_notify::syscall_name(i64::from(n.nr)), Some("unshare"));
    drop(listener);
    let status = child.wait().unwrap();
    assert!(status.success(), "the pending call must fail with ENOSYS, the next one too ({status})");
}

#[test]
fn without_listener_refused_calls_fail_with_enosys() {
    on_own_thread(|| {
        // Notified calls would block this thread (nobody answers): close the listener first.
        let listener = seccomp_notify::install(&seccomp_notify::compile_notify().unwrap()).unwrap();
        drop(listener);
        assert_eq!(
            errno_of(nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)),
            Some(nix::Error::ENOSYS)
        );
        assert_eq!(errno_of(nix::mount::umount("/nonexistent")), Some(nix::Error::ENOSYS));
        // SAFETY: add_key with NULL pointers is refused by the filter before the kernel reads them.
        let rc = unsafe { libc::syscall(libc::SYS_add_key, 0usize, 0usize, 0usize, 0usize, 0usize) };
        assert_eq!((rc, nix::Error::last()), (-1, nix::Error::ENOSYS));
        let vsock = socket(AddressFamily::Vsock, SockType::Stream, SockFlag::empty(), None);
        assert_eq!(errno_of(vsock), Some(nix::Error::ENOSYS), "EAFNOSUPPORT rows notify too");
        // With the listener gone the kernel would accept a new one; the table still refuses it, so no
        // process can take over the answers (and let a refused call run).
        let again = seccomp_notify::install(&seccomp_notify::compile_notify().unwrap());
        assert!(matches!(again, Err(seccomp_notify::NotifyError::Listener(nix::Error::ENOSYS))), "{again:?}");
        // Allowed calls and self-restriction without a listener keep working.
        assert!(nix::sys::memfd::memfd_create(c"x", nix::sys::memfd::MFdFlags::MFD_CLOEXEC).is_ok());
        openshell_supervisor_sys::seccomp::install(&openshell_supervisor_sys::seccomp::compile().unwrap())
            .unwrap();
    });
}

/// Cost per call on a thread without filter, with the plain filter and with the notify filter: allowed
/// calls (`getppid`, cached by the kernel as always-allowed; `ioctl(FIONREAD)`, which runs the filter
/// programs because `ioctl` has conditional rows) and refused ones (`unshare(CLONE_NEWUSER)`: errno
/// straight from the filter vs. a round trip to a listener thread). Best of several rounds (2 shared cores).
#[test]
#[ignore = "benchmark: cargo test -p openshell-supervisor-sys --test all -- --ignored --nocapture notify_cost"]
fn notify_cost() {
    const ALLOWED: u32 = 200_000;
    const REFUSED: u32 = 5_000;
    const ROUNDS: usize = 9;
    fn per_call(n: u32, mut f: impl FnMut()) -> f64 {
        let t = Instant::now();
        for _ in 0..n {
            f();
        }
        t.elapsed().as_nanos() as f64 / f64::from(n)
    }
    /// Best of `ROUNDS` for getppid, ioctl and (when `refuse`) a refused unshare.
    fn measure(refuse: bool) -> [f64; 3] {
        let (r, _w) = nix::unistd::pipe().unwrap();
        let mut best = [f64::MAX; 3];
        for _ in 0..ROUNDS {
            // SAFETY: getppid takes no arguments.
            let getppid = per_call(ALLOWED, || unsafe {
                libc::syscall(libc::SYS_getppid);
            });
            let mut avail: libc::c_int = 0;
            // SAFETY: FIONREAD writes one int through the pointer, which points to a live local.
            let ioctl = per_call(ALLOWED, || unsafe {
                libc::ioctl(r.as_raw_fd(), libc::FIONREAD, &mut avail);
            });
            let refused = if refuse {
                per_call(REFUSED, || {
                    assert_eq!(
                        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER),
                        Err(nix::Error::EPERM)
                    );
                })
            } else {
                0.0
            };
            for (b, v) in best.iter_mut().zip([getppid, ioctl, refused]) {
                *b = b.min(v);
            }
        }
        best
    }
    let none = on_own_thread(|| measure(false));
    let plain = on_own_thread(|| {
        openshell_supervisor_sys::seccomp::install(&openshell_supervisor_sys::seccomp::compile().unwrap())
            .unwrap();
        measure(true)
    });
    let notify = on_own_thread(|| {
        let fd = seccomp_notify::install(&seccomp_notify::compile_notify().unwrap()).unwrap();
        // Answers until no thread uses the filter any more (this one ends).
        std::thread::spawn(move || {
            let l = Listener::new(fd);
            loop {
                match l.wait(None) {
                    Ok(Readiness::Ready) => {
                        if let Ok(Some(n)) = l.recv() {
                            let _ = l.deny(n.id, libc::EPERM as u32);
                        }
                    }
                    Ok(Readiness::Idle) => {}
                    Ok(Readiness::Hangup) | Err(_) => break,
                }
            }
        });
        measure(true)
    });
    eprintln!(
        "ns/call (best of {ROUNDS}): getppid none {:.0} plain {:.0} notify {:.0} | ioctl(FIONREAD) none {:.0} \
         plain {:.0} notify {:.0} | refused unshare: plain {:.0}, notify (round trip) {:.0}",
        none[0], plain[0], notify[0], none[1], plain[1], notify[1], plain[2], notify[2]
    );
}
