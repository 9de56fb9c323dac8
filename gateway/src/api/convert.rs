//! Domain <-> wire types.

use openshell_proto::gateway::v1 as pb;

use crate::model::{
    LogLevel, LogRecord, LogSource, Phase, PhaseTransition, PolicyRevisionRecord, SandboxRecord, SandboxSpec,
};

pub fn phase(p: Phase) -> pb::Phase {
    match p {
        Phase::Provisioning => pb::Phase::Provisioning,
        Phase::Ready => pb::Phase::Ready,
        Phase::Stopped => pb::Phase::Stopped,
        Phase::Failed => pb::Phase::Failed,
        Phase::Deleting => pb::Phase::Deleting,
        Phase::Disconnected => pb::Phase::Disconnected,
    }
}

pub fn spec_from_pb(s: Option<pb::SandboxSpec>) -> SandboxSpec {
    let s = s.unwrap_or_default();
    let non_empty = |v: String| if v.is_empty() { None } else { Some(v) };
    SandboxSpec {
        command: s.command,
        workdir: non_empty(s.workdir),
        rootfs: non_empty(s.rootfs),
        env: s.env.into_iter().collect(),
        labels: s.labels.into_iter().collect(),
        driver: s.driver,
        tty: s.tty,
    }
}

fn spec_to_pb(s: &SandboxSpec) -> pb::SandboxSpec {
    pb::SandboxSpec {
        command: s.command.clone(),
        workdir: s.workdir.clone().unwrap_or_default(),
        rootfs: s.rootfs.clone().unwrap_or_default(),
        env: s.env.clone().into_iter().collect(),
        labels: s.labels.clone().into_iter().collect(),
        driver: s.driver.clone(),
        tty: s.tty,
    }
}

pub fn sandbox(r: &SandboxRecord, connected: bool, history: &[PhaseTransition]) -> pb::Sandbox {
    pb::Sandbox {
        id: r.id.clone(),
        name: r.name.clone(),
        spec: Some(spec_to_pb(&r.spec)),
        phase: phase(r.phase) as i32,
        phase_reason: r.phase_reason.clone(),
        resource_version: r.resource_version,
        policy_revision: r.policy_revision,
        acked_policy_revision: r.acked_policy_revision,
        connected,
        exit_code: r.exit_code,
        created_at_ms: r.created_at_ms,
        updated_at_ms: r.updated_at_ms,
        last_seen_ms: r.last_seen_ms,
        history: history
            .iter()
            .map(|h| pb::PhaseTransition {
                phase: phase(h.phase) as i32,
                reason: h.reason.clone(),
                at_ms: h.at_ms,
            })
            .collect(),
        enforcement_json: r.enforcement_json.clone(),
    }
}

pub fn log_entry(l: &LogRecord) -> pb::LogEntry {
    let source = match l.source {
        LogSource::Stdout => pb::LogSource::Stdout,
        LogSource::Stderr => pb::LogSource::Stderr,
        LogSource::Event => pb::LogSource::Event,
        LogSource::Gateway => pb::LogSource::Gateway,
    };
    pb::LogEntry {
        seq: l.seq,
        time_ms: l.time_ms,
        source: source as i32,
        level: log_level_to_pb(l.level) as i32,
        text: l.text.clone(),
    }
}

fn log_level_to_pb(l: LogLevel) -> pb::LogLevel {
    match l {
        LogLevel::Debug => pb::LogLevel::Debug,
        LogLevel::Info => pb::LogLevel::Info,
        LogLevel::Warn => pb::LogLevel::Warn,
        LogLevel::Error => pb::LogLevel::Error,
    }
}

pub fn log_level_from_pb(v: i32) -> Option<LogLevel> {
    match pb::LogLevel::try_from(v).ok()? {
        pb::LogLevel::Unspecified => None,
        pb::LogLevel::Debug => Some(LogLevel::Debug),
        pb::LogLevel::Info => Some(LogLevel::Info),
        pb::LogLevel::Warn => Some(LogLevel::Warn),
        pb::LogLevel::Error => Some(LogLevel::Error),
    }
}

pub fn policy_revision(r: PolicyRevisionRecord) -> pb::PolicyRevision {
    pb::PolicyRevision { revision: r.revision, yaml: r.yaml, created_at_ms: r.created_at_ms }
}
