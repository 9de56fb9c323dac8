//! Network namespaces made by the test (never the host's network): a `client` namespace where the
//! supervisor runs and, optionally, an `internet` namespace joined by a veth pair and running the
//! `fake-internet` servers. Names are `osh-<pid>-<n>-{c,i}`; everything is removed on Drop (also
//! when a test panics) and namespaces left by dead test processes are swept at creation.
//!
//! Addressing (the same in every pair; pairs are separate links, so they never collide):
//! client 10.200.0.1 / fd00:200::1; internet 10.200.0.2-4 / fd00:200::2-4 and 10.201.0.2 (a private
//! address outside the `allowed_ips` the positive policies use). The client has routes to these
//! only: no default route, so nothing can leave the pair.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

use crate::bins;
use crate::fake::{FakeConfig, LogEntry, read_log};

pub const CLIENT_V4: &str = "10.200.0.1";
pub const CLIENT_V6: &str = "fd00:200::1";
pub const ALLOWED_V4: &str = "10.200.0.2";
pub const OTHER_V4: &str = "10.200.0.3";
pub const DENIED_V4: &str = "10.200.0.4";
pub const PRIVATE_V4: &str = "10.201.0.2";
pub const ALLOWED_V6: &str = "fd00:200::2";
pub const OTHER_V6: &str = "fd00:200::3";
pub const DENIED_V6: &str = "fd00:200::4";
/// What positive policies put in `allowed_ips` (does not cover `PRIVATE_V4`).
pub const INTERNET_V4_NET: &str = "10.200.0.0/24";
pub const INTERNET_V6_NET: &str = "fd00:200::/64";
pub const METADATA_V4: &str = "169.254.169.254";

pub const HTTP_PORT: u16 = 80;
pub const HTTPS_PORT: u16 = 443;
/// TCP and UDP echo; 9000 is named by the positive policies, 7 never is.
pub const ECHO_PORT: u16 = 9000;
pub const UNLISTED_ECHO_PORT: u16 = 7;

static COUNTER: AtomicU32 = AtomicU32::new(0);
const PREFIX: &str = "osh-";

/// Runs `ip ARGS`, failing with its stderr.
pub fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output().context("run ip (iproute2)")?;
    if !out.status.success() {
        bail!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// One named network namespace.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    fn create(name: String) -> Result<Netns> {
        ip(&["netns", "add", &name])?;
        let ns = Netns { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// A client namespace with only `lo`: for sandbox runs that need no internet (nothing can leave).
    pub fn isolated() -> Result<Netns> {
        sweep_stale();
        Netns::create(format!("{PREFIX}{}-{}-c", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)))
    }

    /// `ip netns exec NAME` as a command prefix.
    pub fn exec_prefix(&self) -> Vec<String> {
        vec!["ip".into(), "netns".into(), "exec".into(), self.name.clone()]
    }

    fn etc_dir(&self) -> PathBuf {
        Path::new("/etc/netns").join(&self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
        let _ = std::fs::remove_dir_all(self.etc_dir());
    }
}

/// Deletes namespaces (and their /etc/netns dirs) of test processes that no longer exist.
fn sweep_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else { return };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if let Some(pid) =
            name.strip_prefix(PREFIX).and_then(|r| r.split('-').next()).and_then(|p| p.parse::<u32>().ok())
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = ip(&["netns", "del", name]);
            let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(name));
        }
    }
}

/// Options for the fake internet.
#[derive(Debug, Clone, Default)]
pub struct FakeNetOpts {
    /// Serve a git "dumb http" repository at `http://allowed.test/repo.git` (its README content is
    /// `GIT_README`).
    pub git: bool,
}

pub const GIT_README: &str = "hello from the fake internet\n";

