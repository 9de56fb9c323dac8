//! Crashes: `kill -9` of the gateway while sandboxes run (they keep running, reconnect to the restarted
//! gateway and are READY again with nothing lost), and `kill -9` of a supervisor (the sandbox goes FAILED
//! with the reason and can be started again or deleted).

use std::time::{Duration, Instant};

use openshell_e2e::gateway::{GatewayProc, all_logs, phase_is, supervisor_pids, wait_for};
use openshell_proto::gateway::v1 as pb;
use openshell_proto::gateway::v1::Phase;

use super::common::require_root;
use super::gateway_lifecycle::{READY_WAIT, create_req, rt};

/// An agent that appends a line to `ticks` in its workdir every 50 ms and echoes it.
const TICKER: &str = "i=0; while :; do i=$((i+1)); echo tick-$i >> ticks; echo tick-$i; sleep 0.05; done";

fn ticks(gw: &GatewayProc, id: &str) -> usize {
    std::fs::read_to_string(gw.sandbox_dir(id).join("workdir/ticks")).map(|s| s.lines().count()).unwrap_or(0)
}

#[test]
fn gateway_kill9_and_restart_loses_nothing() {
    if !require_root("gateway_recovery::gateway_kill9_and_restart_loses_nothing") {
        return;
    }
    let mut gw = GatewayProc::start().unwrap();
    let runtime = rt();
    let names = ["keep-a", "keep-b", "keep-c"];
    let (ids, logs_before) = runtime.block_on(async {
        let mut c = gw.sandboxes().await.unwrap();
        let mut ids = Vec::new();
        for n in names {
            ids.push(
                c.create_sandbox(create_req(n, &["/bin/sh", "-c", TICKER])).await.unwrap().into_inner().id,
            );
        }
        for n in names {
            wait_for(&mut c, n, READY_WAIT, |s| phase_is(s, Phase::Ready)).await.unwrap();
        }
        // A policy revision, so that "no lost state" covers revisions too.
        c.update_policy(pb::UpdatePolicyRequest {
            name: "keep-b".into(),
            policy_yaml: openshell_policy::DEFAULT_POLICY_YAML.into(),
            ..Default::default()
        })
        .await
        .unwrap();
        wait_for(&mut c, "keep-b", READY_WAIT, |s| s.acked_policy_revision == 2).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        (ids, all_logs(&gw, "keep-a").await.unwrap().len())
    });
    assert!(logs_before > 3, "the ticker's output did not reach the gateway");

    gw.kill9();
    let during: Vec<usize> = ids.iter().map(|id| ticks(&gw, id)).collect();
    std::thread::sleep(Duration::from_millis(600));
    for (id, before) in ids.iter().zip(&during) {
        assert!(ticks(&gw, id) > *before, "{id}: the agent stopped while the gateway was down");
        assert!(!supervisor_pids(id).is_empty(), "{id}: the supervisor died with the gateway");
    }

    let restarted = Instant::now();
    gw.restart().unwrap();
    runtime.block_on(async {
        let mut c = gw.sandboxes().await.unwrap();
        for n in names {
            let s =
                wait_for(&mut c, n, Duration::from_secs(10), |s| phase_is(s, Phase::Ready) && s.connected)
                    .await
                    .unwrap();
            let phases: Vec<i32> = s.history.iter().map(|h| h.phase).collect();
            assert!(
                phases.contains(&(Phase::Disconnected as i32)),
                "{n}: history does not show the outage: {:?}",
                s.history
            );
        }
        eprintln!("all sandboxes READY again {:?} after the gateway restarted", restarted.elapsed());
        let b = c.get_sandbox(pb::GetSandboxRequest { name: "keep-b".into() }).await.unwrap().into_inner();
        assert_eq!((b.policy_revision, b.acked_policy_revision), (2, 2));
        let list = c.list_sandboxes(pb::ListSandboxesRequest::default()).await.unwrap().into_inner();
        assert_eq!(list.sandboxes.len(), 3);
        // Output produced while the gateway was down arrives after the reconnect.
        let logs = all_logs(&gw, "keep-a").await.unwrap();
        assert!(logs.len() > logs_before, "no logs after the restart ({} <= {logs_before})", logs.len());
        for n in names {
            c.delete_sandbox(pb::DeleteSandboxRequest { name: n.into(), ..Default::default() })
                .await
                .unwrap();
        }
    });
    for id in &ids {
        assert!(supervisor_pids(id).is_empty(), "{id}: supervisor left after delete");
    }
}

