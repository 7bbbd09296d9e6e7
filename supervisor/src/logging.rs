//! The node's logging: where lines go, and the level, changeable at run time.
//!
//! [`init`] installs the one global subscriber: a level filter behind a
//! `tracing_subscriber::reload` handle, the ring buffer behind `/api/logs`
//! ([`crate::logbuf`]), stderr (text or JSON, `--log-format`), and with
//! `--log-file DIR/PREFIX` files `DIR/PREFIX.YYYY-MM-DD[-HH]` in the same format,
//! rotated daily or hourly by `tracing-appender`, the oldest deleted beyond
//! `--log-keep`. [`set_level`] swaps the filter (`PUT /admin/log-level`,
//! `llm-node log-level`); [`level`] reads it back.
//!
//! The filter decides for the stderr lines, the files and the ring alike. With
//! OTLP export on ([`crate::otel`]) the export layer sits beside them with its
//! own filter, so the log level does not decide which spans are exported. Worker processes log to their own stderr, which the supervisor
//! re-emits; their lines pass this filter on the way out (see `docs/operations.md`).

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use clap::ValueEnum;
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter};

/// Level used when neither `RUST_LOG` nor a later [`set_level`] says otherwise.
pub const DEFAULT_LEVEL: &str = "info";

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Log file flags.
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Also write logs to files `DIR/PREFIX.<date>` (same format as stderr),
    /// e.g. `/var/log/llm-node/node`; the directory is created.
    #[arg(long, env = "LLM_NODE_LOG_FILE", value_name = "DIR/PREFIX")]
    pub log_file: Option<PathBuf>,

    /// How often a new log file begins.
    #[arg(long, env = "LLM_NODE_LOG_ROTATION", value_enum, default_value_t = LogRotation::Daily)]
    pub log_rotation: LogRotation,

    /// Log files kept; older ones are deleted at rotation. 0 keeps them all.
    #[arg(long, env = "LLM_NODE_LOG_KEEP", default_value_t = 7)]
    pub log_keep: usize,

    /// OTLP trace export (`--otlp-endpoint`).
    #[command(flatten)]
    pub otel: crate::otel::OtelArgs,
}

impl Default for LogArgs {
    fn default() -> Self {
        LogArgs {
            log_file: None,
            log_rotation: LogRotation::Daily,
            log_keep: 7,
            otel: crate::otel::OtelArgs::default(),
        }
    }
}

/// When log files rotate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogRotation {
    Hourly,
    Daily,
    /// One file, never rotated.
    Never,
}

/// Why logging could not be set up or changed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("--log-file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("invalid log level {spec:?}: {reason}")]
    BadLevel { spec: String, reason: String },
    #[error("logging is not set up in this process")]
    NotInstalled,
    #[error(transparent)]
    Otel(#[from] crate::otel::OtelError),
}

/// Swaps the level filter (a `reload::Handle`, whose type depends on where the
/// filter sits: global, or on the log outputs only beside OTLP export).
type Reload = Box<dyn Fn(EnvFilter) -> Result<(), reload::Error> + Send + Sync>;

static FILTER: OnceLock<Reload> = OnceLock::new();
static SPEC: Mutex<String> = Mutex::new(String::new());

/// A filter from `spec` (`RUST_LOG` syntax: `debug,llm_node=trace`).
///
/// # Errors
/// [`LogError::BadLevel`] when `spec` is not a valid filter.
pub fn parse_level(spec: &str) -> Result<EnvFilter, LogError> {
    let bad = |reason: String| LogError::BadLevel {
        spec: spec.to_string(),
        reason,
    };
    if spec.trim().is_empty() {
        return Err(bad("empty".into()));
    }
    EnvFilter::builder()
        .parse(spec.trim())
        .map_err(|e| bad(e.to_string()))
}

