//! A system BLAS for the matrix products of flex's fused kernels (linear layers, attention),
//! found at run time: OpenBLAS, MKL or BLIS pick their kernels for the CPU they run on, and on
//! AVX2 machines they run the linear layers' products faster than the `gemm` crate
//! (bench/README.md). The binary needs none of them: with
//! no library found, or `NLPKIT_BLAS=off`, every product stays on `gemm`.
//!
//! `NLPKIT_BLAS` chooses: unset or `auto` tries the libraries below in order, `off` uses none,
//! anything else is the path (or file name) of a library that exports `cblas_sgemm`.
//!
//! The library runs on one thread per call; [`Blas::product`] splits a large product over the
//! CPU pool itself, so BLAS's own threads never compete with the pool's.

use super::attention::flex_kernel::Mat;
use rayon::prelude::*;
use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::sync::OnceLock;

/// Tried in this order when `NLPKIT_BLAS` is unset: Debian/Ubuntu/Fedora's OpenBLAS, MKL (the
/// `mkl` pip package's and oneAPI's single dynamic library: `.so.3` from 2025 on, `.so.2`
/// before), BLIS.
const CANDIDATES: [&str; 5] = [
    "libopenblas.so.0",
    "libopenblas.so",
    "libmkl_rt.so.3",
    "libmkl_rt.so.2",
    "libblis.so.4",
];

const ROW_MAJOR: c_int = 101;
const NO_TRANS: c_int = 111;
const TRANS: c_int = 112;

type CblasSgemm = unsafe extern "C" fn(
    c_int,
    c_int,
    c_int,
    c_int,
    c_int,
    c_int,
    f32,
    *const f32,
    c_int,
    *const f32,
    c_int,
    f32,
    *mut f32,
    c_int,
);

/// A loaded BLAS (the library stays loaded for the process's life).
pub struct Blas {
    /// What the run's first lines show, e.g. `OpenBLAS 0.3.21 (Zen) from libopenblas.so.0`.
    pub name: String,
    sgemm: CblasSgemm,
}

/// Which BLAS the user asked for.
enum Choice {
    Off,
    Auto,
    Library(String),
}

fn choice() -> Choice {
    match std::env::var("NLPKIT_BLAS").ok().as_deref().map(str::trim) {
        None | Some("") | Some("auto") => Choice::Auto,
        Some("off") | Some("none") | Some("gemm") => Choice::Off,
        Some(path) => Choice::Library(path.to_string()),
    }
}

/// The library `NLPKIT_BLAS` asks for, loaded once: `Ok(None)` for none, an error message when a
/// named library cannot be used.
fn loaded() -> &'static Result<Option<Blas>, String> {
    static LOADED: OnceLock<Result<Option<Blas>, String>> = OnceLock::new();
    LOADED.get_or_init(|| match choice() {
        Choice::Off => Ok(None),
        Choice::Auto => Ok(CANDIDATES.iter().find_map(|name| Blas::open(name).ok())),
        Choice::Library(path) => Blas::open(&path).map(Some).map_err(|why| {
            format!(
                "NLPKIT_BLAS={path}: {why}; give the path of an OpenBLAS, MKL (libmkl_rt) or \
                 BLIS library, `auto` to look for one, or `off` for the built-in matmul"
            )
        }),
    })
}

/// The BLAS the fused kernels' products run on, if any.
pub fn system_blas() -> Option<&'static Blas> {
    loaded().as_ref().ok()?.as_ref()
}

/// An error message when `NLPKIT_BLAS` names a library that cannot be used, so that a run does
/// not silently go on without it.
pub fn check_requested() -> Result<(), String> {
    loaded().as_ref().map(|_| ()).map_err(Clone::clone)
}

/// `dlsym` of `name` in `handle`, null when absent.
fn symbol(handle: *mut c_void, name: &str) -> *mut c_void {
    let name = CString::new(name).expect("symbol names have no NUL");
    // SAFETY: `handle` is a live dlopen handle and `name` a NUL-terminated string.
    unsafe { libc::dlsym(handle, name.as_ptr()) }
}

