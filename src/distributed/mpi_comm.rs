//! The MPI side of [`super::Ranks`]: set-up, collectives with a time limit, and the job's end.
//!
//! Collectives are started non-blocking and polled, so a rank whose partners died or hang
//! notices after `timeout` and aborts the job with a message instead of waiting for ever.

use super::Ranks;
use crate::error::{Error, Result};
use mpi::Threading;
use mpi::collective::SystemOperation;
use mpi::datatype::Equivalence;
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::*;
use std::time::{Duration, Instant};

/// MPI counts are C ints: larger buffers go in pieces of this many elements.
const MAX_COUNT: usize = 1 << 28;

pub struct Comm {
    world: SimpleCommunicator,
    timeout: Duration,
}

impl Comm {
    pub fn init(timeout: Duration) -> Result<(Self, Ranks)> {
        // Only the main thread calls MPI (thread pools do the tensor work).
        let (universe, _) =
            mpi::initialize_with_threading(Threading::Funneled).ok_or_else(|| {
                Error::Run("MPI could not be initialised (or was initialised twice)".into())
            })?;
        // Dropping the universe would finalise MPI, also on an error path where the other ranks
        // still wait for this one; `end` finalises or aborts explicitly instead.
        std::mem::forget(universe);
        let world = SimpleCommunicator::world();
        let node = world.split_shared(world.rank());
        let ranks = Ranks {
            rank: world.rank() as usize,
            world: world.size() as usize,
            local_rank: node.rank() as usize,
            comm_seconds: Default::default(),
            comm: None,
        };
        Ok((Self { world, timeout }, ranks))
    }

    /// Sum `values` across ranks, in place.
    pub fn sum<T: Equivalence + Copy>(&self, values: &mut [T], what: &str) {
        for chunk in values.chunks_mut(MAX_COUNT) {
            let send = chunk.to_vec();
            mpi::request::scope(|scope| {
                let request = self.world.immediate_all_reduce_into(
                    scope,
                    &send[..],
                    chunk,
                    SystemOperation::sum(),
                );
                self.wait(request, what);
            });
        }
    }

    pub fn gather_u64(&self, value: u64, what: &str) -> Vec<u64> {
        let mut all = vec![0u64; self.world.size() as usize];
        mpi::request::scope(|scope| {
            let request = self
                .world
                .immediate_all_gather_into(scope, &value, &mut all[..]);
            self.wait(request, what);
        });
        all
    }

    pub fn barrier(&self) {
        self.world.barrier();
    }

    /// Poll `request` until it completes; past the time limit, abort the job.
    fn wait<'a, D: ?Sized, S: mpi::request::Scope<'a>>(
        &self,
        mut request: mpi::request::Request<'a, D, S>,
        what: &str,
    ) {
        let started = Instant::now();
        let mut polls = 0u32;
        loop {
            match request.test() {
                Ok(_) => return,
                Err(pending) => request = pending,
            }
            if started.elapsed() > self.timeout {
                eprintln!(
                    "error: {}waited {:.0} s for the other ranks in {what}: one of them died or \
                     hangs (out of memory, a crash, a lost node); aborting the job. If a rank is \
                     only slow (writing a large checkpoint), raise `distributed.timeout_s`.",
                    super::message_prefix(),
                    self.timeout.as_secs_f64()
                );
                end(3, true);
            }
            // Spin briefly for low latency, then back off so a long wait costs no CPU.
            polls += 1;
            if polls < 10_000 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }
}

/// Finalise MPI, or abort the whole job when `abort_job` and the code is a failure.
pub fn end(code: i32, abort_job: bool) -> ! {
    if !mpi::environment::is_initialized() || mpi::environment::is_finalized() {
        std::process::exit(code);
    }
    if code != 0 && abort_job {
        SimpleCommunicator::world().abort(code);
    }
    // SAFETY: MPI is initialised and not finalised, and no request is pending on this path.
    unsafe {
        mpi::ffi::MPI_Finalize();
    }
    std::process::exit(code)
}
