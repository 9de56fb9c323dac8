//! `probe <action> [args]`: run AS THE AGENT, perform one action with raw syscalls, print one JSON
//! line (`ProbeOutput`), exit 0 if the action succeeded, 1 if it was refused or failed, 2 on usage
//! error. The suites run it inside the sandbox (expecting refusals) and outside it (positive control,
//! expecting success), so every action must be able to succeed on an unconfined host.
//!
//! Safety stance: when run set-uid (euid != ruid) the probe refuses every action except
//! `whoami-euid`, so the set-uid copy the suites create cannot be used as a root shell.
#![allow(unsafe_code)] // raw escape syscalls are the point of this binary; each block says why it is sound

use std::ffi::CString;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};

use openshell_e2e::probe_bench as bench;
use openshell_e2e::probe_net as net;
use openshell_e2e::probe_out::{EXIT_OK, EXIT_REFUSED, EXIT_USAGE, Outcome, ProbeOutput};
use serde_json::{Value, json};

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Maps a raw syscall return: negative means failure with errno.
fn sys(step: &str, ret: i64) -> Outcome {
    if ret < 0 {
        let e = last_errno();
        Outcome::fail(Some(e), format!("{step}: {}", std::io::Error::from_raw_os_error(e)))
    } else {
        Outcome::ok(format!("{step} returned {ret}"))
    }
}

fn cstr(s: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("{s:?} contains NUL"))
}

fn arg<'a>(args: &'a [String], i: usize, what: &str) -> Result<&'a str, String> {
    args.get(i).map(String::as_str).ok_or_else(|| format!("missing argument {what}"))
}

fn parse<T: std::str::FromStr>(s: &str, what: &str) -> Result<T, String> {
    s.parse().map_err(|_| format!("bad {what}: {s:?}"))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let action = args.first().cloned().unwrap_or_default();
    let rest = args.get(1..).unwrap_or(&[]);
    // SAFETY: geteuid/getuid/getpid have no preconditions and cannot fail.
    let (euid, uid, pid) = unsafe { (libc::geteuid(), libc::getuid(), libc::getpid()) };
    let result = if euid != uid && action != "whoami-euid" {
        Err(format!("running set-uid (euid {euid}, uid {uid}): only whoami-euid is allowed"))
    } else {
        dispatch(&action, rest)
    };
    let (out, code) = match result {
        Ok(o) => {
            let code = if o.ok { EXIT_OK } else { EXIT_REFUSED };
            let out = ProbeOutput {
                action: action.clone(),
                ok: o.ok,
                errno: o.errno,
                detail: o.detail,
                pid: u32::try_from(pid).unwrap_or(0),
                uid,
                extra: o.extra,
            };
            (out, code)
        }
        Err(usage) => {
            let out = ProbeOutput {
                action: action.clone(),
                ok: false,
                errno: None,
                detail: format!("usage error: {usage}"),
                pid: u32::try_from(pid).unwrap_or(0),
                uid,
                extra: Value::Null,
            };
            (out, EXIT_USAGE)
        }
    };
    let line = serde_json::to_string(&out).unwrap_or_else(|_| "{}".into());
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
    std::process::exit(code);
}