/// Installs the global subscriber (see the module doc). Does nothing if one is
/// already installed (tests).
///
/// # Errors
/// [`LogError::File`] when the log directory cannot be created or written.
pub fn init(format: LogFormat, args: &LogArgs) -> Result<(), LogError> {
    let spec = std::env::var("RUST_LOG")
        .ok()
        .filter(|s| parse_level(s).is_ok())
        .unwrap_or_else(|| DEFAULT_LEVEL.to_string());
    let filter = parse_level(&spec).unwrap_or_else(|_| EnvFilter::new(DEFAULT_LEVEL));
    // The ring buffer behind `GET /api/logs` sees what the filter lets through.
    let (installed, reload): (bool, Reload) = match crate::otel::layer(&args.otel)? {
        None => {
            let (filter, handle) = reload::Layer::new(filter);
            let installed = tracing_subscriber::registry()
                .with(filter)
                .with(crate::logbuf::layer())
                .with(outputs(format, args)?)
                .try_init()
                .is_ok();
            (installed, Box::new(move |f| handle.reload(f)))
        }
        // The level filters the log outputs only; the export layer has its own.
        Some(export) => {
            let (filter, handle) = reload::Layer::new(filter);
            let logs = crate::logbuf::layer()
                .and_then(outputs(format, args)?)
                .with_filter(filter);
            let installed = tracing_subscriber::registry()
                .with(export)
                .with(logs)
                .try_init()
                .is_ok();
            (installed, Box::new(move |f| handle.reload(f)))
        }
    };
    if installed {
        let _ = FILTER.set(reload);
        *SPEC.lock().unwrap_or_else(|e| e.into_inner()) = spec;
    }
    if crate::otel::enabled() {
        tracing::info!("exporting trace spans over OTLP/HTTP (docs/operations.md, \"Tracing\")");
    }
    Ok(())
}

/// The log outputs: stderr, and the files of `--log-file`.
fn outputs<S>(
    format: LogFormat,
    args: &LogArgs,
) -> Result<Vec<Box<dyn Layer<S> + Send + Sync>>, LogError>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let stderr = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let mut outputs: Vec<Box<dyn Layer<S> + Send + Sync>> = vec![match format {
        LogFormat::Text => stderr.boxed(),
        LogFormat::Json => stderr.json().boxed(),
    }];
    if let Some(path) = &args.log_file {
        let file = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(appender(path, args)?);
        outputs.push(match format {
            LogFormat::Text => file.boxed(),
            LogFormat::Json => file.json().boxed(),
        });
    }
    Ok(outputs)
}

/// The rotating file writer for `--log-file DIR/PREFIX`.
fn appender(
    path: &std::path::Path,
    args: &LogArgs,
) -> Result<tracing_appender::rolling::RollingFileAppender, LogError> {
    let fail = |reason: String| LogError::File {
        path: path.to_path_buf(),
        reason,
    };
    let prefix = path
        .file_name()
        .and_then(|p| p.to_str())
        .filter(|p| !p.is_empty())
        .ok_or_else(|| fail("needs a file name prefix, e.g. /var/log/llm-node/node".into()))?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
    let rotation = match args.log_rotation {
        LogRotation::Hourly => tracing_appender::rolling::Rotation::HOURLY,
        LogRotation::Daily => tracing_appender::rolling::Rotation::DAILY,
        LogRotation::Never => tracing_appender::rolling::Rotation::NEVER,
    };
    let mut builder = tracing_appender::rolling::Builder::new()
        .rotation(rotation)
        .filename_prefix(prefix);
    if args.log_keep > 0 {
        builder = builder.max_log_files(args.log_keep);
    }
    builder.build(dir).map_err(|e| fail(e.to_string()))
}

/// Replaces the level filter of the running process.
///
/// # Errors
/// [`LogError::BadLevel`] for an invalid `spec`; [`LogError::NotInstalled`]
/// when [`init`] did not install the subscriber (another one was first).
pub fn set_level(spec: &str) -> Result<(), LogError> {
    let filter = parse_level(spec)?;
    let handle = FILTER.get().ok_or(LogError::NotInstalled)?;
    handle(filter).map_err(|_| LogError::NotInstalled)?;
    *SPEC.lock().unwrap_or_else(|e| e.into_inner()) = spec.trim().to_string();
    tracing::info!(level = spec.trim(), "log level changed");
    Ok(())
}

/// The current level filter, as set (`""` when [`init`] did not install it).
pub fn level() -> String {
    SPEC.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_specs_are_checked_before_they_apply() {
        for good in [
            "debug",
            "info,llm_node=trace",
            "warn,access=info",
            " error ",
        ] {
            assert!(parse_level(good).is_ok(), "{good}");
        }
        for bad in ["", "   ", "llm_node=loud", "info,[{"] {
            assert!(
                matches!(parse_level(bad), Err(LogError::BadLevel { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_log_file_needs_a_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let args = LogArgs::default();
        assert!(appender(&dir.path().join("sub/node"), &args).is_ok());
        assert!(dir.path().join("sub").is_dir());
        assert!(matches!(
            appender(std::path::Path::new("/"), &args),
            Err(LogError::File { .. })
        ));
    }
}
