//! Checks on the pipeline's `output` folder, which a run fills with `manifests/`, `errors/`,
//! `state/`, `synthetic/` and `report/`: it must be a folder of its own (not `/`, `""`, `.` or
//! `..`), and not an image folder a source reads or a folder inside one (the next run would
//! read the images this one wrote back in as samples).

use std::path::{Component, Path, PathBuf};

/// Why `output` names no folder of its own, judged from its text alone: after `.` and `..` are
/// resolved it has no name left (`/`, `""`, `.`, `..`, `a/..`).
pub fn not_a_folder_of_its_own(output: &Path) -> Option<String> {
    let named = lexical(output)
        .components()
        .any(|c| matches!(c, Component::Normal(_)));
    (!named).then(|| {
        format!(
            "output `{}` is not a folder of its own: a run writes manifests/, errors/, state/, \
             synthetic/ and report/ into it; name one such as `out/NAME`",
            output.display()
        )
    })
}

/// Whether `output` is `folder` or lies inside it, symbolic links resolved where the paths
/// exist (relative paths are relative to the current folder).
pub fn is_within(output: &Path, folder: &Path) -> bool {
    resolved(output).starts_with(resolved(folder))
}

/// `.` dropped and `name/..` folded, without touching the file system.
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if matches!(out.components().next_back(), Some(Component::Normal(_))) {
                    out.pop();
                } else if !out.has_root() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// The absolute, lexically folded path with its longest existing part canonicalized.
fn resolved(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut existing = lexical(&absolute);
    let mut rest = Vec::new();
    while !existing.exists() {
        match existing.file_name() {
            Some(name) => rest.push(name.to_os_string()),
            None => break,
        }
        existing.pop();
    }
    let mut out = existing.canonicalize().unwrap_or(existing);
    out.extend(rest.iter().rev());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_with_no_name_of_their_own_are_refused() {
        for bad in ["", "/", ".", "..", "./", "../..", "out/..", "/.."] {
            assert!(not_a_folder_of_its_own(Path::new(bad)).is_some(), "{bad:?}");
        }
        for good in ["out", "out/p", "../out", "/tmp/out", "./out"] {
            assert_eq!(not_a_folder_of_its_own(Path::new(good)), None, "{good:?}");
        }
    }

    #[test]
    fn an_output_inside_a_folder_is_found_through_links() {
        let dir = tempfile::tempdir().unwrap();
        let images = dir.path().join("images");
        std::fs::create_dir_all(images.join("coat")).unwrap();
        std::os::unix::fs::symlink(&images, dir.path().join("link")).unwrap();
        assert!(is_within(&images, &images));
        assert!(is_within(&images.join("out/p"), &images));
        assert!(is_within(&dir.path().join("link/out"), &images));
        assert!(is_within(&dir.path().join("x/../images/coat"), &images));
        assert!(!is_within(&dir.path().join("out"), &images));
        assert!(!is_within(&dir.path().join("images-out"), &images));
    }
}