fn dispatch(action: &str, a: &[String]) -> Result<Outcome, String> {
    Ok(match action {
        "read" => read(arg(a, 0, "PATH")?),
        "write" => write(arg(a, 0, "PATH")?),
        "listdir" => listdir(arg(a, 0, "PATH")?),
        "symlink-read" => {
            let (target, link) = (arg(a, 0, "TARGET")?, arg(a, 1, "LINK")?);
            match std::os::unix::fs::symlink(target, link) {
                Err(e) => Outcome::from_io("symlink", &e),
                Ok(()) => read(link),
            }
        }
        "hardlink" => {
            let (target, link) = (arg(a, 0, "TARGET")?, arg(a, 1, "LINK")?);
            match std::fs::hard_link(target, link) {
                Err(e) => Outcome::from_io("link", &e),
                Ok(()) => read(link),
            }
        }
        "exec" => exec(arg(a, 0, "PATH")?, &a[1..]),
        "setuid-exec" => setuid_exec(arg(a, 0, "PATH")?)?,
        "whoami-euid" => {
            // SAFETY: no preconditions.
            let (e, u) = unsafe { (libc::geteuid(), libc::getuid()) };
            Outcome::ok(format!("euid={e} uid={u}")).with(json!({"euid": e, "uid": u}))
        }
        "connect" => {
            let ip: IpAddr = parse(arg(a, 0, "IP")?, "IP")?;
            net::connect_ping(SocketAddr::new(ip, parse(arg(a, 1, "PORT")?, "PORT")?))
        }
        "connect-name" => net::connect_name(arg(a, 0, "HOST")?, parse(arg(a, 1, "PORT")?, "PORT")?),
        "udp-send" => {
            let ip: IpAddr = parse(arg(a, 0, "IP")?, "IP")?;
            net::udp_send(SocketAddr::new(ip, parse(arg(a, 1, "PORT")?, "PORT")?))
        }
        "dns" => net::dns(arg(a, 0, "QNAME")?, a.get(1).is_some_and(|t| t.eq_ignore_ascii_case("aaaa"))),
        "http-proxy-get" => net::http_proxy_get(arg(a, 0, "URL")?)?,
        "connect-proxy" => net::connect_proxy(arg(a, 0, "HOST")?, parse(arg(a, 1, "PORT")?, "PORT")?)?,
        "ws-echo" => net::ws_echo(arg(a, 0, "URL")?, arg(a, 1, "MODE (direct|forward|connect)")?)?,
        "ptrace" => ptrace(parse(arg(a, 0, "PID")?, "PID")?),
        "kill" => {
            let (pid, sig): (i32, i32) = (parse(arg(a, 0, "PID")?, "PID")?, parse(arg(a, 1, "SIG")?, "SIG")?);
            // SAFETY: kill takes plain integers; a refused or invalid target is reported via errno.
            sys("kill", i64::from(unsafe { libc::kill(pid, sig) }))
        }
        "mount" => mount(arg(a, 0, "DIR")?)?,
        "unshare-user" => {
            // SAFETY: unshare only changes this (single-threaded) process's namespaces.
            sys("unshare(CLONE_NEWUSER)", i64::from(unsafe { libc::unshare(libc::CLONE_NEWUSER) }))
        }
        "clone-newuser" => clone_newuser(false),
        "clone3-newuser" => clone_newuser(true),
        "bpf" => bpf(),
        "io-uring" => io_uring(),
        "keyctl" => keyctl()?,
        "perf-event" => perf_event(),
        "userfaultfd" => {
            const UFFD_USER_MODE_ONLY: i64 = 1;
            // SAFETY: userfaultfd takes flags only; a returned fd is closed by process exit.
            sys("userfaultfd", unsafe {
                libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC as i64 | UFFD_USER_MODE_ONLY)
            })
        }
        "open-by-handle" => open_by_handle()?,
        "read-environ" => {
            let pid = arg(a, 0, "PID")?;
            match std::fs::read(format!("/proc/{pid}/environ")) {
                Err(e) => Outcome::from_io("read environ", &e),
                Ok(b) if b.is_empty() => Outcome::fail(None, "environ readable but empty"),
                Ok(b) => {
                    Outcome::ok(String::from_utf8_lossy(&b).replace('\0', "\n")).with(json!({"len": b.len()}))
                }
            }
        }
        "memfd" => memfd()?,
        "nice" => nice(),
        "raw-socket" => {
            socket("socket(AF_INET, SOCK_RAW, ICMP)", libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP)
        }
        "packet-socket" => socket(
            "socket(AF_PACKET, SOCK_RAW)",
            libc::AF_PACKET,
            libc::SOCK_RAW,
            i32::from((libc::ETH_P_ALL as u16).to_be()),
        ),
        "netlink-audit" => {
            socket("socket(AF_NETLINK, NETLINK_AUDIT)", libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_AUDIT)
        }
        "bench-http" => {
            bench::bench_http(arg(a, 0, "URL")?, parse(arg(a, 1, "N")?, "N")?, arg(a, 2, "MODE")?)?
        }
        "bench-keepalive" => {
            bench::bench_keepalive(arg(a, 0, "URL")?, parse(arg(a, 1, "N")?, "N")?, arg(a, 2, "MODE")?)?
        }
        "bench-bulk" => bench::bench_bulk(arg(a, 0, "URL")?, arg(a, 1, "MODE")?)?,
        "hold-tunnels" => bench::hold_tunnels(
            arg(a, 0, "HOST")?,
            parse(arg(a, 1, "PORT")?, "PORT")?,
            parse(arg(a, 2, "N")?, "N")?,
            parse(arg(a, 3, "SECS")?, "SECS")?,
        )?,
        "unix-connect" => unix_connect(arg(a, 0, "PATH")?),
        "stat" => match std::fs::symlink_metadata(arg(a, 0, "PATH")?) {
            Err(e) => Outcome::from_io("lstat", &e),
            Ok(m) => Outcome::ok(format!("{:?}", m.file_type())),
        },
        "rename" => match std::fs::rename(arg(a, 0, "FROM")?, arg(a, 1, "TO")?) {
            Err(e) => Outcome::from_io("rename", &e),
            Ok(()) => Outcome::ok("renamed"),
        },
        "exec-ok" => exec_ok(arg(a, 0, "PATH")?, &a[1..]),
        "memfd-exec" => memfd_exec()?,
        "list-pids" => list_pids(),
        "id" => id(),
        "env" => env_report(),
        other => return Err(format!("unknown action {other:?}")),
    })
}

