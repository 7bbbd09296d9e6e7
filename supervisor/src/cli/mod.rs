//! `llm-node ps|load|unload|restart|log-level`: a small client of a running node's
//! admin API (see `api::admin`); `pull|list|rm` ([`store`]) and Ollama's
//! `run|show|stop` ([`chat`]) through its HTTP API too; `completions|man`
//! ([`generate`]) need no node.

pub mod chat;
pub mod generate;
pub mod store;

use std::time::Duration;

use serde_json::Value;

/// Where the node is and how to authenticate.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// Base URL of the node.
    #[arg(long, env = "LLM_NODE_URL", default_value = "http://127.0.0.1:11435")]
    pub url: String,
    /// The node's admin key, if it has one.
    #[arg(long = "key", env = "LLM_NODE_ADMIN_KEY", hide_env_values = true)]
    pub key: Option<String>,
}

/// Admin commands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum AdminCommand {
    /// List the models of a running node with their state.
    Ps {
        #[command(flatten)]
        target: Target,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// Load a model (waits until it is ready).
    Load {
        model: String,
        /// Pin to these GPUs, e.g. `0,1`.
        #[arg(long, value_delimiter = ',')]
        gpus: Option<Vec<u32>>,
        #[command(flatten)]
        target: Target,
    },
    /// Drain and unload a model.
    Unload {
        model: String,
        /// Kill at once instead of draining.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Pull a model into the node's store and serve it (`name:tag`, `hf.co/owner/repo:quant`,
    /// `hf/owner/repo/file.gguf`; see docs/models.md), with progress bars.
    Pull {
        model: String,
        #[command(flatten)]
        target: Target,
    },
    /// List the models in the node's store, and those configured by path.
    List {
        #[command(flatten)]
        target: Target,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop serving a model and remove it from the store (refused while it is in use).
    Rm {
        model: String,
        #[command(flatten)]
        target: Target,
    },
    /// Show the node's log level, or set it (`RUST_LOG` syntax, e.g.
    /// `debug,llm_node=trace`) until the next change or restart.
    LogLevel {
        level: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Chat with a model, as `ollama run`: with PROMPT, stream the answer and
    /// exit; without, one message per line of input until `/bye` or end of input.
    Run {
        model: String,
        /// The one message to answer.
        prompt: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Show a model's details, capabilities and parameters (`/api/show`).
    Show {
        model: String,
        #[command(flatten)]
        target: Target,
    },
    /// Unload a model (as `ollama stop`; it loads again on its next request).
    Stop {
        model: String,
        #[command(flatten)]
        target: Target,
    },
    /// Read the node's models configuration file again and apply it (as
    /// SIGHUP): changed models restart, new ones appear, removed ones unload.
    Reload {
        #[command(flatten)]
        target: Target,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// Drain, stop and start a model again (waits until it is ready).
    Restart {
        model: String,
        /// Kill at once instead of draining.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Print shell completions to stdout (`llm-node completions bash > /usr/share/bash-completion/completions/llm-node`).
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout (`llm-node man > llm-node.1`).
    Man,
}

/// Runs `cmd`; returns the process exit code.
pub fn run(cmd: &AdminCommand) -> i32 {
    if let AdminCommand::Run {
        model,
        prompt,
        target,
    } = cmd
    {
        // Streams to stdout itself.
        return match chat::run(target, model, prompt.as_deref()) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("llm-node: {e}");
                1
            }
        };
    }
    match execute(cmd) {
        Ok(out) => {
            println!("{out}");
            0
        }
        Err(e) => {
            eprintln!("llm-node: {e}");
            1
        }
    }
}

fn execute(cmd: &AdminCommand) -> Result<String, String> {
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(900))
        .build()
        .map_err(|e| e.to_string())?;
    let state = |s: &Value| s["state"].as_str().unwrap_or("?").to_string();
    match cmd {
        AdminCommand::Pull { model, target } => store::pull(target, model),
        AdminCommand::List { target, json } => store::list(target, *json),
        AdminCommand::Rm { model, target } => store::rm(target, model),
        AdminCommand::Show { model, target } => chat::show(target, model),
        AdminCommand::Stop { model, target } => chat::stop(target, model),
        AdminCommand::Run { .. } => Ok(String::new()),
        // They need the whole command line definition, which lives above this
        // module (`config::Args`): `main` answers them through [`generate`].
        AdminCommand::Completions { .. } | AdminCommand::Man => {
            Err("completions and man are generated by the llm-node binary".into())
        }
        AdminCommand::Ps { target, json } => {
            let body = call(&http, target, reqwest::Method::GET, "/admin/models", None)?;
            Ok(if *json {
                body.to_string()
            } else {
                ps_table(&body)
            })
        }
        AdminCommand::Load {
            model,
            gpus,
            target,
        } => {
            let body = gpus.as_ref().map(|g| serde_json::json!({"gpus": g}));
            let s = action(&http, target, model, "load", body)?;
            Ok(format!("{model}: {}", state(&s)))
        }
        AdminCommand::Unload {
            model,
            force,
            target,
        } => {
            let s = action(&http, target, model, &format!("unload?force={force}"), None)?;
            Ok(format!("{model}: {}", state(&s)))
        }
        AdminCommand::LogLevel { level, target } => {
            let (method, body) = match level {
                Some(l) => (reqwest::Method::PUT, Some(serde_json::json!({"level": l}))),
                None => (reqwest::Method::GET, None),
            };
            let s = call(&http, target, method, "/admin/log-level", body)?;
            Ok(s["level"].as_str().unwrap_or_default().to_string())
        }
        AdminCommand::Reload { target, json } => {
            let body = call(&http, target, reqwest::Method::POST, "/admin/reload", None)?;
            Ok(match json {
                true => body.to_string(),
                false => reload_summary(&body),
            })
        }
        AdminCommand::Restart {
            model,
            force,
            target,
        } => {
            let s = action(
                &http,
                target,
                model,
                &format!("restart?force={force}"),
                None,
            )?;
            Ok(format!("{model}: {} (pid {})", state(&s), s["pid"]))
        }
    }
}

/// One admin call; the JSON answer (`null` when there is none).
fn call(
    http: &reqwest::blocking::Client,
    target: &Target,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value, String> {
    let resp = store::request(http, target, method, path, body)?;
    Ok(resp.json().unwrap_or(Value::Null))
}

/// `POST /admin/models/{model}/{what}`.
fn action(
    http: &reqwest::blocking::Client,
    target: &Target,
    model: &str,
    what: &str,
    body: Option<Value>,
) -> Result<Value, String> {
    let path = format!("/admin/models/{model}/{what}");
    call(http, target, reqwest::Method::POST, &path, body)
}

/// `reload` output: one line per kind of change, e.g. `restarted: a, b`.
pub fn reload_summary(body: &Value) -> String {
    let lines: Vec<String> = ["added", "restarted", "updated", "removed", "unchanged"]
        .iter()
        .map(|k| {
            let names: Vec<&str> = body[k]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            match names.is_empty() {
                true => format!("{k}: -"),
                false => format!("{k}: {}", names.join(", ")),
            }
        })
        .collect();
    lines.join("\n")
}

/// `ps` output: one line per model.
pub fn ps_table(body: &Value) -> String {
    let mut out = format!(
        "{:<28} {:<9} {:>8} {:<6} {:<12} {:>9} {:>8} {:>9} {:>6} {:>9}  {}",
        "MODEL",
        "STATE",
        "PID",
        "GPUS",
        "OFFLOAD",
        "UPTIME",
        "RESTARTS",
        "IN-FLIGHT",
        "QUEUED",
        "MEM",
        "LAST EXIT"
    );
    for m in body["models"].as_array().into_iter().flatten() {
        let gpus = m["gpus"]
            .as_array()
            .map(|g| {
                g.iter()
                    .map(|x| x.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "-".into());
        let opt = |v: &Value| match v {
            Value::Null => "-".to_string(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let uptime = m["uptime_secs"]
            .as_u64()
            .map_or("-".into(), |s| format!("{s}s"));
        let mem = m["rss_bytes"]
            .as_u64()
            .map_or("-".into(), |b| format!("{}M", b >> 20));
        // `CUDA 31/31`: the backend and the layers it holds, as the worker reported.
        let o = &m["offload"];
        let offload = match (o["backend"].as_str(), o["layers_offloaded"].as_u64()) {
            (Some(backend), Some(n)) => {
                format!("{backend} {n}/{}", o["layers_total"].as_u64().unwrap_or(0))
            }
            _ => "-".into(),
        };
        out.push_str(&format!(
            "\n{:<28} {:<9} {:>8} {:<6} {:<12} {:>9} {:>8} {:>9} {:>6} {:>9}  {}",
            opt(&m["id"]),
            opt(&m["state"]),
            opt(&m["pid"]),
            gpus,
            offload,
            uptime,
            opt(&m["restarts"]),
            opt(&m["in_flight"]),
            opt(&m["queued"]),
            mem,
            opt(&m["last_exit"]),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ps_table_shows_each_model() {
        let body = serde_json::json!({"models": [
            {"id": "a", "state": "ready", "pid": 42, "gpus": [0, 1], "uptime_secs": 5,
             "restarts": 2, "in_flight": 1, "queued": 0, "rss_bytes": 104857600, "last_exit": "signal 9 (SIGKILL)",
             "offload": {"backend": "CUDA", "layers_offloaded": 31, "layers_total": 31}},
            {"id": "b", "state": "stopped", "pid": null, "gpus": [], "uptime_secs": null,
             "restarts": 0, "in_flight": 0, "queued": 0, "rss_bytes": null, "last_exit": null}
        ]});
        let t = ps_table(&body);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(
            lines[1].starts_with("a ") && lines[1].contains("ready") && lines[1].contains("0,1")
        );
        assert!(lines[1].contains("100M") && lines[1].contains("SIGKILL"));
        assert!(
            lines[0].contains("OFFLOAD") && lines[1].contains("CUDA 31/31"),
            "{t}"
        );
        assert!(lines[2].contains("stopped") && lines[2].contains(" - "));
    }
}
