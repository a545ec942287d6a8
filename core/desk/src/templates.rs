//! Message templates (S12–S13): CRUD, the `//` picker search and rendering with handlebars.
//!
//! Macros are handlebars variables and helpers. Built-in helpers live here; plugins register
//! more through [`Renderer::register_helper`].
//!
//! Templates are written by admins and rendered on the server for any operator, so a render is
//! bounded like every other interpreter (issue 14). The `handlebars` crate has no limit on
//! partial recursion, output size or time of its own (an inline partial that includes itself
//! overflows the stack), so [`Renderer`] puts the limits around it rather than replacing a
//! well-kept engine:
//! - brackets in the source are nested at most [`MAX_BRACKET_NESTING`] deep before the parser
//!   sees it (its subexpression and literal rules recurse);
//! - the compiled template is measured before every render: a partial that includes itself
//!   (directly or through others) or whose name is computed is refused; blocks, subexpressions
//!   and partials are nested at most [`MAX_NESTING`] deep; and the work of the render — every
//!   element visited over all partial expansions, the body of an `#each` counted once per item
//!   of the largest list or object it could iterate — is at most [`MAX_RENDER_COST`];
//! - output goes to a writer that fails once it holds [`MAX_RENDERED_BYTES`] or
//!   [`RENDER_TIME_LIMIT`] has passed; helpers check the same deadline, and what they produce
//!   counts against [`MAX_HELPER_BYTES`];
//! - `{{log}}` fails: templates cannot write to the server log.
//!
//! At save a template must also render against sample contexts with every documented variable
//! ([`MacroContext::samples`]); plugin helpers answer with an empty text there, so saving never
//! calls a plugin.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use ferrydesk_domain::*;
use ferrydesk_store::{contacts, directory};
use handlebars::template::{DecoratorTemplate, HelperTemplate, Parameter, TemplateElement};
use handlebars::{
    Context, Handlebars, Helper, HelperDef, HelperResult, Output, RenderContext, RenderError,
    RenderErrorReason, Renderable, ScopedJson, Template as Compiled,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{Desk, Error, Principal, Result};

/// Largest template text.
pub const MAX_TEMPLATE_BYTES: usize = 20_000;
/// Largest rendered text (a message is at most 10,000 characters; this leaves room for
/// multi-byte text and fails a fan-out long before it grows).
pub const MAX_RENDERED_BYTES: usize = 64 * 1024;
/// Deepest nesting of `(`, `[` and `{` in a template's source, checked before parsing.
pub const MAX_BRACKET_NESTING: usize = 64;
/// Deepest nesting of blocks, subexpressions and partials within each other.
pub const MAX_NESTING: usize = 32;
/// Most work one render may do, in steps (see the module documentation).
pub const MAX_RENDER_COST: u64 = 200_000;
/// Longest a render may take, helpers (plugin macros included) and all.
pub const RENDER_TIME_LIMIT: Duration = Duration::from_millis(500);
/// Most text helpers may produce in one render, wherever it goes (into the output, into
/// another helper, into a partial block).
pub const MAX_HELPER_BYTES: usize = 1024 * 1024;

/// Steps counted for including a partial (it copies the context).
const PARTIAL_STEPS: u64 = 64;
/// Bytes of text that count as one step.
const BYTES_PER_STEP: u64 = 16;

/// The handlebars registries shared by every render; cheap to clone.
#[derive(Clone)]
pub struct Renderer {
    inner: Arc<RwLock<Registries>>,
}

struct Registries {
    /// Renders for chats.
    live: Handlebars<'static>,
    /// Checks templates at save: the same helpers, with placeholders for plugin helpers.
    check: Handlebars<'static>,
}

impl Default for Renderer {
    fn default() -> Self {
        Self::new()
    }
}

fn base_registry() -> Handlebars<'static> {
    let mut hb = Handlebars::new();
    hb.set_strict_mode(true);
    // Messages are plain text, not HTML.
    hb.register_escape_fn(handlebars::no_escape);
    hb.register_helper("log", Box::new(NoLogHelper));
    hb.register_helper("date", Box::new(DateHelper));
    hb.register_helper("upper", Box::new(CaseHelper(true)));
    hb.register_helper("lower", Box::new(CaseHelper(false)));
    hb.register_helper("default", Box::new(DefaultHelper));
    hb.register_helper("first_name", Box::new(FirstNameHelper));
    hb
}

impl Renderer {
    pub fn new() -> Renderer {
        Renderer {
            inner: Arc::new(RwLock::new(Registries {
                live: base_registry(),
                check: base_registry(),
            })),
        }
    }

    /// Adds a helper (e.g. a plugin macro). A later registration under the same name wins.
    /// Checks at save use a placeholder under the same name, so saving calls no plugin.
    pub fn register_helper(&self, name: &str, helper: Box<dyn HelperDef + Send + Sync + 'static>) {
        if let Ok(mut r) = self.inner.write() {
            r.live.register_helper(name, helper);
            r.check.register_helper(name, Box::new(PlaceholderHelper));
        }
    }

    /// Checks a template at save: it compiles (the error names line and column), stays within
    /// the limits and renders against the sample contexts. Errors name the field `body`.
    pub fn check(&self, body: &str) -> Result<()> {
        let tpl = compile(body).map_err(|e| Error::invalid("body", e))?;
        let samples = MacroContext::samples().map(|c| serde_json::to_value(c).unwrap_or_default());
        let reg = self
            .inner
            .read()
            .map_err(|_| Error::Internal("template registry poisoned".into()))?;
        for ctx in &samples {
            measure(&tpl, ctx).map_err(|e| Error::invalid("body", e))?;
        }
        for ctx in &samples {
            render_compiled(&reg.check, &tpl, ctx).map_err(|e| {
                Error::invalid("body", format!("cannot render with a sample chat: {e}"))
            })?;
        }
        Ok(())
    }

    /// Renders a template; any limit exceeded fails this render only, with the reason.
    pub fn render(&self, body: &str, ctx: &serde_json::Value) -> Result<String> {
        let tpl = compile(body).map_err(|e| Error::invalid("body", e))?;
        measure(&tpl, ctx).map_err(|e| Error::invalid("body", e))?;
        let reg = self
            .inner
            .read()
            .map_err(|_| Error::Internal("template registry poisoned".into()))?;
        render_compiled(&reg.live, &tpl, ctx).map_err(|e| Error::invalid("body", e))
    }
}

