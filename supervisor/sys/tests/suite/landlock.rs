//! Landlock enforcement on a dedicated thread (a Landlock domain binds the calling thread only).

use std::net::TcpListener;
use std::path::PathBuf;

use openshell_supervisor_sys::landlock::{self, LandlockSpec};

use super::on_own_thread;

#[test]
fn filesystem_bind_and_report() {
    let dir = std::env::temp_dir().join(format!("openshell-ll-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("rw")).unwrap();
    std::fs::write(dir.join("secret"), "s").unwrap();
    let d = dir.clone();
    let report = on_own_thread(move || {
        let spec = LandlockSpec {
            read_only: vec![PathBuf::from("/usr"), PathBuf::from("/nonexistent-openshell")],
            read_write: vec![d.join("rw")],
            executable: None,
            hard_requirement: false,
            bind_ports: vec![18080],
        };
        let prepared = landlock::prepare(&spec).unwrap();
        let report = landlock::enforce(prepared).unwrap();
        if report.abi == 0 {
            eprintln!("SKIPPED: Landlock unavailable");
            return report;
        }
        assert!(std::fs::read_dir("/usr").is_ok(), "read_only grant");
        assert!(std::fs::read(d.join("secret")).is_err(), "unlisted file");
        assert!(std::fs::read("/etc/hostname").is_err(), "unlisted file");
        std::fs::write(d.join("rw/new"), "x").unwrap();
        std::fs::rename(d.join("rw/new"), d.join("rw/renamed")).unwrap();
        std::fs::remove_file(d.join("rw/renamed")).unwrap();
        assert!(std::fs::write("/usr/openshell-test", "x").is_err(), "read_only is not writable");
        if report.net_bind_tcp {
            assert!(TcpListener::bind("127.0.0.1:0").is_ok(), "ephemeral port always allowed");
            let denied = TcpListener::bind("127.0.0.1:18081").unwrap_err();
            assert_eq!(denied.raw_os_error(), Some(libc::EACCES), "{denied}");
        }
        report
    });
    let _ = std::fs::remove_dir_all(&dir);
    if report.abi == 0 {
        return;
    }
    assert!(report.fully_enforced, "{report:?}");
    assert_eq!(report.skipped_paths, [PathBuf::from("/nonexistent-openshell")]);
    assert!(report.fs_rights.iter().any(|r| r == "refer"));
    if report.abi >= 6 {
        assert_eq!(report.scoped, ["abstract_unix_socket", "signal"]);
    }
}
