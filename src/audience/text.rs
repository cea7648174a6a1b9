//! The text form of a definition, for people typing one:
//!
//! ```text
//! add_to_cart in last 7d then no purchase and probability >= 0.3
//! (generate_lead, newsletter_signup) then no purchase within 24h
//! count(add_to_wishlist) in last 30d >= 2 and not reached purchase
//! ```
//!
//! It is turned into the JSON form, which the one validator checks; errors
//! found there are mapped back to the column of the text that produced the
//! value at fault.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::definition::{DefinitionError, MAX_DEPTH};

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Quoted(String),
    Num(f64),
    Op(&'static str),
}

#[derive(Debug, Clone, PartialEq)]
struct Token {
    tok: Tok,
    /// 1-based column (in characters).
    col: usize,
}

fn syntax<T>(col: usize, reason: impl Into<String>) -> Result<T, DefinitionError> {
    Err(DefinitionError::new(format!("column {col}"), reason))
}

fn lex(text: &str) -> Result<Vec<Token>, DefinitionError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let col = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
        let op = match two.as_str() {
            ">=" => Some(">="),
            "<=" => Some("<="),
            _ => None,
        };
        if let Some(op) = op {
            out.push(Token {
                tok: Tok::Op(op),
                col,
            });
            i += 2;
            continue;
        }
        let single = match c {
            '(' => Some("("),
            ')' => Some(")"),
            ',' => Some(","),
            '>' => Some(">"),
            '<' => Some("<"),
            '=' => Some("="),
            _ => None,
        };
        if let Some(op) = single {
            out.push(Token {
                tok: Tok::Op(op),
                col,
            });
            i += 1;
            continue;
        }
        if c == '"' {
            let start = i + 1;
            let Some(len) = chars[start..].iter().position(|&c| c == '"') else {
                return syntax(col, "a quoted name is not closed");
            };
            out.push(Token {
                tok: Tok::Quoted(chars[start..start + len].iter().collect()),
                col,
            });
            i = start + len + 1;
            continue;
        }
        if c.is_alphanumeric() || c == '_' || c == '.' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '.')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let tok = match word.parse::<f64>() {
                Ok(n) if word.starts_with(|c: char| c.is_ascii_digit() || c == '.') => Tok::Num(n),
                _ => Tok::Word(word),
            };
            out.push(Token { tok, col });
            continue;
        }
        return syntax(col, format!("unexpected character {c:?}"));
    }
    Ok(out)
}

/// A parsed text definition, before it becomes JSON.
#[derive(Debug, Clone, PartialEq)]
enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>, usize),
    Atom {
        key: &'static str,
        body: Value,
        col: usize,
        /// Columns of fields inside the body, by their path suffix.
        fields: Vec<(String, usize)>,
    },
}

/// Columns of the text that produced each JSON path.
#[derive(Debug, Default)]
pub struct Spans(HashMap<String, usize>);

impl Spans {
    /// The same error, positioned at the column of the text behind the
    /// deepest path that contains the error's path.
    pub fn locate(&self, e: DefinitionError) -> DefinitionError {
        let mut path = e.position.as_str();
        loop {
            if let Some(col) = self.0.get(path) {
                return DefinitionError::new(format!("column {col}"), e.reason);
            }
            match path.rfind(['.', '[']) {
                Some(i) if i > 0 => path = &path[..i],
                _ => return e,
            }
        }
    }
}

/// Converts the text form to the JSON form, with the column of each value.
pub fn to_json(text: &str) -> Result<(Value, Spans), DefinitionError> {
    let tokens = lex(text)?;
    let mut p = Parser {
        tokens,
        at: 0,
        end: text.chars().count() + 1,
        depth: 0,
    };
    let expr = p.expr()?;
    if let Some(t) = p.peek() {
        return syntax(t.col, format!("unexpected {}", show(&t.tok)));
    }
    let mut spans = Spans::default();
    let value = emit(&expr, "$", &mut spans);
    Ok((value, spans))
}

