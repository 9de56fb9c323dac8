//! The `openshell` CLI end to end: the real binary against a real gateway (no auto-start unless a test
//! is about it): foreground output and exit status, the JSON/YAML/table views, the lifecycle verbs, policy
//! revisions, the documented exit codes (2 invalid, 3 not found, 4 conflict, 5 unreachable), two CLIs
//! racing on one sandbox, and the gateway the CLI starts by itself.

use std::path::Path;
use std::process::Output;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use openshell_e2e::bins;
use openshell_e2e::gateway::{GatewayProc, cli_at, pid_alive, supervisor_pids};
use serde_json::Value;

use super::common::{Failures, notice, require_root};

/// Bound on one CLI command (a hang fails the test).
const CLI_MAX: Duration = Duration::from_secs(60);

/// One finished CLI command.
struct Cli {
    args: String,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Cli {
    fn from(args: &[&str], out: Output) -> Cli {
        Cli {
            args: args.join(" "),
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn describe(&self) -> String {
        format!(
            "`openshell {}` exited {:?}\n  stdout: {:?}\n  stderr: {:?}",
            self.args, self.code, self.stdout, self.stderr
        )
    }

    /// Asserts the exit code and returns self.
    fn expect(self, code: i32) -> Cli {
        assert_eq!(self.code, Some(code), "unexpected exit code: {}", self.describe());
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {}", self.describe()))
    }

    fn no_panic(&self) -> bool {
        !self.stderr.contains("panicked") && !self.stdout.contains("panicked")
    }
}

fn cli(gw: &GatewayProc, args: &[&str]) -> Cli {
    Cli::from(
        args,
        gw.run_cli(args, CLI_MAX).unwrap_or_else(|e| panic!("`openshell {}`: {e:#}", args.join(" "))),
    )
}

/// `sandbox get NAME -o json`, which must succeed.
fn get_json(gw: &GatewayProc, name: &str) -> Value {
    cli(gw, &["sandbox", "get", name, "-o", "json"]).expect(0).json()
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_else(|| panic!("no string `{key}` in {v}"))
}

/// Phases of the `history` array, in order.
fn history(v: &Value) -> Vec<String> {
    v["history"]
        .as_array()
        .unwrap_or_else(|| panic!("no history array in {v}"))
        .iter()
        .map(|t| t["phase"].as_str().unwrap_or("?").to_string())
        .collect()
}

fn list_names(gw: &GatewayProc) -> Vec<String> {
    let v = cli(gw, &["sandbox", "list", "-o", "json"]).expect(0).json();
    v["sandboxes"]
        .as_array()
        .unwrap_or_else(|| panic!("`sandbox list -o json` has no `sandboxes` array: {v}"))
        .iter()
        .map(|s| str_of(s, "name").to_string())
        .collect()
}

/// How many per-sandbox state directories exist (0 when `sandboxes/` does not exist).
fn sandbox_dirs(gw: &GatewayProc) -> usize {
    std::fs::read_dir(gw.state.join("sandboxes")).map(|d| d.count()).unwrap_or(0)
}

fn gateway_log_clean(gw: &GatewayProc) {
    let log = gw.log_text();
    assert!(!log.contains("panicked"), "the gateway panicked:\n{log}");
}

#[test]
fn foreground_create_returns_output_and_exit_status() {
    if !require_root("gateway_cli::foreground_create_returns_output_and_exit_status") {
        return;
    }
    let gw = GatewayProc::start().unwrap();
    let script = "echo out; echo err >&2; exit 42";
    let run = cli(&gw, &["sandbox", "create", "--name", "fg", "--", "sh", "-c", script]).expect(42);
    assert_eq!(run.stdout, "out\n", "stdout must carry exactly the agent's stdout: {}", run.describe());
    assert!(run.stderr.lines().any(|l| l == "err"), "the agent's stderr is missing: {}", run.describe());
    assert!(!run.stdout.contains("err"), "stderr leaked into stdout: {}", run.describe());

    // -o json: a stable document.
    let v = get_json(&gw, "fg");
    assert_eq!(str_of(&v, "name"), "fg");
    assert!(str_of(&v, "id").starts_with("sbx-"), "{v}");
    assert_eq!(str_of(&v, "phase"), "stopped", "{v}");
    assert_eq!(v["exit_code"].as_i64(), Some(42), "{v}");
    assert_eq!(v["connected"].as_bool(), Some(false), "{v}");
    assert_eq!(v["spec"]["command"], serde_json::json!(["sh", "-c", script]), "{v}");
    let h = history(&v);
    assert!(h.contains(&"ready".to_string()), "the history lacks READY: {h:?}");
    assert_eq!(h.last().map(String::as_str), Some("stopped"), "{h:?}");
    let created = str_of(&v, "created_at");
    assert!(
        created.ends_with('Z') && created.contains('T') && created.len() == 24,
        "not RFC 3339 ms: {created}"
    );

    // -o yaml: the same document.
    let y = cli(&gw, &["sandbox", "get", "fg", "-o", "yaml"]).expect(0);
    for line in ["name: fg", "phase: stopped", "exit_code: 42", "connected: false"] {
        assert!(y.stdout.lines().any(|l| l == line), "YAML lacks `{line}`: {}", y.describe());
    }
    assert!(!y.stdout.trim_start().starts_with('{'), "-o yaml printed JSON: {}", y.describe());

    // Table (the default): one field per line.
    let t = cli(&gw, &["sandbox", "get", "fg"]).expect(0);
    let field = |k: &str| {
        t.stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}:")).map(str::trim))
            .unwrap_or_else(|| panic!("table lacks `{k}:`: {}", t.describe()))
            .to_string()
    };
    assert_eq!(field("name"), "fg");
    assert!(field("phase").starts_with("stopped"), "{}", t.describe());
    assert_eq!(field("exit code"), "42");

    // The list agrees, in every format.
    let l = cli(&gw, &["sandbox", "list", "-o", "json"]).expect(0).json();
    let sbs = l["sandboxes"].as_array().unwrap_or_else(|| panic!("{l}"));
    assert_eq!(sbs.len(), 1, "{l}");
    assert_eq!((str_of(&sbs[0], "phase"), sbs[0]["exit_code"].as_i64()), ("stopped", Some(42)), "{l}");
    let lt = cli(&gw, &["sandbox", "list"]).expect(0);
    let rows: Vec<Vec<&str>> = lt.stdout.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows.first().map(|r| r[..2].to_vec()), Some(vec!["NAME", "PHASE"]), "{}", lt.describe());
    assert!(
        rows.iter().any(|r| r.first() == Some(&"fg") && r.get(1) == Some(&"stopped") && r.contains(&"42")),
        "no row for fg: {}",
        lt.describe()
    );

    // The output is stored: `logs -o json` (JSON lines) has both streams.
    let logs = cli(&gw, &["logs", "fg", "-o", "json"]).expect(0);
    let entries: Vec<Value> = logs
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l:?}")))
        .collect();
    let has = |src: &str, text: &str| entries.iter().any(|e| e["source"] == src && e["text"] == text);
    assert!(has("stdout", "out") && has("stderr", "err"), "output missing from logs: {}", logs.describe());
    gateway_log_clean(&gw);
}

