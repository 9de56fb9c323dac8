//! `bench [--n N] [--bulk-mib M] [--bulk-rounds R] [--gateway-n G] [--gateway-idle I] [--cli-runs C]
//! [--only SECTION,...]` (as root): the figures
//! issue 2 asks for, measured on the real supervisor against the fake internet (never a real
//! network), each printed as p50/p95 next to its target and whether it is met.
//!
//! Sections (`--only start,latency,keepalive,bulk,rss,decision,gateway`):
//! - `start`: `run -- /bin/true` start-to-exit (spawn to `waitpid`, no polling), minus `ip netns
//!   exec NS /bin/true` measured the same way (the harness's own cost);
//! - `latency`: one request over a new connection, HTTP via the forward proxy and HTTPS via CONNECT,
//!   vs the same request made directly (host resolved once, before timing);
//! - `keepalive`: requests over one keep-alive CONNECT tunnel vs one direct connection;
//! - `bulk`: a `/big` download through a CONNECT tunnel vs direct, every byte checked, in rounds
//!   (each tunnel run compared with the direct run just before it);
//! - `rss`: supervisor RSS idle and with 100 open tunnels that each carried data;
//! - `decision`: `NetworkEngine::evaluate` (uncached) and `decide` (cached) on the example policies,
//!   in-process;
//! - `gateway`: a real gateway with the local driver ([`openshell_e2e::bench_gateway`]): create ->
//!   READY and delete of G sandboxes (default 50), policy revision push -> ack (G pushes), then I idle
//!   READY sandboxes (default 500): `openshell sandbox list` (C runs, default 20) and the gateway's RSS.
//!
//! A figure is only printed for a setup proven to work: exit statuses, `200`s, body sizes and
//! contents, the supervisor's allow events and (bulk) the byte count its tunnel reported. A
//! measurement whose checks fail prints FAILED with the reason and the bench goes on.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use openshell_e2e::bench_gateway::{GatewayBench, Line, Target};
use openshell_e2e::events::Event;
use openshell_e2e::netns::{self, FakeNet, FakeNetOpts, Netns};
use openshell_e2e::policy::Endpoint;
use openshell_e2e::probe_bench::HOLD_BODY;
use openshell_e2e::probe_out::ProbeOutput;
use openshell_e2e::sandbox::{Ctx, PATH, ProbeRun, User};
use openshell_policy::{NetworkEngine, Policy, parse_cases, run_cases};

/// Example policies and their case tables, compiled in (the bench needs no source tree at run time).
const EXAMPLES: &[(&str, &str, &str)] = &[
    (
        "minimal",
        include_str!("../../../policies/examples/minimal.yaml"),
        include_str!("../../../policies/examples/minimal.cases.yaml"),
    ),
    (
        "github",
        include_str!("../../../policies/examples/github.yaml"),
        include_str!("../../../policies/examples/github.cases.yaml"),
    ),
    (
        "pypi-npm",
        include_str!("../../../policies/examples/pypi-npm.yaml"),
        include_str!("../../../policies/examples/pypi-npm.cases.yaml"),
    ),
];
/// Tunnels held open for the memory figure.
const TUNNELS: usize = 100;

/// What a figure is compared with (always its p50).
#[derive(Clone, Copy)]
enum Goal {
    AtMost(f64),
    AtLeast(f64),
    None,
}

