//! A FEEL subset, compiled once (at deploy) and evaluated against JSON variables.
//!
//! Supported: literals (numbers, strings, `true`/`false`, `null`), lists `[a, b]`, paths
//! (`chat.contact.name`), arithmetic `+ - * /` (also date-time ± duration), comparison
//! `= != < <= > >=`, `and`/`or` with FEEL's three-valued logic, `not(x)`, `x in [..]`,
//! `x between a and b`, `if c then a else b`, and the functions `count`, `sum`, `min`, `max`,
//! `string length`, `upper case`, `lower case`, `contains`, `starts with`, `ends with`,
//! `substring`, `string`, `number`, `is defined`, `now`, `today`, `date and time`, `duration`.
//! Null semantics as in FEEL: an operation on `null` (or on mismatched types) gives `null`;
//! `null = null` is true; a missing path is `null`.

use std::collections::BTreeMap;

/// A FEEL value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    List(Vec<Value>),
    Context(BTreeMap<String, Value>),
    /// Unix milliseconds, UTC.
    DateTime(i64),
    /// Milliseconds.
    Duration(i64),
}

impl Value {
    pub fn from_json(v: &serde_json::Value) -> Value {
        match v {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => Value::Number(n.as_f64().unwrap_or(f64::NAN)),
            serde_json::Value::String(s) => Value::String(s.clone()),
            serde_json::Value::Array(a) => Value::List(a.iter().map(Value::from_json).collect()),
            serde_json::Value::Object(o) => Value::Context(
                o.iter()
                    .map(|(k, v)| (k.clone(), Value::from_json(v)))
                    .collect(),
            ),
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => (*b).into(),
            Value::Number(n) => {
                if n.fract() == 0.0 && n.abs() < 9.0e15 {
                    (*n as i64).into()
                } else {
                    serde_json::Number::from_f64(*n)
                        .map(Into::into)
                        .unwrap_or_default()
                }
            }
            Value::String(s) => s.clone().into(),
            Value::List(l) => l.iter().map(Value::to_json).collect::<Vec<_>>().into(),
            Value::Context(c) => c
                .iter()
                .map(|(k, v)| (k.clone(), v.to_json()))
                .collect::<serde_json::Map<_, _>>()
                .into(),
            Value::DateTime(ms) => format_datetime(*ms).into(),
            Value::Duration(ms) => format_duration(*ms).into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(f64),
    Str(String),
    Name(String),
    Op(&'static str),
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Lit(Value),
    Path(Vec<String>),
    List(Vec<Expr>),
    Not(Box<Expr>),
    Neg(Box<Expr>),
    Bin(&'static str, Box<Expr>, Box<Expr>),
    In(Box<Expr>, Box<Expr>),
    Between(Box<Expr>, Box<Expr>, Box<Expr>),
    If(Box<Expr>, Box<Expr>, Box<Expr>),
    Call(String, Vec<Expr>),
}

/// A compiled expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Expression {
    source: String,
    expr: Expr,
}

/// Functions whose names contain spaces, longest first.
const MULTIWORD: &[&str] = &[
    "date and time",
    "string length",
    "starts with",
    "upper case",
    "lower case",
    "ends with",
    "is defined",
];

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let c: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < c.len() {
        let ch = c[i];
        if ch.is_whitespace() {
            i += 1;
        } else if ch.is_ascii_digit()
            || (ch == '.' && c.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            let start = i;
            while i < c.len() && (c[i].is_ascii_digit() || c[i] == '.') {
                i += 1;
            }
            let t: String = c[start..i].iter().collect();
            out.push(Tok::Num(
                t.parse().map_err(|_| format!("bad number `{t}`"))?,
            ));
        } else if ch == '"' {
            i += 1;
            let mut t = String::new();
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' && i + 1 < c.len() {
                    i += 1;
                    t.push(match c[i] {
                        'n' => '\n',
                        't' => '\t',
                        other => other,
                    });
                } else {
                    t.push(c[i]);
                }
                i += 1;
            }
            if i >= c.len() {
                return Err("a string is not closed".into());
            }
            i += 1;
            out.push(Tok::Str(t));
        } else if ch.is_alphabetic() || ch == '_' {
            let rest: String = c[i..].iter().collect();
            if let Some(m) = MULTIWORD.iter().find(|m| {
                rest.starts_with(*m)
                    && !rest[m.len()..].starts_with(|x: char| x.is_alphanumeric() || x == '_')
            }) {
                out.push(Tok::Name((*m).to_owned()));
                i += m.chars().count();
                continue;
            }
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push(Tok::Name(c[start..i].iter().collect()));
        } else {
            let two: String = c[i..(i + 2).min(c.len())].iter().collect();
            let op = match two.as_str() {
                "!=" => Some("!="),
                "<=" => Some("<="),
                ">=" => Some(">="),
                _ => None,
            };
            if let Some(op) = op {
                out.push(Tok::Op(op));
                i += 2;
                continue;
            }
            let op = match ch {
                '=' => "=",
                '<' => "<",
                '>' => ">",
                '+' => "+",
                '-' => "-",
                '*' => "*",
                '/' => "/",
                '(' => "(",
                ')' => ")",
                '[' => "[",
                ']' => "]",
                ',' => ",",
                '.' => ".",
                other => return Err(format!("unexpected `{other}`")),
            };
            out.push(Tok::Op(op));
            i += 1;
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn eat_op(&mut self, op: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Op(o)) if *o == op) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn eat_name(&mut self, n: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Name(x)) if x == n) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn expect_op(&mut self, op: &str) -> Result<(), String> {
        if self.eat_op(op) {
            Ok(())
        } else {
            Err(format!("expected `{op}`{}", self.near()))
        }
    }
    fn near(&self) -> String {
        match self.peek() {
            Some(t) => format!(" near {t:?}"),
            None => " at the end".into(),
        }
    }

