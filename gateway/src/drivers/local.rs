//! Local compute driver: runs each sandbox's supervisor as a process on this host (see
//! `architecture/gateway.md`, "Local driver" and "State directory").
//!
//! Threats handled: the session secret reaches the supervisor only through an inherited pipe (never disk,
//! argv or environment); the supervisor starts with a cleared environment, so whatever the gateway holds in
//! its own environment does not reach a sandbox; a reused pid is never signalled (pid + start time, see
//! `procfs`); per-sandbox state is 0711 (traversable by the agent's uid, not listable) with 0600 files.
//! Residual risk: supervisors outlive the gateway by design (their own session); after a gateway restart
//! they are signalled by pid after a start-time check, which leaves a window of two syscalls.

mod files;
mod host;
mod procfs;
mod spawn;

use std::collections::HashMap;
use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use nix::errno::Errno;
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tokio::process::Child;
use tokio::sync::mpsc;

use self::files::{
    STATE_DIR_MODE, WORKDIR_MODE, io_err, make_dir, read_instance, remove_state, write_instance,
};
use self::procfs::Liveness;
use self::spawn::{DRIVER_NAME, exit_reason, reap_quietly};
use super::{ComputeDriver, DriverError, Exit, Instance, InstanceState, ListedInstance, Provision};
use crate::model::SandboxSpec;

const SANDBOXES_DIR: &str = "sandboxes";
const DEFAULT_WORKDIR: &str = "workdir";
const MAX_ID_LEN: usize = 64;
/// Delete must finish in well under 50 ms, so liveness is polled tightly at first, then less often.
const FAST_POLL: Duration = Duration::from_millis(2);
const FAST_POLL_FOR: Duration = Duration::from_millis(100);
const SLOW_POLL: Duration = Duration::from_millis(20);
/// How long a supervisor sent SIGKILL may take to go before stop/delete report an error.
const KILL_WAIT: Duration = Duration::from_secs(2);
/// How long `inspect` waits for our wait task to record why a just-exited child of ours ended.
const EXIT_REASON_WAIT: Duration = Duration::from_millis(100);

/// Runs supervisors as processes on this host; state under `<state_dir>/sandboxes/<id>/`.
pub struct LocalDriver {
    state_dir: PathBuf,
    supervisor_bin: PathBuf,
    shared: Arc<Shared>,
    exits_rx: Mutex<Option<mpsc::UnboundedReceiver<Exit>>>,
    /// Serialises create/start, so two starts of one sandbox cannot both pass the "already running" check.
    start_lock: tokio::sync::Mutex<()>,
}

/// State shared with the wait tasks, which outlive any single call.
struct Shared {
    sandboxes_dir: PathBuf,
    exits_tx: mpsc::UnboundedSender<Exit>,
    /// The last exit a wait task saw, per sandbox id.
    exited: Mutex<HashMap<String, RecordedExit>>,
    /// Supervisors this driver process started and has not reaped yet.
    children: Mutex<HashMap<String, OwnChild>>,
}

struct RecordedExit {
    pid: u32,
    start_time: u64,
    reason: String,
}

struct OwnChild {
    pid: u32,
    start_time: u64,
    /// To the child's wait task, which sends the signal while holding the unreaped child: its pid cannot
    /// have been reused then.
    signals: mpsc::UnboundedSender<Signal>,
}

/// A poisoned lock only means another task panicked mid-update of plain maps; the data is still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Sandbox ids become path components: only `[a-z0-9-]`, 1 to 64 characters.
fn validate_id(id: &str) -> Result<(), DriverError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(DriverError::InvalidSpec(format!(
            "sandbox id `{}` is invalid: expected 1 to {MAX_ID_LEN} characters of [a-z0-9-]",
            id.escape_debug()
        )))
    }
}