#[test]
fn detached_sandbox_lifecycle() {
    if !require_root("gateway_cli::detached_sandbox_lifecycle") {
        return;
    }
    let gw = GatewayProc::start().unwrap();
    let c = cli(&gw, &["sandbox", "create", "--name", "life", "--detach", "--", "sleep", "1000"]).expect(0);
    assert_eq!(c.stdout, "life\n", "--detach prints the name (only): {}", c.describe());

    let l = cli(&gw, &["sandbox", "list", "-o", "json"]).expect(0).json();
    let sbs = l["sandboxes"].as_array().unwrap_or_else(|| panic!("{l}"));
    assert_eq!(sbs.len(), 1, "{l}");
    assert_eq!(str_of(&sbs[0], "name"), "life");
    assert_eq!(str_of(&sbs[0], "phase"), "ready", "--detach returned before READY: {l}");
    assert_eq!(sbs[0]["connected"].as_bool(), Some(true), "{l}");
    let id = str_of(&sbs[0], "id").to_string();
    assert!(!supervisor_pids(&id).is_empty(), "READY but no supervisor runs for {id}");

    let s = cli(&gw, &["sandbox", "stop", "life"]).expect(0);
    assert!(s.stdout.starts_with("sandbox life stopped"), "{}", s.describe());
    assert_eq!(str_of(&get_json(&gw, "life"), "phase"), "stopped");
    assert!(supervisor_pids(&id).is_empty(), "a supervisor survived `sandbox stop`");

    let st = cli(&gw, &["sandbox", "start", "life"]).expect(0);
    assert_eq!(st.stdout, "life\n", "{}", st.describe());
    let v = get_json(&gw, "life");
    assert_eq!(str_of(&v, "phase"), "ready", "`start` returned before READY: {v}");
    assert_eq!(str_of(&v, "id"), id, "start must keep the sandbox, not make a new one");
    let h = history(&v);
    let stopped_at = h.iter().position(|p| p == "stopped");
    assert!(
        stopped_at.is_some_and(|i| h[i..].iter().any(|p| p == "ready")),
        "history lacks stopped -> ready: {h:?}"
    );

    // Logs: the gateway's phase lines, in the table format `TIME SOURCE LEVEL TEXT`.
    for args in [["logs", "life"].as_slice(), ["sandbox", "logs", "life"].as_slice()] {
        let lg = cli(&gw, args).expect(0);
        let gateway_lines: Vec<&str> =
            lg.stdout.lines().filter(|l| l.split_whitespace().nth(1) == Some("gateway")).collect();
        for want in ["phase provisioning:", "phase ready:", "phase stopped:"] {
            assert!(
                gateway_lines.iter().any(|l| l.contains(want)),
                "no gateway line with `{want}`: {}",
                lg.describe()
            );
        }
        let readies = gateway_lines.iter().filter(|l| l.contains("phase ready:")).count();
        assert!(readies >= 2, "two runs, two READY lines expected: {}", lg.describe());
    }

    let d = cli(&gw, &["sandbox", "delete", "life"]).expect(0);
    assert_eq!(d.stdout, "deleted life\n", "{}", d.describe());
    let g = cli(&gw, &["sandbox", "get", "life"]).expect(3);
    assert!(g.stdout.is_empty(), "{}", g.describe());
    assert!(
        g.stderr.contains("`life`") && g.stderr.contains("not found"),
        "the message must name the sandbox and say it is not found: {}",
        g.describe()
    );
    assert!(list_names(&gw).is_empty(), "deleted sandbox still listed");
    assert!(!gw.sandbox_dir(&id).exists(), "state directory left behind");
    assert!(supervisor_pids(&id).is_empty(), "a supervisor survived `sandbox delete`");
    gateway_log_clean(&gw);
}

