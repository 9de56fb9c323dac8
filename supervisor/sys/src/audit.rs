//! The kernel's audit records, read-only: the status query (`AUDIT_GET`) and the multicast log group
//! (`AUDIT_NLGRP_READLOG`) of `NETLINK_AUDIT`, which Landlock (ABI 7) uses to report denials.
//!
//! Nothing the supervisor uses changes the host's audit configuration: no rules, no registration as the
//! audit daemon. The one exception, [`set_audit_enabled`] (`AUDIT_SET`), exists for tests that switch
//! audit on around a run and restore it afterwards; the product never calls it. Reading the log group needs `CAP_AUDIT_READ` in the initial user namespace and only
//! works from the initial network namespace (the kernel multicasts there only); the status query needs
//! `CAP_AUDIT_CONTROL` and the initial pid namespace. Records are produced only while audit is enabled
//! (`auditctl -e 1` or `audit=1` on the kernel command line), which is the host's decision.
//!
//! Threat handled: none directly (observation only). Residual risk: the multicast group carries every
//! audit record of the host; callers must filter what concerns them. A reader that falls behind loses
//! records (`ENOBUFS`), which [`AuditLog::recv`] reports as [`Received::Overrun`].

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, send, setsockopt,
    socket, sockopt,
};

/// `AUDIT_GET`: query the status.
const AUDIT_GET: u16 = 1000;
/// `AUDIT_SET`: change the status (fields selected by `mask`).
const AUDIT_SET: u16 = 1001;
/// `AUDIT_STATUS_ENABLED`: the `mask` bit selecting `enabled`.
const AUDIT_STATUS_ENABLED: u32 = 1;
/// `AUDIT_NLGRP_READLOG`: the read-only multicast group (group 1, bit 0 of `nl_groups`).
const AUDIT_NLGRP_READLOG_MASK: u32 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_HDRLEN: usize = 16;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
/// Receive buffer asked for the log socket (the kernel doubles it; `SO_RCVBUFFORCE` as root).
const LOG_RCVBUF: usize = 4 << 20;

/// Record types used by the supervisor.
pub mod types {
    /// Syscall exit record (pid, exe, syscall number); only emitted when the host has audit rules.
    pub const SYSCALL: u16 = 1300;
    /// End of a multi-record event.
    pub const EOE: u16 = 1320;
    /// One Landlock denial.
    pub const LANDLOCK_ACCESS: u16 = 1423;
    /// A Landlock domain, the first time one of its denials is logged (and when it is freed).
    pub const LANDLOCK_DOMAIN: u16 = 1424;
}

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot create a NETLINK_AUDIT socket")]
    Socket(#[source] nix::Error),
    #[error("cannot join the audit log multicast group (needs CAP_AUDIT_READ in the initial user namespace)")]
    JoinLog(#[source] nix::Error),
    #[error("audit status request failed")]
    Io(#[source] nix::Error),
    #[error(
        "the kernel refused the audit status request (needs CAP_AUDIT_CONTROL in the initial pid namespace)"
    )]
    Refused(#[source] nix::Error),
    #[error("no answer to the audit status request")]
    Timeout,
    #[error("malformed audit status answer")]
    Malformed,
}

/// The kernel's audit state (`struct audit_status`, read-only view).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuditStatus {
    /// 0 off, 1 on, 2 on and locked.
    pub enabled: u32,
    /// What the kernel does when records are lost: 0 silent, 1 printk, 2 panic.
    pub failure: u32,
    /// Pid of the registered audit daemon (0: none; records then go to the kernel log).
    pub pid: u32,
    /// Records per second (0: unlimited).
    pub rate_limit: u32,
    pub backlog_limit: u32,
    /// Records lost so far.
    pub lost: u32,
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4).and_then(|s| s.try_into().ok()).map(u32::from_ne_bytes)
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    b.get(at..at + 2).and_then(|s| s.try_into().ok()).map(u16::from_ne_bytes)
}

