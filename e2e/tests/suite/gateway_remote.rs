//! The gateway's other faces: the TCP listener with TLS (bearer token or client certificate), the
//! health/readiness/metrics port, and a gateway run by an unprivileged user (rootless sandboxes).

use std::net::TcpListener;
use std::time::Duration;

use openshell_e2e::gateway::{GatewayProc, phase_is, wait_for};
use openshell_proto::gateway::v1 as pb;
use openshell_proto::gateway::v1::Phase;
use openshell_proto::gateway::v1::gateway_service_client::GatewayServiceClient;
use openshell_proto::gateway::v1::sandbox_service_client::SandboxServiceClient;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use super::common::require_root;
use super::gateway_lifecycle::{READY_WAIT, create_req, rt};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn tls_listener_requires_a_token_or_client_certificate() {
    if !require_root("gateway_remote::tls_listener_requires_a_token_or_client_certificate") {
        return;
    }
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let gw = GatewayProc::start_with(&["--listen-tcp", &addr]).unwrap();
    let tls = gw.state.join("tls");
    let read = |n: &str| std::fs::read_to_string(tls.join(n)).unwrap();
    for f in ["ca.key", "client.key", "token"] {
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(tls.join(f)).unwrap().permissions());
        assert_eq!(mode & 0o077, 0, "tls/{f} is readable by others: {mode:o}");
    }
    rt().block_on(async {
        let ca = Certificate::from_pem(read("ca.pem"));
        let endpoint = |identity: Option<Identity>| {
            let mut tls = ClientTlsConfig::new().ca_certificate(ca.clone()).domain_name("localhost");
            if let Some(id) = identity {
                tls = tls.identity(id);
            }
            Endpoint::from_shared(format!("https://localhost:{port}")).unwrap().tls_config(tls).unwrap()
        };
        let status = |token: Option<&str>| {
            let mut req = tonic::Request::new(pb::GetStatusRequest {});
            if let Some(t) = token {
                req.metadata_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
            }
            req
        };
        let ch = endpoint(None).connect().await.unwrap();
        let mut anon = GatewayServiceClient::new(ch.clone());
        let e = anon.get_status(status(None)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
        let e = anon.get_status(status(Some("not-the-token"))).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
        let token = read("token");
        let ok = anon.get_status(status(Some(token.trim()))).await.unwrap().into_inner();
        assert_eq!(ok.pid, gw.pid().unwrap());
        // Sandbox RPCs need sandbox credentials even with the user token.
        let mut sandboxes = SandboxServiceClient::new(ch);
        let mut req = tonic::Request::new(pb::ListSandboxesRequest::default());
        req.metadata_mut().insert("authorization", format!("Bearer {}", token.trim()).parse().unwrap());
        sandboxes.list_sandboxes(req).await.unwrap();

        let id = Identity::from_pem(read("client.pem"), read("client.key"));
        let mut mtls = GatewayServiceClient::new(endpoint(Some(id)).connect().await.unwrap());
        mtls.get_status(status(None)).await.unwrap();
    });
    // A client that does not trust the gateway's CA refuses to talk to it (the server cert is real TLS).
    let out = std::process::Command::new("curl")
        .args(["-sS", "-o", "/dev/null", &format!("https://localhost:{port}/")])
        .output()
        .unwrap();
    assert!(!out.status.success(), "curl accepted the gateway's certificate without its CA");
}

#[test]
fn health_readiness_and_metrics() {
    if !require_root("gateway_remote::health_readiness_and_metrics") {
        return;
    }
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let gw = GatewayProc::start_with(&["--http", &addr]).unwrap();
    let get = |path: &str| {
        let out = std::process::Command::new("curl")
            .args(["-sS", "-w", "\n%{http_code}", &format!("http://{addr}{path}")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(get("/healthz").ends_with("\n200"));
    assert!(get("/readyz").ends_with("\n200"), "{}", get("/readyz"));
    assert!(get("/nope").ends_with("\n404"));
    rt().block_on(async {
        let mut c = gw.sandboxes().await.unwrap();
        c.create_sandbox(create_req("metric", &["sleep", "1000"])).await.unwrap();
        wait_for(&mut c, "metric", READY_WAIT, |s| phase_is(s, Phase::Ready)).await.unwrap();
    });
    let metrics = get("/metrics");
    assert!(metrics.contains("openshell_sandboxes{phase=\"ready\"} 1"), "{metrics}");
    assert!(metrics.contains("openshell_sessions_connected 1"), "{metrics}");
}

#[test]
fn an_unprivileged_gateway_runs_rootless_sandboxes() {
    if !require_root("gateway_remote::an_unprivileged_gateway_runs_rootless_sandboxes") {
        return;
    }
    let gw = GatewayProc::start_unprivileged().unwrap();
    rt().block_on(async {
        let mut c = gw.sandboxes().await.unwrap();
        let script = "id -u; echo written > file; cat file; cat /etc/shadow || echo shadow-denied; exit 5";
        let s =
            c.create_sandbox(create_req("rootless", &["/bin/sh", "-c", script])).await.unwrap().into_inner();
        let done = wait_for(&mut c, "rootless", Duration::from_secs(20), |s| {
            phase_is(s, Phase::Stopped) || phase_is(s, Phase::Failed)
        })
        .await
        .unwrap();
        assert_eq!(done.exit_code, Some(5), "{done:?}");
        let report: serde_json::Value = serde_json::from_str(&done.enforcement_json).unwrap();
        assert_eq!(report["user_namespace"], serde_json::Value::Bool(true), "not rootless: {report}");
        let logs = openshell_e2e::gateway::all_logs(&gw, "rootless").await.unwrap();
        let out: Vec<&str> = logs
            .iter()
            .filter(|l| l.source == pb::LogSource::Stdout as i32)
            .map(|l| l.text.as_str())
            .collect();
        assert!(out.contains(&"written") && out.contains(&"shadow-denied"), "{out:?}");
        let meta = std::fs::metadata(gw.sandbox_dir(&s.id).join("workdir/file")).unwrap();
        assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), openshell_e2e::sandbox::UNPRIV_UID);
        c.delete_sandbox(pb::DeleteSandboxRequest { name: "rootless".into(), ..Default::default() })
            .await
            .unwrap();
    });
}
