//! The same graph on a timely cluster of two processes (on this machine, over loopback TCP)
//! writes the same manifests as one process.

use crate::common;

use common::*;
use std::process::Command;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn two_processes_write_what_one_process_writes() {
    let dir = tempfile::tempdir().unwrap();
    let images = copy_fixture(dir.path());
    let rules = "[{ misclassified = true }, { top_k_loss = 5 }]";
    let one = dir.path().join("one");
    let two = dir.path().join("two");
    for d in [&one, &two] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(
            d.join("p.toml"),
            pipeline_text(d, &images, &classifier(), rules),
        )
        .unwrap();
    }
    let discl = env!("CARGO_BIN_EXE_discl");
    let status = Command::new(discl)
        .args(["run", one.join("p.toml").to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());

    let hosts = dir.path().join("hosts");
    std::fs::write(
        &hosts,
        format!("127.0.0.1:{}\n127.0.0.1:{}\n", free_port(), free_port()),
    )
    .unwrap();
    let file = two.join("p.toml");
    let cluster = |process: &str| {
        Command::new(discl)
            .args([
                "run",
                file.to_str().unwrap(),
                "-w",
                "2",
                "--",
                "-n",
                "2",
                "-p",
                process,
                "-h",
                hosts.to_str().unwrap(),
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let second = cluster("1");
    let first = cluster("0");
    let (first, second) = (
        first.wait_with_output().unwrap(),
        second.wait_with_output().unwrap(),
    );
    assert!(first.status.success() && second.status.success());
    // Each process reports its own share of the work; process 0 writes.
    let line = |out: &[u8]| String::from_utf8_lossy(out).trim().to_string();
    assert!(
        line(&first.stdout).contains("version(s) [0]"),
        "{}",
        line(&first.stdout)
    );
    assert!(
        line(&second.stdout).contains("version(s) []"),
        "{}",
        line(&second.stdout)
    );
    for file in [
        "hard.jsonl",
        "scores.jsonl",
        "train.jsonl",
        "scores.parquet",
    ] {
        let a = std::fs::read(one.join("out/manifests/current").join(file)).unwrap();
        let b = std::fs::read(two.join("out/manifests/current").join(file)).unwrap();
        assert_eq!(
            a, b,
            "{file} differs between one process and a cluster of two"
        );
    }
}