/// A p50 and a p95 (for rates and ratios: the slow tail, i.e. the 5th percentile value).
#[derive(Clone, Copy)]
struct Stat {
    p50: f64,
    p95: f64,
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// p50/p95 of values where lower is better (times, memory).
fn stat(mut v: Vec<f64>) -> Stat {
    v.sort_by(f64::total_cmp);
    Stat { p50: pct(&v, 0.5), p95: pct(&v, 0.95) }
}

/// p50 and slow-tail p95 of values where higher is better (throughput).
fn stat_rate(mut v: Vec<f64>) -> Stat {
    v.sort_by(f64::total_cmp);
    Stat { p50: pct(&v, 0.5), p95: pct(&v, 0.05) }
}

fn header() {
    println!("{:<56} {:>12} {:>12}  {:<8} {:<18} met", "measurement", "p50", "p95", "unit", "target (p50)");
}

fn row(what: &str, s: Stat, unit: &str, decimals: usize, goal: Goal) {
    let (target, met) = match goal {
        Goal::AtMost(t) => (format!("<= {t}"), if s.p50 <= t { "yes" } else { "NO" }),
        Goal::AtLeast(t) => (format!(">= {t}"), if s.p50 >= t { "yes" } else { "NO" }),
        Goal::None => ("-".to_string(), "-"),
    };
    println!("{what:<56} {:>12.decimals$} {:>12.decimals$}  {unit:<8} {target:<18} {met}", s.p50, s.p95);
}

fn note(what: &str, text: &str) {
    println!("{what:<56} {text}");
}

fn report(r: &ProbeRun) -> Result<&ProbeOutput> {
    let p = r.report()?;
    if !p.ok {
        bail!("{}: {}\n{}", p.action, p.detail, r.out.describe());
    }
    Ok(p)
}

fn samples(p: &ProbeOutput, scale: f64) -> Result<Vec<f64>> {
    let v: Vec<f64> = p.extra["samples_us"]
        .as_array()
        .ok_or_else(|| anyhow!("no samples in the probe report"))?
        .iter()
        .filter_map(serde_json::Value::as_f64)
        .map(|us| us * scale)
        .collect();
    ensure!(!v.is_empty(), "the probe reported no samples");
    Ok(v)
}

/// Allow events for `door` in a supervisor run (each proves one connection went through it).
fn allows(events: &[Event], door: &str) -> usize {
    events
        .iter()
        .filter(|e| {
            e.kind() == "network" && e.decision() == "allow" && e.0["detail"]["door"].as_str() == Some(door)
        })
        .count()
}

fn spawn_and_wait(cmd: &mut Command) -> Result<(Duration, std::process::ExitStatus)> {
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    let t = Instant::now();
    let status = cmd.spawn().with_context(|| format!("spawn {cmd:?}"))?.wait()?;
    Ok((t.elapsed(), status))
}

fn start_to_exit(n: usize) -> Result<()> {
    let ns = Netns::isolated()?;
    let ctx = Ctx::new(User::Root, &ns.name)?;
    let policy = ctx.policy_file(&ctx.base_policy().to_yaml())?;
    // A supervisor that does not run the command must not produce a start-to-exit figure.
    let o = ctx.sandbox(&policy).run(&["/bin/sh", "-c", "exit 3"])?;
    if o.code != Some(3) {
        bail!(
            "`run -- sh -c 'exit 3'` did not exit 3: the supervisor does not run commands\n{}",
            o.describe()
        );
    }
    let events = ctx.events_dir.join("start.jsonl");
    let sandboxed = || {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &ns.name]).arg(&ctx.supervisor).arg("run").arg("--policy").arg(&policy);
        c.arg("--workdir").arg(&ctx.workdir).arg("--events").arg(&events).args(["--", "/bin/true"]);
        c.env_clear().env("PATH", PATH).current_dir(&ctx.root);
        c
    };
    let baseline = || {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &ns.name, "/bin/true"]).env_clear().env("PATH", PATH);
        c
    };
    let (mut with, mut base) = (Vec::new(), Vec::new());
    for i in 0..n + 3 {
        let (ts, st) = spawn_and_wait(&mut sandboxed())?;
        ensure!(st.success(), "run -- /bin/true exited with {st}");
        let (tb, st) = spawn_and_wait(&mut baseline())?;
        ensure!(st.success(), "ip netns exec /bin/true exited with {st}");
        if i >= 3 {
            with.push(ts.as_secs_f64() * 1000.0);
            base.push(tb.as_secs_f64() * 1000.0);
        }
    }
    let (evs, _) = openshell_e2e::events::read(&events);
    let started =
        evs.iter().filter(|e| e.kind() == "lifecycle" && e.str("reason") == Some("started")).count();
    ensure!(started == n + 3, "{started} `started` lifecycle events for {} runs", n + 3);
    let (w, b) = (stat(with), stat(base));
    row("run -- /bin/true start-to-exit, incl. ip netns exec", w, "ms", 1, Goal::None);
    row("  ip netns exec /bin/true (harness, subtracted)", b, "ms", 1, Goal::None);
    let share = Stat { p50: w.p50 - b.p50, p95: w.p95 - b.p95 };
    row("  supervisor start-to-exit", share, "ms", 1, Goal::AtMost(30.0));
    Ok(())
}

