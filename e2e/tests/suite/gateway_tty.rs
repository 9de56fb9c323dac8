//! Interactive sandboxes end to end: the real CLI on a real pseudo-terminal (the way a user at a terminal
//! runs it), the real gateway relaying, the real supervisor holding the agent's terminal. Covers the
//! default of `sandbox create` without a command (the login shell on a terminal), window sizes, Ctrl-C and
//! job control (the agent's controlling terminal), the exit status, detaching and reconnecting (with the
//! output written meanwhile), one client replacing another, refusals, rootless sandboxes, and that a relay
//! whose client stopped reading does not hold up the control stream (policy push and ack).

use std::time::Duration;

use openshell_e2e::gateway::{GatewayProc, cli_command, phase_is, wait_for};
use openshell_e2e::pty::PtyProgram;
use openshell_proto::gateway::v1 as pb;
use openshell_proto::gateway::v1::Phase;

use super::common::require_root;

const STEP: Duration = Duration::from_secs(20);
const CLI_MAX: Duration = Duration::from_secs(60);

fn shell() -> &'static str {
    if std::path::Path::new("/bin/bash").exists() { "/bin/bash" } else { "/bin/sh" }
}

/// The CLI with `args` on a new terminal of 40 x 120.
fn on_terminal(gw: &GatewayProc, args: &[&str]) -> PtyProgram {
    let mut cmd = cli_command(&gw.state, args, false).unwrap();
    cmd.env("SHELL", shell()).env("TERM", "xterm");
    PtyProgram::spawn(cmd, 40, 120).unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn cli_ok(gw: &GatewayProc, args: &[&str]) -> String {
    let out = gw.run_cli(args, CLI_MAX).unwrap();
    assert!(
        out.status.success(),
        "`openshell {}`: {:?} {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Types a command into the shell and waits for `marker` after it (computed by the shell, so the echo of
/// the typed line does not match it).
fn run_in_shell(term: &mut PtyProgram, line: &str, marker: &str) -> usize {
    let from = term.len();
    term.send(&format!("{line}\r")).unwrap();
    term.expect_from(from, marker, STEP).unwrap()
}

fn shell_session(gw: &GatewayProc, name: &str) {
    let mut term = on_terminal(gw, &["sandbox", "create", "--name", name]);
    term.expect("ready in", STEP).unwrap();
    // Type once the shell prompts, as a user would (a shell may discard what arrives while it starts).
    term.expect("$ ", STEP).unwrap();
    // Computed markers: `$((6*7))` echoes as typed, `42` appears only when the shell ran it.
    let at = run_in_shell(&mut term, "tty; stty size; echo ans-$((6*7))", "ans-42");
    let screen = term.screen();
    assert!(screen.contains("/dev/console"), "the agent's stdin is its terminal: {screen:?}");
    assert!(screen.contains("40 120"), "the client's window size reached the agent: {screen:?}");
    assert!(!screen.contains("not a tty"), "{screen:?}");
    assert!(
        !screen.contains("no job control") && !screen.contains("job control turned off"),
        "the terminal must be the agent's controlling terminal: {screen:?}"
    );
    // Ctrl-C interrupts the foreground job, not the session; without a controlling terminal the sleep
    // would run its 30 s and the marker would not appear in time.
    term.send("sleep 30\r").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    term.send("\u{3}").unwrap();
    let from = term.len().max(at);
    term.send("echo after-$((1+1))\r").unwrap();
    term.expect_from(from, "after-2", Duration::from_secs(8)).unwrap();
    // A resize follows SIGWINCH to the agent's terminal.
    term.resize(50, 100).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    run_in_shell(&mut term, "stty size; echo size-$((2+2))", "size-4");
    assert!(term.screen().contains("50 100"), "resize not relayed: {:?}", term.screen());
    // Still sandboxed: the host's files are read-only and the shadow file is out of reach.
    run_in_shell(
        &mut term,
        "echo x > /etc/openshell-tty-probe; cat /etc/shadow; echo probe-$((3+3))",
        "probe-6",
    );
    assert!(
        !std::path::Path::new("/etc/openshell-tty-probe").exists(),
        "a write outside the policy went through"
    );
    term.send("exit 3\r").unwrap();
    assert_eq!(term.wait(STEP).unwrap(), Some(3), "the CLI returns the shell's status: {:?}", term.screen());
}

#[test]
fn create_without_a_command_runs_a_login_shell_on_a_terminal() {
    if !require_root("gateway_tty::create_without_a_command_runs_a_login_shell_on_a_terminal") {
        return;
    }
    let gw = GatewayProc::start().unwrap();
    shell_session(&gw, "tty-shell");
    let got = cli_ok(&gw, &["sandbox", "get", "tty-shell", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&got).unwrap();
    assert_eq!(v["phase"], "stopped", "{v}");
    assert_eq!(v["exit_code"], 3, "{v}");
    // Keystrokes and screen contents are not stored as log lines.
    let logs = cli_ok(&gw, &["logs", "tty-shell"]);
    assert!(
        !logs.contains("ans-42") && !logs.contains("sleep 30"),
        "terminal bytes leaked into the logs: {logs}"
    );
}

#[test]
fn rootless_sandboxes_get_a_terminal_too() {
    if !require_root("gateway_tty::rootless_sandboxes_get_a_terminal_too") {
        return;
    }
    let gw = GatewayProc::start_unprivileged().unwrap();
    shell_session(&gw, "tty-rootless");
}

#[test]
fn detach_reconnect_and_takeover() {
    if !require_root("gateway_tty::detach_reconnect_and_takeover") {
        return;
    }
    let gw = GatewayProc::start().unwrap();
    // Detached with a terminal: what it writes before anyone attaches is kept for the first client.
    let script = "echo early-$((5*5)); exec /bin/sh";
    cli_ok(
        &gw,
        &["sandbox", "create", "--name", "tty-d", "--detach", "--tty", "--", "/bin/sh", "-c", script],
    );
    let mut first = on_terminal(&gw, &["sandbox", "connect", "tty-d"]);
    first.expect("early-25", STEP).unwrap();
    first.expect("$ ", STEP).unwrap();
    run_in_shell(&mut first, "echo one-$((1*1))", "one-1");
    // SIGHUP (the user's terminal closed) detaches; the agent keeps running.
    first.signal(libc::SIGHUP);
    assert_eq!(first.wait(STEP).unwrap(), Some(0), "{:?}", first.screen());
    assert!(first.screen().contains("detached from sandbox tty-d"), "{:?}", first.screen());
    let v: serde_json::Value =
        serde_json::from_str(&cli_ok(&gw, &["sandbox", "get", "tty-d", "-o", "json"])).unwrap();
    assert_eq!(v["phase"], "ready", "detaching must not stop the agent: {v}");

    // Two clients: the second replaces the first, which is told and exits 0.
    let mut second = on_terminal(&gw, &["sandbox", "connect", "tty-d"]);
    run_in_shell(&mut second, "echo two-$((1+1))", "two-2");
    let mut third = on_terminal(&gw, &["sandbox", "connect", "tty-d"]);
    assert_eq!(second.wait(STEP).unwrap(), Some(0), "{:?}", second.screen());
    assert!(second.screen().contains("keeps running"), "{:?}", second.screen());
    run_in_shell(&mut third, "echo three-$((1+2))", "three-3");
    third.send("exit 4\r").unwrap();
    assert_eq!(third.wait(STEP).unwrap(), Some(4), "{:?}", third.screen());
}

#[test]
fn attach_refusals_are_clear() {
    if !require_root("gateway_tty::attach_refusals_are_clear") {
        return;
    }
    let gw = GatewayProc::start().unwrap();
    cli_ok(&gw, &["sandbox", "create", "--name", "piped", "--detach", "--", "sleep", "60"]);
    let out = gw.run_cli(&["sandbox", "connect", "piped"], CLI_MAX).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("does not run on a terminal"), "{err}");
    let out = gw.run_cli(&["sandbox", "connect", "nope"], CLI_MAX).unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    let out = gw.run_cli(&["sandbox", "create", "--no-tty"], CLI_MAX).unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    // A stopped terminal sandbox: nothing to attach to.
    cli_ok(&gw, &["sandbox", "create", "--name", "tty-stopped", "--detach", "--tty", "--", "/bin/sh"]);
    cli_ok(&gw, &["sandbox", "stop", "tty-stopped"]);
    let out = gw.run_cli(&["sandbox", "connect", "tty-stopped"], CLI_MAX).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no running agent"), "{err}");
}

#[test]
fn a_stalled_terminal_client_does_not_hold_up_policy_pushes() {
    if !require_root("gateway_tty::a_stalled_terminal_client_does_not_hold_up_policy_pushes") {
        return;
    }
    let gw = GatewayProc::start().unwrap();
    cli_ok(&gw, &["sandbox", "create", "--name", "flood", "--detach", "--tty", "--", "/bin/sh"]);
    let mut term = on_terminal(&gw, &["sandbox", "connect", "flood"]);
    term.expect("$ ", STEP).unwrap();
    run_in_shell(&mut term, "echo go-$((4+4))", "go-8");
    // The agent floods its terminal and the client stops reading: the relay's HTTP/2 stream and queues
    // fill up and stay full.
    term.send("yes flood-line-to-fill-every-buffer-on-the-way\r").unwrap();
    term.expect("flood-line", STEP).unwrap();
    term.signal(libc::SIGSTOP);
    std::thread::sleep(Duration::from_secs(1));
    rt().block_on(async {
        let mut c = gw.sandboxes().await.unwrap();
        let before =
            c.get_sandbox(pb::GetSandboxRequest { name: "flood".into() }).await.unwrap().into_inner();
        let yaml = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../policies/examples/minimal.yaml"
        ))
        .unwrap();
        let started = std::time::Instant::now();
        let rev = c
            .update_policy(pb::UpdatePolicyRequest {
                name: "flood".into(),
                policy_yaml: yaml,
                resource_version: None,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(rev.revision > before.policy_revision);
        let s =
            wait_for(&mut c, "flood", Duration::from_secs(5), |s| s.acked_policy_revision >= rev.revision)
                .await
                .unwrap();
        assert!(phase_is(&s, Phase::Ready), "{s:?}");
        eprintln!("push-to-ack with a stalled terminal relay: {:?}", started.elapsed());
    });
    term.signal(libc::SIGCONT);
    term.send("\u{3}").unwrap();
    term.send("exit 0\r").unwrap();
    assert_eq!(term.wait(STEP).unwrap(), Some(0), "the session must end normally after the stall");
}

#[test]
fn commands_piped_into_the_default_shell_run_and_end_it() {
    if !require_root("gateway_tty::commands_piped_into_the_default_shell_run_and_end_it") {
        return;
    }
    let gw = GatewayProc::start().unwrap();
    let mut cmd = cli_command(&gw.state, &["sandbox", "create", "--name", "piped-shell"], false).unwrap();
    cmd.env("SHELL", "/bin/sh")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        // No `exit`: the end of input (Ctrl-D on the agent's terminal) ends the shell.
        stdin.write_all(b"test -t 0 && echo on-a-tty-$((3*3))\n").unwrap();
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = rx.recv_timeout(CLI_MAX).expect("the shell did not end at the end of input").unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("on-a-tty-9"), "{stdout:?} {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout:?}");
}
