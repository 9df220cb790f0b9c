//! (being written)

use std::sync::Arc;

use crate::event::Event;

/// One fold: a list of events in, one event (or none) out.
pub struct Fold {
    pub name: &'static str,
    pub summary: &'static str,
    pub fold: fn(&[Arc<Event>]) -> Option<Event>,
}

pub const FOLDS: &[Fold] = &[];

/// A fold as a [`Function`](super::Function): `smap(folds.mean, …)` runs it
/// natively on each list.
pub struct NativeFold(pub &'static Fold);

impl super::Function for NativeFold {
    fn call(&self, args: &[super::Value]) -> Result<super::Value, super::NodeError> {
        let events = match args {
            [super::Value::List(items)] => items
                .iter()
                .map(|v| match v {
                    super::Value::Event(e) => Ok(Arc::clone(e)),
                    other => Err(other.type_name()),
                })
                .collect::<Result<Vec<_>, _>>(),
            [super::Value::Event(e)] => Ok(vec![Arc::clone(e)]),
            [other] => Err(other.type_name()),
            _ => Err("several arguments"),
        }
        .map_err(|t| {
            super::NodeError(format!(
                "folds.{} takes a list of events, not {t}",
                self.0.name
            ))
        })?;
        Ok((self.0.fold)(&events).map_or(super::Value::None, |e| super::Value::Event(Arc::new(e))))
    }
    fn describe(&self) -> String {
        format!("folds.{}", self.0.name)
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

pub fn find(name: &str) -> Option<&'static Fold> {
    FOLDS.iter().find(|f| f.name == name)
}
