//! The services stream nodes reach while they handle an event: the index,
//! the mailer, and the console. One context per running server.

use std::sync::Arc;

use crate::console::LineSink;
use crate::index::Index;
use crate::outputs::email::Mailer;

pub struct Context {
    pub index: Index,
    pub mailer: Mailer,
    pub console: Arc<dyn LineSink>,
}

impl Context {
    pub fn new(mailer: Mailer, console: Arc<dyn LineSink>) -> Self {
        Context {
            index: Index::new(),
            mailer,
            console,
        }
    }
}
