//! Proxy-mode and TLS throughput (being written).
fn main() {}
