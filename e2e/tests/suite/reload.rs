//! SIGHUP reloads the network policy of a running sandbox: a host added to the file becomes
//! reachable for new connections; an invalid file keeps the last good policy and emits a `config`
//! event.

use std::path::Path;
use std::time::{Duration, Instant};

use openshell_e2e::netns;
use openshell_e2e::policy::Endpoint;
use openshell_e2e::sandbox::{Running, User};

use super::common::{Failures, online, real, require_root, require_tool};

/// The agent: for step i, waits for `go-i` (holding a host name or `stop`), curls it through the
/// proxy and writes the HTTP status to `res-i`.
const AGENT: &str = r#"W="$1"; CURL="$2"; i=1
while :; do
  while [ ! -e "$W/go-$i" ]; do sleep 0.02; done
  host=$(cat "$W/go-$i")
  [ "$host" = stop ] && exit 0
  "$CURL" -s -o /dev/null --max-time 10 -w '%{http_code}' "http://$host/reload-$i" > "$W/res-$i.tmp"
  mv "$W/res-$i.tmp" "$W/res-$i"
  i=$((i+1))
done"#;

fn ask(w: &Path, step: u32, host: &str, run: &Running) -> String {
    std::fs::write(w.join(format!("go-{step}")), host).unwrap();
    let res = w.join(format!("res-{step}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(s) = std::fs::read_to_string(&res) {
            return s.trim().to_string();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("step {step} ({host}) got no answer; agent stdout: {}", run.stdout_now());
}

fn wait_for(run: &Running, pred: impl Fn(&openshell_e2e::events::Event) -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if run.events_now().iter().any(&pred) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn sighup_reloads_the_network_policy() {
    let t = "reload::sighup_reloads_the_network_policy";
    if !require_root(t) {
        return;
    }
    let Some(curl) = require_tool(t, "curl") else { return };
    let curl = real(&curl);
    let (fake, ctx) = online(User::Root, false);
    let ips = [netns::INTERNET_V4_NET];
    let v1 = ctx.base_policy().rule(
        "fake",
        vec![Endpoint::new("allowed.test", &[80]).allowed_ips(&ips)],
        &[&curl],
    );
    let v2 = ctx.base_policy().rule(
        "fake",
        vec![
            Endpoint::new("allowed.test", &[80]).allowed_ips(&ips),
            Endpoint::new("other.test", &[80]).allowed_ips(&ips),
        ],
        &[&curl],
    );
    let policy = ctx.policy_file(&v1.to_yaml()).unwrap();
    let w = ctx.workdir.clone();
    let run = ctx
        .sandbox(&policy)
        .spawn(&["/bin/sh", "-c", AGENT, "agent", &w.display().to_string(), &curl])
        .unwrap();
    let mut f = Failures::default();

    f.check(ask(&w, 1, "allowed.test", &run) == "200", || "allowed.test before reload".into());
    f.check(ask(&w, 2, "other.test", &run) == "403", || "other.test must be denied before reload".into());

    std::fs::write(&policy, v2.to_yaml()).unwrap();
    let t0 = Instant::now();
    run.signal("HUP").unwrap();
    let applied = wait_for(&run, |e| e.generation() == Some(2) && e.kind() == "config");
    f.check(applied, || {
        format!("no config event with generation 2 within 5 s of SIGHUP: {:?}", run.events_now())
    });
    let took = t0.elapsed();
    f.check(ask(&w, 3, "other.test", &run) == "200", || {
        format!("other.test must be allowed after reload (applied after {took:?})")
    });

    std::fs::write(&policy, "version: 1\nnetwork_policies: [this is not valid\n").unwrap();
    run.signal("HUP").unwrap();
    let rejected = wait_for(&run, |e| e.kind() == "config" && e.decision() == "deny");
    f.check(rejected, || format!("an invalid reload must emit a config deny event: {:?}", run.events_now()));
    f.check(ask(&w, 4, "other.test", &run) == "200", || {
        "after an invalid reload the last good policy (v2) must stay".into()
    });
    f.check(ask(&w, 5, "allowed.test", &run) == "200", || "allowed.test after the invalid reload".into());

    std::fs::write(w.join("go-6"), "stop").unwrap();
    let o = run.wait(Duration::from_secs(10)).unwrap();
    f.check(o.code == Some(0), || format!("agent should exit 0\n{}", o.describe()));
    f.check(fake.log().iter().any(|e| e.path.as_deref() == Some("/reload-3")), || {
        "request 3 never reached other.test".into()
    });
    f.check(!fake.log().iter().any(|e| e.path.as_deref() == Some("/reload-2")), || {
        "request 2 (denied) reached the server".into()
    });
    f.finish(t);
}
