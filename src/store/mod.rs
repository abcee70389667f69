//! What the engine keeps on disk: manifests (snapshots per version), committed for all sinks
//! at once through the run state, all written atomically (temporary file, fsync, rename).

pub mod answers;
pub mod atomic;
pub mod commit;
pub mod contact_sheet;
pub mod content;
pub mod error;
pub mod failpoint;
pub mod gc;
pub mod image_scan;
pub mod images;
pub mod manifest;
pub mod parquet_table;
pub mod plots;
pub mod state;
pub mod table_columns;

pub use error::StoreError;
