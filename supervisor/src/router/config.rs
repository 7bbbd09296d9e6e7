//! Router membership settings: flags, their `LLM_*` environment variables
//! (the C++ node's names where it had one, contract §9.1) and the optional
//! JSON configuration file.
//!
//! Precedence, lowest first: built-in defaults, the JSON file
//! (`--config`/`LLM_NODE_CONFIG`), the environment, the command line. The
//! file is applied by [`apply_config_file`] before clap parses, by filling in
//! environment variables that are not already set.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How the node joins an llm-router cluster. Without `--router-url` the node
/// runs standalone and none of the other settings matter.
#[derive(Debug, Clone, clap::Args)]
pub struct RouterArgs {
    /// Base URL of the llm-router to join (e.g. `http://10.0.0.5:8080`); unset means standalone.
    #[arg(long, env = "LLM_ROUTER_URL", value_name = "URL")]
    pub router_url: Option<String>,

    /// IP address the router should call this node on (an IP literal); default: the local
    /// address of the route to the router, or the bind address when it is a specific one.
    #[arg(long, env = "LLM_NODE_IP", value_name = "IP")]
    pub node_ip: Option<IpAddr>,

    /// Seconds between heartbeats to the router (fractions allowed); also the longest wait
    /// between registration attempts.
    #[arg(long, env = "LLM_NODE_HEARTBEAT_SECS", default_value_t = 10.0, value_parser = parse_secs)]
    pub heartbeat_secs: f64,

    /// Name the node registers under; with the listen port it identifies the node to the
    /// router across restarts. Default: the host name.
    #[arg(long, env = "LLM_NODE_MACHINE_NAME", value_name = "NAME")]
    pub machine_name: Option<String>,

    /// API key (`sk_…`) for reading the router's `/v1/models` during model sync.
    #[arg(
        long,
        env = "LLM_NODE_ROUTER_API_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub router_api_key: Option<String>,

    /// Seconds between model syncs with the router's `/v1/models`; 0 disables sync.
    #[arg(long, env = "LLM_NODE_MODEL_SYNC_SECS", default_value_t = 300.0, value_parser = parse_secs)]
    pub model_sync_secs: f64,

    /// JSON configuration file with any of the keys `router_url`, `models_dir`, `node_port`,
    /// `heartbeat_interval_sec`, `bind_address`, `node_ip`; the environment and flags win.
    #[arg(long, env = "LLM_NODE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl RouterArgs {
    /// Whether the node is a router member.
    pub fn enabled(&self) -> bool {
        self.router_url
            .as_deref()
            .is_some_and(|u| !u.trim().is_empty())
    }

    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_secs_f64(self.heartbeat_secs)
    }

    /// `None` when sync is disabled.
    pub fn model_sync_interval(&self) -> Option<Duration> {
        (self.model_sync_secs > 0.0).then(|| Duration::from_secs_f64(self.model_sync_secs))
    }
}

/// Parses a non-negative, finite number of seconds of at most a day.
fn parse_secs(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("expected seconds, got {s:?}"))?;
    if !v.is_finite() || !(0.0..=86_400.0).contains(&v) {
        return Err(format!("seconds out of range (0..=86400): {s:?}"));
    }
    Ok(v)
}

/// Config-file keys and the environment variable each one fills in.
const FILE_KEYS: [(&str, &str); 6] = [
    ("router_url", "LLM_ROUTER_URL"),
    ("models_dir", "LLM_NODE_MODELS_DIR"),
    ("node_port", "LLM_NODE_PORT"),
    ("heartbeat_interval_sec", "LLM_NODE_HEARTBEAT_SECS"),
    ("bind_address", "LLM_NODE_BIND_ADDRESS"),
    ("node_ip", "LLM_NODE_IP"),
];

/// A configuration file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("cannot read config file {path:?}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path:?} is not a JSON object: {message}")]
    Parse { path: PathBuf, message: String },
}

