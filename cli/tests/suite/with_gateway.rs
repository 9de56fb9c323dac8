//! Every verb against the in-process fake gateway (see `fake.rs` for the scripted agent).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::fake::Fake;
use super::{code, openshell, stderr, stdout};

fn setup() -> (tempfile::TempDir, Fake) {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::start(dir.path());
    (dir, fake)
}

#[test]
fn foreground_create_routes_output_and_returns_the_agent_status() {
    let (dir, fake) = setup();
    let out = openshell(
        dir.path(),
        &[
            "sandbox",
            "create",
            "--name",
            "a",
            "--",
            "out:hello",
            "err:oops",
            "deny:example.com",
            "allow:ok.example",
            "exit:3",
        ],
    );
    let err = stderr(&out);
    assert_eq!(code(&out), 3, "{err}");
    assert_eq!(stdout(&out), "hello\n", "stdout carries only the agent's stdout");
    assert!(err.contains("oops\n"), "{err}");
    assert!(
        err.contains("openshell: denied network example.com:443 by /usr/bin/curl (no_endpoint)\n"),
        "{err}"
    );
    assert!(!err.contains("ok.example"), "allows are hidden without --verbose: {err}");
    assert!(!err.contains("provisioning"), "no progress on a non-terminal without --verbose: {err}");
    let calls = fake.calls();
    assert!(calls.contains(&"CreateSandbox a policy=0".to_string()), "{calls:?}");
    assert!(
        !calls.iter().any(|c| c.starts_with("WatchSandbox")),
        "no watch when nothing is shown: {calls:?}"
    );
}

#[test]
fn verbose_shows_steps_allows_and_gateway_notes() {
    let (dir, _fake) = setup();
    let out = openshell(dir.path(), &["-v", "sandbox", "create", "--name", "v", "--", "allow:ok.example"]);
    let err = stderr(&out);
    assert_eq!(code(&out), 0, "{err}");
    assert!(err.contains("openshell: creating v\n"), "{err}");
    assert!(err.contains("openshell: allowed network ok.example:443"), "{err}");
    assert!(err.contains("openshell: gateway: provisioning"), "{err}");
}

#[test]
fn failed_sandbox_exits_6_with_the_reason() {
    let (dir, _fake) = setup();
    let out = openshell(dir.path(), &["sandbox", "create", "--name", "b", "--", "fail:no supervisor"]);
    assert_eq!(code(&out), 6);
    assert!(stderr(&out).ends_with("openshell: sandbox b failed: no supervisor\n"), "{}", stderr(&out));
    let out =
        openshell(dir.path(), &["sandbox", "create", "--detach", "--name", "c", "--", "fail:bad rootfs"]);
    assert_eq!(code(&out), 6);
    assert!(stderr(&out).contains("sandbox c failed: bad rootfs"), "{}", stderr(&out));
}

#[test]
fn detach_prints_the_name_once_ready() {
    let (dir, _fake) = setup();
    let out = openshell(dir.path(), &["sandbox", "create", "--detach", "--", "stay"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), "generated-1\n");
    // A quick agent that already exited after READY still counts as ready.
    let out = openshell(dir.path(), &["sandbox", "create", "--detach", "--name", "quick", "--", "exit:0"]);
    assert_eq!((code(&out), stdout(&out).as_str()), (0, "quick\n"), "{}", stderr(&out));
}

#[test]
fn taken_name_exits_2() {
    let (dir, _fake) = setup();
    assert_eq!(
        code(&openshell(dir.path(), &["sandbox", "create", "--detach", "--name", "t", "--", "stay"])),
        0
    );
    let out = openshell(dir.path(), &["sandbox", "create", "--detach", "--name", "t", "--", "stay"]);
    assert_eq!(code(&out), 2);
    assert_eq!(stderr(&out), "openshell: the name `t` is taken\n");
}

