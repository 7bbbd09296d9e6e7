//! `llm-node`: parse the configuration, set up logging, run until signalled.

use clap::Parser;
use llm_node::Args;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    llm_node::init_logging(args.log_format);
    actix_rt::System::new().block_on(llm_node::run(args))?;
    Ok(())
}
