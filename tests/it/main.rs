//! Integration tests: real tansu broker, the daemon in-process or as the real binary, and a
//! real gRPC client, all on loopback.

mod binary;
mod estimator;
mod faults;
mod observability;
mod plugins;
mod scaler;
mod security;
mod support;
