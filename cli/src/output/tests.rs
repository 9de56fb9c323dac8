use openshell_proto::gateway::v1::{PhaseTransition, SandboxSpec};

use super::*;

const T0: i64 = 1_738_324_800_123; // 2025-01-31T12:00:00.123Z

fn sample() -> Sandbox {
    Sandbox {
        id: "sb-0001".into(),
        name: "agent-1".into(),
        spec: Some(SandboxSpec {
            command: vec!["python".into(), "agent.py".into()],
            workdir: "/home/u/proj".into(),
            env: [("API_KEY".to_string(), "secret".to_string())].into_iter().collect(),
            labels: [("team".to_string(), "ml".to_string())].into_iter().collect(),
            driver: "local".into(),
            ..SandboxSpec::default()
        }),
        phase: Phase::Stopped as i32,
        phase_reason: "agent exited with status 3".into(),
        resource_version: 7,
        policy_revision: 2,
        acked_policy_revision: 1,
        connected: false,
        exit_code: Some(3),
        created_at_ms: T0,
        updated_at_ms: T0 + 5_000,
        last_seen_ms: 0,
        history: vec![
            PhaseTransition { phase: Phase::Provisioning as i32, reason: "created".into(), at_ms: T0 },
            PhaseTransition {
                phase: Phase::Stopped as i32,
                reason: "agent exited".into(),
                at_ms: T0 + 5_000,
            },
        ],
        enforcement_json: r#"{"landlock_abi":6}"#.into(),
    }
}

#[test]
fn times_are_rfc3339_utc_millis() {
    assert_eq!(rfc3339_ms(T0).as_deref(), Some("2025-01-31T12:00:00.123Z"));
    assert_eq!(rfc3339_ms(1_000).as_deref(), Some("1970-01-01T00:00:01.000Z"));
    assert_eq!(rfc3339_ms(0), None);
}

#[test]
fn ages_are_short() {
    assert_eq!(age(T0 + 42_000, T0), "42s");
    assert_eq!(age(T0 + 5 * 60_000, T0), "5m");
    assert_eq!(age(T0 + 3 * 3_600_000, T0), "3h");
    assert_eq!(age(T0 + 50 * 3_600_000, T0), "2d");
    assert_eq!(age(T0, 0), "-");
}

#[test]
fn json_document_is_stable() {
    let view = SandboxView::from(&sample());
    let v: serde_json::Value = serde_json::from_str(&structured(Format::Json, &view).unwrap()).unwrap();
    assert_eq!(v["name"], "agent-1");
    assert_eq!(v["phase"], "stopped");
    assert_eq!(v["exit_code"], 3);
    assert_eq!(v["policy_revision"], 2);
    assert_eq!(v["acked_policy_revision"], 1);
    assert_eq!(v["created_at"], "2025-01-31T12:00:00.123Z");
    assert_eq!(v["last_seen"], serde_json::Value::Null);
    assert_eq!(v["spec"]["command"], serde_json::json!(["python", "agent.py"]));
    assert_eq!(v["spec"]["labels"]["team"], "ml");
    assert_eq!(v["history"][1]["phase"], "stopped");
    assert_eq!(v["enforcement"]["landlock_abi"], 6);
    assert!(v.get("created_at_ms").is_none(), "internal field leaked");
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 15, "{keys:?}");
}

#[test]
fn yaml_document_matches_json() {
    let view = SandboxView::from(&sample());
    let yaml = structured(Format::Yaml, &view).unwrap();
    assert!(yaml.contains("name: agent-1\n"), "{yaml}");
    assert!(yaml.contains("phase: stopped\n"), "{yaml}");
    assert!(yaml.contains("created_at: 2025-01-31T12:00:00.123Z\n"), "{yaml}");
    let back: serde_json::Value = serde_yaml_ng::from_str(&yaml).unwrap();
    let json: serde_json::Value = serde_json::from_str(&structured(Format::Json, &view).unwrap()).unwrap();
    assert_eq!(back, json);
}

#[test]
fn list_table_has_the_documented_columns() {
    let list = SandboxListView { sandboxes: vec![SandboxView::from(&sample())] };
    let text = sandbox_table(&list, T0 + 90_000);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2);
    let head: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(head, ["NAME", "PHASE", "AGE", "POLICY", "EXIT", "ID", "REASON"]);
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(&row[..6], ["agent-1", "stopped", "1m", "1/2", "3", "sb-0001"]);
    assert!(lines[1].ends_with("agent exited with status 3"), "{}", lines[1]);
    // Columns line up.
    assert_eq!(lines[0].find("PHASE"), lines[1].find("stopped"));
}

#[test]
fn detail_hides_env_values() {
    let text = sandbox_detail(&SandboxView::from(&sample()));
    assert!(text.contains("phase:       stopped (agent exited with status 3)"), "{text}");
    assert!(text.contains("env:         API_KEY\n"), "{text}");
    assert!(!text.contains("secret"), "{text}");
    assert!(text.contains("history:\n  2025-01-31T12:00:00.123Z  provisioning"), "{text}");
}

#[test]
fn truncation_marks_the_cut() {
    assert_eq!(truncate("abcdef", 4), "abc…");
    assert_eq!(truncate("abc", 4), "abc");
}

#[test]
fn empty_list_is_just_the_header() {
    let text = sandbox_table(&SandboxListView { sandboxes: vec![] }, T0);
    assert_eq!(text, "NAME  PHASE  AGE  POLICY  EXIT  ID  REASON\n");
}