fn emit(e: &Expr, path: &str, spans: &mut Spans) -> Value {
    match e {
        Expr::And(items) | Expr::Or(items) => {
            let key = if matches!(e, Expr::And(_)) {
                "and"
            } else {
                "or"
            };
            let list: Vec<Value> = items
                .iter()
                .enumerate()
                .map(|(i, x)| emit(x, &format!("{path}.{key}[{i}]"), spans))
                .collect();
            json!({ key: list })
        }
        Expr::Not(inner, col) => {
            spans.0.insert(path.to_string(), *col);
            json!({ "not": emit(inner, &format!("{path}.not"), spans) })
        }
        Expr::Atom {
            key,
            body,
            col,
            fields,
        } => {
            spans.0.insert(path.to_string(), *col);
            for (suffix, c) in fields {
                spans.0.insert(format!("{path}.{key}{suffix}"), *c);
            }
            json!({ *key: body })
        }
    }
}

fn show(t: &Tok) -> String {
    match t {
        Tok::Word(w) => format!("{w:?}"),
        Tok::Quoted(w) => format!("\"{w}\""),
        Tok::Num(n) => n.to_string(),
        Tok::Op(o) => format!("{o:?}"),
    }
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    /// Column just past the text, for "expected ... at the end".
    end: usize,
    /// Parentheses and `not`s open around the current position.
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn peek_at(&self, k: usize) -> Option<&Tok> {
        self.tokens.get(self.at + k).map(|t| &t.tok)
    }

    fn col(&self) -> usize {
        self.peek().map_or(self.end, |t| t.col)
    }

    fn next(&mut self, what: &str) -> Result<Token, DefinitionError> {
        match self.tokens.get(self.at) {
            Some(t) => {
                self.at += 1;
                Ok(t.clone())
            }
            None => syntax(self.end, format!("expected {what} at the end")),
        }
    }

    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Some(Token { tok: Tok::Word(x), .. }) if x == w)
    }

    fn is_op(&self, o: &str) -> bool {
        matches!(self.peek(), Some(Token { tok: Tok::Op(x), .. }) if *x == o)
    }

    fn expect_word(&mut self, w: &str) -> Result<usize, DefinitionError> {
        let t = self.next(&format!("{w:?}"))?;
        match &t.tok {
            Tok::Word(x) if x == w => Ok(t.col),
            other => syntax(t.col, format!("expected {w:?}, found {}", show(other))),
        }
    }

    fn expect_op(&mut self, o: &str) -> Result<usize, DefinitionError> {
        let t = self.next(&format!("{o:?}"))?;
        match &t.tok {
            Tok::Op(x) if *x == o => Ok(t.col),
            other => syntax(t.col, format!("expected {o:?}, found {}", show(other))),
        }
    }

    fn expr(&mut self) -> Result<Expr, DefinitionError> {
        let mut items = vec![self.term()?];
        while self.is_word("or") {
            self.at += 1;
            items.push(self.term()?);
        }
        Ok(if items.len() == 1 {
            items.pop().expect("one")
        } else {
            Expr::Or(items)
        })
    }

    fn term(&mut self) -> Result<Expr, DefinitionError> {
        let mut items = vec![self.factor()?];
        while self.is_word("and") {
            self.at += 1;
            items.push(self.factor()?);
        }
        Ok(if items.len() == 1 {
            items.pop().expect("one")
        } else {
            Expr::And(items)
        })
    }

    fn factor(&mut self) -> Result<Expr, DefinitionError> {
        if self.is_word("not") {
            let col = self.col();
            self.at += 1;
            return Ok(Expr::Not(Box::new(self.deeper(col, Self::factor)?), col));
        }
        if self.is_op("(") && !self.starts_name_list() {
            let col = self.col();
            self.at += 1;
            let e = self.deeper(col, Self::expr)?;
            self.expect_op(")")?;
            return Ok(e);
        }
        self.atom()
    }

    /// Parses one level further in. The parser recurses once per level, so
    /// the depth is bounded before the JSON check would see it: 16 KiB of
    /// `(` overflowed a 2 MiB thread stack (a server worker's) and aborted
    /// the process. The JSON form refuses the same depth.
    fn deeper(
        &mut self,
        col: usize,
        parse: fn(&mut Self) -> Result<Expr, DefinitionError>,
    ) -> Result<Expr, DefinitionError> {
        if self.depth >= MAX_DEPTH {
            return syntax(
                col,
                format!("parentheses and \"not\" nest deeper than {MAX_DEPTH}"),
            );
        }
        self.depth += 1;
        let e = parse(self);
        self.depth -= 1;
        e
    }

    /// `(a, b) then ...` or `(a, b) in last ...`: a list of event types, not a group.
    fn starts_name_list(&self) -> bool {
        let mut k = 1;
        loop {
            match self.peek_at(k) {
                Some(Tok::Word(_)) | Some(Tok::Quoted(_)) => k += 1,
                _ => return false,
            }
            match self.peek_at(k) {
                Some(Tok::Op(",")) => k += 1,
                Some(Tok::Op(")")) => {
                    return matches!(self.peek_at(k + 1), Some(Tok::Word(w)) if w == "then" || w == "in")
                }
                _ => return false,
            }
        }
    }

    fn atom(&mut self) -> Result<Expr, DefinitionError> {
        let col = self.col();
        let word = match self.peek().map(|t| &t.tok) {
            Some(Tok::Word(w)) => w.clone(),
            Some(Tok::Quoted(_)) | Some(Tok::Op("(")) => String::new(),
            Some(other) => return syntax(col, format!("expected a clause, found {}", show(other))),
            None => return syntax(col, "expected a clause at the end"),
        };
        let atom = |key: &'static str, body: Value, fields: Vec<(String, usize)>| Expr::Atom {
            key,
            body,
            col,
            fields,
        };
        match word.as_str() {
            "probability" | "ladder_score" | "sessions" => {
                self.at += 1;
                let key = match word.as_str() {
                    "probability" => "probability",
                    "ladder_score" => "ladder_score",
                    _ => "sessions",
                };
                let (op, n, ncol) = self.comparison()?;
                let body = match op {
                    "=" => json!({"gte": n, "lte": n}),
                    ">=" => json!({"gte": n}),
                    ">" => json!({"gt": n}),
                    "<=" => json!({"lte": n}),
                    _ => json!({"lt": n}),
                };
                let fields = ["gte", "gt", "lte", "lt"]
                    .iter()
                    .map(|k| (format!(".{k}"), ncol))
                    .collect();
                Ok(atom(key, body, fields))
            }
            "band" | "stage" => {
                self.at += 1;
                let key = if word == "band" { "band" } else { "stage" };
                let body = if self.is_word("in") {
                    self.at += 1;
                    self.name_list()?
                } else {
                    self.expect_op("=")?;
                    self.name()?
                };
                Ok(atom(key, body.0, index_fields("", &body.1)))
            }
            "reached" | "not_reached" => {
                self.at += 1;
                let key = if word == "reached" {
                    "reached"
                } else {
                    "not_reached"
                };
                let (name, c) = self.name()?;
                Ok(atom(key, name, index_fields("", &c)))
            }
            "first_seen" | "last_seen" => {
                self.at += 1;
                let key = if word == "first_seen" {
                    "first_seen"
                } else {
                    "last_seen"
                };
                let t = self.next("within or older_than")?;
                let field = match &t.tok {
                    Tok::Word(w) if w == "within" => "within",
                    Tok::Word(w) if w == "older_than" => "older_than",
                    other => {
                        return syntax(
                            t.col,
                            format!("expected within or older_than, found {}", show(other)),
                        )
                    }
                };
                let (d, dcol) = self.duration()?;
                let mut body = Map::new();
                body.insert(field.into(), Value::String(d));
                Ok(atom(
                    key,
                    Value::Object(body),
                    vec![(format!(".{field}"), dcol)],
                ))
            }
            "count" => {
                self.at += 1;
                self.expect_op("(")?;
                let (names, cols) = self.names_until_close()?;
                let mut body = Map::new();
                body.insert("event".into(), names);
                let mut fields = index_fields(".event", &cols);
                if self.is_word("in") {
                    self.at += 1;
                    self.expect_word("last")?;
                    let (d, dcol) = self.duration()?;
                    body.insert("within".into(), Value::String(d));
                    fields.push((".within".into(), dcol));
                }
                let (op, n, ncol) = self.comparison()?;
                if n.fract() != 0.0 || n < 0.0 {
                    return syntax(ncol, format!("a count is a whole number, found {n}"));
                }
                let n = n as u64;
                let (lo, hi) = match op {
                    "=" => (Some(n), Some(n)),
                    ">=" => (Some(n), None),
                    ">" => (Some(n + 1), None),
                    "<=" => (None, Some(n)),
                    _ if n == 0 => return syntax(ncol, "a count is never below 0"),
                    _ => (None, Some(n - 1)),
                };
                if let Some(lo) = lo {
                    body.insert("at_least".into(), json!(lo));
                    fields.push((".at_least".into(), ncol));
                }
                if let Some(hi) = hi {
                    body.insert("at_most".into(), json!(hi));
                    fields.push((".at_most".into(), ncol));
                }
                Ok(atom("count", Value::Object(body), fields))
            }
            _ => {
                // NAMES [in last DUR] then no NAMES [within DUR]
                let (anchor, acols) = self.names()?;
                let mut body = Map::new();
                body.insert("anchor".into(), anchor);
                let mut fields = index_fields(".anchor", &acols);
                if self.is_word("in") {
                    self.at += 1;
                    self.expect_word("last")?;
                    let (d, dcol) = self.duration()?;
                    body.insert("anchor_within".into(), Value::String(d));
                    fields.push((".anchor_within".into(), dcol));
                }
                if !self.is_word("then") {
                    return syntax(
                        self.col(),
                        format!(
                            "expected \"then no ...\" after an event type, or one of: probability, ladder_score, \
                             sessions, band, stage, reached, not_reached, count, first_seen, last_seen (at column {col})"
                        ),
                    );
                }
                self.at += 1;
                self.expect_word("no")?;
                let (absent, bcols) = self.names()?;
                body.insert("absent".into(), absent);
                fields.extend(index_fields(".absent", &bcols));
                if self.is_word("within") {
                    self.at += 1;
                    let (d, dcol) = self.duration()?;
                    body.insert("within".into(), Value::String(d));
                    fields.push((".within".into(), dcol));
                }
                Ok(atom("absent_after", Value::Object(body), fields))
            }
        }
    }

    fn comparison(&mut self) -> Result<(&'static str, f64, usize), DefinitionError> {
        let t = self.next("a comparison (>=, >, <=, <, =)")?;
        let op = match t.tok {
            Tok::Op(o @ (">=" | ">" | "<=" | "<" | "=")) => o,
            other => {
                return syntax(
                    t.col,
                    format!("expected >=, >, <=, < or =, found {}", show(&other)),
                )
            }
        };
        let n = self.next("a number")?;
        match n.tok {
            Tok::Num(x) => Ok((op, x, n.col)),
            other => syntax(n.col, format!("expected a number, found {}", show(&other))),
        }
    }

    fn duration(&mut self) -> Result<(String, usize), DefinitionError> {
        let t = self.next("a duration such as 7d")?;
        match t.tok {
            // "7d" lexes as a word starting with a digit.
            Tok::Word(w) | Tok::Quoted(w) => Ok((w, t.col)),
            Tok::Num(n) => syntax(t.col, format!("{n} needs a unit: 30m, 24h, 7d")),
            other => syntax(
                t.col,
                format!("expected a duration such as 7d, found {}", show(&other)),
            ),
        }
    }

    fn name(&mut self) -> Result<(Value, Vec<usize>), DefinitionError> {
        let t = self.next("a name")?;
        match t.tok {
            Tok::Word(w) | Tok::Quoted(w) => Ok((Value::String(w), vec![t.col])),
            other => syntax(t.col, format!("expected a name, found {}", show(&other))),
        }
    }

    /// `NAME` or `(NAME, NAME ...)`.
    fn names(&mut self) -> Result<(Value, Vec<usize>), DefinitionError> {
        if self.is_op("(") {
            self.name_list()
        } else {
            self.name()
        }
    }

    fn name_list(&mut self) -> Result<(Value, Vec<usize>), DefinitionError> {
        self.expect_op("(")?;
        self.names_until_close()
    }

    fn names_until_close(&mut self) -> Result<(Value, Vec<usize>), DefinitionError> {
        let mut names = Vec::new();
        let mut cols = Vec::new();
        loop {
            let (n, c) = self.name()?;
            names.push(n);
            cols.extend(c);
            let t = self.next("\",\" or \")\"")?;
            match t.tok {
                Tok::Op(",") => continue,
                Tok::Op(")") => break,
                other => {
                    return syntax(
                        t.col,
                        format!("expected \",\" or \")\", found {}", show(&other)),
                    )
                }
            }
        }
        let value = if names.len() == 1 {
            names.pop().expect("one")
        } else {
            Value::Array(names)
        };
        Ok((value, cols))
    }
}

