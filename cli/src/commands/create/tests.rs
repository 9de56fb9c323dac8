use super::*;
use crate::exit::INVALID;

fn args(command: &[&str]) -> CreateArgs {
    CreateArgs {
        name: None,
        policy: None,
        workdir: None,
        env: vec![],
        labels: vec![],
        driver: None,
        detach: false,
        tty: false,
        no_tty: false,
        command: command.iter().map(|s| (*s).to_string()).collect(),
    }
}

fn host(on_terminal: bool) -> Host {
    Host { on_terminal, shell: Some("/bin/zsh".into()), term: Some("screen".into()) }
}

#[test]
fn terminal_choice() {
    // No command: the login shell on a terminal, with the user's TERM.
    let spec = build_request(&args(&[]), &host(false)).unwrap().spec.unwrap();
    assert_eq!(spec.command, ["/bin/zsh", "-l"]);
    assert!(spec.tty);
    assert_eq!(spec.env.get("TERM").map(String::as_str), Some("screen"));
    let no_shell = Host { on_terminal: false, shell: Some("zsh".into()), term: None };
    let spec = build_request(&args(&[]), &no_shell).unwrap().spec.unwrap();
    assert_eq!(spec.command, ["/bin/sh", "-l"]);
    assert_eq!(spec.env.get("TERM").map(String::as_str), Some("xterm-256color"));
    // A command: a terminal only when the user is at one and stays attached, or asks.
    let on = |a: &CreateArgs, t: bool| build_request(a, &host(t)).unwrap().spec.unwrap().tty;
    let mut a = args(&["claude"]);
    assert!(!on(&a, false));
    assert!(on(&a, true));
    a.detach = true;
    assert!(!on(&a, true));
    a.tty = true;
    assert!(on(&a, false));
    let mut a = args(&["claude"]);
    a.no_tty = true;
    assert!(!on(&a, true));
    let spec = build_request(&a, &host(true)).unwrap().spec.unwrap();
    assert!(!spec.env.contains_key("TERM"), "no TERM invented for a pipe");
    // An explicit TERM wins.
    let mut a = args(&["vi"]);
    a.tty = true;
    a.env = vec!["TERM=vt100".into()];
    let spec = build_request(&a, &host(false)).unwrap().spec.unwrap();
    assert_eq!(spec.env.get("TERM").map(String::as_str), Some("vt100"));
}

#[test]
fn request_carries_everything() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("p.yaml");
    std::fs::write(&policy, "version: 1\n").unwrap();
    let sub = dir.path().join("work");
    std::fs::create_dir(&sub).unwrap();
    let mut a = args(&["python", "agent.py"]);
    a.name = Some("agent-1".into());
    a.policy = Some(policy);
    // Not canonical on purpose: the gateway must get the resolved path.
    a.workdir = Some(sub.join("..").join("work"));
    a.env = vec!["A=1".into()];
    a.labels = vec!["team=ml".into()];
    a.driver = Some("local".into());
    let req = build_request(&a, &host(false)).unwrap();
    assert_eq!(req.name, "agent-1");
    assert_eq!(req.policy_yaml, "version: 1\n");
    let spec = req.spec.unwrap();
    assert_eq!(spec.command, ["python", "agent.py"]);
    assert_eq!(PathBuf::from(&spec.workdir), std::fs::canonicalize(&sub).unwrap());
    assert_eq!(spec.env.get("A").map(String::as_str), Some("1"));
    assert_eq!(spec.labels.get("team").map(String::as_str), Some("ml"));
    assert_eq!(spec.driver, "local");
}

#[test]
fn defaults_are_left_to_the_gateway() {
    let req = build_request(&args(&["true"]), &host(false)).unwrap();
    assert_eq!(req.name, "");
    assert_eq!(req.policy_yaml, "");
    let spec = req.spec.unwrap();
    assert_eq!((spec.workdir.as_str(), spec.driver.as_str()), ("", ""));
}

fn invalid(a: &CreateArgs) -> String {
    let err = build_request(a, &host(false)).unwrap_err();
    assert_eq!(err.code(), INVALID, "{err}");
    err.to_string()
}

#[test]
fn bad_input_is_refused_before_any_rpc() {
    let mut a = args(&["true"]);
    a.name = Some("Bad_Name".into());
    assert!(invalid(&a).contains("invalid sandbox name `Bad_Name`"));
    let mut a = args(&[]);
    a.no_tty = true;
    assert_eq!(invalid(&a), "--no-tty needs a command after `--`");
    let mut a = args(&["true"]);
    a.env = vec!["NOEQUALS".into()];
    assert!(invalid(&a).contains("expected KEY=VALUE"));
    let mut a = args(&["true"]);
    a.policy = Some("/nonexistent/policy.yaml".into());
    assert!(invalid(&a).contains("cannot read the policy file /nonexistent/policy.yaml"));
    let mut a = args(&["true"]);
    a.workdir = Some("/nonexistent/dir".into());
    assert!(invalid(&a).contains("--workdir /nonexistent/dir"));
    let file = tempfile::NamedTempFile::new().unwrap();
    let mut a = args(&["true"]);
    a.workdir = Some(file.path().to_path_buf());
    assert!(invalid(&a).contains("is not a directory"));
}

#[test]
fn readiness_counts_only_the_current_run() {
    use openshell_proto::gateway::v1::PhaseTransition;
    let t = |p: Phase| PhaseTransition { phase: p as i32, reason: String::new(), at_ms: 1 };
    let mut sb = Sandbox { phase: Phase::Stopped as i32, ..Sandbox::default() };
    sb.history = vec![t(Phase::Provisioning), t(Phase::Ready), t(Phase::Stopped)];
    assert!(became_ready(&sb), "a quick agent that already exited was ready");
    sb.history.extend([t(Phase::Provisioning), t(Phase::Stopped)]);
    assert!(!became_ready(&sb), "the READY of an earlier run does not count");
    sb.history.clear();
    assert!(!became_ready(&sb));
    sb.phase = Phase::Ready as i32;
    assert!(became_ready(&sb));
}
