//! The gateway's figures for `bench --only gateway`: a real gateway ([`GatewayProc`]) on a fresh state
//! directory with the local driver, driven over its gRPC API (unix socket) and through the staged CLI.
//!
//! - create -> READY: from the `CreateSandbox` call until `WatchSandbox` reports READY (session up, agent
//!   running, policy revision acknowledged), one sandbox at a time, each left running (`sleep 1000`);
//! - delete: the `DeleteSandbox` round trip of each of those READY sandboxes (kills the supervisor,
//!   removes its state);
//! - policy push-to-ack: from the `UpdatePolicy` call until `WatchSandbox` reports the new revision
//!   acknowledged by the supervisor;
//! - with many idle READY sandboxes: wall time of `openshell sandbox list` (table and `-o json`), the
//!   gateway's RSS, and as extra information the time to create them and the supervisors' memory.
//!
//! Every figure is checked before it is printed: READY means connected with the current revision
//! acknowledged; after a delete the record, the state directory, the supervisor and the agent are gone;
//! the CLI lists every sandbox as ready. The caller (`bench`) turns samples into p50/p95 rows.
//! Nothing here waits by sleeping for a state: waits follow the watch stream.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use openshell_proto::gateway::v1 as pb;
use openshell_proto::gateway::v1::Phase;
use openshell_proto::gateway::v1::sandbox_service_client::SandboxServiceClient;
use tonic::Streaming;
use tonic::transport::Channel;

use crate::bins;
use crate::gateway::{GatewayProc, supervisor_pids};

type Client = SandboxServiceClient<Channel>;

/// What a figure's p50 is compared with.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    AtMost(f64),
    AtLeast(f64),
    None,
}

/// One printed line: samples for a p50/p95 row, or a free-form note.
#[derive(Debug)]
pub enum Line {
    Row { what: String, samples: Vec<f64>, unit: &'static str, decimals: usize, target: Target },
    Note { what: String, text: String },
}

fn row(what: impl Into<String>, samples: Vec<f64>, unit: &'static str, decimals: usize, t: Target) -> Line {
    Line::Row { what: what.into(), samples, unit, decimals, target: t }
}

fn note(what: impl Into<String>, text: impl Into<String>) -> Line {
    Line::Note { what: what.into(), text: text.into() }
}

/// The product targets (p50) the figures are compared with.
pub const CREATE_TARGET_MS: f64 = 50.0;
pub const DELETE_TARGET_MS: f64 = 50.0;
pub const POLICY_TARGET_MS: f64 = 50.0;
pub const IDLE_TARGET: f64 = 500.0;

/// The agent of every sandbox.
const AGENT: &[&str] = &["sleep", "1000"];
/// Runs before the timed ones (page cache, first connections), not counted.
const WARMUP: usize = 2;
/// Upper bound on any single wait; a figure is never produced from a timed-out run.
const WAIT: Duration = Duration::from_secs(60);
/// Sandboxes created or deleted at once when building or clearing the idle population.
const IN_FLIGHT: usize = 8;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn is_ready(s: &pb::Sandbox) -> bool {
    s.phase == Phase::Ready as i32 && s.connected && s.acked_policy_revision == s.policy_revision
}

fn describe(s: &pb::Sandbox) -> String {
    let phase = Phase::try_from(s.phase).map_or_else(|_| s.phase.to_string(), |p| p.as_str_name().into());
    format!(
        "{phase} ({}), connected={}, policy {}/{} acked",
        s.phase_reason, s.connected, s.acked_policy_revision, s.policy_revision
    )
}

fn create_req(name: &str) -> pb::CreateSandboxRequest {
    pb::CreateSandboxRequest {
        name: name.into(),
        spec: Some(pb::SandboxSpec {
            command: AGENT.iter().map(|s| (*s).to_string()).collect(),
            ..Default::default()
        }),
        policy_yaml: String::new(),
    }
}

/// Gateway misbehaviour a measurement went through: the figures stay valid, but the section is
/// reported as failed afterwards so that it is never hidden.
#[derive(Default)]
struct Anomalies {
    /// Sandboxes seen FAILED on their way to READY (they recovered on their own), with the reason.
    failed_then_ready: Vec<(String, String)>,
    /// Deletes answered NotFound although the sandbox existed and was removed.
    delete_not_found: Vec<String>,
    creates: usize,
    deletes: usize,
}

impl Anomalies {
    fn created(&mut self, c: &Created) {
        self.creates += 1;
        if let Some(reason) = &c.failed_on_the_way {
            self.failed_then_ready.push((c.sandbox.name.clone(), reason.clone()));
        }
    }

