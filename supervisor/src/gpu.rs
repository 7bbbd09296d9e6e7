//! GPU discovery behind one trait, so placement and heartbeats never care
//! where the facts come from.
//!
//! - [`NvmlProbe`]: NVIDIA through NVML (`nvml-wrapper` loads libnvidia-ml at
//!   run time, so this builds everywhere and reports nothing without a driver).
//! - [`SysfsAmdProbe`]: AMD through `/sys/class/drm/card*/device` (amdgpu).
//! - Apple Metal on macOS: one device sharing system memory.
//! - [`SimulatedProbe`]: a configured list (`--simulated-gpus "H100:80,H100:80:40"`)
//!   for tests and CPU demos; always logged loudly as simulated.

use std::path::{Path, PathBuf};

/// Who made the device; decides the visibility variable of a pinned worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Vendor {
    Nvidia,
    Amd,
    Apple,
}

/// One device and its current figures.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GpuDevice {
    pub index: u32,
    pub name: String,
    pub vendor: Vendor,
    pub total_bytes: u64,
    pub free_bytes: u64,
    pub utilization_pct: Option<u32>,
    pub temperature_c: Option<u32>,
    /// CUDA compute capability such as `"9.0"`.
    pub compute_capability: Option<String>,
    pub simulated: bool,
}

/// A source of GPU facts. Each call reads current figures.
pub trait GpuProbe: Send + Sync {
    fn devices(&self) -> Vec<GpuDevice>;
    /// Short name for logs: "nvml", "amd-sysfs", "metal", "simulated", "none".
    fn kind(&self) -> &'static str;
}

/// The environment that pins a worker to `indices` of `vendor`: the one
/// variable that vendor's runtime reads (none on Apple, which has one device).
/// With the vendor unknown (an admin pin on a node that detected no GPU) both
/// CUDA's and HIP's variables are set, so either runtime obeys.
pub fn visibility_env(vendor: Option<Vendor>, indices: &[u32]) -> Vec<(&'static str, String)> {
    let list = indices
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    match vendor {
        Some(Vendor::Nvidia) => vec![("CUDA_VISIBLE_DEVICES", list)],
        Some(Vendor::Amd) => vec![("HIP_VISIBLE_DEVICES", list)],
        Some(Vendor::Apple) => Vec::new(),
        None => vec![
            ("CUDA_VISIBLE_DEVICES", list.clone()),
            ("HIP_VISIBLE_DEVICES", list),
        ],
    }
}

/// The ggml backends that compute on `vendor`'s GPUs.
fn gpu_backends(vendor: Vendor) -> &'static [&'static str] {
    match vendor {
        Vendor::Nvidia => &["CUDA", "Vulkan"],
        Vendor::Amd => &["ROCm", "HIP", "Vulkan"],
        Vendor::Apple => &["Metal", "MTL"],
    }
}

/// The warning for a node that sees GPUs but whose worker cannot use them
/// (`backends`: what `llm-node-worker --version` lists); `None` when the
/// worker has a backend for every vendor present, when there is no GPU, or
/// when the backends are unknown.
pub fn cpu_only_worker(devices: &[GpuDevice], backends: Option<&[String]>) -> Option<String> {
    let backends = backends?;
    let unusable: Vec<&GpuDevice> = devices
        .iter()
        .filter(|d| {
            !gpu_backends(d.vendor)
                .iter()
                .any(|b| backends.iter().any(|have| have.eq_ignore_ascii_case(b)))
        })
        .collect();
    let first = unusable.first()?;
    let hint = match first.vendor {
        Vendor::Nvidia => "build it with scripts/build-cuda.sh (--features cuda)",
        Vendor::Amd => "build it with --features rocm",
        Vendor::Apple => "build it with --features metal",
    };
    Some(format!(
        "{} GPU(s) detected ({}) but the worker is built with backends [{}] only: \
         models run on the CPU; {hint}",
        unusable.len(),
        first.name,
        backends.join(", ")
    ))
}

/// The warning for the opposite case: a worker built with a GPU backend
/// (CUDA, ROCm, Vulkan, Metal) on a node that sees no GPU, so every model
/// falls back to the CPU. `None` when a GPU is present, when the worker has
/// only the CPU backend, or when its backends are unknown.
pub fn cpu_fallback(devices: &[GpuDevice], backends: Option<&[String]>) -> Option<String> {
    if !devices.is_empty() {
        return None;
    }
    let gpu: Vec<&str> = backends?
        .iter()
        .map(String::as_str)
        .filter(|b| !b.eq_ignore_ascii_case("CPU") && !b.eq_ignore_ascii_case("BLAS"))
        .collect();
    if gpu.is_empty() {
        return None;
    }
    Some(format!(
        "the worker is built with GPU backend(s) [{}] but no GPU is visible: \
         models run on the CPU (check the driver, e.g. `nvidia-smi`, and \
         CUDA_VISIBLE_DEVICES)",
        gpu.join(", ")
    ))
}