fn read(path: &str) -> Outcome {
    match std::fs::read(path) {
        Err(e) => Outcome::from_io("read", &e),
        Ok(b) => {
            let head = String::from_utf8_lossy(&b[..b.len().min(200)]).into_owned();
            Outcome::ok(head).with(json!({"len": b.len()}))
        }
    }
}

fn write(path: &str) -> Outcome {
    let r = std::fs::OpenOptions::new().write(true).create(true).truncate(true).open(path);
    match r.and_then(|mut f| f.write_all(b"written by probe\n")) {
        Err(e) => Outcome::from_io("write", &e),
        Ok(()) => Outcome::ok(format!("wrote {path}")),
    }
}

fn listdir(path: &str) -> Outcome {
    match std::fs::read_dir(path) {
        Err(e) => Outcome::from_io("opendir", &e),
        Ok(rd) => {
            let names: Vec<String> =
                rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
            Outcome::ok(names.join(",")).with(json!({"entries": names}))
        }
    }
}

fn exec(path: &str, args: &[String]) -> Outcome {
    match std::process::Command::new(path).args(args).output() {
        Err(e) => Outcome::from_io("execve", &e),
        Ok(o) => Outcome::ok(String::from_utf8_lossy(&o.stdout).into_owned())
            .with(json!({"status": o.status.code(), "stderr": String::from_utf8_lossy(&o.stderr)})),
    }
}

/// `connect()` to a pathname unix socket; succeeds only if the listener's greeting arrives.
fn unix_connect(path: &str) -> Outcome {
    use std::io::Read;
    match std::os::unix::net::UnixStream::connect(path) {
        Err(e) => Outcome::from_io("connect", &e),
        Ok(mut s) => {
            let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(5)));
            let mut buf = [0u8; 128];
            let n = s.read(&mut buf).unwrap_or(0);
            let greeting = String::from_utf8_lossy(&buf[..n]).into_owned();
            Outcome::ok(format!("connected: {greeting}")).with(json!({"greeting": greeting}))
        }
    }
}

