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
            Field::Attribute(name) => event.attributes.get(name).map_or(Val::Nil, Val::Attr),
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
        (Val::Str(x) | Val::Attr(x), Val::Str(y) | Val::Attr(y)) => str_eq(x, y),
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

/// String equality. Empty strings are settled without calling `memcmp`,
/// which some libc builds make surprisingly slow for a zero length.
#[inline]
fn str_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && (a.is_empty() || a == b)
}

/// The first occurrence of the non-empty `needle` in `hay`: a scan for its
/// first byte, then a comparison. Byte-wise search is exact on UTF-8. This
/// is O(hay × needle) at worst, and fastest on the short strings events
/// carry (no searcher to build per call).
#[inline]
fn find_bytes(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let first = *needle.first()?;
    let last_start = hay.len().checked_sub(needle.len())?;
    let mut i = 0;
    while i <= last_start {
        i += hay[i..=last_start].iter().position(|&b| b == first)?;
        if hay[i..i + needle.len()] == *needle {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// A SQL LIKE pattern (`%` = any run of characters, anchored at both ends),
/// kept as its literal pieces: `"a%b%c"` is prefix `a`, middle `[b]`,
/// suffix `c`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Like {
    /// No `%` at all: the pattern is `prefix`, matched exactly.
    exact: bool,
    prefix: Box<str>,
    /// The non-empty pieces between the first and the last `%`.
    middle: Box<[Box<str>]>,
    suffix: Box<str>,
}

impl Like {
    pub(crate) fn new(pattern: &str) -> Like {
        let pieces: Vec<&str> = pattern.split('%').collect();
        match &pieces[..] {
            [first, middle @ .., last] => Like {
                exact: false,
                prefix: (*first).into(),
                middle: middle
                    .iter()
                    .filter(|p| !p.is_empty())
                    .map(|p| (*p).into())
                    .collect(),
                suffix: (*last).into(),
            },
            _ => Like {
                exact: true,
                prefix: pattern.into(),
                middle: Box::default(),
                suffix: Box::default(),
            },
        }
    }

    /// Whether `s` matches. The prefix must start `s`, the suffix must end
    /// it without overlapping the prefix, and the middle pieces must occur
    /// in order in what is left; taking each at its leftmost occurrence is
    /// enough, as `%` can absorb anything.
    #[inline]
    pub(crate) fn matches(&self, s: &str) -> bool {
        if self.exact {
            return str_eq(s, &self.prefix);
        }
        let (s, prefix, suffix) = (s.as_bytes(), self.prefix.as_bytes(), self.suffix.as_bytes());
        if s.len() < prefix.len() + suffix.len()
            || (!prefix.is_empty() && !s.starts_with(prefix))
            || (!suffix.is_empty() && !s.ends_with(suffix))
        {
            return false;
        }
        let mut rest = &s[prefix.len()..s.len() - suffix.len()];
        for piece in &self.middle {
            match find_bytes(rest, piece.as_bytes()) {
                Some(i) => rest = &rest[i + piece.len()..],
                None => return false,
            }
        }
        true
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

    /// How many simple predicates (comparisons, `tagged`, truthiness) are
    /// left after folding: the work matching one event may take.
    pub(crate) fn terms(&self) -> usize {
        match self {
            Expr::Const(_) => 0,
            Expr::Not(e) => e.terms(),
            Expr::And(es) | Expr::Or(es) => es.iter().map(Expr::terms).sum(),
            _ => 1,
        }
    }

    pub(crate) fn eval(&self, event: &Event) -> bool {
        match self {
            Expr::Const(b) => *b,
            Expr::Not(e) => !e.eval(event),
            Expr::And(es) => es.iter().all(|e| e.eval(event)),
            Expr::Or(es) => es.iter().any(|e| e.eval(event)),
            Expr::Tagged(tag) => event.tags.iter().any(|t| str_eq(t, tag)),
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
    fn find_bytes_finds_the_leftmost() {
        let f = |h: &str, n: &str| find_bytes(h.as_bytes(), n.as_bytes());
        assert_eq!(f("abcabc", "bc"), Some(1));
        assert_eq!(f("aaab", "ab"), Some(2));
        assert_eq!(f("abc", "abc"), Some(0));
        assert_eq!(f("abc", "abcd"), None);
        assert_eq!(f("abc", "x"), None);
        assert_eq!(f("", "x"), None);
        assert_eq!(f("abc", ""), None);
        assert_eq!(f("xéy", "é"), Some(1));
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
