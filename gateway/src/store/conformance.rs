//! Store conformance cases, written once against `dyn Store` and run on every backend, so that SQLite and
//! PostgreSQL cannot drift apart in the semantics the rest of the gateway relies on.
//!
//! A backend instantiates all of them with [`store_conformance_tests!`], giving an `async fn() -> Harness`
//! that returns a fresh, empty store per case. Nothing here may depend on one backend.
//!
//! Beyond the trait's documentation the cases pin down: operations on an unknown sandbox are `NotFound`
//! (`get_*` return `None`); `create_sandbox` numbers version and revision 1 itself; `update_sandbox`
//! leaves `policy_revision` to `add_policy_revision` and never moves `last_seen_ms` back; `append_logs`
//! returns only the entries that survived trimming.

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;

use tokio::sync::Barrier;

use super::{Store, StoreError};
use crate::model::{
    LogFilter, LogLevel, LogRecord, LogSource, NewLog, Phase, PhaseTransition, PolicyRevisionRecord,
    SandboxRecord, SandboxSpec, now_ms,
};

/// A store under test and what the cases need to know about it.
pub struct Harness {
    pub store: Arc<dyn Store>,
    /// Log entries the store keeps per sandbox; a backend should open it with a small bound so that the
    /// trimming case stays fast.
    pub log_retention: u64,
    /// Whatever must outlive the store (a temporary directory, a scratch schema).
    _keep: Box<dyn Any + Send + Sync>,
}

impl Harness {
    pub fn new(store: Arc<dyn Store>, log_retention: u64, keep: impl Any + Send + Sync) -> Harness {
        Harness { store, log_retention, _keep: Box::new(keep) }
    }
}

/// Instantiates every case as a tokio test calling `$harness().await` for its store. A new case is added
/// here once and runs on every backend.
macro_rules! store_conformance_tests {
    ($harness:path) => {
        $crate::store::conformance::store_conformance_tests!(@cases $harness;
            create_get_and_list,
            create_with_taken_name_fails,
            update_bumps_version_and_stores_mutable_fields,
            update_with_stale_version_conflicts,
            concurrent_updates_exactly_one_wins,
            delete_is_conditional_and_removes_everything,
            unknown_sandbox_is_not_found,
            phase_history_grows_only_on_change,
            policy_revisions_are_numbered_and_conditional,
            logs_are_numbered_and_filtered,
            logs_are_trimmed_to_retention,
            touch_last_seen_keeps_version,
        );
    };
    (@cases $harness:path; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let harness = $harness().await;
                $crate::store::conformance::$case(&harness).await;
            }
        )+
    };
}
pub(crate) use store_conformance_tests;

const POLICY: &str = "version: 1\n";

pub fn sandbox(id: &str, name: &str, created_at_ms: i64) -> SandboxRecord {
    SandboxRecord {
        id: id.to_owned(),
        name: name.to_owned(),
        spec: SandboxSpec {
            command: vec!["/bin/sh".to_owned(), "-c".to_owned(), "true".to_owned()],
            workdir: Some("/home/user/project".to_owned()),
            rootfs: None,
            env: BTreeMap::from([("LANG".to_owned(), "C.UTF-8".to_owned())]),
            labels: BTreeMap::from([("team".to_owned(), "infra".to_owned())]),
            driver: "local".to_owned(),
            // Not the default, so that a store dropping it fails the round trip.
            tty: true,
        },
        phase: Phase::Provisioning,
        phase_reason: "created".to_owned(),
        resource_version: 1,
        policy_revision: 1,
        acked_policy_revision: 0,
        exit_code: None,
        created_at_ms,
        updated_at_ms: created_at_ms,
        last_seen_ms: 0,
        secret_hash: "ab".repeat(32),
        driver_state: "{}".to_owned(),
        enforcement_json: String::new(),
    }
}

pub fn log(time_ms: i64, source: LogSource, level: LogLevel, text: &str) -> NewLog {
    NewLog { time_ms, source, level, text: text.to_owned() }
}

