//! Token-level rewrites of the ClickHouse syntax the SQL parser does not take, done before
//! parsing so every remaining token keeps its original location (errors point into the text
//! the user wrote):
//!
//! - `WITH <expr> AS <name>` items (ClickHouse's scalar aliases) are lifted out of the WITH
//!   clause and parsed on their own; CTEs (`name AS (SELECT ..)`) stay for the parser.
//! - Join strictness (`ANY LEFT JOIN`, `ALL INNER JOIN`, `LEFT ANY JOIN`) is dropped from the
//!   text; where an `ANY LEFT JOIN` was, the joined relation's location is kept so the planner
//!   joins each left row to one right row. Other ANY joins run with ALL semantics.
//! - `FINAL` after a table is dropped: Petrel's datasources already present their rows as
//!   their engine resolves them.
//! - `JOIN .. USING col` (ClickHouse's form without parentheses) becomes `USING (col)`.
//! - `interval` used as a column or alias name is quoted (the parser would start an INTERVAL).
//! - An alias inside a function's arguments (`concat(a, '-', b) AS region` as an argument of
//!   `multiIf`) is dropped: the argument is its expression.

use sqlparser::ast;
use sqlparser::dialect::ClickHouseDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Location, Span, Token, TokenWithSpan, Tokenizer};

use crate::SqlError;

/// The tokens to parse, and the scalar WITH items taken out of them.
pub(crate) struct Prepared {
    /// The rewritten token stream, with original locations.
    pub tokens: Vec<TokenWithSpan>,
    /// The lifted `WITH <expr> AS <name>` items.
    pub scalars: Vec<ScalarWith>,
    /// Where the relations of `ANY LEFT JOIN`s start (line, column).
    pub any_left_joins: Vec<(u64, u64)>,
}

/// A `WITH <expr> AS <name>` item and the query it belongs to.
pub(crate) struct ScalarWith {
    /// The alias.
    pub name: String,
    /// The aliased expression.
    pub expr: ast::Expr,
    /// Where the SELECT following the WITH clause starts: how the planner finds the query
    /// (and its subqueries) the alias is visible in.
    pub query_at: Location,
}

/// An error from the SQL parser, with the location it reports.
pub(crate) fn parse_error(e: &sqlparser::parser::ParserError) -> SqlError {
    let text = e.to_string();
    let mut err = SqlError::new(text.trim_start_matches("sql parser error: ").to_string());
    // "... at Line: 3, Column: 14"
    if let Some(pos) = text.rfind("Line: ") {
        let mut parts = text[pos + 6..].split(", Column: ");
        if let (Some(l), Some(c)) = (parts.next(), parts.next()) {
            err.line = l.trim().parse().unwrap_or(0);
            err.column = c
                .trim()
                .trim_end_matches(|ch: char| !ch.is_ascii_digit())
                .parse()
                .unwrap_or(0);
        }
    }
    err
}

fn keyword(t: &Token) -> Option<Keyword> {
    match t {
        Token::Word(w) if w.quote_style.is_none() => Some(w.keyword),
        _ => None,
    }
}

