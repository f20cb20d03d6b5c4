//! HTTP tests against the real application; each runs on SQLite and PostgreSQL.

mod helpers;

mod accounts;
mod admin;
mod keys;
