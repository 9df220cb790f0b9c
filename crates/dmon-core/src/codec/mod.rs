//! Wire formats. Each codec turns bytes into [`Event`](crate::event::Event)s
//! and back; servers own the sockets, codecs own the bytes.

pub mod json;
pub mod riemann;
pub mod sharing;
