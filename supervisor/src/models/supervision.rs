//! Settings of the model lifecycle: restarts, liveness, on-demand loading,
//! eviction, queues, draining, GPUs and the admin key. Flags live here (and
//! are flattened into [`crate::Args`]); [`Supervision`] is the validated,
//! typed form the actors and the registry share.

use std::collections::HashMap;
use std::time::Duration;

use crate::policy::backoff::RestartPolicy;
use crate::policy::placement::PlacementPolicy;

/// Lifecycle flags. Every one is also an environment variable.
#[derive(Debug, Clone, clap::Args)]
pub struct SupervisionArgs {
    /// Models loaded at startup: `all`, `none`, or a comma-separated list of ids.
    /// The others load on their first request.
    #[arg(long, env = "LLM_NODE_PRELOAD", default_value = "all")]
    pub preload: String,

    /// Most models loaded at once (0 = no limit). Loading one more unloads the
    /// least recently used idle model; busy or loading models are never unloaded.
    #[arg(long, env = "LLM_MAX_LOADED_MODELS", default_value_t = 0)]
    pub max_loaded_models: usize,

    /// Unload a model after this many idle seconds (0 = never). Preloaded models are kept.
    #[arg(long, env = "LLM_MODEL_IDLE_TIMEOUT", default_value_t = 0)]
    pub idle_ttl_secs: u64,

    /// Per-model idle TTL, `NAME=SECS`; repeatable (env: `;`-separated).
    #[arg(
        long = "model-ttl",
        env = "LLM_NODE_MODEL_TTLS",
        value_name = "NAME=SECS",
        value_delimiter = ';'
    )]
    pub model_ttls: Vec<String>,

    /// Pin a model to GPUs, `NAME=0,1`; repeatable (env: `;`-separated).
    #[arg(
        long = "pin",
        env = "LLM_NODE_PINS",
        value_name = "NAME=GPUS",
        value_delimiter = ';'
    )]
    pub pins: Vec<String>,

    /// Requests waiting for a slot per model before new ones get 429.
    #[arg(long, env = "LLM_NODE_MAX_QUEUE", default_value_t = 64)]
    pub max_queue: usize,

    /// First restart delay after a crash, in ms; doubles up to --restart-max-ms, with jitter.
    #[arg(long, env = "LLM_NODE_RESTART_BASE_MS", default_value_t = 500)]
    pub restart_base_ms: u64,

    /// Ceiling of the restart delay, in ms.
    #[arg(long, env = "LLM_NODE_RESTART_MAX_MS", default_value_t = 60_000)]
    pub restart_max_ms: u64,

    /// Crashes within --crash-loop-window-secs that park a model as failed.
    #[arg(long, env = "LLM_NODE_CRASH_LOOP_MAX", default_value_t = 5)]
    pub crash_loop_max: usize,

    /// Window of the crash-loop rule, in seconds.
    #[arg(long, env = "LLM_NODE_CRASH_LOOP_WINDOW_SECS", default_value_t = 600)]
    pub crash_loop_window_secs: u64,

    /// How often a ready worker is pinged, in ms (0 = never).
    #[arg(long, env = "LLM_NODE_LIVENESS_INTERVAL_MS", default_value_t = 5_000)]
    pub liveness_interval_ms: u64,

    /// A worker that does not answer a ping within this many ms is hung: killed and restarted.
    /// Its command reader answers at once, even while a long decode step runs.
    #[arg(long, env = "LLM_NODE_LIVENESS_TIMEOUT_MS", default_value_t = 30_000)]
    pub liveness_timeout_ms: u64,

    /// A worker whose engine stays inside one step (one decode call, one
    /// embeddings input) for longer than this many ms is stuck: killed and
    /// restarted (0 = never kill for a long step). Keep it well above the
    /// longest real step: a full prompt batch of the biggest model on the slowest device.
    #[arg(long, env = "LLM_NODE_LIVENESS_STALL_MS", default_value_t = 300_000)]
    pub liveness_stall_ms: u64,

    /// On SIGTERM or an admin unload/restart, how long in-flight requests may take to finish.
    #[arg(long, env = "LLM_NODE_DRAIN_TIMEOUT_SECS", default_value_t = 30)]
    pub drain_timeout_secs: u64,

    /// Key required by /admin (as `Authorization: Bearer KEY` or `X-Admin-Key`).
    /// Without one, /admin is open: bind to a trusted address.
    #[arg(long, env = "LLM_NODE_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,

    /// Pretend GPUs, `NAME:TOTAL_GIB[:FREE_GIB],...`, for tests and CPU demos.
    /// Logged loudly; workers still run on the CPU.
    #[arg(long, env = "LLM_NODE_SIMULATED_GPUS")]
    pub simulated_gpus: Option<String>,

    /// MiB kept free on every GPU when placing models.
    #[arg(long, env = "LLM_NODE_GPU_RESERVE_MIB", default_value_t = 457)]
    pub gpu_reserve_mib: u64,

    /// Fraction of each GPU's memory kept free on top of the reserve.
    #[arg(long, env = "LLM_NODE_GPU_HEADROOM", default_value_t = 0.05)]
    pub gpu_headroom: f64,
}

