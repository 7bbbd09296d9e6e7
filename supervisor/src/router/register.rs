//! What registration sends (contract §1.1), which address it advertises, and
//! how long to wait between attempts. Pure functions, plus the one socket
//! trick that finds the local address of the route to the router.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::client::{GpuDeviceInfo, RegisterRequest};
use crate::gpu::GpuDevice;

/// The `runtime_version` we report (free text for the router).
pub const RUNTIME_VERSION: &str = concat!("llm-node ", env!("CARGO_PKG_VERSION"));

/// Why no registration body can be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PayloadError {
    #[error("no GPU to report: the router refuses GPU-less nodes")]
    NoGpu,
    #[error("listen port {0} cannot be advertised: the router calls runtime_port+1, so the port must be 1..=65535")]
    Port(u16),
}

/// The registration body for a node listening on `listen_port` and reachable at `ip`.
///
/// The router calls `runtime_port + 1`, so we report `listen_port − 1`
/// (contract §1.1). One `gpu_devices` entry per device, as the C++ node does.
///
/// # Errors
/// [`PayloadError`] for no GPUs or port 0.
pub fn register_request(
    machine_name: &str,
    ip: IpAddr,
    listen_port: u16,
    gpus: &[GpuDevice],
) -> Result<RegisterRequest, PayloadError> {
    if gpus.is_empty() {
        return Err(PayloadError::NoGpu);
    }
    let runtime_port = listen_port
        .checked_sub(1)
        .ok_or(PayloadError::Port(listen_port))?;
    let gpu_devices: Vec<GpuDeviceInfo> = gpus
        .iter()
        .map(|g| GpuDeviceInfo {
            model: if g.name.trim().is_empty() {
                "GPU".to_string()
            } else {
                g.name.clone()
            },
            count: 1,
            memory: (g.total_bytes > 0).then_some(g.total_bytes),
        })
        .collect();
    Ok(RegisterRequest {
        machine_name: machine_name.to_string(),
        ip_address: ip.to_string(),
        runtime_version: RUNTIME_VERSION.to_string(),
        runtime_port,
        gpu_available: true,
        gpu_count: gpu_devices.len() as u32,
        gpu_model: gpu_devices.first().map(|d| d.model.clone()),
        gpu_devices,
    })
}