/// Keeps error texts short: a parse error may quote a whole line of the template.
fn shorten(mut s: String) -> String {
    const MAX: usize = 400;
    if s.len() > MAX {
        let mut end = MAX;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

fn compile(body: &str) -> Result<Compiled, String> {
    let mut depth = 0usize;
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            // The mustache delimiters themselves are not nesting.
            '{' | '}' if chars.peek() == Some(&c) => {
                chars.next();
            }
            '(' | '[' | '{' => {
                depth += 1;
                if depth > MAX_BRACKET_NESTING {
                    return Err(format!(
                        "brackets are nested more than {MAX_BRACKET_NESTING} deep"
                    ));
                }
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Compiled::compile(body).map_err(|e| shorten(e.to_string()))
}

/// The limits of the render on this thread, if one is under way.
struct Budget {
    deadline: Instant,
    helper_bytes: usize,
    /// The limit that stopped the render, reported instead of handlebars' wrapping of it.
    hit: Option<String>,
}

thread_local! {
    static BUDGET: RefCell<Option<Budget>> = const { RefCell::new(None) };
}

fn trip(msg: String) -> String {
    BUDGET.with(|b| {
        if let Some(b) = b.borrow_mut().as_mut() {
            b.hit.get_or_insert_with(|| msg.clone());
        }
    });
    msg
}

fn time_is_up() -> bool {
    BUDGET.with(|b| {
        b.borrow()
            .as_ref()
            .is_some_and(|b| Instant::now() >= b.deadline)
    })
}

fn time_limit_message() -> String {
    format!(
        "rendering took longer than {} ms",
        RENDER_TIME_LIMIT.as_millis()
    )
}

/// For helpers: fails once the current render's time is up. Outside a render it passes.
pub fn check_render_deadline() -> Result<(), RenderError> {
    if time_is_up() {
        return Err(RenderErrorReason::Other(trip(time_limit_message())).into());
    }
    Ok(())
}

/// For helpers that wait (plugin macros): the time left to the current render, if any.
pub fn render_time_left() -> Option<Duration> {
    BUDGET.with(|b| {
        b.borrow()
            .as_ref()
            .map(|b| b.deadline.saturating_duration_since(Instant::now()))
    })
}

/// For helpers: counts `bytes` of text they produced against [`MAX_HELPER_BYTES`].
pub fn count_helper_output(bytes: usize) -> Result<(), RenderError> {
    check_render_deadline()?;
    let over = BUDGET.with(|b| {
        b.borrow_mut().as_mut().is_some_and(|b| {
            b.helper_bytes = b.helper_bytes.saturating_add(bytes);
            b.helper_bytes > MAX_HELPER_BYTES
        })
    });
    if over {
        return Err(RenderErrorReason::Other(trip(format!(
            "helpers produced more than {MAX_HELPER_BYTES} bytes"
        )))
        .into());
    }
    Ok(())
}

/// Sets the budget for the render on this thread and clears it after.
struct BudgetGuard(Option<Budget>);

impl BudgetGuard {
    fn start() -> BudgetGuard {
        let budget = Budget {
            deadline: Instant::now() + RENDER_TIME_LIMIT,
            helper_bytes: 0,
            hit: None,
        };
        BudgetGuard(BUDGET.with(|b| b.borrow_mut().replace(budget)))
    }
    fn hit(&self) -> Option<String> {
        BUDGET.with(|b| b.borrow().as_ref().and_then(|b| b.hit.clone()))
    }
}

impl Drop for BudgetGuard {
    fn drop(&mut self) {
        let previous = self.0.take();
        BUDGET.with(|b| *b.borrow_mut() = previous);
    }
}

/// The output of a render: fails once it would hold more than [`MAX_RENDERED_BYTES`] or the
/// time is up, so a fan-out stops early instead of growing.
struct CappedOutput {
    buf: String,
}

impl Output for CappedOutput {
    fn write(&mut self, seg: &str) -> std::io::Result<()> {
        if self.buf.len() + seg.len() > MAX_RENDERED_BYTES {
            return Err(std::io::Error::other(trip(format!(
                "the rendered text is larger than {MAX_RENDERED_BYTES} bytes"
            ))));
        }
        if time_is_up() {
            return Err(std::io::Error::other(trip(time_limit_message())));
        }
        self.buf.push_str(seg);
        Ok(())
    }
}

fn render_compiled(
    hb: &Handlebars<'static>,
    tpl: &Compiled,
    ctx: &serde_json::Value,
) -> Result<String, String> {
    let guard = BudgetGuard::start();
    let ctx = Context::wraps(ctx).map_err(|e| e.to_string())?;
    let mut out = CappedOutput { buf: String::new() };
    let mut rc = RenderContext::new(None);
    match tpl.render(hb, &ctx, &mut rc, &mut out) {
        Ok(()) => Ok(out.buf),
        Err(e) => Err(guard.hit().unwrap_or_else(|| shorten(e.to_string()))),
    }
}

/// Largest list or object and longest text in a render context.
fn context_bounds(v: &serde_json::Value) -> (u64, u64) {
    let (mut items, mut text) = (0u64, 0u64);
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        match v {
            serde_json::Value::Array(a) => {
                items = items.max(a.len() as u64);
                stack.extend(a);
            }
            serde_json::Value::Object(o) => {
                items = items.max(o.len() as u64);
                stack.extend(o.values());
            }
            serde_json::Value::String(s) => text = text.max(s.len() as u64),
            _ => text = text.max(24),
        }
    }
    (items, text)
}

/// Checks a compiled template's partials, nesting and work against the limits for rendering
/// with `ctx` (see the module documentation).
fn measure(tpl: &Compiled, ctx: &serde_json::Value) -> Result<(), String> {
    let (items, text) = context_bounds(ctx);
    let mut m = Measure::default();
    m.collect(tpl, 0)?;
    // A partial's hash arguments add keys to the object an `#each` inside it may iterate.
    m.loops = items
        .max(m.literal_items)
        .saturating_add(m.hash_args)
        .max(1);
    m.value = 1 + text / BYTES_PER_STEP;
    let cost = m.template(tpl, 0)?;
    if cost.steps > MAX_RENDER_COST {
        return Err(format!(
            "the template needs too much work to render (more than {MAX_RENDER_COST} steps); \
             repeated partials and nested #each multiply it"
        ));
    }
    Ok(())
}

#[derive(Clone, Copy, Default)]
struct Cost {
    /// Nesting below the element or template measured.
    depth: usize,
    steps: u64,
}

impl Cost {
    fn step(steps: u64) -> Cost {
        Cost { depth: 0, steps }
    }
    /// Adds `inner` run `times` times, nested one level below; each run costs a step even
    /// when its body is empty (an empty `#each` body still iterates).
    fn nest(&mut self, inner: Cost, times: u64) {
        self.depth = self.depth.max(inner.depth + 1);
        self.steps = self
            .steps
            .saturating_add(inner.steps.saturating_add(1).saturating_mul(times));
    }
    fn add(&mut self, other: Cost) {
        self.depth = self.depth.max(other.depth);
        self.steps = self.steps.saturating_add(other.steps);
    }
}

#[derive(Default)]
struct Measure<'t> {
    /// Inline partials by name (one name may be defined in several places).
    defs: HashMap<&'t str, Vec<&'t Compiled>>,
    memo: HashMap<&'t str, Cost>,
    /// Partials being measured, outermost first: a name found here again is recursion.
    active: Vec<&'t str>,
    hash_args: u64,
    /// Largest list or object written in the template itself.
    literal_items: u64,
    /// How often an `#each` body may run.
    loops: u64,
    /// Steps for printing one value.
    value: u64,
}

fn too_deep() -> String {
    format!("blocks, subexpressions and partials are nested more than {MAX_NESTING} deep")
}

fn unsupported() -> String {
    "the template uses a construct this server cannot check".to_owned()
}

fn inline_name(d: &DecoratorTemplate) -> Option<Result<&str, String>> {
    if d.name.as_name() != Some("inline") {
        return None;
    }
    Some(match d.params.first() {
        Some(Parameter::Literal(serde_json::Value::String(n))) => Ok(n.as_str()),
        _ => Err("an inline partial's name must be a quoted text".to_owned()),
    })
}

fn partial_name(d: &DecoratorTemplate) -> Result<std::borrow::Cow<'_, str>, String> {
    if let Some(n) = d.name.as_name() {
        // `{{> @partial-block}}` writes its block's rendered content once per use, and nested
        // partial blocks multiply it level by level into handlebars' own uncapped buffers
        // (8 uses × 10 levels of 1,000 bytes ≈ 134 GB) at a cost the measure cannot bound.
        if n.starts_with('@') {
            return Err(format!("the partial \"{n}\" is not available in templates"));
        }
        return Ok(n.into());
    }
    match &d.name {
        Parameter::Literal(serde_json::Value::String(s)) => Ok(s.as_str().into()),
        Parameter::Literal(v) => Ok(v.to_string().into()),
        _ => Err("a partial's name must be written out, not computed".to_owned()),
    }
}

