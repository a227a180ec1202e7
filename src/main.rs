use nlpkit::distributed;

fn main() {
    nlpkit::backend::pin_default_device();
    // Warnings of Burn, tokenizers and ours on stderr; RUST_LOG=info (or debug, off) changes it.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
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
    let cli = nlpkit::cli::parse();
    // The whole command runs on one thread of the CPU pool, MPI included: it is set up, used and
    // ended (`exit`) on that thread, as its funneled threading level requires.
    nlpkit::backend::run_with_cpu_defaults(distributed::launcher_local_size(), || {
        let (code, every_rank) = match nlpkit::cli::run(cli) {
            Ok(()) => (0, true),
            Err(error) => {
                let kind = if error.ends_every_rank() {
                    "stopped"
                } else {
                    "error"
                };
                eprintln!("{kind}: {}{error}", distributed::message_prefix());
                (error.exit_code(), error.ends_every_rank())
            }
        };
        // With several ranks a failure of one aborts the whole job, which would otherwise wait
        // for it.
        distributed::exit(code, every_rank)
    })
}
