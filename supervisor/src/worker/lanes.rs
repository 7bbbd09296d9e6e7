//! Event lanes: which supervisor thread reads which of a worker's event channels.
//!
//! A worker opens one event channel per lane (see the protocol's "Event
//! lanes"). Lane 0 is read by a dedicated thread and carries the handshake and
//! everything started off the HTTP threads (liveness pings, admin, router).
//! Lanes 1.. belong to the HTTP threads, one each: a request started on HTTP
//! thread *k* gets an id on lane *k*, and lane *k* is read by a task on that
//! same thread. A streamed token then costs one wake-up of one thread (the one
//! that writes it to the client) instead of a reader thread's wake-up plus a
//! cross-thread hand-off.
//!
//! [`Lanes`] is filled as the HTTP threads start ([`Lanes::register_current_thread`],
//! from the `HttpServer` factory). A lane whose thread is not known when a
//! worker connects, or whose channel cannot be polled, is read by a thread
//! instead: slower, never wrong, since which lane carries an event does not
//! change its meaning.

use std::cell::Cell;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use actix_rt::ArbiterHandle;
use ipc_channel::ipc::IpcBytesReceiver;

thread_local! {
    /// This thread's lane; 0 for threads that are not HTTP threads.
    static LANE: Cell<u16> = const { Cell::new(0) };
}

/// The lane of requests started on the calling thread.
pub fn current_lane() -> u16 {
    LANE.with(Cell::get)
}

/// The HTTP threads' lanes of one node.
pub struct Lanes {
    /// Index `k - 1` holds the arbiter of lane `k`.
    arbiters: Vec<OnceLock<ArbiterHandle>>,
    next: AtomicUsize,
    /// Lanes registered so far.
    registered: tokio::sync::watch::Sender<usize>,
}

impl std::fmt::Debug for Lanes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lanes")
            .field("count", &self.count())
            .field(
                "registered",
                &self.arbiters.iter().filter(|a| a.get().is_some()).count(),
            )
            .finish()
    }
}

impl Lanes {
    /// Lanes for `http_threads` HTTP threads (at most 65,534), plus lane 0.
    pub fn new(http_threads: usize) -> Self {
        Self {
            arbiters: (0..http_threads.min(usize::from(u16::MAX) - 1))
                .map(|_| OnceLock::new())
                .collect(),
            next: AtomicUsize::new(0),
            registered: tokio::sync::watch::channel(0).0,
        }
    }

    /// Waits until every HTTP thread has registered, at most `timeout`. A
    /// worker that connects earlier would have its lanes read by threads.
    pub async fn ready(&self, timeout: std::time::Duration) {
        let all = self.arbiters.len();
        let mut registered = self.registered.subscribe();
        let _ = tokio::time::timeout(timeout, registered.wait_for(|&n| n >= all)).await;
    }

    /// How many event channels a worker opens.
    pub fn count(&self) -> usize {
        self.arbiters.len() + 1
    }

    /// Gives the calling thread, an HTTP thread running an actix arbiter, the
    /// next free lane. A thread that already has one keeps it; threads beyond
    /// the lanes there are (an HTTP thread restarted after a panic) use lane 0.
    pub fn register_current_thread(&self) {
        if current_lane() != 0 {
            return;
        }
        let index = self.next.fetch_add(1, Ordering::Relaxed);
        let Some(slot) = self.arbiters.get(index) else {
            return;
        };
        if slot.set(actix_rt::Arbiter::current()).is_ok() {
            let lane = u16::try_from(index + 1).expect("lanes fit in u16");
            LANE.with(|l| l.set(lane));
            self.registered.send_modify(|n| *n += 1);
        }
    }

    /// The arbiter that reads `lane`, once its thread has registered.
    pub fn arbiter(&self, lane: usize) -> Option<&ArbiterHandle> {
        lane.checked_sub(1)
            .and_then(|i| self.arbiters.get(i))
            .and_then(OnceLock::get)
    }
}

/// An event channel with its descriptor, for polling from an event loop.
pub(crate) struct LaneFd {
    rx: IpcBytesReceiver,
    fd: RawFd,
}

/// What a non-blocking read of a lane found.
#[derive(Debug)]
pub(crate) enum LaneRead {
    Message(Vec<u8>),
    Empty,
    Closed(String),
}

impl AsRawFd for LaneFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd
    }
}

impl LaneFd {
    /// Wraps `rx` for polling, or hands it back when its descriptor cannot be found.
    pub fn new(rx: IpcBytesReceiver) -> Result<Self, IpcBytesReceiver> {
        match descriptor(&rx) {
            Some(fd) => Ok(Self { rx, fd }),
            None => Err(rx),
        }
    }

