//! `llm-node completions <shell>` and `llm-node man`: shell completions
//! (clap_complete) and the man page (clap_mangen), generated from the very
//! clap definition the binary parses, so they cannot drift from the flags.
//! The release build runs them to fill the packages (`scripts/build-release.sh`).
//!
//! The caller passes the [`clap::Command`] (`Args::command()`): it lives in
//! `config`, which already depends on this module.

use std::io::{self, Write};

use clap_complete::Shell;

/// Writes the completion script for `shell`.
///
/// # Errors
/// Writing to `out` failed.
pub fn completions(mut cmd: clap::Command, shell: Shell, out: &mut dyn Write) -> io::Result<()> {
    let name = cmd.get_name().to_string();
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut buf);
    out.write_all(&buf)
}

/// Writes the man page (section 1, roff).
///
/// # Errors
/// Writing to `out` failed.
pub fn man(cmd: clap::Command, out: &mut dyn Write) -> io::Result<()> {
    clap_mangen::Man::new(cmd).render(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> clap::Command {
        clap::Command::new("llm-node")
            .version("1.2.3")
            .about("OpenAI-compatible inference node")
            .arg(
                clap::Arg::new("port")
                    .long("port")
                    .help("Port to listen on"),
            )
            .subcommand(clap::Command::new("ps").about("List the models"))
    }

    #[test]
    fn every_shell_gets_a_script_that_names_the_flags_and_subcommands() {
        for shell in [
            Shell::Bash,
            Shell::Zsh,
            Shell::Fish,
            Shell::Elvish,
            Shell::PowerShell,
        ] {
            let mut out = Vec::new();
            completions(sample(), shell, &mut out).unwrap();
            let text = String::from_utf8(out).unwrap();
            // fish spells long flags `-l port`, the others `--port`.
            let flag = if shell == Shell::Fish {
                "-l port"
            } else {
                "--port"
            };
            assert!(text.contains(flag), "{shell}: no {flag}");
            assert!(text.contains("ps"), "{shell}: no ps");
        }
    }

    #[test]
    fn the_man_page_is_roff_with_name_flags_and_subcommands() {
        let mut out = Vec::new();
        man(sample(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with(".ie"), "{}", &text[..40]);
        assert!(text.contains(".TH llm-node 1"));
        assert!(text.contains("port"));
        assert!(text.contains("OpenAI\\-compatible inference node"));
    }
}
