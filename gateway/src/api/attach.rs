//! `SandboxService.Attach` and `SupervisorSession.Relay`: a user's terminal joined to the agent's.
//!
//! Attach: the first message names the sandbox; it must run on a terminal (`spec.tty`) with its agent
//! running and its supervisor connected. The gateway registers a relay, asks the supervisor for it on the
//! session stream (OpenRelay) and waits (bounded) for the supervisor's Relay call, then copies: input and
//! window sizes down, output up. Either side ending ends both: the client leaving ends the supervisor's
//! stream (the agent keeps running); the terminal closing (the agent exited) or another attachment ends the
//! client's stream. The bytes are never stored or logged.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use openshell_proto::gateway::v1::{AttachInput, AttachOutput, attach_input, attach_output};
use openshell_proto::supervisor::v1::{
    GatewayMessage, OpenRelay, RelayDown, RelayKind, RelayUp, TerminalSize, gateway_message, relay_down,
    relay_up,
};
use tokio_stream::{Stream, StreamExt};
use tonic::{Status, Streaming};

use crate::errors::GatewayError;
use crate::lifecycle::Gateway;
use crate::sessions::relays::Claimed;

/// How long the client may take to say which sandbox, and the supervisor to open the relay.
const START_TIMEOUT: Duration = Duration::from_secs(10);
const RELAY_TIMEOUT: Duration = Duration::from_secs(5);
/// Messages queued towards the supervisor before the client's input waits.
const DOWN_QUEUE: usize = 16;

pub type AttachStream = Pin<Box<dyn Stream<Item = Result<AttachOutput, Status>> + Send>>;
pub type RelayStream = Pin<Box<dyn Stream<Item = Result<RelayDown, Status>> + Send>>;

/// Serves one Attach call.
pub async fn attach(
    gateway: &Arc<Gateway>,
    mut input: Streaming<AttachInput>,
) -> Result<AttachStream, Status> {
    let first = tokio::time::timeout(START_TIMEOUT, input.message())
        .await
        .map_err(|_| Status::deadline_exceeded("no AttachStart received"))??;
    let Some(AttachInput { msg: Some(attach_input::Msg::Start(start)) }) = first else {
        return Err(Status::invalid_argument("the first message of Attach must be `start`"));
    };
    let record = gateway.find(&start.name).await?;
    if !record.spec.tty {
        return Err(GatewayError::WrongPhase(format!(
            "sandbox `{}` does not run on a terminal (create it with --tty, or without a command for a shell)",
            record.name
        ))
        .into());
    }
    if !gateway.sessions.agent_running(&record.id) {
        return Err(GatewayError::WrongPhase(format!(
            "sandbox `{}` has no running agent to attach to (phase {}{})",
            record.name,
            record.phase.as_str(),
            if record.phase_reason.is_empty() { String::new() } else { format!(": {}", record.phase_reason) }
        ))
        .into());
    }
    let (relay_id, arrival) = gateway.relays.expect(&record.id);
    let size = start.size.map(|s| TerminalSize { rows: s.rows, cols: s.cols });
    let open = OpenRelay { relay_id: relay_id.clone(), kind: RelayKind::Attach as i32, size };
    if !gateway.sessions.send(&record.id, GatewayMessage { msg: Some(gateway_message::Msg::OpenRelay(open)) })
    {
        gateway.relays.forget(&relay_id);
        return Err(GatewayError::Unavailable(format!(
            "sandbox `{}`: its supervisor is not connected",
            record.name
        ))
        .into());
    }
    let claimed = match tokio::time::timeout(RELAY_TIMEOUT, arrival).await {
        Ok(Ok(Ok(claimed))) => claimed,
        Ok(Ok(Err(refused))) => {
            return Err(GatewayError::WrongPhase(format!("sandbox `{}`: {refused}", record.name)).into());
        }
        Ok(Err(_)) | Err(_) => {
            gateway.relays.forget(&relay_id);
            return Err(GatewayError::Unavailable(format!(
                "sandbox `{}`: its supervisor did not open the terminal relay within {RELAY_TIMEOUT:?}",
                record.name
            ))
            .into());
        }
    };
    tracing::info!(sandbox = %record.id, relay_id, "attached");
    let Claimed { up, down } = claimed;
    tokio::spawn(forward_input(input, down));
    Ok(Box::pin(output(up)))
}

/// The client's keystrokes and window sizes, until it leaves (then the supervisor's stream ends).
async fn forward_input(
    mut input: Streaming<AttachInput>,
    down: tokio::sync::mpsc::Sender<Result<RelayDown, Status>>,
) {
    loop {
        let msg = tokio::select! {
            m = input.message() => m,
            // The supervisor ended the relay: stop reading the client.
            () = down.closed() => return,
        };
        let down_msg = match msg {
            Ok(Some(AttachInput { msg: Some(attach_input::Msg::Data(bytes)) })) => {
                relay_down::Msg::Data(bytes)
            }
            Ok(Some(AttachInput { msg: Some(attach_input::Msg::Resize(s)) })) => {
                relay_down::Msg::Resize(TerminalSize { rows: s.rows, cols: s.cols })
            }
            // A second start, or an empty message: nothing to do.
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => return,
        };
        if down.send(Ok(RelayDown { msg: Some(down_msg) })).await.is_err() {
            return;
        }
    }
}

/// The terminal's output as the client's stream; ends with the supervisor's stream.
fn output(up: Streaming<RelayUp>) -> impl Stream<Item = Result<AttachOutput, Status>> + Send {
    // A failed supervisor stream (its process or connection went away) ends the client's cleanly; the
    // client asks for the sandbox's state next.
    up.map_while(Result::ok).filter_map(|m| match m.msg {
        Some(relay_up::Msg::Data(bytes)) => {
            Some(Ok(AttachOutput { msg: Some(attach_output::Msg::Data(bytes)) }))
        }
        _ => None,
    })
}

/// Serves one Relay call of the supervisor of `sandbox_id`.
pub async fn relay(
    gateway: &Arc<Gateway>,
    sandbox_id: &str,
    mut up: Streaming<RelayUp>,
) -> Result<RelayStream, Status> {
    let first = tokio::time::timeout(RELAY_TIMEOUT, up.message())
        .await
        .map_err(|_| Status::deadline_exceeded("no relay id received"))??;
    let Some(RelayUp { msg: Some(relay_up::Msg::Open(relay_id)) }) = first else {
        return Err(Status::invalid_argument("the first message of Relay must be `open`"));
    };
    let (down, rx) = tokio::sync::mpsc::channel(DOWN_QUEUE);
    gateway.relays.claim(sandbox_id, &relay_id, Claimed { up, down })?;
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
}
