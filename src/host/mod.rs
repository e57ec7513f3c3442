//! The composition root's long-running parts that follow the deployed project: Kafka
//! consumers and sinks start, keep running and stop as deploys add, keep, change and remove
//! the datafiles that declare them; and the process settings a server starts with.

mod connectors;
mod kafka_consumer;
mod process;

pub use connectors::follow_connectors;
pub use process::tune_process;