/// Which models load at startup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Preload {
    All,
    None,
    Only(Vec<String>),
}

impl Preload {
    pub fn includes(&self, key: &str) -> bool {
        match self {
            Preload::All => true,
            Preload::None => false,
            Preload::Only(keys) => keys.iter().any(|k| k == key),
        }
    }
}

/// The validated lifecycle settings.
#[derive(Debug, Clone)]
pub struct Supervision {
    pub preload: Preload,
    pub max_loaded: usize,
    pub default_ttl: Duration,
    pub ttls: HashMap<String, Duration>,
    pub pins: HashMap<String, Vec<u32>>,
    pub max_queue: usize,
    pub restart: RestartPolicy,
    /// `None` disables liveness checks.
    pub liveness: Option<Liveness>,
    pub drain_timeout: Duration,
    pub admin_key: Option<String>,
    pub placement: PlacementPolicy,
}

/// How ready workers are checked (see `policy::liveness`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    /// Time between two pings.
    pub interval: Duration,
    /// No answer within this: the process is hung.
    pub timeout: Duration,
    /// The engine inside one step for longer than this: stuck. `None` never
    /// judges a long step.
    pub stall: Option<Duration>,
}

/// A lifecycle flag that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("invalid {flag} value {value:?}: {why}")]
pub struct SupervisionError {
    pub flag: &'static str,
    pub value: String,
    pub why: &'static str,
}

fn split_pair<'a>(flag: &'static str, s: &'a str) -> Result<(String, &'a str), SupervisionError> {
    let err = |why| SupervisionError {
        flag,
        value: s.to_string(),
        why,
    };
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| err("expected NAME=VALUE"))?;
    if name.trim().is_empty() {
        return Err(err("empty model name"));
    }
    Ok((name.trim().to_lowercase(), value.trim()))
}

/// Parses a GPU list such as `0,1`.
///
/// # Errors
/// When an entry is not a GPU index.
pub fn parse_gpus(s: &str) -> Result<Vec<u32>, SupervisionError> {
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(|x| {
            x.parse().map_err(|_| SupervisionError {
                flag: "--pin",
                value: s.to_string(),
                why: "GPU indices are non-negative integers",
            })
        })
        .collect()
}

impl SupervisionArgs {
    /// # Errors
    /// [`SupervisionError`] naming the flag that does not parse.
    pub fn resolve(&self) -> Result<Supervision, SupervisionError> {
        let (preload, ttls, pins) = (self.preload(), self.ttls()?, self.pins()?);
        if !(0.0..1.0).contains(&self.gpu_headroom) {
            return Err(SupervisionError {
                flag: "--gpu-headroom",
                value: self.gpu_headroom.to_string(),
                why: "must be in [0, 1)",
            });
        }
        let liveness = (self.liveness_interval_ms > 0).then(|| Liveness {
            interval: Duration::from_millis(self.liveness_interval_ms),
            timeout: Duration::from_millis(self.liveness_timeout_ms.max(1)),
            stall: (self.liveness_stall_ms > 0)
                .then(|| Duration::from_millis(self.liveness_stall_ms)),
        });
        Ok(Supervision {
            preload,
            max_loaded: self.max_loaded_models,
            default_ttl: Duration::from_secs(self.idle_ttl_secs),
            ttls,
            pins,
            max_queue: self.max_queue,
            restart: RestartPolicy {
                base: Duration::from_millis(self.restart_base_ms),
                max: Duration::from_millis(self.restart_max_ms.max(self.restart_base_ms)),
                max_crashes: self.crash_loop_max.max(1),
                window: Duration::from_secs(self.crash_loop_window_secs),
            },
            liveness,
            drain_timeout: Duration::from_secs(self.drain_timeout_secs),
            admin_key: self.admin_key.clone().filter(|k| !k.is_empty()),
            placement: PlacementPolicy {
                reserve_bytes: self.gpu_reserve_mib << 20,
                headroom: self.gpu_headroom,
            },
        })
    }
}

