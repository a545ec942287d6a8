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

/// Longest expression source accepted, in characters. Real conditions and mappings are a few
/// dozen characters; the cap bounds tokenizing and parsing work.
pub const MAX_SOURCE_CHARS: usize = 16 * 1024;

/// Deepest nesting of an expression: parentheses, lists, function arguments, `if`, unary
/// minus, and chains of operators (`a + b + c` is two levels). Parsing and evaluating recurse
/// once per level, so this bounds their stack use.
pub const MAX_DEPTH: usize = 64;

/// Work units one evaluation may spend: one per node evaluated plus the size (bytes and
/// items) of every value it reads, builds or scans. Exceeding it is an evaluation error.
pub const MAX_EVAL_STEPS: usize = 10_000_000;

/// Largest string (in bytes) an evaluation may build (`+`, `string()`, case mapping).
pub const MAX_VALUE_LEN: usize = 1024 * 1024;

/// Date-times are kept between years −9999 and 9999 (Unix milliseconds); arithmetic that
/// leaves the range is an evaluation error, never a wrapped value.
pub const MAX_DATETIME_MS: i64 = 253_402_300_799_999;
/// Durations up to ±20,000 years (of 365.2425 days).
pub const MAX_DURATION_MS: i64 = 631_138_519_200_000;

fn tokenize(s: &str) -> Result<(Vec<Tok>, Vec<usize>), String> {
    let c: Vec<char> = s.chars().collect();
    if c.len() > MAX_SOURCE_CHARS {
        return Err(format!(
            "the expression is longer than {MAX_SOURCE_CHARS} characters"
        ));
    }
    let multiword: Vec<(&str, Vec<char>)> = MULTIWORD
        .iter()
        .map(|m| (*m, m.chars().collect()))
        .collect();
    let mut i = 0;
    let mut out = Vec::new();
    let mut at = Vec::new();
    while i < c.len() {
        let ch = c[i];
        if !ch.is_whitespace() {
            at.push(i + 1);
        }
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
            out.push(Tok::Num(t.parse().map_err(|_| {
                format!("bad number `{t}` at character {}", start + 1)
            })?));
        } else if ch == '"' {
            let start = i;
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
                return Err(format!(
                    "a string is not closed (opened at character {})",
                    start + 1
                ));
            }
            i += 1;
            out.push(Tok::Str(t));
        } else if ch.is_alphabetic() || ch == '_' {
            if let Some((m, mc)) = multiword.iter().find(|(_, mc)| {
                c[i..].starts_with(mc)
                    && !c
                        .get(i + mc.len())
                        .is_some_and(|x| x.is_alphanumeric() || *x == '_')
            }) {
                out.push(Tok::Name((*m).to_owned()));
                i += mc.len();
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
                other => return Err(format!("unexpected `{other}` at character {}", i + 1)),
            };
            out.push(Tok::Op(op));
            i += 1;
        }
    }
    Ok((out, at))
}

/// A parsed node with its depth (1 for a leaf).
type Parsed = Result<(Expr, usize), String>;

