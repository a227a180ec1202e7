//! Two jobs at build time:
//! - record the git commit being built (`nlpkit --version`), `unknown` outside a git checkout;
//! - with the `tch` feature, embed an rpath to LibTorch's `lib/` folder so the binary runs without
//!   `LD_LIBRARY_PATH` (torch-sys links libtorch but does not say where to find it at run time).

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    record_git_commit();
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=LIBTORCH_USE_PYTORCH");
    if std::env::var_os("CARGO_FEATURE_TCH").is_some() {
        embed_libtorch_rpath();
    }
}

fn record_git_commit() {
    // Only nlpkit's own checkout counts, not a repository that happens to hold its sources.
    let own_checkout = git(&["rev-parse", "--show-toplevel"]).is_some_and(|top| {
        let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from);
        Path::new(&top).canonicalize().ok() == manifest_dir.and_then(|d| d.canonicalize().ok())
    });
    let commit = own_checkout
        .then(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .flatten()
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=NLPKIT_GIT_COMMIT={commit}");
    // Rebuild the version string when HEAD moves: HEAD itself (a checkout) and the branch it
    // points to (a commit); packed-refs for a branch that lives only there.
    if !own_checkout {
        return;
    }
    // `--git-path` finds each where it lives: in a linked worktree (`git worktree add`) HEAD is
    // the worktree's own, while branches and packed-refs are in the main repository's folder.
    let git_path = |name: &str| {
        git(&["rev-parse", "--path-format=absolute", "--git-path", name]).map(PathBuf::from)
    };
    let branch = git(&["symbolic-ref", "-q", "HEAD"]);
    for name in ["HEAD", "packed-refs"].into_iter().chain(branch.as_deref()) {
        if let Some(path) = git_path(name) {
            watch(&path);
        }
    }
}

fn watch(path: &Path) {
    if path.exists() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

fn embed_libtorch_rpath() {
    let lib_dir = if let Some(libtorch) = std::env::var_os("LIBTORCH") {
        Some(PathBuf::from(libtorch).join("lib"))
    } else {
        // LIBTORCH_USE_PYTORCH: the torch package of the python on PATH, as torch-sys finds it.
        Command::new("python3")
            .args([
                "-c",
                "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))",
            ])
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().into())
    };
    if let Some(dir) = lib_dir {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
    }
}
