//! What stream functions are built from and call: [`Value`]s (numbers,
//! strings, events, functions, child streams), [`Function`]s (a user
//! callable or a native fold), and [`Args`], from which each node's
//! constructor takes its arguments with clear errors.
//!
//! The engine knows no Python: the Python layer turns its arguments into
//! `Value`s, and user callables into `Function`s.

use std::fmt;
use std::sync::Arc;

use smol_str::SmolStr;

use super::{NodeError, NodeRef};
use crate::event::{Attributes, Event, Number, Tags};

/// A value passed to or returned from a stream function.
#[derive(Clone)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<Value>),
    /// Key/value pairs in the order given (a Python dict).
    Map(Vec<(String, Value)>),
    Event(Arc<Event>),
    Function(Arc<dyn Function>),
    Stream(NodeRef),
}

/// A callable a node applies to events: user code, or a native fold.
pub trait Function: Send + Sync + 'static {
    fn call(&self, args: &[Value]) -> Result<Value, NodeError>;
    /// [`Function::call`] by a node whose clock says `now` (a native
    /// fold stamps an event it makes up, like `count` of nothing, with it).
    fn call_at(&self, args: &[Value], _now: f64) -> Result<Value, NodeError> {
        self.call(args)
    }
    /// Whether the result is truthy (predicates); user code answers with
    /// its own language's truthiness.
    fn test(&self, args: &[Value]) -> Result<bool, NodeError> {
        Ok(self.call(args)?.is_truthy())
    }
    /// How it reads in `describe` strings and logs.
    fn describe(&self) -> String;
    /// For the embedding layer to find its own functions again.
    fn as_any(&self) -> &dyn std::any::Any;
}

impl Value {
    /// What kind of value this is, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::List(_) => "list",
            Value::Map(_) => "dict",
            Value::Event(_) => "Event",
            Value::Function(_) => "function",
            Value::Stream(_) => "stream",
        }
    }

    /// Python's truthiness.
    pub fn is_truthy(&self) -> bool {
        match self {
            Value::None => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::Float(f) => *f != 0.0,
            Value::Str(s) => !s.is_empty(),
            Value::List(l) => !l.is_empty(),
            Value::Map(m) => !m.is_empty(),
            _ => true,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }

    pub fn from_number(n: Option<Number>) -> Value {
        match n {
            None => Value::None,
            Some(Number::Int(i)) => Value::Int(i),
            Some(Number::Float(f)) => Value::Float(f),
        }
    }

    fn from_opt_str(s: &Option<SmolStr>) -> Value {
        s.as_ref()
            .map_or(Value::None, |s| Value::Str(s.to_string()))
    }

    /// A list of events, as windows and folds pass them to functions; an
    /// empty slot (see [`super::empty_slot`]) is None.
    pub fn events(events: &[Arc<Event>]) -> Value {
        let item = |e: &Arc<Event>| match super::is_empty_slot(e) {
            true => Value::None,
            false => Value::Event(Arc::clone(e)),
        };
        Value::List(events.iter().map(item).collect())
    }

    /// The events a function returned: one event, a dict of fields, a list
    /// of either, or None for none.
    pub fn into_events(self) -> Result<Vec<Arc<Event>>, String> {
        match self {
            Value::None => Ok(Vec::new()),
            // None items are skipped, as a None result is.
            Value::List(items) => items
                .into_iter()
                .filter_map(|v| v.into_event().transpose())
                .collect(),
            other => Ok(other.into_event()?.into_iter().collect()),
        }
    }

    /// One event from an `Event` or a dict of fields; None for None.
    pub fn into_event(self) -> Result<Option<Arc<Event>>, String> {
        match self {
            Value::None => Ok(None),
            Value::Event(e) => Ok(Some(e)),
            Value::Map(fields) => {
                let mut e = Event::default();
                for (k, v) in &fields {
                    set_field(&mut e, k, v)?;
                }
                Ok(Some(Arc::new(e)))
            }
            other => Err(format!(
                "expected an Event or a dict of fields, not {}",
                other.type_name()
            )),
        }
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

impl From<i32> for Value {
    fn from(v: i32) -> Self {
        Value::Int(v.into())
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Str(v.to_owned())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Str(v)
    }
}

impl From<NodeRef> for Value {
    fn from(v: NodeRef) -> Self {
        Value::Stream(v)
    }
}

impl From<Event> for Value {
    fn from(v: Event) -> Self {
        Value::Event(Arc::new(v))
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for Value {
    /// Python-like: `2`, `0.5`, `"ok"`, `["a", "b"]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::None => write!(f, "None"),
            Value::Bool(b) => write!(f, "{}", if *b { "True" } else { "False" }),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Str(s) => write!(f, "{s:?}"),
            Value::List(items) => {
                let parts: Vec<String> = items.iter().map(|v| v.to_string()).collect();
                write!(f, "[{}]", parts.join(", "))
            }
            Value::Map(pairs) => {
                let parts: Vec<String> = pairs.iter().map(|(k, v)| format!("{k:?}: {v}")).collect();
                write!(f, "{{{}}}", parts.join(", "))
            }
            Value::Event(e) => write!(f, "Event({})", e.summary()),
            Value::Function(func) => write!(f, "{}", func.describe()),
            Value::Stream(node) => write!(f, "{}", node.describe()),
        }
    }
}

impl PartialEq for Value {
    /// Equality as `changed` and `match` need it: numbers compare by value,
    /// events by content; functions and streams by identity.
    fn eq(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::None, Value::None) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Str(a), Value::Str(b)) => a == b,
            (Value::List(a), Value::List(b)) => a == b,
            (Value::Map(a), Value::Map(b)) => a == b,
            (Value::Event(a), Value::Event(b)) => a == b,
            (Value::Function(a), Value::Function(b)) => Arc::ptr_eq(a, b),
            (Value::Stream(a), Value::Stream(b)) => Arc::ptr_eq(a, b),
            (a, b) => match (a.as_f64(), b.as_f64()) {
                (Some(x), Some(y)) => x == y,
                _ => false,
            },
        }
    }
}