/// Splits a netlink datagram into (type, payload) messages. Stops at the first malformed header.
fn messages(buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut rest = buf;
    while rest.len() >= NLMSG_HDRLEN {
        let (Some(len), Some(kind)) = (u32_at(rest, 0), u16_at(rest, 4)) else { break };
        let len = len as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            break;
        }
        out.push((kind, &rest[NLMSG_HDRLEN..len]));
        rest = &rest[((len + 3) & !3).min(rest.len())..];
    }
    out
}

/// Sends one `kind` request with `payload` on a fresh `NETLINK_AUDIT` socket and waits for the answer:
/// the payload of a `kind` reply (`AUDIT_GET`), or `None` on a positive acknowledgement (`AUDIT_SET`).
fn exchange(kind: u16, payload: &[u8]) -> Result<Option<Vec<u8>>, AuditError> {
    let sock =
        socket(AddressFamily::Netlink, SockType::Raw, SockFlag::SOCK_CLOEXEC, SockProtocol::NetlinkAudit)
            .map_err(AuditError::Socket)?;
    bind(sock.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(AuditError::Socket)?;
    let mut req = Vec::with_capacity(NLMSG_HDRLEN + payload.len());
    req.extend_from_slice(&((NLMSG_HDRLEN + payload.len()) as u32).to_ne_bytes());
    req.extend_from_slice(&kind.to_ne_bytes());
    req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    req.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel assigns ours
    req.extend_from_slice(payload);
    send(sock.as_raw_fd(), &req, MsgFlags::empty()).map_err(AuditError::Io)?;
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut buf = vec![0u8; 8192];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || !crate::fdpass::wait_readable(sock.as_fd(), Some(left)).unwrap_or(false) {
            return Err(AuditError::Timeout);
        }
        let n = recv(sock.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT).map_err(AuditError::Io)?;
        for (got, body) in messages(&buf[..n]) {
            if got == NLMSG_ERROR {
                let code = u32_at(body, 0).ok_or(AuditError::Malformed)? as i32;
                if code != 0 {
                    return Err(AuditError::Refused(nix::Error::from_raw(-code)));
                }
                if kind == AUDIT_SET {
                    return Ok(None);
                }
            } else if got == kind && kind == AUDIT_GET {
                return Ok(Some(body.to_vec()));
            }
        }
    }
}

/// Queries the audit status (`AUDIT_GET`). Read-only.
pub fn status() -> Result<AuditStatus, AuditError> {
    let payload = exchange(AUDIT_GET, &[])?.ok_or(AuditError::Malformed)?;
    let f = |i: usize| u32_at(&payload, i * 4).ok_or(AuditError::Malformed);
    // struct audit_status: mask, enabled, failure, pid, rate_limit, backlog_limit, lost.
    Ok(AuditStatus {
        enabled: f(1)?,
        failure: f(2)?,
        pid: f(3)?,
        rate_limit: f(4)?,
        backlog_limit: f(5)?,
        lost: f(6)?,
    })
}

/// Switches the kernel's audit on or off (`AUDIT_SET` with `AUDIT_STATUS_ENABLED`; `auditctl -e 1|0`).
/// Needs `CAP_AUDIT_CONTROL` in the initial user and pid namespaces; refused (`EPERM`) when the
/// configuration is locked (`enabled` 2).
///
/// This changes the host: it is meant for tests, which must restore the previous state. The supervisor
/// itself never calls it.
pub fn set_audit_enabled(enabled: bool) -> Result<(), AuditError> {
    // struct audit_status, truncated after `enabled` (the kernel zero-fills a short payload).
    let mut payload = Vec::with_capacity(8);
    payload.extend_from_slice(&AUDIT_STATUS_ENABLED.to_ne_bytes());
    payload.extend_from_slice(&u32::from(enabled).to_ne_bytes());
    exchange(AUDIT_SET, &payload).map(|_| ())
}

