//! The image store's files, read back without its index: every `synthetic/xx/<key>.png` whose
//! name is a content key (`xx` its first two hex digits) and whose bytes decode as a PNG. The
//! index is derivable from them, so a missing or corrupt index is rebuilt from this scan, and
//! an image whose index entry a crash lost is found by its name.

use super::images::StoredImage;
use crate::record::Digest;
use std::path::Path;

/// Where the store keeps the image of `key`, relative to the output folder.
pub fn image_file(key: &Digest) -> String {
    let hex = key.to_hex();
    format!("synthetic/{}/{hex}.png", &hex[..2])
}

/// The image the store wrote for `key`, if its file is there, a regular file, and decodes as
/// a PNG (files are renamed into place whole, so one that decodes is the one written).
pub fn stored_image(output: &Path, key: &Digest) -> Option<StoredImage> {
    let file = image_file(key);
    let path = output.join(&file);
    if !std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
        return None;
    }
    let bytes = std::fs::read(&path).ok()?;
    image::load_from_memory_with_format(&bytes, image::ImageFormat::Png).ok()?;
    Some(StoredImage {
        file,
        digest: Digest::of(&bytes),
    })
}

/// The images under `<output>/synthetic/`, by content key, in key order. Files that are not
/// an image the store wrote (a temporary file, a torn or foreign file) are left out: what the
/// index does not list is made again.
pub fn stored_images(output: &Path) -> Vec<(Digest, StoredImage)> {
    let mut found = Vec::new();
    let Ok(prefixes) = std::fs::read_dir(output.join("synthetic")) else {
        return found;
    };
    for prefix in prefixes.filter_map(|e| e.ok()) {
        let Ok(files) = std::fs::read_dir(prefix.path()) else {
            continue;
        };
        for file in files.filter_map(|e| e.ok()) {
            let name = file.file_name();
            let key = name
                .to_str()
                .and_then(|n| n.strip_suffix(".png"))
                .and_then(Digest::from_hex);
            if let Some((key, stored)) = key.and_then(|k| Some((k, stored_image(output, &k)?))) {
                found.push((key, stored));
            }
        }
    }
    found.sort_by_key(|(key, _)| *key);
    found
}
