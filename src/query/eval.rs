//! The compiled form of a query and its evaluation against an event.
//!
//! Everything that can be decided once is decided at parse time: field names
//! are resolved to [`Field`], literals are typed, LIKE patterns are split
//! into literal pieces and regexes are compiled. Evaluation borrows from the
//! event and the query and never allocates.

use std::cmp::Ordering;

use regex::Regex;
use smol_str::SmolStr;

use crate::event::{Event, Number};

/// A field of the event, resolved from its name at parse time.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Field {
    Host,
    Service,
    State,
    Description,
    /// `metric`, and its alias `metric_f`.
    Metric,
    Time,
    Ttl,
    /// Present when the event has at least one tag.
    Tags,
    /// Any other name: `event.attributes[name]`.
    Attribute(Box<str>),
}

impl Field {
    pub(crate) fn from_name(name: &str) -> Field {
        match name {
            "host" => Field::Host,
            "service" => Field::Service,
            "state" => Field::State,
            "description" => Field::Description,
            "metric" | "metric_f" => Field::Metric,
            "time" => Field::Time,
            "ttl" => Field::Ttl,
            "tags" => Field::Tags,
            other => Field::Attribute(other.into()),
        }
    }

    /// The field's value in `event`.
    #[inline]
    fn get<'a>(&'a self, event: &'a Event) -> Val<'a> {
        fn s(v: &Option<SmolStr>) -> Val<'_> {
            v.as_deref().map_or(Val::Nil, Val::Str)
        }
        match self {
            Field::Host => s(&event.host),
            Field::Service => s(&event.service),
            Field::State => s(&event.state),
            Field::Description => s(&event.description),
            Field::Metric => event.metric.map_or(Val::Nil, Val::Num),
            Field::Time => event.time.map_or(Val::Nil, Val::Num),
            Field::Ttl => event.ttl.map_or(Val::Nil, |t| Val::Num(Number::Float(t))),
            Field::Tags if event.tags.is_empty() => Val::Nil,
            Field::Tags => Val::Tags(&event.tags),
            Field::Attribute(name) => event
                .attributes
                .get(&**name)
                .map_or(Val::Nil, |v| Val::Attr(v)),
        }
    }
}

/// A literal in the query.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Lit {
    Nil,
    Bool(bool),
    Num(Number),
    Str(Box<str>),
}

/// One side of a comparison.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Operand {
    Field(Field),
    Lit(Lit),
}

impl Operand {
    #[inline]
    fn get<'a>(&'a self, event: &'a Event) -> Val<'a> {
        match self {
            Operand::Field(f) => f.get(event),
            Operand::Lit(Lit::Nil) => Val::Nil,
            Operand::Lit(Lit::Bool(b)) => Val::Bool(*b),
            Operand::Lit(Lit::Num(n)) => Val::Num(*n),
            Operand::Lit(Lit::Str(s)) => Val::Str(s),
        }
    }
}

/// A value seen during evaluation, borrowed from the event or the query.
#[derive(Clone, Copy, Debug)]
enum Val<'a> {
    /// Absent field, or the literal `nil`.
    Nil,
    Bool(bool),
    Num(Number),
    Str(&'a str),
    /// An attribute: a string that compares as a number against numbers.
    Attr(&'a str),
    /// The event's tags (never empty: no tags is `Nil`).
    Tags(&'a [SmolStr]),
}

impl Val<'_> {
    /// Clojure truthiness: everything but nil and false.
    fn truthy(self) -> bool {
        !matches!(self, Val::Nil | Val::Bool(false))
    }

    /// The value as a number, if it is one or is an attribute that parses
    /// as one.
    #[inline]
    fn number(self) -> Option<Number> {
        match self {
            Val::Num(n) => Some(n),
            Val::Attr(s) => parse_number(s),
            _ => None,
        }
    }
}

fn as_str<'a>(v: Val<'a>) -> Option<&'a str> {
    match v {
        Val::Str(s) | Val::Attr(s) => Some(s),
        _ => None,
    }
}

/// An attribute's text as a number: an integer if it is one, else a float.
#[inline]
fn parse_number(s: &str) -> Option<Number> {
    s.parse()
        .map(Number::Int)
        .or_else(|_| s.parse().map(Number::Float))
        .ok()
}

fn num_cmp(a: Number, b: Number) -> Option<Ordering> {
    match (a, b) {
        (Number::Int(x), Number::Int(y)) => Some(x.cmp(&y)),
        _ => a.as_f64().partial_cmp(&b.as_f64()),
    }
}

/// `a = b`.
fn equal(a: Val<'_>, b: Val<'_>) -> bool {
    match (a, b) {
        (Val::Nil, Val::Nil) => true,
        (Val::Bool(x), Val::Bool(y)) => x == y,
        (Val::Num(x), Val::Num(y)) => num_cmp(x, y) == Some(Ordering::Equal),
        (Val::Str(x) | Val::Attr(x), Val::Str(y) | Val::Attr(y)) => x == y,
        (Val::Attr(s), Val::Num(n)) | (Val::Num(n), Val::Attr(s)) => {
            parse_number(s).is_some_and(|x| num_cmp(x, n) == Some(Ordering::Equal))
        }
        (Val::Tags(x), Val::Tags(y)) => x == y,
        _ => false,
    }
}

/// An ordering comparison: `<`, `<=`, `>`, `>=`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Order {
    Lt,
    Le,
    Gt,
    Ge,
}

impl Order {
    fn holds(self, o: Ordering) -> bool {
        match self {
            Order::Lt => o == Ordering::Less,
            Order::Le => o != Ordering::Greater,
            Order::Gt => o == Ordering::Greater,
            Order::Ge => o != Ordering::Less,
        }
    }
}