struct Online {
    fake: FakeNet,
    ctx: Ctx,
    policy: PathBuf,
}

impl Online {
    fn start() -> Result<Online> {
        let fake = FakeNet::start(FakeNetOpts::default())?;
        let ctx = Ctx::new(User::Root, &fake.client.name)?;
        let probe = ctx.probe_path();
        let ips = [netns::INTERNET_V4_NET];
        let p = ctx.base_policy().read_only(&fake.public_dir).rule(
            "bench",
            vec![Endpoint::new("allowed.test", &[netns::HTTP_PORT, netns::HTTPS_PORT]).allowed_ips(&ips)],
            &[&probe],
        );
        let policy = ctx.policy_file(&p.to_yaml())?;
        Ok(Online { fake, ctx, policy })
    }

    fn ca(&self) -> String {
        self.fake.ca_pem.display().to_string()
    }

    fn sandboxed(&self, args: &[&str], timeout: Duration) -> Result<ProbeRun> {
        self.ctx
            .sandbox(&self.policy)
            .env("SSL_CERT_FILE", &self.ca())
            .sup_env("SSL_CERT_FILE", &self.ca())
            // The tunnel's byte counts, to prove the bulk bytes went through the supervisor.
            .sup_env("OPENSHELL_LOG", "warn,openshell_egress::proxy::connect=debug")
            .timeout(timeout)
            .probe(args)
    }

    fn direct(&self, args: &[&str]) -> Result<ProbeRun> {
        self.ctx.direct_probe_env(User::Root, &[("SSL_CERT_FILE", &self.ca())], args)
    }
}

/// Rounds of direct and sandboxed runs, interleaved so that a change in the machine's load
/// (2 shared cores) hits both sides alike.
const ROUNDS: usize = 4;

fn latency(o: &Online, n: usize) -> Result<()> {
    let per_round = n.div_ceil(ROUNDS).max(1);
    let nr = per_round.to_string();
    let cases = [
        ("HTTP, forward proxy", "http://allowed.test/lat", "forward"),
        ("HTTPS, CONNECT", "https://allowed.test/lat", "connect"),
    ];
    let mut errors = Vec::new();
    for (label, url, mode) in cases {
        let r = (|| -> Result<()> {
            let (mut direct, mut via, mut first) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..ROUNDS {
                direct.extend(samples(report(&o.direct(&["bench-http", url, &nr, "direct"])?)?, 1e-3)?);
                let run = o.sandboxed(&["bench-http", url, &nr, mode], Duration::from_secs(300))?;
                let p = report(&run)?;
                via.extend(samples(p, 1e-3)?);
                first.push(p.extra["first_us"].as_f64().unwrap_or(f64::NAN) / 1000.0);
                let seen = allows(&run.out.events, mode);
                ensure!(seen >= per_round, "{seen} `{mode}` allow events for {per_round} requests");
            }
            let (d, v) = (stat(direct), stat(via));
            let what = format!("new-connection request, {label}: direct ({ROUNDS}x{per_round})");
            row(&what, d, "ms", 3, Goal::None);
            row("  through the sandbox", v, "ms", 3, Goal::None);
            let added = Stat { p50: v.p50 - d.p50, p95: v.p95 - d.p95 };
            row("  added latency", added, "ms", 3, Goal::AtMost(0.5));
            let f = stat(first);
            row("  first request of a sandbox (hashes the binary)", f, "ms", 1, Goal::None);
            Ok(())
        })();
        if let Err(e) = r {
            errors.push(format!("{label}: {e:#}"));
        }
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("\n"));
    }
    Ok(())
}