impl Blas {
    /// Load `library` and set it to one thread per call.
    fn open(library: &str) -> Result<Blas, String> {
        let path = CString::new(library).map_err(|_| "the name holds a NUL byte".to_string())?;
        // SAFETY: dlopen with a NUL-terminated name; the handle is never closed.
        let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if handle.is_null() {
            // SAFETY: dlerror returns a C string or null.
            let why = unsafe { libc::dlerror() };
            return Err(if why.is_null() {
                "cannot be loaded".to_string()
            } else {
                // SAFETY: non-null dlerror results are NUL-terminated.
                unsafe { CStr::from_ptr(why) }
                    .to_string_lossy()
                    .into_owned()
            });
        }
        let sgemm = symbol(handle, "cblas_sgemm");
        if sgemm.is_null() {
            return Err("the library has no `cblas_sgemm`".to_string());
        }
        // One thread per call: each library's own setter, where it has one.
        for setter in ["openblas_set_num_threads", "MKL_Set_Num_Threads"] {
            let set = symbol(handle, setter);
            if !set.is_null() {
                // SAFETY: both take one int.
                unsafe { std::mem::transmute::<*mut c_void, extern "C" fn(c_int)>(set)(1) };
            }
        }
        let set = symbol(handle, "bli_thread_set_num_threads");
        if !set.is_null() {
            // SAFETY: BLIS's setter takes a dim_t (int64).
            unsafe { std::mem::transmute::<*mut c_void, extern "C" fn(i64)>(set)(1) };
        }
        Ok(Blas {
            name: format!("{} from {library}", describe(handle)),
            // SAFETY: `cblas_sgemm` has this signature in every CBLAS.
            sgemm: unsafe { std::mem::transmute::<*mut c_void, CblasSgemm>(sgemm) },
        })
    }

    /// `dst[m×n]` (row-major, `dst_cols` columns) `= (dst if accumulate) + alpha·lhs·rhs`, split
    /// over the CPU pool when `threaded`. `false` (nothing written) when an operand's strides
    /// are not a BLAS layout (neither stride 1).
    ///
    /// # Safety
    /// Every matrix must address valid memory over its dimensions; `dst` is not aliased.
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn product(
        &self,
        (m, n, k): (usize, usize, usize),
        dst: *mut f32,
        dst_cols: usize,
        accumulate: bool,
        lhs: Mat,
        rhs: Mat,
        alpha: f32,
        threaded: bool,
    ) -> bool {
        let (Some(a), Some(b)) = (Layout::of(lhs, m, k), Layout::of(rhs, k, n)) else {
            return false;
        };
        let fits = |x: usize| c_int::try_from(x).is_ok();
        if ![m, n, k, dst_cols, a.ld, b.ld].into_iter().all(fits) || dst_cols < n {
            return false;
        }
        let job = Job {
            sgemm: self.sgemm,
            a,
            b,
            lhs,
            rhs,
            k,
            dst,
            dst_cols,
            alpha,
            beta: if accumulate { 1.0 } else { 0.0 },
        };
        let tasks = if threaded {
            rayon::current_num_threads()
        } else {
            1
        };
        if tasks <= 1 || k == 0 {
            // SAFETY: the whole product, as the caller's contract covers.
            unsafe { job.run(0..m, 0..n) };
            return true;
        }
        // Split the longer side of the result: each task's block stays large enough for BLAS's
        // blocking, and each task packs only its part of the operand it splits.
        let by_rows = m >= n;
        let side = if by_rows { m } else { n };
        let per_task = side.div_ceil(tasks).next_multiple_of(16);
        (0..side.div_ceil(per_task))
            .into_par_iter()
            .for_each(|task| {
                let part = task * per_task..((task + 1) * per_task).min(side);
                // SAFETY: the tasks' blocks of the result are disjoint and inside it.
                unsafe {
                    if by_rows {
                        job.run(part, 0..n)
                    } else {
                        job.run(0..m, part)
                    }
                }
            });
        true
    }
}

/// One product's operands, shared by the tasks that compute its blocks.
struct Job {
    sgemm: CblasSgemm,
    a: Layout,
    b: Layout,
    lhs: Mat,
    rhs: Mat,
    k: usize,
    dst: *mut f32,
    dst_cols: usize,
    alpha: f32,
    beta: f32,
}

// SAFETY: tasks only read the operands and write disjoint blocks of `dst` (`Job::run`).
unsafe impl Sync for Job {}

