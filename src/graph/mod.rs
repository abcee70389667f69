//! Graph files: reading them (`spec`), per-op configs (`config`), compiling in phases with
//! every error named by node and line (`compile`), DOT output (`dot`) and building the
//! dataflow a compiled graph describes (`build`).

pub mod build;
pub mod compile;
pub mod config;
pub mod dot;
pub mod resources;
pub mod spec;

pub use compile::{compile, Compiled};
pub use resources::{check_resources, Resources};
pub use spec::{GraphError, GraphFile};