fn seqs(records: &[LogRecord]) -> Vec<u64> {
    records.iter().map(|r| r.seq).collect()
}

#[track_caller]
fn assert_not_found<T: Debug>(result: Result<T, StoreError>, id: &str) {
    match result {
        Err(StoreError::NotFound(found)) => assert_eq!(found, id),
        other => panic!("expected NotFound({id}), got {other:?}"),
    }
}

#[track_caller]
fn assert_conflict<T: Debug>(result: Result<T, StoreError>, id: &str, expected: u64, found: u64) {
    match result {
        Err(StoreError::Conflict { id: got_id, expected: got_expected, found: got_found }) => {
            assert_eq!((got_id.as_str(), got_expected, got_found), (id, expected, found));
        }
        other => panic!("expected Conflict({id}, {expected}, {found}), got {other:?}"),
    }
}

pub async fn create_get_and_list(h: &Harness) {
    let s = &*h.store;
    let beta = sandbox("sbx-b", "beta", 2_000);
    let alpha = sandbox("sbx-a", "alpha", 2_000);
    let gamma = sandbox("sbx-c", "gamma", 1_000);
    // Named like another sandbox's id: lookups must still prefer the id.
    let impostor = sandbox("sbx-d", "sbx-a", 3_000);
    for record in [&beta, &alpha, &gamma, &impostor] {
        s.create_sandbox(record, POLICY).await.unwrap();
    }

    assert_eq!(s.get_sandbox("sbx-a").await.unwrap(), Some(alpha.clone()));
    assert_eq!(s.get_sandbox("alpha").await.unwrap(), Some(alpha.clone()));
    assert_eq!(s.get_sandbox("sbx-d").await.unwrap(), Some(impostor));
    assert_eq!(s.get_sandbox("missing").await.unwrap(), None);

    let names: Vec<String> = s.list_sandboxes().await.unwrap().into_iter().map(|r| r.name).collect();
    assert_eq!(names, ["gamma", "alpha", "beta", "sbx-a"]);

    let revision = s.get_policy_revision("sbx-a", 0).await.unwrap();
    let first = PolicyRevisionRecord {
        sandbox_id: "sbx-a".to_owned(),
        revision: 1,
        yaml: POLICY.to_owned(),
        created_at_ms: 2_000,
    };
    assert_eq!(revision, Some(first.clone()));
    assert_eq!(s.get_policy_revision("sbx-a", 1).await.unwrap(), Some(first));
    assert_eq!(
        s.phase_history("sbx-a").await.unwrap(),
        [PhaseTransition { phase: Phase::Provisioning, reason: "created".to_owned(), at_ms: 2_000 }]
    );
}

pub async fn create_with_taken_name_fails(h: &Harness) {
    let s = &*h.store;
    let first = sandbox("sbx-1", "dup", 1_000);
    s.create_sandbox(&first, POLICY).await.unwrap();
    match s.create_sandbox(&sandbox("sbx-2", "dup", 2_000), "other").await {
        Err(StoreError::NameTaken(name)) => assert_eq!(name, "dup"),
        other => panic!("expected NameTaken, got {other:?}"),
    }
    // Nothing of the refused sandbox was written.
    assert_eq!(s.get_sandbox("sbx-2").await.unwrap(), None);
    assert_eq!(s.get_policy_revision("sbx-2", 0).await.unwrap(), None);
    assert_eq!(s.list_sandboxes().await.unwrap(), [first]);
}

