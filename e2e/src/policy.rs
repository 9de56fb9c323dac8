//! Building the policy files the suites feed to the supervisor (plain YAML text: what a user writes).

use std::fmt::Write;
use std::path::Path;

/// Host paths a typical agent needs read-only (filtered to those that exist on this host).
pub const BASE_READ_ONLY: &[&str] =
    &["/bin", "/sbin", "/usr", "/lib", "/lib64", "/etc", "/proc", "/dev/urandom", "/dev/random"];
/// Read-write beyond the workdir.
pub const BASE_READ_WRITE: &[&str] = &["/tmp", "/dev/null"];

#[derive(Debug, Clone, Default)]
pub struct Endpoint {
    pub host: String,
    pub ports: Vec<u16>,
    pub allowed_ips: Vec<String>,
    pub protocol: Option<String>,
    /// L7 method preset (`read-only`, `read-write`, `full`).
    pub access: Option<String>,
}

impl Endpoint {
    pub fn new(host: &str, ports: &[u16]) -> Endpoint {
        Endpoint { host: host.into(), ports: ports.to_vec(), ..Default::default() }
    }
    pub fn allowed_ips(mut self, ips: &[&str]) -> Endpoint {
        self.allowed_ips = ips.iter().map(|s| s.to_string()).collect();
        self
    }
    pub fn protocol(mut self, p: &str) -> Endpoint {
        self.protocol = Some(p.into());
        self
    }
    pub fn access(mut self, a: &str) -> Endpoint {
        self.access = Some(a.into());
        self
    }
}

#[derive(Debug, Clone, Default)]
pub struct NetRule {
    pub name: String,
    pub endpoints: Vec<Endpoint>,
    pub binaries: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub include_workdir: bool,
    pub read_only: Vec<String>,
    pub read_write: Vec<String>,
    pub landlock: Option<String>,
    pub run_as: Option<(String, String)>,
    pub rules: Vec<NetRule>,
}

impl Policy {
    /// Base filesystem view, workdir included, no network.
    pub fn base() -> Policy {
        let exists = |p: &&&str| Path::new(p).exists();
        Policy {
            include_workdir: true,
            read_only: BASE_READ_ONLY.iter().filter(exists).map(|s| s.to_string()).collect(),
            read_write: BASE_READ_WRITE.iter().filter(exists).map(|s| s.to_string()).collect(),
            landlock: Some("best_effort".into()),
            run_as: None,
            rules: Vec::new(),
        }
    }

    pub fn read_only(mut self, p: &Path) -> Policy {
        self.read_only.push(p.display().to_string());
        self
    }

    pub fn rule(mut self, name: &str, endpoints: Vec<Endpoint>, binaries: &[&str]) -> Policy {
        self.rules.push(NetRule {
            name: name.into(),
            endpoints,
            binaries: binaries.iter().map(|s| s.to_string()).collect(),
        });
        self
    }

    pub fn to_yaml(&self) -> String {
        let mut y = String::from("version: 1\nfilesystem_policy:\n");
        let _ = writeln!(y, "  include_workdir: {}", self.include_workdir);
        let list = |y: &mut String, key: &str, items: &[String]| {
            let _ = writeln!(y, "  {key}:");
            for i in items {
                let _ = writeln!(y, "    - {}", quote(i));
            }
        };
        list(&mut y, "read_only", &self.read_only);
        list(&mut y, "read_write", &self.read_write);
        if let Some(l) = &self.landlock {
            let _ = writeln!(y, "landlock:\n  compatibility: {l}");
        }
        if let Some((u, g)) = &self.run_as {
            let _ = writeln!(y, "process:\n  run_as_user: {}\n  run_as_group: {}", quote(u), quote(g));
        }
        if !self.rules.is_empty() {
            y.push_str("network_policies:\n");
        }
        for r in &self.rules {
            let _ = writeln!(y, "  {}:\n    name: {}\n    endpoints:", r.name, r.name);
            for e in &r.endpoints {
                let _ = writeln!(y, "      - host: {}", quote(&e.host));
                if let [p] = e.ports.as_slice() {
                    let _ = writeln!(y, "        port: {p}");
                } else {
                    let ports: Vec<String> = e.ports.iter().map(ToString::to_string).collect();
                    let _ = writeln!(y, "        ports: [{}]", ports.join(", "));
                }
                if let Some(p) = &e.protocol {
                    let _ = writeln!(y, "        protocol: {p}");
                }
                if let Some(a) = &e.access {
                    let _ = writeln!(y, "        access: {a}");
                }
                if !e.allowed_ips.is_empty() {
                    let ips: Vec<String> = e.allowed_ips.iter().map(|s| quote(s)).collect();
                    let _ = writeln!(y, "        allowed_ips: [{}]", ips.join(", "));
                }
            }
            y.push_str("    binaries:\n");
            for b in &r.binaries {
                let _ = writeln!(y, "      - path: {}", quote(b));
            }
        }
        y
    }
}

/// Double-quoted YAML scalar.
pub fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}
