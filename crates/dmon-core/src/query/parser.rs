//! The parser: tokens to a compiled [`Expr`], by recursive descent.
//!
//! ```text
//! query   := or EOF
//! or      := and ('or' and)*
//! and     := not ('and' not)*
//! not     := 'not' not | primary
//! primary := '(' or ')'
//!          | 'tagged' STRING
//!          | value ( ('=' | '!=') value
//!                  | ('<' | '<=' | '>' | '>=') NUMBER
//!                  | ('=~' | '~=') STRING )?
//! value   := NAME | STRING | NUMBER | 'true' | 'false' | 'nil' | 'null'
//! ```

use regex::Regex;

use super::eval::{Expr, Field, Like, Lit, Operand, Order};
use super::lexer::{tokenize, Tok, Token};
use super::ParseError;
use crate::event::Event;

/// How deeply parentheses and `not`s may nest: deeper queries are rejected
/// rather than risking the stack.
const MAX_DEPTH: usize = 200;

/// Parses and compiles a query; also returns its warnings (see
/// [`Parser::warn_bare_word`]), each once.
pub(crate) fn parse(text: &str) -> Result<(Expr, Vec<String>), ParseError> {
    let tokens = tokenize(text)?;
    let mut p = Parser {
        tokens,
        pos: 0,
        depth: 0,
        warnings: Vec::new(),
    };
    let expr = p.or()?;
    let t = p.peek();
    if t.tok != Tok::End {
        let what = if t.tok == Tok::RParen {
            "'and', 'or' or end of query (this ')' closes nothing)"
        } else {
            "'and', 'or' or end of query"
        };
        return Err(p.expected(what, ""));
    }
    Ok((expr, p.warnings))
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    depth: usize,
    warnings: Vec<String>,
}

impl Parser {
    fn peek(&self) -> &Token {
        &self.tokens[self.pos]
    }

    fn next(&mut self) -> Token {
        let t = self.tokens[self.pos].clone();
        if t.tok != Tok::End {
            self.pos += 1;
        }
        t
    }

    /// "expected `what``after` but found <the next token>", at its column.
    fn expected(&self, what: &str, after: &str) -> ParseError {
        let t = self.peek();
        let hint = match &t.tok {
            Tok::Name(n) if is_keyword(&n.to_lowercase()) => " (keywords are lowercase)",
            _ => "",
        };
        ParseError {
            column: t.column,
            message: format!("expected {what}{after} but found {}{hint}", t.tok),
        }
    }