/// A SQL LIKE pattern (`%` = any run of characters, anchored at both ends),
/// kept as its literal pieces: `"a%b%c"` is `["a", "b", "c"]`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Like {
    pieces: Vec<Box<str>>,
}

impl Like {
    pub(crate) fn new(pattern: &str) -> Like {
        Like {
            pieces: pattern.split('%').map(Into::into).collect(),
        }
    }

    /// Whether `s` matches. The first piece must start `s`, the last must
    /// end it, and the ones between must occur in order in what is left;
    /// taking each at its leftmost occurrence is enough, as `%` can absorb
    /// anything.
    #[inline]
    pub(crate) fn matches(&self, s: &str) -> bool {
        match &self.pieces[..] {
            [] => s.is_empty(),
            [only] => s == &**only,
            [first, middle @ .., last] => {
                let Some(rest) = s.strip_prefix(&**first) else {
                    return false;
                };
                let Some(mut rest) = rest.strip_suffix(&**last) else {
                    return false;
                };
                for piece in middle {
                    match rest.find(&**piece) {
                        Some(i) => rest = &rest[i + piece.len()..],
                        None => return false,
                    }
                }
                true
            }
        }
    }
}

/// A compiled query.
#[derive(Clone, Debug)]
pub(crate) enum Expr {
    Const(bool),
    Not(Box<Expr>),
    /// All of them; a chain `a and b and c` is one node.
    And(Box<[Expr]>),
    /// Any of them.
    Or(Box<[Expr]>),
    /// `tagged "x"`
    Tagged(Box<str>),
    /// A bare field or value: its truthiness.
    Truthy(Operand),
    Eq(Operand, Operand),
    Ne(Operand, Operand),
    /// `a < n` and friends; the right side is always a number literal.
    Cmp(Operand, Order, Number),
    /// `a =~ "pattern"`
    Like(Operand, Like),
    /// `a ~= "regex"`
    Regex(Operand, Regex),
}

impl Expr {
    /// Whether the expression depends on no event, so it can be folded.
    pub(crate) fn is_constant(&self) -> bool {
        let lit = |o: &Operand| matches!(o, Operand::Lit(_));
        match self {
            Expr::Const(_) => true,
            Expr::Not(e) => e.is_constant(),
            Expr::And(es) | Expr::Or(es) => es.iter().all(Expr::is_constant),
            Expr::Tagged(_) => false,
            Expr::Truthy(o) | Expr::Cmp(o, ..) | Expr::Like(o, _) | Expr::Regex(o, _) => lit(o),
            Expr::Eq(a, b) | Expr::Ne(a, b) => lit(a) && lit(b),
        }
    }

    pub(crate) fn eval(&self, event: &Event) -> bool {
        match self {
            Expr::Const(b) => *b,
            Expr::Not(e) => !e.eval(event),
            Expr::And(es) => es.iter().all(|e| e.eval(event)),
            Expr::Or(es) => es.iter().any(|e| e.eval(event)),
            Expr::Tagged(tag) => event.tags.iter().any(|t| t == &**tag),
            Expr::Truthy(o) => o.get(event).truthy(),
            Expr::Eq(a, b) => equal(a.get(event), b.get(event)),
            Expr::Ne(a, b) => !equal(a.get(event), b.get(event)),
            Expr::Cmp(a, order, n) => a
                .get(event)
                .number()
                .and_then(|x| num_cmp(x, *n))
                .is_some_and(|o| order.holds(o)),
            Expr::Like(a, like) => as_str(a.get(event)).is_some_and(|s| like.matches(s)),
            Expr::Regex(a, re) => as_str(a.get(event)).is_some_and(|s| re.is_match(s)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_pieces() {
        let m = |p: &str, s: &str| Like::new(p).matches(s);
        assert!(m("", ""));
        assert!(!m("", "a"));
        assert!(m("abc", "abc"));
        assert!(!m("abc", "abcd"));
        assert!(m("%", ""));
        assert!(m("%", "anything"));
        assert!(m("%%", ""));
        assert!(m("a%", "a"));
        assert!(m("a%", "abc"));
        assert!(!m("a%", "ba"));
        assert!(m("%c", "abc"));
        assert!(!m("%c", "cb"));
        assert!(m("a%c", "ac"));
        assert!(m("a%c", "abbc"));
        // The prefix and suffix may not share characters.
        assert!(!m("ab%bc", "abc"));
        assert!(m("ab%bc", "abbc"));
        assert!(m("a%b%c", "a-b-c"));
        assert!(m("a%b%c", "abbbc"));
        assert!(!m("a%b%c", "ac"));
        assert!(!m("a%b%b%c", "abc"));
        assert!(m("%b%", "abc"));
        assert!(m("www.%", "www.example.com"));
        assert!(!m("www.%", "wwwxexample.com"));
        assert!(m("%\n%", "a\nb"));
        assert!(m("é%ü", "éaü"));
    }

    #[test]
    fn attribute_numbers() {
        assert_eq!(parse_number("3"), Some(Number::Int(3)));
        assert_eq!(parse_number("-3.5"), Some(Number::Float(-3.5)));
        assert_eq!(parse_number("1e2"), Some(Number::Float(100.0)));
        assert_eq!(parse_number("abc"), None);
        assert_eq!(parse_number(""), None);
        assert_eq!(parse_number(" 3"), None);
    }

    #[test]
    fn numbers_compare_across_int_and_float() {
        assert_eq!(
            num_cmp(Number::Int(2), Number::Float(2.0)),
            Some(Ordering::Equal)
        );
        assert_eq!(
            num_cmp(Number::Int(i64::MAX), Number::Int(i64::MAX - 1)),
            Some(Ordering::Greater)
        );
        assert_eq!(num_cmp(Number::Float(f64::NAN), Number::Int(1)), None);
    }
}
