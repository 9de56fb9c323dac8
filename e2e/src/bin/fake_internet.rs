//! `fake-internet CONFIG.json`: serves the fake internet described by the config (see
//! `openshell_e2e::fake::FakeConfig`), printing `READY` once every socket is bound. Run by the
//! harness inside a network namespace it created; killed by the harness at the end of the test.
#![forbid(unsafe_code)]

use anyhow::{Context, Result, bail};

fn main() -> Result<()> {
    let Some(path) = std::env::args().nth(1) else {
        bail!("usage: fake-internet CONFIG.json");
    };
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    let cfg: openshell_e2e::fake::FakeConfig =
        serde_json::from_str(&text).with_context(|| format!("parse {path}"))?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(openshell_e2e::fake::run(cfg))
}
