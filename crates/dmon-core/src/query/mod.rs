//! Riemann's query language: parsed and compiled once, then matched against
//! events natively.
//!
//! ```
//! use dmon_core::event::Event;
//! use dmon_core::query::Query;
//!
//! let q = Query::parse(r#"state = "error rate" and (not host =~ "www.%")"#).unwrap();
//! let e = Event {
//!     host: Some("db1".into()),
//!     state: Some("error rate".into()),
//!     ..Event::default()
//! };
//! assert!(q.matches(&e));
//! ```
//!
//! # Grammar
//!
//! The grammar is Riemann's (`resources/query.g4`):
//!
//! ```text
//! query   := pred
//! pred    := pred 'or' pred | pred 'and' pred | 'not' pred | '(' pred ')' | simple
//! simple  := 'tagged' STRING
//!          | value ('=' | '!=') value
//!          | value ('<' | '<=' | '>' | '>=') NUMBER
//!          | value '=~' STRING          SQL LIKE
//!          | value '~=' STRING          regex search
//!          | value                      truthiness
//! value   := NAME | STRING | NUMBER | 'true' | 'false' | 'nil' | 'null'
//! ```
//!
//! - Precedence: `not` binds tighter than `and`, which binds tighter than
//!   `or`; both are left-associative. `not a and b` is `(not a) and b`, and
//!   `a or b and c` is `a or (b and c)`.
//! - Keywords (`and or not tagged true false nil null`) are lowercase only,
//!   as in Riemann: `AND` is a field name.
//! - Names: a letter or `_`, then letters, digits, `_`, `-` and `.`.
//!   `host service state description metric time ttl` are the event's
//!   fields, `metric_f` is an alias of `metric`, `tags` is the tag list
//!   (present when not empty), and any other name is an attribute
//!   (`event.attributes[name]`).
//! - Numbers: integers (`42`, `-7`, Riemann's `42L` and `42N`; one too big
//!   for 64 bits is read as a float), floats (`2.5`, `1e3`, `-1.5E-2`),
//!   `Infinity`, `-Infinity`, `NaN`.
//! - Strings: double-quoted, with the escapes `\" \\ \n \t \r \b \f \uXXXX`
//!   (a UTF-16 surrogate pair makes one character). Any other escape is an
//!   error, so a regex's `\d` is written `"\\d"`, as in Riemann.
//! - Whitespace separates tokens and is otherwise ignored (Riemann also
//!   counts `,` as whitespace; here it is an error).
//!
//! # Semantics
//!
//! Riemann compiles a query to Clojure; these are its meanings, with the
//! places we differ marked.
//!
//! - A field that is absent is `nil`. `field = nil` (or `null`) matches
//!   exactly when the field is absent; `field != nil` when it is present.
//! - `=`: strings compare as strings, numbers numerically across integer and
//!   float (`metric = 2` matches a metric of `2.0`; Clojure's `=` would
//!   not), `true`/`false` only equal themselves. A string never equals a
//!   number, so `host = 1` is false and `metric = "1"` is false. Attributes
//!   are strings, but an attribute also equals a number when its text parses
//!   as that number (`count = 3` matches the attribute `"3"` or `"3.0"`),
//!   because the JSON decoder turns numeric attributes into strings.
//!   Either side may be a field or a literal (`host = service` works).
//! - `!=` is exactly the negation of `=`; comparing a string with a number
//!   is therefore true.
//! - `< <= > >=`: the right side must be a number. Only a present numeric
//!   value matches (Riemann guards with `number?`): absent fields, strings
//!   and booleans never match. An attribute compares numerically when its
//!   text parses as a number, and never matches otherwise. NaN compares false
//!   with everything.
//! - `=~ "pattern"`: SQL LIKE, anchored at both ends, where `%` matches any
//!   run of characters (including newlines, where Riemann's `.*` would stop
//!   at one). Every other character is literal, `_` and regex
//!   metacharacters included, and matching is case-sensitive. Only strings
//!   (string fields, attributes) match; absent fields never do.
//! - `~= "regex"`: an unanchored search, like Clojure's `re-find`, with the
//!   [`regex`] crate's syntax (no look-around or back-references, which Java
//!   regexes have). The regex is compiled at parse time; an invalid one is a
//!   parse error at the column of its string. Only strings match.
//! - `tagged "x"`: the event has the tag `x`.
//! - A bare value tests its Clojure truthiness: `true` matches everything,
//!   `false` and `nil` nothing, a bare field matches when it is present
//!   (any string or number, even `0` or `""`), and a bare string or number
//!   literal matches everything.
//! - Parts that depend on no event (`1 < 2`, `x or true`) are folded at
//!   parse time.
//!
//! # Warnings
//!
//! A bare word on the value side of `=` or `!=` is a name, as in Riemann:
//! `service = cpu` compares the service with the attribute `cpu`, which is
//! seldom what was meant. When the word is none of the event's fields
//! above (`host service state description metric metric_f time ttl tags`)
//! it is read as an attribute, as everywhere else, and the query carries a
//! warning, once per word: `cpu is read as a field name; did you mean
//! "cpu"?` ([`Query::warnings`]). Attribute names cannot be told from
//! typos at parse time, so comparing with an attribute (`dc = region`)
//! warns too; the left side, where attributes usually are, never does.
//! The engine prints nothing: `dmon query` writes the warnings to stderr,
//! HTTP `/index` and `/series` answer them in `X-Dmon-Query-Warning`
//! headers, and the shell's `query()` prints them once per query text.
//!
//! # Errors
//!
//! [`ParseError`] gives the 1-based column, counted in characters, and says
//! what was expected and what was found instead, e.g. `parse error at column
//! 11: expected a value after '=' but found end of query`. Parentheses and
//! `not` may nest 200 deep.
//!
//! # Cost
//!
//! [`Query::matches`] allocates nothing: field names were resolved to an
//! enum, literals typed, LIKE patterns split into literal pieces (matched
//! with substring search, no regex) and regexes compiled when the query was
//! parsed. `and`/`or` chains are flat lists, evaluated left to right with
//! short-circuit. Numeric comparisons on attributes parse the attribute's
//! text on each call.