/// Runs PATH ARGS; succeeds only if it exits 0 (e.g. the dynamic loader running a copied binary).
fn exec_ok(path: &str, args: &[String]) -> Outcome {
    match std::process::Command::new(path).args(args).output() {
        Err(e) => Outcome::from_io("execve", &e),
        Ok(o) => {
            let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
            let extra = json!({"status": o.status.code(), "stderr": stderr});
            if o.status.success() {
                Outcome::ok("exited 0").with(extra)
            } else {
                Outcome::fail(None, format!("exited {:?}: {stderr}", o.status.code())).with(extra)
            }
        }
    }
}

/// Copies this (static) probe into a memfd and executes it from there (`/proc/self/fd/N`).
fn memfd_exec() -> Result<Outcome, String> {
    let me = match std::fs::read("/proc/self/exe") {
        Ok(b) => b,
        Err(e) => return Ok(Outcome::from_io("read /proc/self/exe", &e)),
    };
    let name = cstr("openshell-probe-exec")?;
    // SAFETY: valid name; the fd is ours (not close-on-exec: the child execs it by path).
    let fd = unsafe { libc::memfd_create(name.as_ptr(), 0) };
    if fd < 0 {
        return Ok(sys("memfd_create", i64::from(fd)));
    }
    // SAFETY: `fd` was just returned to us; File takes ownership and closes it once.
    let mut f = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    if let Err(e) = f.write_all(&me) {
        return Ok(Outcome::from_io("write memfd", &e));
    }
    Ok(exec_ok(&format!("/proc/self/fd/{fd}"), &["whoami-euid".to_string()]))
}

fn setuid_exec(path: &str) -> Result<Outcome, String> {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return Err("setuid-exec proves nothing when the caller is already root".into());
    }
    Ok(match std::process::Command::new(path).arg("whoami-euid").output() {
        Err(e) => Outcome::from_io("execve", &e),
        Ok(o) => {
            let child = ProbeOutput::find_in(&String::from_utf8_lossy(&o.stdout));
            let euid = child.as_ref().and_then(|c| c.extra_u64("euid"));
            let extra = json!({"child_euid": euid});
            match euid {
                Some(0) => Outcome::ok("set-uid binary ran with euid 0").with(extra),
                Some(e) => {
                    Outcome::fail(None, format!("set-uid bit had no effect: child euid {e}")).with(extra)
                }
                None => Outcome::fail(None, format!("child printed no report: {:?}", o.status)).with(extra),
            }
        }
    })
}

fn ptrace(pid: i32) -> Outcome {
    // SAFETY: PTRACE_ATTACH takes a pid and ignores addr/data; failure is reported via errno.
    let r = unsafe { libc::ptrace(libc::PTRACE_ATTACH, pid, 0usize, 0usize) };
    if r < 0 {
        let e = last_errno();
        // SAFETY: as above, PTRACE_SEIZE with no options.
        let r2 = unsafe { libc::ptrace(libc::PTRACE_SEIZE, pid, 0usize, 0usize) };
        let e2 = if r2 < 0 { last_errno() } else { 0 };
        return Outcome::fail(
            Some(e),
            format!(
                "PTRACE_ATTACH: {}; PTRACE_SEIZE: {}",
                std::io::Error::from_raw_os_error(e),
                if r2 < 0 { std::io::Error::from_raw_os_error(e2).to_string() } else { "succeeded".into() }
            ),
        );
    }
    let mut status = 0;
    // SAFETY: we are now the tracer of pid; waiting for its stop and detaching leaves it running.
    unsafe {
        libc::waitpid(pid, &mut status, libc::__WALL);
        libc::ptrace(libc::PTRACE_DETACH, pid, 0usize, 0usize);
    }
    Outcome::ok(format!("attached to {pid} and detached"))
}

