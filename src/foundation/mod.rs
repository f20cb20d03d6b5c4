//! What every layer builds on and that knows nothing of the business: integer money, the
//! calendar, the database, the one domain error, sealed secrets, configuration.

pub mod client_ip;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod db;
pub mod error;
pub mod markdown;
pub mod money;
pub mod redact;
pub mod secrets;