impl SupervisionArgs {
    /// `--preload`: `all` (or empty), `none`, or a list of names.
    fn preload(&self) -> Preload {
        match self.preload.trim() {
            "all" | "" => Preload::All,
            "none" => Preload::None,
            list => Preload::Only(
                list.split(',')
                    .map(|s| s.trim().to_lowercase())
                    .filter(|s| !s.is_empty())
                    .collect(),
            ),
        }
    }

    /// `--model-ttl NAME=SECS`, each.
    fn ttls(&self) -> Result<HashMap<String, Duration>, SupervisionError> {
        let mut ttls = HashMap::new();
        for t in &self.model_ttls {
            let (name, secs) = split_pair("--model-ttl", t)?;
            let secs: u64 = secs.parse().map_err(|_| SupervisionError {
                flag: "--model-ttl",
                value: t.clone(),
                why: "seconds must be an integer",
            })?;
            ttls.insert(name, Duration::from_secs(secs));
        }
        Ok(ttls)
    }

    /// `--pin NAME=GPU[,GPU…]`, each.
    fn pins(&self) -> Result<HashMap<String, Vec<u32>>, SupervisionError> {
        let mut pins = HashMap::new();
        for p in &self.pins {
            let (name, gpus) = split_pair("--pin", p)?;
            pins.insert(name, parse_gpus(gpus)?);
        }
        Ok(pins)
    }
}

impl Supervision {
    /// Idle TTL of `key` (zero = never unload).
    pub fn ttl(&self, key: &str) -> Duration {
        self.ttls.get(key).copied().unwrap_or(self.default_ttl)
    }
}

/// Defaults for unit tests: no liveness pings, fast restarts.
#[cfg(test)]
pub fn test_supervision() -> Supervision {
    use clap::Parser;
    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        s: SupervisionArgs,
    }
    let mut s = T::try_parse_from(["t", "--liveness-interval-ms", "0"])
        .expect("defaults parse")
        .s
        .resolve()
        .expect("defaults resolve");
    s.restart.base = Duration::from_millis(10);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        s: SupervisionArgs,
    }

    fn parse(args: &[&str]) -> Result<Supervision, SupervisionError> {
        let mut argv = vec!["t"];
        argv.extend_from_slice(args);
        T::try_parse_from(argv).unwrap().s.resolve()
    }

    #[test]
    fn defaults_resolve() {
        let s = parse(&[]).unwrap();
        assert_eq!(s.preload, Preload::All);
        assert_eq!(s.max_loaded, 0);
        assert_eq!(s.ttl("x"), Duration::ZERO);
        assert_eq!(s.restart.max_crashes, 5);
        assert_eq!(
            s.liveness,
            Some(Liveness {
                interval: Duration::from_secs(5),
                timeout: Duration::from_secs(30),
                stall: Some(Duration::from_secs(300)),
            })
        );
        let never = parse(&["--liveness-stall-ms", "0"])
            .unwrap()
            .liveness
            .unwrap();
        assert_eq!(never.stall, None, "0 never kills for a long step");
        assert!(s.admin_key.is_none());
    }

    #[test]
    fn lists_pins_and_ttls_parse() {
        let s = parse(&[
            "--preload",
            "A, b",
            "--pin",
            "A=0,1",
            "--model-ttl",
            "b=30",
            "--idle-ttl-secs",
            "5",
            "--liveness-interval-ms",
            "0",
        ])
        .unwrap();
        assert_eq!(s.preload, Preload::Only(vec!["a".into(), "b".into()]));
        assert!(s.preload.includes("a") && !s.preload.includes("c"));
        assert_eq!(s.pins["a"], vec![0, 1]);
        assert_eq!(s.ttl("b"), Duration::from_secs(30));
        assert_eq!(s.ttl("a"), Duration::from_secs(5));
        assert!(s.liveness.is_none());
    }

    #[test]
    fn bad_values_name_their_flag() {
        for (args, flag) in [
            (vec!["--pin", "a=x"], "--pin"),
            (vec!["--pin", "=1"], "--pin"),
            (vec!["--model-ttl", "a"], "--model-ttl"),
            (vec!["--model-ttl", "a=soon"], "--model-ttl"),
            (vec!["--gpu-headroom", "1.5"], "--gpu-headroom"),
        ] {
            let err = parse(&args).unwrap_err();
            assert_eq!(err.flag, flag, "{args:?}");
        }
    }
}