/// A client namespace connected to a fake internet, plus a loopback canary inside the client
/// namespace (servers on 127.0.0.1/::1 where the supervisor runs: reaching them from the sandbox is
/// an SSRF escape).
pub struct FakeNet {
    // Field order matters for Drop: processes are killed in `drop`, then namespaces, then files.
    server: Option<Child>,
    canary: Option<Child>,
    pub client: Netns,
    pub internet: Netns,
    dir: tempfile::TempDir,
    /// The test CA (PEM), in `public_dir` (policies list that dir read-only so clients can read it).
    pub ca_pem: PathBuf,
    pub public_dir: PathBuf,
    pub log_path: PathBuf,
    pub canary_log_path: PathBuf,
}

impl FakeNet {
    pub fn start(opts: FakeNetOpts) -> Result<FakeNet> {
        sweep_stale();
        let id = format!("{PREFIX}{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        let client = Netns::create(format!("{id}-c"))?;
        let internet = Netns::create(format!("{id}-i"))?;
        let (c, i) = (client.name.clone(), internet.name.clone());
        ip(&["-n", &c, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1", "netns", &i])?;
        ip(&["-n", &c, "addr", "add", &format!("{CLIENT_V4}/24"), "dev", "veth0"])?;
        ip(&["-n", &c, "-6", "addr", "add", &format!("{CLIENT_V6}/64"), "dev", "veth0", "nodad"])?;
        for a in [ALLOWED_V4, OTHER_V4, DENIED_V4] {
            ip(&["-n", &i, "addr", "add", &format!("{a}/24"), "dev", "veth1"])?;
        }
        ip(&["-n", &i, "addr", "add", &format!("{PRIVATE_V4}/32"), "dev", "veth1"])?;
        for a in [ALLOWED_V6, OTHER_V6, DENIED_V6] {
            ip(&["-n", &i, "-6", "addr", "add", &format!("{a}/64"), "dev", "veth1", "nodad"])?;
        }
        ip(&["-n", &c, "link", "set", "veth0", "up"])?;
        ip(&["-n", &i, "link", "set", "veth1", "up"])?;
        ip(&["-n", &c, "route", "add", "10.201.0.0/24", "via", ALLOWED_V4])?;
        // The supervisor's system resolver (ip netns exec bind-mounts this over /etc/resolv.conf).
        std::fs::create_dir_all(client.etc_dir())?;
        std::fs::write(client.etc_dir().join("resolv.conf"), format!("nameserver {ALLOWED_V4}\n"))?;

        let dir = bins::test_dir("fakenet-")?;
        let public_dir = dir.path().join("pub");
        std::fs::create_dir(&public_dir)?;
        let ca_pem = public_dir.join("ca.pem");
        let log_path = dir.path().join("internet.jsonl");
        let canary_log_path = dir.path().join("canary.jsonl");
        let static_root = dir.path().join("static");
        std::fs::create_dir(&static_root)?;
        if opts.git {
            make_git_repo(dir.path(), &static_root.join("repo.git"))?;
        }
        let mut fake = FakeNet {
            server: None,
            canary: None,
            client,
            internet,
            ca_pem,
            public_dir,
            log_path,
            canary_log_path,
            dir,
        };

        let cfg = FakeConfig {
            addrs: [ALLOWED_V4, OTHER_V4, DENIED_V4, PRIVATE_V4, ALLOWED_V6, OTHER_V6, DENIED_V6]
                .iter()
                .map(|a| parse_ip(a))
                .collect::<Result<_>>()?,
            http_ports: vec![HTTP_PORT],
            tls_ports: vec![HTTPS_PORT],
            tcp_echo_ports: vec![ECHO_PORT, UNLISTED_ECHO_PORT],
            udp_echo_ports: vec![ECHO_PORT, UNLISTED_ECHO_PORT],
            dns: true,
            records: records()?,
            cert_names: [
                "allowed.test",
                "other.test",
                "denied.test",
                "private.test",
                "v6.test",
                "rebind.test",
            ]
            .map(String::from)
            .to_vec(),
            ca_out: Some(fake.ca_pem.clone()),
            static_root: Some(static_root),
            log: fake.log_path.clone(),
        };
        fake.server = Some(spawn_fake(&fake.internet, fake.dir.path(), "internet", &cfg)?);
        let canary = FakeConfig {
            addrs: vec![parse_ip("127.0.0.1")?, parse_ip("::1")?],
            http_ports: vec![HTTP_PORT],
            tls_ports: vec![HTTPS_PORT],
            tcp_echo_ports: vec![ECHO_PORT, UNLISTED_ECHO_PORT],
            udp_echo_ports: vec![ECHO_PORT, UNLISTED_ECHO_PORT],
            dns: false,
            records: BTreeMap::new(),
            cert_names: vec!["localhost".into()],
            ca_out: None,
            static_root: None,
            log: fake.canary_log_path.clone(),
        };
        fake.canary = Some(spawn_fake(&fake.client, fake.dir.path(), "canary", &canary)?);
        Ok(fake)
    }

    /// Everything the fake internet has seen so far.
    pub fn log(&self) -> Vec<LogEntry> {
        read_log(&self.log_path)
    }

    /// Everything the loopback canary (in the supervisor's namespace) has seen so far.
    pub fn canary_log(&self) -> Vec<LogEntry> {
        read_log(&self.canary_log_path)
    }
}

impl Drop for FakeNet {
    fn drop(&mut self) {
        for child in [self.server.as_mut(), self.canary.as_mut()].into_iter().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn parse_ip(s: &str) -> Result<IpAddr> {
    s.parse().map_err(|_| anyhow!("bad address {s}"))
}

/// The fake DNS zone.
pub fn records() -> Result<BTreeMap<String, Vec<IpAddr>>> {
    let table: [(&str, &[&str]); 6] = [
        ("allowed.test", &[ALLOWED_V4]),
        ("other.test", &[OTHER_V4]),
        ("denied.test", &[DENIED_V4]),
        ("rebind.test", &["127.0.0.1"]),
        ("private.test", &[PRIVATE_V4]),
        ("v6.test", &[ALLOWED_V6]),
    ];
    table
        .iter()
        .map(|(n, ips)| Ok((n.to_string(), ips.iter().map(|a| parse_ip(a)).collect::<Result<_>>()?)))
        .collect()
}

fn spawn_fake(ns: &Netns, dir: &Path, name: &str, cfg: &FakeConfig) -> Result<Child> {
    let cfg_path = dir.join(format!("{name}.json"));
    std::fs::write(&cfg_path, serde_json::to_vec_pretty(cfg)?)?;
    let stderr_path = dir.join(format!("{name}.stderr"));
    let stderr = std::fs::File::create(&stderr_path)?;
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(&bins::staging()?.fake_internet)
        .arg(&cfg_path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .context("spawn fake-internet")?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.trim() == "READY" {
                let _ = tx.send(());
            }
        }
    });
    if rx.recv_timeout(Duration::from_secs(20)).is_err() {
        let _ = child.kill();
        let _ = child.wait();
        bail!(
            "fake-internet ({name}) did not become ready: {}",
            std::fs::read_to_string(&stderr_path).unwrap_or_default()
        );
    }
    Ok(child)
}

fn run_git(args: &[&str], cwd: &Path) -> Result<()> {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=e2e",
            "-c",
            "user.email=e2e@test",
            "-c",
            "init.defaultBranch=main",
            "-c",
            "safe.directory=*",
        ])
        .args(args)
        .current_dir(cwd)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .context("run git")?;
    if !out.status.success() {
        bail!("git {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

fn make_git_repo(scratch: &Path, bare: &Path) -> Result<()> {
    let work = scratch.join("git-work");
    std::fs::create_dir(&work)?;
    run_git(&["init", "-q"], &work)?;
    std::fs::write(work.join("README"), GIT_README)?;
    run_git(&["add", "README"], &work)?;
    run_git(&["commit", "-q", "-m", "fixture"], &work)?;
    run_git(&["init", "-q", "--bare", &bare.display().to_string()], scratch)?;
    run_git(&["push", "-q", &bare.display().to_string(), "HEAD:refs/heads/main"], &work)?;
    run_git(&["update-server-info"], bare)?;
    Ok(())
}
