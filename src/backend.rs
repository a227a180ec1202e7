//! The one place that maps the recipe's `backend` section to a Burn device.
//!
//! Tensors carry no backend type in Burn 0.22: the device picks it at run time, so the binary is
//! compiled once and the recipe chooses.

use crate::error::{Error, Result};
use crate::recipe::{BackendKind, BackendSection};
use burn::tensor::Device;

/// The backends this binary was built with.
pub fn compiled_backends() -> Vec<&'static str> {
    let mut names = Vec::new();
    if cfg!(feature = "flex") {
        names.push("flex");
    }
    if cfg!(feature = "ndarray") {
        names.push("ndarray");
    }
    if cfg!(feature = "wgpu") {
        names.push("wgpu");
    }
    if cfg!(feature = "tch") {
        names.push("tch");
    }
    if cfg!(feature = "cuda") {
        names.push("cuda");
    }
    names
}

/// The kernels the flex backend's matmul runs on this CPU, chosen at run time the way its `gemm`
/// crate chooses them (AVX-512 kernels are compiled in through Burn's `x86-v4` feature): the one
/// figure that most decides CPU training speed, worth a line when a run starts.
pub fn matmul_kernels() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            "AVX-512 (x86-64-v4)"
        } else if std::arch::is_x86_feature_detected!("fma") {
            "AVX2+FMA (x86-64-v3)"
        } else {
            "scalar (no FMA on this CPU)"
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("neon") {
            "NEON"
        } else {
            "scalar"
        }
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        "scalar"
    }
}

/// What flex's matrix products run on here: the system BLAS when one was found (`NLPKIT_BLAS`,
/// `src/models/blas.rs`) for those of our fused kernels (linear layers, attention), `gemm`'s
/// kernels for this CPU for Burn's own.
pub fn flex_matmul() -> String {
    #[cfg(feature = "flex")]
    if let Some(blas) = crate::models::blas::system_blas() {
        return format!("{} (gemm {} for the rest)", blas.name, matmul_kernels());
    }
    format!("gemm {}", matmul_kernels())
}

/// The backend as a run's first lines state it: the recipe's choice, and for flex the matmul
/// kernels this CPU gets, so two machines' speeds can be told apart.
pub fn describe(section: &BackendSection) -> String {
    let chosen = format!("{} ({})", section.kind.name(), section.device);
    match section.kind {
        BackendKind::Flex => format!("{chosen}, matmul on {}", flex_matmul()),
        _ => chosen,
    }
}

/// What `nlpkit --version` prints after the name: the version, the git commit it was built
/// from, the compiled backends and the matmul kernels of this CPU.
pub fn version_text() -> String {
    format!(
        "{} (commit {})\nbackends: {}\nflex matmul on this CPU: {}",
        env!("CARGO_PKG_VERSION"),
        env!("NLPKIT_GIT_COMMIT"),
        compiled_backends().join(", "),
        flex_matmul()
    )
}

/// Make sure nothing inside Burn silently starts a GPU backend: `Device::default()` (used, for
/// one, when an optimiser state is loaded) honours `BURN_DEVICE`, so point it at a CPU backend
/// unless the user chose otherwise. Called once at start-up, before any thread exists.
pub fn pin_default_device() {
    if std::env::var_os("BURN_DEVICE").is_none() {
        let cpu = if cfg!(feature = "flex") {
            Some("flex")
        } else if cfg!(feature = "ndarray") {
            Some("ndarray")
        } else {
            None
        };
        if let Some(name) = cpu {
            // SAFETY: called at the start of main, before any other thread is spawned.
            unsafe { std::env::set_var("BURN_DEVICE", name) };
        }
    }
}

/// Run `work` (a whole command) the way the CPU backends run fastest, without tuning by the user:
/// freed buffers kept in the process, the thread pool sized for the ranks sharing this machine
/// (`processes_here`), and `work` on one of the pool's threads. Call it first thing in `main`,
/// before any thread starts.
pub fn run_with_cpu_defaults<R: Send>(processes_here: usize, work: impl FnOnce() -> R + Send) -> R {
    keep_freed_memory();
    size_cpu_pool(processes_here);
    on_cpu_pool(work)
}

/// Size the global rayon pool that the CPU backends (flex, ndarray) split their operations on:
/// the machine's cores shared among the `processes_here` ranks on it, unless `RAYON_NUM_THREADS`
/// is set.
fn size_cpu_pool(processes_here: usize) {
    if std::env::var_os("RAYON_NUM_THREADS").is_some() {
        return;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Fails only when the pool was already built; then it keeps its size.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads((cores / processes_here.max(1)).max(1))
        .build_global();
}

/// Run `work` on a thread of the CPU pool rather than beside it. From outside the pool, every
/// parallel operation wakes the pool's threads and parks the caller, and the serial work between
/// operations competes for the cores with workers still spinning for more; from inside, the
/// caller takes part in its own operations. Measured on 2 cores (flex, the shakespeare_char
/// recipe): 12% less time per step (bench/README.md).
fn on_cpu_pool<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| work())
}

