//! The config a replica runs: the stream from the control plane
//! ([`discovery`]), the one place a snapshot is applied ([`apply`]), the
//! compiled [`table`], its [`routing`], its routes' [`rules`] (header
//! rules, compression) and [`cookie`] rewrites, and the last good snapshot on disk ([`cache`]).

pub mod apply;
pub mod cache;
pub mod cookie;
pub mod discovery;
pub mod routing;
pub mod rules;
pub mod table;