fn keepalive(o: &Online, n: usize) -> Result<()> {
    let per_round = n.div_ceil(ROUNDS).max(1);
    let nr = per_round.to_string();
    let url = "http://allowed.test/ka";
    let secs = |p: &ProbeOutput| p.extra["seconds"].as_f64().ok_or_else(|| anyhow!("no seconds"));
    let (mut direct, mut via, mut dsecs, mut vsecs) = (Vec::new(), Vec::new(), 0.0, 0.0);
    for _ in 0..ROUNDS {
        let dr = o.direct(&["bench-keepalive", url, &nr, "direct"])?;
        let dp = report(&dr)?;
        direct.extend(samples(dp, 1.0)?);
        dsecs += secs(dp)?;
        let run = o.sandboxed(&["bench-keepalive", url, &nr, "connect"], Duration::from_secs(300))?;
        let vp = report(&run)?;
        ensure!(allows(&run.out.events, "connect") == 1, "expected exactly one CONNECT allow event");
        via.extend(samples(vp, 1.0)?);
        vsecs += secs(vp)?;
    }
    let (d, v) = (stat(direct), stat(via));
    row(&format!("keep-alive request, one direct connection ({ROUNDS}x{per_round})"), d, "us", 0, Goal::None);
    row("  through one CONNECT tunnel", v, "us", 0, Goal::None);
    let per_s = |s: Stat| Stat { p50: 1e6 / s.p50, p95: 1e6 / s.p95 };
    row("  request rate, direct (1/request time)", per_s(d), "req/s", 0, Goal::None);
    row("  request rate through the tunnel", per_s(v), "req/s", 0, Goal::None);
    let total = (per_round * ROUNDS) as f64;
    let (dr, vr) = (total / dsecs, total / vsecs);
    note(
        "  overall rate: direct / tunnel",
        &format!("{dr:.0} / {vr:.0} req/s ({:.0} % of direct); no target", vr / dr * 100.0),
    );
    Ok(())
}

/// `down_bytes=N` of the supervisor's `tunnel closed` debug line (ANSI colours stripped).
fn tunnel_down_bytes(stderr: &str) -> Option<u64> {
    let mut plain = String::with_capacity(stderr.len());
    let mut esc = false;
    for c in stderr.chars() {
        match (esc, c) {
            (false, '\u{1b}') => esc = true,
            (true, c) if c.is_ascii_alphabetic() => esc = false,
            (true, _) => {}
            (false, c) => plain.push(c),
        }
    }
    plain.lines().filter(|l| l.contains("tunnel closed")).find_map(|l| {
        let rest = &l[l.find("down_bytes=")? + "down_bytes=".len()..];
        rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    })
}

/// CPU seconds (user + system) of this process's waited-for children so far (`/proc/self/stat`
/// cutime + cstime; USER_HZ is 100 on Linux).
fn children_cpu() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the parenthesised command name; cutime and cstime are fields 16 and 17.
    let rest = &stat[stat.rfind(')').ok_or_else(|| anyhow!("bad /proc/self/stat"))? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64> { Ok(f.get(i - 3).ok_or_else(|| anyhow!("short stat"))?.parse()?) };
    Ok((ticks(16)? + ticks(17)?) / 100.0)
}

/// CPU seconds used so far by this process's `fake-internet` children (the servers).
fn fake_internet_cpu() -> f64 {
    let me = std::process::id().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else { return 0.0 };
    dir.flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter_map(|stat| {
            let (head, rest) = stat.rsplit_once(')')?;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ours = head.ends_with("(fake-internet") && f.get(1) == Some(&me.as_str());
            // utime and stime are fields 14 and 15 (1-based); `f` starts at field 3.
            ours.then(|| f.get(11)?.parse::<f64>().ok().zip(f.get(12)?.parse::<f64>().ok()))
                .flatten()
                .map(|(u, s)| (u + s) / 100.0)
        })
        .sum()
}

