//! Plain-HTTP `/healthz` (the process answers), `/readyz` (the store answers and every driver is ready)
//! and `/metrics` (Prometheus text format) on a separate port, for orchestrators and scrapers.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};

use crate::lifecycle::Gateway;
use crate::model::Phase;

pub async fn serve(
    listener: tokio::net::TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            () = &mut shutdown => return Ok(()),
        };
        let gateway = Arc::clone(&gateway);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let gateway = Arc::clone(&gateway);
                async move { Ok::<_, Infallible>(answer(&gateway, &req).await) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
        });
    }
}

async fn answer<B>(gateway: &Gateway, req: &Request<B>) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/healthz" => reply(StatusCode::OK, "ok\n".into()),
        "/readyz" => {
            let store_ok = gateway.store.list_sandboxes().await.is_ok();
            let mut not_ready = Vec::new();
            for d in gateway.drivers() {
                let (ready, detail) = d.status().await;
                if !ready {
                    not_ready.push(format!("driver {}: {detail}", d.name()));
                }
            }
            if !store_ok {
                not_ready.push("store unavailable".into());
            }
            if not_ready.is_empty() {
                reply(StatusCode::OK, "ready\n".into())
            } else {
                reply(StatusCode::SERVICE_UNAVAILABLE, not_ready.join("\n") + "\n")
            }
        }
        "/metrics" => reply(StatusCode::OK, metrics(gateway).await),
        _ => reply(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

fn reply(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}

async fn metrics(gateway: &Gateway) -> String {
    let mut out = String::new();
    let records = gateway.store.list_sandboxes().await.unwrap_or_default();
    let _ = writeln!(out, "# HELP openshell_sandboxes Sandboxes by phase.");
    let _ = writeln!(out, "# TYPE openshell_sandboxes gauge");
    for phase in Phase::ALL {
        let n = records.iter().filter(|r| r.phase == phase).count();
        let _ = writeln!(out, "openshell_sandboxes{{phase=\"{}\"}} {n}", phase.as_str());
    }
    let _ = writeln!(out, "# HELP openshell_sessions_connected Supervisor sessions currently connected.");
    let _ = writeln!(out, "# TYPE openshell_sessions_connected gauge");
    let _ = writeln!(out, "openshell_sessions_connected {}", gateway.sessions.count());
    let _ = writeln!(out, "# HELP openshell_gateway_start_time_seconds When this gateway started.");
    let _ = writeln!(out, "# TYPE openshell_gateway_start_time_seconds gauge");
    let _ = writeln!(out, "openshell_gateway_start_time_seconds {}", gateway.started_at_ms / 1000);
    out
}
