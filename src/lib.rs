//! Petrel: Tinybird-style data sources and SQL pipes, kept incrementally up to date with
//! differential dataflow and served by pull (HTTP endpoints), push and sinks.
//!
//! The crates below this one hold the ground floor (`petrel-value`), the datafile, template
//! and SQL front ends, the maintained-view layer and the engine. This crate loads projects,
//! stores and ingests data, runs projects and serves them.

pub mod cli;
pub mod cluster;
pub mod host;
pub mod ingest;
pub mod project;
pub mod runtime;
pub mod serve;
pub mod sink;
pub mod storage;
