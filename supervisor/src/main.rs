//! `llm-node`: parse the configuration, set up logging, run until signalled;
//! or, with a subcommand (`ps`, `load`, ...), talk to a running node; or print
//! shell completions or the man page (`completions`, `man`).

use clap::{CommandFactory, Parser};
use llm_node::cli::{generate, AdminCommand};
use llm_node::Args;

fn main() -> anyhow::Result<()> {
    // Before clap parses and before any thread exists: the file fills unset variables.
    llm_node::router::config::apply_config_file(&std::env::args().collect::<Vec<_>>())?;
    let args = Args::parse();
    match &args.command {
        Some(AdminCommand::Completions { shell }) => {
            return Ok(generate::completions(
                Args::command(),
                *shell,
                &mut std::io::stdout(),
            )?)
        }
        Some(AdminCommand::Man) => {
            return Ok(generate::man(Args::command(), &mut std::io::stdout())?)
        }
        Some(cmd) => std::process::exit(llm_node::cli::run(cmd)),
        None => {}
    }
    llm_node::logging::init(args.log_format, &args.logs)?;
    actix_rt::System::new().block_on(llm_node::run(args))?;
    Ok(())
}
