//! The worker's end of the protocol: connecting to the supervisor, a reader
//! thread that turns command bytes into [`Command`]s, and the event sink.
//!
//! The engine thread owns llama.cpp and must never block on the socket while
//! sequences are running, so commands arrive through a std channel that it
//! polls between decode steps (and blocks on only when idle). The channel is
//! the engine's: the prep thread sends into it too, so the reader delivers
//! any type made `From<Inbound>`.

use std::sync::mpsc;

use ipc_channel::ipc::{self, IpcBytesSender, IpcSender};
use llm_node_protocol::{
    decode, encode_into, lane_of, Bootstrap, Command, Event, PROTOCOL_VERSION,
};

/// Sends events to the supervisor. Events are queued per lane and sent by
/// [`EventSink::flush`], once per turn of the engine loop, as one message per
/// lane (a flat list, see `llm_node_protocol::decode_events`): with many sequences a
/// decode step costs one IPC message and one wake-up per supervisor thread
/// involved, not one per token.
pub struct EventSink {
    lanes: std::cell::RefCell<Vec<Lane>>,
    /// The encoding buffer, reused for every message.
    buf: std::cell::RefCell<Vec<u8>>,
}

/// One event lane: its channel (`None` once the supervisor closed it) and the
/// events queued for the next flush.
struct Lane {
    tx: Option<IpcBytesSender>,
    queue: Vec<Event>,
}

/// The supervisor is gone; the worker has no one to serve and exits.
#[derive(Debug, thiserror::Error)]
#[error("supervisor channel closed")]
pub struct Disconnected;

impl EventSink {
    fn new(senders: Vec<IpcBytesSender>) -> Self {
        let lanes = senders
            .into_iter()
            .map(|tx| Lane {
                tx: Some(tx),
                queue: Vec::with_capacity(64),
            })
            .collect();
        Self {
            lanes: std::cell::RefCell::new(lanes),
            buf: std::cell::RefCell::new(Vec::with_capacity(4096)),
        }
    }

    /// Queues `event` for the next [`EventSink::flush`].
    ///
    /// # Errors
    /// Never; the `Result` keeps call sites ready for a sink that sends at once.
    pub fn send(&self, event: Event) -> Result<(), Disconnected> {
        let mut lanes = self.lanes.borrow_mut();
        // Handshake events, and ids naming a lane that is not (or no longer)
        // open, use lane 0.
        let lane = event
            .request_id()
            .map(lane_of)
            .filter(|&lane| lanes.get(lane).is_some_and(|l| l.tx.is_some()))
            .unwrap_or(0);
        lanes[lane].queue.push(event);
        Ok(())
    }

    /// Sends everything queued, one message per lane. The queues keep their
    /// allocations: a turn of the engine loop allocates nothing here.
    ///
    /// # Errors
    /// [`Disconnected`] when lane 0 is closed: the supervisor is gone. Another
    /// closed lane only means the supervisor thread that read it stopped; its
    /// events are dropped (their requests went with that thread) and later
    /// ones for it go on lane 0.
    pub fn flush(&self) -> Result<(), Disconnected> {
        let mut buf = self.buf.borrow_mut();
        for (i, lane) in self.lanes.borrow_mut().iter_mut().enumerate() {
            if lane.queue.is_empty() {
                continue;
            }
            buf.clear();
            encode_into(&mut buf, &lane.queue);
            lane.queue.clear();
            let Some(tx) = &lane.tx else { continue };
            if tx.send(&buf).is_err() {
                if i == 0 {
                    return Err(Disconnected);
                }
                tracing::warn!(
                    lane = i,
                    "event lane closed by the supervisor; using lane 0"
                );
                lane.tx = None;
            }
        }
        Ok(())
    }
}

/// What the reader thread delivers.
// Each value crosses one channel once; boxing the large variant would add an
// allocation per command and save nothing measurable.
#[allow(clippy::large_enum_variant)]
pub enum Inbound {
    Command(Command),
    /// The command channel closed or carried garbage: shut down.
    Closed(String),
}

/// Connects to the supervisor's one-shot server `server_name` with `lanes`
/// event channels (at least one) and starts the reader thread, which sends
/// every command to `deliver` until the command channel closes.
///
/// # Errors
/// When the server cannot be reached or the bootstrap message cannot be sent.
pub fn connect<T: From<Inbound> + Send + 'static>(
    server_name: &str,
    lanes: usize,
    deliver: mpsc::Sender<T>,
) -> anyhow::Result<EventSink> {
    let bootstrap_tx: IpcSender<Bootstrap> = IpcSender::connect(server_name.to_owned())?;
    let (cmd_tx, cmd_rx) = ipc::bytes_channel()?;
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..lanes.max(1))
        .map(|_| ipc::bytes_channel())
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .unzip();
    bootstrap_tx.send(Bootstrap {
        protocol_version: PROTOCOL_VERSION,
        commands: cmd_tx,
        events: receivers,
    })?;

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
            if deliver.send(msg.into()).is_err() || closed {
                return;
            }
        })?;
    Ok(EventSink::new(senders))
}

#[cfg(test)]
mod tests {
    use llm_node_protocol::{decode_events, request_id};

    use super::*;

    fn piece(id: u64) -> Event {
        Event::Piece {
            id,
            text: "x".into(),
            tokens: 1,
            logprobs: Vec::new(),
        }
    }

    fn events(rx: &ipc::IpcBytesReceiver) -> Vec<Event> {
        decode_events(&rx.recv().unwrap()).unwrap()
    }

    #[test]
    fn each_lane_gets_one_message_per_flush_with_its_own_events() {
        let (tx0, rx0) = ipc::bytes_channel().unwrap();
        let (tx1, rx1) = ipc::bytes_channel().unwrap();
        let sink = EventSink::new(vec![tx0, tx1]);
        let (a, b) = (request_id(1, 1), request_id(1, 2));
        for event in [piece(a), piece(7), piece(b), piece(request_id(9, 3))] {
            sink.send(event).unwrap();
        }
        sink.flush().unwrap();
        assert_eq!(events(&rx1), vec![piece(a), piece(b)]);
        // Lane 0: its own ids, and ids naming a lane that does not exist.
        assert_eq!(events(&rx0), vec![piece(7), piece(request_id(9, 3))]);
        assert!(matches!(
            rx0.try_recv(),
            Err(ipc_channel::TryRecvError::Empty)
        ));
    }

    #[test]
    fn a_lane_closed_by_the_supervisor_falls_back_to_lane_0_but_lane_0_closed_is_fatal() {
        let (tx0, rx0) = ipc::bytes_channel().unwrap();
        let (tx1, rx1) = ipc::bytes_channel().unwrap();
        let sink = EventSink::new(vec![tx0, tx1]);
        drop(rx1);
        let id = request_id(1, 1);
        sink.send(piece(id)).unwrap();
        sink.flush()
            .expect("a closed lane 1 is not the supervisor gone");
        sink.send(piece(id)).unwrap();
        sink.flush().unwrap();
        assert_eq!(events(&rx0), vec![piece(id)]);
        drop(rx0);
        sink.send(piece(5)).unwrap();
        assert!(sink.flush().is_err());
    }
}