/// Tokenizes `sql` and applies the rewrites described in the module docs.
pub(crate) fn prepare(sql: &str) -> Result<Prepared, SqlError> {
    let dialect = ClickHouseDialect {};
    let mut tokens = Tokenizer::new(&dialect, sql)
        .with_unescape(false)
        .tokenize_with_location()
        .map_err(|e| SqlError {
            message: e.message.clone(),
            line: e.location.line,
            column: e.location.column,
        })?;
    for t in &mut tokens {
        if let Token::SingleQuotedString(s) = &mut t.token {
            *s = unescape(s);
        }
    }
    // Positions (in `tokens`) of the significant tokens, and each one's paren depth.
    let sig: Vec<usize> = (0..tokens.len())
        .filter(|&i| !matches!(tokens[i].token, Token::Whitespace(_)))
        .collect();
    let mut depth = Vec::with_capacity(sig.len());
    let mut d = 0usize;
    for &i in &sig {
        if matches!(tokens[i].token, Token::RParen) {
            d = d.saturating_sub(1);
        }
        depth.push(d);
        if matches!(tokens[i].token, Token::LParen) {
            d += 1;
        }
    }
    let tok = |k: usize| -> Option<&Token> { sig.get(k).map(|&i| &tokens[i].token) };
    let kw = |k: usize| tok(k).and_then(keyword);
    let mut remove = vec![false; tokens.len()];
    let mut any_left_joins = Vec::new();
    // Tokens to emit before a token (at its location).
    let mut before: Vec<Vec<Token>> = vec![Vec::new(); tokens.len()];
    let mut scalars = Vec::new();
    // Per paren depth: whether the current clause is FROM (where FINAL may follow a table).
    let mut in_from = vec![false];
    // Per open paren: the function it calls, if it is a call's argument list.
    let mut calls: Vec<Option<String>> = Vec::new();
    for k in 0..sig.len() {
        match tok(k) {
            Some(Token::LParen) => calls.push(call_name(k, &tok)),
            Some(Token::RParen) => {
                calls.pop();
            }
            _ => {}
        }
        let join_word = |k: usize| {
            matches!(
                kw(k),
                Some(
                    Keyword::JOIN
                        | Keyword::LEFT
                        | Keyword::INNER
                        | Keyword::RIGHT
                        | Keyword::FULL
                        | Keyword::OUTER
                )
            )
        };
        match tok(k) {
            Some(Token::LParen) => in_from.push(false),
            Some(Token::RParen) => {
                in_from.pop();
                if in_from.is_empty() {
                    in_from.push(false);
                }
            }
            _ => {}
        }
        if kw(k) == Some(Keyword::USING) && matches!(tok(k + 1), Some(Token::Word(_))) {
            before[sig[k + 1]].push(Token::LParen);
            match sig.get(k + 2) {
                Some(&next) => before[next].push(Token::RParen),
                None => before.push(vec![Token::RParen]),
            }
        }
        let from_flag = in_from.last_mut();
        match kw(k) {
            Some(Keyword::SELECT) => from_flag.into_iter().for_each(|f| *f = false),
            Some(Keyword::FROM | Keyword::JOIN) => from_flag.into_iter().for_each(|f| *f = true),
            Some(
                Keyword::WHERE
                | Keyword::PREWHERE
                | Keyword::GROUP
                | Keyword::ORDER
                | Keyword::LIMIT
                | Keyword::HAVING
                | Keyword::SETTINGS
                | Keyword::FORMAT
                | Keyword::UNION
                | Keyword::ON
                | Keyword::USING,
            ) => from_flag.into_iter().for_each(|f| *f = false),
            Some(strictness @ (Keyword::ANY | Keyword::ALL))
                if join_word(k + 1) && (k == 0 || !matches!(kw(k - 1), Some(Keyword::UNION))) =>
            {
                remove[sig[k]] = true;
                if strictness == Keyword::ANY {
                    // `ANY LEFT [OUTER] JOIN r` or `LEFT ANY JOIN r`: where `r` starts.
                    let left = (k > 0 && kw(k - 1) == Some(Keyword::LEFT))
                        || kw(k + 1) == Some(Keyword::LEFT);
                    let join = (k + 1..k + 4).find(|&j| kw(j) == Some(Keyword::JOIN));
                    if let (true, Some(j)) = (left, join) {
                        // A subquery's span starts inside its parenthesis: both are kept.
                        for r in sig.iter().skip(j + 1).take(2) {
                            let at = tokens[*r].span.start;
                            any_left_joins.push((at.line, at.column));
                        }
                    }
                }
            }
            Some(Keyword::FINAL)
                if in_from.last() == Some(&true)
                    && k > 0
                    && matches!(tok(k - 1), Some(Token::Word(_) | Token::RParen))
                    && kw(k - 1) != Some(Keyword::AS)
                    && !matches!(tok(k + 1), Some(Token::Period | Token::LParen)) =>
            {
                remove[sig[k]] = true;
            }
            Some(Keyword::WITH) if k == 0 || matches!(tok(k - 1), Some(Token::LParen)) => {
                with_clause(&tokens, &sig, &depth, k, &mut remove, &mut scalars)?;
            }
            // `interval` as a column or alias name (`AS interval`, `ORDER BY interval DESC`),
            // which the parser would read as the start of an INTERVAL.
            Some(Keyword::INTERVAL) if !starts_interval(k, &tok) => {
                remove[sig[k]] = true;
                if let Some(Token::Word(w)) = tok(k) {
                    before[sig[k]].push(Token::make_word(&w.value, Some('`')));
                }
            }
            Some(Keyword::AS)
                if calls
                    .last()
                    .is_some_and(|c| c.as_deref().is_some_and(|f| !is_cast(f)))
                    && matches!(tok(k + 1), Some(Token::Word(_)))
                    && matches!(tok(k + 2), Some(Token::Comma | Token::RParen)) =>
            {
                remove[sig[k]] = true;
                remove[sig[k + 1]] = true;
            }
            _ => {}
        }
    }
    let mut out = Vec::with_capacity(tokens.len());
    let end = tokens.last().map(|t| t.span).unwrap_or(Span::empty());
    for (i, t) in tokens.into_iter().enumerate() {
        for b in std::mem::take(&mut before[i]) {
            out.push(TokenWithSpan::new(b, t.span));
        }
        if !remove[i] {
            out.push(t);
        }
    }
    for rest in before.into_iter().skip(remove.len()) {
        out.extend(rest.into_iter().map(|b| TokenWithSpan::new(b, end)));
    }
    Ok(Prepared {
        tokens: out,
        scalars,
        any_left_joins,
    })
}

