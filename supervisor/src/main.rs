//! `llm-node`: parse the configuration, set up logging, run until signalled;
//! or, with a subcommand (`ps`, `load`, ...), talk to a running node.

use clap::Parser;
use llm_node::Args;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(cmd) = &args.command {
        std::process::exit(llm_node::cli::run(cmd));
    }
    llm_node::init_logging(args.log_format);
    actix_rt::System::new().block_on(llm_node::run(args))?;
    Ok(())
}
