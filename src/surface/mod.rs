//! What the outside world talks to: the JSON API (`api`), the pages (`web`), the
//! OpenAI-compatible `/v1` (`v1`), and the router that puts them together (`routes`).
//! Handlers are thin: they read the request, call a domain function with the narrow parts
//! of the state, and map its error once. Every admin change, from the API or a page, is
//! made through `admin`, written once there with its audit row.

pub mod admin;
pub mod api;
pub mod routes;
pub mod v1;
pub mod web;
