//! Decisions as pure functions over plain data: restart backoff, crash-loop
//! detection, liveness, memory estimate, GPU placement, eviction, admission and the sources a
//! router `/pull` may use. Actors apply
//! the results; nothing here logs, sleeps or touches a process (llama-swap's rule for
//! `EvictionFor`), so every rule is table-tested.

pub mod admission;
pub mod backoff;
pub mod eviction;
pub mod liveness;
pub mod memory;
pub mod placement;
pub mod sources;