impl<'t> Measure<'t> {
    /// Finds the inline partials and checks the nesting of the source.
    fn collect(&mut self, t: &'t Compiled, depth: usize) -> Result<(), String> {
        if depth > MAX_NESTING {
            return Err(too_deep());
        }
        for e in &t.elements {
            self.collect_element(e, depth)?;
        }
        Ok(())
    }

    fn collect_element(&mut self, e: &'t TemplateElement, depth: usize) -> Result<(), String> {
        if depth > MAX_NESTING {
            return Err(too_deep());
        }
        match e {
            TemplateElement::RawString(_) | TemplateElement::Comment(_) => {}
            TemplateElement::Expression(h)
            | TemplateElement::HtmlExpression(h)
            | TemplateElement::HelperBlock(h) => {
                self.collect_params(&h.name, &h.params, h.hash.values(), depth)?;
                for t in [&h.template, &h.inverse].into_iter().flatten() {
                    self.collect(t, depth + 1)?;
                }
            }
            TemplateElement::DecoratorExpression(d)
            | TemplateElement::DecoratorBlock(d)
            | TemplateElement::PartialExpression(d)
            | TemplateElement::PartialBlock(d) => {
                if let Some(name) = inline_name(d) {
                    let name = name?;
                    if let Some(body) = &d.template {
                        self.defs.entry(name).or_default().push(body);
                    }
                }
                if matches!(
                    e,
                    TemplateElement::PartialExpression(_) | TemplateElement::PartialBlock(_)
                ) {
                    partial_name(d)?;
                    self.hash_args += d.hash.len() as u64;
                }
                self.collect_params(&d.name, &d.params, d.hash.values(), depth)?;
                if let Some(t) = &d.template {
                    self.collect(t, depth + 1)?;
                }
            }
            _ => return Err(unsupported()),
        }
        Ok(())
    }