    fn expr(&mut self) -> Result<Expr, String> {
        if self.eat_name("if") {
            let c = self.expr()?;
            if !self.eat_name("then") {
                return Err(format!("expected `then`{}", self.near()));
            }
            let a = self.expr()?;
            if !self.eat_name("else") {
                return Err(format!("expected `else`{}", self.near()));
            }
            let b = self.expr()?;
            return Ok(Expr::If(Box::new(c), Box::new(a), Box::new(b)));
        }
        self.or()
    }
    fn or(&mut self) -> Result<Expr, String> {
        let mut l = self.and()?;
        while self.eat_name("or") {
            l = Expr::Bin("or", Box::new(l), Box::new(self.and()?));
        }
        Ok(l)
    }
    fn and(&mut self) -> Result<Expr, String> {
        let mut l = self.cmp()?;
        while self.eat_name("and") {
            l = Expr::Bin("and", Box::new(l), Box::new(self.cmp()?));
        }
        Ok(l)
    }
    fn cmp(&mut self) -> Result<Expr, String> {
        let l = self.add()?;
        for op in ["=", "!=", "<=", ">=", "<", ">"] {
            if self.eat_op(op) {
                return Ok(Expr::Bin(op, Box::new(l), Box::new(self.add()?)));
            }
        }
        if self.eat_name("in") {
            return Ok(Expr::In(Box::new(l), Box::new(self.add()?)));
        }
        if self.eat_name("between") {
            let a = self.add()?;
            if !self.eat_name("and") {
                return Err(format!("expected `and` in `between`{}", self.near()));
            }
            let b = self.add()?;
            return Ok(Expr::Between(Box::new(l), Box::new(a), Box::new(b)));
        }
        Ok(l)
    }
    fn add(&mut self) -> Result<Expr, String> {
        let mut l = self.mul()?;
        loop {
            if self.eat_op("+") {
                l = Expr::Bin("+", Box::new(l), Box::new(self.mul()?));
            } else if self.eat_op("-") {
                l = Expr::Bin("-", Box::new(l), Box::new(self.mul()?));
            } else {
                return Ok(l);
            }
        }
    }
    fn mul(&mut self) -> Result<Expr, String> {
        let mut l = self.unary()?;
        loop {
            if self.eat_op("*") {
                l = Expr::Bin("*", Box::new(l), Box::new(self.unary()?));
            } else if self.eat_op("/") {
                l = Expr::Bin("/", Box::new(l), Box::new(self.unary()?));
            } else {
                return Ok(l);
            }
        }
    }
    fn unary(&mut self) -> Result<Expr, String> {
        if self.eat_op("-") {
            return Ok(Expr::Neg(Box::new(self.unary()?)));
        }
        self.postfix()
    }
    fn postfix(&mut self) -> Result<Expr, String> {
        let mut e = self.primary()?;
        while self.eat_op(".") {
            match self.toks.get(self.pos).cloned() {
                Some(Tok::Name(n)) => {
                    self.pos += 1;
                    e = match e {
                        Expr::Path(mut p) => {
                            p.push(n);
                            Expr::Path(p)
                        }
                        other => Expr::Call(".".into(), vec![other, Expr::Lit(Value::String(n))]),
                    };
                }
                _ => return Err(format!("expected a name after `.`{}", self.near())),
            }
        }
        Ok(e)
    }
    fn primary(&mut self) -> Result<Expr, String> {
        match self.toks.get(self.pos).cloned() {
            Some(Tok::Num(n)) => {
                self.pos += 1;
                Ok(Expr::Lit(Value::Number(n)))
            }
            Some(Tok::Str(s)) => {
                self.pos += 1;
                Ok(Expr::Lit(Value::String(s)))
            }
            Some(Tok::Op("(")) => {
                self.pos += 1;
                let e = self.expr()?;
                self.expect_op(")")?;
                Ok(e)
            }
            Some(Tok::Op("[")) => {
                self.pos += 1;
                let mut items = Vec::new();
                if !self.eat_op("]") {
                    loop {
                        items.push(self.expr()?);
                        if self.eat_op("]") {
                            break;
                        }
                        self.expect_op(",")?;
                    }
                }
                Ok(Expr::List(items))
            }
            Some(Tok::Name(n)) => {
                self.pos += 1;
                match n.as_str() {
                    "true" => return Ok(Expr::Lit(Value::Bool(true))),
                    "false" => return Ok(Expr::Lit(Value::Bool(false))),
                    "null" => return Ok(Expr::Lit(Value::Null)),
                    _ => {}
                }
                if self.eat_op("(") {
                    let mut args = Vec::new();
                    if !self.eat_op(")") {
                        loop {
                            args.push(self.expr()?);
                            if self.eat_op(")") {
                                break;
                            }
                            self.expect_op(",")?;
                        }
                    }
                    check_function(&n, args.len())?;
                    if n == "not" {
                        let a = args.into_iter().next().unwrap_or(Expr::Lit(Value::Null));
                        return Ok(Expr::Not(Box::new(a)));
                    }
                    return Ok(Expr::Call(n, args));
                }
                Ok(Expr::Path(vec![n]))
            }
            _ => Err(format!("expected a value{}", self.near())),
        }
    }
}