    fn deleted(&mut self, name: &str, d: &Deleted) {
        self.deletes += 1;
        if d.not_found {
            self.delete_not_found.push(name.to_string());
        }
    }

    /// An error describing every anomaly, if there was one.
    fn check(&self) -> Result<()> {
        let list = |v: &[String]| {
            let shown: Vec<&str> = v.iter().take(5).map(String::as_str).collect();
            format!("{}{}", shown.join(", "), if v.len() > 5 { ", ..." } else { "" })
        };
        let mut problems = Vec::new();
        if let Some((_, reason)) = self.failed_then_ready.first() {
            let names: Vec<String> = self.failed_then_ready.iter().map(|(n, _)| n.clone()).collect();
            problems.push(format!(
                "{} of {} creates went through FAILED (`{reason}`) before READY ({})",
                names.len(),
                self.creates,
                list(&names)
            ));
        }
        if !self.delete_not_found.is_empty() {
            problems.push(format!(
                "{} of {} deletes answered NotFound although they removed the sandbox ({}; not in the figures)",
                self.delete_not_found.len(),
                self.deletes,
                list(&self.delete_not_found)
            ));
        }
        ensure!(problems.is_empty(), "gateway anomalies: {}", problems.join("; "));
        Ok(())
    }
}

/// How long a sandbox seen FAILED while provisioning gets to recover before the wait fails.
const RECOVER: Duration = Duration::from_secs(5);

/// Reads `stream` until `done` holds; fails on a timeout, the end of the stream, or STOPPED. FAILED
/// fails at once unless `recover`: then the wait goes on (at most [`RECOVER`] more) and the reason is
/// returned with the sandbox.
async fn until(
    stream: &mut Streaming<pb::Sandbox>,
    name: &str,
    recover: bool,
    done: impl Fn(&pb::Sandbox) -> bool,
) -> Result<(pb::Sandbox, Option<String>)> {
    let mut deadline = tokio::time::Instant::now() + WAIT;
    let mut last: Option<pb::Sandbox> = None;
    let mut failed: Option<String> = None;
    loop {
        let seen = || last.as_ref().map_or_else(|| "nothing".to_string(), describe);
        match tokio::time::timeout_at(deadline, stream.message()).await {
            Err(_) => bail!("{name}: not there in time; last seen: {}", seen()),
            Ok(Err(e)) => bail!("{name}: watch failed: {e}; last seen: {}", seen()),
            Ok(Ok(None)) => bail!("{name}: the watch ended; last seen: {}", seen()),
            Ok(Ok(Some(s))) => {
                if done(&s) {
                    return Ok((s, failed));
                }
                let is_failed = s.phase == Phase::Failed as i32;
                if s.phase == Phase::Stopped as i32 || (is_failed && !recover) {
                    bail!("{name}: {}", describe(&s));
                }
                if is_failed && failed.is_none() {
                    failed = Some(s.phase_reason.clone());
                    deadline = deadline.min(tokio::time::Instant::now() + RECOVER);
                }
                last = Some(s);
            }
        }
    }
}

async fn watch(c: &mut Client, name: &str) -> Result<Streaming<pb::Sandbox>> {
    let req = pb::WatchSandboxRequest { name: name.into() };
    Ok(c.watch_sandbox(req).await.with_context(|| format!("watch {name}"))?.into_inner())
}

struct Created {
    /// From the `CreateSandbox` call until READY was seen.
    total: Duration,
    /// The `CreateSandbox` call alone.
    rpc: Duration,
    sandbox: pb::Sandbox,
    /// The reason of a FAILED phase seen before READY.
    failed_on_the_way: Option<String>,
}

/// Creates a sandbox and waits for READY through a watch.
async fn create_ready(mut c: Client, name: String) -> Result<Created> {
    let t = Instant::now();
    c.create_sandbox(create_req(&name)).await.with_context(|| format!("create {name}"))?;
    let rpc = t.elapsed();
    // The watch sends the current state first: a READY reached before it opened is not missed.
    let mut stream = watch(&mut c, &name).await?;
    let (sandbox, failed_on_the_way) = until(&mut stream, &name, true, is_ready).await?;
    Ok(Created { total: t.elapsed(), rpc, sandbox, failed_on_the_way })
}

struct Deleted {
    took: Duration,
    /// The gateway answered NotFound (the caller checks that the sandbox existed and is gone).
    not_found: bool,
}

async fn delete(mut c: Client, name: String) -> Result<Deleted> {
    let t = Instant::now();
    let r = c.delete_sandbox(pb::DeleteSandboxRequest { name: name.clone(), resource_version: None }).await;
    let took = t.elapsed();
    match r {
        Ok(_) => Ok(Deleted { took, not_found: false }),
        Err(e) if e.code() == tonic::Code::NotFound => Ok(Deleted { took, not_found: true }),
        Err(e) => Err(anyhow!("delete {name}: {e}")),
    }
}

/// Runs `f` over `items` with at most `k` calls in flight; every result, in completion order.
async fn bounded<T, R, F, Fut>(items: Vec<T>, k: usize, f: F) -> Vec<Result<R>>
where
    F: Fn(T) -> Fut,
    Fut: Future<Output = Result<R>> + Send + 'static,
    R: Send + 'static,
{
    let mut pending: VecDeque<T> = items.into();
    let mut set = tokio::task::JoinSet::new();
    let mut out = Vec::new();
    loop {
        while set.len() < k.max(1) {
            let Some(item) = pending.pop_front() else { break };
            set.spawn(f(item));
        }
        let Some(done) = set.join_next().await else { break };
        out.push(done.map_err(|e| anyhow!("task failed: {e}")).and_then(|r| r));
    }
    out
}

/// The first error among `results` (with how many failed), else the values.
fn all_ok<R>(what: &str, results: Vec<Result<R>>) -> Result<Vec<R>> {
    let total = results.len();
    let (ok, errs): (Vec<_>, Vec<_>) = results.into_iter().partition(Result::is_ok);
    if let Some(Err(e)) = errs.into_iter().next() {
        let failed = total - ok.len();
        return Err(e.context(format!("{what}: {failed} of {total} failed; the first")));
    }
    Ok(ok.into_iter().filter_map(Result::ok).collect())
}

/// One process as seen in /proc.
struct Proc {
    pid: u32,
    ppid: u32,
    start_time: u64,
}

fn procs() -> Vec<Proc> {
    let Ok(rd) = std::fs::read_dir("/proc") else { return Vec::new() };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // Fields after the parenthesised name: state (3), ppid (4), ..., starttime (22).
            let f: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
            Some(Proc { pid, ppid: f.get(1)?.parse().ok()?, start_time: f.get(19)?.parse().ok()? })
        })
        .collect()
}

