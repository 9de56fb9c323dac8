//! What the CLI does without any gateway: unreachable errors, input checks, completions, help.

use std::os::unix::fs::PermissionsExt;

use super::{code, openshell, openshell_with, stderr, stdout};

#[test]
fn unreachable_local_gateway_exits_5_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let out = openshell(dir.path(), &["sandbox", "list"]);
    let err = stderr(&out);
    let sock = dir.path().join("gateway.sock");
    assert_eq!(code(&out), 5, "{err}");
    assert!(
        err.starts_with(&format!(
            "openshell: cannot reach the gateway at unix://{}: no socket at this path",
            sock.display()
        )),
        "{err}"
    );
    assert!(err.contains("hint: start it with `openshell gateway start`"), "{err}");
    assert!(stdout(&out).is_empty());
}

#[test]
fn explicit_endpoint_is_never_autostarted() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("elsewhere.sock");
    let endpoint = format!("unix://{}", sock.display());
    let out = openshell_with(dir.path(), &["sandbox", "get", "a"], &[("OPENSHELL_GATEWAY", &endpoint)]);
    let err = stderr(&out);
    assert_eq!(code(&out), 5, "{err}");
    assert!(err.contains(&format!("cannot reach the gateway at {endpoint}")), "{err}");
    assert!(err.contains("hint: check OPENSHELL_GATEWAY"), "{err}");
}

#[test]
fn invalid_name_exits_2_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let out = openshell(dir.path(), &["sandbox", "create", "--name", "Bad_Name", "--", "true"]);
    let err = stderr(&out);
    assert_eq!(code(&out), 2, "{err}");
    assert!(
        err.contains("invalid sandbox name `Bad_Name`: character 'B' at position 1 is not allowed"),
        "{err}"
    );
    let out = openshell(dir.path(), &["sandbox", "create", "--name", "ends-", "--", "true"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("must not end with '-'"));
}

#[test]
fn no_tty_without_a_command_exits_2() {
    // Without a command the agent is the login shell on a terminal; refusing the terminal leaves nothing.
    let dir = tempfile::tempdir().unwrap();
    let out = openshell(dir.path(), &["sandbox", "create", "--name", "a", "--no-tty"]);
    assert_eq!(code(&out), 2);
    assert_eq!(stderr(&out), "openshell: --no-tty needs a command after `--`\n");
    let out = openshell(dir.path(), &["sandbox", "create", "--tty", "--no-tty", "--", "true"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot be used with"), "{}", stderr(&out));
}

#[test]
fn bad_flags_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["logs", "a", "--since", "yesterday"][..],
        &["sandbox", "create", "--env", "NOVALUE", "--", "true"],
        &["sandbox", "list", "-l", "=x"],
        &["sandbox", "frobnicate"],
        &["--gateway", "http://plain:80", "sandbox", "list"],
    ] {
        let out = openshell(dir.path(), args);
        assert_eq!(code(&out), 2, "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn unknown_config_field_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg_dir = dir.path().join("config").join("openshell");
    std::fs::create_dir_all(&cfg_dir).unwrap();
    let cfg = cfg_dir.join("config.yaml");
    std::fs::write(&cfg, "gatway: unix:///x.sock\n").unwrap();
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = openshell(dir.path(), &["sandbox", "list"]);
    let err = stderr(&out);
    assert_eq!(code(&out), 2, "{err}");
    assert!(err.contains("unknown field `gatway`") && err.contains(&cfg.display().to_string()), "{err}");
    // Once the file parses, a loose mode draws a warning but does not fail the command.
    std::fs::write(&cfg, "gateway: unix:///nonexistent/x.sock\n").unwrap();
    let out = openshell(dir.path(), &["sandbox", "list"]);
    let err = stderr(&out);
    assert!(err.contains("warning:") && err.contains("0644"), "{err}");
    assert_eq!(code(&out), 5, "{err}");
}

#[test]
fn status_reports_unreachable_with_exit_5() {
    let dir = tempfile::tempdir().unwrap();
    let out = openshell(dir.path(), &["status", "-o", "json"]);
    assert_eq!(code(&out), 5);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["reachable"], false);
    assert_eq!(v["source"], "local default");
    assert!(v["error"].as_str().unwrap().contains("no socket at this path"), "{v}");
}

#[test]
fn gateway_stop_without_a_gateway_is_fine() {
    let dir = tempfile::tempdir().unwrap();
    let out = openshell(dir.path(), &["gateway", "stop"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), "gateway is not running\n");
    // A pid file naming some other process (here: this test) must not get it signalled.
    std::fs::write(dir.path().join("gateway.pid"), std::process::id().to_string()).unwrap();
    let out = openshell(dir.path(), &["gateway", "stop"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), "gateway is not running (stale pid file)\n");
}

#[test]
fn completions_print_a_script() {
    let dir = tempfile::tempdir().unwrap();
    let out = openshell(dir.path(), &["completions", "bash"]);
    assert_eq!(code(&out), 0);
    let script = stdout(&out);
    assert!(script.contains("_openshell()"), "{script}");
    assert!(script.contains("complete -F _openshell"), "{script}");
    for shell in ["zsh", "fish"] {
        let out = openshell(dir.path(), &["completions", shell]);
        assert_eq!(code(&out), 0);
        assert!(stdout(&out).contains("openshell"));
    }
}

#[test]
fn help_documents_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let out = openshell(dir.path(), &["--help"]);
    assert_eq!(code(&out), 0);
    let text = stdout(&out);
    assert!(text.contains("Exit codes:") && text.contains("5  the gateway cannot be reached"), "{text}");
}
