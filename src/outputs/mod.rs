//! Outputs: services that carry events out of dmon (mail today). They run off
//! the event path, behind bounded queues, so a slow or down peer never blocks
//! or loses other events. In a rehearsal they are captured instead
//! ([`capture`]).

pub mod capture;
pub mod email;