struct Parser {
    toks: Vec<Tok>,
    /// 1-based character position of each token.
    at: Vec<usize>,
    pos: usize,
    /// How many `expr`/`unary` calls are open: bounds the parser's own recursion (parentheses
    /// add no node, so the tree's depth alone would not).
    open: usize,
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
        match (self.peek(), self.at.get(self.pos)) {
            (Some(t), Some(at)) => format!(" near {t:?} at character {at}"),
            (Some(t), None) => format!(" near {t:?}"),
            (None, _) => " at the end".into(),
        }
    }
    /// A new node over children of depth `d` (the deepest child).
    fn node(&self, e: Expr, d: usize) -> Parsed {
        if d + 1 > MAX_DEPTH {
            return Err(self.too_deep());
        }
        Ok((e, d + 1))
    }
    fn too_deep(&self) -> String {
        format!(
            "the expression nests deeper than {MAX_DEPTH} levels{}",
            self.near()
        )
    }
    fn enter(&mut self) -> Result<(), String> {
        self.open += 1;
        if self.open > MAX_DEPTH {
            return Err(self.too_deep());
        }
        Ok(())
    }

    fn expr(&mut self) -> Parsed {
        self.enter()?;
        let r = self.expr_inner();
        self.open -= 1;
        r
    }
    fn expr_inner(&mut self) -> Parsed {
        if self.eat_name("if") {
            let (c, dc) = self.expr()?;
            if !self.eat_name("then") {
                return Err(format!("expected `then`{}", self.near()));
            }
            let (a, da) = self.expr()?;
            if !self.eat_name("else") {
                return Err(format!("expected `else`{}", self.near()));
            }
            let (b, db) = self.expr()?;
            return self.node(
                Expr::If(Box::new(c), Box::new(a), Box::new(b)),
                dc.max(da).max(db),
            );
        }
        self.or()
    }
    fn or(&mut self) -> Parsed {
        let (mut l, mut d) = self.and()?;
        while self.eat_name("or") {
            let (r, dr) = self.and()?;
            (l, d) = self.node(Expr::Bin("or", Box::new(l), Box::new(r)), d.max(dr))?;
        }
        Ok((l, d))
    }
    fn and(&mut self) -> Parsed {
        let (mut l, mut d) = self.cmp()?;
        while self.eat_name("and") {
            let (r, dr) = self.cmp()?;
            (l, d) = self.node(Expr::Bin("and", Box::new(l), Box::new(r)), d.max(dr))?;
        }
        Ok((l, d))
    }
    fn cmp(&mut self) -> Parsed {
        let (l, dl) = self.add()?;
        for op in ["=", "!=", "<=", ">=", "<", ">"] {
            if self.eat_op(op) {
                let (r, dr) = self.add()?;
                return self.node(Expr::Bin(op, Box::new(l), Box::new(r)), dl.max(dr));
            }
        }
        if self.eat_name("in") {
            let (r, dr) = self.add()?;
            return self.node(Expr::In(Box::new(l), Box::new(r)), dl.max(dr));
        }
        if self.eat_name("between") {
            let (a, da) = self.add()?;
            if !self.eat_name("and") {
                return Err(format!("expected `and` in `between`{}", self.near()));
            }
            let (b, db) = self.add()?;
            return self.node(
                Expr::Between(Box::new(l), Box::new(a), Box::new(b)),
                dl.max(da).max(db),
            );
        }
        Ok((l, dl))
    }
    fn add(&mut self) -> Parsed {
        let (mut l, mut d) = self.mul()?;
        loop {
            let op = if self.eat_op("+") {
                "+"
            } else if self.eat_op("-") {
                "-"
            } else {
                return Ok((l, d));
            };
            let (r, dr) = self.mul()?;
            (l, d) = self.node(Expr::Bin(op, Box::new(l), Box::new(r)), d.max(dr))?;
        }
    }
    fn mul(&mut self) -> Parsed {
        let (mut l, mut d) = self.unary()?;
        loop {
            let op = if self.eat_op("*") {
                "*"
            } else if self.eat_op("/") {
                "/"
            } else {
                return Ok((l, d));
            };
            let (r, dr) = self.unary()?;
            (l, d) = self.node(Expr::Bin(op, Box::new(l), Box::new(r)), d.max(dr))?;
        }
    }
    fn unary(&mut self) -> Parsed {
        if self.eat_op("-") {
            self.enter()?;
            let r = self.unary();
            self.open -= 1;
            let (e, d) = r?;
            return self.node(Expr::Neg(Box::new(e)), d);
        }
        self.postfix()
    }
    fn postfix(&mut self) -> Parsed {
        let (mut e, mut d) = self.primary()?;
        while self.eat_op(".") {
            match self.toks.get(self.pos).cloned() {
                Some(Tok::Name(n)) => {
                    self.pos += 1;
                    (e, d) = match e {
                        Expr::Path(mut p) => {
                            p.push(n);
                            (Expr::Path(p), d)
                        }
                        other => self.node(
                            Expr::Call(".".into(), vec![other, Expr::Lit(Value::String(n))]),
                            d,
                        )?,
                    };
                }
                _ => return Err(format!("expected a name after `.`{}", self.near())),
            }
        }
        Ok((e, d))
    }
    fn primary(&mut self) -> Parsed {
        match self.toks.get(self.pos).cloned() {
            Some(Tok::Num(n)) => {
                self.pos += 1;
                Ok((Expr::Lit(Value::Number(n)), 1))
            }
            Some(Tok::Str(s)) => {
                self.pos += 1;
                Ok((Expr::Lit(Value::String(s)), 1))
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
                let mut d = 0;
                if !self.eat_op("]") {
                    loop {
                        let (x, dx) = self.expr()?;
                        items.push(x);
                        d = d.max(dx);
                        if self.eat_op("]") {
                            break;
                        }
                        self.expect_op(",")?;
                    }
                }
                self.node(Expr::List(items), d)
            }
            Some(Tok::Name(n)) => {
                self.pos += 1;
                match n.as_str() {
                    "true" => return Ok((Expr::Lit(Value::Bool(true)), 1)),
                    "false" => return Ok((Expr::Lit(Value::Bool(false)), 1)),
                    "null" => return Ok((Expr::Lit(Value::Null), 1)),
                    _ => {}
                }
                if self.eat_op("(") {
                    let mut args = Vec::new();
                    let mut d = 0;
                    if !self.eat_op(")") {
                        loop {
                            let (x, dx) = self.expr()?;
                            args.push(x);
                            d = d.max(dx);
                            if self.eat_op(")") {
                                break;
                            }
                            self.expect_op(",")?;
                        }
                    }
                    check_function(&n, args.len())?;
                    if n == "not" {
                        let a = args.into_iter().next().unwrap_or(Expr::Lit(Value::Null));
                        return self.node(Expr::Not(Box::new(a)), d);
                    }
                    return self.node(Expr::Call(n, args), d);
                }
                Ok((Expr::Path(vec![n]), 1))
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

/// Compiles an expression (the text after `=`). Fails on a syntax error, an unknown
/// function, a source longer than [`MAX_SOURCE_CHARS`] or nesting deeper than [`MAX_DEPTH`],
/// each with the position.
pub fn compile(source: &str) -> Result<Expression, String> {
    let body = source.strip_prefix('=').unwrap_or(source);
    let (toks, at) = tokenize(body)?;
    if toks.is_empty() {
        return Err("the expression is empty".into());
    }
    let mut p = Parser {
        toks,
        at,
        pos: 0,
        open: 0,
    };
    let (expr, _) = p.expr()?;
    if p.pos < p.toks.len() {
        return Err(format!(
            "unexpected {:?} after the expression{}",
            p.toks[p.pos],
            p.near()
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

    /// Evaluates against variables; `now` is the current time in unix milliseconds. Fails when
    /// date or duration arithmetic leaves its range, or the evaluation exceeds
    /// [`MAX_EVAL_STEPS`] or builds a value longer than [`MAX_VALUE_LEN`].
    pub fn eval(&self, vars: &serde_json::Value, now: i64) -> Result<Value, String> {
        let mut budget = MAX_EVAL_STEPS;
        self.eval_budget(vars, now, &mut budget)
    }

    /// [`Expression::eval`] spending from a shared `budget` of work units (what is left is
    /// written back): a command evaluating many expressions bounds them all together.
    /// Variables are read where a path points, not converted as a whole.
    pub fn eval_budget(
        &self,
        vars: &serde_json::Value,
        now: i64,
        budget: &mut usize,
    ) -> Result<Value, String> {
        self.run(Root::Json(vars), now, budget)
    }

    /// [`Expression::eval_budget`] over a variables map (an instance's, without copying it).
    pub fn eval_map(
        &self,
        vars: &serde_json::Map<String, serde_json::Value>,
        now: i64,
        budget: &mut usize,
    ) -> Result<Value, String> {
        self.run(Root::Map(vars), now, budget)
    }

    fn run(&self, ctx: Root<'_>, now: i64, budget: &mut usize) -> Result<Value, String> {
        let mut ev = Eval {
            ctx,
            now,
            steps: 0,
            limit: *budget,
        };
        let r = ev.eval(&self.expr);
        *budget = budget.saturating_sub(ev.steps);
        r.map_err(|e| format!("`{}`: {e}", shorten(&self.source)))
    }

    /// Evaluates a condition: anything but `true` is false (FEEL's null is not a match); an
    /// evaluation error is an error.
    pub fn truthy(&self, vars: &serde_json::Value, now: i64) -> Result<bool, String> {
        Ok(self.eval(vars, now)? == Value::Bool(true))
    }
}

/// An expression as quoted in an error: at most 80 characters.
fn shorten(src: &str) -> String {
    if src.chars().count() <= 80 {
        src.to_owned()
    } else {
        format!("{}…", src.chars().take(80).collect::<String>())
    }
}

/// The variables an expression reads.
#[derive(Clone, Copy)]
enum Root<'a> {
    Json(&'a serde_json::Value),
    Map(&'a serde_json::Map<String, serde_json::Value>),
}

fn lookup<'a>(ctx: Root<'a>, path: &[String]) -> Option<&'a serde_json::Value> {
    let (first, rest) = path.split_first()?;
    let mut cur = match ctx {
        Root::Json(v) => v.as_object()?.get(first)?,
        Root::Map(m) => m.get(first)?,
    };
    for p in rest {
        cur = cur.as_object()?.get(p)?;
    }
    Some(cur)
}

/// A JSON value's size for the step budget, as [`size`] counts it.
fn json_size(v: &serde_json::Value) -> usize {
    let mut n = 0usize;
    let mut todo = vec![v];
    while let Some(v) = todo.pop() {
        n = n.saturating_add(1);
        match v {
            serde_json::Value::String(s) => n = n.saturating_add(s.len()),
            serde_json::Value::Array(l) => todo.extend(l.iter()),
            serde_json::Value::Object(c) => {
                for (k, x) in c {
                    n = n.saturating_add(k.len());
                    todo.push(x);
                }
            }
            _ => {}
        }
    }
    n
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

/// A value's size for the step budget: bytes of its strings plus one per item, through
/// nested lists and contexts (iterative: a value can be as deep as the JSON it came from).
fn size(v: &Value) -> usize {
    let mut n = 0usize;
    let mut todo = vec![v];
    while let Some(v) = todo.pop() {
        n = n.saturating_add(1);
        match v {
            Value::String(s) => n = n.saturating_add(s.len()),
            Value::List(l) => todo.extend(l.iter()),
            Value::Context(c) => {
                for (k, x) in c {
                    n = n.saturating_add(k.len());
                    todo.push(x);
                }
            }
            _ => {}
        }
    }
    n
}

fn date_time(ms: Option<i64>) -> Result<Value, String> {
    match ms {
        Some(t) if (-MAX_DATETIME_MS..=MAX_DATETIME_MS).contains(&t) => Ok(Value::DateTime(t)),
        _ => Err("date-time arithmetic leaves the years -9999..9999".into()),
    }
}

fn duration_value(ms: Option<i64>) -> Result<Value, String> {
    match ms {
        Some(d) if (-MAX_DURATION_MS..=MAX_DURATION_MS).contains(&d) => Ok(Value::Duration(d)),
        _ => Err("duration arithmetic overflows (limit ±20,000 years)".into()),
    }
}

/// One evaluation: the variables, the clock and the work spent so far.
struct Eval<'a> {
    ctx: Root<'a>,
    now: i64,
    steps: usize,
    limit: usize,
}

impl Eval<'_> {
    fn spend(&mut self, n: usize) -> Result<(), String> {
        self.steps = self.steps.saturating_add(n);
        if self.steps > self.limit {
            return Err(format!(
                "the evaluation exceeds its budget of {MAX_EVAL_STEPS} steps"
            ));
        }
        Ok(())
    }

    fn eval(&mut self, e: &Expr) -> Result<Value, String> {
        use Value::*;
        self.spend(1)?;
        Ok(match e {
            Expr::Lit(v) => {
                self.spend(size(v))?;
                v.clone()
            }
            Expr::Path(p) => match lookup(self.ctx, p) {
                Some(v) => {
                    self.spend(json_size(v))?;
                    Value::from_json(v)
                }
                None => Null,
            },
            Expr::List(items) => {
                let mut out = Vec::with_capacity(items.len());
                for i in items {
                    out.push(self.eval(i)?);
                }
                List(out)
            }
            Expr::Not(a) => match self.eval(a)? {
                Bool(b) => Bool(!b),
                _ => Null,
            },
            Expr::Neg(a) => match self.eval(a)? {
                Number(n) => Number(-n),
                Duration(d) => duration_value(d.checked_neg())?,
                _ => Null,
            },
            Expr::If(c, a, b) => {
                if self.eval(c)? == Bool(true) {
                    self.eval(a)?
                } else {
                    self.eval(b)?
                }
            }
            Expr::In(a, list) => {
                let v = self.eval(a)?;
                match self.eval(list)? {
                    List(items) => {
                        self.spend(items.len())?;
                        Bool(items.contains(&v))
                    }
                    other => Bool(other == v),
                }
            }
            Expr::Between(x, a, b) => {
                let (x, a, b) = (self.eval(x)?, self.eval(a)?, self.eval(b)?);
                match (compare(&x, &a), compare(&x, &b)) {
                    (Some(l), Some(h)) => Bool(l.is_ge() && h.is_le()),
                    _ => Null,
                }
            }
            Expr::Bin(op, a, b) => {
                let x = self.eval(a)?;
                let y = self.eval(b)?;
                // Three-valued logic: false and null = false; true or null = true.
                if *op == "and" || *op == "or" {
                    return Ok(match (*op, &x, &y) {
                        ("and", Bool(false), _) | ("and", _, Bool(false)) => Bool(false),
                        ("and", Bool(true), Bool(true)) => Bool(true),
                        ("or", Bool(true), _) | ("or", _, Bool(true)) => Bool(true),
                        ("or", Bool(false), Bool(false)) => Bool(false),
                        _ => Null,
                    });
                }
                if *op == "=" || *op == "!=" {
                    self.spend(size(&x).min(size(&y)))?;
                }
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
                        (String(a), String(b)) => {
                            let len = a.len() + b.len();
                            if len > MAX_VALUE_LEN {
                                return Err(format!(
                                    "`+` would build a string of {len} bytes (limit {MAX_VALUE_LEN})"
                                ));
                            }
                            self.spend(len)?;
                            String(a + &b)
                        }
                        (DateTime(t), Duration(d)) | (Duration(d), DateTime(t)) => {
                            date_time(t.checked_add(d))?
                        }
                        (Duration(a), Duration(b)) => duration_value(a.checked_add(b))?,
                        _ => Null,
                    },
                    "-" => match (x, y) {
                        (Number(a), Number(b)) => Number(a - b),
                        (DateTime(t), Duration(d)) => date_time(t.checked_sub(d))?,
                        (DateTime(a), DateTime(b)) => duration_value(a.checked_sub(b))?,
                        (Duration(a), Duration(b)) => duration_value(a.checked_sub(b))?,
                        _ => Null,
                    },
                    "*" => match (x, y) {
                        (Number(a), Number(b)) => Number(a * b),
                        (Duration(d), Number(n)) | (Number(n), Duration(d)) => {
                            let ms = d as f64 * n;
                            // NaN and anything outside the range fail; `as` alone saturates.
                            if ms.is_finite() && ms.abs() <= MAX_DURATION_MS as f64 {
                                Duration(ms as i64)
                            } else {
                                return Err(
                                    "duration arithmetic overflows (limit ±20,000 years)".into()
                                );
                            }
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
                let mut a = Vec::with_capacity(args.len());
                for x in args {
                    a.push(self.eval(x)?);
                }
                let scanned: usize = a.iter().map(size).sum();
                self.spend(scanned)?;
                call(name, &a, self.now)?
            }
        })
    }
}

fn call(name: &str, a: &[Value], now: i64) -> Result<Value, String> {
    use Value::*;
    let nums = |l: &Vec<Value>| -> Option<Vec<f64>> {
        l.iter()
            .map(|v| if let Number(n) = v { Some(*n) } else { None })
            .collect()
    };
    Ok(match (name, a) {
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
        // Case mapping can grow a string (`ß` → `SS`): at most 3× in Unicode.
        ("upper case", [String(s)]) if s.len() * 3 <= MAX_VALUE_LEN => String(s.to_uppercase()),
        ("lower case", [String(s)]) if s.len() * 3 <= MAX_VALUE_LEN => String(s.to_lowercase()),
        ("upper case" | "lower case", [String(s)]) => {
            return Err(format!(
                "`{name}` of a {} byte string (limit {})",
                s.len(),
                MAX_VALUE_LEN / 3
            ));
        }
        ("contains", [String(s), String(t)]) => Bool(s.contains(t.as_str())),
        ("starts with", [String(s), String(t)]) => Bool(s.starts_with(t.as_str())),
        ("ends with", [String(s), String(t)]) => Bool(s.ends_with(t.as_str())),
        ("substring", [String(s), Number(start), rest @ ..]) => {
            // FEEL: 1-based; a negative start counts from the end. `as` saturates NaN and
            // infinities, and the bounds are clamped, so no value can index out of range.
            let chars: Vec<char> = s.chars().collect();
            let len = chars.len() as i64;
            let st = *start as i64;
            let from = if st > 0 {
                st - 1
            } else {
                len.saturating_add(st)
            }
            .clamp(0, len);
            let take = match rest {
                [Number(n)] => (*n as i64).max(0),
                [] => len,
                _ => return Ok(Null),
            };
            String(
                chars
                    .iter()
                    .skip(from as usize)
                    .take(take.min(len) as usize)
                    .collect(),
            )
        }
        ("string", [v]) => match v {
            Null => Null,
            String(s) => String(s.clone()),
            other => {
                let s = match other.to_json() {
                    serde_json::Value::String(s) => s,
                    j => j.to_string(),
                };
                if s.len() > MAX_VALUE_LEN {
                    return Err(format!(
                        "`string` would build a string of {} bytes (limit {MAX_VALUE_LEN})",
                        s.len()
                    ));
                }
                String(s)
            }
        },
        ("number", [String(s)]) => s.trim().parse().map(Number).unwrap_or(Null),
        ("number", [Number(n)]) => Number(*n),
        ("is defined", [v]) => Bool(*v != Null),
        ("now", []) => date_time(Some(now))?,
        ("today", []) => date_time(Some(now - now.rem_euclid(86_400_000)))?,
        ("date and time", [String(s)]) => match parse_datetime(s) {
            Some(t) => date_time(Some(t))?,
            None => Null,
        },
        ("duration", [String(s)]) => match duration_checked(s)? {
            Some(d) => Value::Duration(d),
            None => Null,
        },
        _ => Null,
    })
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

/// ISO 8601 durations with days and time: `P2D`, `PT1H30M`, `PT0.5S`, `-PT5M`. `None` for
/// anything else, including a duration beyond ±20,000 years ([`MAX_DURATION_MS`]).
pub fn parse_duration(s: &str) -> Option<i64> {
    duration_checked(s).ok().flatten()
}

/// [`parse_duration`] telling apart text that is no duration (`Ok(None)`: FEEL's null) from
/// one that is out of range or uses years or months (an error: silently `null` would hide it).
pub fn duration_checked(s: &str) -> Result<Option<i64>, String> {
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let Some(s) = s.strip_prefix('P') else {
        return Ok(None);
    };
    let (date, time) = match s.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let mut ms = 0f64;
    let mut num = String::new();
    let mut any = false;
    for c in date.chars() {
        let unit = match c {
            '0'..='9' | '.' => {
                num.push(c);
                continue;
            }
            'D' => 86_400_000.0,
            'W' => 7.0 * 86_400_000.0,
            'Y' | 'M' => {
                return Err(format!(
                    "duration `P{s}`: years and months (Y, M) are not supported; use days (D) or weeks (W)"
                ));
            }
            _ => return Ok(None),
        };
        let Ok(n) = num.parse::<f64>() else {
            return Ok(None);
        };
        ms += n * unit;
        num.clear();
        any = true;
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
            _ => return Ok(None),
        };
        let Ok(n) = num.parse::<f64>() else {
            return Ok(None);
        };
        ms += n * unit;
        num.clear();
        any = true;
    }
    if !any || !num.is_empty() {
        return Ok(None);
    }
    // Checked before converting: `as i64` would saturate a huge value to i64::MAX.
    if !(ms.is_finite() && ms <= MAX_DURATION_MS as f64) {
        return Err(format!("duration `P{s}` is longer than 20,000 years"));
    }
    let ms = ms as i64;
    Ok(Some(if neg { -ms } else { ms }))
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
    let ms = ms.unsigned_abs();
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
            .unwrap_or_else(|e| panic!("{src}: {e}"))
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
        assert!(
            !compile("=n > 1")
                .expect("compiles")
                .truthy(&v, 0)
                .expect("evaluates")
        );
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

    fn eval_err(src: &str, vars: serde_json::Value) -> String {
        compile(src)
            .unwrap_or_else(|e| panic!("{src}: {e}"))
            .eval(&vars, 1_795_564_800_000)
            .expect_err(src)
    }

    #[test]
    fn nesting_is_bounded_with_the_position() {
        let deep = format!("={}1{}", "(".repeat(1000), ")".repeat(1000));
        let e = compile(&deep).expect_err("too deep");
        assert!(e.contains("nests deeper than 64 levels"), "{e}");
        assert!(e.contains("at character"), "{e}");
        let e = compile(&format!("={}1", "-".repeat(1000))).expect_err("too deep");
        assert!(e.contains("nests deeper"), "{e}");
        // A long chain of operators is deep too (each `+` a level): refused, not recursed.
        let e = compile(&format!("=1{}", " + 1".repeat(2000))).expect_err("too deep");
        assert!(e.contains("nests deeper"), "{e}");
        let e = compile(&format!("={}", "[".repeat(100))).expect_err("too deep");
        assert!(e.contains("nests deeper"), "{e}");
        // What real processes write stays well inside.
        assert!(compile(&format!("={}1{}", "(".repeat(30), ")".repeat(30))).is_ok());
        assert!(compile(&format!("=1{}", " + 1".repeat(50))).is_ok());
        let e = compile(&format!("={}", "a".repeat(MAX_SOURCE_CHARS + 1))).expect_err("long");
        assert!(e.contains("longer than"), "{e}");
    }

    #[test]
    fn date_and_duration_arithmetic_is_checked() {
        let v = json!({});
        let e = eval_err("=duration(\"P999999999999Y\") + now()", v.clone());
        assert!(e.contains("years and months"), "{e}");
        let e = eval_err("=duration(\"P999999999999D\") + now()", v.clone());
        assert!(e.contains("longer than 20,000 years"), "{e}");
        let e = eval_err("=now() + duration(\"P3000000D\")", v.clone());
        assert!(e.contains("leaves the years"), "{e}");
        let e = eval_err("=duration(\"P3000000D\") * 1000000", v.clone());
        assert!(e.contains("overflows"), "{e}");
        let e = eval_err(
            "=duration(\"P5000000D\") + duration(\"P5000000D\")",
            v.clone(),
        );
        assert!(e.contains("overflows"), "{e}");
        let e = eval_err(
            "=date and time(\"9999-12-31T00:00:00Z\") + duration(\"P2D\")",
            v,
        );
        assert!(e.contains("leaves the years"), "{e}");
        assert_eq!(parse_duration("P999999999999D"), None);
        assert_eq!(parse_duration("P1Y"), None);
    }

    #[test]
    fn evaluation_is_bounded() {
        let big = "x".repeat(300_000);
        let v = json!({"s": big});
        let e = eval_err("=s + s + s + s", v.clone());
        assert!(e.contains("limit"), "{e}");
        let e = eval_err("=string([s, s, s, s])", v.clone());
        assert!(e.contains("limit"), "{e}");
        // Referencing a large variable many times spends the budget by its size.
        let many = format!("=count([{}])", vec!["s"; 40].join(", "));
        let e = eval_err(&many, v);
        assert!(e.contains("budget"), "{e}");
    }
}
