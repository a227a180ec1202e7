//! Data-parallel training: one process ("rank") per device, all training one model.
//!
//! Every rank draws the same global batch of each step and trains on its own slice of it; the
//! gradients are averaged across ranks in one flat buffer ([`grads`]), so every rank applies the
//! same optimiser step and the weights stay identical. Rank 0 alone writes logs, metrics and
//! checkpoints. The collectives run over MPI (cargo feature `mpi`, launched by `mpirun` or
//! `srun`); a process started on its own is rank 0 of 1 and every collective is a no-op.
//!
//! A rank that fails ends the whole job: the error path calls `MPI_Abort`, and a rank that waits
//! longer than `distributed.timeout_s` for the others in a collective aborts the job itself, so a
//! dead or hung rank never leaves the rest waiting for ever.

pub mod grads;
#[cfg(feature = "mpi")]
mod mpi_comm;

use crate::error::{Error, Result};
use crate::recipe::{BatchScope, Recipe};
use std::cell::Cell;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// This process's place in the job.
pub struct Ranks {
    pub rank: usize,
    pub world: usize,
    /// The rank among the ranks on this machine (picks the device).
    pub local_rank: usize,
    /// Seconds spent in collectives since the last [`Ranks::take_comm_seconds`].
    comm_seconds: Cell<f64>,
    #[cfg(feature = "mpi")]
    comm: Option<mpi_comm::Comm>,
}

/// A number type the collectives can sum.
#[cfg(feature = "mpi")]
pub trait Element: mpi::datatype::Equivalence + Copy {}
#[cfg(not(feature = "mpi"))]
pub trait Element: Copy {}
impl Element for f32 {}
impl Element for f64 {}

/// Which part of a list of work items a rank takes: items `index`, `index + count`, ...
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// The whole list: a single process.
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    pub fn owns(&self, item: usize) -> bool {
        item % self.count == self.index
    }
}

/// Rank and world size of a job with more than one rank, once MPI is up: for error messages and
/// for deciding whether an error must abort the job.
static JOB: OnceLock<(usize, usize)> = OnceLock::new();

impl Ranks {
    /// A process on its own.
    pub fn single() -> Self {
        Self {
            rank: 0,
            world: 1,
            local_rank: 0,
            comm_seconds: Cell::new(0.0),
            #[cfg(feature = "mpi")]
            comm: None,
        }
    }

    /// Join the job this process was launched into by `mpirun`/`srun`, or stand alone when it
    /// was started directly. `timeout` bounds every wait in a collective.
    pub fn join(timeout: Duration) -> Result<Self> {
        let launched = launcher_world_size();
        #[cfg(feature = "mpi")]
        if launched.is_some() {
            let (comm, ranks) = mpi_comm::Comm::init(timeout)?;
            if let Some(n) = launched.filter(|&n| n > 1 && ranks.world == 1) {
                return Err(Error::Usage(format!(
                    "the launcher started {n} tasks but MPI sees only this one, so they would \
                     train {n} separate models into one folder; with srun pass --mpi=pmix (or \
                     the MPI plug-in your cluster documents)"
                )));
            }
            if ranks.world > 1 {
                let _ = JOB.set((ranks.rank, ranks.world));
            }
            return Ok(Self {
                comm: Some(comm),
                ..ranks
            });
        }
        let _ = timeout;
        match launched {
            Some(n) if n > 1 => Err(Error::Usage(format!(
                "this process is one of {n} started by mpirun/srun, but nlpkit was built without \
                 the `mpi` feature, so each would train its own model into the same folder; \
                 rebuild with `cargo build --release --features mpi` (OpenMPI and libclang \
                 needed: `apt-get install libopenmpi-dev openmpi-bin libclang-dev`)"
            ))),
            _ => Ok(Self::single()),
        }
    }

    pub fn is_main(&self) -> bool {
        self.rank == 0
    }

    pub fn shard(&self) -> Shard {
        Shard {
            index: self.rank,
            count: self.world,
        }
    }

    /// Sum `values` element-wise across ranks, in place; `what` names the step for a timeout.
    pub fn sum<T: Element>(&self, values: &mut [T], what: &str) {
        let started = Instant::now();
        #[cfg(feature = "mpi")]
        if let Some(comm) = &self.comm {
            comm.sum(values, what);
        }
        let _ = (values, what);
        self.count_comm(started);
    }

    fn count_comm(&self, started: Instant) {
        self.comm_seconds
            .set(self.comm_seconds.get() + started.elapsed().as_secs_f64());
    }

    /// Seconds spent in collectives (waiting for the slowest rank included) since the last call.
    pub fn take_comm_seconds(&self) -> f64 {
        self.comm_seconds.replace(0.0)
    }

    /// Every rank's `value`, in rank order.
    pub fn gather_u64(&self, value: u64, what: &str) -> Vec<u64> {
        #[cfg(feature = "mpi")]
        if let Some(comm) = &self.comm {
            return comm.gather_u64(value, what);
        }
        let _ = what;
        vec![value]
    }

    /// Wait, without a time limit, until rank 0 gets here (it may be preparing data for hours);
    /// if rank 0 fails meanwhile, its abort ends this rank too.
    pub fn wait_for_main(&self) {
        #[cfg(feature = "mpi")]
        if let Some(comm) = &self.comm {
            comm.barrier();
        }
    }

