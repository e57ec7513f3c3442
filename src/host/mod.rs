//! The composition root's long-running parts that follow the deployed project: Kafka
//! consumers and sinks start, keep running and stop as deploys add, keep, change and remove
//! the datafiles that declare them.

mod connectors;
mod kafka_consumer;

pub use connectors::follow_connectors;
