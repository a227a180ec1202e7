//! Each compiled backend trains a tiny GPT for a few dozen steps and the loss falls; a backend
//! left out of the build is refused with the feature that brings it; `--version` says what the
//! binary holds.

mod common;
use common::{Scratch, assert_loss_falls, succeeded, tiny_recipe};
use std::process::Command;

#[test]
fn flex_trains_with_falling_loss() {
    let s = Scratch::with_recipe(&tiny_recipe("flex", 40));
    s.ok(&["train", "recipe.yaml", "--quiet"]);
    assert_loss_falls(&s.train_losses());
}

#[cfg(feature = "ndarray")]
#[test]
fn ndarray_trains_with_falling_loss() {
    let s = Scratch::with_recipe(&tiny_recipe("ndarray", 40));
    s.ok(&["train", "recipe.yaml", "--quiet"]);
    assert_loss_falls(&s.train_losses());
}

/// wgpu runs on Mesa's lavapipe (software Vulkan) where it is installed, as in CI. Where no
/// adapter exists the binary must say so clearly (exit 2, no panic); CI sets
/// `NLPKIT_REQUIRE_WGPU=1` so a missing adapter there fails the test.
#[cfg(feature = "wgpu")]
#[test]
fn wgpu_trains_on_a_cpu_adapter_or_explains_why_not() {
    let s = Scratch::with_recipe(&tiny_recipe("wgpu", 24));
    let out = s.run(&["train", "recipe.yaml", "--quiet"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        let losses = s.train_losses();
        assert_loss_falls(&losses);
        return;
    }
    assert!(
        std::env::var("NLPKIT_REQUIRE_WGPU").is_err(),
        "wgpu was required but failed: {stderr}"
    );
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("no usable adapter") && stderr.contains("mesa-vulkan-drivers"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// The backends this test binary was built with, by the same features as the nlpkit binary.
fn compiled_backends() -> Vec<&'static str> {
    [
        ("flex", cfg!(feature = "flex")),
        ("ndarray", cfg!(feature = "ndarray")),
        ("wgpu", cfg!(feature = "wgpu")),
        ("tch", cfg!(feature = "tch")),
        ("cuda", cfg!(feature = "cuda")),
    ]
    .into_iter()
    .filter_map(|(name, compiled)| compiled.then_some(name))
    .collect()
}

/// The default build holds flex only: a recipe naming another backend gets the cargo feature to
/// rebuild with, before anything is written.
#[test]
fn a_backend_left_out_of_the_build_names_its_feature() {
    for backend in ["ndarray", "wgpu", "tch", "cuda"] {
        if compiled_backends().contains(&backend) {
            continue;
        }
        let s = Scratch::with_recipe(&tiny_recipe(backend, 5));
        let out = s.run(&["train", "recipe.yaml", "--quiet"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{backend}: {stderr}");
        assert!(
            stderr.contains(&format!("`backend.type: {backend}` is not compiled"))
                && stderr.contains(&format!("cargo build --release --features {backend}")),
            "{stderr}"
        );
        assert!(!s.path().join("exp").exists(), "nothing may be written");
    }
}

/// `nlpkit --version`: version and commit, the compiled backends (CI names the ones its build
/// must have in `NLPKIT_REQUIRE_BACKENDS`, so a feature dropped from CI's build fails here rather
/// than silently skipping that backend's tests), and the matmul kernels this CPU gets.
#[test]
fn version_names_the_commit_the_backends_and_the_matmul_kernels() {
    let out = Command::new(env!("CARGO_BIN_EXE_nlpkit"))
        .arg("--version")
        .output()
        .unwrap();
    let stdout = succeeded("nlpkit --version", out);
    let lines: Vec<&str> = stdout.lines().collect();
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map_or("unknown".to_string(), |out| {
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        });
    assert_eq!(
        lines[0],
        format!("nlpkit {} (commit {commit})", env!("CARGO_PKG_VERSION"))
    );
    let backends = lines[1].strip_prefix("backends: ").expect(&stdout);
    assert_eq!(backends, compiled_backends().join(", "));
    for required in std::env::var("NLPKIT_REQUIRE_BACKENDS")
        .unwrap_or_default()
        .split(',')
        .filter(|name| !name.is_empty())
    {
        assert!(
            backends.split(", ").any(|name| name == required),
            "this build lacks the required backend {required}: {stdout}"
        );
    }
    let kernels = lines[2]
        .strip_prefix("flex matmul on this CPU: ")
        .expect(&stdout);
    #[cfg(target_arch = "x86_64")]
    {
        let expected = if std::arch::is_x86_feature_detected!("avx512f") {
            "AVX-512"
        } else if std::arch::is_x86_feature_detected!("fma") {
            "AVX2+FMA"
        } else {
            "scalar"
        };
        assert!(kernels.contains(expected), "{stdout}");
    }
    #[cfg(not(target_arch = "x86_64"))]
    assert!(!kernels.is_empty());
}

/// The system BLAS flex's large products run on (`NLPKIT_BLAS`): `--version` names it, `off`
/// leaves only gemm, and a library that cannot be loaded is an error (exit 2) before anything
/// is written, not a silently slower run. CI installs OpenBLAS and sets `NLPKIT_REQUIRE_BLAS=1`.
#[test]
fn the_system_blas_is_named_and_a_missing_one_is_refused() {
    let version = |blas: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_nlpkit"));
        command.arg("--version").env_remove("NLPKIT_BLAS");
        if let Some(blas) = blas {
            command.env("NLPKIT_BLAS", blas);
        }
        let stdout = succeeded("nlpkit --version", command.output().unwrap());
        stdout.lines().nth(2).unwrap_or_default().to_string()
    };
    let off = version(Some("off"));
    assert!(off.starts_with("flex matmul on this CPU: gemm "), "{off}");
    let found = version(None);
    if std::env::var_os("NLPKIT_REQUIRE_BLAS").is_some() {
        assert!(
            found.contains("OpenBLAS") && found.contains("from libopenblas"),
            "{found}"
        );
    }

    let s = Scratch::with_recipe(&tiny_recipe("flex", 5));
    let out = Command::new(env!("CARGO_BIN_EXE_nlpkit"))
        .args(["train", "recipe.yaml", "--quiet"])
        .current_dir(s.path())
        .env("NLPKIT_BLAS", "/nowhere/libopenblas.so.0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("NLPKIT_BLAS=/nowhere/libopenblas.so.0") && stderr.contains("`off`"),
        "{stderr}"
    );
    assert!(!s.path().join("exp").exists(), "nothing may be written");
}

/// The same recipe trained with the system BLAS and with gemm alone: the products round
/// differently, the training does not.
#[test]
fn training_on_the_system_blas_matches_gemm() {
    let losses = |blas: &str| {
        let s = Scratch::with_recipe(&tiny_recipe("flex", 30));
        let out = Command::new(env!("CARGO_BIN_EXE_nlpkit"))
            .args(["train", "recipe.yaml", "--quiet"])
            .current_dir(s.path())
            .env("NLPKIT_BLAS", blas)
            .output()
            .unwrap();
        succeeded("nlpkit train", out);
        s.train_losses()
    };
    let (gemm, blas) = (losses("off"), losses("auto"));
    assert_eq!(gemm.len(), blas.len());
    for (step, (a, b)) in gemm.iter().zip(&blas).enumerate() {
        assert!(
            (a - b).abs() <= 1e-3 * a.abs().max(1.0),
            "step {step}: gemm {a}, BLAS {b}"
        );
    }
}