/// The environment assignments a config file asks for: `(variable, value)` for every known
/// key, strings as they are, numbers as written. Unknown keys and `null`s are ignored.
///
/// # Errors
/// [`ConfigFileError::Parse`] when `text` is not a JSON object.
pub fn config_file_env(
    path: &std::path::Path,
    text: &str,
) -> Result<Vec<(&'static str, String)>, ConfigFileError> {
    let parse = |message: String| ConfigFileError::Parse {
        path: path.to_path_buf(),
        message,
    };
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| parse(e.to_string()))?;
    let object = value
        .as_object()
        .ok_or_else(|| parse("top level is not an object".into()))?;
    Ok(FILE_KEYS
        .iter()
        .filter_map(|(key, var)| {
            let value = match object.get(*key)? {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                _ => return None,
            };
            Some((*var, value))
        })
        .collect())
}

/// Finds the config file (`--config FILE`/`--config=FILE` among `argv`, else
/// `LLM_NODE_CONFIG`) and sets the environment variables it implies that are
/// not already set. Call it first thing in `main`, before clap parses and
/// before any thread starts. No file configured: does nothing.
///
/// # Errors
/// [`ConfigFileError`] when the file cannot be read or parsed.
pub fn apply_config_file(argv: &[String]) -> Result<(), ConfigFileError> {
    let from_args = argv.iter().enumerate().find_map(|(i, a)| {
        if a == "--config" {
            argv.get(i + 1).cloned()
        } else {
            a.strip_prefix("--config=").map(str::to_string)
        }
    });
    let Some(path) = from_args.or_else(|| std::env::var("LLM_NODE_CONFIG").ok()) else {
        return Ok(());
    };
    let path = PathBuf::from(path);
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigFileError::Read {
        path: path.clone(),
        source,
    })?;
    for (var, value) in config_file_env(&path, &text)? {
        if std::env::var_os(var).is_none() {
            std::env::set_var(var, value);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        router: RouterArgs,
    }

    #[test]
    fn defaults_are_standalone_with_ten_second_heartbeats() {
        let w = Wrap::try_parse_from(["x"]).unwrap();
        assert!(!w.router.enabled());
        assert_eq!(w.router.heartbeat_interval(), Duration::from_secs(10));
        assert_eq!(
            w.router.model_sync_interval(),
            Some(Duration::from_secs(300))
        );
    }

    #[test]
    fn flags_parse_fractions_and_reject_nonsense() {
        let w = Wrap::try_parse_from([
            "x",
            "--router-url=http://127.0.0.1:8080",
            "--heartbeat-secs=0.2",
            "--model-sync-secs=0",
            "--node-ip=10.1.2.3",
        ])
        .unwrap();
        assert!(w.router.enabled());
        assert_eq!(w.router.heartbeat_interval(), Duration::from_millis(200));
        assert_eq!(w.router.model_sync_interval(), None);
        assert_eq!(w.router.node_ip, Some("10.1.2.3".parse().unwrap()));
        for bad in [
            "--heartbeat-secs=-1",
            "--heartbeat-secs=nan",
            "--node-ip=localhost",
        ] {
            assert!(Wrap::try_parse_from(["x", bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn config_file_keys_map_to_the_node_environment() {
        let text = r#"{"router_url":"http://r:8080","node_port":11440,"heartbeat_interval_sec":5,
                       "require_gpu":true,"models_dir":null,"other":"x"}"#;
        let env = config_file_env(std::path::Path::new("c.json"), text).unwrap();
        assert_eq!(
            env,
            [
                ("LLM_ROUTER_URL", "http://r:8080".to_string()),
                ("LLM_NODE_PORT", "11440".to_string()),
                ("LLM_NODE_HEARTBEAT_SECS", "5".to_string()),
            ]
        );
        assert!(config_file_env(std::path::Path::new("c.json"), "[1]").is_err());
        assert!(config_file_env(std::path::Path::new("c.json"), "{").is_err());
    }
}