/// The address to advertise, best first: the configured one; the bind address when it is
/// a specific (non-wildcard) one; the local end of the route to the router; loopback.
pub fn choose_ip(
    configured: Option<IpAddr>,
    bind: Option<IpAddr>,
    route_local: Option<IpAddr>,
) -> IpAddr {
    configured
        .or(bind.filter(|ip| !ip.is_unspecified()))
        .or(route_local.filter(|ip| !ip.is_unspecified()))
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// The local address the kernel would use to reach `host:port`: "connect" a UDP
/// socket (no packet is sent) and read its local address. `None` when the host
/// does not resolve or no route exists.
pub async fn route_local_addr(host: &str, port: u16) -> Option<IpAddr> {
    let target: SocketAddr = tokio::net::lookup_host((host, port)).await.ok()?.next()?;
    let any: SocketAddr = match target {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = tokio::net::UdpSocket::bind(any).await.ok()?;
    socket.connect(target).await.ok()?;
    Some(socket.local_addr().ok()?.ip())
}

/// Wait before registration attempt `attempt + 1` after `attempt` failures: doubling from
/// `base`, capped at `cap`, scaled by `jitter` ∈ [0, 1) into `[½·d, d)` so that nodes
/// restarted together do not hammer the router in lockstep.
pub fn retry_delay(attempt: u32, base: Duration, cap: Duration, jitter: f64) -> Duration {
    let exp = attempt.saturating_sub(1).min(20);
    let raw = base.saturating_mul(1u32 << exp).min(cap);
    raw.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// The registration backoff for a heartbeat interval: start at the smaller of
/// 500 ms and the interval, never wait longer than the interval, so a node
/// comes back within about one heartbeat of the router's return.
pub fn backoff_bounds(heartbeat: Duration) -> (Duration, Duration) {
    let cap = heartbeat.max(Duration::from_millis(50));
    (Duration::from_millis(500).min(cap), cap)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::Vendor;

    fn gpu(name: &str, gib: u64) -> GpuDevice {
        GpuDevice {
            index: 0,
            name: name.into(),
            vendor: Vendor::Nvidia,
            total_bytes: gib << 30,
            free_bytes: gib << 30,
            utilization_pct: None,
            temperature_c: None,
            compute_capability: None,
            simulated: true,
        }
    }

    #[test]
    fn register_body_reports_port_minus_one_and_one_entry_per_gpu() {
        let ip: IpAddr = "192.168.1.20".parse().unwrap();
        let req = register_request("box", ip, 11435, &[gpu("H100", 80), gpu("A10", 24)]).unwrap();
        let json = serde_json::to_value(&req).unwrap();
        assert_eq!(json["runtime_port"], 11434);
        assert_eq!(json["ip_address"], "192.168.1.20");
        assert_eq!(json["gpu_available"], true);
        assert_eq!(json["gpu_count"], 2);
        assert_eq!(json["gpu_model"], "H100");
        assert_eq!(
            json["gpu_devices"][1],
            serde_json::json!({"model": "A10", "count": 1, "memory": 24u64 << 30})
        );
        assert!(json["runtime_version"]
            .as_str()
            .unwrap()
            .contains("llm-node"));
    }

    #[test]
    fn register_body_needs_a_gpu_and_a_real_port() {
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        assert_eq!(
            register_request("b", ip, 1, &[]).unwrap_err(),
            PayloadError::NoGpu
        );
        assert_eq!(
            register_request("b", ip, 0, &[gpu("G", 1)]).unwrap_err(),
            PayloadError::Port(0)
        );
        assert_eq!(
            register_request("b", ip, 1, &[gpu(" ", 1)])
                .unwrap()
                .gpu_devices[0]
                .model,
            "GPU"
        );
    }

    #[test]
    fn ip_choice_prefers_configured_then_specific_bind_then_route() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let table = [
            (ip("10.0.0.9"), ip("127.0.0.1"), ip("10.0.0.2"), "10.0.0.9"),
            (None, ip("127.0.0.1"), ip("10.0.0.2"), "127.0.0.1"),
            (None, ip("0.0.0.0"), ip("10.0.0.2"), "10.0.0.2"),
            (None, ip("::"), ip("fd00::2"), "fd00::2"),
            (None, None, None, "127.0.0.1"),
            (None, ip("0.0.0.0"), ip("0.0.0.0"), "127.0.0.1"),
        ];
        for (configured, bind, route, want) in table {
            assert_eq!(
                choose_ip(configured, bind, route).to_string(),
                want,
                "{configured:?} {bind:?} {route:?}"
            );
        }
    }

    #[actix_rt::test]
    async fn route_to_loopback_is_loopback() {
        assert_eq!(
            route_local_addr("127.0.0.1", 9).await,
            Some(IpAddr::V4(Ipv4Addr::LOCALHOST))
        );
        assert_eq!(route_local_addr("no-such-host.invalid", 9).await, None);
    }

    #[test]
    fn retry_delay_doubles_up_to_the_cap_with_downward_jitter() {
        let (base, cap) = (Duration::from_millis(500), Duration::from_secs(10));
        let table = [
            (1, 1.0, 500),
            (2, 1.0, 1000),
            (5, 1.0, 8000),
            (6, 1.0, 10000),
            (99, 1.0, 10000),
            (1, 0.0, 250),
            (0, 1.0, 500),
        ];
        for (attempt, jitter, ms) in table {
            assert_eq!(
                retry_delay(attempt, base, cap, jitter),
                Duration::from_millis(ms),
                "attempt {attempt}"
            );
        }
    }

    #[test]
    fn backoff_never_exceeds_the_heartbeat_interval() {
        assert_eq!(
            backoff_bounds(Duration::from_secs(10)),
            (Duration::from_millis(500), Duration::from_secs(10))
        );
        assert_eq!(
            backoff_bounds(Duration::from_millis(200)),
            (Duration::from_millis(200), Duration::from_millis(200))
        );
    }
}