/// The function whose argument list the paren at significant token `k` opens, if it opens
/// one (a name right before it that is not a clause keyword, and no SELECT inside).
fn call_name<'t>(k: usize, tok: &impl Fn(usize) -> Option<&'t Token>) -> Option<String> {
    let Some(Token::Word(w)) = k.checked_sub(1).and_then(tok) else {
        return None;
    };
    if matches!(
        tok(k + 1).and_then(keyword),
        Some(Keyword::SELECT | Keyword::WITH)
    ) {
        return None;
    }
    let clause = w.quote_style.is_none()
        && matches!(
            w.keyword,
            Keyword::IN
                | Keyword::FROM
                | Keyword::JOIN
                | Keyword::AS
                | Keyword::USING
                | Keyword::ON
                | Keyword::WHERE
                | Keyword::AND
                | Keyword::OR
                | Keyword::NOT
                | Keyword::SELECT
                | Keyword::BY
                | Keyword::WITH
                | Keyword::EXISTS
                | Keyword::VALUES
                | Keyword::INTERVAL
                | Keyword::OVER
                | Keyword::THEN
                | Keyword::ELSE
                | Keyword::WHEN
                | Keyword::CASE
                | Keyword::IS
                | Keyword::LIKE
                | Keyword::BETWEEN
                | Keyword::HAVING
                | Keyword::PREWHERE
        );
    (!clause).then(|| w.value.to_ascii_lowercase())
}

/// A string literal's text as ClickHouse reads it: `\\`, `\'`, `''`, `\n`, `\t`, `\r`,
/// `\0`, `\b`, `\f`, `\a`, `\v`, `\e` and `\xHH` are escapes; a backslash before any other
/// character stays (`'\+'` is two characters, which regular expressions rely on).
fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('\\') => out.push('\\'),
                Some('\'') => out.push('\''),
                Some('"') => out.push('"'),
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('r') => out.push('\r'),
                Some('0') => out.push('\0'),
                Some('b') => out.push('\u{8}'),
                Some('f') => out.push('\u{c}'),
                Some('a') => out.push('\u{7}'),
                Some('v') => out.push('\u{b}'),
                Some('e') => out.push('\u{1b}'),
                Some('x') => {
                    let hex: String = chars.by_ref().take(2).collect();
                    match u8::from_str_radix(&hex, 16) {
                        Ok(b) => out.push(b as char),
                        Err(_) => {
                            out.push_str("\\x");
                            out.push_str(&hex);
                        }
                    }
                }
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            },
            '\'' if chars.peek() == Some(&'\'') => {
                chars.next();
                out.push('\'');
            }
            other => out.push(other),
        }
    }
    out
}

/// True for the functions whose `AS` names a type, not an alias.
fn is_cast(function: &str) -> bool {
    matches!(function, "cast" | "try_cast" | "safe_cast" | "accuratecast")
}

/// True when the INTERVAL keyword at significant token `k` starts an interval (`INTERVAL 1
/// DAY`, `INTERVAL $n minute`, `INTERVAL '1 day'`, `INTERVAL (a + b) DAY`,
/// `INTERVAL days DAY`), not a column named `interval`.
fn starts_interval<'t>(k: usize, tok: &impl Fn(usize) -> Option<&'t Token>) -> bool {
    if k > 0 && matches!(tok(k - 1).and_then(keyword), Some(Keyword::AS)) {
        return false;
    }
    match tok(k + 1) {
        Some(
            Token::Number(..)
            | Token::SingleQuotedString(_)
            | Token::Placeholder(_)
            | Token::LParen
            | Token::Minus,
        ) => true,
        Some(Token::Word(w)) if w.quote_style.is_none() => {
            is_unit(&w.value) || matches!(tok(k + 2), Some(Token::Word(u)) if is_unit(&u.value))
        }
        _ => false,
    }
}