/// One raw record: its type and text (`audit(SECS.MS:SERIAL): key=value ...`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawRecord {
    pub kind: u16,
    pub text: String,
}

/// What one [`AuditLog::recv`] returned.
#[derive(Debug)]
pub enum Received {
    Records(Vec<RawRecord>),
    /// Nothing within the timeout.
    Idle,
    /// The socket's buffer overflowed: records were lost.
    Overrun,
}

/// A socket subscribed to the read-only audit log group.
#[derive(Debug)]
pub struct AuditLog {
    fd: OwnedFd,
}

impl AuditLog {
    /// Joins `AUDIT_NLGRP_READLOG`. Does not change what the kernel audits.
    pub fn open() -> Result<Self, AuditError> {
        let fd =
            socket(AddressFamily::Netlink, SockType::Raw, SockFlag::SOCK_CLOEXEC, SockProtocol::NetlinkAudit)
                .map_err(AuditError::Socket)?;
        if setsockopt(&fd, sockopt::RcvBufForce, &LOG_RCVBUF).is_err() {
            let _ = setsockopt(&fd, sockopt::RcvBuf, &LOG_RCVBUF);
        }
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, AUDIT_NLGRP_READLOG_MASK)).map_err(AuditError::JoinLog)?;
        Ok(Self { fd })
    }

    /// Waits at most `timeout` for records.
    pub fn recv(&self, timeout: Duration) -> Result<Received, AuditError> {
        if !crate::fdpass::wait_readable(self.fd.as_fd(), Some(timeout)).unwrap_or(false) {
            return Ok(Received::Idle);
        }
        let mut buf = vec![0u8; 16 * 1024];
        let n = match recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
            Ok(n) => n,
            Err(nix::Error::ENOBUFS) => return Ok(Received::Overrun),
            Err(nix::Error::EAGAIN | nix::Error::EINTR) => return Ok(Received::Idle),
            Err(e) => return Err(AuditError::Io(e)),
        };
        let records = messages(&buf[..n])
            .into_iter()
            .map(|(kind, payload)| {
                let end = payload.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
                RawRecord { kind, text: String::from_utf8_lossy(&payload[..end]).into_owned() }
            })
            .collect();
        Ok(Received::Records(records))
    }
}

/// A parsed record: the event's serial (records of one event share it) and its fields, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub kind: u16,
    pub serial: u64,
    pub fields: Vec<(String, String)>,
}