mod eval;
mod lexer;
mod parser;

use std::fmt;
use std::str::FromStr;

use crate::event::Event;

/// A compiled query. Cheap to match; clone it rather than parse it again.
#[derive(Clone, Debug)]
pub struct Query {
    source: String,
    expr: eval::Expr,
    warnings: Box<[String]>,
}

/// Why a query did not parse: where (1-based column, in characters) and
/// what was wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("parse error at column {column}: {message}")]
pub struct ParseError {
    pub column: usize,
    pub message: String,
}

impl Query {
    /// Parses and compiles `text`.
    pub fn parse(text: &str) -> Result<Query, ParseError> {
        let (expr, warnings) = parser::parse(text)?;
        Ok(Query {
            source: text.to_owned(),
            expr,
            warnings: warnings.into(),
        })
    }

    /// What in the query is valid but probably not meant (see the module's
    /// "Warnings"), one line each, each said once; empty for most queries.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Whether `event` matches. Allocates nothing.
    #[inline]
    pub fn matches(&self, event: &Event) -> bool {
        self.expr.eval(event)
    }

    /// How many simple predicates the query holds after folding
    /// (`host = "a" or not tagged "b"` holds 2): its cost per event, which
    /// servers cap.
    pub fn terms(&self) -> usize {
        self.expr.terms()
    }

    /// The text the query was parsed from.
    pub fn source(&self) -> &str {
        &self.source
    }
}

impl FromStr for Query {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Query, ParseError> {
        Query::parse(text)
    }
}

/// Shows the query's source text.
impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api() {
        let q: Query = "metric > 1".parse().unwrap();
        assert_eq!(q.source(), "metric > 1");
        assert_eq!(q.to_string(), "metric > 1");
        let e = Event {
            metric: Some(crate::event::Number::Int(2)),
            ..Event::default()
        };
        assert!(q.matches(&e));
        assert!(!q.matches(&Event::default()));
    }

    #[test]
    fn terms_counts_simple_predicates_after_folding() {
        let terms = |q: &str| Query::parse(q).unwrap().terms();
        assert_eq!(terms("true"), 0);
        assert_eq!(terms("host = \"a\""), 1);
        assert_eq!(
            terms("host = \"a\" or not (tagged \"b\" and metric > 1)"),
            3
        );
        assert_eq!(terms("1 < 2 and service =~ \"x%\""), 1);
    }

    #[test]
    fn warnings_are_kept_with_the_query() {
        let q = Query::parse("service = cpu or service = cpu").unwrap();
        assert_eq!(
            q.clone().warnings(),
            ["cpu is read as a field name; did you mean \"cpu\"?"]
        );
        assert!(Query::parse("service = \"cpu\"")
            .unwrap()
            .warnings()
            .is_empty());
    }

    #[test]
    fn error_display() {
        let e = Query::parse("host = ").unwrap_err();
        assert_eq!(
            e.to_string(),
            "parse error at column 8: expected a value after '=' but found end of query"
        );
        assert_eq!("host = ".parse::<Query>().unwrap_err(), e);
    }
}
