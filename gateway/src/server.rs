//! Starting the gateway: state directory, store, drivers, reconciliation, listeners, shutdown.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};

use crate::auth::{AuthLayer, UserAuth};
use crate::config::{Args, StatePaths};
use crate::drivers::ComputeDriver;
use crate::drivers::local::LocalDriver;
use crate::lifecycle::Gateway;
use crate::store::Store;
use crate::store::sqlite::SqliteStore;
use crate::{api, health, tls};

pub async fn run(args: Args, state: StatePaths) -> anyhow::Result<()> {
    prepare_state_dir(&state.root)?;
    let socket = state.socket();
    refuse_if_running(&socket).await?;

    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&state.database())
            .await
            .with_context(|| format!("opening the store {}", state.database().display()))?,
    );
    let supervisor_bin = match args.supervisor_bin.clone() {
        Some(p) => p,
        None => LocalDriver::find_supervisor_bin().context(
            "cannot find openshell-supervisor next to the gateway binary or in PATH; pass --supervisor-bin",
        )?,
    };
    let local: Arc<dyn ComputeDriver> = Arc::new(LocalDriver::new(state.root.clone(), supervisor_bin));
    let endpoint = format!("unix://{}", socket.display());
    let gateway = Gateway::new(Arc::clone(&store), vec![local], endpoint, state.root.clone());

    // Before serving: no session exists yet, so every live instance is "waiting to reconnect".
    gateway.reconcile(true).await;
    gateway.spawn_background(Duration::from_millis(args.reconcile_interval_ms.max(100)));

    let _ = std::fs::remove_file(&socket);
    let listener = tokio::net::UnixListener::bind(&socket)
        .with_context(|| format!("listening on {}", socket.display()))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 0600 {}", socket.display()))?;
    let owner = nix::unistd::geteuid().as_raw();

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let shutdown = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };

    // Everything is bound before anything is served: once the unix socket answers, every listener the
    // command line asked for accepts connections and the TLS material exists.
    let tcp = match args.listen_tcp {
        Some(addr) => {
            let material = tls::ensure(&state.tls_dir(), addr).context("preparing TLS material")?;
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening on {addr} (TLS)"))?;
            Some((addr, material, listener))
        }
        None => None,
    };
    let http = match args.http {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening on {addr} (HTTP)"))?,
        ),
        None => None,
    };

    let mut tasks = tokio::task::JoinSet::new();
    if let Some((addr, material, listener)) = tcp {
        let tls_config = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(
                &material.server_cert_pem,
                &material.server_key_pem,
            ))
            .client_ca_root(tonic::transport::Certificate::from_pem(&material.ca_cert_pem))
            .client_auth_optional(true);
        let users =
            UserAuth::TokenOrClientCert { token_sha256: crate::auth::sha256(material.token.as_bytes()) };
        let tcp = tonic::transport::Server::builder()
            .tls_config(tls_config)
            .context("TLS configuration")?
            .layer(AuthLayer::new(users, Arc::clone(&store)))
            .add_routes(api::routes(&gateway))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown(stop_rx.clone()));
        tasks.spawn(async move { tcp.await.with_context(|| format!("serving TLS on {addr}")) });
        tracing::info!("listening on {addr} (TLS)");
    }
    if let Some(listener) = http {
        let gateway = Arc::clone(&gateway);
        let rx = stop_rx.clone();
        tasks.spawn(async move { health::serve(listener, gateway, shutdown(rx)).await });
    }
    let unix = tonic::transport::Server::builder()
        .layer(AuthLayer::new(UserAuth::PeerUid(owner), Arc::clone(&store)))
        .add_routes(api::routes(&gateway))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown(stop_rx.clone()));
    tasks.spawn(async move { unix.await.context("serving the unix socket") });

    write_pid_file(&state.pid_file())?;
    tracing::info!("gateway ready on {} (pid {})", socket.display(), std::process::id());

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let result = tokio::select! {
        _ = term.recv() => Ok(()),
        _ = int.recv() => Ok(()),
        done = tasks.join_next() => match done {
            Some(Ok(Err(e))) => Err(e),
            Some(Err(e)) => Err(anyhow::anyhow!("a listener task failed: {e}")),
            _ => Ok(()),
        },
    };
    tracing::info!("shutting down; sandboxes keep running and reconnect to the next gateway");
    let _ = stop_tx.send(true);
    let _ =
        tokio::time::timeout(Duration::from_secs(2), async { while tasks.join_next().await.is_some() {} })
            .await;
    let _ = std::fs::remove_file(&socket);
    let _ = std::fs::remove_file(state.pid_file());
    result
}

/// 0711: traversable by agents running under other uids (to reach their own workdir), not listable.
fn prepare_state_dir(root: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(root)
        .with_context(|| format!("creating the state directory {}", root.display()))?;
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o711))
        .with_context(|| format!("chmod 0711 {}", root.display()))?;
    Ok(())
}

/// A live socket means another gateway serves this state directory; a dead one is left from a crash.
async fn refuse_if_running(socket: &Path) -> anyhow::Result<()> {
    if tokio::net::UnixStream::connect(socket).await.is_ok() {
        anyhow::bail!(
            "another gateway is already serving {} (see gateway.pid next to it); stop it first",
            socket.display()
        );
    }
    Ok(())
}

fn write_pid_file(path: &Path) -> anyhow::Result<()> {
    crate::files::write_private(path, format!("{}\n", std::process::id()).as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}