    fn enter(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(ParseError {
                column: self.peek().column,
                message: format!("query nested more than {MAX_DEPTH} levels deep"),
            });
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Expr, ParseError> {
        let mut terms = vec![self.and()?];
        while self.peek().tok == Tok::Or {
            self.next();
            terms.push(self.and()?);
        }
        Ok(fold_or(terms))
    }

    fn and(&mut self) -> Result<Expr, ParseError> {
        let mut terms = vec![self.not()?];
        while self.peek().tok == Tok::And {
            self.next();
            terms.push(self.not()?);
        }
        Ok(fold_and(terms))
    }

    fn not(&mut self) -> Result<Expr, ParseError> {
        if self.peek().tok != Tok::Not {
            return self.primary("");
        }
        self.next();
        self.enter()?;
        let inner = if self.peek().tok == Tok::Not {
            self.not()?
        } else {
            self.primary(" after 'not'")?
        };
        self.depth -= 1;
        Ok(match inner {
            Expr::Const(b) => Expr::Const(!b),
            Expr::Not(e) => *e,
            e => Expr::Not(Box::new(e)),
        })
    }

    fn primary(&mut self, after: &str) -> Result<Expr, ParseError> {
        let after = if after.is_empty() {
            match self.pos.checked_sub(1).map(|i| &self.tokens[i].tok) {
                Some(Tok::And) => " after 'and'",
                Some(Tok::Or) => " after 'or'",
                Some(Tok::LParen) => " after '('",
                _ => "",
            }
        } else {
            after
        };
        match self.peek().tok {
            Tok::LParen => {
                let open = self.next();
                self.enter()?;
                let inner = self.or()?;
                self.depth -= 1;
                if self.peek().tok != Tok::RParen {
                    let what = format!(
                        "'and', 'or' or ')' to close the '(' at column {}",
                        open.column
                    );
                    return Err(self.expected(&what, ""));
                }
                self.next();
                Ok(inner)
            }
            Tok::Tagged => {
                self.next();
                let Tok::Str(tag) = &self.peek().tok else {
                    return Err(self.expected("a string", " after 'tagged'"));
                };
                let tag = tag.as_str().into();
                self.next();
                Ok(Expr::Tagged(tag))
            }
            _ => {
                let Some(lhs) = self.value() else {
                    return Err(self.expected(
                        "a query term (a field, a value, 'not', 'tagged' or '(')",
                        after,
                    ));
                };
                self.relation(lhs)
            }
        }
    }

    /// A field or a literal, if the next token is one.
    fn value(&mut self) -> Option<Operand> {
        let operand = match &self.peek().tok {
            Tok::Name(n) => Operand::Field(Field::from_name(n)),
            Tok::Str(s) => Operand::Lit(Lit::Str(s.as_str().into())),
            Tok::Number(n) => Operand::Lit(Lit::Num(*n)),
            Tok::True => Operand::Lit(Lit::Bool(true)),
            Tok::False => Operand::Lit(Lit::Bool(false)),
            Tok::Nil => Operand::Lit(Lit::Nil),
            _ => return None,
        };
        self.next();
        Some(operand)
    }

    /// What follows a value: an operator and its right side, or nothing
    /// (then the value's truthiness is the test).
    fn relation(&mut self, lhs: Operand) -> Result<Expr, ParseError> {
        let op = self.peek().tok.clone();
        let after = format!(" after '{}'", op.op_text());
        let expr = match op {
            Tok::Eq | Tok::Ne => {
                self.next();
                self.warn_bare_word();
                let Some(rhs) = self.value() else {
                    return Err(self.expected("a value", &after));
                };
                if op == Tok::Eq {
                    Expr::Eq(lhs, rhs)
                } else {
                    Expr::Ne(lhs, rhs)
                }
            }
            Tok::Lt | Tok::Le | Tok::Gt | Tok::Ge => {
                self.next();
                let order = match op {
                    Tok::Lt => Order::Lt,
                    Tok::Le => Order::Le,
                    Tok::Gt => Order::Gt,
                    _ => Order::Ge,
                };
                match self.peek().tok {
                    Tok::Number(n) => {
                        self.next();
                        Expr::Cmp(lhs, order, n)
                    }
                    _ => return Err(self.expected("a number", &after)),
                }
            }
            Tok::Like | Tok::Regex => {
                self.next();
                let Tok::Str(pattern) = self.peek().tok.clone() else {
                    return Err(self.expected("a string", &after));
                };
                let column = self.next().column;
                if op == Tok::Like {
                    Expr::Like(lhs, Like::new(&pattern))
                } else {
                    let re = Regex::new(&pattern).map_err(|e| ParseError {
                        column,
                        message: format!("invalid regular expression: {}", regex_message(&e)),
                    })?;
                    Expr::Regex(lhs, re)
                }
            }
            _ => Expr::Truthy(lhs),
        };
        Ok(fold(expr))
    }
}

impl Parser {
    /// On the value side of `=`/`!=`, a bare word that is none of the
    /// event's fields is still read as a name, as Riemann does (an
    /// attribute, see [`Field::from_name`]), but it is more often a string
    /// missing its quotes (`service = cpu`): say so, once per word.
    fn warn_bare_word(&mut self) {
        let Tok::Name(name) = &self.peek().tok else {
            return;
        };
        if !matches!(Field::from_name(name), Field::Attribute(_)) {
            return;
        }
        let warning = format!("{name} is read as a field name; did you mean \"{name}\"?");
        if !self.warnings.contains(&warning) {
            self.warnings.push(warning);
        }
    }
}

fn is_keyword(word: &str) -> bool {
    matches!(
        word,
        "and" | "or" | "not" | "tagged" | "true" | "false" | "nil" | "null"
    )
}

/// The one-line reason in a regex error, without its multi-line drawing.
fn regex_message(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .unwrap_or(text.trim())
        .to_owned()
}

/// Replaces an expression that depends on no event by its value.
fn fold(e: Expr) -> Expr {
    if e.is_constant() {
        Expr::Const(e.eval(&Event::default()))
    } else {
        e
    }
}

/// `a and b and …`, dropping `true`s; `false` if any is `false`.
fn fold_and(terms: Vec<Expr>) -> Expr {
    fold_chain(terms, true, Expr::And)
}

/// `a or b or …`, dropping `false`s; `true` if any is `true`.
fn fold_or(terms: Vec<Expr>) -> Expr {
    fold_chain(terms, false, Expr::Or)
}

/// Folds a chain whose neutral element is `neutral` (the opposite value
/// decides the whole chain).
fn fold_chain(terms: Vec<Expr>, neutral: bool, make: fn(Box<[Expr]>) -> Expr) -> Expr {
    let mut kept = Vec::with_capacity(terms.len());
    for t in terms {
        match t {
            Expr::Const(b) if b == neutral => {}
            Expr::Const(b) => return Expr::Const(b),
            t => kept.push(t),
        }
    }
    match kept.len() {
        0 => Expr::Const(neutral),
        1 => kept.pop().expect("one term"),
        _ => make(kept.into_boxed_slice()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> (usize, String) {
        let e = parse(text).expect_err(text);
        (e.column, e.message)
    }

    /// A compact rendering of the compiled tree.
    fn show(text: &str) -> String {
        fn op(o: &Operand) -> String {
            match o {
                Operand::Field(Field::Attribute(a)) => format!("@{a}"),
                Operand::Field(f) => format!("{f:?}").to_lowercase(),
                Operand::Lit(Lit::Str(s)) => format!("{s:?}"),
                Operand::Lit(Lit::Num(n)) => n.to_string(),
                Operand::Lit(l) => format!("{l:?}").to_lowercase(),
            }
        }
        fn go(e: &Expr) -> String {
            let list = |name: &str, es: &[Expr]| {
                let parts: Vec<String> = es.iter().map(go).collect();
                format!("({name} {})", parts.join(" "))
            };
            match e {
                Expr::Const(b) => b.to_string(),
                Expr::Not(e) => format!("(not {})", go(e)),
                Expr::And(es) => list("and", es),
                Expr::Or(es) => list("or", es),
                Expr::Tagged(t) => format!("(tagged {t:?})"),
                Expr::Truthy(o) => op(o),
                Expr::Eq(a, b) => format!("(= {} {})", op(a), op(b)),
                Expr::Ne(a, b) => format!("(!= {} {})", op(a), op(b)),
                Expr::Cmp(a, o, n) => format!("({o:?} {} {n})", op(a)),
                Expr::Like(a, _) => format!("(like {})", op(a)),
                Expr::Regex(a, r) => format!("(re {} {:?})", op(a), r.as_str()),
            }
        }
        go(&parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}")).0)
    }

    #[test]
    fn precedence_and_associativity() {
        assert_eq!(show("a or b and c"), "(or @a (and @b @c))");
        assert_eq!(show("a and b or c"), "(or (and @a @b) @c)");
        assert_eq!(show("not a and b"), "(and (not @a) @b)");
        assert_eq!(show("not a or b"), "(or (not @a) @b)");
        assert_eq!(show("(a or b) and c"), "(and (or @a @b) @c)");
        assert_eq!(show("not (a and b)"), "(not (and @a @b))");
        assert_eq!(show("a or b or c"), "(or @a @b @c)");
        assert_eq!(show("a and (b and c)"), "(and @a (and @b @c))");
        assert_eq!(show("not not a"), "@a");
        assert_eq!(show("not host = 1"), "(not (= host 1))");
    }

    #[test]
    fn fields_resolve_at_parse_time() {
        assert_eq!(show("metric_f > 1"), "(Gt metric 1)");
        assert_eq!(show("ttl <= 2.5"), "(Le ttl 2.5)");
        assert_eq!(show("time >= -1"), "(Ge time -1)");
        assert_eq!(show("x-y.z = \"a\""), "(= @x-y.z \"a\")");
        assert_eq!(show("host = service"), "(= host service)");
        assert_eq!(show("tags != nil"), "(!= tags nil)");
        assert_eq!(show("host ~= \"^w\\\\d\""), "(re host \"^w\\\\d\")");
    }

    #[test]
    fn constants_fold() {
        assert_eq!(show("true"), "true");
        assert_eq!(show("false"), "false");
        assert_eq!(show("nil"), "false");
        assert_eq!(show("1 = 1.0"), "true");
        assert_eq!(show("\"a\" != \"a\""), "false");
        assert_eq!(show("2 < 3"), "true");
        assert_eq!(show("nil < 3"), "false");
        assert_eq!(show("\"www.x\" =~ \"www.%\""), "true");
        assert_eq!(show("host = \"a\" and true"), "(= host \"a\")");
        assert_eq!(show("host = \"a\" and false"), "false");
        assert_eq!(show("host = \"a\" or true"), "true");
        assert_eq!(show("false or host"), "host");
        assert_eq!(show("not true"), "false");
        assert_eq!(show("tagged \"x\""), "(tagged \"x\")");
    }

    #[test]
    fn error_columns_and_messages() {
        assert_eq!(
            err("service = "),
            (
                11,
                "expected a value after '=' but found end of query".into()
            )
        );
        assert_eq!(
            err(""),
            (
                1,
                "expected a query term (a field, a value, 'not', 'tagged' or '(') but found end of query"
                    .into()
            )
        );
        assert_eq!(err("   ").0, 4);
        assert_eq!(
            err("metric > \"a\""),
            (
                10,
                "expected a number after '>' but found string \"a\"".into()
            )
        );
        assert_eq!(
            err("host =~ 3"),
            (9, "expected a string after '=~' but found number 3".into())
        );
        assert_eq!(
            err("tagged foo"),
            (
                8,
                "expected a string after 'tagged' but found name 'foo'".into()
            )
        );
        assert_eq!(
            err("(host = \"a\""),
            (
                12,
                "expected 'and', 'or' or ')' to close the '(' at column 1 but found end of query"
                    .into()
            )
        );
        assert_eq!(
            err("host = \"a\")"),
            (
                11,
                "expected 'and', 'or' or end of query (this ')' closes nothing) but found ')'"
                    .into()
            )
        );
        assert_eq!(
            err("host = \"a\" AND x"),
            (
                12,
                "expected 'and', 'or' or end of query but found name 'AND' (keywords are lowercase)"
                    .into()
            )
        );
        assert_eq!(
            err("a and or b"),
            (
                7,
                "expected a query term (a field, a value, 'not', 'tagged' or '(') after 'and' but found 'or'"
                    .into()
            )
        );
        assert_eq!(err("not"), (4, "expected a query term (a field, a value, 'not', 'tagged' or '(') after 'not' but found end of query".into()));
        assert_eq!(err("()").0, 2);
        assert_eq!(err("a = b = c").0, 7);
        assert_eq!(err("a < b").0, 5);
        assert_eq!(err("a = (b)").0, 5);
    }

    fn warnings(text: &str) -> Vec<String> {
        parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}")).1
    }

    #[test]
    fn a_bare_unknown_word_as_a_value_warns_once_and_stays_a_name() {
        assert_eq!(
            warnings("service = cpu"),
            ["cpu is read as a field name; did you mean \"cpu\"?"]
        );
        // Still Riemann's meaning: the attribute `cpu`.
        assert_eq!(show("service = cpu"), "(= service @cpu)");
        assert_eq!(
            warnings("host != web-1.eu or service = load and state = load"),
            [
                "web-1.eu is read as a field name; did you mean \"web-1.eu\"?",
                "load is read as a field name; did you mean \"load\"?",
            ]
        );
        // Folded away, it was still most likely a missing quote.
        assert_eq!(warnings("service = cpu or true").len(), 1);
    }

    #[test]
    fn fields_literals_and_other_positions_do_not_warn() {
        for q in [
            "service = \"cpu\"",
            "host = service",
            "metric_f != metric",
            "time = ttl or description = state or tags = nil",
            "metric = 1 and state = true",
            // The left side names what to compare: an attribute is usual there.
            "dc = \"eu\"",
            "cpu",
            "not role",
            "count > 2",
            "dc =~ \"eu%\"",
        ] {
            assert_eq!(warnings(q), Vec::<String>::new(), "{q}");
        }
    }

    #[test]
    fn invalid_regex_is_a_parse_error_at_the_pattern() {
        let (column, message) = err("host ~= \"web(\"");
        assert_eq!(column, 9);
        assert_eq!(message, "invalid regular expression: unclosed group");
        let (column, message) = err("host ~= \"a\" or service ~= \"[z-a]\"");
        assert_eq!(column, 27);
        assert!(
            message.starts_with("invalid regular expression: "),
            "{message}"
        );
        assert!(!message.contains('\n'));
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = format!("{}a{}", "(".repeat(150), ")".repeat(150));
        assert_eq!(show(&deep), "@a");
        let too_deep = format!("{}a{}", "(".repeat(5000), ")".repeat(5000));
        assert!(err(&too_deep).1.contains("nested"));
        let nots = format!("{}a", "not ".repeat(5000));
        assert!(err(&nots).1.contains("nested"));
        // Long flat chains are fine: they become one node.
        let chain = vec!["a"; 10_000].join(" or ");
        assert!(parse(&chain).is_ok());
    }
}