/// Keep freed tensor buffers in the process instead of handing them back to the kernel at once,
/// so that each step's activations and gradients reuse the last step's pages rather than
/// faulting in and zeroing fresh ones.
/// - One arena: glibc gives each thread that allocates an arena of its own (mmap'd 64 MiB
///   heaps), and a buffer freed by another thread goes back to its owner's, so the pool's threads
///   kept mapping fresh memory. One arena cut the seq2seq Transformer step's minor faults from
///   2.0M to 0.25M and its time by 30% (2 cores, AVX2).
/// - Blocks up to 256 MiB come from the heap, not from a mapping of their own (glibc's default
///   threshold adapts up to 32 MiB at most), and the heap is trimmed only past 1 GiB.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before other threads start.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

/// The device (without autodiff) the recipe asks for.
pub fn device_for(section: &BackendSection) -> Result<Device> {
    let not_compiled = |feature: &str| {
        Error::Recipe(format!(
            "`backend.type: {}` is not compiled into this binary (it has: {}); rebuild with \
             `cargo build --release --features {feature}`",
            section.kind.name(),
            compiled_backends().join(", ")
        ))
    };
    let device = section.device.trim();
    let bad_device = |expected: &str| {
        Error::Recipe(format!(
            "`backend.device: {device}` is not a {} device; expected {expected}",
            section.kind.name()
        ))
    };
    match section.kind {
        BackendKind::Flex => {
            require_cpu(device).map_err(|_| bad_device("`default` or `cpu`"))?;
            #[cfg(feature = "flex")]
            {
                crate::models::blas::check_requested().map_err(Error::Usage)?;
                return Ok(Device::flex());
            }
            #[allow(unreachable_code)]
            Err(not_compiled("flex"))
        }
        BackendKind::Ndarray => {
            require_cpu(device).map_err(|_| bad_device("`default` or `cpu`"))?;
            // Deprecated upstream in favour of flex, but still selectable as the brief requires.
            #[cfg(feature = "ndarray")]
            #[allow(deprecated)]
            return Ok(Device::ndarray());
            #[allow(unreachable_code)]
            Err(not_compiled("ndarray"))
        }
        BackendKind::Wgpu => {
            #[cfg(feature = "wgpu")]
            {
                use burn::tensor::DeviceKind;
                let kind = match device.split_once(':') {
                    _ if device == "default" => DeviceKind::DefaultDevice,
                    _ if device == "cpu" => DeviceKind::Cpu,
                    Some((kind, index)) => {
                        let index: usize = index.parse().map_err(|_| {
                            bad_device(
                                "`default`, `cpu`, `discrete:N`, `integrated:N` or `virtual:N`",
                            )
                        })?;
                        match kind {
                            "discrete" => DeviceKind::DiscreteGpu(index),
                            "integrated" => DeviceKind::IntegratedGpu(index),
                            "virtual" => DeviceKind::VirtualGpu(index),
                            _ => {
                                return Err(bad_device(
                                    "`default`, `cpu`, `discrete:N`, `integrated:N` or `virtual:N`",
                                ));
                            }
                        }
                    }
                    None => {
                        return Err(bad_device(
                            "`default`, `cpu`, `discrete:N`, `integrated:N` or `virtual:N`",
                        ));
                    }
                };
                let device = Device::wgpu(kind);
                probe_wgpu(&device)?;
                return Ok(device);
            }
            #[allow(unreachable_code)]
            Err(not_compiled("wgpu"))
        }
        BackendKind::Cuda => {
            let index = match device {
                "default" => 0,
                d => d
                    .trim_start_matches("cuda:")
                    .parse::<usize>()
                    .map_err(|_| bad_device("`default`, `N` or `cuda:N`"))?,
            };
            #[cfg(feature = "cuda")]
            return Ok(Device::cuda(index));
            #[allow(unreachable_code)]
            {
                let _ = index;
                Err(not_compiled("cuda"))
            }
        }
        BackendKind::Tch => {
            // Deprecated upstream like ndarray, but a decided, measured option here.
            #[cfg(feature = "tch")]
            #[allow(deprecated)]
            {
                return match device {
                    "default" | "cpu" => Ok(Device::libtorch()),
                    "mps" => Ok(Device::libtorch_mps()),
                    d => d
                        .strip_prefix("cuda:")
                        .and_then(|i| i.parse::<usize>().ok())
                        .map(Device::libtorch_cuda)
                        .ok_or_else(|| bad_device("`cpu`, `cuda:N` or `mps`")),
                };
            }
            #[allow(unreachable_code)]
            Err(not_compiled("tch"))
        }
    }
}

fn require_cpu(device: &str) -> std::result::Result<(), ()> {
    if device == "default" || device == "cpu" {
        Ok(())
    } else {
        Err(())
    }
}

/// wgpu panics deep inside when no adapter exists; find out here and say what to do instead.
#[cfg(feature = "wgpu")]
fn probe_wgpu(device: &Device) -> Result<()> {
    let previous_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let outcome = std::panic::catch_unwind(|| {
        burn::tensor::Tensor::<1>::zeros([1], device).into_data();
    });
    std::panic::set_hook(previous_hook);
    outcome.map_err(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        Error::Recipe(format!(
            "`backend.type: wgpu` found no usable adapter ({why}); install a GPU driver or, for a \
             CPU-only machine, Mesa's software Vulkan (`apt-get install mesa-vulkan-drivers`) with \
             `backend.device: cpu`, or use `backend.type: flex`"
        ))
    })
}