    fn collect_params(
        &mut self,
        name: &'t Parameter,
        params: &'t [Parameter],
        hash: impl Iterator<Item = &'t Parameter>,
        depth: usize,
    ) -> Result<(), String> {
        for p in std::iter::once(name).chain(params).chain(hash) {
            match p {
                Parameter::Subexpression(s) => self.collect_element(&s.element, depth + 1)?,
                // `{{#each [1,2,3]}}` iterates a list written in the template.
                Parameter::Literal(v) => {
                    self.literal_items = self.literal_items.max(context_bounds(v).0);
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The work of rendering `t` once, its elements at `depth`.
    fn template(&mut self, t: &'t Compiled, depth: usize) -> Result<Cost, String> {
        if depth > MAX_NESTING {
            return Err(too_deep());
        }
        let mut cost = Cost::default();
        for e in &t.elements {
            cost.add(self.element(e, depth)?);
        }
        Ok(cost)
    }

    fn element(&mut self, e: &'t TemplateElement, depth: usize) -> Result<Cost, String> {
        if depth > MAX_NESTING {
            return Err(too_deep());
        }
        Ok(match e {
            TemplateElement::RawString(s) => Cost::step(1 + s.len() as u64 / BYTES_PER_STEP),
            TemplateElement::Comment(_) => Cost::step(1),
            TemplateElement::Expression(h)
            | TemplateElement::HtmlExpression(h)
            | TemplateElement::HelperBlock(h) => self.helper(h, depth)?,
            TemplateElement::DecoratorExpression(d) | TemplateElement::DecoratorBlock(d) => {
                let mut cost = Cost::step(1);
                cost.add(self.params(&d.name, &d.params, d.hash.values(), depth)?);
                // An inline partial's body runs where it is included; other decorators are
                // not registered and fail.
                if inline_name(d).is_none()
                    && let Some(t) = &d.template
                {
                    cost.nest(self.template(t, depth + 1)?, 1);
                }
                cost
            }
            TemplateElement::PartialExpression(d) | TemplateElement::PartialBlock(d) => {
                self.partial(d, depth)?
            }
            _ => return Err(unsupported()),
        })
    }

    fn helper(&mut self, h: &'t HelperTemplate, depth: usize) -> Result<Cost, String> {
        let mut cost = Cost::step(1 + self.value);
        cost.add(self.params(&h.name, &h.params, h.hash.values(), depth)?);
        if let Some(t) = &h.template {
            let times = if h.name.as_name() == Some("each") {
                self.loops
            } else {
                1
            };
            cost.nest(self.template(t, depth + 1)?, times);
        }
        if let Some(t) = &h.inverse {
            cost.nest(self.template(t, depth + 1)?, 1);
        }
        Ok(cost)
    }

    fn params(
        &mut self,
        name: &'t Parameter,
        params: &'t [Parameter],
        hash: impl Iterator<Item = &'t Parameter>,
        depth: usize,
    ) -> Result<Cost, String> {
        let mut cost = Cost::default();
        for p in std::iter::once(name).chain(params).chain(hash) {
            if let Parameter::Subexpression(s) = p {
                cost.nest(self.element(&s.element, depth + 1)?, 1);
            }
        }
        Ok(cost)
    }

    fn partial(&mut self, d: &'t DecoratorTemplate, depth: usize) -> Result<Cost, String> {
        let mut cost = Cost::step(PARTIAL_STEPS);
        cost.add(self.params(&d.name, &d.params, d.hash.values(), depth)?);
        let name = partial_name(d)?;
        if let Some((&key, bodies)) = self.defs.get_key_value(name.as_ref()) {
            if let Some(at) = self.active.iter().position(|n| *n == key) {
                let mut path: Vec<&str> = self.active[at..].to_vec();
                path.push(key);
                return Err(format!(
                    "partial \"{key}\" includes itself ({}); partials cannot recurse",
                    path.join(" → ")
                ));
            }
            let inner = match self.memo.get(key) {
                Some(c) => *c,
                None => {
                    let bodies = bodies.clone();
                    self.active.push(key);
                    let mut inner = Cost::default();
                    for body in bodies {
                        let c = self.template(body, depth + 1)?;
                        inner.depth = inner.depth.max(c.depth);
                        inner.steps = inner.steps.max(c.steps);
                    }
                    self.active.pop();
                    self.memo.insert(key, inner);
                    inner
                }
            };
            if depth + 1 + inner.depth > MAX_NESTING {
                return Err(too_deep());
            }
            cost.nest(inner, 1);
        }
        // A partial block's content is rendered once, as `@partial-block` or as the fallback.
        if let Some(t) = &d.template {
            cost.nest(self.template(t, depth + 1)?, 1);
        }
        Ok(cost)
    }
}

/// `{{log}}` is not available: templates cannot write to the server log.
struct NoLogHelper;
impl HelperDef for NoLogHelper {
    fn call<'reg: 'rc, 'rc>(
        &self,
        _: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
        _: &mut dyn Output,
    ) -> HelperResult {
        Err(RenderErrorReason::Other("the log helper is not available in templates".into()).into())
    }
}

/// Stands in for a plugin helper when a template is checked at save.
struct PlaceholderHelper;
impl HelperDef for PlaceholderHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        _: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        check_render_deadline()?;
        Ok(ScopedJson::Derived(
            serde_json::Value::String(String::new()),
        ))
    }
}

/// Writes a helper's text after counting it against the render's limits.
fn helper_write(out: &mut dyn Output, s: &str) -> HelperResult {
    count_helper_output(s.len())?;
    out.write(s)?;
    Ok(())
}

/// `{{date}}` → today's date; `{{date "[hour]:[minute]"}}` with a `time` format description.
struct DateHelper;
impl HelperDef for DateHelper {
    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        let fmt = h
            .param(0)
            .and_then(|p| p.value().as_str())
            .unwrap_or("[year]-[month]-[day]");
        let offset_min = ctx
            .data()
            .pointer("/now/utc_offset_minutes")
            .and_then(|v| v.as_i64())
            .unwrap_or(0);
        let fd = time::format_description::parse_borrowed::<2>(fmt)
            .map_err(|e| RenderErrorReason::Other(format!("date format: {e}")))?;
        let offset = time::UtcOffset::from_whole_seconds((offset_min * 60) as i32)
            .unwrap_or(time::UtcOffset::UTC);
        let s = time::OffsetDateTime::now_utc()
            .to_offset(offset)
            .format(&fd)
            .map_err(|e| RenderErrorReason::Other(e.to_string()))?;
        helper_write(out, &s)
    }
}

struct CaseHelper(bool);
impl HelperDef for CaseHelper {
    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        let v = h
            .param(0)
            .map(|p| {
                p.value()
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| p.value().to_string())
            })
            .unwrap_or_default();
        let v = if self.0 {
            v.to_uppercase()
        } else {
            v.to_lowercase()
        };
        helper_write(out, &v)
    }
}

/// `{{default contact.email "—"}}`: the first non-empty parameter.
struct DefaultHelper;
impl HelperDef for DefaultHelper {
    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        for p in h.params() {
            match p.value() {
                serde_json::Value::Null => continue,
                serde_json::Value::String(s) if s.is_empty() => continue,
                serde_json::Value::String(s) => return helper_write(out, s),
                v => return helper_write(out, &v.to_string()),
            }
        }
        Ok(())
    }
}

/// `{{first_name contact.name}}`: the first word of a name.
struct FirstNameHelper;
impl HelperDef for FirstNameHelper {
    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        let v = h
            .param(0)
            .and_then(|p| p.value().as_str())
            .unwrap_or_default();
        helper_write(out, v.split_whitespace().next().unwrap_or_default())
    }
}

/// Template fields as an admin writes them.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateInput {
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub name: String,
    pub body: String,
    #[serde(default)]
    pub queue_id: Option<QueueId>,
}

/// A template rendered for a chat.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Rendered {
    pub template_id: TemplateId,
    pub text: String,
}

impl Desk {
    async fn validate_template(&self, t: &TemplateInput) -> Result<()> {
        if t.name.trim().is_empty() || t.name.chars().count() > 200 {
            return Err(Error::invalid("name", "must be 1 to 200 characters"));
        }
        if t.body.trim().is_empty() || t.body.len() > MAX_TEMPLATE_BYTES {
            return Err(Error::invalid(
                "body",
                format!("must be 1 to {MAX_TEMPLATE_BYTES} bytes"),
            ));
        }
        let renderer = self.templates().clone();
        let body = t.body.clone();
        // Off the async workers: a check renders (bounded, but CPU all the same).
        tokio::task::spawn_blocking(move || renderer.check(&body))
            .await
            .map_err(|e| Error::Internal(format!("template check stopped: {e}")))?
    }

    pub async fn save_template(
        &self,
        p: &Principal,
        id: Option<&TemplateId>,
        t: TemplateInput,
    ) -> Result<Template> {
        p.require(Role::Admin)?;
        self.validate_template(&t).await?;
        let now = Ts::now();
        let mut tx = self.store().begin().await?;
        if let Some(q) = &t.queue_id {
            directory::get_queue(&mut tx, q)
                .await?
                .ok_or_else(|| Error::invalid("queue_id", "no such queue"))?;
        }
        let created_at = match id {
            Some(id) => {
                directory::get_template(&mut tx, id)
                    .await?
                    .ok_or(Error::not_found("template"))?
                    .created_at
            }
            None => now,
        };
        let tpl = Template {
            id: id.cloned().unwrap_or_else(TemplateId::generate),
            name: t.name.trim().to_owned(),
            body: t.body,
            queue_id: t.queue_id,
            created_at,
            updated_at: now,
        };
        directory::upsert_template(&mut tx, &tpl).await?;
        tx.commit().await.map_err(ferrydesk_store::Error::from)?;
        Ok(tpl)
    }

