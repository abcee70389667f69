//! The long-tailed Fashion-MNIST split that `scripts/setup.sh --data` regenerates from Debian's
//! package is bit for bit the one the committed digest describes.

use std::process::Command;

#[test]
fn split_reproduces_bit_for_bit() {
    let repo = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("python3")
        .args(["scripts/data/split_fashion.py", "--check"])
        .current_dir(repo)
        .output()
        .expect("python3 runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "digest check failed (run scripts/setup.sh --data first):\n{text}"
    );
    let committed =
        std::fs::read_to_string(format!("{repo}/scripts/data/fashion-split.digest")).unwrap();
    let hex = committed.split_whitespace().last().unwrap();
    assert!(
        text.contains(hex),
        "the check did not report the committed digest {hex}:\n{text}"
    );
}
