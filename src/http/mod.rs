//! Everything that speaks HTTP on a socket: listeners and the connection lifecycle, TLS, the
//! client for upstream origins, and the client address behind trusted hops.

pub mod client;
pub mod client_addr;
pub mod connections;
pub mod server;
pub mod tls;
