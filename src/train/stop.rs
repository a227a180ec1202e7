//! Graceful stop: SIGINT (Ctrl-C), SIGTERM and SIGUSR1 (a cluster's pre-emption warning, e.g.
//! SLURM's `--signal=USR1@90`) ask the training loop to finish the step it is in, write a
//! checkpoint and exit with 128 + the signal's number, as a shell reports a signalled command.
//! A second SIGINT ends the process at once (exit 130), for a user who will not wait.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

#[cfg(unix)]
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};

/// The stop signals, listened to from [`StopSignals::listen`] until the process ends (the
/// handlers stay: removing them would leave the signals ignored rather than fatal).
pub struct StopSignals {
    /// Set by the first stop signal; a second SIGINT then exits.
    requested: Arc<AtomicBool>,
    /// The number of the last stop signal received.
    signal: Arc<AtomicUsize>,
}

impl StopSignals {
    /// Start listening. Where the handlers cannot be installed (not a Unix system), the run
    /// simply cannot be stopped gracefully.
    pub fn listen() -> Self {
        let stop = Self {
            requested: Arc::new(AtomicBool::new(false)),
            signal: Arc::new(AtomicUsize::new(0)),
        };
        #[cfg(unix)]
        {
            use signal_hook::flag;
            // The shutdown is registered first so that it sees the flag as the signal before
            // this one left it: unset for the first SIGINT, set for the second.
            let _ =
                flag::register_conditional_shutdown(SIGINT, 128 + SIGINT, stop.requested.clone());
            for signal in [SIGINT, SIGTERM, SIGUSR1] {
                let _ = flag::register_usize(signal, stop.signal.clone(), signal as usize);
                let _ = flag::register(signal, stop.requested.clone());
            }
        }
        stop
    }

    /// The signal that asked for a stop, if one did.
    pub fn requested(&self) -> Option<i32> {
        self.requested
            .load(Ordering::SeqCst)
            .then(|| self.signal.load(Ordering::SeqCst) as i32)
    }
}

/// The usual name of a stop signal, for messages.
pub fn signal_name(signal: i32) -> String {
    match signal {
        #[cfg(unix)]
        SIGINT => "SIGINT".into(),
        #[cfg(unix)]
        SIGTERM => "SIGTERM".into(),
        #[cfg(unix)]
        SIGUSR1 => "SIGUSR1".into(),
        other => format!("signal {other}"),
    }
}

/// The default signal for a stop agreed with other ranks when this rank received none.
pub fn default_signal() -> i32 {
    #[cfg(unix)]
    {
        SIGTERM
    }
    #[cfg(not(unix))]
    {
        15
    }
}