    pub async fn delete_template(&self, p: &Principal, id: &TemplateId) -> Result<()> {
        p.require(Role::Admin)?;
        let mut tx = self.store().begin().await?;
        if !directory::delete_template(&mut tx, id).await? {
            return Err(Error::not_found("template"));
        }
        tx.commit().await.map_err(ferrydesk_store::Error::from)?;
        Ok(())
    }

    /// Templates matching `q` by name or text. Operators see global templates and those of
    /// their queues (plus the chat's queue when given); admins and supervisors see all.
    pub async fn search_templates(
        &self,
        p: &Principal,
        q: &str,
        chat: Option<&ChatId>,
    ) -> Result<Vec<Template>> {
        let mut conn = self.store().read().await?;
        if p.role().sees_all_chats() && chat.is_none() {
            return Ok(directory::search_templates(&mut conn, q, None, 100).await?);
        }
        let mut queues = directory::queues_of_user(&mut conn, p.id()).await?;
        if let Some(c) = chat {
            let chat = self.readable_chat(&mut conn, p, c).await?;
            queues.push(chat.queue_id);
        }
        Ok(directory::search_templates(&mut conn, q, Some(&queues), 100).await?)
    }

    /// Renders a template with the chat's values (S12).
    pub async fn render_template(
        &self,
        p: &Principal,
        chat: &ChatId,
        id: &TemplateId,
    ) -> Result<Rendered> {
        let mut conn = self.store().read().await?;
        let chat = self.readable_chat(&mut conn, p, chat).await?;
        let tpl = directory::get_template(&mut conn, id)
            .await?
            .ok_or(Error::not_found("template"))?;
        let ctx = self.render_context(&mut conn, p, &chat).await?;
        drop(conn);
        let renderer = self.templates().clone();
        let body = tpl.body;
        let text = tokio::task::spawn_blocking(move || renderer.render(&body, &ctx))
            .await
            .map_err(|e| Error::Internal(format!("template render stopped: {e}")))??;
        Ok(Rendered {
            template_id: tpl.id,
            text,
        })
    }

    /// The values macros can use: `contact`, `operator`, `chat`, `channel`, `queue`, `now`.
    pub async fn render_context(
        &self,
        conn: &mut ferrydesk_store::Conn,
        p: &Principal,
        chat: &Chat,
    ) -> Result<serde_json::Value> {
        let contact = contacts::get_contact(conn, &chat.contact_id)
            .await?
            .ok_or(Error::not_found("contact"))?;
        let channel = directory::get_channel(conn, &chat.channel_id)
            .await?
            .ok_or(Error::not_found("channel"))?;
        let queue = directory::get_queue(conn, &chat.queue_id)
            .await?
            .ok_or(Error::not_found("queue"))?;
        let ctx = MacroContext {
            contact: ContactVars {
                first_name: first_word(&contact.name),
                id: contact.id,
                name: contact.name,
                email: contact.email,
                phone: contact.phone,
            },
            operator: OperatorVars {
                id: p.user.id.clone(),
                name: p.user.display_name.clone(),
                first_name: first_word(&p.user.display_name),
                username: p.user.username.clone(),
                email: p.user.email.clone(),
                locale: p.user.locale.clone(),
            },
            chat: ChatVars {
                id: chat.id.clone(),
                started_at: chat.started_at,
                status: chat.status,
            },
            channel: ChannelVars {
                id: channel.id,
                name: channel.name,
                kind: channel.kind,
            },
            queue: QueueVars {
                id: queue.id,
                name: queue.name,
            },
            now: NowVars {
                iso: Ts::now(),
                utc_offset_minutes: 0,
            },
        };
        serde_json::to_value(ctx).map_err(|e| Error::Internal(e.to_string()))
    }
}

fn first_word(s: &str) -> String {
    s.split_whitespace().next().unwrap_or_default().to_owned()
}

/// The values macros can use (listed for template authors in docs/api.md, "Templates").
#[derive(Debug, Clone, Serialize)]
pub struct MacroContext {
    pub contact: ContactVars,
    pub operator: OperatorVars,
    pub chat: ChatVars,
    pub channel: ChannelVars,
    pub queue: QueueVars,
    pub now: NowVars,
}

/// `contact.*`
#[derive(Debug, Clone, Serialize)]
pub struct ContactVars {
    pub id: ContactId,
    pub name: String,
    pub first_name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
}

/// `operator.*`: the operator rendering the template.
#[derive(Debug, Clone, Serialize)]
pub struct OperatorVars {
    pub id: UserId,
    pub name: String,
    pub first_name: String,
    pub username: String,
    pub email: Option<String>,
    pub locale: String,
}

/// `chat.*`
#[derive(Debug, Clone, Serialize)]
pub struct ChatVars {
    pub id: ChatId,
    pub started_at: Ts,
    pub status: ChatStatus,
}

/// `channel.*`
#[derive(Debug, Clone, Serialize)]
pub struct ChannelVars {
    pub id: ChannelId,
    pub name: String,
    pub kind: ChannelKind,
}

/// `queue.*`
#[derive(Debug, Clone, Serialize)]
pub struct QueueVars {
    pub id: QueueId,
    pub name: String,
}

/// `now.*`
#[derive(Debug, Clone, Serialize)]
pub struct NowVars {
    pub iso: Ts,
    pub utc_offset_minutes: i64,
}

