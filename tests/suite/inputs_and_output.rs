//! Graph-level checks on what a run reads and where it writes: an output folder that is no
//! folder of its own or lies in an image folder is refused with its line; links out of an image
//! folder, FIFOs and over-budget images become error records of a run that still succeeds.

use crate::common;

use common::*;
use discl::Pipeline;
use std::path::Path;

/// A graph file: an image folder source (with `source_fields`) written to a sink.
fn source_graph(output: &str, images: &Path, source_fields: &str) -> String {
    format!(
        r#"[pipeline]
name = "p"
output = "{output}"

[nodes.train]
op = "source"
format = "image_folder"
path = "{images}"
{source_fields}

[nodes.out]
op = "sink"
inputs = ["train"]
formats = ["jsonl"]
"#,
        images = images.display(),
    )
}

#[test]
fn validate_refuses_an_output_that_is_not_a_folder_of_its_own() {
    for output in ["/", "", ".", ".."] {
        let text = source_graph(output, Path::new("tests/fixtures/fashion-tiny"), "");
        let error = Pipeline::from_toml("p.toml", &text).err().unwrap();
        assert_eq!(
            error.to_string(),
            format!(
                "p.toml:3: pipeline: output `{output}` is not a folder of its own: a run writes \
                 manifests/, errors/, state/, synthetic/ and report/ into it; name one such as \
                 `out/NAME`"
            )
        );
    }
}

#[test]
fn validate_refuses_an_output_inside_or_equal_to_an_image_folder() {
    let dir = tempfile::tempdir().unwrap();
    let images = copy_fixture(dir.path());
    for output in [images.clone(), images.join("out/p")] {
        let text = source_graph(&output.display().to_string(), &images, "");
        let pipeline = Pipeline::from_toml("p.toml", &text).unwrap();
        let error = pipeline.validate().err().unwrap();
        assert_eq!(
            error.to_string(),
            format!(
                "p.toml:8: node `train`: the pipeline's output `{}` is this image folder or \
                 inside it ({}): the next run would read what this one writes as samples",
                output.display(),
                images.display()
            )
        );
        assert!(
            pipeline.run(&Default::default()).is_err(),
            "a run refuses it too"
        );
    }
    assert!(!images.join("out").exists() && !images.join("state").exists());
    let text = source_graph(&dir.path().join("out").display().to_string(), &images, "");
    Pipeline::from_toml("p.toml", &text)
        .unwrap()
        .validate()
        .unwrap();
}

/// The errors a run wrote, as `location: message` with `root/` taken off the locations.
fn errors(out: &Path, root: &Path) -> Vec<String> {
    let mut shown: Vec<String> = read_jsonl(out, "errors", "errors")
        .iter()
        .map(|e| {
            let location = e["location"].as_str().unwrap();
            let location = location.strip_prefix(&format!("{}/", root.display()));
            format!("{}: {}", location.unwrap(), e["message"].as_str().unwrap())
        })
        .collect();
    shown.sort();
    shown
}

#[test]
fn links_out_of_the_folder_fifos_and_huge_images_are_error_records_of_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let images = copy_fixture(dir.path());
    let outside = dir.path().join("elsewhere.png");
    std::fs::copy(
        images
            .join("coat")
            .read_dir()
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path(),
        &outside,
    )
    .unwrap();
    std::os::unix::fs::symlink(&outside, images.join("coat/link.png")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", images.join("bag/zero.png")).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(images.join("bag/fifo.png"))
        .status()
        .unwrap();
    assert!(made.success());
    // The fixture's images are 28×28 = 784 pixels; one of 30×30 is over a budget of 800.
    image::GrayImage::new(30, 30)
        .save(images.join("dress/big.png"))
        .unwrap();
    let out = dir.path().join("out");
    let text = source_graph(&out.display().to_string(), &images, "max_pixels = 800");
    let summary = run_text(&text, 1);
    assert_eq!(summary.nodes["train"].records_out, 120);
    let outside = outside.canonicalize().unwrap();
    assert_eq!(
        errors(&out, &images),
        [
            "bag/fifo.png: cannot read image: not a regular file (a FIFO); only regular files \
             are read"
                .to_string(),
            "bag/zero.png: symbolic link to /dev/zero, outside the image folder (set \
             `allow_outside_links = true` on the source to read it)"
                .into(),
            format!(
                "coat/link.png: symbolic link to {}, outside the image folder (set \
                 `allow_outside_links = true` on the source to read it)",
                outside.display()
            ),
            "dress/big.png: image is 30×30 pixels (900), over the budget of 800 pixels (the \
             source's `max_pixels`)"
                .into(),
        ]
    );
    // Allowed, the outside link is read; /dev/zero is still refused as a device.
    let text = source_graph(
        &out.display().to_string(),
        &images,
        "max_pixels = 800\nallow_outside_links = true",
    );
    let summary = run_text(&text, 1);
    assert_eq!(summary.nodes["train"].records_out, 121);
    let shown = errors(&out, &images);
    assert_eq!(shown.len(), 3, "{shown:?}");
    assert_eq!(
        shown[1],
        "bag/zero.png: cannot read image: not a regular file (a character device); only \
         regular files are read"
    );
}
