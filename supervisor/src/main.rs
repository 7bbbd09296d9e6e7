//! `llm-node`: parse the configuration, set up logging, run until signalled;
//! or, with a subcommand (`ps`, `load`, ...), talk to a running node.

use clap::Parser;
use llm_node::Args;

fn main() -> anyhow::Result<()> {
    // Before clap parses and before any thread exists: the file fills unset variables.
    llm_node::router::config::apply_config_file(&std::env::args().collect::<Vec<_>>())?;
    let args = Args::parse();
    if let Some(cmd) = &args.command {
        std::process::exit(llm_node::cli::run(cmd));
    }
    llm_node::logging::init(args.log_format, &args.logs)?;
    actix_rt::System::new().block_on(llm_node::run(args))?;
    Ok(())
}