/// `roots` and all their descendants, as (pid, start time).
fn trees(roots: &[u32]) -> Vec<(u32, u64)> {
    let all = procs();
    let mut children: HashMap<u32, Vec<&Proc>> = HashMap::new();
    for p in &all {
        children.entry(p.ppid).or_default().push(p);
    }
    let roots: HashSet<u32> = roots.iter().copied().collect();
    let mut queue: VecDeque<&Proc> = all.iter().filter(|p| roots.contains(&p.pid)).collect();
    let mut out = Vec::new();
    while let Some(p) = queue.pop_front() {
        out.push((p.pid, p.start_time));
        queue.extend(children.get(&p.pid).into_iter().flatten());
    }
    out
}

fn still_alive(pid: u32, start_time: u64) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else { return false };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // A zombie is dead; a different start time is another process with a reused pid.
    f.first() != Some(&"Z") && f.get(19).and_then(|s| s.parse::<u64>().ok()) == Some(start_time)
}

/// A `Key:   N kB` line of a /proc file, in KiB.
fn kib(path: &str, key: &str) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].trim().trim_end_matches("kB").trim().parse().ok()
}

/// CPU seconds (user + system) used so far by `pid`.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = &stat[stat.rfind(')').ok_or_else(|| anyhow!("bad /proc/{pid}/stat"))? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15; `f` starts at field 3. USER_HZ is 100 on Linux.
    let tick = |i: usize| -> Result<f64> { Ok(f.get(i - 3).ok_or_else(|| anyhow!("short stat"))?.parse()?) };
    Ok((tick(14)? + tick(15)?) / 100.0)
}