fn check_function(name: &str, n: usize) -> Result<(), String> {
    let arity: &[usize] = match name {
        "not" | "count" | "sum" | "min" | "max" | "string length" | "upper case" | "lower case"
        | "string" | "number" | "is defined" | "date and time" | "duration" => &[1],
        "contains" | "starts with" | "ends with" => &[2],
        "substring" => &[2, 3],
        "now" | "today" => &[0],
        other => return Err(format!("unknown function `{other}`")),
    };
    if arity.contains(&n) {
        Ok(())
    } else {
        Err(format!("`{name}` takes {arity:?} argument(s), got {n}"))
    }
}

/// Compiles an expression (the text after `=`).
pub fn compile(source: &str) -> Result<Expression, String> {
    let body = source.strip_prefix('=').unwrap_or(source);
    let toks = tokenize(body)?;
    if toks.is_empty() {
        return Err("the expression is empty".into());
    }
    let mut p = Parser { toks, pos: 0 };
    let expr = p.expr()?;
    if p.pos < p.toks.len() {
        return Err(format!(
            "unexpected {:?} after the expression",
            p.toks[p.pos]
        ));
    }
    Ok(Expression {
        source: source.to_owned(),
        expr,
    })
}

impl Expression {
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates against variables; `now` is the current time in unix milliseconds.
    pub fn eval(&self, vars: &serde_json::Value, now: i64) -> Value {
        let ctx = Value::from_json(vars);
        eval(&self.expr, &ctx, now)
    }

