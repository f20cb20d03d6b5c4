//! The running service: the state the surfaces share and the background jobs, above the
//! domains and below the surfaces and the composition root (`app`).

pub mod jobs;
pub mod state;
