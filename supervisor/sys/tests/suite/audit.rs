//! The pieces of Landlock denial reporting that can be checked without changing the host's audit
//! configuration: the kernel accepts the "log after exec" flag, the status query answers as root, and the
//! read-only log group delivers records in the format the parser expects.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use nix::sys::socket::{AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType};
use openshell_supervisor_sys::audit::{self, AuditLog, Received};
use openshell_supervisor_sys::landlock::{self, LandlockSpec};

use super::on_own_thread;

#[test]
fn landlock_accepts_logging_denials_after_exec() {
    let report = on_own_thread(|| {
        let mut prepared = landlock::prepare(&LandlockSpec::default()).unwrap();
        prepared.log_denials_after_exec(true);
        landlock::enforce(prepared).unwrap()
    });
    if report.abi < 7 {
        eprintln!("SKIPPED: Landlock ABI {} has no audit (needs 7)", report.abi);
        return;
    }
    assert!(report.log_denials_after_exec, "{report:?}");
    let without = on_own_thread(|| landlock::enforce(landlock::prepare(&LandlockSpec::default()).unwrap()));
    assert!(!without.unwrap().log_denials_after_exec, "only when asked for");
}

#[test]
fn audit_status_and_log_group_need_privileges() {
    let root = nix::unistd::geteuid().is_root();
    match (audit::status(), root) {
        (Ok(s), _) => assert!(s.enabled <= 2 && s.failure <= 2, "{s:?}"),
        (Err(e), true) => panic!("root can query the audit status: {e}"),
        (Err(_), false) => {}
    }
    assert_eq!(AuditLog::open().is_ok(), root, "the log group needs CAP_AUDIT_READ");
}

/// Sends one `AUDIT_USER_AVC` message (the one user message the kernel logs even with audit disabled) and
/// reads it back from the log group. Ignored by default: it writes one line to the host's kernel log.
#[test]
#[ignore = "writes one record to the host's kernel log; run as root with --ignored"]
fn the_log_group_delivers_parsable_records() {
    const AUDIT_USER_AVC: u16 = 1107;
    let log = AuditLog::open().unwrap();
    let sock = nix::sys::socket::socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkAudit,
    )
    .unwrap();
    nix::sys::socket::bind(sock.as_raw_fd(), &NetlinkAddr::new(0, 0)).unwrap();
    let text = b"openshell-supervisor-sys audit self-test\0";
    let mut msg = Vec::new();
    msg.extend_from_slice(&(16 + text.len() as u32).to_ne_bytes());
    msg.extend_from_slice(&AUDIT_USER_AVC.to_ne_bytes());
    msg.extend_from_slice(&1u16.to_ne_bytes()); // NLM_F_REQUEST
    msg.extend_from_slice(&[0; 8]);
    msg.extend_from_slice(text);
    nix::sys::socket::send(sock.as_raw_fd(), &msg, MsgFlags::empty()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Received::Records(records) = log.recv(Duration::from_millis(200)).unwrap() {
            for raw in records.iter().filter(|r| r.kind == AUDIT_USER_AVC) {
                let r = audit::parse(raw).unwrap_or_else(|| panic!("unparsable: {raw:?}"));
                if r.get("msg").is_some_and(|m| m.contains("audit self-test")) {
                    assert!(r.serial > 0, "{r:?}");
                    assert_eq!(r.get("pid"), Some(std::process::id().to_string().as_str()), "{r:?}");
                    return;
                }
            }
        }
    }
    panic!("the record never arrived on the log group");
}