/// A running gateway on a fresh state directory, and a runtime to drive it.
pub struct GatewayBench {
    gw: GatewayProc,
    rt: tokio::runtime::Runtime,
    client: Client,
}

impl GatewayBench {
    /// Stages the binaries of the running bench's build directory and starts a gateway.
    pub fn start() -> Result<GatewayBench> {
        let gw = GatewayProc::start()?;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let client = rt.block_on(gw.sandboxes())?;
        Ok(GatewayBench { gw, rt, client })
    }

    fn gateway_pid(&self) -> Result<u32> {
        self.gw.pid().ok_or_else(|| anyhow!("the gateway is not running"))
    }

    fn rss_mib(&self) -> Result<f64> {
        let pid = self.gateway_pid()?;
        kib(&format!("/proc/{pid}/status"), "VmRSS:")
            .map(|k| k / 1024.0)
            .ok_or_else(|| anyhow!("no VmRSS for the gateway (pid {pid}): has it exited?"))
    }

    async fn list(&self) -> Result<Vec<pb::Sandbox>> {
        let mut c = self.client.clone();
        Ok(c.list_sandboxes(pb::ListSandboxesRequest::default()).await?.into_inner().sandboxes)
    }

    /// Deletes every sandbox (leftovers of a failed measurement must not skew the next one).
    async fn clear(&self, anomalies: &mut Anomalies) -> Result<()> {
        let names: Vec<String> = self.list().await?.into_iter().map(|s| s.name).collect();
        let c = self.client.clone();
        let done = bounded(names, IN_FLIGHT, |n| {
            let c = c.clone();
            async move { delete(c, n.clone()).await.map(|d| (n, d)) }
        })
        .await;
        for (name, d) in all_ok("delete", done)? {
            anomalies.deleted(&name, &d);
        }
        let left = self.list().await?.len();
        ensure!(left == 0, "{left} sandboxes left after deleting all");
        Ok(())
    }