/// The one warning `/admin/gpus` and the start log give about a worker that
/// does not match the node's GPUs, if any.
pub fn worker_mismatch(devices: &[GpuDevice], backends: Option<&[String]>) -> Option<String> {
    cpu_only_worker(devices, backends).or_else(|| cpu_fallback(devices, backends))
}

/// Picks the first probe that finds devices; `simulated` wins when given.
///
/// # Errors
/// When the simulated list does not parse.
pub fn detect(simulated: Option<&str>) -> Result<Box<dyn GpuProbe>, String> {
    if let Some(spec) = simulated.filter(|s| !s.trim().is_empty()) {
        let probe = SimulatedProbe::parse(spec)?;
        tracing::warn!(
            devices = probe.devices.len(),
            "USING SIMULATED GPUS ({spec}): placement and reports are not real hardware"
        );
        return Ok(Box::new(probe));
    }
    if let Some(nvml) = NvmlProbe::new() {
        if !nvml.devices().is_empty() {
            return Ok(Box::new(nvml));
        }
    }
    let amd = SysfsAmdProbe::new("/sys/class/drm");
    if !amd.devices().is_empty() {
        return Ok(Box::new(amd));
    }
    #[cfg(target_os = "macos")]
    {
        return Ok(Box::new(MetalProbe));
    }
    #[allow(unreachable_code)]
    Ok(Box::new(NoGpu))
}

/// No GPU: workers run on the CPU.
pub struct NoGpu;

impl GpuProbe for NoGpu {
    fn devices(&self) -> Vec<GpuDevice> {
        Vec::new()
    }
    fn kind(&self) -> &'static str {
        "none"
    }
}

/// NVIDIA devices through NVML.
pub struct NvmlProbe {
    nvml: nvml_wrapper::Nvml,
}

impl NvmlProbe {
    /// `None` when libnvidia-ml cannot be loaded (no driver).
    pub fn new() -> Option<Self> {
        nvml_wrapper::Nvml::init().ok().map(|nvml| Self { nvml })
    }
}

impl GpuProbe for NvmlProbe {
    fn devices(&self) -> Vec<GpuDevice> {
        use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
        let count = self.nvml.device_count().unwrap_or(0);
        (0..count)
            .filter_map(|i| {
                let d = self.nvml.device_by_index(i).ok()?;
                let mem = d.memory_info().ok()?;
                Some(GpuDevice {
                    index: i,
                    name: d.name().unwrap_or_else(|_| "NVIDIA GPU".into()),
                    vendor: Vendor::Nvidia,
                    total_bytes: mem.total,
                    free_bytes: mem.free,
                    utilization_pct: d.utilization_rates().ok().map(|u| u.gpu),
                    temperature_c: d.temperature(TemperatureSensor::Gpu).ok(),
                    compute_capability: d
                        .cuda_compute_capability()
                        .ok()
                        .map(|c| format!("{}.{}", c.major, c.minor)),
                    simulated: false,
                })
            })
            .collect()
    }
    fn kind(&self) -> &'static str {
        "nvml"
    }
}

/// AMD devices through the amdgpu driver's sysfs files.
pub struct SysfsAmdProbe {
    root: PathBuf,
}

impl SysfsAmdProbe {
    /// `root` is normally `/sys/class/drm`; tests pass a fake tree.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
}

fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok().map(|s| s.trim().to_owned())
}

