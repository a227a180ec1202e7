use clap::Parser;

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
            "error: internal failure: {message}{at}\nThis is a bug in nlpkit or a backend; please \
             report it with the command you ran."
        );
    }));
    let cli = nlpkit::cli::Cli::parse();
    if let Err(error) = nlpkit::cli::run(cli) {
        eprintln!("error: {error}");
        std::process::exit(error.exit_code());
    }
}