    /// Evaluates a condition: anything but `true` is false (FEEL's null is not a match).
    pub fn truthy(&self, vars: &serde_json::Value, now: i64) -> bool {
        self.eval(vars, now) == Value::Bool(true)
    }
}

fn lookup(ctx: &Value, path: &[String]) -> Value {
    let mut cur = ctx;
    for p in path {
        match cur {
            Value::Context(m) => match m.get(p) {
                Some(v) => cur = v,
                None => return Value::Null,
            },
            _ => return Value::Null,
        }
    }
    cur.clone()
}

fn compare(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.partial_cmp(y),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::DateTime(x), Value::DateTime(y)) | (Value::Duration(x), Value::Duration(y)) => {
            Some(x.cmp(y))
        }
        _ => None,
    }
}

fn eval(e: &Expr, ctx: &Value, now: i64) -> Value {
    use Value::*;
    match e {
        Expr::Lit(v) => v.clone(),
        Expr::Path(p) => lookup(ctx, p),
        Expr::List(items) => List(items.iter().map(|i| eval(i, ctx, now)).collect()),
        Expr::Not(a) => match eval(a, ctx, now) {
            Bool(b) => Bool(!b),
            _ => Null,
        },
        Expr::Neg(a) => match eval(a, ctx, now) {
            Number(n) => Number(-n),
            Duration(d) => Duration(-d),
            _ => Null,
        },
        Expr::If(c, a, b) => {
            if eval(c, ctx, now) == Bool(true) {
                eval(a, ctx, now)
            } else {
                eval(b, ctx, now)
            }
        }
        Expr::In(a, list) => {
            let v = eval(a, ctx, now);
            match eval(list, ctx, now) {
                List(items) => Bool(items.contains(&v)),
                other => Bool(other == v),
            }
        }
        Expr::Between(x, a, b) => {
            let (x, a, b) = (eval(x, ctx, now), eval(a, ctx, now), eval(b, ctx, now));
            match (compare(&x, &a), compare(&x, &b)) {
                (Some(l), Some(h)) => Bool(l.is_ge() && h.is_le()),
                _ => Null,
            }
        }
        Expr::Bin(op, a, b) => {
            let x = eval(a, ctx, now);
            // Three-valued logic: false and null = false; true or null = true.
            if *op == "and" || *op == "or" {
                let y = eval(b, ctx, now);
                return match (*op, &x, &y) {
                    ("and", Bool(false), _) | ("and", _, Bool(false)) => Bool(false),
                    ("and", Bool(true), Bool(true)) => Bool(true),
                    ("or", Bool(true), _) | ("or", _, Bool(true)) => Bool(true),
                    ("or", Bool(false), Bool(false)) => Bool(false),
                    _ => Null,
                };
            }
            let y = eval(b, ctx, now);
            match *op {
                "=" => Bool(x == y),
                "!=" => Bool(x != y),
                "<" | "<=" | ">" | ">=" => match compare(&x, &y) {
                    Some(o) => Bool(match *op {
                        "<" => o.is_lt(),
                        "<=" => o.is_le(),
                        ">" => o.is_gt(),
                        _ => o.is_ge(),
                    }),
                    None => Null,
                },
                "+" => match (x, y) {
                    (Number(a), Number(b)) => Number(a + b),
                    (String(a), String(b)) => String(a + &b),
                    (DateTime(t), Duration(d)) | (Duration(d), DateTime(t)) => DateTime(t + d),
                    (Duration(a), Duration(b)) => Duration(a + b),
                    _ => Null,
                },
                "-" => match (x, y) {
                    (Number(a), Number(b)) => Number(a - b),
                    (DateTime(t), Duration(d)) => DateTime(t - d),
                    (DateTime(a), DateTime(b)) => Duration(a - b),
                    (Duration(a), Duration(b)) => Duration(a - b),
                    _ => Null,
                },
                "*" => match (x, y) {
                    (Number(a), Number(b)) => Number(a * b),
                    (Duration(d), Number(n)) | (Number(n), Duration(d)) => {
                        Duration((d as f64 * n) as i64)
                    }
                    _ => Null,
                },
                "/" => match (x, y) {
                    (Number(a), Number(b)) => {
                        if b == 0.0 {
                            Null
                        } else {
                            Number(a / b)
                        }
                    }
                    _ => Null,
                },
                _ => Null,
            }
        }
        Expr::Call(name, args) => {
            let a: Vec<Value> = args.iter().map(|x| eval(x, ctx, now)).collect();
            call(name, &a, now)
        }
    }
}