impl MacroContext {
    /// What a template is checked against at save: every variable filled in, and every
    /// optional one empty, so both sides of an `{{#if contact.email}}` are tried.
    pub fn samples() -> [MacroContext; 2] {
        let full = MacroContext {
            contact: ContactVars {
                id: ContactId("sample-contact".into()),
                name: "Maria Gonzalez".into(),
                first_name: "Maria".into(),
                email: Some("maria@example.com".into()),
                phone: Some("+15550100".into()),
            },
            operator: OperatorVars {
                id: UserId("sample-operator".into()),
                name: "Anna Smith".into(),
                first_name: "Anna".into(),
                username: "anna".into(),
                email: Some("anna@example.com".into()),
                locale: "en".into(),
            },
            chat: ChatVars {
                id: ChatId("sample-chat".into()),
                started_at: Ts::now(),
                status: ChatStatus::InProgress,
            },
            channel: ChannelVars {
                id: ChannelId("sample-channel".into()),
                name: "Website".into(),
                kind: ChannelKind::Widget,
            },
            queue: QueueVars {
                id: QueueId("sample-queue".into()),
                name: "Support".into(),
            },
            now: NowVars {
                iso: Ts::now(),
                utc_offset_minutes: 0,
            },
        };
        let mut sparse = full.clone();
        sparse.contact.name = String::new();
        sparse.contact.first_name = String::new();
        sparse.contact.email = None;
        sparse.contact.phone = None;
        sparse.operator.email = None;
        [full, sparse]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> serde_json::Value {
        json!({
            "contact": { "name": "Иван Петров", "email": null },
            "operator": { "name": "Anna Smith", "first_name": "Anna" },
            "channel": { "name": "Website" },
            "now": { "utc_offset_minutes": 0 },
        })
    }

    #[test]
    fn macros_are_substituted_without_html_escaping() {
        let r = Renderer::new();
        let text = r.render("Hello, {{first_name contact.name}}! I am {{operator.first_name}} <{{channel.name}}> & co.", &ctx());
        assert_eq!(
            text.ok().as_deref(),
            Some("Hello, Иван! I am Anna <Website> & co.")
        );
        let text = r.render(
            "{{default contact.email \"no email\"}} {{upper channel.name}}",
            &ctx(),
        );
        assert_eq!(text.ok().as_deref(), Some("no email WEBSITE"));
    }

    #[test]
    fn unknown_variables_and_bad_syntax_are_errors_that_say_where() {
        let r = Renderer::new();
        let e = r
            .render("Hi {{contact.nmae}}", &ctx())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.starts_with("body: ") && e.contains("contact.nmae"), "{e}");
        let e = r
            .check("line one\nHi {{#if}}")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains(":2:"), "names line 2: {e}");
    }

    #[test]
    fn nested_partial_blocks_cannot_multiply_their_content() {
        // Each level writes its block's content 8 times: 1,000 bytes × 8^9 ≈ 134 GB if it ran.
        let body = format!(
            "{{{{#*inline \"p\"}}}}{}{{{{/inline}}}}{}{}{}",
            "{{> @partial-block}}".repeat(8),
            "{{#> p}}".repeat(10),
            "x".repeat(1_000),
            "{{/p}}".repeat(10),
        );
        let r = Renderer::new();
        let started = std::time::Instant::now();
        let e = r
            .check(&body)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("@partial-block"), "{e}");
        let e = r
            .render(&body, &ctx())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("not available in templates"), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        // Partial blocks without it still render their fallback.
        assert_eq!(
            r.render("{{#> missing}}fallback{{/missing}}", &ctx())
                .ok()
                .as_deref(),
            Some("fallback")
        );
    }

    #[test]
    fn date_helper_formats_now() {
        let r = Renderer::new();
        let text = r.render("{{date \"[year]\"}}", &ctx()).unwrap_or_default();
        assert_eq!(text.len(), 4);
        assert!(text.starts_with("20"));
    }

    #[test]
    fn plugins_can_add_helpers() {
        struct Shout;
        impl HelperDef for Shout {
            fn call<'reg: 'rc, 'rc>(
                &self,
                _: &Helper<'rc>,
                _: &'reg Handlebars<'reg>,
                _: &'rc Context,
                _: &mut RenderContext<'reg, 'rc>,
                out: &mut dyn Output,
            ) -> HelperResult {
                out.write("HEY")?;
                Ok(())
            }
        }
        let r = Renderer::new();
        assert!(r.render("{{shout}}", &ctx()).is_err());
        r.register_helper("shout", Box::new(Shout));
        assert_eq!(r.render("{{shout}}!", &ctx()).ok().as_deref(), Some("HEY!"));
    }

    fn sample() -> serde_json::Value {
        serde_json::to_value(&MacroContext::samples()[0]).unwrap_or_default()
    }

    fn check_err(body: &str) -> String {
        Renderer::new()
            .check(body)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    fn render_err(body: &str) -> String {
        Renderer::new()
            .render(body, &sample())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    /// `{{#*inline "a"}}` repeated `width` times per level, `levels` deep, around `leaf`.
    fn fan_out(leaf: &str, width: usize, levels: usize) -> String {
        let mut s = format!("{{{{#*inline \"p0\"}}}}{leaf}{{{{/inline}}}}");
        for l in 1..=levels {
            s += &format!("{{{{#*inline \"p{l}\"}}}}");
            for _ in 0..width {
                s += &format!("{{{{> p{}}}}}", l - 1);
            }
            s += "{{/inline}}";
        }
        s + &format!("{{{{> p{levels}}}}}")
    }

    #[test]
    fn a_partial_that_includes_itself_is_refused_not_a_stack_overflow() {
        let bomb = r#"{{#*inline "r"}}x{{> r}}{{/inline}}{{> r}}"#;
        let e = check_err(bomb);
        assert!(
            e.starts_with("body: ") && e.contains("partial \"r\" includes itself (r → r)"),
            "{e}"
        );
        assert!(render_err(bomb).contains("includes itself"));
        let indirect = r#"{{#*inline "a"}}{{#if contact.name}}{{> b}}{{/if}}{{/inline}}{{#*inline "b"}}{{> a}}{{/inline}}{{> a}}"#;
        assert!(
            render_err(indirect).contains("includes itself (a → b → a)"),
            "{}",
            render_err(indirect)
        );
        // Defined inside another partial, through a partial block.
        let nested =
            r#"{{#*inline "o"}}{{#*inline "i"}}{{#> o}}{{/o}}{{/inline}}{{> i}}{{/inline}}{{> o}}"#;
        assert!(render_err(nested).contains("includes itself"));
        let e = check_err(r#"{{> (lookup contact "name")}}"#);
        assert!(e.contains("written out"), "{e}");
        assert!(check_err(r#"{{#*inline contact.name}}x{{/inline}}"#).contains("quoted"));
        // Partials that do not recurse still work.
        let ok = r#"{{#*inline "hi"}}Hi {{first_name contact.name}}{{/inline}}{{> hi}}, {{> hi}}"#;
        assert_eq!(
            Renderer::new().render(ok, &sample()).ok().as_deref(),
            Some("Hi Maria, Hi Maria")
        );
        assert!(Renderer::new().check(ok).is_ok());
    }

    #[test]
    fn nesting_is_bounded_before_parsing_and_before_rendering() {
        let ok = format!("{}x{}", "{{#if true}}".repeat(30), "{{/if}}".repeat(30));
        assert_eq!(
            Renderer::new().render(&ok, &sample()).ok().as_deref(),
            Some("x")
        );
        let deep = format!(
            "{}x{}",
            "{{#if true}}".repeat(1_200),
            "{{/if}}".repeat(1_200)
        );
        assert!(render_err(&deep).contains("nested more than 32 deep"));
        // Subexpressions: the parser recurses, so they are refused before it runs.
        let parens = format!(
            "{{{{upper {}x{}}}}}",
            "(upper ".repeat(3_000),
            ")".repeat(3_000)
        );
        assert!(render_err(&parens).contains("brackets are nested more than 64"));
        let parens = format!("{{{{upper {}x{}}}}}", "(upper ".repeat(40), ")".repeat(40));
        assert!(render_err(&parens).contains("nested more than 32 deep"));
        let arrays = format!("{{{{upper {}1{}}}}}", "[".repeat(5_000), "]".repeat(5_000));
        assert!(render_err(&arrays).contains("brackets are nested"));
        // A chain of partials counts too.
        let chain: String = (0..40)
            .map(|i| {
                format!(
                    "{{{{#*inline \"p{i}\"}}}}{{{{> p{}}}}}{{{{/inline}}}}",
                    i + 1
                )
            })
            .collect::<String>()
            + "{{#*inline \"p40\"}}x{{/inline}}{{> p0}}";
        assert!(render_err(&chain).contains("nested more than 32 deep"));
    }

    #[test]
    fn a_fan_out_is_refused_before_it_renders() {
        // 10^6 inclusions of a 1 KB text: a gigabyte if rendered.
        let bomb = fan_out(&"x".repeat(1_000), 10, 6);
        let started = Instant::now();
        let e = render_err(&bomb);
        assert!(e.contains("too much work"), "{e}");
        assert!(check_err(&bomb).contains("too much work"));
        // The same with nothing to print, and with loops instead of partials.
        assert!(render_err(&fan_out("", 10, 6)).contains("too much work"));
        let loops = format!("{}x{}", "{{#each @root}}".repeat(8), "{{/each}}".repeat(8));
        assert!(render_err(&loops).contains("too much work"));
        // Lists written in the template count like lists in the context.
        let list = format!("[{}1]", "1,".repeat(3_000));
        let literal = format!("{{{{#each {list}}}}}{{{{#each {list}}}}}{{{{/each}}}}{{{{/each}}}}");
        assert!(
            render_err(&literal).contains("too much work"),
            "{}",
            render_err(&literal)
        );
        assert!(started.elapsed() < Duration::from_secs(1));
        // A ~20 KB fan-out built to fit the work limit stops at the output limit.
        let wide = fan_out(&"y".repeat(2_000), 8, 2);
        let e = render_err(&wide);
        assert!(
            e == format!("body: the rendered text is larger than {MAX_RENDERED_BYTES} bytes"),
            "{e}"
        );
        let fits = fan_out(&"z".repeat(1_000), 8, 1);
        assert_eq!(
            Renderer::new()
                .render(&fits, &sample())
                .map(|t| t.len())
                .ok(),
            Some(8_000)
        );
    }

    #[test]
    fn helpers_stop_at_the_time_limit() {
        struct Slow;
        impl HelperDef for Slow {
            fn call<'reg: 'rc, 'rc>(
                &self,
                _: &Helper<'rc>,
                _: &'reg Handlebars<'reg>,
                _: &'rc Context,
                _: &mut RenderContext<'reg, 'rc>,
                out: &mut dyn Output,
            ) -> HelperResult {
                check_render_deadline()?;
                std::thread::sleep(Duration::from_millis(60));
                helper_write(out, "s")
            }
        }
        let r = Renderer::new();
        r.register_helper("slow", Box::new(Slow));
        let started = Instant::now();
        let e = r
            .render(&"{{slow}}".repeat(50), &sample())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(e, "body: rendering took longer than 500 ms");
        assert!(started.elapsed() < Duration::from_millis(700));
        // Checks at save use a placeholder: no plugin runs while saving.
        let started = Instant::now();
        assert!(r.check(&"{{slow}}".repeat(50)).is_ok());
        assert!(started.elapsed() < Duration::from_millis(200));
        // The budget is per render.
        assert_eq!(r.render("{{slow}}", &sample()).ok().as_deref(), Some("s"));
        assert!(render_time_left().is_none());
    }

    #[test]
    fn text_produced_by_helpers_is_bounded_where_the_output_cannot_see_it() {
        struct Big;
        impl HelperDef for Big {
            fn call<'reg: 'rc, 'rc>(
                &self,
                _: &Helper<'rc>,
                _: &'reg Handlebars<'reg>,
                _: &'rc Context,
                _: &mut RenderContext<'reg, 'rc>,
                out: &mut dyn Output,
            ) -> HelperResult {
                helper_write(out, &"b".repeat(300_000))
            }
        }
        let r = Renderer::new();
        r.register_helper("big", Box::new(Big));
        // Subexpressions render helpers into a buffer of their own, not into the output.
        let e = r
            .render(&"{{#if (big)}}{{/if}}".repeat(5), &sample())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(
            e,
            format!("body: helpers produced more than {MAX_HELPER_BYTES} bytes")
        );
        assert!(
            r.render(&"{{#if (big)}}{{/if}}".repeat(3), &sample())
                .is_ok()
        );
    }

    #[test]
    fn helpers_cannot_write_to_the_server_log() {
        let e = check_err("{{log \"hello from a template\"}}");
        assert!(e.contains("log helper is not available"), "{e}");
        assert!(render_err("{{log contact.email}}").contains("not available"));
    }

    #[test]
    fn a_template_that_cannot_render_with_a_sample_chat_is_refused_at_save() {
        let e = check_err("Hi {{contact.nmae}}");
        assert!(
            e.starts_with("body: cannot render with a sample chat") && e.contains("contact.nmae"),
            "{e}"
        );
        // The side an optional variable leaves empty is tried as well.
        let e = check_err("{{#if contact.email}}{{contact.email}}{{else}}{{contact.emial}}{{/if}}");
        assert!(e.contains("contact.emial"), "{e}");
        assert!(check_err("{{unknown_helper 1}}").contains("unknown_helper"));
        assert!(check_err(r#"{{> missing}}"#).contains("missing"));
        // Every documented variable renders.
        let all = "{{contact.id}} {{contact.name}} {{contact.first_name}} {{contact.email}} \
                   {{contact.phone}} {{operator.id}} {{operator.name}} {{operator.first_name}} \
                   {{operator.username}} {{operator.email}} {{operator.locale}} {{chat.id}} \
                   {{chat.started_at}} {{chat.status}} {{channel.id}} {{channel.name}} \
                   {{channel.kind}} {{queue.id}} {{queue.name}} {{now.iso}} \
                   {{now.utc_offset_minutes}} {{date}} {{upper queue.name}} {{lower queue.name}} \
                   {{default contact.email \"-\"}} {{first_name operator.name}}";
        assert_eq!(check_err(all), "");
        // Parse errors stay short even for a long line.
        let e = check_err(&format!("{{{{#if {}", "a ".repeat(5_000)));
        assert!(e.len() < 600, "{}", e.len());
    }

    #[test]
    fn limits_are_per_render_and_cleared_after_errors() {
        let r = Renderer::new();
        assert!(r.render(&fan_out("", 10, 6), &sample()).is_err());
        assert!(
            r.render(&fan_out(&"y".repeat(2_000), 8, 2), &sample())
                .is_err()
        );
        assert!(render_time_left().is_none());
        assert_eq!(
            r.render("ok {{queue.name}}", &sample()).ok().as_deref(),
            Some("ok Support")
        );
    }

    /// `levels` nested `#each` over the root object.
    fn root_loops(levels: usize, body: &str) -> String {
        let open: String = (0..levels)
            .map(|l| format!("{{{{#each {}this}}}}", "../".repeat(l)))
            .collect();
        format!("{open}{body}{}", "{{/each}}".repeat(levels))
    }

    /// Runs check and render, and returns how long the slower took.
    fn check_and_render(r: &Renderer, body: &str) -> Duration {
        let started = Instant::now();
        let _ = r.check(body);
        let check = started.elapsed();
        let started = Instant::now();
        let _ = r.render(body, &sample());
        check.max(started.elapsed())
    }

    #[test]
    fn the_most_work_allowed_renders_well_within_a_second() {
        let r = Renderer::new();
        let mut shapes = vec![
            // Partial expansions with nothing to print: as many as the limit allows.
            fan_out("", 14, 3),
            fan_out("{{contact.name}}", 6, 4),
            // Loops: nested #each over the root's six keys.
            root_loops(6, "{{@key}}"),
            root_loops(5, "{{upper (lower (default contact.email contact.name))}}"),
            // Partials with hash arguments inside loops.
            root_loops(
                3,
                "{{#*inline \"h\"}}{{#each this}}{{@key}}{{/each}}{{/inline}}{{> h a=1 b=2 c=3 d=4}}",
            ),
            // A long flat template of helpers.
            "{{upper (lower contact.name)}}{{lookup contact \"name\"}}".repeat(350),
        ];
        shapes.push(format!("{}{}", shapes[0], shapes[2]));
        for body in &shapes {
            assert!(body.len() <= MAX_TEMPLATE_BYTES, "{}", body.len());
            let took = check_and_render(&r, body);
            assert!(
                took < Duration::from_millis(900),
                "{took:?} for {body:.120}"
            );
        }
    }

    /// Fragments random templates are made of: valid pieces, pieces of pieces, and bombs.
    const FRAGMENTS: &[&str] = &[
        "Hello, ",
        "x",
        " ",
        "\n",
        "{{contact.name}}",
        "{{first_name contact.name}}",
        "{{operator.first_name}}",
        "{{#if contact.email}}",
        "{{else}}",
        "{{/if}}",
        "{{#unless chat.id}}",
        "{{/unless}}",
        "{{#each @root}}",
        "{{#each this}}",
        "{{@key}}",
        "{{/each}}",
        "{{#with contact}}",
        "{{name}}",
        "{{/with}}",
        "{{#*inline \"a\"}}",
        "{{#*inline \"b\"}}",
        "{{/inline}}",
        "{{> a}}",
        "{{> b}}",
        "{{#> a}}",
        "{{/a}}",
        "{{> @partial-block}}",
        "{{> a x=1}}",
        "{{upper (lower contact.name)}}",
        "{{default contact.phone \"-\"}}",
        "{{date \"[year]\"}}",
        "{{date \"[nonsense\"}}",
        "{{log \"x\"}}",
        "{{lookup contact \"name\"}}",
        "{{len contact}}",
        "{{#if (eq 1 1)}}",
        "{{{{raw}}}}",
        "{{{{/raw}}}}",
        "{{!-- c --}}",
        "{{~contact.id~}}",
        "{{{queue.name}}}",
        "{{&queue.name}}",
        "{{*inline}}",
        "{{",
        "}}",
        "(",
        ")",
        "[",
        "]",
        "\"",
        "'",
        "#",
        "/",
        ">",
        "*",
        "@",
        "~",
        "^",
        "{{^}}",
        "{{.}}",
        "{{../x}}",
        "{{this}}",
        "{{[contact]}}",
        "{{contact.[name]}}",
        "{{a.b.c.d}}",
        "{{1}}",
        "{{\"s\"}}",
        "{{null}}",
        "{{[1,[2,{\"a\":3}]]}}",
        "{{x as |y|}}",
        "{{#each @root as |v k|}}{{k}}{{/each}}",
    ];

    fn template_strategy() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let pieces = proptest::collection::vec(
            prop_oneof![
                4 => proptest::sample::select(FRAGMENTS).prop_map(str::to_owned),
                1 => "\\PC{0,8}",
                1 => (proptest::sample::select(FRAGMENTS), 1usize..40)
                    .prop_map(|(f, n)| f.repeat(n)),
            ],
            0..60,
        )
        .prop_map(|v| v.concat());
        // Mutations of a valid template: a byte range replaced by random text.
        let valid = "Hello, {{first_name contact.name}}! {{#if contact.email}}We will write to \
                     {{contact.email}}.{{else}}No email.{{/if}} {{#*inline \"sig\"}}{{operator.name}}, \
                     {{upper channel.name}}{{/inline}}{{> sig}} {{#each contact}}{{@key}}={{this}} {{/each}}";
        let mutated = (0..valid.len(), 0usize..12, "\\PC{0,6}").prop_map(move |(at, len, ins)| {
            let mut s = valid.to_owned();
            let mut at = at;
            while !s.is_char_boundary(at) {
                at -= 1;
            }
            let mut end = (at + len).min(s.len());
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s.replace_range(at..end, &ins);
            s
        });
        prop_oneof![3 => pieces, 1 => mutated]
    }

    #[test]
    fn random_templates_never_panic_and_end_quickly() {
        use proptest::strategy::{Strategy, ValueTree};
        use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
        let config = Config {
            cases: 400,
            failure_persistence: None,
            ..Config::default()
        };
        let mut runner =
            TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
        let r = Renderer::new();
        let strategy = template_strategy();
        let mut rendered = 0;
        for _ in 0..400 {
            let Ok(tree) = strategy.new_tree(&mut runner) else {
                continue;
            };
            let body = tree.current();
            let took = check_and_render(&r, &body);
            assert!(took < Duration::from_secs(1), "{took:?} for {body:?}");
            if r.check(&body).is_ok() {
                rendered += 1;
            }
        }
        // The generator reaches valid templates too, not only parse errors.
        assert!(rendered > 20, "{rendered}");
    }
}
