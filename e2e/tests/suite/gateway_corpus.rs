//! Policy enforcement from the supervisor issue holds when driven by the gateway: the filesystem/process
//! escape corpus of `escapes` (same cases, same policy, same verdicts), each case run as a gateway sandbox
//! (`CreateSandbox` with the probe as the command and a user-supplied workdir), its outcome read from the
//! gateway (phase, exit code, stored logs and security events) instead of from the supervisor's own
//! stdout and `--events` file. Plus the escape only the gateway has: its state directory (database,
//! socket) must be invisible to the agent, even under `read_only: [/]`; a positive control shows the same
//! script outside the sandbox does reach both, so the assertion can fail.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use openshell_e2e::events::{self, Event};
use openshell_e2e::gateway::{GatewayProc, all_logs, phase_is, run_with_timeout, wait_for};
use openshell_e2e::policy::Policy;
use openshell_e2e::probe_out::ProbeOutput;
use openshell_e2e::sandbox::User;
use openshell_e2e::{bins, sandbox};
use openshell_proto::gateway::v1 as pb;
use openshell_proto::gateway::v1::Phase;

use super::common::{Failures, notice, offline, require_root, skip};
use super::corpus::{Fixtures, cases, errno_ok, has_event, judge_event};
use super::gateway_lifecycle::rt;

/// A case's sandbox must have stopped within this (the probe does one action and exits).
const RUN_MAX: Duration = Duration::from_secs(60);
/// Sandboxes created at once (2 shared cores).
const BATCH: usize = 4;

fn request(
    name: &str,
    argv: &[String],
    workdir: Option<&Path>,
    policy_yaml: &str,
) -> pb::CreateSandboxRequest {
    pb::CreateSandboxRequest {
        name: name.into(),
        spec: Some(pb::SandboxSpec {
            command: argv.to_vec(),
            workdir: workdir.map(|w| w.display().to_string()).unwrap_or_default(),
            ..Default::default()
        }),
        policy_yaml: policy_yaml.into(),
    }
}

/// What the gateway kept of one finished sandbox.
struct Finished {
    sandbox: pb::Sandbox,
    logs: Vec<pb::LogEntry>,
}

