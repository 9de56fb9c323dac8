//! Relays: bulk byte streams the gateway asks for with OpenRelay on the session stream. Each one is its own
//! `SupervisorSession.Relay` call on the session's HTTP/2 connection (its own flow control: a client that
//! stops reading stalls only its relay, never policy pushes or heartbeats).
//!
//! Today the only kind is ATTACH: the agent's terminal ([`Terminal`]). Input and window sizes come down,
//! output goes up, starting with what was written while nobody was attached. The relay ends when the
//! terminal closes (the agent is gone), when another attachment replaces it, or when the gateway ends the
//! stream (the client left); the agent keeps running in the last two cases.

use std::sync::Arc;

use openshell_proto::supervisor::v1::{
    OpenRelay, RelayDown, RelayKind, RelayRefused, RelayUp, relay_down, relay_up,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::terminal::Terminal;
use super::transport::Client;

/// Output chunks waiting for the HTTP/2 stream.
const UP_QUEUE: usize = 8;

/// Serves `open` in a task of its own, or says why it cannot be served (the answer goes on the session
/// stream).
pub fn open(
    client: Option<Client>,
    open: OpenRelay,
    terminal: Option<&Arc<Terminal>>,
) -> Result<(), RelayRefused> {
    let refuse = |error: &str| RelayRefused { relay_id: open.relay_id.clone(), error: error.to_string() };
    if open.kind() != RelayKind::Attach {
        return Err(refuse("unknown relay kind"));
    }
    let Some(terminal) = terminal else {
        return Err(refuse("the agent does not run on a terminal (the sandbox was created without tty)"));
    };
    let Some(client) = client else { return Err(refuse("the session is reconnecting")) };
    tokio::spawn(attach(client, open, Arc::clone(terminal)));
    Ok(())
}

fn up(msg: relay_up::Msg) -> RelayUp {
    RelayUp { msg: Some(msg) }
}

async fn attach(mut client: Client, open: OpenRelay, terminal: Arc<Terminal>) {
    let relay_id = open.relay_id.clone();
    let (tx, rx) = mpsc::channel(UP_QUEUE);
    // A fresh channel has room for the first message.
    let _ = tx.try_send(up(relay_up::Msg::Open(relay_id.clone())));
    // A closed terminal (the agent just exited): the stream ends at once, the client learns the status
    // from the gateway.
    let attachment = terminal.attach();
    if let Some(size) = open.size {
        terminal.resize(size.rows, size.cols);
    }
    let response = match client.relay(ReceiverStream::new(rx)).await {
        Ok(r) => r.into_inner(),
        Err(status) => {
            tracing::warn!(relay_id, "the gateway refused the relay: {}", status.message());
            if let Some(a) = attachment {
                terminal.detach(a.id);
            }
            return;
        }
    };
    let Some(mut attachment) = attachment else { return };
    tracing::info!(relay_id, "client attached to the agent's terminal");
    // Input in a task of its own: a full terminal input buffer must not hold up the output.
    // Its end (the gateway ended the stream: the client left) ends the relay.
    let mut input = tokio::spawn(forward_input(response, Arc::clone(&terminal)));
    let backlog = std::mem::take(&mut attachment.backlog);
    let mut next = (!backlog.is_empty()).then_some(backlog);
    loop {
        let chunk = match next.take() {
            Some(c) => c,
            None => tokio::select! {
                c = attachment.output.recv() => match c {
                    Some(c) => c,
                    None => break,
                },
                _ = tx.closed() => break,
                _ = &mut input => break,
            },
        };
        if tx.send(up(relay_up::Msg::Data(chunk))).await.is_err() {
            break;
        }
    }
    input.abort();
    terminal.detach(attachment.id);
    tracing::info!(relay_id, "client detached from the agent's terminal");
}

/// Keystrokes and window sizes from the client, until it leaves.
async fn forward_input(mut down: tonic::Streaming<RelayDown>, terminal: Arc<Terminal>) {
    loop {
        match down.message().await {
            Ok(Some(RelayDown { msg: Some(relay_down::Msg::Data(bytes)) })) => {
                if terminal.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            Ok(Some(RelayDown { msg: Some(relay_down::Msg::Resize(size)) })) => {
                terminal.resize(size.rows, size.cols);
            }
            Ok(Some(RelayDown { msg: None })) => {}
            Ok(None) | Err(_) => return,
        }
    }
}
