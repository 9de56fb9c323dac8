//! The supervisor and the probe are static: no program interpreter, no shared libraries (they must
//! run in any root filesystem, e.g. a `FROM scratch` image or an Alpine one).

use openshell_e2e::bins;
use openshell_e2e::elf;

fn check(name: &str) {
    let path = bins::build_dir().unwrap().join(name);
    let bytes =
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (build all binaries first)", path.display()));
    let r = elf::inspect(&bytes).unwrap();
    assert!(r.is_static(), "{} is not static: {r:?} (PT_INTERP or DT_NEEDED present)", path.display());
}

#[test]
fn supervisor_is_static() {
    check(bins::SUPERVISOR);
}

#[test]
fn probe_is_static() {
    check(bins::PROBE);
}

#[test]
fn the_check_rejects_a_dynamic_binary() {
    let bytes = std::fs::read("/bin/sh").unwrap();
    let r = elf::inspect(&bytes).unwrap();
    assert!(!r.is_static(), "/bin/sh should be reported dynamic: {r:?}");
}
