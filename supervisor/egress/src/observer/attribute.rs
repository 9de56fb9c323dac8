//! Best-effort attribution of a refused UDP datagram to the sandbox process that sent it: the sender's
//! socket in `/proc/<init>/net/udp{,6}`, its owner among init's descendants, that owner's executable.
//! (Refused TCP connections go through [`crate::identity`], which knows TCP only.)
//!
//! Threat handled: none; this only adds context to an event that is emitted anyway. The identity comes
//! from the kernel's tables and links, never from the agent's bytes.
//! Residual risk: the sender may close its socket (or exit) before the lookup, then the event says
//! "unknown"; a socket shared by several processes is attributed to the first holder found. No hash is
//! computed (the event is a refusal, not a decision that depends on the binary).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use crate::identity::procnet;

/// Upper bound on processes walked.
const MAX_PIDS: usize = 4096;

/// The process holding the UDP socket bound to `agent` that sent to `dst`: (host pid, executable).
pub(crate) fn udp_sender(
    proc_root: &std::path::Path,
    init: i32,
    agent: SocketAddr,
    dst: SocketAddr,
) -> Result<(i32, String), String> {
    let any4 = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    let any6 = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
    // Connected to `dst`, or not connected; bound to the source address or to a wildcard.
    let locals = [agent, SocketAddr::new(any4, agent.port()), SocketAddr::new(any6, agent.port())];
    let remotes = [dst, SocketAddr::new(any4, 0), SocketAddr::new(any6, 0)];
    let tables: &[(&str, bool)] = if agent.ip().to_canonical().is_ipv4() {
        &[("udp", false), ("udp6", true)]
    } else {
        &[("udp6", true)]
    };
    let net = proc_root.join(init.to_string()).join("net");
    let inode = tables
        .iter()
        .filter_map(|(name, v6)| Some((std::fs::read_to_string(net.join(name)).ok()?, *v6)))
        .find_map(|(text, v6)| {
            locals.iter().find_map(|l| remotes.iter().find_map(|r| procnet::find_inode(&text, v6, *l, *r)))
        })
        .ok_or_else(|| format!("unknown: no UDP socket {agent} in the sandbox (already closed)"))?;
    let pid = owner(proc_root, init, inode)
        .ok_or_else(|| format!("unknown: no sandbox process holds socket inode {inode}"))?;
    let exe = std::fs::read_link(proc_root.join(pid.to_string()).join("exe"))
        .map_err(|e| format!("unknown: executable of pid {pid}: {e}"))?;
    Ok((pid, exe.to_string_lossy().into_owned()))
}

/// First of init and its descendants (breadth first) with a descriptor on `socket:[inode]`.
fn owner(proc_root: &std::path::Path, init: i32, inode: u64) -> Option<i32> {
    let want = PathBuf::from(format!("socket:[{inode}]"));
    let mut queue = vec![init];
    let mut i = 0;
    while i < queue.len() {
        let pid = queue[i];
        i += 1;
        let dir = proc_root.join(pid.to_string());
        if let Ok(fds) = std::fs::read_dir(dir.join("fd"))
            && fds.flatten().any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t == want))
        {
            return Some(pid);
        }
        let Ok(tasks) = std::fs::read_dir(dir.join("task")) else { continue };
        for task in tasks.flatten() {
            let Ok(text) = std::fs::read_to_string(task.path().join("children")) else { continue };
            for child in text.split_ascii_whitespace().filter_map(|c| c.parse::<i32>().ok()) {
                if queue.len() < MAX_PIDS && !queue.contains(&child) {
                    queue.push(child);
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_this_process_as_the_sender_of_a_refused_datagram() {
        let me = i32::try_from(std::process::id()).unwrap();
        let proc_root = std::path::Path::new("/proc");
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let agent = sock.local_addr().unwrap();
        let dst: SocketAddr = "127.0.0.1:9".parse().unwrap();
        // Unconnected, bound to a specific address.
        let (pid, exe) = udp_sender(proc_root, me, agent, dst).unwrap();
        assert_eq!(pid, me);
        assert_eq!(PathBuf::from(exe), std::env::current_exe().unwrap());
        // Connected.
        sock.connect(dst).unwrap();
        assert_eq!(udp_sender(proc_root, me, agent, dst).map(|(p, _)| p), Ok(me));
        drop(sock);
        let gone = udp_sender(proc_root, me, agent, dst).unwrap_err();
        assert!(gone.starts_with("unknown: no UDP socket"), "{gone}");
    }

    #[test]
    fn missing_proc_is_unknown() {
        let dir = std::env::temp_dir().join("openshell-no-such-proc");
        let r = udp_sender(&dir, 1, "10.0.0.1:5".parse().unwrap(), "10.0.0.2:9".parse().unwrap());
        assert!(r.is_err());
    }
}