/// A valid policy with a network rule (what `policy set` is for).
fn network_policy() -> String {
    format!(
        "{}\nnetwork_policies:\n  example:\n    name: example\n    endpoints:\n      - host: api.example.com\n        port: 443\n    binaries:\n      - path: /usr/bin/curl\n",
        openshell_policy::DEFAULT_POLICY_YAML.trim_end()
    )
}

/// Line 4 is the culprit (unknown field).
const MALFORMED_POLICY: &str = "version: 1\nfilesystem_policy:\n  read_only: [/usr]\n  bogus: 1\n";

#[test]
fn policy_set_get_and_malformed_policy() {
    if !require_root("gateway_cli::policy_set_get_and_malformed_policy") {
        return;
    }
    let gw = GatewayProc::start().unwrap();
    let dir = bins::test_dir("pol-").unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, MALFORMED_POLICY).unwrap();
    let good = dir.path().join("net.yaml");
    let good_text = network_policy();
    std::fs::write(&good, &good_text).unwrap();
    let (bad_s, good_s) = (bad.display().to_string(), good.display().to_string());

    // A malformed policy file: refused with the line, and nothing is left behind.
    let r = cli(&gw, &["sandbox", "create", "--name", "badpol", "--policy", &bad_s, "--", "true"]).expect(2);
    assert!(r.stderr.contains("line 4"), "the error does not name the line: {}", r.describe());
    assert!(r.stderr.contains("bogus"), "the error does not name the field: {}", r.describe());
    assert!(r.stdout.is_empty(), "{}", r.describe());
    assert!(list_names(&gw).is_empty(), "a refused create left a sandbox");
    assert_eq!(sandbox_dirs(&gw), 0, "a refused create left a state directory");
    let missing = dir.path().join("missing.yaml").display().to_string();
    let r =
        cli(&gw, &["sandbox", "create", "--name", "nofile", "--policy", &missing, "--", "true"]).expect(2);
    assert!(r.stderr.contains(&missing), "{}", r.describe());
    assert!(list_names(&gw).is_empty(), "a refused create left a sandbox");

    // A running sandbox gets revision 2, pushed and acknowledged.
    cli(&gw, &["sandbox", "create", "--name", "pol", "--detach", "--", "sleep", "1000"]).expect(0);
    let set = cli(&gw, &["policy", "set", "pol", "-f", &good_s]).expect(0);
    assert!(set.stdout.contains("policy revision 2 stored"), "{}", set.describe());
    assert!(set.stdout.contains("applied"), "`policy set` does not say it is applied: {}", set.describe());
    assert!(!set.stdout.contains("not yet"), "{}", set.describe());
    let v = get_json(&gw, "pol");
    assert_eq!(
        (v["policy_revision"].as_u64(), v["acked_policy_revision"].as_u64()),
        (Some(2), Some(2)),
        "{v}"
    );

    let get = cli(&gw, &["policy", "get", "pol"]).expect(0);
    assert!(get.stdout.starts_with("# policy revision 2 of sandbox pol"), "{}", get.describe());
    assert!(
        get.stdout.contains(good_text.trim_end()),
        "`policy get` does not return the file: {}",
        get.describe()
    );
    let gj = cli(&gw, &["policy", "get", "pol", "-o", "json"]).expect(0).json();
    assert_eq!(gj["revision"].as_u64(), Some(2), "{gj}");
    assert_eq!(gj["yaml"].as_str(), Some(good_text.as_str()), "stored policy differs from the file");
    let first = cli(&gw, &["policy", "get", "pol", "--revision", "1", "-o", "json"]).expect(0).json();
    assert_eq!(first["revision"].as_u64(), Some(1), "{first}");
    assert_ne!(first["yaml"].as_str(), Some(good_text.as_str()), "revision 1 was overwritten");

    // A malformed revision is refused and changes nothing.
    let r = cli(&gw, &["policy", "set", "pol", "-f", &bad_s]).expect(2);
    assert!(r.stderr.contains("line 4"), "{}", r.describe());
    let v = get_json(&gw, "pol");
    assert_eq!(
        (v["policy_revision"].as_u64(), v["acked_policy_revision"].as_u64()),
        (Some(2), Some(2)),
        "{v}"
    );
    assert_eq!(str_of(&v, "phase"), "ready", "{v}");
    gateway_log_clean(&gw);
}