/// The value of an event's field (`host`, `metric`, …) or attribute.
pub fn field(e: &Event, name: &str) -> Value {
    match name {
        "host" => Value::from_opt_str(&e.host),
        "service" => Value::from_opt_str(&e.service),
        "state" => Value::from_opt_str(&e.state),
        "description" => Value::from_opt_str(&e.description),
        "time" => Value::from_number(e.time),
        "ttl" => e.ttl.map_or(Value::None, Value::Float),
        "metric" => Value::from_number(e.metric),
        "tags" => Value::List(e.tags.iter().map(|t| Value::Str(t.to_string())).collect()),
        "attributes" => Value::Map(
            e.attributes
                .iter()
                .map(|(k, v)| (k.to_owned(), Value::Str(v.to_owned())))
                .collect(),
        ),
        other => e
            .attributes
            .get(other)
            .map_or(Value::None, |v| Value::Str(v.to_owned())),
    }
}

/// Sets one field (or attribute) of `e`; None clears it.
pub fn set_field(e: &mut Event, name: &str, v: &Value) -> Result<(), String> {
    let text = |v: &Value| -> Result<Option<SmolStr>, String> {
        match v {
            Value::None => Ok(None),
            Value::Str(s) => Ok(Some(SmolStr::new(s))),
            other => Err(format!(
                "event field `{name}` must be a str, not {}",
                other.type_name()
            )),
        }
    };
    let number = |v: &Value| -> Result<Option<Number>, String> {
        match v {
            Value::None => Ok(None),
            Value::Int(i) => Ok(Some(Number::Int(*i))),
            Value::Float(f) => Ok(Some(Number::Float(*f))),
            other => Err(format!(
                "event field `{name}` must be a number, not {}",
                other.type_name()
            )),
        }
    };
    match name {
        "host" => e.host = text(v)?,
        "service" => e.service = text(v)?,
        "state" => e.state = text(v)?,
        "description" => e.description = text(v)?,
        "time" => e.time = number(v)?,
        "ttl" => e.ttl = number(v)?.map(Number::as_f64),
        "metric" => e.metric = number(v)?,
        "tags" => {
            e.tags = match v {
                Value::None => Tags::new(),
                Value::List(items) => items
                    .iter()
                    .map(|t| text(t).map(|t| t.unwrap_or_default()))
                    .collect::<Result<_, _>>()?,
                other => {
                    return Err(format!(
                        "event field `tags` must be a list of str, not {}",
                        other.type_name()
                    ))
                }
            }
        }
        "attributes" => {
            let Value::Map(pairs) = v else {
                return Err(format!(
                    "event field `attributes` must be a dict, not {}",
                    v.type_name()
                ));
            };
            e.attributes = Attributes::new();
            for (k, v) in pairs {
                set_field(e, k, v)?;
            }
        }
        other => match v {
            Value::None => {
                e.attributes.remove(other);
            }
            Value::Str(s) => {
                e.attributes.insert(other, s.as_str());
            }
            v => {
                e.attributes.insert(other, v.to_string());
            }
        },
    }
    Ok(())
}

