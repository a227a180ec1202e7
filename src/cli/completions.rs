use crate::error::Result;
use clap_complete::Shell;

/// Print a shell completion script (e.g. `nlpkit completions bash > /etc/bash_completion.d/nlpkit`).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The shell to complete for.
    shell: Shell,
}

pub fn run(args: Args) -> Result<()> {
    let mut command = super::command();
    clap_complete::generate(args.shell, &mut command, "nlpkit", &mut std::io::stdout());
    Ok(())
}
