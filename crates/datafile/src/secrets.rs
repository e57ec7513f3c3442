//! `{{ tb_secret("NAME", "default") }}` rendering for `.datasource` and `.connection` files.
//!
//! Tinybird renders those files as templates where only `tb_secret` exists before reading them. Petrel
//! does the same with [`render_secrets`]; the caller chooses where secret values come from (environment,
//! `.env` files, a secret store).

use crate::{DatafileError, Loc};

/// Replaces every `{{ tb_secret("NAME") }}` / `{{ tb_secret('NAME', 'default') }}` in `text` with
/// `lookup(NAME)`, or the default when `lookup` has no value. An empty result is written as `""` so that
/// the keyword keeps a (quoted, empty) value.
///
/// Errors: a secret that `lookup` does not know and that has no default (`Cannot access secret 'N'...`),
/// or any other expression inside `{{ }}` (only `tb_secret` exists in these files).
pub fn render_secrets(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, DatafileError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut consumed = 0;
    while let Some(open) = rest.find("{{") {
        let loc = loc_of(text, consumed + open);
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            return Err(DatafileError::new(loc, "Missing closing }} in template"));
        };
        let (name, default) = parse_call(&after[..close]).ok_or_else(|| {
            DatafileError::new(
                loc,
                format!(
                    "Only tb_secret(\"NAME\", \"default\") can be used inside {{{{ }}}} in this file, found '{}'",
                    after[..close].trim()
                ),
            )
        })?;
        let value = lookup(&name).or(default).ok_or_else(|| {
            DatafileError::new(
                loc,
                format!(
                    "Cannot access secret '{name}'. Check the secret exists in the Workspace and the token has the required scope."
                ),
            )
        })?;
        if value.is_empty() {
            out.push_str("\"\"");
        } else {
            out.push_str(&value);
        }
        let used = open + 2 + close + 2;
        consumed += used;
        rest = &rest[used..];
    }
    out.push_str(rest);
    Ok(out)
}

fn loc_of(text: &str, byte: usize) -> Loc {
    let before = &text[..byte];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |p| p + 1);
    Loc::new(line, before[line_start..].chars().count() + 1)
}

/// Reads `tb_secret(<string> [, <string>])`, returning the name and the default.
fn parse_call(expr: &str) -> Option<(String, Option<String>)> {
    let rest = expr.trim().strip_prefix("tb_secret")?.trim_start();
    let rest = rest.strip_prefix('(')?.trim_end().strip_suffix(')')?;
    let (name, rest) = string_literal(rest.trim_start())?;
    let rest = rest.trim_start();
    if rest.is_empty() {
        return Some((name, None));
    }
    let rest = rest.strip_prefix(',')?.trim_start();
    let (default, rest) = string_literal(rest)?;
    rest.trim().is_empty().then_some((name, Some(default)))
}

/// Reads a Python string literal at the start of `s` (backslash escapes the next character).
fn string_literal(s: &str) -> Option<(String, &str)> {
    let quote = s.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let mut value = String::new();
    let mut escaped = false;
    for (i, c) in s.char_indices().skip(1) {
        if escaped {
            value.push(match c {
                'n' => '\n',
                't' => '\t',
                other => other,
            });
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == quote {
            return Some((value, &s[i + 1..]));
        } else {
            value.push(c);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "SERVERS" => Some("kafka:9092".to_string()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn renders_values_and_defaults() {
        let text = "KAFKA_BOOTSTRAP_SERVERS {{ tb_secret(\"SERVERS\", \"localhost:9092\") }}\nKAFKA_KEY {{tb_secret('KEY', 'key')}}\nKAFKA_SECRET {{ tb_secret(\"EMPTY\") }}\nX {{ tb_secret(\"MISSING\", \"\") }}\n";
        let out = render_secrets(text, &env).unwrap();
        assert_eq!(
            out,
            "KAFKA_BOOTSTRAP_SERVERS kafka:9092\nKAFKA_KEY key\nKAFKA_SECRET \"\"\nX \"\"\n"
        );
    }

    #[test]
    fn missing_secret_without_default() {
        let e =
            render_secrets("TYPE kafka\nKAFKA_KEY   {{ tb_secret(\"NOPE\") }}", &env).unwrap_err();
        assert_eq!(e.loc(), Loc::new(2, 13));
        assert!(e.message.starts_with("Cannot access secret 'NOPE'"), "{e}");
    }

    #[test]
    fn other_expressions_are_errors() {
        let e = render_secrets("X {{ tb_var('A') }}", &env).unwrap_err();
        assert!(e.message.contains("Only tb_secret"), "{e}");
        let e = render_secrets("X {{ tb_secret('A'", &env).unwrap_err();
        assert!(e.message.contains("Missing closing"), "{e}");
        assert_eq!(
            render_secrets("no templates", &env).unwrap(),
            "no templates"
        );
    }
}