fn call(name: &str, a: &[Value], now: i64) -> Value {
    use Value::*;
    let nums = |l: &Vec<Value>| -> Option<Vec<f64>> {
        l.iter()
            .map(|v| if let Number(n) = v { Some(*n) } else { None })
            .collect()
    };
    match (name, a) {
        (".", [Context(m), String(k)]) => m.get(k).cloned().unwrap_or(Null),
        ("count", [List(l)]) => Number(l.len() as f64),
        ("sum", [List(l)]) => nums(l).map(|v| Number(v.iter().sum())).unwrap_or(Null),
        ("min", [List(l)]) => nums(l)
            .and_then(|v| v.into_iter().reduce(f64::min))
            .map(Number)
            .unwrap_or(Null),
        ("max", [List(l)]) => nums(l)
            .and_then(|v| v.into_iter().reduce(f64::max))
            .map(Number)
            .unwrap_or(Null),
        ("string length", [String(s)]) => Number(s.chars().count() as f64),
        ("upper case", [String(s)]) => String(s.to_uppercase()),
        ("lower case", [String(s)]) => String(s.to_lowercase()),
        ("contains", [String(s), String(t)]) => Bool(s.contains(t.as_str())),
        ("starts with", [String(s), String(t)]) => Bool(s.starts_with(t.as_str())),
        ("ends with", [String(s), String(t)]) => Bool(s.ends_with(t.as_str())),
        ("substring", [String(s), Number(start), rest @ ..]) => {
            // FEEL: 1-based; a negative start counts from the end.
            let chars: Vec<char> = s.chars().collect();
            let len = chars.len() as i64;
            let st = *start as i64;
            let from = if st > 0 { st - 1 } else { len + st }.clamp(0, len);
            let take = match rest {
                [Number(n)] => (*n as i64).max(0),
                [] => len,
                _ => return Null,
            };
            String(
                chars
                    .iter()
                    .skip(from as usize)
                    .take(take as usize)
                    .collect(),
            )
        }
        ("string", [v]) => match v {
            Null => Null,
            String(s) => String(s.clone()),
            other => String(match other.to_json() {
                serde_json::Value::String(s) => s,
                j => j.to_string(),
            }),
        },
        ("number", [String(s)]) => s.trim().parse().map(Number).unwrap_or(Null),
        ("number", [Number(n)]) => Number(*n),
        ("is defined", [v]) => Bool(*v != Null),
        ("now", []) => DateTime(now),
        ("today", []) => DateTime(now - now.rem_euclid(86_400_000)),
        ("date and time", [String(s)]) => parse_datetime(s).map(DateTime).unwrap_or(Null),
        ("duration", [String(s)]) => parse_duration(s).map(Duration).unwrap_or(Null),
        _ => Null,
    }
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `2026-11-25T10:00:00Z`, with an optional fraction and offset; or a date `2026-11-25`.
pub fn parse_datetime(s: &str) -> Option<i64> {
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || s.get(4..5) != Some("-") {
        return None;
    }
    let mut ms = days_from_civil(y, mo, d) * 86_400_000;
    if s.len() > 10 {
        ms += (n(11..13)? * 3600 + n(14..16)? * 60 + n(17..19)?) * 1000;
        let mut rest = s.get(19..)?;
        if let Some(f) = rest.strip_prefix('.') {
            let digits: String = f.chars().take_while(char::is_ascii_digit).collect();
            ms += format!("{digits:0<3}").get(..3)?.parse::<i64>().ok()?;
            rest = &f[digits.len()..];
        }
        match rest {
            "" | "Z" => {}
            tz => {
                let sign = if tz.starts_with('-') { -1 } else { 1 };
                let (h, m): (i64, i64) = (tz.get(1..3)?.parse().ok()?, tz.get(4..6)?.parse().ok()?);
                ms -= sign * (h * 60 + m) * 60_000;
            }
        }
    }
    Some(ms)
}

/// ISO 8601 durations with days and time: `P2D`, `PT1H30M`, `PT0.5S`, `-PT5M`.
pub fn parse_duration(s: &str) -> Option<i64> {
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let s = s.strip_prefix('P')?;
    let (date, time) = match s.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let mut ms = 0f64;
    let mut num = String::new();
    let mut any = false;
    for c in date.chars() {
        match c {
            '0'..='9' | '.' => num.push(c),
            'D' => {
                ms += num.parse::<f64>().ok()? * 86_400_000.0;
                num.clear();
                any = true;
            }
            'W' => {
                ms += num.parse::<f64>().ok()? * 7.0 * 86_400_000.0;
                num.clear();
                any = true;
            }
            _ => return None,
        }
    }
    for c in time.unwrap_or("").chars() {
        let unit = match c {
            '0'..='9' | '.' => {
                num.push(c);
                continue;
            }
            'H' => 3_600_000.0,
            'M' => 60_000.0,
            'S' => 1000.0,
            _ => return None,
        };
        ms += num.parse::<f64>().ok()? * unit;
        num.clear();
        any = true;
    }
    if !any || !num.is_empty() {
        return None;
    }
    Some(if neg { -(ms as i64) } else { ms as i64 })
}

fn format_datetime(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000
    )
}

