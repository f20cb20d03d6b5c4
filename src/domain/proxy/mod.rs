//! The rules of the OpenAI-compatible gateway under `/v1` (its handlers are in
//! `surface::v1`): the few fields read from a request, prices, providers and their
//! cache, metering of the stream, the crash journal, limits and the OpenAI error shape.
//!
//! - [`request`]: key, body limit, the few fields read, forwarded headers.
//! - [`affinity`]: a session's turns on one upstream (its prompt cache).
//! - [`metering`], [`sse`]: reading the usage from the stream.
//! - [`pricing`], [`upstreams`], [`catalog`]: prices, providers and their cache;
//!   [`upstream_check`]: an admin's "test connection"; [`codex_models`]: Codex's catalogue shape.
//! - [`journal`], [`recovery`]: the crash journal of forwarded requests and its replay at start;
//!   [`outgoing`]: the upstream request body that journals the request when it is sent.
//! - [`limits`]: request rate and concurrent streams.
//! - [`error`]: the OpenAI error shape. [`mock`]: a fake upstream for tests and benchmarks.

pub mod affinity;
pub mod catalog;
pub mod codex_models;
pub mod error;
pub mod journal;
pub mod limits;
pub mod metering;
pub mod mock;
pub mod outgoing;
pub mod pricing;
pub mod recovery;
pub mod request;
pub mod sse;
pub mod upstream_check;
pub mod upstreams;
