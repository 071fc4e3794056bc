//! HTTP/1.x protocol logic, sans-io: head parsing and smuggling checks (`parse`,
//! with `scan` tokenising upstream response heads), body framing (`body`), head
//! rewriting (`rewrite`) and pre-rendered answers (`answer`). Nothing here touches a
//! socket.

pub mod answer;
pub mod body;
pub mod parse;
pub mod rewrite;
pub mod scan;
