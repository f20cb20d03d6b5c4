//! What the outside world talks to: the JSON API (`api`), the pages (`web`), and the router
//! that puts them together with `/v1` (`routes`). Handlers are thin: they read the request,
//! call a domain function with the narrow parts of the state, and map its error once.

pub mod api;
pub mod routes;
pub mod v1;
pub mod web;