impl GpuProbe for SysfsAmdProbe {
    fn devices(&self) -> Vec<GpuDevice> {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut cards: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                    n.starts_with("card") && n[4..].chars().all(|c| c.is_ascii_digit())
                })
            })
            .collect();
        cards.sort();
        cards
            .iter()
            .filter_map(|card| {
                let dev = card.join("device");
                if read_trim(&dev.join("vendor"))? != "0x1002" {
                    return None;
                }
                let total: u64 = read_trim(&dev.join("mem_info_vram_total"))?.parse().ok()?;
                let used: u64 = read_trim(&dev.join("mem_info_vram_used"))
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let temperature_c = std::fs::read_dir(dev.join("hwmon"))
                    .ok()
                    .and_then(|mut d| d.next())
                    .and_then(|e| e.ok())
                    .and_then(|e| read_trim(&e.path().join("temp1_input")))
                    .and_then(|s| s.parse::<u32>().ok())
                    .map(|milli| milli / 1000);
                Some((total, used, temperature_c, dev))
            })
            .enumerate()
            .map(|(i, (total, used, temperature_c, dev))| GpuDevice {
                index: i as u32,
                name: read_trim(&dev.join("product_name")).unwrap_or_else(|| "AMD GPU".into()),
                vendor: Vendor::Amd,
                total_bytes: total,
                free_bytes: total.saturating_sub(used),
                utilization_pct: read_trim(&dev.join("gpu_busy_percent"))
                    .and_then(|s| s.parse().ok()),
                temperature_c,
                compute_capability: None,
                simulated: false,
            })
            .collect()
    }
    fn kind(&self) -> &'static str {
        "amd-sysfs"
    }
}

/// Apple silicon: one Metal device sharing system memory.
#[cfg(target_os = "macos")]
pub struct MetalProbe;

#[cfg(target_os = "macos")]
impl GpuProbe for MetalProbe {
    fn devices(&self) -> Vec<GpuDevice> {
        let mut sys = sysinfo::System::new();
        sys.refresh_memory();
        vec![GpuDevice {
            index: 0,
            name: "Apple Metal".into(),
            vendor: Vendor::Apple,
            total_bytes: sys.total_memory(),
            free_bytes: sys.available_memory(),
            utilization_pct: None,
            temperature_c: None,
            compute_capability: None,
            simulated: false,
        }]
    }
    fn kind(&self) -> &'static str {
        "metal"
    }
}

/// A configured list of pretend devices.
#[derive(Debug, Clone)]
pub struct SimulatedProbe {
    devices: Vec<GpuDevice>,
}

