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
    let cli = nlpkit::cli::parse();
    // The whole command runs on one thread of the CPU pool, MPI included: it is set up, used and
    // ended (`exit`) on that thread, as its funneled threading level requires.
    nlpkit::backend::run_with_cpu_defaults(distributed::launcher_local_size(), || {
        let code = match nlpkit::cli::run(cli) {
            Ok(()) => 0,
            Err(error) => {
                eprintln!("error: {}{error}", distributed::message_prefix());
                error.exit_code()
            }
        };
        // With several ranks a failure aborts the whole job, which would otherwise wait for us.
        distributed::exit(code)
    })
}