    /// Proof that a delete removed everything: record, state directory, supervisor and agent.
    async fn check_gone(&self, s: &pb::Sandbox, tree: &[(u32, u64)]) -> Result<()> {
        let mut c = self.client.clone();
        match c.get_sandbox(pb::GetSandboxRequest { name: s.name.clone() }).await {
            Err(e) if e.code() == tonic::Code::NotFound => {}
            other => bail!("{}: still there after delete: {other:?}", s.name),
        }
        let dir = self.gw.sandbox_dir(&s.id);
        ensure!(!dir.exists(), "{}: state directory {} left behind", s.name, dir.display());
        let left = supervisor_pids(&s.id);
        ensure!(left.is_empty(), "{}: supervisor process(es) {left:?} survived delete", s.name);
        // The agent dies with its pid namespace, which may take a moment after the supervisor is gone.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let alive: Vec<u32> =
                tree.iter().filter(|(p, st)| still_alive(*p, *st)).map(|(p, _)| *p).collect();
            if alive.is_empty() {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "{}: processes {alive:?} of the sandbox survived delete",
                s.name
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Create -> READY of `n` sandboxes one at a time (each left running), then the delete of each.
    pub fn create_delete(&self, n: usize, out: &mut dyn FnMut(Line)) -> Result<()> {
        let mut anomalies = Anomalies::default();
        self.rt.block_on(async {
            self.clear(&mut anomalies).await?;
            for i in 0..WARMUP {
                let name = format!("warm-{i}");
                anomalies.created(&create_ready(self.client.clone(), name.clone()).await?);
                let d = delete(self.client.clone(), name.clone()).await?;
                anomalies.deleted(&name, &d);
            }
            let (mut ready, mut rpc, mut created) = (Vec::new(), Vec::new(), Vec::new());
            for i in 0..n {
                let c = create_ready(self.client.clone(), format!("bench-{i}")).await?;
                anomalies.created(&c);
                let s = c.sandbox;
                ensure!(supervisor_pids(&s.id).len() == 1, "{}: not exactly one supervisor", s.name);
                ready.push(ms(c.total));
                rpc.push(ms(c.rpc));
                created.push(s);
            }
            out(row(
                format!("create -> READY, local driver ({n} sandboxes, one by one)"),
                ready,
                "ms",
                1,
                Target::AtMost(CREATE_TARGET_MS),
            ));
            out(row("  CreateSandbox call alone (returns PROVISIONING)", rpc, "ms", 2, Target::None));
            let mut times = Vec::new();
            for s in &created {
                let mut c = self.client.clone();
                let now = c.get_sandbox(pb::GetSandboxRequest { name: s.name.clone() }).await?.into_inner();
                ensure!(is_ready(&now), "{} is not READY before its delete: {}", s.name, describe(&now));
                let tree = trees(&supervisor_pids(&s.id));
                let d = delete(self.client.clone(), s.name.clone()).await?;
                self.check_gone(s, &tree).await?;
                anomalies.deleted(&s.name, &d);
                if !d.not_found {
                    times.push(ms(d.took));
                }
            }
            out(row(
                format!("delete of a READY sandbox ({n}, one by one)"),
                times,
                "ms",
                1,
                Target::AtMost(DELETE_TARGET_MS),
            ));
            anomalies.check()
        })
    }

    /// `n` policy revisions pushed to one READY sandbox, each timed until the supervisor's ack is seen.
    pub fn policy_push(&self, n: usize, out: &mut dyn FnMut(Line)) -> Result<()> {
        let mut anomalies = Anomalies::default();
        self.rt.block_on(async {
            self.clear(&mut anomalies).await?;
            let name = "bench-policy".to_string();
            anomalies.created(&create_ready(self.client.clone(), name.clone()).await?);
            let mut c = self.client.clone();
            let mut stream = watch(&mut c, &name).await?;
            let (mut acked, mut rpc) = (Vec::new(), Vec::new());
            for i in 0..n + WARMUP {
                // A different allowed host each time: every revision is a real change.
                let yaml = format!(
                    "{}\nnetwork_policies:\n  bench:\n    endpoints:\n      - host: api-{i}.example.com\n        port: 443\n    binaries:\n      - path: /usr/bin/curl\n",
                    openshell_policy::DEFAULT_POLICY_YAML
                );
                let req = pb::UpdatePolicyRequest { name: name.clone(), policy_yaml: yaml, resource_version: None };
                let t = Instant::now();
                let rev = c.update_policy(req).await.context("update policy")?.into_inner().revision;
                let call = t.elapsed();
                until(&mut stream, &name, false, |s| s.acked_policy_revision >= rev && is_ready(s)).await?;
                if i >= WARMUP {
                    acked.push(ms(t.elapsed()));
                    rpc.push(ms(call));
                }
            }
            let now = c.get_sandbox(pb::GetSandboxRequest { name: name.clone() }).await?.into_inner();
            let last = u64::try_from(n + WARMUP + 1)?;
            ensure!(
                now.policy_revision == last && now.acked_policy_revision == last,
                "after {} pushes: {}",
                n + WARMUP,
                describe(&now)
            );
            out(row(
                format!("policy revision push -> supervisor ack seen ({n})"),
                acked,
                "ms",
                1,
                Target::AtMost(POLICY_TARGET_MS),
            ));
            out(row("  UpdatePolicy call alone (stored, push queued)", rpc, "ms", 2, Target::None));
            drop(stream);
            let d = delete(self.client.clone(), name.clone()).await?;
            anomalies.deleted(&name, &d);
            anomalies.check()
        })
    }

    /// `idle` READY sandboxes at once: how long they take to create, the CLI's `sandbox list` over
    /// `runs` runs (table and JSON), the gateway's RSS, and the supervisors' memory; then deletes them.
    pub fn idle(&self, idle: usize, runs: usize, out: &mut dyn FnMut(Line)) -> Result<()> {
        let gw_pid = self.gateway_pid()?;
        let mut anomalies = Anomalies::default();
        let result = self.rt.block_on(async {
            self.clear(&mut anomalies).await?;
            let empty_rss = self.rss_mib()?;
            let names: Vec<String> = (0..idle).map(|i| format!("idle-{i}")).collect();
            let c = self.client.clone();
            let t = Instant::now();
            let done = bounded(names, IN_FLIGHT, |n| create_ready(c.clone(), n)).await;
            let took = t.elapsed();
            let each = all_ok("create", done)?;
            for c in &each {
                anomalies.created(c);
            }
            out(row(
                format!("create -> READY, {IN_FLIGHT} in flight (up to {idle} sandboxes)"),
                each.iter().map(|c| ms(c.total)).collect(),
                "ms",
                0,
                Target::None,
            ));
            out(note(
                format!("  {idle} sandboxes READY after"),
                format!("{:.1} s ({:.1} creates/s)", took.as_secs_f64(), idle as f64 / took.as_secs_f64()),
            ));
            // Let the sessions settle (first heartbeats, log flushes) before measuring memory and CPU.
            tokio::time::sleep(Duration::from_secs(6)).await;
            let (cpu0, t0) = (cpu_seconds(gw_pid)?, Instant::now());
            let mut rss = Vec::new();
            for _ in 0..40 {
                rss.push(self.rss_mib()?);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            let cpu = (cpu_seconds(gw_pid)? - cpu0) / t0.elapsed().as_secs_f64() * 100.0;
            out(row(format!("gateway RSS, {idle} idle READY sandboxes"), rss, "MiB", 1, Target::None));
            let hwm = kib(&format!("/proc/{gw_pid}/status"), "VmHWM:").unwrap_or(f64::NAN) / 1024.0;
            let threads = kib(&format!("/proc/{gw_pid}/status"), "Threads:").unwrap_or(f64::NAN);
            out(note(
                "  gateway: RSS at 0 sandboxes; peak; threads; idle CPU",
                format!(
                    "{empty_rss:.1} MiB; {hwm:.1} MiB; {threads:.0}; {cpu:.1} % of one core (reconcile every 500 ms)"
                ),
            ));
            self.supervisor_memory(idle, out);
            let mut calls = Vec::new();
            let mut listed = Vec::new();
            for i in 0..runs + WARMUP {
                let t = Instant::now();
                listed = self.list().await?;
                if i >= WARMUP {
                    calls.push(ms(t.elapsed()));
                }
            }
            ensure!(listed.len() == idle, "ListSandboxes returned {} of {idle} sandboxes", listed.len());
            out(row(format!("ListSandboxes call alone, {idle} sandboxes"), calls, "ms", 1, Target::None));
            // Roughly the encoded response (strings plus a few bytes of framing per field): tonic
            // refuses to decode a message over 4 MiB by default.
            let approx: usize = listed
                .iter()
                .map(|s| {
                    let spec = s.spec.as_ref().map_or(0, |p| p.command.iter().map(|a| a.len() + 2).sum());
                    s.id.len() + s.name.len() + s.phase_reason.len() + s.enforcement_json.len() + spec + 60
                })
                .sum();
            let per = approx / idle.max(1);
            out(note(
                "  response size (approximate); per sandbox",
                format!(
                    "{:.2} MiB; {per} bytes (enforcement report {} bytes): the 4 MiB default gRPC limit is reached at ~{} sandboxes",
                    approx as f64 / 1048576.0,
                    listed.first().map_or(0, |s| s.enforcement_json.len()),
                    4 * 1048576 / per.max(1)
                ),
            ));
            self.cli_list(idle, runs, out)?;
            let listed = self.list().await?;
            let ready = listed.iter().filter(|s| is_ready(s)).count();
            let what = format!("idle READY sandboxes held (of {idle}, checked at the end)");
            out(row(what, vec![ready as f64], "", 0, Target::AtLeast(IDLE_TARGET.min(idle as f64))));
            ensure!(ready == idle, "{} of {idle} sandboxes are READY at the end", ready);
            Ok(())
        });
        // Always leave an empty gateway, also after a failure.
        let t = Instant::now();
        let cleared = self.rt.block_on(self.clear(&mut anomalies));
        if cleared.is_ok() {
            out(note(
                format!("  deleting them ({IN_FLIGHT} in flight)"),
                format!("{:.1} s", t.elapsed().as_secs_f64()),
            ));
        }
        let socket = self.gw.socket().display().to_string();
        let left = supervisor_pids(&socket);
        result?;
        cleared?;
        ensure!(left.is_empty(), "supervisor process(es) {left:?} left after deleting all sandboxes");
        anomalies.check()
    }

    /// Total memory of every sandbox's process tree (supervisor, its forks, the agent): extra information.
    fn supervisor_memory(&self, idle: usize, out: &mut dyn FnMut(Line)) {
        let socket = self.gw.socket().display().to_string();
        let sups = supervisor_pids(&socket);
        let tree = trees(&sups);
        let sum = |pids: &mut dyn Iterator<Item = u32>, file: &str, key: &str| -> f64 {
            pids.filter_map(|p| kib(&format!("/proc/{p}/{file}"), key)).sum::<f64>() / 1024.0
        };
        let sup_rss = sum(&mut sups.iter().copied(), "status", "VmRSS:");
        let sup_pss = sum(&mut sups.iter().copied(), "smaps_rollup", "Pss:");
        let all_rss = sum(&mut tree.iter().map(|(p, _)| *p), "status", "VmRSS:");
        let all_pss = sum(&mut tree.iter().map(|(p, _)| *p), "smaps_rollup", "Pss:");
        let per = |v: f64| v / idle.max(1) as f64;
        out(note(
            "  supervisors: processes; RSS sum; PSS sum",
            format!(
                "{}; {sup_rss:.0} MiB ({:.1} per sandbox); {sup_pss:.0} MiB ({:.1} per sandbox)",
                sups.len(),
                per(sup_rss),
                per(sup_pss)
            ),
        ));
        out(note(
            "  whole sandbox trees (with agents): processes; RSS; PSS",
            format!(
                "{}; {all_rss:.0} MiB ({:.1} per sandbox); {all_pss:.0} MiB ({:.1} per sandbox)",
                tree.len(),
                per(all_rss),
                per(all_pss)
            ),
        ));
    }

    /// The staged CLI against this gateway: no auto-start, no user config (`OPENSHELL_CONFIG` naming a
    /// missing file is an error, so the config home points at a directory that does not exist).
    fn cli_cmd(&self, args: &[&str]) -> Result<Command> {
        let s = bins::staging()?;
        let mut cmd = Command::new(&s.cli);
        cmd.args(args)
            .env("OPENSHELL_STATE_DIR", &self.gw.state)
            .env("OPENSHELL_NO_AUTOSTART", "1")
            .env_remove("OPENSHELL_CONFIG")
            .env("XDG_CONFIG_HOME", self.gw.state.join("no-such-config-home"))
            .env_remove("OPENSHELL_GATEWAY")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Ok(cmd)
    }

    /// Wall time of `openshell sandbox list` (spawn to exit, output read), table and JSON.
    fn cli_list(&self, idle: usize, runs: usize, out: &mut dyn FnMut(Line)) -> Result<()> {
        let check_table = |stdout: &str| -> Result<()> {
            let lines: Vec<&str> = stdout.lines().collect();
            let ready = lines.iter().skip(1).filter(|l| l.split_whitespace().nth(1) == Some("ready")).count();
            ensure!(ready == idle, "the table lists {ready} ready sandboxes of {idle}:\n{stdout}");
            Ok(())
        };
        let check_json = |stdout: &str| -> Result<()> {
            let v: serde_json::Value = serde_json::from_str(stdout).context("sandbox list -o json")?;
            let list = v["sandboxes"].as_array().ok_or_else(|| anyhow!("no `sandboxes` array"))?;
            let ready = list.iter().filter(|s| s["phase"] == "ready").count();
            ensure!(ready == idle, "the JSON lists {ready} ready sandboxes of {idle}");
            Ok(())
        };
        type Check<'a> = &'a dyn Fn(&str) -> Result<()>;
        let cases: [(&str, &[&str], Check); 2] = [
            ("", &["sandbox", "list"], &check_table),
            ("-o json", &["-o", "json", "sandbox", "list"], &check_json),
        ];
        for (label, args, check) in cases {
            let mut times = Vec::new();
            let mut bytes = 0;
            for i in 0..runs + WARMUP {
                let mut cmd = self.cli_cmd(args)?;
                let t = Instant::now();
                let o = cmd.output().context("running the CLI")?;
                let took = t.elapsed();
                let stdout = String::from_utf8_lossy(&o.stdout);
                ensure!(
                    o.status.success(),
                    "`openshell sandbox list {label}` exited with {}: {}",
                    o.status,
                    String::from_utf8_lossy(&o.stderr)
                );
                check(&stdout)?;
                bytes = o.stdout.len();
                if i >= WARMUP {
                    times.push(ms(took));
                }
            }
            let what = if label.is_empty() {
                format!("CLI `openshell sandbox list`, {idle} sandboxes ({runs} runs)")
            } else {
                format!("  `openshell sandbox list {label}`")
            };
            out(row(what, times, "ms", 1, Target::None));
            out(note(
                format!("    its output{}", if label.is_empty() { "" } else { " (JSON)" }),
                format!("{:.0} KiB", bytes as f64 / 1024.0),
            ));
        }
        Ok(())
    }
}
