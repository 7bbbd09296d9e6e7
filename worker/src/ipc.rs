//! The worker's end of the protocol: connecting to the supervisor, a reader
//! thread that turns command bytes into [`Command`]s, and the event sink.
//!
//! The engine thread owns llama.cpp and must never block on the socket while
//! sequences are running, so commands arrive through a std channel that it
//! polls between decode steps (and blocks on only when idle).

use std::sync::mpsc;

use ipc_channel::ipc::{self, IpcBytesSender, IpcSender};
use llm_node_protocol::{decode, encode, Bootstrap, Command, Event, PROTOCOL_VERSION};

/// Sends events to the supervisor. Events are queued and sent by
/// [`EventSink::flush`], once per turn of the engine loop, as one message
/// ([`Event::Batch`] when there are several): with many sequences a decode
/// step costs one IPC message and one wake-up of the supervisor, not one per token.
pub struct EventSink {
    tx: IpcBytesSender,
    queue: std::cell::RefCell<Vec<Event>>,
}

/// The supervisor is gone; the worker has no one to serve and exits.
#[derive(Debug, thiserror::Error)]
#[error("supervisor channel closed")]
pub struct Disconnected;

impl EventSink {
    /// Queues `event` for the next [`EventSink::flush`].
    ///
    /// # Errors
    /// Never; the `Result` keeps call sites ready for a sink that sends at once.
    pub fn send(&self, event: Event) -> Result<(), Disconnected> {
        self.queue.borrow_mut().push(event);
        Ok(())
    }

    /// Sends everything queued as one message.
    ///
    /// # Errors
    /// [`Disconnected`] when the supervisor's end is closed.
    pub fn flush(&self) -> Result<(), Disconnected> {
        let mut queue = self.queue.borrow_mut();
        let message = match queue.len() {
            0 => return Ok(()),
            1 => queue.pop().expect("one event"),
            _ => Event::Batch(std::mem::take(&mut *queue)),
        };
        self.tx.send(&encode(&message)).map_err(|_| Disconnected)
    }
}

/// What the reader thread delivers.
pub enum Inbound {
    Command(Command),
    /// The command channel closed or carried garbage: shut down.
    Closed(String),
}

/// Connects to the supervisor's one-shot server `server_name` and starts the reader thread.
///
/// # Errors
/// When the server cannot be reached or the bootstrap message cannot be sent.
pub fn connect(server_name: &str) -> anyhow::Result<(EventSink, mpsc::Receiver<Inbound>)> {
    let bootstrap_tx: IpcSender<Bootstrap> = IpcSender::connect(server_name.to_owned())?;
    let (cmd_tx, cmd_rx) = ipc::bytes_channel()?;
    let (evt_tx, evt_rx) = ipc::bytes_channel()?;
    bootstrap_tx.send(Bootstrap {
        protocol_version: PROTOCOL_VERSION,
        commands: cmd_tx,
        events: evt_rx,
    })?;

    let (in_tx, in_rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("ipc-reader".into())
        .spawn(move || loop {
            let msg = match cmd_rx.recv() {
                Ok(bytes) => match decode::<Command>(&bytes) {
                    Ok(cmd) => Inbound::Command(cmd),
                    Err(e) => Inbound::Closed(e.to_string()),
                },
                Err(e) => Inbound::Closed(format!("{e:?}")),
            };
            let closed = matches!(msg, Inbound::Closed(_));
            if in_tx.send(msg).is_err() || closed {
                return;
            }
        })?;
    let sink = EventSink {
        tx: evt_tx,
        queue: std::cell::RefCell::new(Vec::with_capacity(64)),
    };
    Ok((sink, in_rx))
}
