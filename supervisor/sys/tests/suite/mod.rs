mod audit;
mod capture;
mod landlock;
mod seccomp;
mod seccomp_notify;

/// Runs `f` on a fresh thread and propagates its panic.
pub fn on_own_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match std::thread::spawn(f).join() {
        Ok(v) => v,
        Err(p) => std::panic::resume_unwind(p),
    }
}

/// Set in the child copy of this test binary started inside fresh user and network namespaces.
const IN_NETNS: &str = "OPENSHELL_TEST_IN_PRIVATE_NETNS";

/// Runs `body` in a private network namespace: as root, on a fresh thread that unshares one; otherwise in
/// a child copy of this test binary started under `unshare -Urn` (user + network namespace), running only
/// `test_name`. Prints SKIPPED only when neither works.
pub fn in_private_netns(test_name: &str, body: fn()) {
    if std::env::var_os(IN_NETNS).is_some() {
        return body();
    }
    let on_thread = on_own_thread(move || {
        let net_only = openshell_supervisor_sys::ns::Namespaces {
            mount: false,
            net: true,
            ipc: false,
            uts: false,
            pid: false,
            cgroup: false,
        };
        if openshell_supervisor_sys::ns::unshare(net_only).is_err() {
            return false;
        }
        body();
        true
    });
    if on_thread {
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let status = std::process::Command::new("unshare")
        .arg("-Urn")
        .arg(&exe)
        .args(["--exact", test_name, "--test-threads=1", "--nocapture"])
        .env(IN_NETNS, "1")
        .status();
    match status {
        Ok(s) => assert!(s.success(), "{test_name} failed inside `unshare -Urn` ({s})"),
        Err(e) => eprintln!("SKIPPED {test_name}: not root and cannot run `unshare -Urn` ({e})"),
    }
}