impl LocalDriver {
    /// Cheap: no I/O. `state_dir` is the gateway's state directory.
    #[must_use]
    pub fn new(state_dir: PathBuf, supervisor_bin: PathBuf) -> LocalDriver {
        let (exits_tx, exits_rx) = mpsc::unbounded_channel();
        let shared = Shared {
            sandboxes_dir: state_dir.join(SANDBOXES_DIR),
            exits_tx,
            exited: Mutex::new(HashMap::new()),
            children: Mutex::new(HashMap::new()),
        };
        LocalDriver {
            state_dir,
            supervisor_bin,
            shared: Arc::new(shared),
            exits_rx: Mutex::new(Some(exits_rx)),
            start_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// `openshell-supervisor` next to the running executable, else the first one in `$PATH`.
    #[must_use]
    pub fn find_supervisor_bin() -> Option<PathBuf> {
        host::find_supervisor_bin()
    }

    fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.shared.sandboxes_dir.join(id)
    }

    /// A user-supplied workdir must be an existing absolute directory outside the state directory (which
    /// is hidden from agents; a workdir inside it would expose the gateway's database and socket).
    fn check_user_workdir(&self, spec: &SandboxSpec) -> Result<Option<PathBuf>, DriverError> {
        let Some(w) = &spec.workdir else { return Ok(None) };
        let path = PathBuf::from(w);
        if !path.is_absolute() {
            return Err(DriverError::InvalidSpec(format!("workdir `{w}` must be an absolute path")));
        }
        match fs::metadata(&path) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(DriverError::InvalidSpec(format!("workdir `{w}` is not a directory"))),
            Err(e) => return Err(DriverError::InvalidSpec(format!("workdir `{w}` cannot be used: {e}"))),
        }
        if let (Ok(wc), Ok(sc)) = (fs::canonicalize(&path), fs::canonicalize(&self.state_dir))
            && wc.starts_with(&sc)
        {
            return Err(DriverError::InvalidSpec(format!(
                "workdir `{w}` is inside the gateway's state directory {}, which agents must not see",
                sc.display()
            )));
        }
        Ok(Some(path))
    }