#[test]
fn exit_codes_for_bad_input_unknown_sandboxes_and_no_gateway() {
    if !require_root("gateway_cli::exit_codes_for_bad_input_unknown_sandboxes_and_no_gateway") {
        return;
    }
    let gw = GatewayProc::start().unwrap();
    let mut f = Failures::default();
    let mut check = |args: &[&str], code: i32, needles: &[&str]| {
        let r = cli(&gw, args);
        f.check(r.code == Some(code), || format!("expected exit {code}: {}", r.describe()));
        for n in needles {
            f.check(r.stderr.contains(n), || format!("stderr lacks `{n}`: {}", r.describe()));
        }
        f.check(r.no_panic(), || format!("panic: {}", r.describe()));
    };
    // 2: invalid input, refused before anything is sent.
    let long = "a".repeat(64);
    check(
        &["sandbox", "create", "--name", "Bad_Name", "--", "true"],
        2,
        &["invalid sandbox name", "Bad_Name"],
    );
    check(
        &["sandbox", "create", "--name", &long, "--", "true"],
        2,
        &["invalid sandbox name", "64 characters"],
    );
    check(&["sandbox", "create", "--name", "-x", "--", "true"], 2, &[]);
    check(&["sandbox", "create", "--name", "okname", "--no-tty"], 2, &["command"]);
    check(&["sandbox", "create", "--name", "okenv", "--env", "1X=y", "--", "true"], 2, &["1X"]);
    check(
        &["sandbox", "create", "--name", "okwd", "--workdir", "/nonexistent/osh-e2e", "--", "true"],
        2,
        &["/nonexistent/osh-e2e"],
    );
    check(&["sandbox", "frobnicate"], 2, &[]);
    // 3: not found, for every verb that names a sandbox.
    for verb in ["get", "stop", "start", "delete"] {
        check(&["sandbox", verb, "ghost"], 3, &["ghost"]);
    }
    check(&["logs", "ghost"], 3, &["ghost"]);
    check(&["policy", "get", "ghost"], 3, &["ghost"]);
    let listed = list_names(&gw);
    f.check(listed.is_empty(), || format!("refused commands left sandboxes: {listed:?}"));
    f.check(sandbox_dirs(&gw) == 0, || "refused commands left state directories".into());
    // A name taken is invalid input too (2), and leaves the first sandbox alone.
    cli(&gw, &["sandbox", "create", "--name", "dup", "--detach", "--", "sleep", "1000"]).expect(0);
    let r = cli(&gw, &["sandbox", "create", "--name", "dup", "--detach", "--", "sleep", "1000"]);
    f.check(r.code == Some(2) && r.stderr.contains("dup"), || format!("taken name: {}", r.describe()));
    f.check(str_of(&get_json(&gw, "dup"), "phase") == "ready", || "the first `dup` was disturbed".into());

    // 5: no gateway behind the state directory (and none is started: OPENSHELL_NO_AUTOSTART=1).
    let empty = bins::test_dir("nogw-").unwrap();
    let state = empty.path().join("state");
    std::fs::create_dir(&state).unwrap();
    for args in [
        ["sandbox", "list"].as_slice(),
        &["sandbox", "get", "x"],
        &["sandbox", "stop", "x"],
        &["sandbox", "delete", "x"],
        &["sandbox", "create", "--name", "x", "--", "true"],
        &["policy", "get", "x"],
        &["logs", "x"],
    ] {
        let t = Instant::now();
        let r = cli_state(&state, args, false);
        f.check(r.code == Some(5), || format!("no gateway: expected exit 5: {}", r.describe()));
        f.check(r.stderr.contains("cannot reach the gateway"), || {
            format!("no gateway: the message must say it cannot reach the gateway: {}", r.describe())
        });
        f.check(r.stderr.contains(&state.join("gateway.sock").display().to_string()), || {
            format!("no gateway: the message must name the endpoint: {}", r.describe())
        });
        f.check(t.elapsed() < Duration::from_secs(10), || format!("no gateway: took {:?}", t.elapsed()));
    }
    let left: Vec<String> = std::fs::read_dir(&state)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    f.check(left.is_empty(), || {
        format!("OPENSHELL_NO_AUTOSTART=1, yet the CLI left {left:?} in the state dir")
    });
    f.check(supervisor_pids(&state.display().to_string()).is_empty(), || {
        "OPENSHELL_NO_AUTOSTART=1, yet a gateway was started".into()
    });
    gateway_log_clean(&gw);
    f.finish("gateway_cli::exit_codes_for_bad_input_unknown_sandboxes_and_no_gateway");
}

