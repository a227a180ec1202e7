//! Each compiled backend trains a tiny GPT for a few dozen steps and the loss falls.

mod common;
use common::{Scratch, assert_loss_falls, tiny_recipe};

#[test]
fn flex_trains_with_falling_loss() {
    let s = Scratch::with_recipe(&tiny_recipe("flex", 40));
    s.ok(&["train", "recipe.yaml", "--quiet"]);
    assert_loss_falls(&s.train_losses());
}

#[test]
fn ndarray_trains_with_falling_loss() {
    let s = Scratch::with_recipe(&tiny_recipe("ndarray", 40));
    s.ok(&["train", "recipe.yaml", "--quiet"]);
    assert_loss_falls(&s.train_losses());
}

/// wgpu runs on Mesa's lavapipe (software Vulkan) where it is installed, as in CI. Where no
/// adapter exists the binary must say so clearly (exit 2, no panic); CI sets
/// `NLPKIT_REQUIRE_WGPU=1` so a missing adapter there fails the test.
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
