use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::*;

/// A fake environment: variables from a map, root or not.
struct FakeEnv {
    vars: HashMap<&'static str, String>,
    root: bool,
}

impl FakeEnv {
    fn new(vars: &[(&'static str, &str)]) -> Self {
        Self { vars: vars.iter().map(|(k, v)| (*k, (*v).to_string())).collect(), root: false }
    }
}

impl Env for FakeEnv {
    fn var_os(&self, name: &str) -> Option<OsString> {
        self.vars.get(name).filter(|v| !v.is_empty()).map(OsString::from)
    }
    fn is_root(&self) -> bool {
        self.root
    }
}

#[test]
fn state_dir_follows_the_gateway_rule() {
    let env = FakeEnv::new(&[(ENV_STATE_DIR, "/s"), (ENV_XDG_STATE_HOME, "/x"), (ENV_HOME, "/h")]);
    assert_eq!(state_dir(&env).unwrap(), PathBuf::from("/s"));
    let mut env = FakeEnv::new(&[(ENV_XDG_STATE_HOME, "/x"), (ENV_HOME, "/h")]);
    assert_eq!(state_dir(&env).unwrap(), PathBuf::from("/x/openshell"));
    env.root = true;
    assert_eq!(state_dir(&env).unwrap(), PathBuf::from("/var/lib/openshell"));
    let env = FakeEnv::new(&[(ENV_HOME, "/h"), (ENV_XDG_STATE_HOME, "")]);
    assert_eq!(state_dir(&env).unwrap(), PathBuf::from("/h/.local/state/openshell"));
    let err = state_dir(&FakeEnv::new(&[])).unwrap_err();
    assert_eq!(err.code(), crate::exit::INVALID);
}

#[test]
fn endpoint_defaults_to_the_local_socket() {
    let env = FakeEnv::new(&[(ENV_STATE_DIR, "/s")]);
    let t = resolve(&env, None, &Loaded::default()).unwrap();
    assert_eq!(t.endpoint, Endpoint::Unix(PathBuf::from("/s/gateway.sock")));
    assert_eq!(t.endpoint.to_string(), "unix:///s/gateway.sock");
    assert_eq!(t.source, Source::LocalDefault);
    assert!(t.may_autostart());
}

#[test]
fn endpoint_precedence_is_flag_env_config() {
    let loaded = Loaded {
        path: Some(PathBuf::from("/c/config.yaml")),
        config: Config { gateway: Some("https://cfg:443".into()), ..Config::default() },
        warnings: vec![],
    };
    let env = FakeEnv::new(&[(ENV_STATE_DIR, "/s"), (ENV_GATEWAY, "unix:///env.sock")]);
    let t = resolve(&env, Some("https://flag:1"), &loaded).unwrap();
    assert_eq!((t.endpoint, t.source), (Endpoint::Https("https://flag:1".into()), Source::Flag));
    let t = resolve(&env, None, &loaded).unwrap();
    assert_eq!((t.endpoint.clone(), t.source.clone()), (Endpoint::Unix("/env.sock".into()), Source::Env));
    assert!(!t.may_autostart(), "an explicit endpoint is never auto-started");
    let env = FakeEnv::new(&[(ENV_STATE_DIR, "/s")]);
    let t = resolve(&env, None, &loaded).unwrap();
    assert_eq!(t.endpoint, Endpoint::Https("https://cfg:443".into()));
    assert_eq!(t.source, Source::ConfigFile("/c/config.yaml".into()));
}

#[test]
fn no_autostart_env_disables_autostart() {
    let env = FakeEnv::new(&[(ENV_STATE_DIR, "/s"), (ENV_NO_AUTOSTART, "1")]);
    let t = resolve(&env, None, &Loaded::default()).unwrap();
    assert!(!t.may_autostart());
}

#[test]
fn bad_endpoints_are_invalid_input() {
    for bad in ["http://h:1", "unix://rel/path", "h:443", "https://"] {
        assert!(Endpoint::parse(bad).is_err(), "{bad}");
    }
    let env = FakeEnv::new(&[(ENV_STATE_DIR, "/s"), (ENV_GATEWAY, "tcp://x")]);
    let err = resolve(&env, None, &Loaded::default()).unwrap_err();
    assert_eq!(err.code(), crate::exit::INVALID);
    assert!(err.to_string().contains(ENV_GATEWAY), "{err}");
}

#[test]
fn config_path_prefers_explicit_then_xdg_then_home() {
    let env = FakeEnv::new(&[(ENV_CONFIG, "/e.yaml"), (ENV_XDG_CONFIG_HOME, "/x"), (ENV_HOME, "/h")]);
    assert_eq!(config_path(&env), Some((PathBuf::from("/e.yaml"), true)));
    let env = FakeEnv::new(&[(ENV_XDG_CONFIG_HOME, "/x"), (ENV_HOME, "/h")]);
    assert_eq!(config_path(&env), Some((PathBuf::from("/x/openshell/config.yaml"), false)));
    let env = FakeEnv::new(&[(ENV_HOME, "/h")]);
    assert_eq!(config_path(&env), Some((PathBuf::from("/h/.config/openshell/config.yaml"), false)));
}

fn write(path: &Path, text: &str, mode: u32) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn unknown_config_field_names_field_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    write(&path, "gateway: unix:///g.sock\ntoken: abc\n", 0o600);
    let env = FakeEnv::new(&[(ENV_CONFIG, path.to_str().unwrap())]);
    let err = load(&env).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("`token`"), "{msg}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert_eq!(err.code(), crate::exit::INVALID);
}

#[test]
fn config_loads_and_resolves_relative_paths() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    write(&path, "gateway: https://gw.example:8443\nca_file: ca.pem\ntoken_file: /abs/token\n", 0o600);
    let env = FakeEnv::new(&[(ENV_CONFIG, path.to_str().unwrap())]);
    let loaded = load(&env).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert_eq!(loaded.config.gateway.as_deref(), Some("https://gw.example:8443"));
    assert_eq!(loaded.config.ca_file, Some(dir.path().join("ca.pem")));
    assert_eq!(loaded.config.token_file, Some(PathBuf::from("/abs/token")));
}

#[test]
fn loose_config_mode_warns_but_loads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    write(&path, "gateway: unix:///g.sock\n", 0o644);
    let env = FakeEnv::new(&[(ENV_CONFIG, path.to_str().unwrap())]);
    let loaded = load(&env).unwrap();
    assert_eq!(loaded.warnings.len(), 1);
    assert!(loaded.warnings[0].contains("0644"), "{:?}", loaded.warnings);
    assert_eq!(loaded.config.gateway.as_deref(), Some("unix:///g.sock"));
}

#[test]
fn missing_config_is_defaults_unless_named_explicitly() {
    let dir = tempfile::tempdir().unwrap();
    let env = FakeEnv::new(&[(ENV_XDG_CONFIG_HOME, dir.path().to_str().unwrap())]);
    let loaded = load(&env).unwrap();
    assert_eq!(loaded.config, Config::default());
    assert!(loaded.path.is_none());
    let missing = dir.path().join("nope.yaml");
    let env = FakeEnv::new(&[(ENV_CONFIG, missing.to_str().unwrap())]);
    assert!(load(&env).unwrap_err().to_string().contains("nope.yaml"));
}

#[test]
fn empty_config_file_is_defaults() {
    assert_eq!(parse("\n", Path::new("/c")).unwrap(), Config::default());
}
