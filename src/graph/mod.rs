//! Graph files: reading them (`spec`, every wrong field reported by `fields`), the ops they may name (`ops`, one file each, listed in
//! one registry), compiling in phases with every error named by node and line (`compile`),
//! opening models and files (`resources`), checks on the output folder (`output_folder`), DOT output (`dot`) and building the dataflow a
//! started graph describes (`build`).

pub mod build;
pub mod compile;
pub mod dot;
pub mod fields;
pub mod ops;
pub mod order;
pub mod output_folder;
pub mod resources;
pub mod spec;
pub mod toml_spans;

pub use compile::{compile, Compiled};
pub use resources::{check_resources, configuration, Resources};
pub use spec::{GraphError, GraphFile};