fn bulk(o: &Online, mib: usize, rounds: usize) -> Result<()> {
    let bytes = mib * 1024 * 1024;
    let url = format!("http://allowed.test/big?n={bytes}");
    let mbps = |p: &ProbeOutput| -> Result<f64> {
        let got = p.extra["bytes"].as_u64().unwrap_or(0);
        ensure!(got == bytes as u64, "the probe received {got} of {bytes} bytes");
        Ok(got as f64 / 1048576.0 / p.extra["seconds"].as_f64().unwrap_or(f64::NAN))
    };
    let (mut direct, mut tunnel, mut cpu_direct, mut cpu_tunnel) = (Vec::new(), Vec::new(), 0.0, 0.0);
    let (mut fake_direct, mut fake_tunnel) = (0.0, 0.0);
    let gib = bytes as f64 / (1u64 << 30) as f64;
    for _ in 0..rounds {
        let (c0, f0) = (children_cpu()?, fake_internet_cpu());
        direct.push(mbps(report(&o.direct(&["bench-bulk", &url, "direct"])?)?)?);
        let (c1, f1) = (children_cpu()?, fake_internet_cpu());
        let run = o.sandboxed(&["bench-bulk", &url, "connect"], Duration::from_secs(600))?;
        cpu_direct += (c1 - c0) / gib;
        cpu_tunnel += (children_cpu()? - c1) / gib;
        fake_direct += (f1 - f0) / gib;
        fake_tunnel += (fake_internet_cpu() - f1) / gib;
        tunnel.push(mbps(report(&run)?)?);
        let carried = tunnel_down_bytes(&run.out.stderr)
            .ok_or_else(|| anyhow!("the supervisor reported no tunnel byte count\n{}", run.out.describe()))?;
        ensure!(
            carried >= bytes as u64,
            "the supervisor's tunnel carried {carried} bytes, fewer than {bytes}"
        );
    }
    // Each round's tunnel run is compared with the direct run just before it (same machine load).
    let ratios: Vec<f64> = tunnel.iter().zip(&direct).map(|(t, d)| t / d * 100.0).collect();
    let (d, t) = (stat_rate(direct), stat_rate(tunnel));
    row(&format!("bulk download of {mib} MiB x{rounds}: direct"), d, "MiB/s", 0, Goal::None);
    row("  through a CONNECT tunnel", t, "MiB/s", 0, Goal::None);
    row("  tunnel throughput vs direct (per round)", stat_rate(ratios), "%", 0, Goal::AtLeast(80.0));
    let r = rounds as f64;
    let (cd, ct, fd, ft) = (cpu_direct / r, cpu_tunnel / r, fake_direct / r, fake_tunnel / r);
    note(
        "  CPU s/GiB direct: probe, server",
        &format!(
            "{cd:.2}, {fd:.2}; through the tunnel: probe + supervisor {ct:.2} (supervisor ~{:.2}), server {ft:.2}",
            ct - cd
        ),
    );
    Ok(())
}

fn status_kib(pid: u32, key: &str) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with(key)).ok_or_else(|| anyhow!("no {key}"))?;
    let kib: f64 = line[key.len()..].trim().trim_end_matches("kB").trim().parse()?;
    Ok(kib)
}

