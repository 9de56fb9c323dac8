mod fake;
mod offline;
mod with_gateway;

use std::path::Path;
use std::process::{Command, Output};

/// Runs `openshell` with a clean environment: the state and config directories under `dir`, no
/// auto-start, and none of the caller's OPENSHELL_* settings.
pub fn openshell(dir: &Path, args: &[&str]) -> Output {
    openshell_with(dir, args, &[])
}

pub fn openshell_with(dir: &Path, args: &[&str], extra_env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_openshell"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env("OPENSHELL_STATE_DIR", dir)
        .env("OPENSHELL_NO_AUTOSTART", "1");
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    cmd.output().expect("run openshell")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn code(o: &Output) -> i32 {
    o.status.code().expect("exited normally")
}
