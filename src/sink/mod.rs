//! Sinks: maintained results pushed to other systems as they change.

pub mod kafka;