#[test]
fn supervisor_kill9_fails_the_sandbox_which_recovers() {
    if !require_root("gateway_recovery::supervisor_kill9_fails_the_sandbox_which_recovers") {
        return;
    }
    let gw = GatewayProc::start().unwrap();
    rt().block_on(async {
        let mut c = gw.sandboxes().await.unwrap();
        let s = c.create_sandbox(create_req("crash", &["sleep", "1000"])).await.unwrap().into_inner();
        wait_for(&mut c, "crash", READY_WAIT, |s| phase_is(s, Phase::Ready)).await.unwrap();
        let pids = supervisor_pids(&s.id);
        assert_eq!(pids.len(), 1, "expected one supervisor for {}: {pids:?}", s.id);
        let status = std::process::Command::new("kill").arg("-9").arg(pids[0].to_string()).status().unwrap();
        assert!(status.success());
        let failed =
            wait_for(&mut c, "crash", Duration::from_secs(10), |s| phase_is(s, Phase::Failed)).await.unwrap();
        assert!(failed.phase_reason.contains("signal 9"), "reason does not say why: {}", failed.phase_reason);
        assert!(!failed.connected);

        // A FAILED sandbox can be started again...
        c.start_sandbox(pb::StartSandboxRequest { name: "crash".into(), ..Default::default() })
            .await
            .unwrap();
        let again = wait_for(&mut c, "crash", READY_WAIT, |s| phase_is(s, Phase::Ready)).await.unwrap();
        assert!(again.connected);
        // ...and after a second crash, deleted.
        let pids = supervisor_pids(&s.id);
        assert_eq!(pids.len(), 1, "{pids:?}");
        std::process::Command::new("kill").arg("-9").arg(pids[0].to_string()).status().unwrap();
        wait_for(&mut c, "crash", Duration::from_secs(10), |s| phase_is(s, Phase::Failed)).await.unwrap();
        c.delete_sandbox(pb::DeleteSandboxRequest { name: "crash".into(), ..Default::default() })
            .await
            .unwrap();
        let e = c.get_sandbox(pb::GetSandboxRequest { name: "crash".into() }).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound);
        assert!(!gw.sandbox_dir(&s.id).exists());
    });
}

#[test]
fn a_supervisor_killed_while_the_gateway_is_down_is_failed_at_restart() {
    if !require_root("gateway_recovery::a_supervisor_killed_while_the_gateway_is_down_is_failed_at_restart") {
        return;
    }
    let mut gw = GatewayProc::start().unwrap();
    let runtime = rt();
    let id = runtime.block_on(async {
        let mut c = gw.sandboxes().await.unwrap();
        let s = c.create_sandbox(create_req("ghost", &["sleep", "1000"])).await.unwrap().into_inner();
        wait_for(&mut c, "ghost", READY_WAIT, |s| phase_is(s, Phase::Ready)).await.unwrap();
        s.id
    });
    gw.kill9();
    for pid in supervisor_pids(&id) {
        std::process::Command::new("kill").arg("-9").arg(pid.to_string()).status().unwrap();
    }
    gw.restart().unwrap();
    runtime.block_on(async {
        let mut c = gw.sandboxes().await.unwrap();
        let s =
            wait_for(&mut c, "ghost", Duration::from_secs(10), |s| phase_is(s, Phase::Failed)).await.unwrap();
        assert!(!s.phase_reason.is_empty(), "FAILED without a reason");
        c.delete_sandbox(pb::DeleteSandboxRequest { name: "ghost".into(), ..Default::default() })
            .await
            .unwrap();
    });
}

#[test]
fn orphaned_instances_are_removed_by_the_reconciler() {
    if !require_root("gateway_recovery::orphaned_instances_are_removed_by_the_reconciler") {
        return;
    }
    let mut gw = GatewayProc::start().unwrap();
    // State the store knows nothing about (left by a crash between the driver's create and the store).
    let orphan = gw.state.join("sandboxes/sbx-00000000deadbeef");
    std::fs::create_dir_all(orphan.join("workdir")).unwrap();
    std::fs::write(orphan.join("workdir/leftover"), "x").unwrap();
    gw.restart().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while orphan.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!orphan.exists(), "the reconciler left an orphaned instance behind");
}