/// A stream function's arguments: positional values, keyword values, and
/// the child streams that come last. Constructors take what they need in
/// order, then call [`Args::finish`], which rejects anything left over.
pub struct Args {
    /// The stream function's signature, e.g. `rate(interval, *children)`,
    /// for error messages.
    pub signature: String,
    positional: std::collections::VecDeque<Value>,
    named: Vec<(String, Value)>,
    children: Vec<NodeRef>,
}

/// A constructor's complaint about its arguments; the message names the
/// stream function and what it expected. Python raises it as `TypeError`
/// when an argument has the wrong type, else as `ValueError`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct BuildError {
    pub message: String,
    pub wrong_type: bool,
}

impl Args {
    pub fn new(
        signature: String,
        positional: Vec<Value>,
        named: Vec<(String, Value)>,
        children: Vec<NodeRef>,
    ) -> Self {
        Args {
            signature,
            positional: positional.into(),
            named,
            children,
        }
    }

    /// A bad value: `rate(interval, *children): interval must be greater than 0, not -1`.
    pub fn error(&self, msg: impl fmt::Display) -> BuildError {
        BuildError {
            message: format!("{}: {msg}", self.signature),
            wrong_type: false,
        }
    }

    /// A value of the wrong type: `…: interval must be a number, not str`.
    pub fn type_error(&self, msg: impl fmt::Display) -> BuildError {
        BuildError {
            wrong_type: true,
            ..self.error(msg)
        }
    }

    fn take_named(&mut self, name: &str) -> Option<Value> {
        let i = self.named.iter().position(|(k, _)| k == name)?;
        Some(self.named.remove(i).1)
    }

    /// The next positional argument, or the keyword argument `name`.
    pub fn opt(&mut self, name: &str) -> Option<Value> {
        self.take_named(name)
            .or_else(|| self.positional.pop_front())
    }

    /// Like [`Args::opt`], but required.
    pub fn value(&mut self, name: &str) -> Result<Value, BuildError> {
        self.opt(name)
            .ok_or_else(|| self.error(format_args!("missing argument `{name}`")))
    }

    /// A keyword-only argument.
    pub fn keyword(&mut self, name: &str) -> Option<Value> {
        self.take_named(name)
    }

    pub fn number(&mut self, name: &str) -> Result<f64, BuildError> {
        let v = self.value(name)?;
        self.expect_number(name, v)
    }

    pub fn opt_number(&mut self, name: &str) -> Result<Option<f64>, BuildError> {
        match self.opt(name) {
            None | Some(Value::None) => Ok(None),
            Some(v) => self.expect_number(name, v).map(Some),
        }
    }

    fn expect_number(&self, name: &str, v: Value) -> Result<f64, BuildError> {
        match v.as_f64() {
            Some(x) if x.is_finite() => Ok(x),
            Some(x) => Err(self.error(format_args!("`{name}` must be a finite number, not {x}"))),
            None => Err(self.type_error(format_args!(
                "`{name}` must be a number, not {}",
                describe_arg(&v)
            ))),
        }
    }

    /// A number greater than zero (an interval, a size).
    pub fn positive(&mut self, name: &str) -> Result<f64, BuildError> {
        let x = self.number(name)?;
        if x > 0.0 {
            Ok(x)
        } else {
            Err(self.error(format_args!("`{name}` must be greater than 0, not {x}")))
        }
    }

    /// A whole number of at least 1 (a count of events).
    pub fn count(&mut self, name: &str) -> Result<usize, BuildError> {
        let x = self.number(name)?;
        if x >= 1.0 && x.fract() == 0.0 && x <= u32::MAX as f64 {
            Ok(x as usize)
        } else {
            Err(self.error(format_args!("`{name}` must be a whole number ≥ 1, not {x}")))
        }
    }

    pub fn string(&mut self, name: &str) -> Result<String, BuildError> {
        match self.value(name)? {
            Value::Str(s) => Ok(s),
            v => Err(self.type_error(format_args!(
                "`{name}` must be a str, not {}",
                describe_arg(&v)
            ))),
        }
    }

