//! Everything about talking to `llm-node-worker` processes.
//!
//! - [`process`]: spawn one worker, complete the handshake, stop it
//!   (Shutdown, then SIGTERM, then SIGKILL to its process group).
//! - [`client`]: the request multiplexer over a connected worker's channels.
//! - [`lanes`]: which thread reads which of a worker's event channels.
//! - [`version`]: the backends a worker binary was built with (`--version`).

pub mod client;
#[cfg(test)]
pub mod fake;
pub mod lanes;
pub mod process;
pub mod version;

pub use client::{
    EmbedInput, Embedded, GenerationEvent, GenerationStream, WorkerClient, WorkerError,
};
pub use lanes::Lanes;
pub use process::{SpawnOptions, StartError, WorkerProcess};