/// Field columns for a name or list of names at `suffix`.
fn index_fields(suffix: &str, cols: &[usize]) -> Vec<(String, usize)> {
    if cols.len() == 1 {
        return vec![(suffix.to_string(), cols[0])];
    }
    cols.iter()
        .enumerate()
        .map(|(i, c)| (format!("{suffix}[{i}]"), *c))
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::audience::definition::{builtins, Definition, LanguageLimits};
    use crate::domain::Taxonomy;

    const LIMITS: LanguageLimits = LanguageLimits {
        max_window_ms: 90 * 86_400_000,
        max_windowed_count: 64,
    };

    fn canonical(text: &str) -> String {
        Definition::parse(text, &Taxonomy::builtin(), &LIMITS)
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .to_json()
    }

    #[test]
    fn text_and_json_forms_agree() {
        let pairs = [
            ("add_to_cart in last 7d then no purchase", builtins()[0].json),
            (
                "(generate_lead, newsletter_signup) in last 30d then no purchase within 24h",
                builtins()[3].json,
            ),
            (
                "last_seen within 7d and not_reached add_to_cart and (band = high or ladder_score >= 50)",
                builtins()[2].json,
            ),
            (
                "count(add_to_wishlist) in last 30d >= 2 and add_to_wishlist in last 30d then no purchase",
                builtins()[4].json,
            ),
            (
                "count(purchase) >= 1 and count(purchase) in last 30d = 0",
                r#"{"and":[{"count":{"event":"purchase","at_least":1}},{"count":{"event":"purchase","within":"30d","at_least":0,"at_most":0}}]}"#,
            ),
            (
                "not reached purchase or stage in (intent, purchase) and sessions > 2",
                r#"{"or":[{"not":{"reached":"purchase"}},{"and":[{"stage":["intent","purchase"]},{"sessions":{"gt":2}}]}]}"#,
            ),
            (
                r#"count("Product Added", view_item) < 3 and probability = 0.5 and first_seen older_than 2d"#,
                r#"{"and":[{"count":{"event":["add_to_cart","view_item"],"at_most":2}},{"probability":{"gte":0.5,"lte":0.5}},{"first_seen":{"older_than":"2d"}}]}"#,
            ),
        ];
        for (text, json) in pairs {
            assert_eq!(canonical(text), canonical(json), "{text}");
        }
    }

    #[test]
    fn errors_point_at_a_column() {
        let t = Taxonomy::builtin();
        let cases = [
            // Validation errors, mapped back to the text.
            (
                "add_to_cart in last 7d then no purchse",
                "column 32",
                "did you mean \"purchase\"",
            ),
            (
                "reached add_to_cart and count(purchase) in last 9000d >= 1",
                "column 49",
                "retention",
            ),
            ("probability >= 2", "column 16", "outside"),
            ("reached page_view", "column 9", "not a milestone"),
            // Syntax errors.
            (
                "reached purchase and",
                "column 21",
                "expected a clause at the end",
            ),
            (
                "count(purchase >= 1",
                "column 16",
                "expected \",\" or \")\"",
            ),
            ("probability ~ 0.3", "column 13", "unexpected character"),
            ("add_to_cart in last 7d", "column 23", "then no"),
            (
                "count(purchase) > 1 extra",
                "column 21",
                "unexpected \"extra\"",
            ),
            ("count(purchase) < 0", "column 19", "never below 0"),
        ];
        for (text, position, reason) in cases {
            let e = Definition::parse(text, &t, &LIMITS).expect_err(text);
            assert_eq!(e.position, position, "{text}: {}", e.reason);
            assert!(e.reason.contains(reason), "{text}: {}", e.reason);
        }
    }

    #[test]
    fn nesting_deeper_than_the_json_form_allows_is_refused_at_its_column() {
        let t = Taxonomy::builtin();
        // Both near the 16 KiB limit: deep enough to overflow the stack of
        // a recursive parser on a 2 MiB thread (which this test runs on).
        let parens = format!("{}band = high{}", "(".repeat(8000), ")".repeat(8000));
        let nots = format!("{}band = high", "not ".repeat(4000));
        // 32 levels are allowed; the 33rd opener (column 33, or 4 × 32 + 1
        // for "not ") is where the text goes too deep.
        for (text, position) in [(&parens, "column 33"), (&nots, "column 129")] {
            let e = Definition::parse(text, &t, &LIMITS).expect_err("too deep");
            assert_eq!(e.position, position, "{}", e.reason);
            assert!(e.reason.contains("nest deeper than 32"), "{}", e.reason);
        }
        let fine = format!("{}band = high{}", "(".repeat(32), ")".repeat(32));
        assert_eq!(canonical(&fine), r#"{"band":"high"}"#);
    }
}