fn format_duration(ms: i64) -> String {
    let sign = if ms < 0 { "-" } else { "" };
    let ms = ms.abs();
    let (d, h, m, s) = (
        ms / 86_400_000,
        ms / 3_600_000 % 24,
        ms / 60_000 % 60,
        ms % 60_000,
    );
    let mut out = format!("{sign}P");
    if d > 0 {
        out.push_str(&format!("{d}D"));
    }
    if h + m + s > 0 || d == 0 {
        out.push('T');
        if h > 0 {
            out.push_str(&format!("{h}H"));
        }
        if m > 0 {
            out.push_str(&format!("{m}M"));
        }
        if s > 0 || (h == 0 && m == 0) {
            if s % 1000 == 0 {
                out.push_str(&format!("{}S", s / 1000));
            } else {
                out.push_str(&format!("{}S", s as f64 / 1000.0));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(src: &str, vars: serde_json::Value) -> Value {
        compile(src)
            .unwrap_or_else(|e| panic!("{src}: {e}"))
            .eval(&vars, 1_795_564_800_000)
    }

    #[test]
    fn paths_comparison_and_logic() {
        let v =
            json!({"amount": 1500, "chat": {"channel": "telegram", "tags": ["vip"]}, "n": null});
        assert_eq!(ev("=amount > 1000", v.clone()), Value::Bool(true));
        assert_eq!(
            ev("=chat.channel = \"telegram\" and amount <= 2000", v.clone()),
            Value::Bool(true)
        );
        assert_eq!(ev("=\"vip\" in chat.tags", v.clone()), Value::Bool(true));
        assert_eq!(
            ev("=chat.channel in [\"widget\", \"api\"]", v.clone()),
            Value::Bool(false)
        );
        assert_eq!(ev("=not(amount < 10)", v.clone()), Value::Bool(true));
        assert_eq!(
            ev("=amount between 1000 and 2000", v.clone()),
            Value::Bool(true)
        );
        assert_eq!(
            ev("=if amount > 1000 then \"high\" else \"normal\"", v.clone()),
            Value::String("high".into())
        );
        assert_eq!(
            ev("=(amount + 500) * 2 / 4", v.clone()),
            Value::Number(1000.0)
        );
    }

    #[test]
    fn null_semantics() {
        let v = json!({"n": null});
        assert_eq!(ev("=missing.path", v.clone()), Value::Null);
        assert_eq!(ev("=n > 1", v.clone()), Value::Null);
        assert_eq!(ev("=n = null", v.clone()), Value::Bool(true));
        assert_eq!(ev("=n > 1 and false", v.clone()), Value::Bool(false));
        assert_eq!(ev("=n > 1 or true", v.clone()), Value::Bool(true));
        assert_eq!(ev("=n > 1 and true", v.clone()), Value::Null);
        assert_eq!(ev("=1 / 0", v.clone()), Value::Null);
        assert!(!compile("=n > 1").expect("compiles").truthy(&v, 0));
    }

    #[test]
    fn strings_dates_and_durations() {
        let v = json!({"name": "Ivan Petrov", "started": "2026-11-25T10:00:00Z", "xs": [3, 1, 2]});
        assert_eq!(
            ev("=upper case(name)", v.clone()),
            Value::String("IVAN PETROV".into())
        );
        assert_eq!(ev("=string length(name)", v.clone()), Value::Number(11.0));
        assert_eq!(
            ev("=starts with(name, \"Ivan\")", v.clone()),
            Value::Bool(true)
        );
        assert_eq!(
            ev("=substring(name, 6)", v.clone()),
            Value::String("Petrov".into())
        );
        assert_eq!(
            ev("=substring(name, 1, 4)", v.clone()),
            Value::String("Ivan".into())
        );
        assert_eq!(ev("=count(xs) + max(xs)", v.clone()), Value::Number(6.0));
        assert_eq!(
            ev("=date and time(started) + duration(\"PT1H30M\")", v.clone()).to_json(),
            json!("2026-11-25T11:30:00.000Z")
        );
        assert_eq!(
            ev("=date and time(started) < now()", v.clone()),
            Value::Bool(false)
        );
        assert_eq!(
            ev(
                "=now() - date and time(\"2026-11-24T00:00:00Z\")",
                v.clone()
            )
            .to_json(),
            json!("P1D")
        );
        assert_eq!(parse_duration("P2D"), Some(172_800_000));
        assert_eq!(parse_duration("PT0.5S"), Some(500));
        assert_eq!(parse_duration("nonsense"), None);
    }

    #[test]
    fn compile_errors_say_what_is_wrong() {
        assert!(
            compile("=amount >")
                .expect_err("incomplete")
                .contains("expected a value")
        );
        assert!(
            compile("=frobnicate(1)")
                .expect_err("unknown")
                .contains("unknown function `frobnicate`")
        );
        assert!(
            compile("=\"open")
                .expect_err("string")
                .contains("not closed")
        );
        assert!(
            compile("=a b")
                .expect_err("trailing")
                .contains("after the expression")
        );
        assert!(
            compile("=contains(\"a\")")
                .expect_err("arity")
                .contains("takes")
        );
    }
}