/// Both verbs started at the same instant (the barrier releases both threads together).
fn race(gw: &GatewayProc, a: &[&str], b: &[&str]) -> (Cli, Cli) {
    let barrier = Barrier::new(2);
    std::thread::scope(|s| {
        let ta = s.spawn(|| {
            barrier.wait();
            cli(gw, a)
        });
        let tb = s.spawn(|| {
            barrier.wait();
            cli(gw, b)
        });
        (ta.join().unwrap(), tb.join().unwrap())
    })
}

#[test]
fn concurrent_stop_and_delete_conflict_cleanly() {
    if !require_root("gateway_cli::concurrent_stop_and_delete_conflict_cleanly") {
        return;
    }
    // A stop that arrives while the delete is under way is the case most likely to break; it shows up
    // in roughly one round in eight, hence this many.
    const ROUNDS: usize = 24;
    let gw = GatewayProc::start().unwrap();
    let mut f = Failures::default();
    let mut tally: Vec<String> = Vec::new();
    for round in 0..ROUNDS {
        cli(&gw, &["sandbox", "create", "--name", "race", "--detach", "--", "sleep", "1000"]).expect(0);
        let id = str_of(&get_json(&gw, "race"), "id").to_string();
        let (stop_args, del_args) = (["sandbox", "stop", "race"], ["sandbox", "delete", "race"]);
        // Alternate which one is spawned first.
        let (stop, del) = if round % 2 == 0 {
            race(&gw, &stop_args, &del_args)
        } else {
            let (d, s) = race(&gw, &del_args, &stop_args);
            (s, d)
        };
        let (sc, dc) = (stop.code, del.code);
        tally.push(format!("round {round}: stop {sc:?}, delete {dc:?}"));
        let ctx = || format!("round {round}:\n{}\n{}", stop.describe(), del.describe());
        // stop: success, conflict, or not found once the delete won; delete: success or conflict.
        let stop_ok = matches!(sc, Some(0 | 4)) || (sc == Some(3) && dc == Some(0));
        let del_ok = matches!(dc, Some(0 | 4));
        f.check(stop_ok && del_ok, || {
            format!("an exit code other than 0, 4 (or 3 after a delete): {}", ctx())
        });
        f.check(sc == Some(0) || dc == Some(0), || format!("neither command succeeded: {}", ctx()));
        f.check(stop.no_panic() && del.no_panic(), || format!("a CLI panicked: {}", ctx()));
        for r in [&stop, &del] {
            if r.code == Some(4) {
                f.check(r.stderr.contains("concurrently"), || format!("a conflict must say so: {}", ctx()));
            }
        }
        // The final state is one of the two outcomes, and the processes agree with it.
        let g = cli(&gw, &["sandbox", "get", "race", "-o", "json"]);
        match g.code {
            Some(3) => {
                f.check(dc == Some(0), || format!("deleted although the delete failed: {}", ctx()));
                f.check(!gw.sandbox_dir(&id).exists(), || format!("state dir left behind: {}", ctx()));
            }
            Some(0) => {
                let phase = str_of(&g.json(), "phase").to_string();
                f.check(phase == "stopped", || format!("final phase {phase}, expected stopped: {}", ctx()));
                f.check(dc != Some(0), || format!("delete succeeded but the sandbox exists: {}", ctx()));
                cli(&gw, &["sandbox", "delete", "race"]).expect(0);
            }
            _ => f.push(format!("`sandbox get race` after the race: {}\n{}", g.describe(), ctx())),
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while !supervisor_pids(&id).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        f.check(supervisor_pids(&id).is_empty(), || format!("a supervisor survived: {}", ctx()));
        if cli(&gw, &["sandbox", "get", "race"]).code != Some(3) {
            // Leave a clean slate for the next round whatever happened.
            let _ = cli(&gw, &["sandbox", "delete", "race"]);
        }
    }
    notice(&format!("gateway_cli::concurrent_stop_and_delete: {}", tally.join("; ")));

    // Two deletes at once: one wins; the other succeeds too, conflicts or finds nothing; never more.
    let mut tally: Vec<String> = Vec::new();
    for round in 0..ROUNDS / 4 {
        cli(&gw, &["sandbox", "create", "--name", "race2", "--detach", "--", "sleep", "1000"]).expect(0);
        let id = str_of(&get_json(&gw, "race2"), "id").to_string();
        let del = ["sandbox", "delete", "race2"];
        let (a, b) = race(&gw, &del, &del);
        tally.push(format!("round {round}: {:?}, {:?}", a.code, b.code));
        let ctx = || format!("round {round}:\n{}\n{}", a.describe(), b.describe());
        f.check(matches!(a.code, Some(0 | 3 | 4)) && matches!(b.code, Some(0 | 3 | 4)), || {
            format!("two deletes: an exit code other than 0, 3, 4: {}", ctx())
        });
        f.check(a.code == Some(0) || b.code == Some(0), || {
            format!("two deletes: neither succeeded: {}", ctx())
        });
        f.check(a.no_panic() && b.no_panic(), || format!("a CLI panicked: {}", ctx()));
        let g = cli(&gw, &["sandbox", "get", "race2"]);
        f.check(g.code == Some(3), || {
            format!("two deletes: the sandbox survived: {}\n{}", g.describe(), ctx())
        });
        f.check(!gw.sandbox_dir(&id).exists(), || format!("two deletes: state dir left behind: {}", ctx()));
        f.check(supervisor_pids(&id).is_empty(), || format!("two deletes: a supervisor survived: {}", ctx()));
        if g.code != Some(3) {
            let _ = cli(&gw, &["sandbox", "delete", "race2"]);
        }
    }
    notice(&format!("gateway_cli::concurrent_delete_and_delete: {}", tally.join("; ")));
    f.check(list_names(&gw).is_empty(), || "sandboxes left after the rounds".into());
    let log = gw.log_text();
    f.check(!log.contains("panicked"), || format!("the gateway panicked:\n{log}"));
    f.finish("gateway_cli::concurrent_stop_and_delete_conflict_cleanly");
}

/// Kills every process whose argv names `dir` (a gateway started by the CLI, its supervisors).
struct KillUnder(String);

impl Drop for KillUnder {
    fn drop(&mut self) {
        openshell_e2e::gateway::kill_supervisors_of(Path::new(&self.0));
    }
}

/// The CLI against the local gateway of `state`, auto-start allowed or not.
fn cli_state(state: &Path, args: &[&str], autostart: bool) -> Cli {
    let out = cli_at(state, args, &[], autostart, CLI_MAX)
        .unwrap_or_else(|e| panic!("`openshell {}`: {e:#}", args.join(" ")));
    Cli::from(args, out)
}

#[test]
fn cli_starts_the_gateway_on_demand_and_stops_it() {
    if !require_root("gateway_cli::cli_starts_the_gateway_on_demand_and_stops_it") {
        return;
    }
    let dir = bins::test_dir("auto-").unwrap();
    let state = dir.path().join("state");
    let _cleanup = KillUnder(state.display().to_string());
    assert!(!state.exists());
    let t = Instant::now();
    let r = cli_state(&state, &["sandbox", "create", "--name", "auto", "--", "true"], true);
    assert_eq!(r.code, Some(0), "create with auto-start: {}", r.describe());
    eprintln!("create with auto-start took {:?}", t.elapsed());
    let pid_text = std::fs::read_to_string(state.join("gateway.pid"))
        .unwrap_or_else(|e| panic!("no gateway.pid after auto-start ({e}): {}", r.describe()));
    let pid: u32 = pid_text.trim().parse().unwrap_or_else(|_| panic!("bad pid file: {pid_text:?}"));
    assert!(pid_alive(pid), "the auto-started gateway (pid {pid}) is not running");
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    assert!(comm.starts_with("openshell-gatew"), "pid {pid} is {comm:?}, not the gateway");
    assert!(state.join("gateway.sock").exists() && state.join("gateway.log").exists());

    // Without auto-start now: the answer comes from the gateway started above.
    let g = cli_state(&state, &["sandbox", "get", "auto", "-o", "json"], false);
    assert_eq!(g.code, Some(0), "{}", g.describe());
    let v = g.json();
    assert_eq!((str_of(&v, "phase"), v["exit_code"].as_i64()), ("stopped", Some(0)), "{v}");

    let s = cli_state(&state, &["gateway", "stop"], true);
    assert_eq!(s.code, Some(0), "{}", s.describe());
    assert!(s.stdout.contains(&format!("gateway stopped (pid {pid})")), "{}", s.describe());
    let deadline = Instant::now() + Duration::from_secs(5);
    while pid_alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!pid_alive(pid), "the gateway (pid {pid}) still runs after `gateway stop`");
    let l = cli_state(&state, &["sandbox", "list"], false);
    assert_eq!(l.code, Some(5), "the gateway still answers after `gateway stop`: {}", l.describe());
    let again = cli_state(&state, &["gateway", "stop"], true);
    assert_eq!(again.code, Some(0), "{}", again.describe());
    assert!(again.stdout.contains("not running"), "{}", again.describe());
    let log = std::fs::read_to_string(state.join("gateway.log")).unwrap_or_default();
    assert!(!log.contains("panicked"), "the gateway panicked:\n{log}");
}