    /// Fail unless every rank holds the same `value` (a checksum, a step number).
    pub fn require_same(&self, value: u64, what: &str) -> Result<()> {
        let all = self.gather_u64(value, what);
        match all.iter().position(|v| *v != all[0]) {
            None => Ok(()),
            Some(other) => Err(Error::Run(format!(
                "{what} differs across ranks: rank 0 has {:#x}, rank {other} has {:#x}",
                all[0], all[other]
            ))),
        }
    }
}

/// The number of processes the launcher started on this machine, from the variables mpirun
/// (OpenMPI, MPICH) or srun set; 1 when this process was started directly. Read before MPI is up
/// because the CPU thread pool is sized from it first thing
/// ([`crate::backend::run_with_cpu_defaults`]).
pub fn launcher_local_size() -> usize {
    let var = |name: &str| std::env::var(name).ok()?.parse::<usize>().ok();
    [
        "OMPI_COMM_WORLD_LOCAL_SIZE",
        "MPI_LOCALNRANKS",
        "SLURM_NTASKS_PER_NODE",
    ]
    .iter()
    .find_map(|name| var(name))
    .or_else(|| {
        // srun without --ntasks-per-node: its tasks spread evenly over the step's nodes.
        Some(var("SLURM_STEP_NUM_TASKS")?.div_ceil(var("SLURM_STEP_NUM_NODES")?.max(1)))
    })
    .unwrap_or(1)
    .max(1)
}

/// The number of processes a launcher started, from the variables mpirun (OpenMPI, MPICH) or
/// srun set; `None` when this process was started directly.
pub fn launcher_world_size() -> Option<usize> {
    [
        "OMPI_COMM_WORLD_SIZE",
        "PMI_SIZE",
        "PMIX_SIZE",
        "SLURM_STEP_NUM_TASKS",
    ]
    .iter()
    .find_map(|name| std::env::var(name).ok()?.parse().ok())
    .or_else(|| std::env::var_os("PMIX_RANK").map(|_| 1))
}

/// Sequences per rank and in the global batch, from `train.batch_size` and the batch scope.
pub fn batch_sizes(recipe: &Recipe, world: usize) -> Result<(usize, usize)> {
    let batch = recipe.train.batch_size;
    match recipe.distributed.batch_size_is {
        BatchScope::PerRank => Ok((batch, batch * world)),
        BatchScope::Global if batch.is_multiple_of(world) => Ok((batch / world, batch)),
        BatchScope::Global => Err(Error::Recipe(format!(
            "`train.batch_size` ({batch}) is the global batch (`distributed.batch_size_is: \
             global`) and must split evenly across the {world} ranks; make it a multiple of \
             {world}, or set `distributed.batch_size_is: per_rank`"
        ))),
    }
}

/// The device string of one rank: `template` with `{rank}` and `{local_rank}` filled in.
pub fn expand_device(template: &str, ranks: &Ranks) -> String {
    template
        .replace("{local_rank}", &ranks.local_rank.to_string())
        .replace("{rank}", &ranks.rank.to_string())
}

/// Placeholders in a device template other than `{rank}` and `{local_rank}`.
pub fn unknown_placeholders(template: &str) -> Vec<String> {
    let mut unknown = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let close = rest[open..].find('}').map_or(rest.len(), |c| open + c + 1);
        let name = &rest[open..close];
        if name != "{rank}" && name != "{local_rank}" {
            unknown.push(name.to_string());
        }
        rest = &rest[close..];
    }
    unknown
}

/// `rank R of N: ` inside a job of several ranks, nothing otherwise.
pub fn message_prefix() -> String {
    JOB.get()
        .map(|(rank, world)| format!("rank {rank} of {world}: "))
        .unwrap_or_default()
}

/// End the process after `main`'s work: shut MPI down cleanly when every rank ends here
/// (success, an agreed stop); on a failure of this rank alone, end the whole job (other ranks
/// would otherwise wait for this one in their next collective).
pub fn exit(code: i32, every_rank: bool) -> ! {
    #[cfg(feature = "mpi")]
    {
        mpi_comm::end(code, JOB.get().is_some() && !every_rank)
    }
    #[cfg(not(feature = "mpi"))]
    {
        let _ = every_rank;
        std::process::exit(code)
    }
}

/// Called from the panic hook: a rank that panics takes the job down with it.
pub fn abort_job_after_panic() {
    #[cfg(feature = "mpi")]
    if JOB.get().is_some() {
        mpi_comm::end(101, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_templates_take_rank_placeholders_only() {
        let ranks = Ranks {
            rank: 5,
            local_rank: 1,
            ..Ranks::single()
        };
        assert_eq!(expand_device("cuda:{local_rank}", &ranks), "cuda:1");
        assert_eq!(expand_device("{rank}", &ranks), "5");
        assert!(unknown_placeholders("discrete:{local_rank}").is_empty());
        assert_eq!(unknown_placeholders("cuda:{gpu}"), vec!["{gpu}"]);
        assert_eq!(
            unknown_placeholders("cuda:{local_rank"),
            vec!["{local_rank"]
        );
    }

    #[test]
    fn shards_deal_items_round_robin() {
        let shard = Shard { index: 1, count: 3 };
        let owned: Vec<usize> = (0..7).filter(|&i| shard.owns(i)).collect();
        assert_eq!(owned, vec![1, 4]);
        assert!((0..7).all(|i| Shard::WHOLE.owns(i)));
    }
}