impl SimulatedProbe {
    /// Parses `NAME:TOTAL_GIB[:FREE_GIB]` entries separated by commas.
    ///
    /// # Errors
    /// A message naming the entry that does not parse.
    pub fn parse(spec: &str) -> Result<Self, String> {
        const GIB: f64 = (1u64 << 30) as f64;
        let devices = spec
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .enumerate()
            .map(|(i, entry)| {
                let parts: Vec<&str> = entry.split(':').collect();
                let bad = || format!("simulated GPU {entry:?}: expected NAME:TOTAL_GIB[:FREE_GIB]");
                let (name, total, free) = match parts.as_slice() {
                    [n, t] => (*n, t.parse::<f64>().map_err(|_| bad())?, None),
                    [n, t, f] => (
                        *n,
                        t.parse::<f64>().map_err(|_| bad())?,
                        Some(f.parse::<f64>().map_err(|_| bad())?),
                    ),
                    _ => return Err(bad()),
                };
                let free = free.unwrap_or(total);
                if name.is_empty() || total <= 0.0 || free < 0.0 || free > total {
                    return Err(bad());
                }
                Ok(GpuDevice {
                    index: i as u32,
                    name: name.to_owned(),
                    vendor: Vendor::Nvidia,
                    total_bytes: (total * GIB) as u64,
                    free_bytes: (free * GIB) as u64,
                    utilization_pct: Some(0),
                    temperature_c: None,
                    compute_capability: None,
                    simulated: true,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { devices })
    }
}

impl GpuProbe for SimulatedProbe {
    fn devices(&self) -> Vec<GpuDevice> {
        self.devices.clone()
    }
    fn kind(&self) -> &'static str {
        "simulated"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_list_parses_and_rejects_garbage() {
        let p = SimulatedProbe::parse("H100:80, A10:24:12").unwrap();
        let d = p.devices();
        assert_eq!(d.len(), 2);
        assert_eq!((d[1].index, d[1].name.as_str()), (1, "A10"));
        assert_eq!(d[1].total_bytes, 24 << 30);
        assert_eq!(d[1].free_bytes, 12 << 30);
        assert!(d.iter().all(|g| g.simulated));
        for bad in ["H100", "H100:x", ":8", "A:8:9", "A:1:2:3", "A:-1"] {
            assert!(SimulatedProbe::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_gpu_worker_on_a_node_without_gpu_warns_of_the_cpu_fallback() {
        let list = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let warning = cpu_fallback(&[], Some(&list(&["CPU", "CUDA"]))).expect("warned");
        assert!(
            warning.contains("[CUDA]") && warning.contains("run on the CPU"),
            "{warning}"
        );
        assert_eq!(
            worker_mismatch(&[], Some(&list(&["CPU", "CUDA"]))),
            Some(warning)
        );
        assert_eq!(
            cpu_fallback(&[], Some(&list(&["CPU"]))),
            None,
            "CPU build, CPU node"
        );
        assert_eq!(cpu_fallback(&[], Some(&list(&["CPU", "BLAS"]))), None);
        assert_eq!(cpu_fallback(&[], None), None, "unknown backends");
        let h100 = GpuDevice {
            index: 0,
            name: "H100".into(),
            vendor: Vendor::Nvidia,
            total_bytes: 80 << 30,
            free_bytes: 80 << 30,
            utilization_pct: None,
            temperature_c: None,
            compute_capability: None,
            simulated: false,
        };
        assert_eq!(cpu_fallback(&[h100], Some(&list(&["CPU", "CUDA"]))), None);
    }

    #[test]
    fn a_cpu_only_worker_on_a_gpu_node_is_warned_about() {
        let gpu = |vendor| GpuDevice {
            index: 0,
            name: "H100".into(),
            vendor,
            total_bytes: 80 << 30,
            free_bytes: 80 << 30,
            utilization_pct: None,
            temperature_c: None,
            compute_capability: None,
            simulated: false,
        };
        let list = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let cpu = list(&["CPU"]);
        let cuda = list(&["CPU", "CUDA"]);
        let nvidia = [gpu(Vendor::Nvidia)];
        let warning = cpu_only_worker(&nvidia, Some(&cpu)).expect("warned");
        assert!(warning.contains("1 GPU(s) detected (H100)"), "{warning}");
        assert!(
            warning.contains("[CPU]") && warning.contains("build-cuda.sh"),
            "{warning}"
        );
        assert_eq!(cpu_only_worker(&nvidia, Some(&cuda)), None);
        assert_eq!(
            cpu_only_worker(&nvidia, Some(&list(&["CPU", "Vulkan"]))),
            None
        );
        assert_eq!(
            cpu_only_worker(&[], Some(&cpu)),
            None,
            "no GPU, nothing to say"
        );
        assert_eq!(cpu_only_worker(&nvidia, None), None, "unknown backends");
        let amd = [gpu(Vendor::Amd)];
        assert!(cpu_only_worker(&amd, Some(&cuda)).unwrap().contains("rocm"));
    }

    #[test]
    fn pinning_env_follows_the_vendor() {
        assert_eq!(
            visibility_env(Some(Vendor::Nvidia), &[1, 3]),
            [("CUDA_VISIBLE_DEVICES", "1,3".to_string())]
        );
        assert_eq!(
            visibility_env(Some(Vendor::Amd), &[0]),
            [("HIP_VISIBLE_DEVICES", "0".to_string())]
        );
        assert_eq!(visibility_env(Some(Vendor::Apple), &[0]), []);
        assert_eq!(visibility_env(None, &[2]).len(), 2);
    }

    #[test]
    fn amd_sysfs_tree_is_read() {
        let root = tempfile::tempdir().unwrap();
        let mk = |card: &str, vendor: &str| {
            let dev = root.path().join(card).join("device");
            std::fs::create_dir_all(dev.join("hwmon/hwmon0")).unwrap();
            std::fs::write(dev.join("vendor"), format!("{vendor}\n")).unwrap();
            std::fs::write(dev.join("mem_info_vram_total"), "17179869184\n").unwrap();
            std::fs::write(dev.join("mem_info_vram_used"), "1073741824\n").unwrap();
            std::fs::write(dev.join("gpu_busy_percent"), "37\n").unwrap();
            std::fs::write(dev.join("hwmon/hwmon0/temp1_input"), "45000\n").unwrap();
        };
        mk("card0", "0x10de"); // an NVIDIA card: not ours
        mk("card1", "0x1002");
        std::fs::create_dir_all(root.path().join("card1-DP-1")).unwrap();
        let d = SysfsAmdProbe::new(root.path()).devices();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].index, 0);
        assert_eq!(d[0].total_bytes, 16 << 30);
        assert_eq!(d[0].free_bytes, 15 << 30);
        assert_eq!(d[0].utilization_pct, Some(37));
        assert_eq!(d[0].temperature_c, Some(45));
    }

    #[test]
    fn this_machine_is_detected_without_panicking() {
        let probe = detect(None).unwrap();
        let _ = probe.devices();
        assert!(!probe.kind().is_empty());
    }
}