impl Finished {
    fn lines(&self, src: pb::LogSource) -> String {
        self.logs
            .iter()
            .filter(|l| l.source == src as i32)
            .map(|l| l.text.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }
    fn stdout(&self) -> String {
        self.lines(pb::LogSource::Stdout)
    }
    /// EVENT entries as events; entries that are not JSON objects are returned apart.
    fn events(&self) -> (Vec<Event>, Vec<String>) {
        let mut ok = Vec::new();
        let mut bad = Vec::new();
        for l in self.logs.iter().filter(|l| l.source == pb::LogSource::Event as i32) {
            match serde_json::from_str::<serde_json::Value>(&l.text) {
                Ok(v) if v.is_object() => ok.push(Event(v)),
                _ => bad.push(l.text.clone()),
            }
        }
        (ok, bad)
    }
    fn describe(&self) -> String {
        let s = &self.sandbox;
        let logs: Vec<String> = self
            .logs
            .iter()
            .map(|l| {
                let src = pb::LogSource::try_from(l.source).map(|s| s.as_str_name()).unwrap_or("?");
                format!("    {:>4} {src:<18} {}", l.seq, l.text)
            })
            .collect();
        format!(
            "sandbox {} phase {:?} ({}) exit_code {:?}\n  logs:\n{}",
            s.name,
            Phase::try_from(s.phase).unwrap_or(Phase::Unspecified),
            s.phase_reason,
            s.exit_code,
            logs.join("\n")
        )
    }
}

/// Waits until the sandbox ended (STOPPED or FAILED) and reads its stored logs.
async fn finish(
    gw: &GatewayProc,
    c: &mut pb::sandbox_service_client::SandboxServiceClient<tonic::transport::Channel>,
    name: &str,
) -> Result<Finished, String> {
    let sandbox = wait_for(c, name, RUN_MAX, |s| phase_is(s, Phase::Stopped) || phase_is(s, Phase::Failed))
        .await
        .map_err(|e| format!("{e:#}"))?;
    let logs = all_logs(gw, name).await.map_err(|e| format!("reading the logs of {name}: {e:#}"))?;
    Ok(Finished { sandbox, logs })
}

#[test]
fn corpus_is_blocked_when_driven_by_the_gateway() {
    let t = "gateway_corpus::corpus_is_blocked_when_driven_by_the_gateway";
    if !require_root(t) {
        return;
    }
    // The Ctx wants a namespace (its direct runs use it); the gateway and its sandboxes do not run in it.
    let (_ns, ctx) = offline(User::Root);
    let fx = Fixtures::new(&ctx);
    let yaml = ctx.base_policy().read_only(&ctx.root.join("suid")).to_yaml();
    let gw = GatewayProc::start().unwrap();
    let all = cases(&ctx, &fx);
    let mut f = Failures::default();
    let mut gaps = Vec::new();
    let started = std::time::Instant::now();
    rt().block_on(async {
        let mut c = gw.sandboxes().await.unwrap();
        for batch in all.chunks(BATCH) {
            for case in batch {
                let mut argv = vec![ctx.probe_path()];
                argv.extend(case.sandbox_args.iter().cloned());
                // Case names are valid sandbox names (lower-case, digits, '-').
                if let Err(e) = c.create_sandbox(request(case.name, &argv, Some(&ctx.workdir), &yaml)).await {
                    f.push(format!("{}: CreateSandbox refused: {e:?}", case.name));
                }
            }
            for case in batch {
                let done = match finish(&gw, &mut c, case.name).await {
                    Ok(d) => d,
                    Err(e) => {
                        f.push(format!("{}: the sandbox did not finish: {e}", case.name));
                        continue;
                    }
                };
                let stdout = done.stdout();
                let Some(p) = ProbeOutput::find_in(&stdout) else {
                    f.push(format!(
                        "{}: the probe never reported (sandbox did not run it)\n{}",
                        case.name,
                        done.describe()
                    ));
                    continue;
                };
                let stopped = phase_is(&done.sandbox, Phase::Stopped);
                if p.ok || !stopped || done.sandbox.exit_code != Some(1) {
                    f.push(format!(
                        "{}: NOT BLOCKED (probe ok={}, sandbox exit_code {:?})\n{}",
                        case.name,
                        p.ok,
                        done.sandbox.exit_code,
                        done.describe()
                    ));
                    continue;
                }
                if !errno_ok(case.blocked, p.errno) {
                    f.push(format!(
                        "{}: refused for an unexpected reason: errno {} ({:?}), expected one of {:?}: {}",
                        case.name,
                        p.errno_name(),
                        p.errno,
                        case.blocked,
                        p.detail
                    ));
                }
                if let Some(l) = done.logs.iter().find(|l| l.text.contains(&ctx.secret_text)) {
                    f.push(format!("{}: the secret leaked into a log entry: {:?}", case.name, l));
                }
                let (evs, bad) = done.events();
                f.check(bad.is_empty(), || {
                    format!("{}: EVENT entries that are not JSON objects: {bad:?}", case.name)
                });
                match judge_event(case.name, has_event(&case.event, &evs), "denial") {
                    Ok(None) => {}
                    Ok(Some(n)) => gaps.push(n),
                    Err(e) => f.push(format!("{e}\n  events:\n{}", events::summary(&evs))),
                }
            }
        }
        let list = c.list_sandboxes(pb::ListSandboxesRequest::default()).await.unwrap().into_inner();
        f.check(list.sandboxes.len() == all.len(), || {
            format!("{} sandboxes listed for {} cases", list.sandboxes.len(), all.len())
        });
    });
    eprintln!("{} cases through the gateway in {:?}", all.len(), started.elapsed());
    f.check(!ctx.drop_dir.join("escaped").exists(), || "a file was written outside read_write".into());
    f.check(!ctx.ro_dir.join("escaped").exists(), || "a file was written into a read_only path".into());
    let log = gw.log_text();
    f.check(!log.contains("panicked"), || format!("the gateway panicked:\n{log}"));
    for g in &gaps {
        notice(&format!("[gateway] {g}"));
    }
    f.finish(t);
}

/// Lists the state dir and `sandboxes/` in it, reads the database, connects to the socket. `$1` is the
/// state directory. Markers make each step's outcome visible in stdout.
const STATE_SCRIPT: &str = r#"S="$1"
echo LS-BEGIN; /bin/ls -a "$S" "$S/sandboxes"; echo "LS-END rc=$?"
/usr/bin/stat -c 'STAT-OK %n' "$S/gateway.db" "$S/gateway.sock"
/bin/cat "$S/gateway.db"; echo
/usr/bin/python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1] + "/gateway.sock")
    print("CONNECTED")
