//! With the `tch` feature, embed an rpath to LibTorch's `lib/` folder so the binary runs without
//! `LD_LIBRARY_PATH` (torch-sys links libtorch but does not say where to find it at run time).

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=LIBTORCH_USE_PYTORCH");
    if std::env::var_os("CARGO_FEATURE_TCH").is_none() {
        return;
    }
    let lib_dir = if let Some(libtorch) = std::env::var_os("LIBTORCH") {
        Some(std::path::PathBuf::from(libtorch).join("lib"))
    } else {
        // LIBTORCH_USE_PYTORCH: the torch package of the python on PATH, as torch-sys finds it.
        std::process::Command::new("python3")
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
