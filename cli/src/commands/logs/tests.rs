use super::*;

const NOW: i64 = 1_738_324_800_000; // 2025-01-31T12:00:00Z

#[test]
fn since_accepts_durations() {
    assert_eq!(parse_since("10m", NOW), Ok(NOW - 600_000));
    assert_eq!(parse_since("30s", NOW), Ok(NOW - 30_000));
    assert_eq!(parse_since("2h", NOW), Ok(NOW - 7_200_000));
    assert_eq!(parse_since("1d", NOW), Ok(NOW - 86_400_000));
    assert_eq!(parse_since("500ms", NOW), Ok(NOW - 500));
    assert_eq!(parse_since("1h30m", NOW), Ok(NOW - 5_400_000));
    assert_eq!(parse_since("0s", NOW), Ok(NOW));
}

#[test]
fn since_accepts_rfc3339() {
    assert_eq!(parse_since("2025-01-31T12:00:00Z", 0), Ok(NOW));
    assert_eq!(parse_since("2025-01-31T13:00:00.250+01:00", 0), Ok(NOW + 250));
}

#[test]
fn since_rejects_garbage_with_a_useful_message() {
    for bad in ["", "10", "m", "10x", "ten minutes", "-5m", "2025-01-31", "99999999999999999999d"] {
        let err = parse_since(bad, NOW).unwrap_err();
        assert!(err.contains("expected a duration like 30s"), "{bad}: {err}");
    }
}

#[test]
fn network_denial_is_one_line() {
    let text = r#"{"time":"t","sandbox_id":"s","kind":"network","decision":"deny","binary":"/usr/bin/curl","host":"example.com","port":443,"reason":"no_endpoint","hint":"add example.com:443"}"#;
    let s = summarize_event(text).unwrap();
    assert!(s.deny);
    assert_eq!(s.line, "denied network example.com:443 by /usr/bin/curl (no_endpoint)");
    assert_eq!(
        s.with_hint(),
        "denied network example.com:443 by /usr/bin/curl (no_endpoint); hint: add example.com:443"
    );
}

#[test]
fn filesystem_and_process_denials_name_their_object() {
    let fs = r#"{"kind":"filesystem","decision":"deny","binary":"/usr/bin/cat","reason":"landlock_denied","detail":{"access":"fs.read_file","path":"/etc/shadow"}}"#;
    assert_eq!(
        summarize_event(fs).unwrap().line,
        "denied filesystem fs.read_file /etc/shadow by /usr/bin/cat (landlock_denied)"
    );
    let pr = r#"{"kind":"process","decision":"deny","binary":"/bin/sh","reason":"seccomp","detail":{"syscall":"ptrace"}}"#;
    assert_eq!(summarize_event(pr).unwrap().line, "denied process ptrace by /bin/sh (seccomp)");
}

#[test]
fn allows_and_info_are_not_denials() {
    let allow = r#"{"kind":"network","decision":"allow","host":"api.example","port":443,"policy":"p"}"#;
    let s = summarize_event(allow).unwrap();
    assert!(!s.deny);
    assert_eq!(s.line, "allowed network api.example:443");
    let info = r#"{"kind":"config","decision":"info","detail":{"message":"policy 2 loaded"}}"#;
    assert_eq!(summarize_event(info).unwrap().line, "config policy 2 loaded");
    let audit = r#"{"kind":"lifecycle","decision":"audit","reason":"filesystem_events_unavailable"}"#;
    assert_eq!(summarize_event(audit).unwrap().line, "lifecycle (filesystem_events_unavailable)");
}

#[test]
fn hostile_event_fields_cannot_drive_the_terminal() {
    let text = r#"{"kind":"network","decision":"deny","host":"evil\u001b[2J.example","port":80}"#;
    assert_eq!(summarize_event(text).unwrap().line, "denied network evil?[2J.example:80");
}

#[test]
fn non_events_are_not_summarised() {
    assert_eq!(summarize_event("not json"), None);
    assert_eq!(summarize_event(r#"{"decision":"deny"}"#), None);
}

fn entry(source: LogSource, text: &str) -> LogEntry {
    LogEntry { seq: 4, time_ms: NOW, source: source as i32, level: LogLevel::Warn as i32, text: text.into() }
}

#[test]
fn entries_render_in_each_format() {
    let e =
        entry(LogSource::Event, r#"{"kind":"dns","decision":"deny","host":"x.test","reason":"no_endpoint"}"#);
    let table = render_entry(Format::Table, &e).unwrap();
    assert_eq!(table, "2025-01-31T12:00:00.000Z event   warn  denied dns x.test (no_endpoint)\n");
    let json: Value = serde_json::from_str(render_entry(Format::Json, &e).unwrap().trim_end()).unwrap();
    assert_eq!(json["source"], "event");
    assert_eq!(json["level"], "warn");
    assert_eq!(json["seq"], 4);
    assert_eq!(json["event"]["host"], "x.test");
    let out = entry(LogSource::Stdout, "hello");
    let json: Value = serde_json::from_str(render_entry(Format::Json, &out).unwrap().trim_end()).unwrap();
    assert!(json.get("event").is_none());
    let yaml = render_entry(Format::Yaml, &out).unwrap();
    assert!(yaml.starts_with("---\nseq: 4\n"), "{yaml}");
}