impl Record {
    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// Fields the kernel writes with `audit_log_untrustedstring`: quoted, or hex when they contain a quote,
/// a space or a control character.
const UNTRUSTED: &[&str] = &["path", "name", "exe", "comm", "ocomm", "proctitle", "cwd"];

fn unhex(s: &str) -> Option<String> {
    if s.is_empty() || !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let bytes: Option<Vec<u8>> =
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect();
    bytes.map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// Parses `audit(SECS.MS:SERIAL): key=value key="quoted value" ...`. Hex-encoded untrusted strings are
/// decoded. `None` when the header is missing.
pub fn parse(raw: &RawRecord) -> Option<Record> {
    let rest = raw.text.strip_prefix("audit(")?;
    let (stamp, rest) = rest.split_once("):")?;
    let serial = stamp.rsplit_once(':')?.1.parse().ok()?;
    let mut fields = Vec::new();
    let mut s = rest.trim_start();
    while !s.is_empty() {
        let Some((key, after)) = s.split_once('=') else { break };
        let key = key.trim();
        // Untrusted strings are "quoted"; user messages carry msg='...'.
        let quote = after.chars().next().filter(|c| *c == '"' || *c == '\'');
        let (value, next) = if let Some(q) = quote {
            let inner = &after[1..];
            match inner.split_once(q) {
                Some((v, n)) => (v.to_string(), n),
                None => (inner.to_string(), ""),
            }
        } else {
            let (v, n) = after.split_once(' ').unwrap_or((after, ""));
            let decoded = if UNTRUSTED.contains(&key) { unhex(v) } else { None };
            (decoded.unwrap_or_else(|| v.to_string()), n)
        };
        fields.push((key.to_string(), value));
        s = next.trim_start();
    }
    Some(Record { kind: raw.kind, serial, fields })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(kind: u16, text: &str) -> Record {
        parse(&RawRecord { kind, text: text.into() }).unwrap()
    }

    #[test]
    fn landlock_records_parse() {
        let r = rec(
            types::LANDLOCK_ACCESS,
            r#"audit(1729738800.268:30): domain=1a6fdc66f blockers=fs.read_file path="/etc/shadow" dev="vda" ino=351"#,
        );
        assert_eq!(r.serial, 30);
        assert_eq!(r.get("domain"), Some("1a6fdc66f"));
        assert_eq!(r.get("blockers"), Some("fs.read_file"));
        assert_eq!(r.get("path"), Some("/etc/shadow"));
        assert_eq!(r.get("ino"), Some("351"));
        let d = rec(
            types::LANDLOCK_DOMAIN,
            r#"audit(1729738800.268:30): domain=1a6fdc66f status=allocated mode=enforcing pid=286 uid=0 exe="/root/sandboxer" comm="sandboxer""#,
        );
        assert_eq!(
            (d.get("status"), d.get("pid"), d.get("comm")),
            (Some("allocated"), Some("286"), Some("sandboxer"))
        );
        let s =
            rec(types::LANDLOCK_ACCESS, "audit(1.2:7): domain=2 blockers=scope.signal opid=1 ocomm=\"sh\"");
        assert_eq!((s.get("opid"), s.get("ocomm")), (Some("1"), Some("sh")));
    }

    #[test]
    fn hex_encoded_untrusted_strings_are_decoded() {
        // "/tmp/a b" has a space: the kernel writes it in hex.
        let r = rec(
            types::LANDLOCK_ACCESS,
            "audit(1.2:3): domain=1 blockers=fs.make_reg path=2F746D702F612062 dev=\"tmpfs\" ino=5",
        );
        assert_eq!(r.get("path"), Some("/tmp/a b"));
        let r = rec(
            types::SYSCALL,
            "audit(1.2:3): arch=c000003e syscall=257 success=no exit=-13 pid=42 comm=\"cat\" exe=\"/usr/bin/cat\" key=(null)",
        );
        assert_eq!(
            (r.get("syscall"), r.get("pid"), r.get("exe"), r.get("key")),
            (Some("257"), Some("42"), Some("/usr/bin/cat"), Some("(null)"))
        );
        assert_eq!(r.get("arch"), Some("c000003e"), "hex only decoded for untrusted strings");
        assert!(parse(&RawRecord { kind: 1, text: "garbage".into() }).is_none());
        let r = rec(1107, "audit(1.2:4): pid=9 uid=0 msg='hello world x=1' res=1");
        assert_eq!((r.get("msg"), r.get("res")), (Some("hello world x=1"), Some("1")));
    }

    #[test]
    fn netlink_framing() {
        let mut buf = Vec::new();
        for (kind, text) in [(types::LANDLOCK_ACCESS, "audit(1.2:3): a=1\0"), (types::EOE, "audit(1.2:3): ")]
        {
            let len = NLMSG_HDRLEN + text.len();
            buf.extend_from_slice(&(len as u32).to_ne_bytes());
            buf.extend_from_slice(&kind.to_ne_bytes());
            buf.extend_from_slice(&[0; 10]);
            buf.extend_from_slice(text.as_bytes());
            buf.resize((buf.len() + 3) & !3, 0);
        }
        let m = messages(&buf);
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].0, m[1].0), (types::LANDLOCK_ACCESS, types::EOE));
        assert!(messages(&buf[..10]).is_empty(), "a truncated header is ignored");
    }
}
