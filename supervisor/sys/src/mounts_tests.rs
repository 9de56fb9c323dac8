use super::*;
use std::collections::{BTreeMap, BTreeSet};

/// Records every call; `files` is the fake filesystem (paths that exist), `links` its symlinks.
#[derive(Default)]
struct Recorder {
    calls: Vec<String>,
    files: BTreeSet<PathBuf>,
    links: BTreeMap<PathBuf, PathBuf>,
}

impl MountOps for Recorder {
    fn mount(
        &mut self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<(), MountError> {
        let src = source.map(|s| s.display().to_string()).unwrap_or_default();
        let names: Vec<&str> = flags.iter_names().map(|(n, _)| n).collect();
        let (t, f) = (target.display(), names.join(" | "));
        self.calls.push(format!("mount {src} {t} {} {f} {}", fstype.unwrap_or("-"), data.unwrap_or("-")));
        self.files.insert(target.to_path_buf());
        Ok(())
    }
    fn set_attr(&mut self, target: &Path, recursive: bool, set: u64) -> Result<(), MountError> {
        self.calls.push(format!("setattr {} rec={recursive} {set:#x}", target.display()));
        Ok(())
    }
    fn mkdir_all(&mut self, path: &Path) -> Result<(), MountError> {
        self.calls.push(format!("mkdir {}", path.display()));
        self.files.insert(path.to_path_buf());
        Ok(())
    }
    fn create_file(&mut self, path: &Path, mode: u32, content: &[u8]) -> Result<(), MountError> {
        self.calls.push(format!("file {} {mode:o} {}", path.display(), String::from_utf8_lossy(content)));
        self.files.insert(path.to_path_buf());
        Ok(())
    }
    fn symlink(&mut self, target: &str, link: &Path) -> Result<(), MountError> {
        self.calls.push(format!("symlink {} -> {target}", link.display()));
        Ok(())
    }
    fn exists(&mut self, path: &Path) -> bool {
        self.files.contains(path) || self.links.contains_key(path)
    }
    fn read_link(&mut self, path: &Path) -> Option<PathBuf> {
        self.links.get(path).cloned()
    }
    fn open_path(&mut self, path: &Path) -> Result<PathBuf, MountError> {
        self.calls.push(format!("open {}", path.display()));
        Ok(PathBuf::from(format!("fd:{}", path.display())))
    }
    fn pivot_root(&mut self, new_root: &Path) -> Result<(), MountError> {
        self.calls.push(format!("pivot {}", new_root.display()));
        Ok(())
    }
    fn chdir(&mut self, path: &Path) -> Result<(), MountError> {
        self.calls.push(format!("chdir {}", path.display()));
        Ok(())
    }
}

fn host_spec() -> RootSpec {
    RootSpec {
        root: "/".into(),
        workdir: Some("/home/u/proj".into()),
        workdir_target: "/home/u/proj".into(),
        resolv_conf: Some("nameserver 127.0.0.1\n".into()),
        staging: "/tmp".into(),
        console: None,
    }
}

fn position(calls: &[String], prefix: &str) -> usize {
    calls
        .iter()
        .position(|c| c.starts_with(prefix))
        .unwrap_or_else(|| panic!("no call {prefix:?} in {calls:#?}"))
}

#[test]
fn host_root_sequence() {
    let mut r = Recorder::default();
    r.files.insert("/tmp/root/home/u/proj".into());
    r.files.insert("/tmp/root/etc/resolv.conf".into());
    let report = setup_root(&mut r, &host_spec()).unwrap();
    let c = &r.calls;
    assert!(
        c[0].starts_with("mount  / -") && c[0].contains("MS_PRIVATE") && c[0].contains("MS_REC"),
        "{}",
        c[0]
    );
    // Sources opened before the staging tmpfs can hide them.
    assert!(position(c, "open /home/u/proj") < position(c, "mount tmpfs /tmp tmpfs"));
    // Read-only before anything writable is mounted on top.
    let ro = position(c, "setattr /tmp/root rec=true 0x7");
    assert!(position(c, "mount fd:/ /tmp/root - MS_BIND | MS_REC") < ro);
    for later in [
        "mount proc /tmp/root/proc proc",
        "mount tmpfs /tmp/root/dev tmpfs",
        "mount tmpfs /tmp/root/tmp tmpfs",
        "mount fd:/home/u/proj /tmp/root/home/u/proj - MS_BIND | MS_REC",
        "mount /tmp/resolv.conf /tmp/root/etc/resolv.conf",
    ] {
        assert!(ro < position(c, later), "{later}");
    }
    // Nothing is created on the host root.
    assert!(
        !c.iter().any(|x| x.starts_with("mkdir /tmp/root/") && !x.starts_with("mkdir /tmp/root/dev")),
        "{c:#?}"
    );
    assert!(!c.iter().any(|x| x.starts_with("file /tmp/root/") && !x.starts_with("file /tmp/root/dev/")));
    assert!(position(c, "pivot /tmp/root") < position(c, "chdir /home/u/proj"));
    assert_eq!(report.resolv_conf, ResolvConf::Mounted { target: "/etc/resolv.conf".into() });
}

#[test]
fn dev_is_minimal_and_read_only() {
    let mut r = Recorder::default();
    r.files.insert("/tmp/root/home/u/proj".into());
    setup_root(&mut r, &host_spec()).unwrap();
    let c = &r.calls;
    for n in DEV_NODES {
        assert!(c.contains(&format!("mount /dev/{n} /tmp/root/dev/{n} - MS_BIND -")), "{n}");
    }
    assert!(c.iter().any(|x| x.contains("devpts") && x.contains("newinstance,ptmxmode=0666")));
    assert!(c.contains(&"symlink /tmp/root/dev/ptmx -> pts/ptmx".to_string()));
    assert!(c.contains(&"setattr /tmp/root/dev rec=false 0x1".to_string()));
    assert!(position(c, "mount tmpfs /tmp/root/dev/shm") < position(c, "setattr /tmp/root/dev rec=false"));
    assert!(!c.iter().any(|x| x.contains("console")));

    let mut with_tty = Recorder::default();
    with_tty.files.insert("/tmp/root/home/u/proj".into());
    setup_root(&mut with_tty, &RootSpec { console: Some("/proc/self/fd/0".into()), ..host_spec() }).unwrap();
    assert!(with_tty.calls.contains(&"mount /proc/self/fd/0 /tmp/root/dev/console - MS_BIND -".to_string()));
}

#[test]
fn resolv_conf_symlink_is_followed_inside_the_new_root() {
    let mut r = Recorder::default();
    r.files.insert("/tmp/root/home/u/proj".into());
    r.links.insert("/tmp/root/etc/resolv.conf".into(), "../run/systemd/resolve/stub-resolv.conf".into());
    r.files.insert("/tmp/root/run/systemd/resolve/stub-resolv.conf".into());
    let report = setup_root(&mut r, &host_spec()).unwrap();
    assert_eq!(
        report.resolv_conf,
        ResolvConf::Mounted { target: "/run/systemd/resolve/stub-resolv.conf".into() }
    );
    assert!(
        r.calls
            .iter()
            .any(|x| x.starts_with("mount /tmp/resolv.conf /tmp/root/run/systemd/resolve/stub-resolv.conf"))
    );

    let mut dangling = Recorder::default();
    dangling.files.insert("/tmp/root/home/u/proj".into());
    dangling.links.insert("/tmp/root/etc/resolv.conf".into(), "/run/missing".into());
    let report = setup_root(&mut dangling, &host_spec()).unwrap();
    assert!(matches!(report.resolv_conf, ResolvConf::Skipped { .. }));
}

#[test]
fn workdir_below_tmp_gets_a_mount_point_in_the_private_tmp() {
    let mut r = Recorder::default();
    let spec = RootSpec { workdir: Some("/tmp/w".into()), workdir_target: "/tmp/w".into(), ..host_spec() };
    setup_root(&mut r, &spec).unwrap();
    let c = &r.calls;
    assert!(position(c, "mount tmpfs /tmp/root/tmp tmpfs") < position(c, "mkdir /tmp/root/tmp/w"));
    assert!(position(c, "mkdir /tmp/root/tmp/w") < position(c, "mount fd:/tmp/w /tmp/root/tmp/w"));
}

#[test]
fn missing_workdir_on_host_root_is_an_error_not_a_write() {
    let mut r = Recorder::default();
    let err = setup_root(&mut r, &host_spec()).unwrap_err();
    assert!(matches!(err, MountError::MissingMountPoint { .. }), "{err}");
}

#[test]
fn rootfs_gets_missing_mount_points_before_read_only() {
    let mut r = Recorder::default();
    let spec = RootSpec { root: "/srv/rootfs".into(), workdir_target: "/work".into(), ..host_spec() };
    setup_root(&mut r, &spec).unwrap();
    let c = &r.calls;
    let ro = position(c, "setattr /tmp/root rec=true");
    assert!(position(c, "mkdir /tmp/root/work") < ro);
    assert!(position(c, "file /tmp/root/etc/resolv.conf 644") < ro);
    assert!(position(c, "mount fd:/srv/rootfs /tmp/root") < ro);
}

#[test]
fn relative_or_dotdot_paths_are_rejected() {
    let mut r = Recorder::default();
    let spec = RootSpec { workdir_target: "/a/../etc".into(), ..host_spec() };
    assert!(matches!(setup_root(&mut r, &spec), Err(MountError::InvalidPath { .. })));
    assert!(r.calls.is_empty());
}

#[test]
fn under_and_resolution_stay_inside_root() {
    assert_eq!(under(Path::new("/r"), Path::new("/etc/x")), PathBuf::from("/r/etc/x"));
    let mut r = Recorder::default();
    r.links.insert("/r/etc/resolv.conf".into(), "../../../../x".into());
    assert_eq!(resolve_in_root(&mut r, Path::new("/r"), Path::new("/etc/resolv.conf")), PathBuf::from("/x"));
}