/// (sockets, pipes) among the supervisor's descriptors.
fn fd_kinds(pid: u32) -> (usize, usize) {
    let links: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .map(|t| t.to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let count = |p: &str| links.iter().filter(|l| l.starts_with(p)).count();
    (count("socket:"), count("pipe:"))
}

fn sample_rss(pid: u32, k: usize) -> Result<Vec<f64>> {
    let mut v = Vec::with_capacity(k);
    for _ in 0..k {
        v.push(status_kib(pid, "VmRSS:")? / 1024.0);
        std::thread::sleep(Duration::from_millis(25));
    }
    Ok(v)
}

fn wait_for_line(run: &openshell_e2e::sandbox::Running, line: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !run.stdout_now().contains(line) {
        ensure!(Instant::now() < deadline, "the agent never printed {line:?}:\n{}", run.stdout_now());
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

fn rss(o: &Online) -> Result<()> {
    let n = TUNNELS.to_string();
    let run = o.ctx.sandbox(&o.policy).spawn(&[
        &o.ctx.probe_path(),
        "hold-tunnels",
        "allowed.test",
        "80",
        &n,
        "3",
    ])?;
    // `ip netns exec` execs the supervisor: this pid is the supervisor's.
    let pid = run.pid();
    wait_for_line(&run, "START")?;
    std::thread::sleep(Duration::from_millis(300));
    let idle = stat(sample_rss(pid, 20)?);
    wait_for_line(&run, &format!("HOLDING {TUNNELS}"))?;
    std::thread::sleep(Duration::from_millis(200));
    let held = stat(sample_rss(pid, 40)?);
    let peak = status_kib(pid, "VmHWM:")? / 1024.0;
    let anon = status_kib(pid, "RssAnon:")? / 1024.0;
    let file = status_kib(pid, "RssFile:")? / 1024.0;
    let threads = status_kib(pid, "Threads:")?;
    let (sockets, pipes) = fd_kinds(pid);
    let out = run.wait(Duration::from_secs(30))?;
    let p =
        ProbeOutput::find_in(&out.stdout).ok_or_else(|| anyhow!("no probe report\n{}", out.describe()))?;
    ensure!(p.ok, "hold-tunnels failed: {}\n{}", p.detail, out.describe());
    let seen = allows(&out.events, "connect");
    ensure!(seen == TUNNELS, "{seen} CONNECT allow events for {TUNNELS} tunnels");
    row("supervisor RSS, idle sandbox", idle, "MiB", 1, Goal::None);
    let what = format!("supervisor RSS, {TUNNELS} open tunnels ({} KiB each)", HOLD_BODY / 1024);
    row(&what, held, "MiB", 1, Goal::AtMost(16.0));
    note(
        "  anon + file (binary) RSS; peak; threads; sockets; pipes",
        &format!(
            "{anon:.1} + {file:.1} MiB; {peak:.1} MiB; {threads:.0}; {sockets}; {pipes} (pipe pages: kernel memory)"
        ),
    );
    Ok(())
}

/// Per-call time of `f` in microseconds, for each of `reqs`, `rounds` times.
fn time_each<T>(reqs: &[T], rounds: usize, mut f: impl FnMut(&T)) -> Vec<f64> {
    let mut v = Vec::with_capacity(reqs.len() * rounds);
    for _ in 0..rounds {
        for r in reqs {
            let t = Instant::now();
            f(r);
            v.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    v
}

fn decision(rounds: usize) -> Result<()> {
    let (mut uncached, mut cached, mut cases_n) = (Vec::new(), Vec::new(), 0);
    // Parsing and compiling a policy is on the supervisor's startup path.
    let mut compile = Vec::new();
    for _ in 0..rounds.min(20) {
        for (name, yaml, _) in EXAMPLES {
            let t = Instant::now();
            let policy = Policy::from_yaml(yaml).map_err(|e| anyhow!("{name}: {e}"))?;
            std::hint::black_box(NetworkEngine::new(Arc::new(policy), 1)?);
            compile.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    for (name, yaml, table) in EXAMPLES {
        let policy = Policy::from_yaml(yaml).map_err(|e| anyhow!("{name}: {e}"))?;
        let engine = NetworkEngine::new(Arc::new(policy), 1).with_context(|| format!("{name}: engine"))?;
        let cases = parse_cases(table).map_err(|e| anyhow!("{name} cases: {e}"))?;
        // The engine must decide every case as its table expects before it is timed.
        let failures = run_cases(&engine, &cases);
        ensure!(failures.is_empty(), "{name}: {} case(s) decided wrongly: {failures:?}", failures.len());
        let reqs: Vec<_> = cases.iter().map(openshell_policy::Case::request).collect();
        for (c, r) in cases.iter().zip(&reqs) {
            let d = engine.evaluate(r).with_context(|| format!("{name}: evaluate line {}", c.line))?;
            ensure!(c.expect.is_met_by(&d), "{name} line {}: evaluate disagrees with the table", c.line);
        }
        uncached.extend(time_each(&reqs, rounds, |r| {
            let _ = std::hint::black_box(engine.evaluate(r));
        }));
        cached.extend(time_each(&reqs, rounds * 20, |r| {
            std::hint::black_box(engine.decide(r));
        }));
        cases_n += reqs.len();
    }
    let what = format!("decision, uncached: NetworkEngine::evaluate ({cases_n} cases)");
    row(&what, stat(uncached), "us", 1, Goal::None);
    row("decision, cached: NetworkEngine::decide", stat(cached), "us", 2, Goal::None);
    row("policy parse + engine compile (startup path)", stat(compile), "ms", 2, Goal::None);
    Ok(())
}

/// Prints a line of the gateway figures in this bench's format.
fn gateway_line(l: Line) {
    match l {
        Line::Row { what, samples, unit, decimals, target } => {
            let goal = match target {
                Target::AtMost(t) => Goal::AtMost(t),
                Target::AtLeast(t) => Goal::AtLeast(t),
                Target::None => Goal::None,
            };
            row(&what, stat(samples), unit, decimals, goal);
        }
        Line::Note { what, text } => note(&what, &text),
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let opt = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1));
    let num = |name: &str, default: usize| opt(name).and_then(|v| v.parse().ok()).unwrap_or(default);
    let n = num("--n", 200);
    let mib = num("--bulk-mib", 1024);
    let rounds = num("--bulk-rounds", 7).max(1);
    let gateway_n = num("--gateway-n", 50).max(1);
    let gateway_idle = num("--gateway-idle", 500).max(1);
    let cli_runs = num("--cli-runs", 20).max(1);
    let only: Vec<String> =
        opt("--only").map(|s| s.split(',').map(String::from).collect()).unwrap_or_default();
    let want = |s: &str| only.is_empty() || only.iter().any(|o| o == s);
    if !openshell_e2e::bins::is_root() {
        bail!("bench needs root (it creates network namespaces)");
    }
    let bin = openshell_e2e::bins::build_dir()?;
    println!("binaries: {}", bin.display());
    header();
    let mut failed = 0;
    let mut step = |what: &str, r: Result<()>| {
        if let Err(e) = r {
            failed += 1;
            println!("{what:<56} FAILED: {e:#}");
        }
    };
    if want("start") {
        step("start-to-exit", start_to_exit(n.min(100)));
    }
    if ["latency", "keepalive", "bulk", "rss"].iter().any(|s| want(s)) {
        match Online::start() {
            Err(e) => step("fake internet", Err(e)),
            Ok(o) => {
                if want("latency") {
                    step("latency", latency(&o, n));
                }
                if want("keepalive") {
                    step("keep-alive", keepalive(&o, n * 10));
                }
                if want("bulk") {
                    step("bulk throughput", bulk(&o, mib, rounds));
                }
                if want("rss") {
                    step("RSS with open tunnels", rss(&o));
                }
            }
        }
    }
    if want("decision") {
        step("decision evaluation", decision(50));
    }
    if want("gateway") {
        match GatewayBench::start() {
            Err(e) => step("gateway", Err(e)),
            Ok(g) => {
                let out = &mut gateway_line;
                step("gateway create/delete", g.create_delete(gateway_n, out));
                step("gateway policy push", g.policy_push(gateway_n, out));
                step("gateway with idle sandboxes", g.idle(gateway_idle, cli_runs, out));
            }
        }
    }
    if failed > 0 {
        bail!("{failed} measurement(s) failed");
    }
    Ok(())
}
