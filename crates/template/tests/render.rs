//! Rendering: placeholders and shapes, parameter validation, the template statements and
//! functions, and the error messages.

use petrel_template::{ParamType, Params, Rendered, Template, TemplateError};
use petrel_value::{Value, F64};

fn render(sql: &str, params: &[(&str, &str)]) -> Result<Rendered, TemplateError> {
    let t = Template::parse(sql).expect("template parses");
    t.render(&params.iter().copied().collect())
}

fn sql(sql: &str, params: &[(&str, &str)]) -> String {
    match render(sql, params) {
        Ok(r) => r.sql.trim().to_string(),
        Err(e) => panic!("render failed: {e}"),
    }
}

fn err(sql: &str, params: &[(&str, &str)]) -> TemplateError {
    match render(sql, params) {
        Ok(r) => panic!("expected an error, got {}", r.sql),
        Err(e) => e,
    }
}

fn parse_err(sql: &str) -> String {
    match Template::parse(sql) {
        Ok(_) => panic!("expected a parse error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn plain_sql_is_kept() {
    let t = Template::parse("SELECT 1\nFROM t").unwrap();
    assert!(!t.is_templated());
    assert_eq!(t.render(&Params::new()).unwrap().sql, "SELECT 1\nFROM t");
    assert!(parse_err("SELECT {{ x }}").contains("start the query with a % character"));
    assert!(Template::parse("  \n %\nSELECT 1").unwrap().is_templated());
}

#[test]
fn typed_parameters_become_placeholders() {
    let r = render(
        "%\nSELECT * FROM t WHERE c = {{ String(country) }} LIMIT {{ Int32(limit, 10) }}",
        &[("country", "DE")],
    )
    .unwrap();
    assert_eq!(r.sql, "\nSELECT * FROM t WHERE c = $country LIMIT $limit");
    assert_eq!(r.values["country"], Value::str("DE"));
    assert_eq!(r.values["limit"], Value::Int(10));
    assert_eq!(r.types["limit"], ParamType::Int(32));
    assert_eq!(r.declared.len(), 2);
}

#[test]
fn shape_does_not_depend_on_typed_values() {
    let t = Template::parse(
        "% SELECT * FROM t WHERE d >= {{ DateTime(start, '2024-01-01 00:00:00') }} \
         AND id IN {{ Array(ids, 'UInt64', '1') }} \
         LIMIT {{ Int32(page_size, 10) }} OFFSET {{ Int32(page, 0) * Int32(page_size, 10) }}",
    )
    .unwrap();
    let a = t
        .render(&Params::new().with("ids", "1,2").with("page", "1"))
        .unwrap();
    let b = t
        .render(
            &Params::new()
                .with("ids", "7,8,9")
                .with("page", "3")
                .with("start", "2023-05-05 10:00:00"),
        )
        .unwrap();
    assert_eq!(a.sql, b.sql);
    assert!(a.sql.contains("OFFSET ($page * $page_size)"), "{}", a.sql);
    assert_eq!(
        a.values["ids"],
        Value::Array(vec![Value::UInt(1), Value::UInt(2)].into())
    );
    assert_eq!(b.values["start"], Value::DateTime(1_683_280_800));
    assert_ne!(a.values, b.values);
}

#[test]
fn typed_strings_concatenate_symbolically() {
    assert_eq!(
        sql("% WHERE u LIKE {{ '%' + String(term, 'x') + '%' }}", &[]),
        "WHERE u LIKE concat(concat('\\%', $term), '\\%')"
    );
}

#[test]
fn required_parameters_are_collected() {
    let e = err(
        "% select * from table where str = {{String(test)}} and category = \
         {{String(category, 'shirts')}} and color = {{ Int32(color)}}",
        &[],
    );
    assert_eq!(
        e.to_string(),
        "Template Syntax Error: Required parameter is not defined. Check the parameters test \
         and color. Please provide a value or set a default value in the pipe code."
    );
    assert_eq!(e.status(), 400);
    // Missing values that template logic trips over still report as missing.
    let e = err("% {% if Int32(x) > 5 %}a{% end %}", &[]);
    assert!(matches!(e, TemplateError::RequiredParams { ref names } if names == &["x"]));
}

#[test]
fn values_are_validated() {
    let e = err("% SELECT {{ Int32(foo) }}", &[("foo", "non_int")]);
    assert_eq!(
        e.to_string(),
        "Template Syntax Error: Error validating 'non_int' to type Int32"
    );
    assert!(matches!(e, TemplateError::InvalidValue { ref name, .. } if name == "foo"));
    assert!(render("% {{ Int8(x) }}", &[("x", "128")]).is_err());
    assert!(render("% {{ UInt8(x) }}", &[("x", "255")]).is_ok());
    assert_eq!(
        err("% {{ Int(x) }}", &[("x", "2147483648")]).to_string(),
        "Template Syntax Error: Error validating '2147483648' to type Int32"
    );
    assert!(render("% {{ Float32(x) }}", &[("x", "1.5")]).is_ok());
    assert!(render("% {{ Float64(x) }}", &[("x", "abc")]).is_err());
    assert!(render("% {{ Date(x) }}", &[("x", "2024-13-01")]).is_err());
    assert!(render("% {{ DateTime(x) }}", &[("x", "2024-01-01")]).is_err());
    let r = render(
        "% {{ DateTime64(x) }}",
        &[("x", "2024-01-01T00:00:01.500Z")],
    )
    .unwrap();
    assert_eq!(r.values["x"], Value::DateTime64(1_704_067_201_500, 3));
    let r = render("% {{ Float32(x) }}", &[("x", "0.5")]).unwrap();
    assert_eq!(r.values["x"], Value::Float(F64(0.5)));
}

#[test]
fn booleans() {
    for (raw, want) in [
        ("0", 0),
        ("false", 0),
        ("FALSE", 0),
        ("1", 1),
        ("yes", 1),
        ("", 1),
    ] {
        let r = render(
            "% {% if Boolean(b) %}on{% end %} {{ Boolean(b) }}",
            &[("b", raw)],
        )
        .unwrap();
        assert_eq!(r.values["b"], Value::UInt(want), "{raw}");
        assert_eq!(r.sql.contains("on"), want == 1, "{raw}");
    }
    // A missing Boolean is false (or its default), never an error.
    assert_eq!(sql("% {{ Boolean(b) }}", &[]), "$b");
    let r = render("% {{ Boolean(b, True) }}", &[]).unwrap();
    assert_eq!(r.values["b"], Value::UInt(1));
    assert_eq!(
        sql(
            "% {% if Boolean(root) == 1 %}yes{% end %}",
            &[("root", "true")]
        ),
        "yes"
    );
}

#[test]
fn arrays() {
    let r = render(
        "% WHERE id IN {{ Array(ids, 'Int32') }}",
        &[("ids", "1,2,3")],
    )
    .unwrap();
    assert_eq!(r.sql, " WHERE id IN $ids");
    assert_eq!(
        r.values["ids"],
        Value::Array(vec![Value::Int(1), Value::Int(2), Value::Int(3)].into())
    );
    assert_eq!(
        r.types["ids"],
        ParamType::Array(Box::new(ParamType::Int(32)))
    );
    assert_eq!(
        err("% {{ Array(e, 'Float32') }}", &[("e", "1,2,3,4, null")]).to_string(),
        "Template Syntax Error: Error validating [1,2,3,4, null][4] ( null) to type Float32"
    );
    assert_eq!(
        err("% {{ Array(e, 'Int32', '') }}", &[]).to_string(),
        "Template Syntax Error: Error validating [][0] (empty string) to type Int32"
    );
    let r = render("% {{ Array(s, 'String', 'pre,pro') }}", &[]).unwrap();
    assert_eq!(
        r.values["s"],
        Value::Array(vec![Value::str("pre"), Value::str("pro")].into())
    );
    let r = render("% {{ Array(s, 'String', ['a','b']) }}", &[]).unwrap();
    assert_eq!(
        r.values["s"],
        Value::Array(vec![Value::str("a"), Value::str("b")].into())
    );
    // Unknown element types are unvalidated strings, as in Tinybird.
    let r = render("% {{ Array(s, 'link_id') }}", &[("s", "x,y")]).unwrap();
    assert_eq!(r.types["s"], ParamType::Array(Box::new(ParamType::String)));
    // A parameter declared as an Array is a list in template logic.
    let t = "% {% if defined(service) and service != [''] %}f {{ Array(service) }}{% end %}";
    assert_eq!(sql(t, &[("service", "")]), "");
    assert_eq!(sql(t, &[("service", "api")]), "f $service");
    assert_eq!(
        sql(
            "% {% set n = len(xs) %}{{ n }} {{ Array(xs, 'Int32') }}",
            &[("xs", "1,2,3")]
        ),
        "3 $xs"
    );
}

#[test]
fn raw_values_are_escaped_literals() {
    assert_eq!(
        sql(
            "% select * from table where f = {{foo}}",
            &[("foo", "';drop table users;")]
        ),
        "select * from table where f = '\\';drop table users;'"
    );
    assert_eq!(
        sql("% {{ x }}", &[("x", "a\"b\\c\n%`")]),
        "'a\\\"b\\\\c\\n\\%\\`'"
    );
    assert_eq!(
        sql("% {% set n = 3 %}{{ n }} {{ 1.5 }} {{ [1, 'a'] }}", &[]),
        "3 1.5 [1,'a']"
    );
    assert_eq!(
        err("% SELECT {{ test }}", &[]).to_string(),
        "Template Syntax Error: expression \"test\" evaluated to null, line 1"
    );
}

#[test]
fn control_flow() {
    let t = "% {% if defined(a) %}A{% elif b == 'x' %}B{% else %}C{% end %}";
    assert_eq!(sql(t, &[("a", "1")]), "A");
    assert_eq!(sql(t, &[("b", "x")]), "B");
    assert_eq!(sql(t, &[]), "C");
    assert_eq!(
        sql("% {% for x in [1, 2, 3, 4] %}{% if x == 2 %}{% continue %}{% end %}{% if x == 4 %}{% break %}{% end %}{{ x }};{% end %}", &[]),
        "1;3;"
    );
    assert_eq!(
        sql("% {% for x in [] %}a{% else %}empty{% end %}", &[]),
        "empty"
    );
    assert_eq!(
        sql(
            "% {% set a, b = 1, 2 %}{% set a += 10 %}{{ a }} {{ b }}",
            &[]
        ),
        "11 2"
    );
    assert_eq!(
        sql(
            "% {{ 'y' if defined(x) and x not in ('a', 'b') else 'n' }}",
            &[("x", "c")]
        ),
        "'y'"
    );
    assert_eq!(
        sql(
            "% {% if Int32(x, 0) > 5 %}big{% else %}small{% end %}",
            &[("x", "9")]
        ),
        "big"
    );
}

#[test]
fn literal_braces_comments_and_whitespace() {
    assert_eq!(sql("% a {{! b }} {# hidden #}c", &[]), "a {{ b }} c");
    assert_eq!(sql("% {% whitespace oneline %}a\n\n   b", &[]), "a b");
}

#[test]
fn structural_functions_render_text() {
    assert_eq!(sql("% SELECT {{ column(agg, 'a') }}", &[]), "SELECT `a`");
    assert_eq!(
        sql("% SELECT {{ column(agg) }}", &[("agg", "json.a")]),
        "SELECT `json`.`a`"
    );
    assert_eq!(
        sql("% SELECT {{ column(agg) }}", &[("agg", "\"foo\"")]),
        "SELECT `foo`"
    );
    assert!(render("% SELECT {{ column(agg) }}", &[("agg", "a`; drop")]).is_err());
    assert_eq!(
        err("% SELECT {{column(agg)}}", &[]).to_string(),
        "Template Syntax Error: Missing column() default value, use `column(column_name, 'default_column_name')`, line 1"
    );
    assert_eq!(
        sql("% SELECT {{ columns(cols, 'a,b,c') }}", &[]),
        "SELECT `a`,`b`,`c`"
    );
    assert_eq!(
        sql(
            "% SELECT {{ columns(cols, 'a', fn='sum') }}",
            &[("cols", "x, y")]
        ),
        "SELECT sum(`x`) as `x`,sum(`y`) as `y`"
    );
    assert_eq!(
        sql("% select * from {{symbol(foo)}}", &[("foo", "table-name")]),
        "select * from `table-name`"
    );
    assert_eq!(
        sql("% select * from {{table(foo)}}", &[("foo", "my.table")]),
        "select * from my.table"
    );
    assert!(render("% select * from {{table(foo)}}", &[("foo", "t; drop")]).is_err());
}

#[test]
fn sql_and_uses_placeholders() {
    let t = "% WHERE {{ sql_and(a=Int(a, defined=False), b__in=Array(b, 'Int32', defined=False), c=c) }}";
    let r = render(t, &[("b", "1,2"), ("c", "x")]).unwrap();
    assert_eq!(r.sql, " WHERE b in $b and c = 'x'");
    let r = render(t, &[("a", "5")]).unwrap();
    assert_eq!(r.sql, " WHERE a = $a");
    assert_eq!(r.values["a"], Value::Int(5));
    assert!(render("% {{ sql_and(a__like=a) }}", &[("a", "x")]).is_err());
}

#[test]
fn helpers() {
    assert_eq!(
        sql(
            "% {% for v in split_to_array(tags, '') %}[{{v}}]{% end %}",
            &[("tags", "a, b")]
        ),
        "['a']['b']"
    );
    assert_eq!(
        sql(
            "% {{ split_to_array(String(m, ''), separator='|') }}",
            &[("m", "a|b")]
        ),
        "['a','b']"
    );
    assert_eq!(
        sql("% {% for last, x in enumerate_with_last([1, 2]) %}{{x}}{% if not last %},{% end %}{% end %}", &[]),
        "1,2"
    );
    let t = "% {{ day_diff(a, b) }}";
    assert_eq!(sql(t, &[("a", "2019-01-02"), ("b", "2019-02-01")]), "30");
    assert!(err(t, &[("a", "x"), ("b", "2019-02-01")])
        .to_string()
        .contains("`day_diff`"));
    assert_eq!(
        sql(
            "% {{ date_diff_in_hours(a, b) }}",
            &[("a", "2022-12-14 18:42:22"), ("b", "2022-12-19 18:42:22")]
        ),
        "120"
    );
    assert_eq!(
        sql(
            "% {{ date_diff_in_hours(a, '2022-12-19', backup_date_format='%Y-%m-%d') }}",
            &[("a", "2022-12-19 02:01:00")]
        ),
        "2"
    );
    assert_eq!(
        sql(
            "% {{ date_diff_in_days(a, '2019-00-02', none_if_error=True) is None }}",
            &[("a", "2019-01-01")]
        ),
        "true"
    );
    assert_eq!(
        sql("% like {{ sql_unescape(String(p), '%') }}", &[("p", "a_%")]),
        "like $p"
    );
    assert_eq!(
        sql("% like {{ sql_unescape(p, '%') }}", &[("p", "a%'")]),
        "like 'a%\\''"
    );
}

#[test]
fn json_and_methods() {
    let t = "% {% for item in JSON(filters, '[]') %}\
             {% if item.get('operand', '').startswith('metadata.') %}\
             {% set key = item.get('operand', '').split('.')[1] %}\
             AND m[{{ key }}] = {{ item.get('value', '') }}{% end %}{% end %}";
    assert_eq!(
        sql(
            t,
            &[(
                "filters",
                r#"[{"operand":"metadata.plan","value":"pro"},{"operand":"x"}]"#
            )]
        ),
        "AND m['plan'] = 'pro'"
    );
    assert_eq!(sql(t, &[]), "");
    assert!(err(t, &[("filters", "[1")])
        .to_string()
        .starts_with("Template Syntax Error: Error parsing JSON: '[1'"));
    assert!(err(
        "% {% for i in JSON(f, '[\"a\"]') %}{{ i.get('x') }}{% end %}",
        &[]
    )
    .to_string()
    .contains("'str' object has no attribute 'get'"));
    assert_eq!(
        sql(
            "% {{ ','.join(['a', 'b']).upper() }} {{ 'a-b'.replace('-', '_') }} {{ len('abc') }}",
            &[]
        ),
        "'A,B' 'a_b' 3"
    );
}

#[test]
fn placeholder_names() {
    // Another default for the same parameter gets its own placeholder.
    let r = render(
        "% {{ Int32(x, 1) }} {{ Int32(x, 2) }} {{ Int32(x, 1) }}",
        &[],
    )
    .unwrap();
    assert_eq!(r.sql, " $x $x__2 $x");
    assert_eq!(r.values["x__2"], Value::Int(2));
    // With a value both are the same.
    assert_eq!(
        sql("% {{ Int32(x, 1) }} {{ Int32(x, 2) }}", &[("x", "5")]),
        "$x $x"
    );
    // Typed values computed in the template get generated names.
    let r = render("% {% for v in ['a', 'b'] %}{{ String(v) }}{% end %}", &[]).unwrap();
    assert_eq!(r.sql, " $__1 $__2");
    assert_eq!(r.values["__2"], Value::str("b"));
    // A placeholder never runs into the text after it.
    assert_eq!(sql("% {{ Int32(d, 1) }}day", &[]), "$d day");
    // One parameter, two types: an error.
    let e = err("% {{ Int32(x, 1) }} {{ String(x, 'a') }}", &[]);
    assert!(matches!(e, TemplateError::TypeConflict { .. }), "{e}");
}

#[test]
fn custom_errors() {
    let e = err(
        "% {% if not defined(x) %}{{ error('x is required', 404) }}{% end %}",
        &[],
    );
    assert_eq!(e.to_string(), "x is required");
    assert_eq!(e.status(), 404);
    assert_eq!(err("% {{ error('bad') }}", &[]).status(), 400);
    let e = err(
        "% {{ custom_error({'error': 'nope', 'code': 'E1'}, 403) }}",
        &[],
    );
    assert_eq!(e.status(), 403);
    assert_eq!(e.to_string(), "nope");
    match e {
        TemplateError::Custom { body: Some(b), .. } => assert_eq!(b["code"], "E1"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn settings_and_secrets() {
    assert_eq!(
        sql("% {{ max_threads(2) }}SELECT 1", &[]),
        "-- max_threads 2\nSELECT 1"
    );
    assert_eq!(sql("% {{ cache_ttl('5m') }}", &[]), "-- cache_ttl 5m");
    assert!(render("% {{ cache_ttl('2m') }}", &[]).is_err());
    assert!(render("% {{ activate('nope') }}", &[]).is_err());
    assert_eq!(
        sql("% {{ activate('analyzer') }}", &[]),
        "-- activate analyzer"
    );
    let t = Template::parse("% WHERE k = {{ tb_secret('KEY') }}").unwrap();
    let mut p = Params::new();
    p.secrets.insert("KEY".into(), "s3cr3t".into());
    let r = t.render(&p).unwrap();
    assert_eq!(r.sql, " WHERE k = $tb_secret_KEY");
    assert_eq!(r.values["tb_secret_KEY"], Value::str("s3cr3t"));
    assert!(t
        .render(&Params::new())
        .unwrap_err()
        .to_string()
        .contains("Cannot access secret 'KEY'"));
    assert_eq!(sql("% {{ tb_secret('KEY', 'dflt') }}", &[]), "'dflt'");
}

#[test]
fn parse_errors() {
    assert_eq!(
        parse_err("%\n    select * from test_table\n    {% if defined(whatever) %}\n    where 2\n    {% else %}\n"),
        "Syntax error: Missing {% end %} block for if at line 5"
    );
    assert_eq!(
        parse_err("% SELECT * FROM {% import os %}{{ os.popen('ls').read() }}"),
        "Syntax error: import is forbidden at line 1"
    );
    assert_eq!(
        parse_err("%\n    select * from test_table\n    {% if whatever(whatever) %}\n    where 2\n    {% end %}"),
        "Template Syntax Error: 'whatever' is not a valid function, line 3"
    );
    assert!(
        parse_err("% SELECT 1 {% if defined((passenger_count) %} WHERE 1=1 {% end %}")
            .starts_with("Syntax error: invalid syntax")
    );
    assert_eq!(
        parse_err("% SELECT {{len([1] * 10**7)}}"),
        "Syntax error: Invalid BinOp: Pow() at line 1"
    );
    assert_eq!(
        parse_err("% SELECT {{String(format, 'test')}}"),
        "Syntax error: \"format\" can not be used as a variable name at line 1"
    );
    assert!(parse_err("% {% raw x %}").contains("raw is forbidden"));
    assert!(parse_err("% {% include 'x' %}").contains("include is forbidden"));
    assert!(parse_err("% {% foo %}").contains("unknown operator: 'foo'"));
    assert!(parse_err("% {% break %}").contains("break outside for block"));
}

#[test]
fn declared_parameters() {
    let t = Template::parse(
        "% {% if defined(a) %}{{ Int32(a) }}{% else %}{{ Date(d, '2024-01-01', description='start', required=True) }}{% end %}\
         {{ Array(ids, 'UInt8', '1,2') }} {{ String(s) }} {{ Boolean(f) }} {% for x in xs %}{{ String(x) }}{% end %}",
    )
    .unwrap();
    let decls = t.declared_params();
    let names: Vec<&str> = decls.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["a", "d", "ids", "s", "f"]);
    assert!(!decls[0].required, "guarded by defined(a)");
    assert_eq!(decls[1].default, Some(Value::Date(19_723)));
    assert_eq!(decls[1].description.as_deref(), Some("start"));
    assert!(decls[1].required, "required=True");
    assert_eq!(
        decls[2].default,
        Some(Value::Array(vec![Value::UInt(1), Value::UInt(2)].into()))
    );
    assert!(decls[3].required);
    assert!(!decls[4].required);
    assert_eq!(
        t.param_names().into_iter().collect::<Vec<_>>(),
        ["a", "d", "f", "ids", "s", "xs"]
    );
    // A render lists the ones it met.
    let r = t
        .render(&Params::new().with("s", "v").with("xs", ""))
        .unwrap();
    let met: Vec<&str> = r.declared.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(met, ["d", "ids", "s", "f"]);
}
