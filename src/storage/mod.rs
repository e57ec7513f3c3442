//! Where datasource rows live: an append-only log per datasource that the engine replays
//! into views installed later, and a project's data folder.
//!
//! Rows are kept on disk, not in memory, so the engine's memory follows view state
//! (Principle 3). The log is the durable record a later compaction into columnar parts
//! reads from.

mod file_log;
mod memory_log;

pub use file_log::FileLog;
pub use memory_log::MemoryLog;
