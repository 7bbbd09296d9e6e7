//! The node's recent log entries, for `GET /api/logs?tail=N` (contract §3.5).
//!
//! [`LogBuffer`] is a `tracing` layer that keeps the last [`CAPACITY`] events
//! in a ring, each already in the router's `LogEntry` shape
//! (`common/src/log.rs`: `timestamp`, `level`, `target`, `message`, `fields`,
//! `file`, `line`). [`crate::init_logging`] installs it next to the writer, and
//! [`global`] is what the handler reads; a process that never installed it
//! (some tests) simply has no entries.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Mutex, OnceLock};

use serde::Serialize;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// Entries kept; the router never asks for more than 1000.
pub const CAPACITY: usize = 1000;

/// One log entry, as the router's `LogEntry`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogEntry {
    pub timestamp: String,
    pub level: String,
    pub target: String,
    pub message: String,
    pub fields: serde_json::Map<String, serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
}

/// A ring of the most recent entries; also the layer that fills it.
#[derive(Debug)]
pub struct LogBuffer {
    entries: Mutex<VecDeque<LogEntry>>,
    capacity: usize,
}

impl LogBuffer {
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(VecDeque::with_capacity(capacity.min(CAPACITY))),
            capacity: capacity.max(1),
        }
    }

    pub fn push(&self, entry: LogEntry) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() == self.capacity {
            entries.pop_front();
        }
        entries.push_back(entry);
    }

    /// The last `n` entries, oldest first.
    pub fn tail(&self, n: usize) -> Vec<LogEntry> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let skip = entries.len().saturating_sub(n);
        entries.iter().skip(skip).cloned().collect()
    }
}

static GLOBAL: OnceLock<&'static LogBuffer> = OnceLock::new();

/// The process-wide buffer [`layer`] feeds, if one was installed.
pub fn global() -> Option<&'static LogBuffer> {
    GLOBAL.get().copied()
}

/// The layer feeding the process-wide buffer (created on first call).
pub fn layer() -> BufferLayer {
    let buffer = *GLOBAL.get_or_init(|| Box::leak(Box::new(LogBuffer::new(CAPACITY))));
    BufferLayer(buffer)
}

/// `tracing` layer writing into a [`LogBuffer`].
pub struct BufferLayer(&'static LogBuffer);

impl<S: Subscriber> Layer<S> for BufferLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut visitor = FieldVisitor::default();
        event.record(&mut visitor);
        self.0.push(LogEntry {
            timestamp: now_rfc3339(),
            level: meta.level().to_string(),
            target: meta.target().to_string(),
            message: visitor.message,
            fields: visitor.fields,
            file: meta.file().map(str::to_string),
            line: meta.line(),
        });
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Collects `message` apart from the other fields.
#[derive(Default)]
struct FieldVisitor {
    message: String,
    fields: serde_json::Map<String, serde_json::Value>,
}

impl FieldVisitor {
    fn put(&mut self, field: &Field, value: serde_json::Value) {
        if field.name() == "message" {
            self.message = match value {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
        } else {
            self.fields.insert(field.name().to_string(), value);
        }
    }
}

impl Visit for FieldVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
}

/// `?tail=N` (or `?limit=N`): clamp to 1..=1000, default 200, as the router does.
pub fn tail_count(requested: Option<&str>) -> usize {
    requested
        .and_then(|s| s.trim().parse::<i64>().ok())
        .map_or(200, |n| n.clamp(1, CAPACITY as i64) as usize)
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[test]
    fn ring_keeps_the_newest_entries_in_order() {
        let buf = LogBuffer::new(3);
        for i in 0..5 {
            buf.push(LogEntry {
                timestamp: String::new(),
                level: "INFO".into(),
                target: "t".into(),
                message: i.to_string(),
                fields: Default::default(),
                file: None,
                line: None,
            });
        }
        let tail: Vec<_> = buf.tail(10).into_iter().map(|e| e.message).collect();
        assert_eq!(tail, ["2", "3", "4"]);
        assert_eq!(buf.tail(1)[0].message, "4");
    }

    #[test]
    fn events_become_router_log_entries() {
        let buf: &'static LogBuffer = Box::leak(Box::new(LogBuffer::new(10)));
        let subscriber = tracing_subscriber::registry().with(BufferLayer(buf));
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(model = "m", pid = 7u64, "worker {} said hi", 1);
        });
        let entry = &buf.tail(1)[0];
        assert_eq!(entry.level, "WARN");
        assert_eq!(entry.message, "worker 1 said hi");
        assert_eq!(entry.fields["model"], "m");
        assert_eq!(entry.fields["pid"], 7);
        assert!(entry.target.starts_with("llm_node"));
        assert!(entry.timestamp.ends_with('Z'), "{}", entry.timestamp);
        let json = serde_json::to_value(entry).unwrap();
        for key in [
            "timestamp",
            "level",
            "target",
            "message",
            "fields",
            "file",
            "line",
        ] {
            assert!(json.get(key).is_some(), "{key} in {json}");
        }
    }

    #[test]
    fn tail_is_clamped_like_the_router() {
        assert_eq!(tail_count(None), 200);
        assert_eq!(tail_count(Some("5")), 5);
        assert_eq!(tail_count(Some("0")), 1);
        assert_eq!(tail_count(Some("99999")), 1000);
        assert_eq!(tail_count(Some("x")), 200);
    }
}
