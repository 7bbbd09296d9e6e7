//! Noticing that a client went away while its handler still waits.
//!
//! actix-web keeps polling a handler after the client's connection closed
//! (it only finds out when it writes the answer), so a non-streaming request
//! whose client left would generate to the end, and a request waiting for a
//! slot would keep its place. Each connection's socket is recorded when it
//! opens ([`on_connect`]); [`gone`] polls it for a hang-up while a handler
//! waits, and the handler then drops its generation, which cancels it in the
//! worker. (Streams need none of this: actix drops their body when the client
//! goes, and dropping the body cancels the generation.)

use std::any::Any;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use actix_web::dev::Extensions;
use actix_web::HttpRequest;

/// How often a waiting handler looks at its connection.
const CHECK_EVERY: Duration = Duration::from_millis(250);

/// The socket of one connection, recorded by [`on_connect`].
#[derive(Debug, Clone, Copy)]
struct ConnFd(RawFd);

/// `HttpServer::on_connect` hook: remembers the connection's socket.
pub fn on_connect(conn: &dyn Any, ext: &mut Extensions) {
    if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
        ext.insert(ConnFd(tcp.as_raw_fd()));
    }
}

/// The request's connection, if it was recorded.
pub fn connection(req: &HttpRequest) -> Option<Connection> {
    req.conn_data::<ConnFd>().map(|c| Connection(c.0))
}

/// A handle to poll one request's connection.
#[derive(Debug, Clone, Copy)]
pub struct Connection(RawFd);

impl Connection {
    /// Whether the peer has hung up (closed or shut down its side).
    fn hung_up(self) -> bool {
        use nix::libc;
        // nix's PollFlags has no POLLRDHUP here (its `revents()` would drop
        // the bit), so this asks the kernel directly.
        let mut pfd = libc::pollfd {
            fd: self.0,
            events: libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one valid pollfd and a zero timeout; poll neither reads nor
        // closes the descriptor, so at worst it reports on the wrong socket.
        // That could happen only if actix closed this connection while its
        // handler still runs and the number were reused by a new connection,
        // which then would have to hang up too for a request to be cancelled
        // wrongly; not seen, not ruled out.
        let n = unsafe { libc::poll(&mut pfd, 1, 0) };
        n > 0 && pfd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
    }
}

/// Resolves once the client of `conn` has gone; never when unknown.
pub async fn gone(conn: Option<Connection>) {
    let Some(conn) = conn else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(CHECK_EVERY).await;
        if conn.hung_up() {
            return;
        }
    }
}