#[test]
fn list_and_get_in_every_format() {
    let (dir, _fake) = setup();
    for (name, label) in [("one", "team=a"), ("two", "team=b")] {
        let out = openshell(
            dir.path(),
            &["sandbox", "create", "--detach", "--name", name, "--label", label, "--", "stay"],
        );
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }
    let out = openshell(dir.path(), &["sandbox", "list"]);
    let text = stdout(&out);
    assert!(text.starts_with("NAME  PHASE  AGE"), "{text}");
    assert!(text.contains("\none   ready  "), "{text}");
    let out = openshell(dir.path(), &["sandbox", "list", "-l", "team=b", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["sandboxes"].as_array().unwrap().len(), 1);
    assert_eq!(v["sandboxes"][0]["name"], "two");
    assert_eq!(v["sandboxes"][0]["phase"], "ready");
    assert_eq!(v["sandboxes"][0]["created_at"], "2025-01-31T12:00:00.000Z");
    let out = openshell(dir.path(), &["sandbox", "get", "one", "-o", "yaml"]);
    assert!(stdout(&out).contains("name: one\n"), "{}", stdout(&out));
    let out = openshell(dir.path(), &["sandbox", "get", "one"]);
    assert!(stdout(&out).contains("phase:       ready (running)"), "{}", stdout(&out));
    let out = openshell(dir.path(), &["sandbox", "get", "nope"]);
    assert_eq!(code(&out), 3);
    assert_eq!(stderr(&out), "openshell: no sandbox `nope`\n");
}

#[test]
fn delete_stop_start_pass_the_version_and_surface_conflicts() {
    let (dir, fake) = setup();
    for name in ["d", "racy-1"] {
        assert_eq!(
            code(&openshell(dir.path(), &["sandbox", "create", "--detach", "--name", name, "--", "stay"])),
            0
        );
    }
    let out = openshell(dir.path(), &["sandbox", "stop", "d", "--grace-ms", "500"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), "sandbox d stopped, agent exit status 143\n");
    let out = openshell(dir.path(), &["sandbox", "start", "d"]);
    assert_eq!((code(&out), stdout(&out).as_str()), (0, "d\n"), "{}", stderr(&out));
    let out = openshell(dir.path(), &["sandbox", "delete", "d"]);
    assert_eq!((code(&out), stdout(&out).as_str()), (0, "deleted d\n"), "{}", stderr(&out));
    let calls = fake.calls();
    for want in
        ["StopSandbox d rv=Some(1) grace=500", "StartSandbox d rv=Some(2)", "DeleteSandbox d rv=Some(3)"]
    {
        assert!(calls.contains(&want.to_string()), "{want} not in {calls:?}");
    }
    let out = openshell(dir.path(), &["sandbox", "delete", "racy-1"]);
    assert_eq!(code(&out), 4);
    assert!(stderr(&out).contains("the sandbox changed concurrently"), "{}", stderr(&out));
    assert!(stderr(&out).contains("run the command again"), "{}", stderr(&out));
}

#[test]
fn delete_all_reports_each_failure_and_exits_non_zero() {
    let (dir, _fake) = setup();
    for name in ["x1", "stuck-1", "x2"] {
        assert_eq!(
            code(&openshell(dir.path(), &["sandbox", "create", "--detach", "--name", name, "--", "stay"])),
            0
        );
    }
    let out = openshell(dir.path(), &["sandbox", "delete", "--all"]);
    assert_eq!(code(&out), 1);
    assert_eq!(stdout(&out), "deleted x1\ndeleted x2\n");
    assert!(stderr(&out).contains("openshell: stuck-1: the driver cannot remove it"), "{}", stderr(&out));
    let left = stdout(&openshell(dir.path(), &["sandbox", "list"]));
    assert!(left.contains("stuck-1") && !left.contains("x1"), "{left}");
}

#[test]
fn policy_set_waits_for_the_acknowledgement() {
    let (dir, _fake) = setup();
    let policy = dir.path().join("p.yaml");
    std::fs::write(&policy, "version: 1\n").unwrap();
    assert_eq!(
        code(&openshell(dir.path(), &["sandbox", "create", "--detach", "--name", "p", "--", "stay"])),
        0
    );
    let out = openshell(dir.path(), &["policy", "set", "p", "--file", policy.to_str().unwrap()]);
    let text = stdout(&out);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        text.starts_with("policy revision 2 stored for sandbox p\napplied: the sandbox enforces revision 2"),
        "{text}"
    );
    let out = openshell(dir.path(), &["policy", "get", "p"]);
    assert_eq!(
        stdout(&out),
        "# policy revision 2 of sandbox p, created 2025-01-31T12:00:00.000Z\nversion: 1\n"
    );
    let out = openshell(dir.path(), &["policy", "get", "p", "--revision", "7"]);
    assert_eq!(code(&out), 3);
    let out = openshell(dir.path(), &["policy", "set", "p", "--file", "/nonexistent.yaml"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("cannot read the policy file /nonexistent.yaml"));
}

#[test]
fn policy_set_says_when_it_is_not_yet_applied() {
    let (dir, _fake) = setup();
    let policy = dir.path().join("p.yaml");
    std::fs::write(&policy, "version: 1\n").unwrap();
    assert_eq!(
        code(&openshell(dir.path(), &["sandbox", "create", "--detach", "--name", "slow-1", "--", "stay"])),
        0
    );
    let started = Instant::now();
    let out =
        openshell(dir.path(), &["policy", "set", "slow-1", "-f", policy.to_str().unwrap(), "-o", "json"]);
    assert!(started.elapsed() >= Duration::from_secs(5));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["revision"].as_u64(), v["applied"].as_bool(), v["acked_revision"].as_u64()),
        (Some(2), Some(false), Some(1))
    );
}

