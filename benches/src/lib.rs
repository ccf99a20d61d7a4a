//! Shared parts of Sediment's benchmark binaries (`throughput`, `recovery`, `archive`):
//! child processes, the librdkafka workload, broker targets, and realistic payloads.

pub mod events;
pub mod procs;
pub mod s3;
pub mod targets;
pub mod workload;
