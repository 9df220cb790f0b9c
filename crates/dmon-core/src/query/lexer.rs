//! The lexer: query text to tokens, each with its 1-based column.
//!
//! Columns count characters (not bytes), so they point at the right place in
//! a query holding non-ASCII text.

use std::fmt;

use super::ParseError;
use crate::event::Number;

/// One token of a query.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Tok {
    LParen,
    RParen,
    /// `=`
    Eq,
    /// `!=`
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// `=~`: SQL LIKE.
    Like,
    /// `~=`: regex search.
    Regex,
    And,
    Or,
    Not,
    Tagged,
    True,
    False,
    /// `nil` or `null`.
    Nil,
    Number(Number),
    /// A string literal, escapes resolved.
    Str(String),
    /// A field name.
    Name(String),
    /// End of the query; always the last token.
    End,
}

impl Tok {
    /// The operator's text, for messages about what follows it.
    pub(crate) fn op_text(&self) -> &'static str {
        match self {
            Tok::Eq => "=",
            Tok::Ne => "!=",
            Tok::Lt => "<",
            Tok::Le => "<=",
            Tok::Gt => ">",
            Tok::Ge => ">=",
            Tok::Like => "=~",
            Tok::Regex => "~=",
            _ => "?",
        }
    }
}

/// How a token is named in "but found …" messages.
impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::LParen => f.write_str("'('"),
            Tok::RParen => f.write_str("')'"),
            Tok::And => f.write_str("'and'"),
            Tok::Or => f.write_str("'or'"),
            Tok::Not => f.write_str("'not'"),
            Tok::Tagged => f.write_str("'tagged'"),
            Tok::True => f.write_str("'true'"),
            Tok::False => f.write_str("'false'"),
            Tok::Nil => f.write_str("'nil'"),
            Tok::Number(n) => write!(f, "number {n}"),
            Tok::Str(s) => write!(f, "string {s:?}"),
            Tok::Name(n) => write!(f, "name '{n}'"),
            Tok::End => f.write_str("end of query"),
            op => write!(f, "'{}'", op.op_text()),
        }
    }
}

/// A token and the 1-based column of its first character.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Token {
    pub tok: Tok,
    pub column: usize,
}

/// Splits `text` into tokens, ending with [`Tok::End`].
pub(crate) fn tokenize(text: &str) -> Result<Vec<Token>, ParseError> {
    let mut lx = Lexer {
        chars: text.chars().collect(),
        pos: 0,
    };
    let mut out = Vec::new();
    loop {
        lx.skip_whitespace();
        let column = lx.pos + 1;
        let tok = match lx.peek() {
            None => {
                out.push(Token {
                    tok: Tok::End,
                    column,
                });
                return Ok(out);
            }
            Some(c) => lx.token(c)?,
        };
        out.push(Token { tok, column });
    }
}

struct Lexer {
    chars: Vec<char>,
    /// Index into `chars` of the next character.
    pos: usize,
}

fn is_name_start(c: char) -> bool {
    c == '_' || c.is_alphabetic()
}

fn is_name_char(c: char) -> bool {
    c == '_' || c == '-' || c == '.' || c.is_alphanumeric()
}