    /// Creates `sandboxes/` (if missing), `sandboxes/<id>/` and, unless the user gave one, the default
    /// workdir. Modes are set explicitly: the umask must not decide them.
    fn prepare_dirs(&self, id: &str, default_workdir: bool) -> Result<(), DriverError> {
        let sandboxes = &self.shared.sandboxes_dir;
        if fs::symlink_metadata(sandboxes).is_err() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(STATE_DIR_MODE)
                .create(sandboxes)
                .map_err(|e| io_err("creating", sandboxes, e))?;
            files::set_mode(sandboxes, STATE_DIR_MODE)?;
        }
        let dir = self.sandbox_dir(id);
        make_dir(&dir, STATE_DIR_MODE)?;
        // Not on an existing workdir: the supervisor has chowned it to the agent by then.
        if default_workdir {
            make_dir(&dir.join(DEFAULT_WORKDIR), WORKDIR_MODE)?;
        }
        Ok(())
    }

    fn read_instance(&self, id: &str) -> Result<Option<Instance>, DriverError> {
        read_instance(&self.sandbox_dir(id))
    }

    /// The instances to act on for `id`: the one the caller knows and the one on disk, if they differ (a
    /// start whose result the caller never stored must not survive a stop or delete).
    fn targets(&self, id: &str, given: Option<&Instance>) -> Result<Vec<Instance>, DriverError> {
        let mut all: Vec<Instance> = given.into_iter().cloned().collect();
        match self.read_instance(id) {
            Ok(Some(on_disk)) => {
                if !all.iter().any(|i| i.pid == on_disk.pid && i.start_time == on_disk.start_time) {
                    all.push(on_disk);
                }
            }
            Ok(None) => {}
            Err(e) if given.is_some() => {
                tracing::warn!(sandbox_id = id, error = %e, "ignoring instance state");
            }
            Err(e) => return Err(e),
        }
        Ok(all)
    }

    /// Sends `sig` to the supervisor of `inst` if it is still that very process; a gone one is not an error.
    fn send(&self, id: &str, inst: &Instance, sig: Signal) -> Result<(), DriverError> {
        // pid 0 or 1 in a tampered instance.json would mean our own process group or init.
        if inst.pid <= 1 {
            return Ok(());
        }
        let own = lock(&self.shared.children)
            .get(id)
            .filter(|c| c.pid == inst.pid && c.start_time == inst.start_time)
            .map(|c| c.signals.clone());
        if let Some(tx) = own
            && tx.send(sig).is_ok()
        {
            return Ok(());
        }
        let Ok(raw) = i32::try_from(inst.pid) else { return Ok(()) };
        if procfs::liveness(inst.pid, inst.start_time) != Liveness::Alive {
            return Ok(());
        }
        match signal::kill(Pid::from_raw(raw), sig) {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(e) => {
                Err(DriverError::Io(format!("sandbox {id}: sending {sig} to supervisor pid {raw}: {e}")))
            }
        }
    }

    /// The live supervisor of `id`, if any (from instance.json, or a child of ours whose state was lost).
    fn running_instance(&self, id: &str) -> Result<Option<u32>, DriverError> {
        if let Some(i) = self.read_instance(id)?
            && procfs::liveness(i.pid, i.start_time) == Liveness::Alive
        {
            return Ok(Some(i.pid));
        }
        let own = lock(&self.shared.children).get(id).map(|c| (c.pid, c.start_time));
        Ok(own.filter(|&(pid, st)| procfs::liveness(pid, st) == Liveness::Alive).map(|(pid, _)| pid))
    }

    /// Spawns the supervisor of an already prepared sandbox; the caller holds `start_lock`.
    fn spawn_supervisor(
        &self,
        p: &Provision,
        user_workdir: Option<PathBuf>,
    ) -> Result<Instance, DriverError> {
        let id = &p.sandbox_id;
        if let Some(pid) = self.running_instance(id)? {
            return Err(DriverError::Io(format!(
                "sandbox {id}: a supervisor is already running (pid {pid})"
            )));
        }
        // Canonical: the supervisor runs elsewhere and hides the state directory where it really is, even
        // when the configured path goes through a symlink.
        let state_dir =
            fs::canonicalize(&self.state_dir).map_err(|e| io_err("resolving", &self.state_dir, e))?;
        let dir = state_dir.join(SANDBOXES_DIR).join(id);
        let workdir = user_workdir.unwrap_or_else(|| dir.join(DEFAULT_WORKDIR));
        let mut child = spawn::spawn(&self.supervisor_bin, p, &dir)?;
        // Until reaped (only our wait below reaps), /proc/PID exists even if the child already exited.
        let stat = child.id().and_then(|pid| procfs::stat(pid).map(|s| (pid, s.start_time)));
        let Some((pid, start_time)) = stat else {
            reap_quietly(child);
            return Err(DriverError::Io(format!(
                "sandbox {id}: cannot read /proc stat of the new supervisor"
            )));
        };
        let instance = Instance { pid, start_time, workdir, hidden_paths: vec![state_dir] };
        if let Err(e) = write_instance(&dir, &instance) {
            // Unrecorded, it could never be found again: do not leave it running.
            let _ = child.start_kill();
            reap_quietly(child);
            return Err(e);
        }
        lock(&self.shared.exited).remove(id);
        self.watch(id.clone(), child, pid, start_time);
        tracing::info!(sandbox_id = %id, pid, "supervisor started");
        Ok(instance)
    }

    /// Reaps the child (no zombies), relays signals to it, and reports its end.
    fn watch(&self, id: String, mut child: Child, pid: u32, start_time: u64) {
        let (tx, mut signals) = mpsc::unbounded_channel::<Signal>();
        lock(&self.shared.children).insert(id.clone(), OwnChild { pid, start_time, signals: tx });
        let shared = Arc::clone(&self.shared);
        tokio::spawn(async move {
            let status = loop {
                tokio::select! {
                    status = child.wait() => break status,
                    Some(sig) = signals.recv() => {
                        // `id()` is `Some` until `wait` has reaped it: the pid is still this child's.
                        if let Some(raw) = child.id().and_then(|p| i32::try_from(p).ok()) {
                            let _ = signal::kill(Pid::from_raw(raw), sig);
                        }
                    }
                }
            };
            let reason = match status {
                Ok(s) => exit_reason(s),
                Err(e) => format!("waiting for supervisor pid {pid} failed: {e}"),
            };
            shared.finish(id, pid, start_time, reason);
        });
    }

    /// Waits until none of `insts` is alive (exited-unreaped counts as gone); returns those still alive.
    async fn wait_gone(insts: &[Instance], timeout: Duration) -> Vec<Instance> {
        let start = Instant::now();
        loop {
            let alive: Vec<Instance> = insts
                .iter()
                .filter(|i| procfs::liveness(i.pid, i.start_time) == Liveness::Alive)
                .cloned()
                .collect();
            let elapsed = start.elapsed();
            if alive.is_empty() || elapsed >= timeout {
                return alive;
            }
            let step = if elapsed < FAST_POLL_FOR { FAST_POLL } else { SLOW_POLL };
            tokio::time::sleep(step.min(timeout.saturating_sub(elapsed))).await;
        }
    }

    fn recorded_exit(&self, id: &str, pid: u32, start_time: u64) -> Option<String> {
        lock(&self.shared.exited)
            .get(id)
            .filter(|r| r.pid == pid && r.start_time == start_time)
            .map(|r| r.reason.clone())
    }
}