pub async fn update_bumps_version_and_stores_mutable_fields(h: &Harness) {
    let s = &*h.store;
    let original = sandbox("sbx-1", "one", 1_000);
    s.create_sandbox(&original, POLICY).await.unwrap();
    let before = now_ms();

    let mut next = original.clone();
    next.phase = Phase::Ready;
    next.phase_reason = "supervisor connected".to_owned();
    next.acked_policy_revision = 1;
    next.exit_code = Some(-9);
    next.last_seen_ms = 5_000;
    next.secret_hash = "cd".repeat(32);
    next.driver_state = r#"{"pid":42}"#.to_owned();
    next.enforcement_json = r#"{"landlock":"full"}"#.to_owned();
    // Immutable or store-owned: whatever the caller sends is ignored.
    next.name = "renamed".to_owned();
    next.spec.command = vec!["/bin/false".to_owned()];
    next.created_at_ms = 1;
    next.resource_version = 77;
    next.policy_revision = 9;
    next.updated_at_ms = 0;

    let stored = s.update_sandbox(&next, 1).await.unwrap();
    assert!(stored.updated_at_ms >= before, "updated_at_ms {} < {before}", stored.updated_at_ms);
    let expected = SandboxRecord {
        name: original.name.clone(),
        spec: original.spec.clone(),
        created_at_ms: original.created_at_ms,
        resource_version: 2,
        policy_revision: 1,
        updated_at_ms: stored.updated_at_ms,
        ..next
    };
    assert_eq!(stored, expected);
    assert_eq!(s.get_sandbox("sbx-1").await.unwrap(), Some(stored.clone()));

    let mut again = stored.clone();
    again.exit_code = None;
    let stored = s.update_sandbox(&again, 2).await.unwrap();
    assert_eq!((stored.resource_version, stored.exit_code), (3, None));
}

pub async fn update_with_stale_version_conflicts(h: &Harness) {
    let s = &*h.store;
    let original = sandbox("sbx-1", "one", 1_000);
    s.create_sandbox(&original, POLICY).await.unwrap();
    let mut ready = original.clone();
    ready.phase = Phase::Ready;
    let current = s.update_sandbox(&ready, 1).await.unwrap();

    let mut stale = current.clone();
    stale.phase = Phase::Failed;
    stale.phase_reason = "lost".to_owned();
    stale.driver_state = "changed".to_owned();
    assert_conflict(s.update_sandbox(&stale, 1).await, "sbx-1", 1, 2);
    assert_conflict(s.update_sandbox(&stale, 3).await, "sbx-1", 3, 2);

    assert_eq!(s.get_sandbox("sbx-1").await.unwrap(), Some(current));
    assert_eq!(s.phase_history("sbx-1").await.unwrap().len(), 2);
}

