//! The gateway, the local driver and supervisor sessions end to end, through the gRPC API of a real
//! gateway starting real supervisors: lifecycle verbs, output and exit codes, policy pushes, optimistic
//! concurrency, bad input leaving nothing behind.

use std::time::{Duration, Instant};

use openshell_e2e::gateway::{GatewayProc, all_logs, phase_is, supervisor_pids, wait_for};
use openshell_proto::gateway::v1 as pb;
use openshell_proto::gateway::v1::Phase;

use super::common::require_root;

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

pub fn create_req(name: &str, cmd: &[&str]) -> pb::CreateSandboxRequest {
    pb::CreateSandboxRequest {
        name: name.into(),
        spec: Some(pb::SandboxSpec {
            command: cmd.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }),
        policy_yaml: String::new(),
    }
}

pub const READY_WAIT: Duration = Duration::from_secs(20);

fn code(e: &tonic::Status) -> tonic::Code {
    e.code()
}

#[test]
fn create_stop_start_delete() {
    if !require_root("gateway_lifecycle::create_stop_start_delete") {
        return;
    }
    let gw = GatewayProc::start().unwrap();
    rt().block_on(async {
        let mut c = gw.sandboxes().await.unwrap();
        let created = c.create_sandbox(create_req("life", &["sleep", "1000"])).await.unwrap().into_inner();
        assert!(created.id.starts_with("sbx-"));
        assert_eq!(created.name, "life");
        let ready = wait_for(&mut c, "life", READY_WAIT, |s| phase_is(s, Phase::Ready)).await.unwrap();
        assert!(ready.connected, "READY without a session: {ready:?}");
        assert_eq!(ready.acked_policy_revision, ready.policy_revision);
        assert!(
            ready.enforcement_json.contains("landlock"),
            "no enforcement report: {}",
            ready.enforcement_json
        );
        assert!(gw.sandbox_dir(&created.id).join("workdir").is_dir());

        let list = c.list_sandboxes(pb::ListSandboxesRequest::default()).await.unwrap().into_inner();
        assert_eq!(list.sandboxes.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["life"]);

        let stopped = c
            .stop_sandbox(pb::StopSandboxRequest {
                name: "life".into(),
                grace_ms: 2000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(phase_is(&stopped, Phase::Stopped), "{stopped:?}");
        assert!(supervisor_pids(&created.id).is_empty(), "a supervisor survived stop");

        c.start_sandbox(pb::StartSandboxRequest { name: "life".into(), ..Default::default() }).await.unwrap();
        let again = wait_for(&mut c, "life", READY_WAIT, |s| phase_is(s, Phase::Ready)).await.unwrap();
        let phases: Vec<i32> = again.history.iter().map(|h| h.phase).collect();
        assert!(phases.contains(&(Phase::Stopped as i32)), "history lacks STOPPED: {:?}", again.history);

        let t = Instant::now();
        c.delete_sandbox(pb::DeleteSandboxRequest { name: "life".into(), ..Default::default() })
            .await
            .unwrap();
        eprintln!("delete of a READY sandbox took {:?}", t.elapsed());
        let gone = c.get_sandbox(pb::GetSandboxRequest { name: "life".into() }).await.unwrap_err();
        assert_eq!(code(&gone), tonic::Code::NotFound);
        assert!(!gw.sandbox_dir(&created.id).exists(), "state directory left behind");
        assert!(supervisor_pids(&created.id).is_empty(), "a supervisor survived delete");
    });
}

#[test]
fn output_and_exit_code_come_back() {
    if !require_root("gateway_lifecycle::output_and_exit_code_come_back") {
        return;
    }
    let gw = GatewayProc::start().unwrap();
    rt().block_on(async {
        let mut c = gw.sandboxes().await.unwrap();
        let script = "echo to-stdout; echo to-stderr >&2; id -u; exit 7";
        c.create_sandbox(create_req("out", &["/bin/sh", "-c", script])).await.unwrap();
        let done = wait_for(&mut c, "out", READY_WAIT, |s| phase_is(s, Phase::Stopped)).await.unwrap();
        assert_eq!(done.exit_code, Some(7), "{done:?}");
        assert!(done.phase_reason.contains("status 7"), "{}", done.phase_reason);
        let logs = all_logs(&gw, "out").await.unwrap();
        let find =
            |src: pb::LogSource, text: &str| logs.iter().any(|l| l.source == src as i32 && l.text == text);
        assert!(find(pb::LogSource::Stdout, "to-stdout"), "stdout line missing: {logs:?}");
        assert!(find(pb::LogSource::Stderr, "to-stderr"), "stderr line missing: {logs:?}");
        let uid =
            logs.iter().find(|l| l.source == pb::LogSource::Stdout as i32 && l.text.parse::<u32>().is_ok());
        assert_ne!(uid.map(|l| l.text.as_str()), Some("0"), "the agent ran as root");
        let seqs: Vec<u64> = logs.iter().map(|l| l.seq).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "sequence numbers not increasing: {seqs:?}");
    });
}

#[test]
fn policy_revisions_are_pushed_and_acknowledged() {
    if !require_root("gateway_lifecycle::policy_revisions_are_pushed_and_acknowledged") {
        return;
    }
    let gw = GatewayProc::start().unwrap();
    rt().block_on(async {
        let mut c = gw.sandboxes().await.unwrap();
        c.create_sandbox(create_req("pol", &["sleep", "1000"])).await.unwrap();
        wait_for(&mut c, "pol", READY_WAIT, |s| phase_is(s, Phase::Ready)).await.unwrap();
        let yaml = format!(
            "{}\nnetwork_policies:\n  example:\n    endpoints:\n      - host: api.example.com\n        port: 443\n    binaries:\n      - path: /usr/bin/curl\n",
            openshell_policy::DEFAULT_POLICY_YAML
        );
        let t = Instant::now();
        let rev = c
            .update_policy(pb::UpdatePolicyRequest { name: "pol".into(), policy_yaml: yaml.clone(), ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(rev.revision, 2);
        let acked = wait_for(&mut c, "pol", Duration::from_secs(5), |s| s.acked_policy_revision == 2).await.unwrap();
        eprintln!("policy revision 2 acknowledged {:?} after the push", t.elapsed());
        assert!(phase_is(&acked, Phase::Ready));
        let stored = c.get_policy(pb::GetPolicyRequest { name: "pol".into(), revision: 0 }).await.unwrap().into_inner();
        assert_eq!((stored.revision, stored.yaml), (2, yaml));

        let bad = c
            .update_policy(pb::UpdatePolicyRequest {
                name: "pol".into(),
                policy_yaml: "version: 1\nfilesystem_policy:\n  read_only: [relative/path]\n".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(bad.code(), tonic::Code::InvalidArgument);
        assert!(bad.message().contains("line"), "the error does not say where: {}", bad.message());
        let after = c.get_sandbox(pb::GetSandboxRequest { name: "pol".into() }).await.unwrap().into_inner();
        assert_eq!((after.policy_revision, after.acked_policy_revision), (2, 2), "a refused policy changed state");
    });
}

#[test]
fn concurrent_changes_conflict_cleanly() {
    if !require_root("gateway_lifecycle::concurrent_changes_conflict_cleanly") {
        return;
    }
    let gw = GatewayProc::start().unwrap();
    rt().block_on(async {
        let mut c = gw.sandboxes().await.unwrap();
        c.create_sandbox(create_req("race", &["sleep", "1000"])).await.unwrap();
        let ready = wait_for(&mut c, "race", READY_WAIT, |s| phase_is(s, Phase::Ready)).await.unwrap();
        let v = ready.resource_version;
        // Two clients that read the same version act at once: exactly one wins.
        let (mut a, mut b) = (gw.sandboxes().await.unwrap(), gw.sandboxes().await.unwrap());
        let stop =
            |n: &str| pb::StopSandboxRequest { name: n.into(), resource_version: Some(v), grace_ms: 1000 };
        let del = pb::DeleteSandboxRequest { name: "race".into(), resource_version: Some(v) };
        let (r1, r2) = tokio::join!(a.stop_sandbox(stop("race")), b.delete_sandbox(del));
        let outcomes =
            [r1.as_ref().err().map(tonic::Status::code), r2.as_ref().err().map(tonic::Status::code)];
        assert_eq!(
            outcomes.iter().filter(|o| o.is_none()).count(),
            1,
            "expected exactly one winner: stop={r1:?} delete={r2:?}"
        );
        assert!(outcomes.contains(&Some(tonic::Code::Aborted)), "the loser must get Aborted: {outcomes:?}");
        // A stale version is refused and changes nothing.
        if r1.is_ok() {
            let stale = c
                .start_sandbox(pb::StartSandboxRequest { name: "race".into(), resource_version: Some(v) })
                .await
                .unwrap_err();
            assert_eq!(stale.code(), tonic::Code::Aborted);
            let s = c.get_sandbox(pb::GetSandboxRequest { name: "race".into() }).await.unwrap().into_inner();
            assert!(phase_is(&s, Phase::Stopped), "{s:?}");
        }
    });
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    if !require_root("gateway_lifecycle::bad_input_is_refused_and_changes_nothing") {
        return;
    }
    let gw = GatewayProc::start().unwrap();
    rt().block_on(async {
        let mut c = gw.sandboxes().await.unwrap();
        let mut cases: Vec<(&str, pb::CreateSandboxRequest, &str)> = vec![
            ("upper-case name", create_req("Bad", &["true"]), "lower-case"),
            ("name too long", create_req(&"a".repeat(64), &["true"]), "at most 63"),
            ("no command", create_req("nocmd", &[]), "command"),
        ];
        let mut bad_policy = create_req("badpol", &["true"]);
        bad_policy.policy_yaml = "version: 1\nfilesystem_policy:\n  read_only: [/usr]\n  bogus: 1\n".into();
        cases.push(("malformed policy", bad_policy, "line 4"));
        let mut bad_env = create_req("badenv", &["true"]);
        bad_env.spec.as_mut().unwrap().env.insert("1X".into(), "y".into());
        cases.push(("bad env name", bad_env, "1X"));
        let mut rel = create_req("relwd", &["true"]);
        rel.spec.as_mut().unwrap().workdir = "relative/dir".into();
        cases.push(("relative workdir", rel, "absolute"));
        let mut missing = create_req("nowd", &["true"]);
        missing.spec.as_mut().unwrap().workdir = "/nonexistent/openshell-e2e".into();
        cases.push(("missing workdir", missing, "/nonexistent/openshell-e2e"));
        let mut driver = create_req("nodrv", &["true"]);
        driver.spec.as_mut().unwrap().driver = "warp".into();
        cases.push(("unknown driver", driver, "warp"));
        for (what, req, needle) in cases {
            let e = c.create_sandbox(req).await.unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{what}: {e:?}");
            assert!(e.message().contains(needle), "{what}: message lacks `{needle}`: {}", e.message());
        }
        let list = c.list_sandboxes(pb::ListSandboxesRequest::default()).await.unwrap().into_inner();
        assert!(list.sandboxes.is_empty(), "bad input left sandboxes: {:?}", list.sandboxes);
        let left = std::fs::read_dir(gw.state.join("sandboxes")).map(|d| d.count()).unwrap_or(0);
        assert_eq!(left, 0, "bad input left state directories");

        let e = c.get_sandbox(pb::GetSandboxRequest { name: "ghost".into() }).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound);
        let e = c
            .delete_sandbox(pb::DeleteSandboxRequest { name: "ghost".into(), ..Default::default() })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound);

        c.create_sandbox(create_req("dup", &["sleep", "1000"])).await.unwrap();
        let e = c.create_sandbox(create_req("dup", &["sleep", "1000"])).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::AlreadyExists, "{e:?}");
        let list = c.list_sandboxes(pb::ListSandboxesRequest::default()).await.unwrap().into_inner();
        assert_eq!(list.sandboxes.len(), 1);
    });
}

#[test]
fn sandbox_credentials_are_required_for_sessions() {
    if !require_root("gateway_lifecycle::sandbox_credentials_are_required_for_sessions") {
        return;
    }
    use openshell_proto::supervisor::v1 as sv;
    let gw = GatewayProc::start().unwrap();
    rt().block_on(async {
        let mut c = gw.sandboxes().await.unwrap();
        let s = c.create_sandbox(create_req("cred", &["sleep", "1000"])).await.unwrap().into_inner();
        wait_for(&mut c, "cred", READY_WAIT, |s| phase_is(s, Phase::Ready)).await.unwrap();
        let mut session =
            sv::supervisor_session_client::SupervisorSessionClient::new(gw.channel().await.unwrap());
        let hello = sv::SupervisorMessage {
            msg: Some(sv::supervisor_message::Msg::Hello(sv::Hello {
                sandbox_id: s.id.clone(),
                ..Default::default()
            })),
        };
        for (secret, what) in [(None, "no secret"), (Some("0".repeat(64)), "a wrong secret")] {
            let mut req = tonic::Request::new(tokio_stream::iter(vec![hello.clone()]));
            req.metadata_mut().insert("x-openshell-sandbox-id", s.id.parse().unwrap());
            if let Some(secret) = secret {
                req.metadata_mut().insert("authorization", format!("Bearer {secret}").parse().unwrap());
            }
            let e = session.open(req).await.unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unauthenticated, "{what}: {e:?}");
        }
        // The real session was not disturbed.
        let after = c.get_sandbox(pb::GetSandboxRequest { name: "cred".into() }).await.unwrap().into_inner();
        assert!(phase_is(&after, Phase::Ready) && after.connected, "{after:?}");
        // The secret exists nowhere on disk in the state directory, and not in argv.
        let pids = supervisor_pids(&s.id);
        assert!(!pids.is_empty());
        for pid in pids {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
            assert!(!String::from_utf8_lossy(&cmdline).contains("Bearer"), "credential material in argv");
        }
    });
}
