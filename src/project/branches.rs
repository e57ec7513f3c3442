//! The parameter values a build plans each endpoint with, beyond its defaults, so that a green
//! `petrel build` means every template branch renders SQL that plans: each literal a template
//! compares a parameter with (`{% if groupBy == 'country' %}`), and an example value for each
//! typed parameter (which takes the `{% if defined(x) %}` branches).

use std::collections::BTreeSet;

use petrel_template::{ParamDecl, ParamType};

/// `(parameter, value)` pairs to plan a pipe with, one at a time on top of its defaults.
pub fn branch_values(sources: &[&str], decls: &[ParamDecl]) -> Vec<(String, String)> {
    let mut out = BTreeSet::new();
    for source in sources {
        for (name, value) in compared_literals(source) {
            out.insert((name, value));
        }
    }
    for d in decls {
        let value = d
            .example
            .clone()
            .or_else(|| d.default.as_ref().map(|v| v.to_text()))
            .unwrap_or_else(|| example(&d.ty).to_string());
        out.insert((d.name.clone(), value));
    }
    out.into_iter().collect()
}

/// A value of each parameter type that parses as it.
fn example(ty: &ParamType) -> &'static str {
    match ty {
        ParamType::String => "x",
        ParamType::Boolean => "true",
        ParamType::Int(_) | ParamType::UInt(_) => "1",
        ParamType::Float32 | ParamType::Float64 => "1.5",
        ParamType::Date => "2019-01-01",
        ParamType::DateTime => "2019-01-01 00:00:00",
        ParamType::DateTime64 => "2019-01-01 00:00:00.000",
        ParamType::Array(inner) => match **inner {
            ParamType::String => "a,b",
            _ => "1,2",
        },
        ParamType::Json => "{}",
    }
}

/// `name == 'v'`, `name != "v"`, `String(name, ..) == 'v'` inside `{% .. %}` blocks.
fn compared_literals(source: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = source;
    while let Some(open) = rest.find("{%") {
        let after = &rest[open + 2..];
        let Some(close) = after.find("%}") else { break };
        let block = &after[..close];
        rest = &after[close + 2..];
        let bytes = block.as_bytes();
        let mut i = 0;
        while i + 1 < bytes.len() {
            let op = &block[i..i + 2];
            if op != "==" && op != "!=" {
                i += 1;
                continue;
            }
            if let (Some(name), Some(value)) =
                (name_before(&block[..i]), literal_after(&block[i + 2..]))
            {
                out.push((name, value));
            }
            i += 2;
        }
    }
    out
}

/// The parameter name that ends `text` (`groupBy`, or `String(groupBy, 'x')`).
fn name_before(text: &str) -> Option<String> {
    let t = text.trim_end();
    let word = |s: &str| -> Option<String> {
        let name: String = s
            .chars()
            .rev()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        valid.then_some(name)
    };
    if let Some(inner) = t.strip_suffix(')') {
        // `Type(name[, ..])`: the first argument.
        let open = inner.rfind('(')?;
        let first = inner[open + 1..].split(',').next()?.trim();
        return word(first).filter(|w| w.len() == first.len());
    }
    word(t)
}

/// The quoted literal that starts `text`.
fn literal_after(text: &str) -> Option<String> {
    let t = text.trim_start();
    let quote = t.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let end = t[1..].find(quote)?;
    Some(t[1..1 + end].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_literals_templates_compare_parameters_with() {
        let source = "SELECT {% if groupBy == 'countries' %} country {% elif String(groupBy, 'x') != \"cities\" %} city {% end %} FROM t WHERE a == 'not a block'";
        assert_eq!(
            compared_literals(source),
            [
                ("groupBy".to_string(), "countries".to_string()),
                ("groupBy".to_string(), "cities".to_string())
            ]
        );
        assert!(compared_literals("{% if defined(x) %}").is_empty());
    }
}
