//! Inputs a hostile or careless user may put in an image folder: FIFOs, devices, sockets,
//! images over the pixel budget, links to files outside the folder. Each is an error record
//! naming the file; none hangs the scan or is read whole.

use super::*;

fn png(path: &Path, side: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::GrayImage::from_pixel(side, side, image::Luma([7]))
        .save(path)
        .unwrap();
}

/// Each error of a scan as `<path under root>: message`, sorted.
fn shown(root: &Path, diff: &SourceDiff) -> Vec<String> {
    let mut shown: Vec<String> = diff
        .errors
        .iter()
        .map(|(e, _)| {
            let at = e.location.strip_prefix(&format!("{}/", root.display()));
            format!("{}: {}", at.unwrap_or(&e.location), e.message)
        })
        .collect();
    shown.sort();
    shown
}

/// `coat/`: a good image, a link to it (inside), a FIFO, a link to `/dev/zero`, a socket, an
/// image of 10×10 pixels, and a link to an image outside the folder.
fn hostile_folder(dir: &Path) -> (PathBuf, std::os::unix::net::UnixListener) {
    let root = dir.join("images");
    png(&root.join("coat/a.png"), 4);
    png(&root.join("coat/big.png"), 10);
    png(&dir.join("elsewhere/b.png"), 4);
    std::os::unix::fs::symlink("a.png", root.join("coat/inside.png")).unwrap();
    std::os::unix::fs::symlink(dir.join("elsewhere/b.png"), root.join("coat/outside.png")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", root.join("coat/zero.png")).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(root.join("coat/fifo.png"))
        .status()
        .unwrap();
    assert!(made.success());
    let socket = std::os::unix::net::UnixListener::bind(root.join("coat/socket.png")).unwrap();
    (root, socket)
}

#[test]
fn irregular_files_big_images_and_outside_links_are_error_records() {
    let dir = tempfile::tempdir().unwrap();
    let (root, _socket) = hostile_folder(dir.path());
    let options = SourceOptions {
        max_pixels: 99,
        ..SourceOptions::default()
    };
    let mut state =
        SourceState::new("train", SourceLocation::ImageFolder(root.clone())).with_options(options);
    let diff = state.rescan(0, 1);
    let names: BTreeSet<&str> = diff.samples.iter().map(|(s, _)| s.name.as_str()).collect();
    assert_eq!(names, BTreeSet::from(["coat/a.png", "coat/inside.png"]));
    let outside = dir.path().canonicalize().unwrap().join("elsewhere/b.png");
    assert_eq!(
        shown(&root, &diff),
        [
            "coat/big.png: image is 10×10 pixels (100), over the budget of 99 pixels (the \
             source's `max_pixels`)"
                .to_string(),
            "coat/fifo.png: cannot read image: not a regular file (a FIFO); only regular files \
             are read"
                .into(),
            format!(
                "coat/outside.png: symbolic link to {}, outside the image folder (set \
                 `allow_outside_links = true` on the source to read it)",
                outside.display()
            ),
            "coat/socket.png: cannot read image: not a regular file (a socket); only regular \
             files are read"
                .into(),
            "coat/zero.png: symbolic link to /dev/zero, outside the image folder (set \
             `allow_outside_links = true` on the source to read it)"
                .into(),
        ]
    );
    assert_eq!(state.rescan(0, 1), SourceDiff::default());
}

#[test]
fn outside_links_are_read_when_allowed_but_never_a_device() {
    let dir = tempfile::tempdir().unwrap();
    let (root, _socket) = hostile_folder(dir.path());
    let options = SourceOptions {
        allow_outside_links: true,
        ..SourceOptions::default()
    };
    let diff = SourceState::new("train", SourceLocation::ImageFolder(root.clone()))
        .with_options(options)
        .rescan(0, 1);
    let names: BTreeSet<&str> = diff.samples.iter().map(|(s, _)| s.name.as_str()).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "coat/a.png",
            "coat/big.png",
            "coat/inside.png",
            "coat/outside.png"
        ])
    );
    let errors = shown(&root, &diff);
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert_eq!(
        errors[2],
        "coat/zero.png: cannot read image: not a regular file (a character device); only \
         regular files are read"
    );
}