    pub fn function(&mut self, name: &str) -> Result<Arc<dyn Function>, BuildError> {
        match self.value(name)? {
            Value::Function(f) => Ok(f),
            v => Err(self.type_error(format_args!(
                "`{name}` must be a function (like `lambda e: e.metric > 1`), not {}",
                describe_arg(&v)
            ))),
        }
    }

    /// Every remaining positional argument, each a str (`by`'s fields).
    pub fn strings(&mut self, name: &str) -> Result<Vec<String>, BuildError> {
        let mut out = Vec::new();
        while let Some(v) = self.positional.pop_front() {
            match v {
                Value::Str(s) => out.push(s),
                v => {
                    return Err(self.type_error(format_args!(
                        "`{name}` must be str, not {}",
                        describe_arg(&v)
                    )))
                }
            }
        }
        Ok(out)
    }

    /// Every remaining positional argument.
    pub fn rest(&mut self) -> Vec<Value> {
        self.positional.drain(..).collect()
    }

    /// The child streams (the trailing stream arguments).
    pub fn children(&mut self) -> Vec<NodeRef> {
        std::mem::take(&mut self.children)
    }

    /// A keyword-only stream argument, such as `else_=`.
    pub fn stream_keyword(&mut self, name: &str) -> Result<Option<NodeRef>, BuildError> {
        match self.take_named(name) {
            None | Some(Value::None) => Ok(None),
            Some(Value::Stream(s)) => Ok(Some(s)),
            Some(v) => Err(self.type_error(format_args!(
                "`{name}` must be a stream, not {}",
                describe_arg(&v)
            ))),
        }
    }

    /// Rejects arguments nobody took.
    pub fn finish(self) -> Result<(), BuildError> {
        if let Some(v) = self.positional.front() {
            return Err(self.type_error(format_args!(
                "unexpected argument {}; child streams come last, and must be streams (like printer())",
                describe_arg(v)
            )));
        }
        if let Some((k, _)) = self.named.first() {
            return Err(self.type_error(format_args!("unexpected keyword argument `{k}`")));
        }
        if !self.children.is_empty() {
            return Err(self.type_error("takes no child streams"));
        }
        Ok(())
    }
}

/// `'x' (str)`, for errors.
fn describe_arg(v: &Value) -> String {
    match v {
        Value::None | Value::Function(_) | Value::Stream(_) => v.type_name().to_owned(),
        _ => format!("{v} ({})", v.type_name()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_take_positional_then_keyword_and_reject_leftovers() {
        let mut a = Args::new(
            "rate(interval, *children)".into(),
            vec![Value::Int(5)],
            vec![("extra".into(), Value::Int(1))],
            Vec::new(),
        );
        assert_eq!(a.positive("interval").unwrap(), 5.0);
        let err = a.finish().unwrap_err();
        assert!(err.wrong_type);
        assert_eq!(
            err.message,
            "rate(interval, *children): unexpected keyword argument `extra`"
        );
        let mut a = Args::new(
            "rate(interval, *children)".into(),
            vec![Value::Str("x".into())],
            vec![],
            vec![],
        );
        assert_eq!(
            a.positive("interval").unwrap_err().message,
            "rate(interval, *children): `interval` must be a number, not \"x\" (str)"
        );
    }

    #[test]
    fn a_functions_list_result_keeps_its_events_and_skips_nones() {
        let e = |host: &str| {
            Value::Event(Arc::new(Event {
                host: Some(host.into()),
                ..Event::default()
            }))
        };
        let got = Value::List(vec![e("a"), Value::None, e("b")])
            .into_events()
            .unwrap();
        let hosts: Vec<_> = got.iter().map(|e| e.host.as_deref().unwrap()).collect();
        assert_eq!(hosts, ["a", "b"]);
        assert!(Value::List(vec![Value::Int(1)]).into_events().is_err());
    }

    #[test]
    fn fields_read_and_write_through_values() {
        let mut e = Event::default();
        set_field(&mut e, "state", &Value::Str("ok".into())).unwrap();
        set_field(&mut e, "metric", &Value::Int(3)).unwrap();
        set_field(&mut e, "region", &Value::Str("eu".into())).unwrap();
        assert_eq!(field(&e, "state"), Value::Str("ok".into()));
        assert_eq!(field(&e, "metric"), Value::Float(3.0));
        assert_eq!(field(&e, "region"), Value::Str("eu".into()));
        assert!(set_field(&mut e, "metric", &Value::Str("x".into())).is_err());
    }
}