/// True for an INTERVAL unit word.
fn is_unit(word: &str) -> bool {
    matches!(
        word.to_ascii_lowercase().trim_end_matches('s'),
        "second" | "minute" | "hour" | "day" | "week" | "month" | "quarter" | "year"
    )
}

/// Lifts the scalar items out of the WITH clause whose WITH keyword is significant token
/// `with`.
fn with_clause(
    tokens: &[TokenWithSpan],
    sig: &[usize],
    depth: &[usize],
    with: usize,
    remove: &mut [bool],
    scalars: &mut Vec<ScalarWith>,
) -> Result<(), SqlError> {
    let level = depth[with];
    let tok = |k: usize| &tokens[sig[k]].token;
    // Items as ranges of significant tokens, up to the SELECT that ends the clause.
    let mut items = Vec::new();
    let mut start = with + 1;
    let mut end = None;
    for (k, _) in depth
        .iter()
        .enumerate()
        .skip(with + 1)
        .filter(|(_, d)| **d == level)
    {
        match tok(k) {
            Token::Comma => {
                items.push(start..k);
                start = k + 1;
            }
            t if keyword(t) == Some(Keyword::SELECT) => {
                items.push(start..k);
                end = Some(k);
                break;
            }
            _ => {}
        }
    }
    let Some(select) = end else {
        return Ok(());
    };
    let is_cte = |r: &std::ops::Range<usize>| {
        r.len() >= 4
            && matches!(tok(r.start), Token::Word(_))
            && keyword(tok(r.start + 1)) == Some(Keyword::AS)
            && matches!(tok(r.start + 2), Token::LParen)
            && matches!(
                keyword(tok(r.start + 3)),
                Some(Keyword::SELECT | Keyword::WITH)
            )
    };
    let mut kept = Vec::new();
    for item in &items {
        if is_cte(item) {
            kept.push(item.clone());
            continue;
        }
        let (Some(Token::Word(name)), Some(as_kw)) = (
            item.end.checked_sub(1).map(tok),
            item.end.checked_sub(2).map(tok),
        ) else {
            return Ok(());
        };
        if keyword(as_kw) != Some(Keyword::AS) || item.len() < 3 {
            return Ok(());
        }
        let expr_tokens: Vec<TokenWithSpan> = tokens[sig[item.start]..sig[item.end - 2]].to_vec();
        let dialect = ClickHouseDialect {};
        let mut parser = Parser::new(&dialect).with_tokens_with_locations(expr_tokens);
        let expr = parser.parse_expr().map_err(|e| parse_error(&e))?;
        if parser.peek_token().token != Token::EOF {
            let at = parser.peek_token().span.start;
            return Err(SqlError {
                message: format!("unexpected {} in WITH item", parser.peek_token().token),
                line: at.line,
                column: at.column,
            });
        }
        scalars.push(ScalarWith {
            name: name.value.clone(),
            expr,
            query_at: tokens[sig[select]].span.start,
        });
    }
    // Drop the whole list, then restore the CTEs and the commas between them.
    for r in remove.iter_mut().take(sig[select]).skip(sig[with] + 1) {
        *r = true;
    }
    for (n, item) in kept.iter().enumerate() {
        for r in remove
            .iter_mut()
            .take(sig[item.end - 1] + 1)
            .skip(sig[item.start])
        {
            *r = false;
        }
        if n + 1 < kept.len() {
            remove[sig[item.end]] = false;
        }
    }
    if kept.is_empty() {
        remove[sig[with]] = true;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(p: &Prepared) -> String {
        let words: Vec<String> = p
            .tokens
            .iter()
            .filter(|t| !matches!(t.token, Token::Whitespace(_)))
            .map(|t| t.token.to_string())
            .collect();
        words.join(" ")
    }

    #[test]
    fn lifts_scalar_with_items_keeping_ctes() {
        let p = prepare("WITH 1 + 2 AS x, c AS (SELECT 1), now() AS n SELECT x FROM c").unwrap();
        assert_eq!(text(&p), "WITH c AS ( SELECT 1 ) SELECT x FROM c");
        assert_eq!(p.scalars.len(), 2);
        assert_eq!(p.scalars[0].name, "x");
        assert_eq!(p.scalars[0].expr.to_string(), "1 + 2");
        assert_eq!(p.scalars[1].name, "n");
        assert_eq!(
            (p.scalars[0].query_at.line, p.scalars[0].query_at.column),
            (1, 46)
        );
        let p = prepare("WITH x AS (SELECT a AS b FROM t) SELECT * FROM x").unwrap();
        assert!(p.scalars.is_empty());
        assert_eq!(
            text(&p),
            "WITH x AS ( SELECT a AS b FROM t ) SELECT * FROM x"
        );
        let p = prepare("WITH\n  'a' AS k\nSELECT k").unwrap();
        assert_eq!(text(&p), "SELECT k");
        assert_eq!(p.scalars[0].query_at.line, 3);
    }

    #[test]
    fn drops_join_strictness_and_final() {
        let p = prepare("SELECT * FROM t AS x FINAL ANY LEFT JOIN u FINAL ON x.a = u.a").unwrap();
        assert_eq!(
            text(&p),
            "SELECT * FROM t AS x LEFT JOIN u ON x . a = u . a"
        );
        let p =
            prepare("SELECT final FROM t LEFT ALL JOIN u USING (a) UNION ALL SELECT 1").unwrap();
        assert_eq!(
            text(&p),
            "SELECT final FROM t LEFT JOIN u USING ( a ) UNION ALL SELECT 1"
        );
        let p = prepare("SELECT any(x) FROM t WHERE x.final = 1").unwrap();
        assert_eq!(text(&p), "SELECT any ( x ) FROM t WHERE x . final = 1");
    }

    #[test]
    fn clickhouse_forms_the_parser_does_not_take() {
        let p = prepare("SELECT * FROM t LEFT JOIN u USING id WHERE x = 1").unwrap();
        assert_eq!(
            text(&p),
            "SELECT * FROM t LEFT JOIN u USING ( id ) WHERE x = 1"
        );
        let p = prepare("SELECT * FROM t JOIN u USING id").unwrap();
        assert_eq!(text(&p), "SELECT * FROM t JOIN u USING ( id )");
        let p = prepare(
            "SELECT toStartOfInterval(t, INTERVAL $n minute) AS interval FROM x ORDER BY interval DESC",
        )
        .unwrap();
        assert_eq!(
            text(&p),
            "SELECT toStartOfInterval ( t , INTERVAL $n minute ) AS `interval` FROM x ORDER BY `interval` DESC"
        );
        let p = prepare("SELECT interval, d - INTERVAL p DAY, INTERVAL 1 HOUR FROM x").unwrap();
        assert_eq!(
            text(&p),
            "SELECT `interval` , d - INTERVAL p DAY , INTERVAL 1 HOUR FROM x"
        );
        let p =
            prepare("SELECT multiIf(g = 'r', concat(c, '-', r) AS region, c) AS k FROM t").unwrap();
        assert_eq!(
            text(&p),
            "SELECT multiIf ( g = 'r' , concat ( c , '-' , r ) , c ) AS k FROM t"
        );
        // A CAST's type, a subquery's aliases and a tuple's stay.
        let p = prepare("SELECT CAST(a AS String), (SELECT b AS c, d FROM u) FROM t").unwrap();
        assert_eq!(
            text(&p),
            "SELECT CAST ( a AS String ) , ( SELECT b AS c , d FROM u ) FROM t"
        );
        let p = prepare("SELECT x FROM t WHERE a IN (b AS c, d)").unwrap();
        assert_eq!(text(&p), "SELECT x FROM t WHERE a IN ( b AS c , d )");
    }

    #[test]
    fn string_escapes_as_clickhouse_reads_them() {
        let p = prepare(r"SELECT '\+a', 'x\\y', 'q\'s', 'it''s', 't\tu', '\x41', '\d'").unwrap();
        let strings: Vec<String> = p
            .tokens
            .iter()
            .filter_map(|t| match &t.token {
                Token::SingleQuotedString(s) => Some(s.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(strings, [r"\+a", r"x\y", "q's", "it's", "t\tu", "A", r"\d"]);
    }

    #[test]
    fn errors_keep_locations() {
        let Err(e) = prepare("WITH 1 +) AS x SELECT x") else {
            panic!("expected an error")
        };
        assert_eq!(e.line, 1, "{e:?}");
        let Err(e) = prepare("SELECT 'abc") else {
            panic!("expected an error")
        };
        assert_eq!((e.line, e.column), (1, 8), "{e:?}");
    }
}