fn mount(dir: &str) -> Result<Outcome, String> {
    let _ = std::fs::create_dir_all(dir);
    let (src, target, fstype) = (cstr("none")?, cstr(dir)?, cstr("tmpfs")?);
    // SAFETY: all pointers are valid NUL-terminated strings living across the call; data is NULL.
    let r = unsafe { libc::mount(src.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) };
    let out = sys("mount tmpfs", i64::from(r));
    if r == 0 {
        // SAFETY: target is a valid path string; undoing our own mount.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
    Ok(out)
}

fn clone_newuser(v3: bool) -> Outcome {
    let ret = if v3 {
        // struct clone_args (11 u64): flags, pidfd, child_tid, parent_tid, exit_signal, stack,
        // stack_size, tls, set_tid, set_tid_size, cgroup.
        let mut args = [0u64; 11];
        args[0] = libc::CLONE_NEWUSER as u64;
        args[4] = libc::SIGCHLD as u64;
        // SAFETY: args is a valid clone_args of the size passed; with stack 0 the child continues on
        // a copy of our stack (fork semantics) and immediately _exits below.
        unsafe { libc::syscall(libc::SYS_clone3, args.as_ptr(), std::mem::size_of_val(&args)) }
    } else {
        // SAFETY: raw clone with fork semantics (no new stack, no shared VM); the child only _exits.
        unsafe {
            libc::syscall(
                libc::SYS_clone,
                (libc::CLONE_NEWUSER | libc::SIGCHLD) as i64,
                0i64,
                0i64,
                0i64,
                0i64,
            )
        }
    };
    if ret == 0 {
        // SAFETY: in the child: leave at once without running any Rust runtime code.
        unsafe { libc::_exit(0) };
    }
    let out = sys(if v3 { "clone3(CLONE_NEWUSER)" } else { "clone(CLONE_NEWUSER)" }, ret);
    if ret > 0 {
        let mut st = 0;
        // SAFETY: reaping our own child.
        unsafe { libc::waitpid(ret as i32, &mut st, 0) };
    }
    out
}

fn bpf() -> Outcome {
    // union bpf_attr for BPF_MAP_CREATE: map_type, key_size, value_size, max_entries (u32 each), rest 0.
    let mut attr = [0u32; 32];
    attr[0] = 2; // BPF_MAP_TYPE_ARRAY
    attr[1] = 4;
    attr[2] = 4;
    attr[3] = 1;
    // SAFETY: attr is a zero-padded bpf_attr of the size passed; a returned fd is closed at exit.
    sys("bpf(BPF_MAP_CREATE)", unsafe {
        libc::syscall(libc::SYS_bpf, 0i64, attr.as_ptr(), std::mem::size_of_val(&attr))
    })
}

fn io_uring() -> Outcome {
    let params = [0u8; 120]; // struct io_uring_params, zeroed
    // SAFETY: params is a writable zeroed io_uring_params of the right size; the fd is closed at exit.
    sys("io_uring_setup", unsafe { libc::syscall(libc::SYS_io_uring_setup, 1i64, params.as_ptr()) })
}

fn keyctl() -> Result<Outcome, String> {
    const KEY_SPEC_PROCESS_KEYRING: i64 = -2;
    let (ty, desc) = (cstr("user")?, cstr("openshell-probe")?);
    let payload = b"x";
    // SAFETY: valid strings and a 1-byte payload; the key lives in the process keyring, gone at exit.
    Ok(sys("add_key", unsafe {
        libc::syscall(
            libc::SYS_add_key,
            ty.as_ptr(),
            desc.as_ptr(),
            payload.as_ptr(),
            1i64,
            KEY_SPEC_PROCESS_KEYRING,
        )
    }))
}

fn perf_event() -> Outcome {
    // struct perf_event_attr: type u32, size u32, config u64, ... ; PERF_TYPE_SOFTWARE/CPU_CLOCK,
    // exclude_kernel|exclude_hv so that perf_event_paranoid 2 allows it for ordinary users.
    let mut attr = [0u64; 16];
    attr[0] = 1 | (128u64 << 32); // type = PERF_TYPE_SOFTWARE, size = 128
    attr[1] = 0; // config = PERF_COUNT_SW_CPU_CLOCK
    attr[5] = (1 << 5) | (1 << 6); // flags: exclude_kernel, exclude_hv
    // SAFETY: attr is a zero-padded perf_event_attr of the declared size; the fd is closed at exit.
    sys("perf_event_open", unsafe {
        libc::syscall(libc::SYS_perf_event_open, attr.as_ptr(), 0i64, -1i64, -1i64, 0i64)
    })
}

fn open_by_handle() -> Result<Outcome, String> {
    // struct file_handle { u32 handle_bytes; i32 handle_type; u8 f_handle[] }
    let mut buf = [0u32; 34];
    buf[0] = 128;
    let mut mount_id: i32 = 0;
    let root = cstr("/")?;
    // SAFETY: buf holds a file_handle with 128 bytes of room; root is a valid path.
    let r = unsafe {
        libc::syscall(
            libc::SYS_name_to_handle_at,
            libc::AT_FDCWD,
            root.as_ptr(),
            buf.as_mut_ptr(),
            &mut mount_id,
            0i64,
        )
    };
    if r < 0 {
        return Ok(sys("name_to_handle_at", r));
    }
    // SAFETY: root is a valid path; the fd is closed at exit. (O_PATH would not do: the kernel's
    // fdget() used by open_by_handle_at ignores O_PATH descriptors.)
    let mfd = unsafe { libc::open(root.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    // SAFETY: buf now holds the handle the kernel filled in.
    Ok(sys("open_by_handle_at", unsafe {
        libc::syscall(libc::SYS_open_by_handle_at, mfd, buf.as_ptr(), libc::O_RDONLY)
    }))
}

fn memfd() -> Result<Outcome, String> {
    let name = cstr("openshell-probe")?;
    // SAFETY: valid name; the fd is ours.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Ok(sys("memfd_create", i64::from(fd)));
    }
    let data = [0x90u8; 4096];
    // SAFETY: writing our own buffer to our own fd.
    let w = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
    Ok(sys("memfd_create+write", w as i64))
}

fn nice() -> Outcome {
    // SAFETY: setpriority/getpriority on ourselves (who = 0).
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 5) };
    if r < 0 {
        return sys("setpriority(+5)", -1);
    }
    // SAFETY: as above.
    let now = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    Outcome::ok(format!("nice is now {now}")).with(json!({"nice": now}))
}