impl Shared {
    fn finish(&self, id: String, pid: u32, start_time: u64, reason: String) {
        tracing::info!(sandbox_id = %id, pid, %reason, "supervisor ended");
        {
            // Under the lock, so that `delete` (which removes the directory, then the entry) cannot leave an
            // entry behind for a sandbox that no longer exists.
            let mut exited = lock(&self.exited);
            if fs::symlink_metadata(self.sandboxes_dir.join(&id)).is_ok() {
                exited.insert(id.clone(), RecordedExit { pid, start_time, reason: reason.clone() });
            }
        }
        {
            let mut children = lock(&self.children);
            if children.get(&id).is_some_and(|c| c.pid == pid && c.start_time == start_time) {
                children.remove(&id);
            }
        }
        // Nobody listening is fine: the reconciler also polls `inspect`.
        let _ = self.exits_tx.send(Exit { sandbox_id: id, pid, start_time, reason });
    }
}

#[async_trait]
impl ComputeDriver for LocalDriver {
    fn name(&self) -> &'static str {
        DRIVER_NAME
    }

    async fn status(&self) -> (bool, String) {
        host::status(&self.supervisor_bin)
    }

    async fn create(&self, p: &Provision) -> Result<Instance, DriverError> {
        validate_id(&p.sandbox_id)?;
        let user_workdir = self.check_user_workdir(&p.spec)?;
        let _starting = self.start_lock.lock().await;
        let dir = self.sandbox_dir(&p.sandbox_id);
        let existed = fs::symlink_metadata(&dir).is_ok();
        let result = match self.prepare_dirs(&p.sandbox_id, user_workdir.is_none()) {
            Ok(()) => self.spawn_supervisor(p, user_workdir),
            Err(e) => Err(e),
        };
        if result.is_err()
            && !existed
            && let Err(e) = remove_state(&dir)
        {
            tracing::warn!(sandbox_id = %p.sandbox_id, error = %e, "cleaning up after a failed create");
        }
        result
    }

    async fn start(&self, p: &Provision) -> Result<Instance, DriverError> {
        validate_id(&p.sandbox_id)?;
        let user_workdir = self.check_user_workdir(&p.spec)?;
        let _starting = self.start_lock.lock().await;
        let dir = self.sandbox_dir(&p.sandbox_id);
        if !fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
            return Err(io_err(&format!("sandbox {}: no state at", p.sandbox_id), &dir, "create it first"));
        }
        self.spawn_supervisor(p, user_workdir)
    }

    async fn stop(
        &self,
        sandbox_id: &str,
        instance: Option<&Instance>,
        grace: Duration,
    ) -> Result<(), DriverError> {
        validate_id(sandbox_id)?;
        let targets = self.targets(sandbox_id, instance)?;
        for inst in &targets {
            self.send(sandbox_id, inst, Signal::SIGTERM)?;
        }
        let left = Self::wait_gone(&targets, grace).await;
        for inst in &left {
            tracing::warn!(sandbox_id, pid = inst.pid, "supervisor ignored SIGTERM; sending SIGKILL");
            self.send(sandbox_id, inst, Signal::SIGKILL)?;
        }
        match Self::wait_gone(&left, KILL_WAIT).await.first() {
            None => Ok(()),
            Some(i) => Err(DriverError::Io(format!(
                "sandbox {sandbox_id}: supervisor pid {} still alive {KILL_WAIT:?} after SIGKILL",
                i.pid
            ))),
        }
    }

    async fn delete(&self, sandbox_id: &str, instance: Option<&Instance>) -> Result<(), DriverError> {
        validate_id(sandbox_id)?;
        // Unreadable state must not make a sandbox undeletable: act on what the caller knows.
        let targets = self.targets(sandbox_id, instance).unwrap_or_else(|e| {
            tracing::warn!(sandbox_id, error = %e, "ignoring instance state");
            Vec::new()
        });
        for inst in &targets {
            self.send(sandbox_id, inst, Signal::SIGKILL)?;
        }
        if let Some(i) = Self::wait_gone(&targets, KILL_WAIT).await.first() {
            // Removing the state of a live sandbox would lose the only way to find it again.
            return Err(DriverError::Io(format!(
                "sandbox {sandbox_id}: supervisor pid {} still alive {KILL_WAIT:?} after SIGKILL; state kept",
                i.pid
            )));
        }
        let dir = self.sandbox_dir(sandbox_id);
        tokio::task::spawn_blocking(move || remove_state(&dir))
            .await
            .map_err(|e| DriverError::Io(format!("sandbox {sandbox_id}: removal task failed: {e}")))??;
        lock(&self.shared.exited).remove(sandbox_id);
        Ok(())
    }

    async fn inspect(&self, sandbox_id: &str, instance: Option<&Instance>) -> InstanceState {
        if validate_id(sandbox_id).is_err() {
            return InstanceState::Missing;
        }
        let inst = match instance {
            Some(i) => i.clone(),
            None => match self.read_instance(sandbox_id) {
                Ok(Some(i)) => i,
                Ok(None) => return InstanceState::Missing,
                Err(e) => return InstanceState::Exited { reason: format!("instance state unreadable: {e}") },
            },
        };
        let (pid, start_time) = (inst.pid, inst.start_time);
        match procfs::liveness(pid, start_time) {
            Liveness::Alive => InstanceState::Running,
            Liveness::Exited => {
                // A child of ours is about to be reaped by its wait task, which records why it ended.
                let ours = lock(&self.shared.children).get(sandbox_id).is_some_and(|c| c.pid == pid);
                let deadline = Instant::now() + EXIT_REASON_WAIT;
                loop {
                    if let Some(reason) = self.recorded_exit(sandbox_id, pid, start_time) {
                        return InstanceState::Exited { reason };
                    }
                    if !ours || Instant::now() >= deadline {
                        return InstanceState::Exited {
                            reason: format!("supervisor process {pid} has exited"),
                        };
                    }
                    tokio::time::sleep(FAST_POLL).await;
                }
            }
            Liveness::Gone => InstanceState::Exited {
                reason: self
                    .recorded_exit(sandbox_id, pid, start_time)
                    .unwrap_or_else(|| format!("supervisor process {pid} is gone")),
            },
        }
    }

    async fn list(&self) -> Result<Vec<ListedInstance>, DriverError> {
        let dir = &self.shared.sandboxes_dir;
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("listing", dir, e)),
        };
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_err("listing", dir, e))?;
            let Some(id) = entry.file_name().to_str().map(str::to_owned) else { continue };
            // `file_type` does not follow symlinks; only real directories with valid ids are sandboxes.
            if validate_id(&id).is_err() || !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let running = matches!(self.read_instance(&id),
                Ok(Some(i)) if procfs::liveness(i.pid, i.start_time) == Liveness::Alive);
            found.push(ListedInstance { sandbox_id: id, running });
        }
        found.sort_by(|a, b| a.sandbox_id.cmp(&b.sandbox_id));
        Ok(found)
    }

    fn exits(&self) -> Option<mpsc::UnboundedReceiver<Exit>> {
        lock(&self.exits_rx).take()
    }
}

#[cfg(test)]
mod tests;
