//! Integration tests: Apache Kafka (one node shared by the tests that leave it alone, brokers
//! of their own for those that stop it, a three-node cluster), Redis, the daemon in-process
//! or as the real binary, and a real gRPC client, all on loopback.

mod binary;
mod brokers;
mod chart;
mod commits;
mod estimator;
mod faults;
mod fleet;
mod groups;
mod image;
mod kerberos;
mod lifecycle;
mod monitoring;
mod oauth;
mod observability;
mod plugins;
mod scaler;
mod security;
mod support;
mod time_lag;
mod wire;