#[test]
fn logs_pick_the_only_sandbox_and_print_json_lines() {
    let (dir, _fake) = setup();
    let out = openshell(dir.path(), &["logs"]);
    assert_eq!((code(&out), stderr(&out).as_str()), (3, "openshell: there are no sandboxes\n"));
    let _ = openshell(dir.path(), &["sandbox", "create", "--name", "l", "--", "out:hi", "deny:x.test"]);
    let out = openshell(dir.path(), &["logs"]);
    let text = stdout(&out);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(text.contains(" stdout  info  hi\n"), "{text}");
    assert!(
        text.contains("denied network x.test:443 by /usr/bin/curl (no_endpoint); hint: add x.test"),
        "{text}"
    );
    let out = openshell(dir.path(), &["sandbox", "logs", "l", "-o", "json"]);
    let lines: Vec<serde_json::Value> =
        stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[2]["event"]["decision"], "deny");
    let _ = openshell(dir.path(), &["sandbox", "create", "--name", "m", "--", "exit:0"]);
    let out = openshell(dir.path(), &["logs"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("2 sandboxes exist; name one of: l, m"), "{}", stderr(&out));
}

#[test]
fn status_and_doctor_report_the_gateway() {
    let (dir, _fake) = setup();
    let out = openshell(dir.path(), &["status"]);
    let text = stdout(&out);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(text.contains("reachable:  yes\n") && text.contains("version:    9.9.9-fake\n"), "{text}");
    assert!(text.contains("drivers:    local (ready: rootless)\n"), "{text}");
    let out = openshell(dir.path(), &["gateway", "status", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((v["reachable"].as_bool(), v["pid"].as_u64()), (Some(true), Some(4242)));
    let out = openshell(dir.path(), &["doctor", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let checks = v["checks"].as_array().unwrap();
    let gateway = checks.iter().find(|c| c["name"] == "gateway").unwrap();
    assert_eq!(gateway["status"], "ok", "{v}");
    assert!(checks.iter().any(|c| c["name"] == "driver local" && c["status"] == "ok"), "{v}");
}

#[test]
fn ctrl_c_stops_the_sandbox_and_waits_for_its_end() {
    let (dir, fake) = setup();
    let child = Command::new(env!("CARGO_BIN_EXE_openshell"))
        .args(["sandbox", "create", "--name", "live", "--", "out:hi", "stay"])
        .env_clear()
        .env("OPENSHELL_STATE_DIR", dir.path())
        .env("HOME", dir.path())
        .env("OPENSHELL_NO_AUTOSTART", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The signal handler is in place before the log stream is opened.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !fake.calls().iter().any(|c| c.starts_with("GetLogs live")) {
        assert!(Instant::now() < deadline, "never followed the logs: {:?}", fake.calls());
        std::thread::sleep(Duration::from_millis(10));
    }
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 143, "the agent's status after the stop: {}", stderr(&out));
    assert_eq!(stdout(&out), "hi\n");
    assert!(stderr(&out).contains("openshell: stopping sandbox live"), "{}", stderr(&out));
    assert!(fake.calls().contains(&"StopSandbox live rv=None grace=0".to_string()), "{:?}", fake.calls());
}