    /// The channel, for a reader thread after all.
    pub fn into_receiver(self) -> IpcBytesReceiver {
        self.rx
    }

    /// Reads one message if one is waiting; never blocks.
    ///
    /// `poll(2)` with a zero timeout, then ipc-channel's blocking `recv` only
    /// when a message is there: two system calls per message and one to find
    /// the channel empty (ipc-channel's own `try_recv` toggles `O_NONBLOCK`
    /// around each read: three, and three more for the empty check).
    pub fn try_recv(&self) -> LaneRead {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        // SAFETY: `fd` is `rx`'s open socket, which lives as long as `self`.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.fd) };
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(0) => LaneRead::Empty,
            // Readable, or hung up: `recv` returns the message or the closure.
            Ok(_) => match self.rx.recv() {
                Ok(bytes) => LaneRead::Message(bytes),
                Err(ipc_channel::IpcError::Disconnected) => {
                    LaneRead::Closed("worker disconnected".into())
                }
                Err(e) => LaneRead::Closed(format!("event channel: {e:?}")),
            },
            Err(nix::errno::Errno::EINTR) => LaneRead::Empty,
            Err(e) => LaneRead::Closed(format!("poll on event channel: {e}")),
        }
    }
}

/// The socket behind `rx`.
///
/// ipc-channel 0.23 offers no `AsRawFd`, but its `Debug` output names the
/// descriptor (`IpcBytesReceiver { os_receiver: OsIpcReceiver { fd: Cell {
/// value: 7 } } }`). The number is trusted only if it is a socket; if a
/// future ipc-channel prints something else this returns `None` and the lane
/// is read by a thread (a unit test notices the change).
fn descriptor(rx: &IpcBytesReceiver) -> Option<RawFd> {
    const MARK: &str = "fd: Cell { value: ";
    let debug = format!("{rx:?}");
    let start = debug.find(MARK)? + MARK.len();
    let digits = &debug[start..];
    let end = digits.find(|c: char| !c.is_ascii_digit())?;
    let fd: RawFd = digits[..end].parse().ok()?;
    let stat = nix::sys::stat::fstat(fd).ok()?;
    let kind =
        nix::sys::stat::SFlag::from_bits_truncate(stat.st_mode) & nix::sys::stat::SFlag::S_IFMT;
    (kind == nix::sys::stat::SFlag::S_IFSOCK).then_some(fd)
}

#[cfg(test)]
mod tests {
    use ipc_channel::ipc;

    use super::*;

    #[test]
    fn the_descriptor_of_a_bytes_receiver_is_found_and_is_its_socket() {
        let (tx, rx) = ipc::bytes_channel().unwrap();
        let lane = LaneFd::new(rx).expect("ipc-channel's Debug output still names the fd");
        // Readable through poll(2) on that descriptor once a message is sent.
        let poll = |timeout: i32| {
            let mut fds = [libc::pollfd {
                fd: lane.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            // SAFETY: one valid pollfd, length 1.
            unsafe { libc::poll(fds.as_mut_ptr(), 1, timeout) }
        };
        assert_eq!(poll(0), 0);
        assert!(matches!(lane.try_recv(), LaneRead::Empty));
        tx.send(b"hi").unwrap();
        assert_eq!(poll(1000), 1);
        assert!(matches!(lane.try_recv(), LaneRead::Message(m) if m == b"hi"));
        assert!(matches!(lane.try_recv(), LaneRead::Empty));
        drop(tx);
        assert!(matches!(lane.try_recv(), LaneRead::Closed(_)));
    }

    #[test]
    fn lanes_are_handed_out_once_per_thread_and_run_out_to_lane_0() {
        let lanes = std::sync::Arc::new(Lanes::new(2));
        assert_eq!(lanes.count(), 3);
        let mut got: Vec<u16> = (0..3)
            .map(|_| {
                let lanes = std::sync::Arc::clone(&lanes);
                std::thread::spawn(move || {
                    actix_rt::System::new().block_on(async move {
                        lanes.register_current_thread();
                        lanes.register_current_thread();
                        current_lane()
                    })
                })
                .join()
                .unwrap()
            })
            .collect();
        got.sort_unstable();
        assert_eq!(got, vec![0, 1, 2]);
        // Resolves at once now that both HTTP threads are in.
        actix_rt::System::new().block_on(lanes.ready(std::time::Duration::from_secs(60)));
        assert!(lanes.arbiter(1).is_some() && lanes.arbiter(2).is_some());
        assert!(lanes.arbiter(0).is_none() && lanes.arbiter(3).is_none());
        assert_eq!(current_lane(), 0);
    }
}
