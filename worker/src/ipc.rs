//! The worker's end of the protocol: connecting to the supervisor, a reader
//! thread that turns command bytes into [`Command`]s, and the event sink.
//!
//! The engine thread owns llama.cpp and must never block on the socket while
//! sequences are running, so commands arrive through a std channel that it
//! polls between decode steps (and blocks on only when idle). The channel is
//! the engine's: the prep thread sends into it too, so the reader delivers
//! any type made `From<Inbound>`.
//!
//! # Pings
//! The reader answers `Ping` itself, at once, with the engine's progress
//! (`progress::Meter`), so a decode step longer than the supervisor's ping
//! timeout does not get a healthy worker killed. Its `Pong` travels on a
//! clone of the event lane's sender while the engine may be sending on the
//! same lane. That is safe without a lock because each lane is a Unix
//! `SOCK_SEQPACKET` socket and ipc-channel 0.23 sends every message as one
//! `sendmsg` on it: a message too big for one packet sends only its first
//! fragment there and the rest on a private channel whose receiving end rides
//! with that fragment ("this way we avoid fragments of different messages
//! interleaving in the receiver", `platform/unix/mod.rs`). Two senders can
//! reorder whole messages, never mix them; the test
//! `concurrent_senders_on_one_lane_never_mix_messages` holds ipc-channel to it.

use std::sync::{mpsc, Arc};

use ipc_channel::ipc::{self, IpcBytesSender, IpcSender};
use llm_node_protocol::{
    decode, encode_events, encode_into, lane_of, Bootstrap, Command, Event, RequestId,
    PROTOCOL_VERSION,
};

use crate::progress::Meter;

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

/// Answers pings on the reader thread, from the engine's [`Meter`], on its
/// own clones of the event lanes (see "Pings" above).
struct Ponger {
    lanes: Vec<IpcBytesSender>,
    meter: Arc<Meter>,
}

impl Ponger {
    /// Sends `Pong` on the lane `id` names, or lane 0 when that one is
    /// missing or closed. A failure on lane 0 is ignored: the supervisor is
    /// gone, and the command channel closing says so to the engine.
    fn pong(&self, id: RequestId) {
        let progress = self.meter.progress();
        let bytes = encode_events(&[Event::Pong { id, progress }]);
        let lane = lane_of(id);
        let sent = self
            .lanes
            .get(lane)
            .is_some_and(|tx| tx.send(&bytes).is_ok());
        if !sent && lane != 0 {
            let _ = self.lanes[0].send(&bytes);
        }
    }
}

/// Connects to the supervisor's one-shot server `server_name` with `lanes`
/// event channels (at least one) and starts the reader thread, which answers
/// pings from `meter` and sends every other command to `deliver` until the
/// command channel closes.
///
/// # Errors
/// When the server cannot be reached or the bootstrap message cannot be sent.
pub fn connect<T: From<Inbound> + Send + 'static>(
    server_name: &str,
    lanes: usize,
    deliver: mpsc::Sender<T>,
    meter: Arc<Meter>,
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

    let ponger = Ponger {
        lanes: senders.clone(),
        meter,
    };
    std::thread::Builder::new()
        .name("ipc-reader".into())
        .spawn(move || loop {
            let msg = match cmd_rx.recv() {
                Ok(bytes) => match decode::<Command>(&bytes) {
                    Ok(Command::Ping { id }) => {
                        ponger.pong(id);
                        continue;
                    }
                    // Applied here, not by the engine: a busy engine must not delay it.
                    Ok(Command::SetLogLevel { filter }) => {
                        crate::set_log_filter(&filter);
                        continue;
                    }
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
    use std::time::Duration;

    use ipc_channel::ipc::IpcOneShotServer;
    use llm_node_protocol::{decode_events, encode, request_id, Progress};

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

    #[test]
    fn pings_are_answered_by_the_reader_while_the_engine_is_busy() {
        let (server, name) = IpcOneShotServer::<Bootstrap>::new().unwrap();
        let accept = std::thread::spawn(move || server.accept().unwrap().1);
        let (deliver, engine) = mpsc::channel::<Inbound>();
        let meter = Arc::new(Meter::default());
        let _sink = connect(&name, 2, deliver, meter.clone()).unwrap();
        let boot = accept.join().unwrap();
        // The engine is inside a long step: it reads no input for now.
        meter.begin();
        std::thread::sleep(Duration::from_millis(20));
        let id = request_id(1, 7);
        boot.commands.send(&encode(&Command::Ping { id })).unwrap();
        let events = decode_events(&boot.events[1].recv().unwrap()).unwrap();
        let [Event::Pong {
            id: got,
            progress: Progress {
                turns: 0, busy_ms, ..
            },
        }] = events[..]
        else {
            panic!("{events:?}");
        };
        assert_eq!(got, id);
        assert!(busy_ms >= 20, "{busy_ms}");
        // Pings never reach the engine; everything else does.
        boot.commands
            .send(&encode(&Command::Cancel { id: 3 }))
            .unwrap();
        match engine.recv_timeout(Duration::from_secs(5)).unwrap() {
            Inbound::Command(Command::Cancel { id: 3 }) => {}
            _ => panic!("expected the Cancel, not the Ping"),
        }
    }

    /// The property the reader's `Pong`s rely on (see "Pings" in the module
    /// doc): clones of one sender used by two threads at once, one of them
    /// sending messages far larger than a socket packet, deliver every
    /// message whole.
    #[test]
    fn concurrent_senders_on_one_lane_never_mix_messages() {
        const BIG: usize = 1 << 20;
        let (tx, rx) = ipc::bytes_channel().unwrap();
        let (big_tx, small_tx) = (tx.clone(), tx);
        let big = std::thread::spawn(move || {
            for _ in 0..20 {
                big_tx.send(&vec![0xbb; BIG]).unwrap();
            }
        });
        let small = std::thread::spawn(move || {
            for i in 0..2000u32 {
                small_tx.send(&i.to_le_bytes()).unwrap();
            }
        });
        let (mut bigs, mut next_small) = (0, 0u32);
        while bigs < 20 || next_small < 2000 {
            let msg = rx.recv().unwrap();
            if msg.len() == BIG {
                assert!(msg.iter().all(|&b| b == 0xbb), "a big message was mixed");
                bigs += 1;
            } else {
                assert_eq!(msg, next_small.to_le_bytes(), "a small message was mixed");
                next_small += 1;
            }
        }
        big.join().unwrap();
        small.join().unwrap();
    }
}
