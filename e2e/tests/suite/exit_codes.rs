//! The supervisor exits with the agent's status (128+N when the agent dies of signal N) and forwards
//! SIGTERM to the agent.

use std::time::{Duration, Instant};

use openshell_e2e::sandbox::User;

use super::common::{offline, require_root};

#[test]
fn exit_status_is_the_agents() {
    let t = "exit_codes::exit_status_is_the_agents";
    if !require_root(t) {
        return;
    }
    let (_ns, ctx) = offline(User::Root);
    let policy = ctx.policy_file(&ctx.base_policy().to_yaml()).unwrap();
    for (script, want) in [("exit 0", 0), ("exit 7", 7), ("kill -TERM $$", 143), ("kill -KILL $$", 137)] {
        let o = ctx.sandbox(&policy).run(&["/bin/sh", "-c", script]).unwrap();
        assert_eq!(o.code, Some(want), "`sh -c '{script}'`\n{}", o.describe());
    }
}

/// Starts `sh -c 'touch started; exec sleep 30.<unique>'`, sends SIGTERM once the agent runs (and,
/// with `wait_up`, once the supervisor's lifecycle event says it is up), and checks the agent ended with
/// 143 and did not outlive the supervisor.
fn sigterm_case(t: &str, wait_up: bool) {
    if !require_root(t) {
        return;
    }
    let (_ns, ctx) = offline(User::Root);
    let policy = ctx.policy_file(&ctx.base_policy().to_yaml()).unwrap();
    let started = ctx.workdir.join("started");
    // A unique duration so that pgrep below finds this agent and nothing else.
    let sleep_arg = format!("30.{}{}", std::process::id() % 1000, if wait_up { 1 } else { 2 });
    let script = format!("touch {}; exec sleep {sleep_arg}", started.display());
    let run = ctx.sandbox(&policy).spawn(&["/bin/sh", "-c", &script]).unwrap();
    let up = |run: &openshell_e2e::sandbox::Running| {
        !wait_up || run.events_now().iter().any(|e| e.kind() == "lifecycle")
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while !(started.exists() && up(&run)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    if !started.exists() || !up(&run) {
        let o = run.wait(Duration::from_secs(1)).unwrap();
        panic!("the agent never started (or no lifecycle event)\n{}", o.describe());
    }
    run.signal("TERM").unwrap();
    let o = run.wait(Duration::from_secs(10)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let pattern = format!("^sleep {sleep_arg}$");
    let orphans = std::process::Command::new("pgrep")
        .args(["-f", &pattern])
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    assert!(
        orphans.is_empty(),
        "the agent outlived the supervisor: pids {}\n{}",
        String::from_utf8_lossy(&orphans),
        o.describe()
    );
    assert!(
        !o.timed_out && o.code == Some(143),
        "SIGTERM to the supervisor should end the agent with 143\n{}",
        o.describe()
    );
}

#[test]
fn sigterm_is_forwarded_to_the_agent() {
    sigterm_case("exit_codes::sigterm_is_forwarded_to_the_agent", true);
}

/// A driver may stop a sandbox right after starting it: once the agent runs, SIGTERM must be
/// forwarded even if the supervisor has not finished reporting that it is up.
#[test]
fn sigterm_right_after_the_agent_starts_is_forwarded() {
    sigterm_case("exit_codes::sigterm_right_after_the_agent_starts_is_forwarded", false);
}
