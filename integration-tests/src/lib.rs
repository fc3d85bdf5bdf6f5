//! The test harness of Switchyard: start the real control plane and data planes
//! as child processes, real backends in process, and talk to all of them over
//! sockets on `127.0.0.1`, with ports the kernel picked.
//!
//! # Layout
//!
//! - [`process`]: a child process, its log, the addresses it reports, `kill -9`.
//! - [`control_plane`]: [`spawn_control_plane`] and the REST API helpers.
//! - [`data_plane`]: [`spawn_data_plane`], the proxy and admin addresses.
//! - [`etcd`]: a real etcd cluster (one or more members) on ports of its own.
//! - [`fleet`]: a control plane with its replicas, connected, in one value.
//! - [`backend`]: [`spawn_backend`], a hyper server that answers a fixed body
//!   and echoes what it received.
//! - [`echo_backend`]: [`spawn_echo_backend`], a backend that reads request
//!   bodies (streamed through a checksum), echoes them, streams large
//!   downloads, sleeps, and answers repeated and hop-by-hop headers on request.
//! - [`grpc_backend`]: [`grpc_backend::spawn_grpc_backend`], a tonic server of the test
//!   service `Echo` (`proto/echo.proto`) that counts calls, cancellations and connections.
//! - [`h2_backend`]: an HTTP/2-only member (h2c, or TLS with ALPN `h2`) that records
//!   each request whole and answers its body back with a trailer.
//! - [`raw_backend`]: [`spawn_raw_backend`], a member on a bare socket that
//!   closes without answering, or answers garbage or a response written to
//!   the byte.
//! - [`scripted`]: [`scripted::spawn_scripted`], a member whose answers are scripted per
//!   connection and per request, logging which connection each request came on.
//! - [`raw_client`]: a client on a bare socket (two `Host` lines, absolute
//!   form, trickled heads, stalled bodies, raw h2 frames).
//! - [`payload`]: large bodies generated on the fly ([`payload::Payload`]) and a
//!   streaming byte count and hash ([`payload::Checksum`]).
//! - [`conn`]: connection-level HTTP/1.1 and h2c clients for streamed bodies.
//! - [`bodies`]: the JSON bodies of common API calls.
//! - [`client`]: a small HTTP client that returns status, headers and body.
//! - [`load`]: a bounded client loop that counts every failure.
//! - [`eventually`]: poll a condition until a deadline ([`eventually()`]) or for a
//!   while ([`consistently`]); never a bare sleep.
//! - [`dirs`]: one temporary directory per test.
//! - [`tls_backend`]: an `https://` member and the test CA that signs its
//!   certificates (and the replica's own, for `--tls-cert`).
//! - [`tls_client`]: a client of a replica's `--tls-listen` (SNI, ALPN and
//!   TLS versions chosen; HTTP/1.1 or h2 on one kept-open connection).

pub mod backend;
pub mod bodies;
pub mod client;
pub mod conn;
pub mod control_plane;
pub mod data_plane;
pub mod dirs;
pub mod echo_backend;
pub mod etcd;
pub mod eventually;
pub mod fleet;
pub mod grpc_backend;
pub mod h2_backend;
pub mod load;
pub mod payload;
pub mod process;
pub mod raw_backend;
pub mod raw_client;
pub mod scripted;
pub mod tls_backend;
pub mod tls_client;

pub use backend::{Backend, SeenRequest, spawn_backend};
pub use client::{Client, Response, get};
pub use control_plane::{ControlPlane, spawn_control_plane};
pub use data_plane::{DataPlane, DataPlaneOptions, spawn_data_plane};
pub use dirs::TestDir;
pub use echo_backend::{EchoBackend, EchoRequest, spawn_echo_backend};
pub use eventually::{consistently, eventually};
pub use fleet::Fleet;
pub use load::{Load, LoadOptions, LoadReport};
pub use raw_backend::{Misbehaviour, RawBackend, spawn_raw_backend};

/// An address on 127.0.0.1 that nobody listens on right now (the kernel's
/// pick, released at once): a member that refuses every connection.
pub fn closed_port() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("can bind 127.0.0.1:0");
    listener
        .local_addr()
        .expect("a bound listener has an address")
}

use std::time::Duration;

/// How long a replica may take to follow a change it was not waited for
/// (reconnect backoff after a control-plane restart included).
pub const SYNC_DEADLINE: Duration = Duration::from_secs(45);

/// Shorthand for durations in seconds.
pub const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}
