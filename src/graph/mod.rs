//! Graph files: reading them (`spec`), per-op configs (`config`), compiling in phases with
//! every error named by node and line (`compile`), DOT output (`dot`) and building the
//! dataflow a compiled graph describes (`build`).

pub mod build;
pub mod compile;
pub mod config;
pub mod dot;
pub mod spec;

pub use compile::{check_resources, compile, Compiled, Resources};
pub use spec::{GraphError, GraphFile};