impl Job {
    /// The block `rows × cols` of the result.
    ///
    /// # Safety
    /// The block lies inside the product, and no other task writes it at the same time.
    unsafe fn run(&self, rows: std::ops::Range<usize>, cols: std::ops::Range<usize>) {
        if rows.is_empty() || cols.is_empty() {
            return;
        }
        let (lhs, rhs) = (self.lhs, self.rhs);
        let a_at = lhs.ptr.wrapping_offset(rows.start as isize * lhs.rs);
        let b_at = rhs.ptr.wrapping_offset(cols.start as isize * rhs.cs);
        let c_at = self
            .dst
            .wrapping_add(rows.start * self.dst_cols + cols.start);
        // SAFETY: sub-blocks of the caller's m×k, k×n and m×n matrices; all sizes fit a c_int
        // (checked in `Blas::product`).
        unsafe {
            (self.sgemm)(
                ROW_MAJOR,
                self.a.trans,
                self.b.trans,
                rows.len() as c_int,
                cols.len() as c_int,
                self.k as c_int,
                self.alpha,
                a_at,
                self.a.ld as c_int,
                b_at,
                self.b.ld as c_int,
                self.beta,
                c_at,
                self.dst_cols as c_int,
            )
        }
    }
}

/// How CBLAS reads a row-major operand: as stored (`ld` = row stride) or transposed (`ld` =
/// column stride).
struct Layout {
    trans: c_int,
    ld: usize,
}

impl Layout {
    /// `rows × cols` matrix `mat` in BLAS's terms, `None` when neither stride is 1.
    fn of(mat: Mat, rows: usize, cols: usize) -> Option<Layout> {
        // A stride over a dimension of length 1 is never used: it may be anything.
        let (one_row, one_col) = (rows <= 1, cols <= 1);
        if (mat.cs == 1 || one_col) && (one_row || mat.rs >= cols as isize) {
            let ld = if one_row {
                cols.max(1)
            } else {
                mat.rs as usize
            };
            Some(Layout {
                trans: NO_TRANS,
                ld,
            })
        } else if (mat.rs == 1 || one_row) && (one_col || mat.cs >= rows as isize) {
            let ld = if one_col {
                rows.max(1)
            } else {
                mat.cs as usize
            };
            Some(Layout { trans: TRANS, ld })
        } else {
            None
        }
    }
}

