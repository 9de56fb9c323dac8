use super::*;
use std::collections::BTreeMap;

/// A fake filesystem: entries of the root and the workdir, the skeleton's own entries, and the binds
/// mounted so far (a skeleton lookup below a bind looks in the bind's base). Every call is recorded.
#[derive(Default)]
struct Recorder {
    calls: Vec<String>,
    root: BTreeMap<PathBuf, Kind>,
    workdir: BTreeMap<PathBuf, Kind>,
    skeleton: BTreeMap<PathBuf, Kind>,
    /// (skeleton target, base, source)
    binds: Vec<(PathBuf, Base, PathBuf)>,
}

fn handle(base: Base, p: &Path) -> PathBuf {
    PathBuf::from(format!("{base:?}:{}", p.display()))
}

fn parse_handle(h: &Path) -> Option<(Base, PathBuf)> {
    let s = h.to_str()?;
    let (b, p) = s.split_once(':')?;
    let base = match b {
        "Root" => Base::Root,
        "Workdir" => Base::Workdir,
        "Skeleton" => Base::Skeleton,
        _ => return None,
    };
    Some((base, PathBuf::from(p)))
}

impl Recorder {
    fn with_root(entries: &[(&str, Kind)]) -> Recorder {
        let mut r = Recorder::default();
        for (p, k) in entries {
            r.add(Base::Root, p, k.clone());
        }
        r
    }
    fn add(&mut self, base: Base, p: &str, k: Kind) {
        let map = if base == Base::Root { &mut self.root } else { &mut self.workdir };
        let mut cur = PathBuf::from("/");
        for c in Path::new(p).parent().unwrap().components().skip(1) {
            cur.push(c);
            map.entry(cur.clone()).or_insert(Kind::Dir);
        }
        map.insert(PathBuf::from(p), k);
    }
    fn get(&self, base: Base, p: &Path) -> Option<Kind> {
        if p == Path::new("/") {
            return Some(Kind::Dir);
        }
        match base {
            Base::Root => self.root.get(p).cloned(),
            Base::Workdir => self.workdir.get(p).cloned(),
            Base::Skeleton => {
                let bound = self
                    .binds
                    .iter()
                    .filter(|(t, _, _)| p.starts_with(t))
                    .max_by_key(|(t, _, _)| t.components().count());
                match bound {
                    Some((t, b, s)) if *b != Base::Skeleton => {
                        let rest = p.strip_prefix(t).unwrap();
                        let src = if rest.as_os_str().is_empty() { s.clone() } else { s.join(rest) };
                        self.get(*b, &src)
                    }
                    _ => self.skeleton.get(p).cloned(),
                }
            }
        }
    }
    fn pos(&self, prefix: &str) -> usize {
        self.calls
            .iter()
            .position(|c| c.starts_with(prefix))
            .unwrap_or_else(|| panic!("no call {prefix:?} in {:#?}", self.calls))
    }
    fn has(&self, prefix: &str) -> bool {
        self.calls.iter().any(|c| c.starts_with(prefix))
    }
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
        if let Some((Base::Skeleton, tp)) = parse_handle(target) {
            match source.and_then(parse_handle) {
                Some((b, sp)) if flags.contains(MsFlags::MS_BIND) => self.binds.push((tp, b, sp)),
                // A fresh filesystem or a host file: the skeleton's own (empty) entries from here on.
                _ => {
                    self.binds.push((tp.clone(), Base::Skeleton, tp.clone()));
                    let kind = if fstype.is_some() { Kind::Dir } else { Kind::File };
                    self.skeleton.insert(tp, kind);
                }
            }
        }
        Ok(())
    }
    fn set_attr(&mut self, target: &Path, recursive: bool, set: u64) -> Result<(), MountError> {
        self.calls.push(format!("setattr {} rec={recursive} {set:#x}", target.display()));
        Ok(())
    }
    fn mkdir_all(&mut self, path: &Path) -> Result<(), MountError> {
        self.calls.push(format!("mkdir {}", path.display()));
        Ok(())
    }
    fn create_file(&mut self, path: &Path, mode: u32, _content: &[u8]) -> Result<(), MountError> {
        self.calls.push(format!("file {} {mode:o}", path.display()));
        Ok(())
    }
    fn open_base(&mut self, base: Base, host_path: &Path) -> Result<(), MountError> {
        self.calls.push(format!("base {base:?} {}", host_path.display()));
        if base == Base::Skeleton && self.has("mount Root:/ ") {
            self.binds.push(("/".into(), Base::Root, "/".into()));
        }
        Ok(())
    }
    fn lookup(&mut self, base: Base, inside: &Path) -> Result<Option<Kind>, MountError> {
        Ok(self.get(base, inside))
    }
    fn open_in(&mut self, base: Base, inside: &Path) -> Result<(PathBuf, Kind), MountError> {
        let k = self.get(base, inside).ok_or_else(|| MountError::Open {
            path: inside.to_path_buf(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })?;
        Ok((handle(base, inside), k))
    }
    fn make(&mut self, base: Base, inside: &Path, what: &Make) -> Result<(), MountError> {
        self.calls.push(format!("make {base:?}:{} {what:?}", inside.display()));
        assert_eq!(base, Base::Skeleton, "only the skeleton is ever written to");
        let parent = inside.parent().unwrap();
        assert_eq!(self.get(Base::Skeleton, parent), Some(Kind::Dir), "parent of {}", inside.display());
        assert!(self.get(Base::Skeleton, inside).is_none(), "{} exists", inside.display());
        let owner = self
            .binds
            .iter()
            .filter(|(t, _, _)| inside.starts_with(t))
            .max_by_key(|(t, _, _)| t.components().count());
        assert!(
            owner.is_none_or(|(_, b, _)| *b == Base::Skeleton),
            "{} would be created inside a bound directory",
            inside.display()
        );
        let k = match what {
            Make::Dir => Kind::Dir,
            Make::File => Kind::File,
            Make::Symlink(t) => Kind::Symlink(t.clone()),
        };
        self.skeleton.insert(inside.to_path_buf(), k);
        Ok(())
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

fn debian() -> Recorder {
    Recorder::with_root(&[
        ("/usr/bin/sh", Kind::File),
        ("/usr/lib/x86_64-linux-gnu/libc.so.6", Kind::File),
        ("/usr/local/x", Kind::Dir),
        ("/lib", Kind::Symlink("usr/lib".into())),
        ("/bin", Kind::Symlink("usr/bin".into())),
        ("/etc/resolv.conf", Kind::File),
        ("/etc/hosts", Kind::File),
        ("/home/u/proj", Kind::Dir),
        ("/run/user/1000/bus", Kind::File),
        ("/srv/data", Kind::Dir),
    ])
}

fn host_spec() -> RootSpec {
    RootSpec {
        root: "/".into(),
        workdir: Some("/home/u/proj".into()),
        workdir_target: "/home/u/proj".into(),
        resolv_conf: Some("nameserver 127.0.0.1\n".into()),
        staging: "/tmp".into(),
        console: None,
        read_only: ["/usr", "/lib", "/bin", "/etc", "/etc/hosts", "/proc", "/dev/urandom", "/nonexistent"]
            .map(PathBuf::from)
            .to_vec(),
        read_write: ["/tmp", "/dev/null", "/home/u/proj"].map(PathBuf::from).to_vec(),
        executable: None,
        protect_git: true,
        hidden: vec![],
    }
}

#[test]
fn skeleton_gets_only_the_listed_paths() {
    let mut r = debian();
    let report = setup_root(&mut r, &host_spec()).unwrap();
    let c = &r.calls;
    assert!(
        c[0].starts_with("mount  / -") && c[0].contains("MS_PRIVATE") && c[0].contains("MS_REC"),
        "{}",
        c[0]
    );
    // Bases are opened before the staging tmpfs could hide them.
    assert!(r.pos("base Workdir /home/u/proj") < r.pos("mount tmpfs /tmp tmpfs"));
    // The new root is an empty tmpfs, not a bind of the host root.
    assert!(r.has("mount tmpfs /tmp/root tmpfs MS_NOSUID | MS_NODEV | MS_NOEXEC mode=0755"));
    assert!(!r.has("mount Root:/ "), "{c:#?}");
    assert_eq!(
        report.view.binds,
        ["/etc ro", "/usr ro", "/home/u/proj rw"].map(String::from).to_vec(),
        "/etc/hosts is inside /etc; /proc, /dev, /tmp are the sandbox's own"
    );
    assert!(r.has("mount Root:/usr Skeleton:/usr - MS_BIND | MS_REC"));
    assert!(r.has("setattr Skeleton:/usr rec=true 0x7"));
    assert!(r.has("mount Workdir:/ Skeleton:/home/u/proj - MS_BIND | MS_REC"));
    assert!(r.has("setattr Skeleton:/home/u/proj rec=true 0x6"));
    // Nothing unlisted is there: not /run (the session bus), not /srv.
    assert!(!c.iter().any(|x| x.contains(":/run") || x.contains(":/srv")), "{c:#?}");
    assert_eq!(report.view.links, ["/bin -> usr/bin", "/lib -> usr/lib"].map(String::from).to_vec());
    assert_eq!(report.view.skipped, ["/nonexistent: does not exist".to_string()]);
    assert_eq!(report.resolv_conf, ResolvConf::Mounted { target: "/etc/resolv.conf".into() });
    // The skeleton is read-only before the pivot; the workdir is the cwd.
    assert!(r.pos("setattr /tmp/root rec=false 0x7") < r.pos("pivot /tmp/root"));
    assert!(r.pos("pivot /tmp/root") < r.pos("chdir /home/u/proj"));
}

#[test]
fn dev_is_minimal_and_read_only() {
    let mut r = debian();
    setup_root(&mut r, &host_spec()).unwrap();
    for n in DEV_NODES {
        assert!(r.has(&format!("mount /dev/{n} Skeleton:/dev/{n} - MS_BIND -")), "{n}");
    }
    assert!(r.calls.iter().any(|x| x.contains("devpts") && x.contains("newinstance,ptmxmode=0666")));
    assert!(r.has("make Skeleton:/dev/ptmx Symlink(\"pts/ptmx\")"));
    assert!(r.pos("mount tmpfs Skeleton:/dev/shm") < r.pos("setattr Skeleton:/dev rec=false 0x1"));
    assert!(!r.calls.iter().any(|x| x.contains("console")));

    let mut tty = debian();
    setup_root(&mut tty, &RootSpec { console: Some("/proc/self/fd/0".into()), ..host_spec() }).unwrap();
    assert!(tty.has("mount /proc/self/fd/0 Skeleton:/dev/console - MS_BIND -"));
}

#[test]
fn nested_listings_compose_parents_first() {
    let mut r = debian();
    let spec = RootSpec {
        read_only: vec!["/usr".into()],
        read_write: vec!["/usr/local/x".into(), "/srv/data".into()],
        ..host_spec()
    };
    let report = setup_root(&mut r, &spec).unwrap();
    assert!(
        r.pos("mount Root:/usr Skeleton:/usr ") < r.pos("mount Root:/usr/local/x Skeleton:/usr/local/x ")
    );
    assert!(r.has("setattr Skeleton:/usr/local/x rec=true 0x6"), "read_write below read_only is writable");
    assert!(r.has("setattr Skeleton:/srv/data rec=true 0x6"));
    // /usr/local/x exists in the bound /usr: no mount point is made there.
    assert!(!r.has("make Skeleton:/usr/"), "{:#?}", r.calls);
    assert!(report.view.binds.contains(&"/usr/local/x rw".to_string()));
}

#[test]
fn rootfs_symlinks_never_lead_outside() {
    // The attack of finding 2: absolute symlinks in a rootfs pointing at host directories.
    let mut r = Recorder::with_root(&[
        ("/etc", Kind::Symlink("/var/tmp/victim".into())),
        ("/proc", Kind::Symlink("/var/tmp/victim".into())),
        ("/bin/probe", Kind::File),
        ("/usr", Kind::Symlink("../../../..".into())),
    ]);
    let spec = RootSpec {
        root: "/srv/rootfs".into(),
        workdir_target: "/work".into(),
        read_only: ["/bin", "/etc", "/usr/x"].map(PathBuf::from).to_vec(),
        ..host_spec()
    };
    let report = setup_root(&mut r, &spec).unwrap();
    // Every creation happened in the skeleton (the recorder asserts it); the symlink is recreated there,
    // so the generated resolv.conf lands in the skeleton's /var/tmp/victim, never on the host.
    assert!(report.view.links.contains(&"/etc -> /var/tmp/victim".to_string()), "{:?}", report.view);
    assert_eq!(report.resolv_conf, ResolvConf::Mounted { target: "/var/tmp/victim/resolv.conf".into() });
    assert!(r.has("make Skeleton:/var/tmp/victim/resolv.conf File"));
    assert!(r.has("mount proc Skeleton:/proc proc"), "the sandbox's own /proc, not the rootfs's link");
    assert!(r.has("make Skeleton:/work Dir"), "the workdir mount point is made in the skeleton");
    assert!(!r.calls.iter().any(|c| c.starts_with("mkdir") && !c.starts_with("mkdir /tmp/root")));
    // `..` stops at the rootfs's top: /usr/x is /x there, which does not exist.
    assert!(report.view.skipped.iter().any(|s| s.starts_with("/usr/x")), "{:?}", report.view.skipped);
}

#[test]
fn executable_list_makes_writable_places_noexec() {
    let mut r = debian();
    r.add(Base::Workdir, "/bin/tool", Kind::File);
    let spec = RootSpec {
        read_write: ["/home/u/proj", "/srv/data", "/tmp"].map(PathBuf::from).to_vec(),
        executable: Some(["/usr", "/home/u/proj/bin"].map(PathBuf::from).to_vec()),
        ..host_spec()
    };
    let report = setup_root(&mut r, &spec).unwrap();
    assert!(r.has("mount tmpfs Skeleton:/tmp tmpfs MS_NOSUID | MS_NODEV | MS_NOEXEC"));
    assert!(r.has("setattr Skeleton:/home/u/proj rec=true 0xe"));
    assert!(r.has("setattr Skeleton:/srv/data rec=true 0xe"));
    // An executable path inside the noexec workdir gets its own (writable, exec) mount on top.
    assert!(r.has("mount Workdir:/bin Skeleton:/home/u/proj/bin - MS_BIND | MS_REC"));
    assert!(r.has("setattr Skeleton:/home/u/proj/bin rec=true 0x6"));
    assert!(r.has("setattr Skeleton:/usr rec=true 0x7"));
    assert_eq!(report.view.noexec, ["/tmp", "/srv/data", "/home/u/proj"].map(PathBuf::from).to_vec());

    let mut plain = debian();
    let report = setup_root(&mut plain, &host_spec()).unwrap();
    assert!(plain.has("mount tmpfs Skeleton:/tmp tmpfs MS_NOSUID | MS_NODEV mode=1777"));
    assert!(report.view.noexec.is_empty());
}

#[test]
fn git_hooks_and_config_are_read_only() {
    let mut r = debian();
    r.add(Base::Workdir, "/.git/hooks/pre-commit.sample", Kind::File);
    r.add(Base::Workdir, "/.git/config", Kind::File);
    let report = setup_root(&mut r, &host_spec()).unwrap();
    let wd = r.pos("mount Workdir:/ Skeleton:/home/u/proj ");
    let pin = r.pos("mount Workdir:/.git Skeleton:/home/u/proj/.git ");
    assert!(wd < pin && pin < r.pos("mount Workdir:/.git/hooks Skeleton:/home/u/proj/.git/hooks "));
    assert!(r.has("setattr Skeleton:/home/u/proj/.git rec=true 0x6"));
    assert!(r.has("setattr Skeleton:/home/u/proj/.git/hooks rec=true 0x7"));
    assert!(r.has("setattr Skeleton:/home/u/proj/.git/config rec=true 0x7"));
    assert_eq!(report.view.git_protected.len(), 2);

    // No .git directory: nothing.
    let mut plain = debian();
    assert!(setup_root(&mut plain, &host_spec()).unwrap().view.git_protected.is_empty());
}

#[test]
fn listing_the_root_binds_it_read_only_instead_of_the_skeleton() {
    let mut r = debian();
    r.add(Base::Root, "/proc/.keep", Kind::File);
    r.add(Base::Root, "/dev/.keep", Kind::File);
    r.add(Base::Root, "/tmp/.keep", Kind::File);
    let spec = RootSpec { read_only: vec!["/".into(), "/usr".into()], ..host_spec() };
    let report = setup_root(&mut r, &spec).unwrap();
    assert!(r.pos("mount Root:/ /tmp/root - MS_BIND | MS_REC") < r.pos("mount proc Skeleton:/proc"));
    assert!(r.has("setattr /tmp/root rec=true 0x7"));
    assert_eq!(report.view.binds, ["/ ro", "/home/u/proj rw"].map(String::from).to_vec());
}

#[test]
fn workdir_below_tmp_gets_a_mount_point_in_the_private_tmp() {
    let mut r = debian();
    let spec = RootSpec { workdir: Some("/tmp/w".into()), workdir_target: "/tmp/w".into(), ..host_spec() };
    setup_root(&mut r, &spec).unwrap();
    assert!(r.pos("mount tmpfs Skeleton:/tmp tmpfs") < r.pos("make Skeleton:/tmp/w Dir"));
    assert!(r.pos("make Skeleton:/tmp/w Dir") < r.pos("mount Workdir:/ Skeleton:/tmp/w"));
}

#[test]
fn workdir_missing_below_a_bound_directory_is_an_error_not_a_write() {
    let mut r = debian();
    let spec = RootSpec {
        workdir_target: "/srv/data/missing".into(),
        read_only: vec!["/srv".into()],
        ..host_spec()
    };
    let err = setup_root(&mut r, &spec).unwrap_err();
    assert!(matches!(err, MountError::MissingMountPoint { .. }), "{err}");
}

#[test]
fn relative_or_dotdot_paths_are_rejected() {
    let mut r = debian();
    let spec = RootSpec { workdir_target: "/a/../etc".into(), ..host_spec() };
    assert!(matches!(setup_root(&mut r, &spec), Err(MountError::InvalidPath { .. })));
    assert!(r.calls.is_empty());
}

#[test]
fn canonicalize_stays_inside_and_terminates() {
    let mut r = Recorder::with_root(&[
        ("/a", Kind::Symlink("../../../b".into())),
        ("/b/c", Kind::File),
        ("/loop", Kind::Symlink("/loop".into())),
    ]);
    let x = canonicalize(&mut r, Base::Root, Path::new("/a/c"), false).unwrap();
    assert_eq!((x.path.as_path(), x.kind), (Path::new("/b/c"), Some(Kind::File)));
    assert_eq!(x.links, [(PathBuf::from("/a"), PathBuf::from("../../../b"))]);
    let l = canonicalize(&mut r, Base::Root, Path::new("/loop"), true).unwrap();
    assert_eq!(l.kind, None);
    let last = canonicalize(&mut r, Base::Root, Path::new("/a"), false).unwrap();
    assert_eq!(last.kind, Some(Kind::Symlink("../../../b".into())));
    assert_eq!(under(Path::new("/r"), Path::new("/etc/x")), PathBuf::from("/r/etc/x"));
}

/// The gateway's layout: its state directory (database, socket, per-sandbox workdirs) below `/root`.
fn gateway_root() -> Recorder {
    let mut r = debian();
    for (p, k) in [
        ("/root/.bashrc", Kind::File),
        ("/root/.local/state/openshell/gateway.db", Kind::File),
        ("/root/.local/state/openshell/gateway.sock", Kind::File),
        ("/root/.local/state/openshell/sandboxes/x/workdir/.keep", Kind::File),
        ("/root/.local/state/openshell/tls", Kind::Symlink("/etc/ssl".into())),
    ] {
        r.add(Base::Root, p, k);
    }
    r
}

const STATE: &str = "/root/.local/state/openshell";
const STATE_WD: &str = "/root/.local/state/openshell/sandboxes/x/workdir";

fn gateway_spec() -> RootSpec {
    RootSpec {
        workdir: Some(STATE_WD.into()),
        workdir_target: STATE_WD.into(),
        read_only: ["/usr", "/root", "/root/.local/state/openshell/tls"].map(PathBuf::from).to_vec(),
        // Not redundant below the read-only /root: it would be bound if it were not hidden.
        read_write: vec![STATE_WD.into(), "/root/.local/state/openshell/gateway.db".into()],
        hidden: vec![STATE.into()],
        ..host_spec()
    }
}

#[test]
fn hidden_state_dir_is_an_empty_read_only_mask_with_the_workdir_inside() {
    let mut r = gateway_root();
    let report = setup_root(&mut r, &gateway_spec()).unwrap();
    let mask = format!("mount tmpfs Skeleton:{STATE} tmpfs MS_NOSUID | MS_NODEV | MS_NOEXEC mode=0755");
    // Policy paths first, then the mask, then the workdir's parents (in the mask) and the workdir.
    assert!(r.pos("mount Root:/root Skeleton:/root - MS_BIND | MS_REC") < r.pos(&mask), "{:#?}", r.calls);
    assert!(r.pos(&mask) < r.pos(&format!("make Skeleton:{STATE}/sandboxes Dir")));
    assert!(r.pos(&format!("make Skeleton:{STATE}/sandboxes/x/workdir Dir")) < r.pos("mount Workdir:/ "));
    assert!(r.has(&format!("mount Workdir:/ Skeleton:{STATE_WD} - MS_BIND | MS_REC")));
    assert!(r.has(&format!("setattr Skeleton:{STATE_WD} rec=true 0x6")), "the workdir stays writable");
    // Sealed read-only (not recursively: the workdir on it keeps its flags) before the pivot.
    let seal = r.pos(&format!("setattr Skeleton:{STATE} rec=false 0xf"));
    assert!(r.pos("mount Workdir:/ ") < seal && seal < r.pos("pivot /tmp/root"));
    // Hidden wins over the policy: listings inside are not bound, its symlinks are not recreated.
    assert!(!r.has("mount Root:/root/.local/state/openshell/"), "{:#?}", r.calls);
    assert!(!r.calls.iter().any(|c| c.contains("tls")), "{:#?}", r.calls);
    assert!(report.view.skipped.contains(&format!("{STATE}/gateway.db: hidden")), "{:?}", report.view);
    assert_eq!(report.view.hidden, [format!("{STATE}: masked (empty directory, read-only)")]);
    assert_eq!(report.hidden, [Masked { target: STATE.into(), in_workdir: false }]);
    assert_eq!(report.view.binds, ["/root ro", "/usr ro", &format!("{STATE_WD} rw")]);
    // The mask holds nothing but the way to the workdir.
    let made: Vec<_> = r.calls.iter().filter(|c| c.starts_with(&format!("make Skeleton:{STATE}"))).collect();
    assert_eq!(made.len(), 3, "{made:#?}");
}

#[test]
fn hidden_path_below_a_listed_root_is_masked_too() {
    let mut r = gateway_root();
    for p in ["/proc/.keep", "/dev/.keep", "/tmp/.keep"] {
        r.add(Base::Root, p, Kind::File);
    }
    let spec = RootSpec { read_only: vec!["/".into()], ..gateway_spec() };
    let report = setup_root(&mut r, &spec).unwrap();
    assert!(
        r.pos("mount Root:/ /tmp/root - MS_BIND | MS_REC") < r.pos(&format!("mount tmpfs Skeleton:{STATE} "))
    );
    assert!(
        r.pos(&format!("mount tmpfs Skeleton:{STATE} "))
            < r.pos(&format!("mount Workdir:/ Skeleton:{STATE_WD}"))
    );
    assert_eq!(report.view.hidden, [format!("{STATE}: masked (empty directory, read-only)")]);
}

#[test]
fn hidden_paths_not_in_the_view_are_skipped() {
    let mut r = gateway_root();
    r.add(Base::Root, "/var/lib/openshell/gateway.db", Kind::File);
    let spec = RootSpec {
        hidden: ["/var/lib/openshell", "/nonexistent", "/tmp/state", "/proc/1", "/home/u/proj"]
            .map(PathBuf::from)
            .to_vec(),
        read_only: vec!["/usr".into(), "/var/lib/openshell/gateway.db".into()],
        ..host_spec()
    };
    let report = setup_root(&mut r, &spec).unwrap();
    assert!(!r.calls.iter().any(|c| c.contains("openshell") || c.contains("size=16k")), "{:#?}", r.calls);
    assert_eq!(
        report.view.hidden,
        [
            "/nonexistent: does not exist",
            "/tmp/state: the sandbox provides its own /tmp/state (the host's is not in the view)",
            "/proc/1: the sandbox provides its own /proc/1 (the host's is not in the view)",
            "/home/u/proj: is the workdir, which stays visible",
            "/var/lib/openshell: not in the view (no listed path covers it)",
        ]
        .map(String::from)
    );
    assert!(report.view.skipped.contains(&"/var/lib/openshell/gateway.db: hidden".to_string()));
}

#[test]
fn hidden_socket_is_covered_by_an_empty_file() {
    let mut r = gateway_root();
    r.add(Base::Root, "/srv/data/gw.sock", Kind::File);
    let spec =
        RootSpec { read_only: vec!["/srv".into()], hidden: vec!["/srv/data/gw.sock".into()], ..host_spec() };
    let report = setup_root(&mut r, &spec).unwrap();
    assert!(
        r.pos("file /tmp/hidden-empty 444")
            < r.pos("mount /tmp/hidden-empty Skeleton:/srv/data/gw.sock - MS_BIND -")
    );
    assert!(r.has("setattr Skeleton:/srv/data/gw.sock rec=false 0xf"));
    assert_eq!(report.view.hidden, ["/srv/data/gw.sock: masked (empty file, read-only)".to_string()]);
}

#[test]
fn hidden_path_inside_the_workdir_is_masked_after_it() {
    let mut r = debian();
    r.add(Base::Workdir, "/.local/state/openshell/db", Kind::File);
    r.add(Base::Workdir, "/.git/config", Kind::File);
    r.add(Base::Workdir, "/docs/a", Kind::File);
    let spec = RootSpec {
        // Executable listings in the (then noexec) workdir get mounts of their own.
        executable: Some(
            ["/usr", "/home/u/proj/.local/state/openshell/db", "/home/u/proj/docs"]
                .map(PathBuf::from)
                .to_vec(),
        ),
        hidden: vec!["/home/u/proj/.local/state/openshell".into()],
        ..host_spec()
    };
    let report = setup_root(&mut r, &spec).unwrap();
    let mask = r.pos("mount tmpfs Skeleton:/home/u/proj/.local/state/openshell tmpfs");
    assert!(r.pos("mount Workdir:/ Skeleton:/home/u/proj ") < mask);
    assert!(r.pos("mount Workdir:/.git/config ") < mask, "after the git protection");
    assert!(!r.has("mount Workdir:/.local"), "{:#?}", r.calls);
    assert!(r.has("mount Workdir:/docs Skeleton:/home/u/proj/docs "), "other listings stay: {:#?}", r.calls);
    let m = Masked { target: "/home/u/proj/.local/state/openshell".into(), in_workdir: true };
    assert_eq!(report.hidden, [m]);
}

#[test]
fn hidden_paths_of_a_rootfs_are_host_paths_below_it() {
    let mut r = Recorder::with_root(&[("/bin/sh", Kind::File), ("/var/lib/secret/key", Kind::File)]);
    let spec = RootSpec {
        root: "/srv/rootfs".into(),
        workdir_target: "/work".into(),
        workdir: Some("/work".into()),
        read_only: vec!["/bin".into(), "/var".into()],
        hidden: vec!["/srv/rootfs/var/lib/secret".into(), "/var/lib/secret".into()],
        ..host_spec()
    };
    let report = setup_root(&mut r, &spec).unwrap();
    assert!(r.has("mount tmpfs Skeleton:/var/lib/secret tmpfs"), "{:#?}", r.calls);
    assert_eq!(
        report.view.hidden,
        [
            "/var/lib/secret: not in the view (outside the root filesystem and the workdir)",
            "/srv/rootfs/var/lib/secret: masked at /var/lib/secret (empty directory, read-only)",
        ]
        .map(String::from)
    );
}

#[test]
fn hiding_the_root_or_a_relative_path_is_refused() {
    for (hidden, root) in [("/", "/"), ("/srv/rootfs", "/srv/rootfs")] {
        let mut r = debian();
        let spec = RootSpec { root: root.into(), hidden: vec![hidden.into()], ..host_spec() };
        let err = setup_root(&mut r, &spec).unwrap_err();
        assert!(matches!(err, MountError::CannotHide { .. }), "{err}");
    }
    let mut r = debian();
    let spec = RootSpec { hidden: vec!["var/lib".into()], ..host_spec() };
    assert!(matches!(setup_root(&mut r, &spec), Err(MountError::InvalidPath { .. })));
}

#[test]
fn hidden_means_everything_below_but_the_workdir_of_a_mask_around_it() {
    let masked = [
        Masked { target: STATE.into(), in_workdir: false },
        Masked { target: format!("{STATE_WD}/secret").into(), in_workdir: true },
    ];
    let wd = Path::new(STATE_WD);
    assert!(is_hidden(&masked, wd, Path::new(STATE)));
    assert!(is_hidden(&masked, wd, Path::new("/root/.local/state/openshell/gateway.db")));
    assert!(is_hidden(&masked, wd, Path::new("/root/.local/state/openshell/sandboxes/x")));
    assert!(!is_hidden(&masked, wd, Path::new(STATE_WD)));
    assert!(!is_hidden(&masked, wd, Path::new(&format!("{STATE_WD}/src"))));
    assert!(is_hidden(&masked, wd, Path::new(&format!("{STATE_WD}/secret/x"))));
    assert!(!is_hidden(&masked, wd, Path::new("/root/.local/state/openshell2")));
    assert!(!is_hidden(&masked, wd, Path::new("/root")));
}
