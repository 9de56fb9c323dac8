//! The filesystem/process escape corpus inside the sandbox, as root and as an unprivileged user:
//! every case must be refused (probe exit 1) with an errno of the expected class, the supervisor must
//! exit with the probe's status, the secret must not leak, and the denial event must be emitted
//! (unless listed in `KNOWN_EVENT_GAPS`, which is printed on every run).

use openshell_e2e::sandbox::User;

use super::common::{Failures, notice, offline, require_root};
use super::corpus::{Fixtures, cases, errno_ok, has_event, judge_event};

fn run_corpus(user: User, t: &str) {
    if !require_root(t) {
        return;
    }
    let (_ns, ctx) = offline(user);
    let fx = Fixtures::new(&ctx);
    let policy = ctx.policy_file(&ctx.base_policy().read_only(&ctx.root.join("suid")).to_yaml()).unwrap();
    let mut f = Failures::default();
    let mut gaps = Vec::new();
    for case in cases(&ctx, &fx) {
        let args: Vec<&str> = case.sandbox_args.iter().map(String::as_str).collect();
        let r = ctx.sandbox(&policy).probe(&args).unwrap();
        let Some(p) = &r.probe else {
            f.push(format!(
                "[{}] {}: the probe never reported (sandbox did not run it)\n{}",
                user.label(),
                case.name,
                r.out.describe()
            ));
            continue;
        };
        if p.ok || r.out.code != Some(1) {
            f.push(format!(
                "[{}] {}: NOT BLOCKED (probe ok={}, supervisor exit {:?})\n{}",
                user.label(),
                case.name,
                p.ok,
                r.out.code,
                r.out.describe()
            ));
            continue;
        }
        if !errno_ok(case.blocked, p.errno) {
            f.push(format!(
                "[{}] {}: refused for an unexpected reason: errno {} ({:?}), expected one of {:?}: {}",
                user.label(),
                case.name,
                p.errno_name(),
                p.errno,
                case.blocked,
                p.detail
            ));
        }
        if r.out.stdout.contains(&ctx.secret_text) || r.out.stderr.contains(&ctx.secret_text) {
            f.push(format!("[{}] {}: the secret leaked into the output", user.label(), case.name));
        }
        match judge_event(case.name, has_event(&case.event, &r.out.events), "denial") {
            Ok(None) => {}
            Ok(Some(n)) => gaps.push(n),
            Err(e) => f.push(format!(
                "[{}] {e}\n  events:\n{}",
                user.label(),
                openshell_e2e::events::summary(&r.out.events)
            )),
        }
    }
    f.check(!ctx.drop_dir.join("escaped").exists(), || "a file was written outside read_write".into());
    f.check(!ctx.ro_dir.join("escaped").exists(), || "a file was written into a read_only path".into());
    for g in &gaps {
        notice(&format!("[{}] {g}", user.label()));
    }
    f.finish(t);
}

#[test]
fn corpus_is_blocked_as_root() {
    run_corpus(User::Root, "escapes::corpus_is_blocked_as_root");
}

#[test]
fn corpus_is_blocked_unprivileged() {
    run_corpus(User::Unprivileged, "escapes::corpus_is_blocked_unprivileged");
}