fn socket(step: &str, domain: i32, ty: i32, proto: i32) -> Outcome {
    // SAFETY: socket takes integers; the fd is closed at exit.
    sys(step, i64::from(unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, proto) }))
}

fn list_pids() -> Outcome {
    match std::fs::read_dir("/proc") {
        Err(e) => Outcome::from_io("opendir /proc", &e),
        Ok(rd) => {
            let mut pids: Vec<u32> = rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect();
            pids.sort_unstable();
            Outcome::ok(format!("{} pids", pids.len())).with(json!({"pids": pids}))
        }
    }
}

fn id() -> Outcome {
    match std::fs::read_to_string("/proc/self/status") {
        Err(e) => Outcome::from_io("read /proc/self/status", &e),
        Ok(s) => {
            let mut m = serde_json::Map::new();
            for line in s.lines() {
                if let Some((k, v)) = line.split_once(':')
                    && matches!(
                        k,
                        "Uid"
                            | "Gid"
                            | "Groups"
                            | "CapInh"
                            | "CapPrm"
                            | "CapEff"
                            | "CapBnd"
                            | "CapAmb"
                            | "NoNewPrivs"
                            | "Seccomp"
                            | "Seccomp_filters"
                            | "NSpid"
                    )
                {
                    m.insert(
                        k.to_string(),
                        Value::String(v.split_whitespace().collect::<Vec<_>>().join(" ")),
                    );
                }
            }
            Outcome::ok("status fields").with(Value::Object(m))
        }
    }
}

fn env_report() -> Outcome {
    let env: serde_json::Map<String, Value> = std::env::vars().map(|(k, v)| (k, Value::String(v))).collect();
    let cwd = std::env::current_dir().map(|p| p.display().to_string()).unwrap_or_default();
    let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    Outcome::ok(cwd.clone()).with(json!({"env": env, "cwd": cwd, "resolv_conf": resolv}))
}
