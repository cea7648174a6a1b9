//! rung: purchase-intent scoring from a visitor's micro-conversions.
//!
//! A map of the crate, from the edge inward:
//! - [`grpc`]: the gRPC transport — handlers, proto ↔ domain conversions and
//!   the error → Status table. No scoring logic lives there.
//! - [`startup`]: loads taxonomy and model, binds, serves until stopped.
//! - [`engine`]: the facade every front end calls (the only door to the
//!   store): scores, writes, ingestion streams, audiences, model reloads.
//! - [`store`]: where visitors are kept — the embedded redb store or a
//!   shared Redis — behind one trait with one contract.
//! - [`deploy`]: the serving model — loading artifact files, swapping a new
//!   model in without dropping a call, watching the file for changes.
//! - [`audience`]: the segment language and funnel tallies (pure); the
//!   engine runs them over the store.
//! - [`scoring`]: pure math — the one feature function, the weighted ladder,
//!   the logistic model.
//! - [`domain`]: validated types — time, visitor ids, events, the taxonomy.
//! - [`training`] and [`simulator`]: the offline side — synthetic journeys
//!   and fitting the logistic model with linfa.
//! - [`auth`]: API keys and roles, transport-neutral; the gRPC edge
//!   (`grpc::edge`) asks it who is calling.
//! - [`metrics`]: the Prometheus registry each server keeps.
//! - [`config`] and [`telemetry`]: settings and logging, set up once.
//!
//! `fuzzing` (hidden) holds the bodies of the fuzz targets in `fuzz/`.

pub mod audience;
pub mod auth;
pub mod config;
pub mod deploy;
pub mod domain;
pub mod engine;
#[doc(hidden)]
pub mod fuzzing;
pub mod grpc;
pub mod load;
pub mod metrics;
pub mod scoring;
pub mod simulator;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod training;