impl Lexer {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.pos + ahead).copied()
    }

    fn err(&self, pos: usize, message: impl Into<String>) -> ParseError {
        ParseError {
            column: pos + 1,
            message: message.into(),
        }
    }

    fn skip_whitespace(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    /// Whether the text at the cursor starts with `word`.
    fn looking_at(&self, word: &str) -> bool {
        word.chars()
            .enumerate()
            .all(|(i, c)| self.peek_at(i) == Some(c))
    }

    /// Lexes the token starting with `c` at the cursor.
    fn token(&mut self, c: char) -> Result<Tok, ParseError> {
        let start = self.pos;
        let next = self.peek_at(1);
        let (tok, len) = match (c, next) {
            ('(', _) => (Tok::LParen, 1),
            (')', _) => (Tok::RParen, 1),
            ('=', Some('~')) => (Tok::Like, 2),
            ('=', _) => (Tok::Eq, 1),
            ('!', Some('=')) => (Tok::Ne, 2),
            ('~', Some('=')) => (Tok::Regex, 2),
            ('<', Some('=')) => (Tok::Le, 2),
            ('<', _) => (Tok::Lt, 1),
            ('>', Some('=')) => (Tok::Ge, 2),
            ('>', _) => (Tok::Gt, 1),
            ('"', _) => return self.string(),
            ('-', _) | ('0'..='9', _) => return self.number(),
            _ if is_name_start(c) => return Ok(self.word()),
            ('!', _) => {
                return Err(self.err(
                    start,
                    "unexpected character '!' (did you mean '!=' or 'not'?)",
                ))
            }
            ('~', _) => {
                return Err(self.err(
                    start,
                    "unexpected character '~' (did you mean '~=' or '=~'?)",
                ))
            }
            ('\'', _) => {
                return Err(self.err(
                    start,
                    "unexpected character '\\'': strings are written in double quotes",
                ))
            }
            _ => return Err(self.err(start, format!("unexpected character {c:?}"))),
        };
        self.pos += len;
        Ok(tok)
    }

    /// A keyword or a field name.
    fn word(&mut self) -> Tok {
        let start = self.pos;
        while self.peek().is_some_and(is_name_char) {
            self.pos += 1;
        }
        let word: String = self.chars[start..self.pos].iter().collect();
        match word.as_str() {
            "and" => Tok::And,
            "or" => Tok::Or,
            "not" => Tok::Not,
            "tagged" => Tok::Tagged,
            "true" => Tok::True,
            "false" => Tok::False,
            "nil" | "null" => Tok::Nil,
            // Riemann's float literals, which look like names.
            "Infinity" => Tok::Number(Number::Float(f64::INFINITY)),
            "NaN" => Tok::Number(Number::Float(f64::NAN)),
            _ => Tok::Name(word),
        }
    }

    /// A number: `-?digits`, with an optional fraction and exponent, or
    /// `-?Infinity`, `-?NaN`. An integer may carry Riemann's `L` or `N`
    /// suffix; one too big for 64 bits becomes a float.
    fn number(&mut self) -> Result<Tok, ParseError> {
        let start = self.pos;
        let negative = self.peek() == Some('-');
        if negative {
            self.pos += 1;
            for (word, value) in [("Infinity", f64::INFINITY), ("NaN", f64::NAN)] {
                if self.looking_at(word) && !self.peek_at(word.len()).is_some_and(is_name_char) {
                    self.pos += word.len();
                    return Ok(Tok::Number(Number::Float(-value)));
                }
            }
            if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
                return Err(self.err(start, "expected a digit, 'Infinity' or 'NaN' after '-'"));
            }
        }
        let mut is_float = false;
        self.digits();
        if self.peek() == Some('.') {
            if !self.peek_at(1).is_some_and(|c| c.is_ascii_digit()) {
                return Err(self.err(self.pos + 1, "expected a digit after the decimal point"));
            }
            is_float = true;
            self.pos += 1;
            self.digits();
        }
        if matches!(self.peek(), Some('e' | 'E')) {
            is_float = true;
            self.pos += 1;
            if matches!(self.peek(), Some('-' | '+')) {
                self.pos += 1;
            }
            if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
                return Err(self.err(self.pos, "expected a digit in the exponent"));
            }
            self.digits();
        }
        let text: String = self.chars[start..self.pos].iter().collect();
        if !is_float && matches!(self.peek(), Some('L' | 'l' | 'N')) {
            self.pos += 1;
        }
        if self.peek().is_some_and(is_name_char) {
            return Err(self.err(
                start,
                format!(
                    "invalid number '{}'",
                    self.chars[start..=self.pos].iter().collect::<String>()
                ),
            ));
        }
        let number = if is_float {
            text.parse().map(Number::Float).ok()
        } else {
            text.parse()
                .map(Number::Int)
                .or_else(|_| text.parse().map(Number::Float))
                .ok()
        };
        number
            .map(Tok::Number)
            .ok_or_else(|| self.err(start, format!("invalid number '{text}'")))
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
    }

    /// A double-quoted string with Clojure/EDN escapes: `\" \\ \n \t \r \b
    /// \f \uXXXX` (a UTF-16 surrogate pair makes one character).
    fn string(&mut self) -> Result<Tok, ParseError> {
        let start = self.pos;
        self.pos += 1;
        let mut s = String::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(self.err(start, "unterminated string: expected a closing '\"'"));
            };
            let at = self.pos;
            self.pos += 1;
            match c {
                '"' => return Ok(Tok::Str(s)),
                '\\' => {
                    let Some(e) = self.peek() else {
                        return Err(self.err(start, "unterminated string: expected a closing '\"'"));
                    };
                    self.pos += 1;
                    match e {
                        '"' => s.push('"'),
                        '\\' => s.push('\\'),
                        'n' => s.push('\n'),
                        't' => s.push('\t'),
                        'r' => s.push('\r'),
                        'b' => s.push('\u{8}'),
                        'f' => s.push('\u{c}'),
                        'u' => s.push(self.unicode_escape(at)?),
                        other => {
                            return Err(self.err(
                                at,
                                format!(
                                    "unsupported escape '\\{other}' in string (write '\\\\' for a backslash)"
                                ),
                            ))
                        }
                    }
                }
                c => s.push(c),
            }
        }
    }

    /// The four hex digits after `\u` (the escape began at `at`), and a
    /// second `\uXXXX` if the first is a high surrogate.
    fn unicode_escape(&mut self, at: usize) -> Result<char, ParseError> {
        let high = self.hex4(at)?;
        let code = match high {
            0xD800..=0xDBFF => {
                if !(self.peek() == Some('\\') && self.peek_at(1) == Some('u')) {
                    return Err(self.err(at, "unpaired UTF-16 surrogate in '\\u' escape"));
                }
                let second = self.pos;
                self.pos += 2;
                let low = self.hex4(second)?;
                if !(0xDC00..=0xDFFF).contains(&low) {
                    return Err(self.err(at, "unpaired UTF-16 surrogate in '\\u' escape"));
                }
                0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
            }
            0xDC00..=0xDFFF => {
                return Err(self.err(at, "unpaired UTF-16 surrogate in '\\u' escape"))
            }
            c => c,
        };
        char::from_u32(code).ok_or_else(|| self.err(at, "invalid '\\u' escape"))
    }

    fn hex4(&mut self, at: usize) -> Result<u32, ParseError> {
        let mut code = 0;
        for _ in 0..4 {
            let digit = self
                .peek()
                .and_then(|c| c.to_digit(16))
                .ok_or_else(|| self.err(at, "expected four hex digits after '\\u'"))?;
            code = code * 16 + digit;
            self.pos += 1;
        }
        Ok(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(text: &str) -> Vec<Tok> {
        tokenize(text).unwrap().into_iter().map(|t| t.tok).collect()
    }

    fn one(text: &str) -> Tok {
        let mut t = toks(text);
        assert_eq!(t.len(), 2, "{text:?} gave {t:?}");
        assert_eq!(t.pop(), Some(Tok::End));
        t.pop().unwrap()
    }

    fn err(text: &str) -> (usize, String) {
        let e = tokenize(text).unwrap_err();
        (e.column, e.message)
    }

    fn float(text: &str) -> f64 {
        match one(text) {
            Tok::Number(Number::Float(f)) => f,
            other => panic!("{text:?} gave {other:?}"),
        }
    }

    #[test]
    fn operators_take_the_longest_match() {
        use Tok::*;
        assert_eq!(
            toks("( ) = != < <= > >= =~ ~="),
            vec![LParen, RParen, Eq, Ne, Lt, Le, Gt, Ge, Like, Regex, End]
        );
        assert_eq!(
            toks("a<=1"),
            vec![
                Name("a".into()),
                Le,
                Number(crate::event::Number::Int(1)),
                End
            ]
        );
        assert_eq!(
            toks("a=~\"x\""),
            vec![Name("a".into()), Like, Str("x".into()), End]
        );
    }

    #[test]
    fn keywords_are_lowercase_only() {
        use Tok::*;
        assert_eq!(
            toks("and or not tagged true false nil null"),
            vec![And, Or, Not, Tagged, True, False, Nil, Nil, End]
        );
        assert_eq!(one("AND"), Name("AND".into()));
        assert_eq!(one("Null"), Name("Null".into()));
        assert_eq!(one("android"), Name("android".into()));
    }

    #[test]
    fn names_allow_dashes_dots_and_underscores_after_the_first_char() {
        assert_eq!(one("metric_f"), Tok::Name("metric_f".into()));
        assert_eq!(one("_x-y.z9"), Tok::Name("_x-y.z9".into()));
        assert_eq!(one("café"), Tok::Name("café".into()));
    }

    #[test]
    fn numbers() {
        assert_eq!(one("42"), Tok::Number(Number::Int(42)));
        assert_eq!(one("-7"), Tok::Number(Number::Int(-7)));
        assert_eq!(one("42L"), Tok::Number(Number::Int(42)));
        assert_eq!(one("42N"), Tok::Number(Number::Int(42)));
        assert_eq!(float("2.5"), 2.5);
        assert_eq!(float("-0.5"), -0.5);
        assert_eq!(float("1e3"), 1000.0);
        assert_eq!(float("1.5E-2"), 0.015);
        assert_eq!(float("2e+2"), 200.0);
        assert_eq!(float("Infinity"), f64::INFINITY);
        assert_eq!(float("-Infinity"), f64::NEG_INFINITY);
        assert!(float("NaN").is_nan());
        assert!(float("-NaN").is_nan());
        // Too big for an i64: kept as a float rather than rejected.
        assert_eq!(float("99999999999999999999"), 1e20);
        assert_eq!(
            toks("metric>-1"),
            vec![
                Tok::Name("metric".into()),
                Tok::Gt,
                Tok::Number(Number::Int(-1)),
                Tok::End
            ]
        );
    }

    #[test]
    fn bad_numbers() {
        assert_eq!(err("1.").0, 3);
        assert_eq!(err("x > 1e").0, 7);
        assert_eq!(err("x > 12abc"), (5, "invalid number '12a'".into()));
        assert_eq!(err("x > -").0, 5);
        assert_eq!(err("x > -Inf").0, 5);
        assert_eq!(err("x > 1.5N").0, 5);
    }

    #[test]
    fn string_escapes() {
        assert_eq!(one(r#""a\"b""#), Tok::Str("a\"b".into()));
        assert_eq!(one(r#""a\\b""#), Tok::Str("a\\b".into()));
        assert_eq!(one(r#""\n\t\r\b\f""#), Tok::Str("\n\t\r\u{8}\u{c}".into()));
        assert_eq!(one(r#""\u00e9\u00E9""#), Tok::Str("éé".into()));
        assert_eq!(one(r#""\ud83d\ude00""#), Tok::Str("😀".into()));
        assert_eq!(one("\"raw\nnewline é\""), Tok::Str("raw\nnewline é".into()));
        assert_eq!(one(r#""""#), Tok::Str(String::new()));
    }

    #[test]
    fn bad_strings() {
        assert_eq!(
            err(r#"host = "web"#),
            (8, "unterminated string: expected a closing '\"'".into())
        );
        assert_eq!(err(r#"host = "a\"#).0, 8);
        let (col, msg) = err(r#"host ~= "\d+""#);
        assert_eq!(col, 10);
        assert!(msg.contains("unsupported escape '\\d'"), "{msg}");
        assert_eq!(err(r#"x = "\u12g4""#).0, 6);
        assert_eq!(err(r#"x = "\ud83d""#).0, 6);
        assert_eq!(err(r#"x = "ab\ude00""#).0, 8);
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        let t = tokenize("\"éé\" = @").unwrap_err();
        assert_eq!(t.column, 8);
        let t = tokenize("  host").unwrap();
        assert_eq!(t[0].column, 3);
        assert_eq!(
            t[1],
            Token {
                tok: Tok::End,
                column: 7
            }
        );
    }

    #[test]
    fn stray_characters() {
        assert_eq!(err("host ! = 1").0, 6);
        assert_eq!(err("host ~ 1").0, 6);
        assert_eq!(err("host = 'a'").0, 8);
        assert_eq!(err("host = 1 & 2").0, 10);
    }
}
