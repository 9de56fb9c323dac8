//! The seccomp table installed on a dedicated thread (without TSYNC a filter binds the calling thread).

use std::os::fd::AsRawFd;

use nix::sys::socket::{AddressFamily, SockFlag, SockProtocol, SockType, socket};
use openshell_supervisor_sys::seccomp;

use super::on_own_thread;

fn errno_of<T>(r: nix::Result<T>) -> Option<nix::Error> {
    r.err()
}

#[test]
fn denied_calls_fail_with_their_errno_and_tolerated_ones_work() {
    on_own_thread(|| {
        let programs = seccomp::compile().unwrap();
        seccomp::install(&programs).unwrap();

        // SAFETY: PTRACE_TRACEME takes no pointers; denied, it changes nothing.
        let rc = unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) };
        assert_eq!((rc, nix::Error::last()), (-1, nix::Error::EPERM));
        assert_eq!(
            errno_of(nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER)),
            Some(nix::Error::EPERM)
        );
        assert_eq!(
            errno_of(nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)),
            Some(nix::Error::EPERM)
        );
        // SAFETY: clone3 with a NULL argument block: the filter answers ENOSYS before the kernel reads it
        // (without the filter the kernel would answer EINVAL for size 0); no process is created.
        let rc = unsafe { libc::syscall(libc::SYS_clone3, std::ptr::null::<libc::c_void>(), 0usize) };
        assert_eq!((rc, nix::Error::last()), (-1, nix::Error::ENOSYS));

        let packet = socket(AddressFamily::Packet, SockType::Raw, SockFlag::SOCK_CLOEXEC, None);
        assert_eq!(errno_of(packet), Some(nix::Error::EAFNOSUPPORT));
        let vsock = socket(AddressFamily::Vsock, SockType::Stream, SockFlag::empty(), None);
        assert_eq!(errno_of(vsock), Some(nix::Error::EAFNOSUPPORT));
        let raw = socket(
            AddressFamily::Inet,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            SockProtocol::Icmp,
        );
        assert_eq!(errno_of(raw), Some(nix::Error::EPERM));
        let raw6 = socket(AddressFamily::Inet6, SockType::Raw, SockFlag::empty(), SockProtocol::IcmpV6);
        assert_eq!(errno_of(raw6), Some(nix::Error::EPERM));
        let audit =
            socket(AddressFamily::Netlink, SockType::Raw, SockFlag::empty(), SockProtocol::NetlinkAudit);
        assert_eq!(errno_of(audit), Some(nix::Error::EPERM));
        assert!(
            socket(AddressFamily::Netlink, SockType::Raw, SockFlag::empty(), SockProtocol::NetlinkRoute)
                .is_ok()
        );
        assert!(socket(AddressFamily::Inet, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).is_ok());
        assert!(socket(AddressFamily::Inet6, SockType::Datagram, SockFlag::empty(), None).is_ok());
        assert!(socket(AddressFamily::Unix, SockType::Stream, SockFlag::empty(), None).is_ok());

        // TIOCSTI on a non-terminal: ENOTTY if allowed, EPERM when denied (nothing is injected anywhere).
        let null = std::fs::File::open("/dev/null").unwrap();
        let c: u8 = b'x';
        // SAFETY: TIOCSTI reads one byte through the pointer, which points to a live local; the target
        // is /dev/null, not a terminal.
        let rc = unsafe { libc::ioctl(null.as_raw_fd(), libc::TIOCSTI, &c as *const u8) };
        assert_eq!((rc, nix::Error::last()), (-1, nix::Error::EPERM));

        // SAFETY: personality takes an integer; 0xffffffff only queries the current persona.
        let current = unsafe { libc::personality(0xffff_ffff) };
        assert!(current >= 0, "querying the persona stays allowed");
        // SAFETY: as above; denied, the persona is unchanged.
        let rc = unsafe { libc::personality(libc::ADDR_NO_RANDOMIZE as libc::c_ulong) };
        assert_eq!((rc, nix::Error::last()), (-1, nix::Error::EPERM));

        // Tolerated on purpose: Node and friends need these.
        assert!(nix::sys::memfd::memfd_create(c"x", nix::sys::memfd::MFdFlags::MFD_CLOEXEC).is_ok());
        // SAFETY: setpriority on the calling thread with a higher nice value; no pointers.
        let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 1) };
        assert_eq!(rc, 0, "nice/setpriority must stay allowed");
        assert_eq!(errno_of(nix::mount::umount("/nonexistent")), Some(nix::Error::EPERM));
    });
}
