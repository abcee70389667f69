//! Every graph file under `pipelines/` compiles and validates (files and models included).

use discl::Pipeline;
use std::path::Path;

#[test]
fn every_shipped_pipeline_validates() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::env::set_current_dir(repo).unwrap();
    let mut checked = 0;
    for entry in std::fs::read_dir(repo.join("pipelines")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let relative = path.strip_prefix(repo).unwrap();
            Pipeline::from_file(relative)
                .and_then(|p| p.validate())
                .unwrap_or_else(|e| panic!("{}:\n{e}", relative.display()));
            checked += 1;
        }
    }
    assert!(checked >= 2);
}