except OSError as e:
    print("CONNECT-ERRNO", e.errno)
' "$S"
"#;

const PYTHON: &str = "/usr/bin/python3";
/// The first bytes of every SQLite database file.
const SQLITE_MAGIC: &str = "SQLite format 3";
const STATE_FILES: &[&str] = &["gateway.db", "gateway.sock", "gateway.pid", "gateway.db-wal"];

fn state_argv(state: &Path) -> Vec<String> {
    ["/bin/sh", "-c", STATE_SCRIPT, "sh", &state.display().to_string()]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// The entries `ls -a` printed between the markers.
fn listed(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .skip_while(|l| *l != "LS-BEGIN")
        .skip(1)
        .take_while(|l| !l.starts_with("LS-END"))
        .map(str::to_string)
        .collect()
}

fn connect_errno(stdout: &str) -> Option<i32> {
    stdout.lines().find_map(|l| l.strip_prefix("CONNECT-ERRNO ").and_then(|n| n.trim().parse().ok()))
}

/// The script run directly on the host (no sandbox), as `uid` (0 = root).
fn host_run(state: &Path, uid: u32) -> (String, String) {
    let argv = state_argv(state);
    let mut cmd = if uid == 0 {
        Command::new(&argv[0])
    } else {
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={uid}"))
            .arg(format!("--regid={uid}"))
            .arg("--clear-groups")
            .arg("--")
            .arg(&argv[0]);
        c
    };
    cmd.args(&argv[1..]).env_clear().env("PATH", sandbox::PATH).current_dir("/");
    let out = run_with_timeout(cmd, Duration::from_secs(30)).expect("host run of the state script");
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn agent_cannot_see_the_gateway_state_directory() {
    let t = "gateway_corpus::agent_cannot_see_the_gateway_state_directory";
    if !require_root(t) {
        return;
    }
    if !Path::new(PYTHON).is_file() {
        skip(t, &format!("{PYTHON} is not installed on this host"));
        return;
    }
    let gw = GatewayProc::start().unwrap();
    let state = gw.state.clone();
    // Everything readable: only the hiding of the state directory can keep it out of view.
    let yaml = Policy::base().read_only(Path::new("/")).to_yaml();
    let user_workdir = bins::test_dir("gwwd-").unwrap();
    let mut f = Failures::default();
    let agent_uid = rt().block_on(async {
        let mut c = gw.sandboxes().await.unwrap();
        // A neighbour whose state directory the agents must not see either.
        let other = c
            .create_sandbox(request("neighbour", &["sleep".into(), "1000".into()], None, ""))
            .await
            .unwrap()
            .into_inner();
        wait_for(&mut c, "neighbour", RUN_MAX, |s| phase_is(s, Phase::Ready)).await.unwrap();
        let mut agent_uid = None;
        // Default workdir (inside the state directory) and a user-supplied one (outside it).
        for (name, workdir) in [("peek-default-wd", None), ("peek-user-wd", Some(user_workdir.path()))] {
            c.create_sandbox(request(name, &state_argv(&state), workdir, &yaml)).await.unwrap();
            let done = match finish(&gw, &mut c, name).await {
                Ok(d) => d,
                Err(e) => {
                    f.push(format!("{name}: the sandbox did not finish: {e}"));
                    continue;
                }
            };
            let (out, all_text) =
                (done.stdout(), done.logs.iter().map(|l| l.text.as_str()).collect::<Vec<_>>().join("\n"));
            let d = || done.describe();
            f.check(out.lines().any(|l| l == "LS-BEGIN"), || {
                format!("{name}: the script did not run\n{}", d())
            });
            f.check(!all_text.contains(SQLITE_MAGIC), || {
                format!("{name}: the agent READ gateway.db\n{}", d())
            });
            f.check(!out.lines().any(|l| l == "CONNECTED"), || {
                format!("{name}: the agent CONNECTED to gateway.sock\n{}", d())
            });
            // ENOENT: not in its view. EACCES would mean it is visible and only file modes stop it.
            f.check(connect_errno(&out) == Some(libc::ENOENT), || {
                format!("{name}: connect() to gateway.sock must fail with ENOENT (not in the view)\n{}", d())
            });
            f.check(!out.lines().any(|l| l.starts_with("STAT-OK")), || {
                format!("{name}: the agent can stat the gateway's files\n{}", d())
            });
            let ls = listed(&out);
            for file in STATE_FILES.iter().copied().chain([other.id.as_str()]) {
                f.check(!ls.iter().any(|e| e == file), || {
                    format!("{name}: the agent lists `{file}`: {ls:?}\n{}", d())
                });
            }
            let uid = serde_json::from_str::<serde_json::Value>(&done.sandbox.enforcement_json)
                .ok()
                .and_then(|v| v["uid"].as_u64())
                .and_then(|u| u32::try_from(u).ok());
            agent_uid = agent_uid.or(uid);
        }
        agent_uid
    });

    // Positive controls: the same script outside the sandbox.
    let (out, err) = host_run(&state, 0);
    let ctl = || format!("stdout:\n{out}\nstderr:\n{err}");
    let ls = listed(&out);
    f.check(ls.iter().any(|e| e == "gateway.db") && ls.iter().any(|e| e == "gateway.sock"), || {
        format!("CONTROL (root, no sandbox): the state dir listing lacks gateway.db/gateway.sock\n{}", ctl())
    });
    f.check(out.contains(SQLITE_MAGIC), || {
        format!("CONTROL (root, no sandbox): gateway.db not read\n{}", ctl())
    });
    f.check(out.lines().any(|l| l == "CONNECTED"), || {
        format!("CONTROL (root, no sandbox): no connection to gateway.sock\n{}", ctl())
    });
    // As the agent's uid, without the sandbox: the path is reachable (0711 directories), so the ENOENT
    // and "no stat" above come from the hiding, not from file modes.
    match agent_uid {
        Some(uid) if uid != 0 => {
            let (out, err) = host_run(&state, uid);
            let ctl = || format!("stdout:\n{out}\nstderr:\n{err}");
            f.check(out.lines().any(|l| l.starts_with("STAT-OK") && l.ends_with("gateway.db")), || {
                format!("CONTROL (uid {uid}, no sandbox): gateway.db cannot be stat'ed\n{}", ctl())
            });
            f.check(
                connect_errno(&out).is_some_and(|e| e != libc::ENOENT) || out.contains("CONNECTED"),
                || {
                    format!(
                        "CONTROL (uid {uid}, no sandbox): connect() should not fail with ENOENT\n{}",
                        ctl()
                    )
                },
            );
        }
        other => f.push(format!("the enforcement report gave no non-root agent uid: {other:?}")),
    }
    let log = gw.log_text();
    f.check(!log.contains("panicked"), || format!("the gateway panicked:\n{log}"));
    f.finish(t);
}
