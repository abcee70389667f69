//! ONNX Runtime writes nothing outside the output folder: since 1.29 its Linux build keeps a
//! device id and a telemetry database under `~/.cache/Microsoft/DeveloperTools/.onnxruntime/`
//! when an environment is created, unless `ORT_DISABLE_TELEMETRY` is set first, which discl
//! does. Each test points HOME at a fresh folder and clears what would hide the files (ONNX
//! Runtime writes nothing on the CI systems it recognises).

mod common;

use common::*;
use std::path::Path;
use std::process::Command;

/// Variables by which ONNX Runtime recognises a CI system (and its own unit tests), where it
/// stays silent anyway; cleared so the tests see what a user's machine sees.
const SILENCERS: [&str; 12] = [
    "ORT_DISABLE_TELEMETRY",
    "ORT_RUNNING_UNIT_TESTS",
    "TF_BUILD",
    "GITHUB_ACTIONS",
    "GITLAB_CI",
    "CIRCLECI",
    "TRAVIS",
    "JENKINS_URL",
    "CODEBUILD_BUILD_ID",
    "BUILDKITE",
    "TEAMCITY_VERSION",
    "SYSTEM_TEAMFOUNDATIONCOLLECTIONURI",
];

/// A graph whose validation opens the shipped classifier (and so creates ONNX Runtime's
/// environment).
fn graph(dir: &Path) -> std::path::PathBuf {
    let file = dir.join("g.toml");
    std::fs::write(
        &file,
        pipeline_text(dir, &fixture(), &classifier(), "[{ misclassified = true }]"),
    )
    .unwrap();
    file
}

fn everything_under(folder: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(folder).unwrap() {
        let path = entry.unwrap().path();
        found.push(path.display().to_string());
        if path.is_dir() {
            found.extend(everything_under(&path));
        }
    }
    found
}

#[test]
fn discl_validate_leaves_no_telemetry_database_in_the_home_folder() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_discl"));
    command
        .args(["validate", graph(dir.path()).to_str().unwrap()])
        .current_dir(REPO)
        .env("HOME", &home)
        .env_remove("XDG_CACHE_HOME");
    for variable in SILENCERS {
        command.env_remove(variable);
    }
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(everything_under(&home), Vec::<String>::new());
}

#[test]
fn the_library_leaves_none_either() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    // This test binary's only in-process test: nothing else reads the environment meanwhile.
    std::env::set_var("XDG_CACHE_HOME", &cache);
    for variable in SILENCERS {
        std::env::remove_var(variable);
    }
    let text = std::fs::read_to_string(graph(dir.path())).unwrap();
    let pipeline = discl::Pipeline::from_toml("g.toml", &text).unwrap();
    pipeline.validate().unwrap();
    assert_eq!(everything_under(&cache), Vec::<String>::new());
    assert_eq!(std::env::var("ORT_DISABLE_TELEMETRY").as_deref(), Ok("1"));
}