pub async fn concurrent_updates_exactly_one_wins(h: &Harness) {
    const WRITERS: usize = 8;
    let original = sandbox("sbx-1", "one", 1_000);
    h.store.create_sandbox(&original, POLICY).await.unwrap();
    let start = Arc::new(Barrier::new(WRITERS));
    let tasks: Vec<_> = (0..WRITERS)
        .map(|i| {
            let store = Arc::clone(&h.store);
            let start = Arc::clone(&start);
            let mut record = original.clone();
            record.phase_reason = format!("writer {i}");
            tokio::spawn(async move {
                start.wait().await;
                store.update_sandbox(&record, 1).await
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(stored) => winners.push(stored),
            conflict => assert_conflict(conflict, "sbx-1", 1, 2),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let stored = h.store.get_sandbox("sbx-1").await.unwrap().unwrap();
    assert_eq!(stored, winners[0]);
    assert_eq!(stored.resource_version, 2);
    assert_eq!(h.store.phase_history("sbx-1").await.unwrap().len(), 2);
}

pub async fn delete_is_conditional_and_removes_everything(h: &Harness) {
    let s = &*h.store;
    let original = sandbox("sbx-1", "one", 1_000);
    s.create_sandbox(&original, POLICY).await.unwrap();
    let (_, current) = s.add_policy_revision("sbx-1", "version: 2\n", 1).await.unwrap();
    let mut stopped = current.clone();
    stopped.phase = Phase::Stopped;
    let current = s.update_sandbox(&stopped, current.resource_version).await.unwrap();
    s.append_logs("sbx-1", &[log(1, LogSource::Stdout, LogLevel::Info, "hello")]).await.unwrap();
    let bystander = sandbox("sbx-2", "two", 2_000);
    s.create_sandbox(&bystander, POLICY).await.unwrap();
    s.append_logs("sbx-2", &[log(1, LogSource::Stdout, LogLevel::Info, "still here")]).await.unwrap();

    assert_conflict(s.delete_sandbox("sbx-1", 1).await, "sbx-1", 1, 3);
    assert_eq!(s.get_sandbox("sbx-1").await.unwrap(), Some(current));

    s.delete_sandbox("sbx-1", 3).await.unwrap();
    assert_eq!(s.get_sandbox("sbx-1").await.unwrap(), None);
    assert_eq!(s.get_sandbox("one").await.unwrap(), None);
    for revision in 0..=2 {
        assert_eq!(s.get_policy_revision("sbx-1", revision).await.unwrap(), None);
    }
    assert_not_found(s.phase_history("sbx-1").await, "sbx-1");
    assert_not_found(s.read_logs("sbx-1", &LogFilter::default()).await, "sbx-1");
    assert_not_found(s.delete_sandbox("sbx-1", 3).await, "sbx-1");

    assert_eq!(s.list_sandboxes().await.unwrap(), [bystander]);
    assert_eq!(s.read_logs("sbx-2", &LogFilter::default()).await.unwrap().len(), 1);
    // The name is free again.
    s.create_sandbox(&sandbox("sbx-3", "one", 3_000), POLICY).await.unwrap();
}

pub async fn unknown_sandbox_is_not_found(h: &Harness) {
    let s = &*h.store;
    let ghost = sandbox("sbx-ghost", "ghost", 1_000);
    assert_eq!(s.get_sandbox("sbx-ghost").await.unwrap(), None);
    assert_not_found(s.update_sandbox(&ghost, 1).await, "sbx-ghost");
    assert_not_found(s.delete_sandbox("sbx-ghost", 1).await, "sbx-ghost");
    assert_not_found(s.phase_history("sbx-ghost").await, "sbx-ghost");
    assert_not_found(s.add_policy_revision("sbx-ghost", POLICY, 1).await, "sbx-ghost");
    assert_eq!(s.get_policy_revision("sbx-ghost", 0).await.unwrap(), None);
    assert_eq!(s.get_policy_revision("sbx-ghost", 1).await.unwrap(), None);
    assert_not_found(s.append_logs("sbx-ghost", &[]).await, "sbx-ghost");
    assert_not_found(s.read_logs("sbx-ghost", &LogFilter::default()).await, "sbx-ghost");
    assert_not_found(s.touch_last_seen("sbx-ghost", 1).await, "sbx-ghost");
    assert!(s.list_sandboxes().await.unwrap().is_empty());
}

pub async fn phase_history_grows_only_on_change(h: &Harness) {
    let s = &*h.store;
    let mut record = sandbox("sbx-1", "one", 1_000);
    s.create_sandbox(&record, POLICY).await.unwrap();
    let transition = |phase, reason: &str, at_ms| PhaseTransition { phase, reason: reason.to_owned(), at_ms };
    let mut expected = vec![transition(Phase::Provisioning, "created", 1_000)];

    record.driver_state = r#"{"pid":1}"#.to_owned();
    record = s.update_sandbox(&record, 1).await.unwrap();
    assert_eq!(s.phase_history("sbx-1").await.unwrap(), expected, "no phase change, no transition");

    record.phase = Phase::Ready;
    record = s.update_sandbox(&record, 2).await.unwrap();
    expected.push(transition(Phase::Ready, "created", record.updated_at_ms));
    assert_eq!(s.phase_history("sbx-1").await.unwrap(), expected);

    record.phase_reason = "supervisor connected".to_owned();
    record = s.update_sandbox(&record, 3).await.unwrap();
    expected.push(transition(Phase::Ready, "supervisor connected", record.updated_at_ms));
    assert_eq!(s.phase_history("sbx-1").await.unwrap(), expected);

    record.phase = Phase::Failed;
    record.phase_reason = "exited with 1".to_owned();
    record = s.update_sandbox(&record, 4).await.unwrap();
    expected.push(transition(Phase::Failed, "exited with 1", record.updated_at_ms));

    // A stale write changes nothing, history included.
    record.phase = Phase::Stopped;
    assert_conflict(s.update_sandbox(&record, 4).await, "sbx-1", 4, 5);
    assert_eq!(s.phase_history("sbx-1").await.unwrap(), expected);
}

pub async fn policy_revisions_are_numbered_and_conditional(h: &Harness) {
    let s = &*h.store;
    s.create_sandbox(&sandbox("sbx-1", "one", 1_000), POLICY).await.unwrap();
    let before = now_ms();

    let (second, record) = s.add_policy_revision("sbx-1", "version: 2\n", 1).await.unwrap();
    assert_eq!(
        (second.sandbox_id.as_str(), second.revision, second.yaml.as_str()),
        ("sbx-1", 2, "version: 2\n")
    );
    assert!(second.created_at_ms >= before);
    assert_eq!((record.policy_revision, record.resource_version), (2, 2));
    assert!(record.updated_at_ms >= before);
    assert_eq!(s.get_sandbox("sbx-1").await.unwrap(), Some(record));

    let (third, record) = s.add_policy_revision("sbx-1", "version: 3\n", 2).await.unwrap();
    assert_eq!((third.revision, record.policy_revision, record.resource_version), (3, 3, 3));

    assert_conflict(s.add_policy_revision("sbx-1", "version: x\n", 2).await, "sbx-1", 2, 3);
    assert_eq!(s.get_policy_revision("sbx-1", 4).await.unwrap(), None);
    assert_eq!(s.get_sandbox("sbx-1").await.unwrap(), Some(record));

    assert_eq!(s.get_policy_revision("sbx-1", 0).await.unwrap(), Some(third.clone()));
    assert_eq!(s.get_policy_revision("sbx-1", 3).await.unwrap(), Some(third));
    assert_eq!(s.get_policy_revision("sbx-1", 2).await.unwrap(), Some(second));
    assert_eq!(s.get_policy_revision("sbx-1", 1).await.unwrap().map(|r| r.yaml), Some(POLICY.to_owned()));
    assert_eq!(s.get_policy_revision("sbx-1", u64::MAX).await.unwrap(), None);
}

pub async fn logs_are_numbered_and_filtered(h: &Harness) {
    let s = &*h.store;
    s.create_sandbox(&sandbox("sbx-1", "one", 1_000), POLICY).await.unwrap();
    s.create_sandbox(&sandbox("sbx-2", "two", 1_000), POLICY).await.unwrap();
    assert!(s.append_logs("sbx-1", &[]).await.unwrap().is_empty());

    let first = s
        .append_logs(
            "sbx-1",
            &[
                log(100, LogSource::Stdout, LogLevel::Debug, "a"),
                log(200, LogSource::Stderr, LogLevel::Info, "b"),
                log(300, LogSource::Event, LogLevel::Warn, "c"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(seqs(&first), [1, 2, 3]);
    assert_eq!(
        first[2],
        LogRecord {
            seq: 3,
            time_ms: 300,
            source: LogSource::Event,
            level: LogLevel::Warn,
            text: "c".to_owned()
        }
    );
    let second = s
        .append_logs(
            "sbx-1",
            &[
                log(400, LogSource::Gateway, LogLevel::Error, "d"),
                log(500, LogSource::Stdout, LogLevel::Info, "e"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(seqs(&second), [4, 5]);
    // Numbering is per sandbox.
    let other = s.append_logs("sbx-2", &[log(1, LogSource::Stdout, LogLevel::Info, "x")]).await.unwrap();
    assert_eq!(seqs(&other), [1]);

    let all = s.read_logs("sbx-1", &LogFilter::default()).await.unwrap();
    assert_eq!(all, [first, second].concat());

    let read = |filter: LogFilter| async move { seqs(&s.read_logs("sbx-1", &filter).await.unwrap()) };
    assert_eq!(read(LogFilter { after_seq: 3, ..LogFilter::default() }).await, [4, 5]);
    assert_eq!(read(LogFilter { after_seq: u64::MAX, ..LogFilter::default() }).await, [0_u64; 0]);
    assert_eq!(read(LogFilter { since_ms: 300, ..LogFilter::default() }).await, [3, 4, 5]);
    assert_eq!(
        read(LogFilter { min_level: Some(LogLevel::Debug), ..LogFilter::default() }).await,
        [1, 2, 3, 4, 5]
    );
    assert_eq!(
        read(LogFilter { min_level: Some(LogLevel::Info), ..LogFilter::default() }).await,
        [2, 3, 4, 5]
    );
    assert_eq!(read(LogFilter { min_level: Some(LogLevel::Warn), ..LogFilter::default() }).await, [3, 4]);
    assert_eq!(read(LogFilter { min_level: Some(LogLevel::Error), ..LogFilter::default() }).await, [4]);
    assert_eq!(read(LogFilter { limit: 2, ..LogFilter::default() }).await, [1, 2]);
    let combined = LogFilter { after_seq: 1, since_ms: 200, min_level: Some(LogLevel::Info), limit: 2 };
    assert_eq!(read(combined).await, [2, 3]);
}

pub async fn logs_are_trimmed_to_retention(h: &Harness) {
    let s = &*h.store;
    let keep = h.log_retention;
    assert!(keep >= 1);
    s.create_sandbox(&sandbox("sbx-1", "one", 1_000), POLICY).await.unwrap();
    let batch = |from: u64, count: u64| -> Vec<NewLog> {
        (from..from + count)
            .map(|i| log(i64::try_from(i).unwrap(), LogSource::Stdout, LogLevel::Info, &format!("line {i}")))
            .collect()
    };
    let read_all = || async { s.read_logs("sbx-1", &LogFilter::default()).await.unwrap() };

    let appended = s.append_logs("sbx-1", &batch(1, keep - 1)).await.unwrap();
    assert_eq!(appended.len(), usize::try_from(keep - 1).unwrap());
    assert_eq!(read_all().await, appended);

    // Three more: the two oldest go.
    let appended = s.append_logs("sbx-1", &batch(keep, 3)).await.unwrap();
    assert_eq!(seqs(&appended), (keep..keep + 3).collect::<Vec<_>>());
    let stored = read_all().await;
    assert_eq!(seqs(&stored), (3..keep + 3).collect::<Vec<_>>());
    assert_eq!(stored[0].text, "line 3");

    // Numbering continues after the trimmed entries, never reusing a seq.
    let appended = s.append_logs("sbx-1", &batch(keep + 3, 1)).await.unwrap();
    assert_eq!(seqs(&appended), [keep + 3]);

    // A batch larger than the bound keeps, and returns, only its newest entries.
    let appended = s.append_logs("sbx-1", &batch(keep + 4, keep + 2)).await.unwrap();
    assert_eq!(seqs(&appended), (keep + 6..2 * keep + 6).collect::<Vec<_>>());
    assert_eq!(read_all().await, appended);
}

pub async fn touch_last_seen_keeps_version(h: &Harness) {
    let s = &*h.store;
    let original = sandbox("sbx-1", "one", 1_000);
    s.create_sandbox(&original, POLICY).await.unwrap();

    s.touch_last_seen("sbx-1", 9_000).await.unwrap();
    let touched = s.get_sandbox("sbx-1").await.unwrap().unwrap();
    assert_eq!(touched, SandboxRecord { last_seen_ms: 9_000, ..original.clone() });

    // A writer holding the record from before the heartbeat still succeeds, and does not erase it.
    let mut ready = original.clone();
    ready.phase = Phase::Ready;
    let stored = s.update_sandbox(&ready, 1).await.unwrap();
    assert_eq!((stored.resource_version, stored.last_seen_ms), (2, 9_000));

    ready.last_seen_ms = 10_000;
    let stored = s.update_sandbox(&ready, 2).await.unwrap();
    assert_eq!(stored.last_seen_ms, 10_000);
}
