//! HTTP/2 (RFC 9113) on the client side, over the `h2` crate: the I/O adapter
//! (`io`), the frame guard against floods (`guard`), and the server (`server`),
//! which presents each stream's request to the shared decision (`exchange`) as an
//! HTTP/1.1 head and forwards it (`proxy`).

pub mod from_h1;
pub mod guard;
pub mod io;
pub mod proxy;
pub mod server;
pub mod translate;
pub mod upstream;