/// The library's own account of itself where it gives one (OpenBLAS: version and the kernels it
/// chose for this CPU).
fn describe(handle: *mut c_void) -> String {
    let text = |name: &str| {
        let f = symbol(handle, name);
        if f.is_null() {
            return None;
        }
        // SAFETY: OpenBLAS's `openblas_get_config`/`openblas_get_corename` return static C
        // strings.
        let s =
            unsafe { std::mem::transmute::<*mut c_void, extern "C" fn() -> *const c_char>(f)() };
        (!s.is_null()).then(|| unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned())
    };
    match (text("openblas_get_config"), text("openblas_get_corename")) {
        (Some(config), Some(core)) => {
            let version = config
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ");
            format!("{version} ({core} kernels)")
        }
        _ if !symbol(handle, "MKL_Get_Max_Threads").is_null() => "MKL".to_string(),
        _ if !symbol(handle, "bli_info_get_version_str").is_null() => "BLIS".to_string(),
        _ => "a CBLAS".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    /// The BLAS these tests check; CI installs OpenBLAS and sets `NLPKIT_REQUIRE_BLAS=1`, so a
    /// library that stops loading fails there instead of skipping.
    fn blas_under_test() -> Option<&'static Blas> {
        let blas = system_blas();
        if blas.is_none() {
            assert!(
                std::env::var_os("NLPKIT_REQUIRE_BLAS").is_none(),
                "NLPKIT_REQUIRE_BLAS is set but no BLAS loaded (apt-get install libopenblas0)"
            );
            eprintln!("no system BLAS here: the BLAS path is not tested");
        }
        blas
    }

    fn random(len: usize, seed: u64) -> Vec<f32> {
        let mut rng = SplitMix64::new(seed);
        (0..len)
            .map(|_| (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 - 0.5)
            .collect()
    }

    /// `start + alpha·lhs·rhs` in f64, element by element through the views' strides.
    fn reference(
        (m, n, k): (usize, usize, usize),
        start: &[f32],
        dst_cols: usize,
        lhs: Mat,
        rhs: Mat,
        alpha: f32,
    ) -> Vec<f32> {
        let at = |mat: Mat, i: usize, j: usize| unsafe {
            *mat.ptr.offset(i as isize * mat.rs + j as isize * mat.cs) as f64
        };
        let mut out = start.to_vec();
        for i in 0..m {
            for j in 0..n {
                let dot: f64 = (0..k).map(|p| at(lhs, i, p) * at(rhs, p, j)).sum();
                out[i * dst_cols + j] += (alpha as f64 * dot) as f32;
            }
        }
        out
    }

    /// Plain, transposed and padded (row stride past the width) operands, products split over
    /// the pool by rows and by columns and not at all, accumulating and not, against f64.
    #[test]
    fn products_equal_the_definition_in_every_layout() {
        let Some(blas) = blas_under_test() else {
            return;
        };
        let shapes = [
            (1, 1, 1),
            (1, 7, 5),
            (9, 1, 4),
            (37, 21, 13),
            (300, 40, 70),
            (50, 260, 33),
        ];
        for (case, &(m, n, k)) in shapes.iter().enumerate() {
            for (lhs_t, rhs_t, pad, threaded, accumulate) in [
                (false, false, 0, false, false),
                (true, false, 3, true, true),
                (false, true, 0, true, false),
                (true, true, 5, false, true),
            ] {
                let seed = case as u64 * 16;
                // An operand of `rows × cols`, stored transposed or not, each stored row `pad`
                // longer than it needs.
                let operand = |rows: usize, cols: usize, transposed: bool, seed: u64| {
                    let (outer, inner) = if transposed {
                        (cols, rows)
                    } else {
                        (rows, cols)
                    };
                    let values = random(outer * (inner + pad), seed);
                    let ld = (inner + pad) as isize;
                    let mat = if transposed {
                        Mat {
                            ptr: values.as_ptr(),
                            rs: 1,
                            cs: ld,
                        }
                    } else {
                        Mat {
                            ptr: values.as_ptr(),
                            rs: ld,
                            cs: 1,
                        }
                    };
                    (values, mat)
                };
                let (_a, lhs) = operand(m, k, lhs_t, seed + 1);
                let (_b, rhs) = operand(k, n, rhs_t, seed + 2);
                let dst_cols = n + pad;
                let start = if accumulate {
                    random(m * dst_cols, seed + 3)
                } else {
                    vec![f32::NAN; m * dst_cols]
                };
                let zero_start: Vec<f32> = start
                    .iter()
                    .map(|v| if accumulate { *v } else { 0.0 })
                    .collect();
                let expected = reference((m, n, k), &zero_start, dst_cols, lhs, rhs, 0.5);
                let mut out = start.clone();
                let done = unsafe {
                    blas.product(
                        (m, n, k),
                        out.as_mut_ptr(),
                        dst_cols,
                        accumulate,
                        lhs,
                        rhs,
                        0.5,
                        threaded,
                    )
                };
                assert!(done, "{m}x{n}x{k}: a BLAS layout was refused");
                for i in 0..m {
                    for j in 0..dst_cols {
                        let (got, want) = (out[i * dst_cols + j], expected[i * dst_cols + j]);
                        if j >= n {
                            // Padding columns of the result are never written.
                            assert!(got.to_bits() == start[i * dst_cols + j].to_bits());
                        } else {
                            assert!(
                                (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                                "{m}x{n}x{k} lhs_t {lhs_t} rhs_t {rhs_t} threaded {threaded} \
                                 at ({i},{j}): {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// Operands BLAS cannot address (no unit stride) are left to `gemm`, with nothing written.
    #[test]
    fn strides_blas_cannot_read_are_refused() {
        assert!(
            Layout::of(
                Mat {
                    ptr: std::ptr::null(),
                    rs: 8,
                    cs: 2
                },
                3,
                3
            )
            .is_none()
        );
        assert!(
            Layout::of(
                Mat {
                    ptr: std::ptr::null(),
                    rs: 2,
                    cs: 1
                },
                3,
                3
            )
            .is_none()
        );
        let row = Layout::of(
            Mat {
                ptr: std::ptr::null(),
                rs: 99,
                cs: 1,
            },
            1,
            3,
        )
        .unwrap();
        assert_eq!((row.trans, row.ld), (NO_TRANS, 3));
        let column = Layout::of(
            Mat {
                ptr: std::ptr::null(),
                rs: 1,
                cs: 4,
            },
            3,
            2,
        )
        .unwrap();
        assert_eq!((column.trans, column.ld), (TRANS, 4));
        let Some(blas) = blas_under_test() else {
            return;
        };
        let values = vec![1.0f32; 64];
        let strided = Mat {
            ptr: values.as_ptr(),
            rs: 8,
            cs: 2,
        };
        let mut out = vec![7.0f32; 9];
        let done = unsafe {
            blas.product(
                (3, 3, 3),
                out.as_mut_ptr(),
                3,
                false,
                strided,
                strided,
                1.0,
                false,
            )
        };
        assert!(!done);
        assert!(out.iter().all(|&v| v == 7.0));
    }
}
