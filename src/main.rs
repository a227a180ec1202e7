use clap::Parser;
use nlpkit::distributed;

fn main() {
    nlpkit::backend::pin_default_device();
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        let at = info
            .location()
            .map(|l| format!(" ({}:{})", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!(
            "error: {}internal failure: {message}{at}\nThis is a bug in nlpkit or a backend; \
             please report it with the command you ran.",
            distributed::message_prefix()
        );
        distributed::abort_job_after_panic();
    }));
    let cli = nlpkit::cli::Cli::parse();
    match nlpkit::cli::run(cli) {
        Ok(()) => distributed::exit(0),
        Err(error) => {
            eprintln!("error: {}{error}", distributed::message_prefix());
            // With several ranks this aborts the whole job, which would otherwise wait for us.
            distributed::exit(error.exit_code());
        }
    }
}
