//! The membership loop: register, heartbeat, re-register, for as long as the
//! node runs.
//!
//! ```text
//!        ┌──────────── 401 / 404 (token or node unknown) ─────────────┐
//!        ▼                                                             │
//!   Registering ──201/200──▶ Member ──every interval──▶ heartbeat ─────┤
//!    │  ▲ any failure:            ▲                                    │
//!    └──┘ capped backoff          └── ok, or router down/5xx/garbage ──┘
//! ```
//!
//! The loop never gives up (the C++ node exited after ~1.2 s) and never
//! blocks serving: it runs as its own task, every call has a timeout, and a
//! router that is down, slow, or answering garbage only costs log lines.
//! The registration backoff is capped at the heartbeat interval, so a node
//! comes back within about one interval of the router's return.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::client::{CallError, RegisterResponse, RouterClient};
use super::heartbeat::{health_request, RequestFigures, SystemSampler};
use super::register::{backoff_bounds, choose_ip, register_request, retry_delay, route_local_addr};
use super::stats::RequestStats;
use super::NodeModels;
use crate::gpu::GpuProbe;
use crate::metrics::Metrics;

/// What the router knows us by; replaced on every registration.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub node_id: String,
    pub agent_token: String,
}

/// Everything the loop needs.
pub struct Session {
    pub client: RouterClient,
    pub models: Arc<dyn NodeModels>,
    pub gpu: Arc<dyn GpuProbe>,
    pub stats: RequestStats,
    pub machine_name: String,
    pub listen_port: u16,
    pub node_ip: Option<IpAddr>,
    /// The bind address, when it is an IP literal.
    pub bind_ip: Option<IpAddr>,
    pub interval: Duration,
    /// The current identity, read by shutdown (disconnect) and by model sync.
    pub identity: Arc<Mutex<Option<Identity>>>,
    /// Bumped after every successful registration.
    pub registrations: watch::Sender<u64>,
    /// Membership figures: registered, heartbeat failures, last success.
    pub metrics: Metrics,
}

impl Session {
    /// Runs until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut sampler = SystemSampler::default();
        loop {
            let identity = tokio::select! {
                id = self.register() => id,
                _ = shutdown.wait_for(|stop| *stop) => return,
            };
            *self.identity.lock().unwrap_or_else(|e| e.into_inner()) = Some(identity.clone());
            self.registrations.send_modify(|n| *n += 1);
            self.metrics.router_registered.set(1);
            // First heartbeat at once: real figures instead of the probe's guesses.
            loop {
                let result = self.heartbeat(&identity, &mut sampler).await;
                self.meter_heartbeat(&result);
                match result {
                    Ok(()) => {}
                    Err(e) if e.needs_registration() => {
                        tracing::warn!("router no longer knows this node ({e}); registering again");
                        self.metrics.router_registered.set(0);
                        break;
                    }
                    Err(e) => tracing::warn!("heartbeat failed: {e}"),
                }
                tokio::select! {
                    () = tokio::time::sleep(self.interval) => {}
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
            }
        }
    }

    /// A heartbeat's outcome in the membership metrics.
    fn meter_heartbeat(&self, result: &Result<(), CallError>) {
        match result {
            Ok(()) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                self.metrics.router_last_heartbeat.set(now.as_secs_f64());
            }
            Err(_) => self.metrics.router_heartbeat_failures.inc(),
        }
    }

    /// Registers, retrying with capped backoff until it succeeds.
    async fn register(&self) -> Identity {
        let (base, cap) = backoff_bounds(self.interval);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            match self.register_once().await {
                Ok(reply) => {
                    tracing::info!(node_id = %reply.node_id, status = reply.status.as_deref().unwrap_or("?"),
                        router = %self.client.base(), "registered with the router");
                    return Identity {
                        node_id: reply.node_id,
                        agent_token: reply.agent_token,
                    };
                }
                Err(e) => {
                    let delay = retry_delay(attempt, base, cap, rand::random::<f64>());
                    tracing::warn!(
                        attempt,
                        retry_in_ms = delay.as_millis() as u64,
                        "registration with {} failed: {e}",
                        self.client.base()
                    );
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    async fn register_once(&self) -> Result<RegisterResponse, CallError> {
        let route = match self.client.base().host_str() {
            Some(host) if self.node_ip.is_none() => {
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let port = self.client.base().port_or_known_default().unwrap_or(80);
                route_local_addr(host, port).await
            }
            _ => None,
        };
        let ip = choose_ip(self.node_ip, self.bind_ip, route);
        let body = register_request(
            &self.machine_name,
            ip,
            self.listen_port,
            &self.gpu.devices(),
        )
        .map_err(|e| CallError::Body(e.to_string()))?;
        tracing::debug!(ip = %ip, runtime_port = body.runtime_port, "registering");
        self.client.register(&body).await
    }

    async fn heartbeat(
        &self,
        identity: &Identity,
        sampler: &mut SystemSampler,
    ) -> Result<(), CallError> {
        let models = self.models.snapshot().await;
        let body = health_request(
            &identity.node_id,
            sampler.sample(),
            RequestFigures {
                active: self.stats.active(),
                average_ms: self.stats.average_ms(),
            },
            &self.gpu.devices(),
            &models,
        );
        let timeout = self
            .interval
            .clamp(Duration::from_secs(2), Duration::from_secs(10));
        self.client
            .heartbeat(&identity.agent_token, &body, timeout)
            .await
    }
}
