//! Outputs captured instead of sent: in a rehearsal every output node
//! reports what reached it to a [`capture::Capture`], and no sink (see
//! [`crate::sinks`]) is started.

pub mod capture;
