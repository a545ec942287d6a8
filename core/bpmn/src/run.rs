//! The token semantics of a process, as a pure state machine: no I/O, no clock, no storage.
//! The durable engine stores an [`Instance`] and feeds it [`Command`]s, one transaction each;
//! whatever the instance then waits for comes back in a [`Step`] (jobs for service tasks, user
//! tasks, message subscriptions, timers, called processes) together with the tokens that were
//! cancelled (an interrupting boundary event, a terminate end event), whose waits the engine
//! deletes.
//!
//! Covered: none and message start events; service, user and receive tasks; exclusive gateways
//! (conditions in order, then the default); parallel split and join; intermediate timer and
//! message catches; boundary timers (interrupting or not) and boundary errors on activities,
//! with errors propagating outwards through embedded subprocesses; embedded subprocesses; call
//! activities (the engine starts the child); none, terminate and error end events; io mappings.
//!
//! Variables live in one map per instance (no local scopes). When [`apply`] returns an error
//! the instance is left half-changed: the caller discards it (the engine rolls back).
//!
//! The walk is iterative (an explicit work-list, no recursion between entering and leaving
//! elements) and bounded: at most [`MAX_STEPS`] element entries and
//! [`feel::MAX_EVAL_STEPS`] expression work units per command. Expressions are the ones the
//! process compiled at deploy ([`Process::expression`]); nothing is parsed here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::feel;
use crate::{BoundaryTrigger, EndKind, Kind, Process, StartTrigger, Timer};

/// A token waiting at an element.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Token {
    /// Unique within the instance: the element instance's key, part of a job's idempotency key.
    pub id: u64,
    pub element: String,
    /// The token of the embedded subprocess this token runs inside.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u64>,
    /// For a boundary event's token: the activity token it is attached to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attached: Option<u64>,
    /// For a non-interrupting cycle timer's token: how many times the timer fired before.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub fired: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// What a token waits for.
#[derive(Debug, Clone, PartialEq)]
pub enum Wait {
    /// A service task's job, for a worker (a plugin action or a built-in task).
    Job {
        token: u64,
        element: String,
        task_type: String,
        retries: u32,
        headers: BTreeMap<String, String>,
        /// The instance's variables with the task's inputs applied (what Zeebe gives a worker).
        variables: serde_json::Value,
        /// Only the task's mapped inputs (what a plugin action receives as its input).
        inputs: serde_json::Map<String, serde_json::Value>,
    },
    UserTask {
        token: u64,
        element: String,
        name: Option<String>,
        assignee: Option<String>,
        candidate_groups: Option<String>,
        /// JSON Schema of the form that completes the task.
        form: Option<serde_json::Value>,
    },
    Message {
        token: u64,
        element: String,
        name: String,
        correlation_key: Option<String>,
    },
    /// A timer due at Unix milliseconds (an intermediate catch or a boundary timer).
    Timer {
        token: u64,
        element: String,
        due: i64,
    },
    /// A call activity: the engine starts the latest version of `process_id` with `variables`
    /// and completes the token with the child's variables when it completes.
    Call {
        token: u64,
        element: String,
        process_id: String,
        variables: serde_json::Value,
    },
}

impl Wait {
    pub fn token(&self) -> u64 {
        match self {
            Wait::Job { token, .. }
            | Wait::UserTask { token, .. }
            | Wait::Message { token, .. }
            | Wait::Timer { token, .. }
            | Wait::Call { token, .. } => *token,
        }
    }
}

/// What happens to an instance.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Starts at `start` (a start event's id) or, when `None`, at the none start event.
    Start {
        start: Option<String>,
        variables: serde_json::Value,
    },
    /// A job, user task, message or called process completed for the token, with variables.
    Complete {
        token: u64,
        variables: serde_json::Value,
    },
    /// A timer of the token is due.
    FireTimer { token: u64 },
    /// A job or user task threw a BPMN error: caught by the nearest error boundary event.
    Throw {
        token: u64,
        code: String,
        message: String,
    },
}

/// What one command changed, for the engine to persist.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Step {
    /// New waits.
    pub waits: Vec<Wait>,
    /// Tokens removed without completing (their jobs, timers, subscriptions, user tasks and
    /// called instances are cancelled).
    pub cancelled: Vec<u64>,
    /// Element entries the command made (the engine counts them against its budget for a
    /// whole command, called processes included).
    pub entries: usize,
}

/// A process instance's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub variables: serde_json::Map<String, serde_json::Value>,
    pub tokens: Vec<Token>,
    /// Arrivals at parallel joins: gateway id → incoming flows already taken.
    #[serde(default)]
    pub joins: BTreeMap<String, Vec<String>>,
    pub next_id: u64,
    pub completed: bool,
    /// Elements completed, in order (the history).
    #[serde(default)]
    pub history: Vec<String>,
}

/// Element entries one command may make (a token entering a gateway, task, event or
/// subprocess counts one). Deploy refuses loops without a wait state, so only a very large
/// fan-out (a parallel split feeding splits) comes near; past it the command fails with
/// [`RunError::Budget`] and changes nothing (the engine raises an incident).
pub const MAX_STEPS: usize = 10_000;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RunError {
    #[error(
        "`{element}`: the command entered more than {limit} elements without reaching a wait state (a loop or a very large fan-out)"
    )]
    Budget { element: String, limit: usize },
    #[error("the token walk failed unexpectedly: {0}")]
    Panic(String),
    #[error("`{0}`: no outgoing flow's condition is true and there is no default flow")]
    NoPath(String),
    #[error("no token {0} is waiting in this instance")]
    UnknownToken(u64),
    #[error("`{element}`: {message}")]
    Element { element: String, message: String },
    #[error("`{element}`: error `{code}` is not caught by any error boundary event: {message}")]
    Unhandled {
        element: String,
        code: String,
        message: String,
    },
    #[error("the instance has completed")]
    Completed,
}

impl Instance {
    fn vars(&self) -> serde_json::Value {
        serde_json::Value::Object(self.variables.clone())
    }

    fn merge(&mut self, v: &serde_json::Value) {
        if let Some(o) = v.as_object() {
            for (k, v) in o {
                self.variables.insert(k.clone(), v.clone());
            }
        }
    }

    fn token(&self, id: u64) -> Result<&Token, RunError> {
        self.tokens
            .iter()
            .find(|t| t.id == id)
            .ok_or(RunError::UnknownToken(id))
    }

    fn take(&mut self, id: u64) -> Result<Token, RunError> {
        let i = self
            .tokens
            .iter()
            .position(|t| t.id == id)
            .ok_or(RunError::UnknownToken(id))?;
        Ok(self.tokens.remove(i))
    }

    fn new_token(&mut self, element: &str, scope: Option<u64>, attached: Option<u64>) -> u64 {
        self.next_id += 1;
        self.tokens.push(Token {
            id: self.next_id,
            element: element.to_owned(),
            scope,
            attached,
            fired: 0,
        });
        self.next_id
    }
}

/// What the walk does next. Each item finishes before the items it pushes, which run before
/// the items below it: the order of the recursive walk it replaces (depth first, flows in
/// their order).
enum Work {
    /// The element completed: take its outgoing flows.
    Leave { element: String, scope: Option<u64> },
    /// A token arrives at `element` over `flow`.
    Enter {
        flow: String,
        element: String,
        scope: Option<u64>,
    },
    /// A path in the scope ended.
    ScopeDone(Option<u64>),
}

struct Cx<'a> {
    p: &'a Process,
    now: i64,
    step: Step,
    work: Vec<Work>,
    /// Element entries so far.
    steps: usize,
    /// Element entries allowed (at most [`MAX_STEPS`]).
    limit: usize,
    /// Expression work units left.
    feel: usize,
}

/// Applies one command; returns the new waits and the cancelled tokens.
///
/// A panic inside the walk (a bug) is caught and returned as [`RunError::Panic`]: the
/// caller discards the instance as for any error, and the server carries on.
pub fn apply(p: &Process, inst: &mut Instance, cmd: Command, now: i64) -> Result<Step, RunError> {
    apply_within(p, inst, cmd, now, MAX_STEPS)
}

/// [`apply`] with at most `entries` element entries (capped at [`MAX_STEPS`]): the engine
/// passes what is left of its budget for the whole command. Past it the command fails with
/// [`RunError::Budget`] naming `MAX_STEPS` (the budget of a command, whose called processes
/// share it).
pub fn apply_within(
    p: &Process,
    inst: &mut Instance,
    cmd: Command,
    now: i64,
    entries: usize,
) -> Result<Step, RunError> {
    let limit = entries.min(MAX_STEPS);
    let mut copy = std::panic::AssertUnwindSafe(&mut *inst);
    std::panic::catch_unwind(move || apply_inner(p, &mut copy, cmd, now, limit)).unwrap_or_else(
        |e| {
            let why = e
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| e.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            Err(RunError::Panic(why))
        },
    )
}

fn apply_inner(
    p: &Process,
    inst: &mut Instance,
    cmd: Command,
    now: i64,
    limit: usize,
) -> Result<Step, RunError> {
    if inst.completed {
        return Err(RunError::Completed);
    }
    let mut cx = Cx {
        p,
        now,
        step: Step::default(),
        work: Vec::new(),
        steps: 0,
        limit,
        feel: feel::MAX_EVAL_STEPS,
    };
    match cmd {
        Command::Start { start, variables } => {
            inst.merge(&variables);
            let start = match &start {
                Some(id) => p
                    .elements
                    .get(id)
                    .filter(|e| e.parent.is_none() && matches!(e.kind, Kind::StartEvent(_))),
                None => p
                    .elements
                    .values()
                    .find(|e| e.parent.is_none() && e.kind == Kind::StartEvent(StartTrigger::None)),
            }
            .ok_or_else(|| RunError::Element {
                element: start.clone().unwrap_or_else(|| p.id.clone()),
                message: match &start {
                    Some(_) => "is not a start event of the process".into(),
                    None => "has no none start event".into(),
                },
            })?;
            inst.history.push(start.id.clone());
            cx.leave(&start.id, None);
        }
        Command::Complete { token, variables } => {
            let t = inst.token(token)?.clone();
            let e = element(p, &t.element)?;
            if t.attached.is_some() || matches!(e.kind, Kind::SubProcess { .. }) {
                return Err(RunError::UnknownToken(token));
            }
            inst.take(token)?;
            // Outputs map the completion's variables; without mappings they merge as they are.
            if e.io.outputs.is_empty() {
                inst.merge(&variables);
            } else {
                let mut scope = inst.vars();
                if let (Some(s), Some(v)) = (scope.as_object_mut(), variables.as_object()) {
                    for (k, x) in v {
                        s.insert(k.clone(), x.clone());
                    }
                }
                for (src, target) in &e.io.outputs {
                    let v = eval(&mut cx, src, &scope, &e.id)?;
                    inst.variables.insert(target.clone(), v);
                }
            }
            drop_boundaries(&mut cx, inst, token);
            inst.history.push(t.element.clone());
            cx.leave(&t.element, t.scope);
        }
        Command::FireTimer { token } => {
            let t = inst.token(token)?.clone();
            match &element(p, &t.element)?.kind {
                Kind::IntermediateTimer(_) => {
                    inst.take(token)?;
                    inst.history.push(t.element.clone());
                    cx.leave(&t.element, t.scope);
                }
                Kind::BoundaryEvent {
                    interrupting,
                    trigger: BoundaryTrigger::Timer(timer),
                    ..
                } => {
                    inst.take(token)?;
                    if *interrupting && let Some(activity) = t.attached {
                        cancel(&mut cx, inst, activity);
                    }
                    // A non-interrupting cycle (`R3/PT10M`, `R/PT1H`) fires again after its
                    // interval while the activity lasts, up to its repetitions.
                    if !*interrupting
                        && let Some(activity) = t.attached
                        && let Timer::Cycle(_) = timer
                    {
                        let (repeat, every) = cycle_of(&mut cx, timer, inst, &t.element)?;
                        let fired = t.fired + 1;
                        if repeat.is_none_or(|r| fired < r) {
                            let next = inst.new_token(&t.element, t.scope, Some(activity));
                            if let Some(n) = inst.tokens.last_mut() {
                                n.fired = fired;
                            }
                            let due = after(cx.now, every, &t.element)?;
                            cx.step.waits.push(Wait::Timer {
                                token: next,
                                element: t.element.clone(),
                                due,
                            });
                        }
                    }
                    inst.history.push(t.element.clone());
                    cx.leave(&t.element, t.scope);
                }
                _ => return Err(RunError::UnknownToken(token)),
            }
        }
        Command::Throw {
            token,
            code,
            message,
        } => {
            let t = inst.token(token)?;
            if t.attached.is_some() {
                return Err(RunError::UnknownToken(token));
            }
            throw(&mut cx, inst, token, &code, &message)?;
        }
    }
    walk(&mut cx, inst)?;
    cx.step.entries = cx.steps;
    // Waits of tokens that were created and cancelled within this step never reach the engine.
    let alive: std::collections::HashSet<u64> = inst.tokens.iter().map(|t| t.id).collect();
    cx.step.waits.retain(|w| alive.contains(&w.token()));
    if inst.tokens.is_empty() {
        inst.completed = true;
        inst.joins.clear();
    }
    Ok(cx.step)
}

impl Cx<'_> {
    fn leave(&mut self, element: &str, scope: Option<u64>) {
        self.work.push(Work::Leave {
            element: element.to_owned(),
            scope,
        });
    }
}

/// Runs the work-list to its end, within the step budget.
fn walk(cx: &mut Cx, inst: &mut Instance) -> Result<(), RunError> {
    while let Some(w) = cx.work.pop() {
        match w {
            Work::Leave { element, scope } => leave(cx, inst, &element, scope)?,
            Work::Enter {
                flow,
                element,
                scope,
            } => {
                cx.steps += 1;
                if cx.steps > cx.limit {
                    return Err(RunError::Budget {
                        element,
                        limit: MAX_STEPS,
                    });
                }
                enter(cx, inst, &flow, &element, scope)?;
            }
            Work::ScopeDone(scope) => scope_done(cx, inst, scope)?,
        }
    }
    Ok(())
}

/// An element of the process (a missing one means a corrupt state, not a panic).
fn element<'a>(p: &'a Process, id: &str) -> Result<&'a crate::Element, RunError> {
    p.elements.get(id).ok_or_else(|| RunError::Element {
        element: id.to_owned(),
        message: "is not an element of this process version".into(),
    })
}

/// `now + ms`, or an error naming the element when it leaves the date range.
fn after(now: i64, ms: i64, element: &str) -> Result<i64, RunError> {
    now.checked_add(ms)
        .filter(|t| t.abs() <= feel::MAX_DATETIME_MS)
        .ok_or_else(|| RunError::Element {
            element: element.into(),
            message: "the timer's due date is beyond the year 9999".into(),
        })
}

/// Evaluates a mapping or key: an expression (`=…`, compiled at deploy) or a literal text.
fn eval(
    cx: &mut Cx,
    src: &str,
    vars: &serde_json::Value,
    element: &str,
) -> Result<serde_json::Value, RunError> {
    if !src.starts_with('=') {
        return Ok(serde_json::Value::String(src.to_owned()));
    }
    compiled(cx.p, src, element)?
        .eval_budget(vars, cx.now, &mut cx.feel)
        .map(|v| v.to_json())
        .map_err(|m| RunError::Element {
            element: element.into(),
            message: m,
        })
}

fn compiled<'a>(
    p: &'a Process,
    src: &str,
    element: &str,
) -> Result<&'a feel::Expression, RunError> {
    p.expression(src).ok_or_else(|| RunError::Element {
        element: element.into(),
        message: format!("expression `{src}` was not compiled at deploy"),
    })
}

/// Removes the boundary tokens attached to an activity token (it completed or was cancelled).
fn drop_boundaries(cx: &mut Cx, inst: &mut Instance, activity: u64) {
    inst.tokens.retain(|t| {
        if t.attached == Some(activity) {
            cx.step.cancelled.push(t.id);
            false
        } else {
            true
        }
    });
}

/// Cancels an activity token with everything inside it (a subprocess's tokens) and its
/// boundary tokens.
fn cancel(cx: &mut Cx, inst: &mut Instance, token: u64) {
    let mut doomed = vec![token];
    let mut seen: std::collections::HashSet<u64> = std::collections::HashSet::from([token]);
    let mut i = 0;
    while i < doomed.len() {
        let t = doomed[i];
        for x in inst
            .tokens
            .iter()
            .filter(|x| x.scope == Some(t) || x.attached == Some(t))
        {
            if seen.insert(x.id) {
                doomed.push(x.id);
            }
        }
        i += 1;
    }
    // Joins inside a cancelled subprocess forget their arrivals.
    let p = cx.p;
    for t in inst.tokens.iter().filter(|t| seen.contains(&t.id)) {
        if p.elements
            .get(&t.element)
            .is_some_and(|e| matches!(e.kind, Kind::SubProcess { .. }))
        {
            let sub = t.element.clone();
            inst.joins
                .retain(|g, _| p.elements.get(g).and_then(|e| e.parent.as_deref()) != Some(&sub));
        }
    }
    inst.tokens.retain(|t| !seen.contains(&t.id));
    cx.step.cancelled.extend(doomed);
}

/// A BPMN error thrown at `token`: the nearest error boundary event that catches the code, on
/// the activity or on an enclosing subprocess, interrupts it and continues.
fn throw(
    cx: &mut Cx,
    inst: &mut Instance,
    token: u64,
    code: &str,
    message: &str,
) -> Result<(), RunError> {
    let origin = inst.token(token)?.element.clone();
    let mut current = Some(token);
    while let Some(tid) = current {
        let t = inst.token(tid)?.clone();
        let catches = |exact: bool| {
            cx.p.elements.values().find(|b| {
                matches!(&b.kind, Kind::BoundaryEvent { attached_to, trigger: BoundaryTrigger::Error(c), .. }
                    if *attached_to == t.element
                        && if exact { c.as_deref() == Some(code) } else { c.is_none() })
            })
        };
        if let Some(b) = catches(true).or_else(|| catches(false)) {
            let b = b.id.clone();
            let before = cx.step.cancelled.len();
            cancel(cx, inst, tid);
            let gone: std::collections::HashSet<u64> =
                cx.step.cancelled[before..].iter().copied().collect();
            drop_work_in(cx, &gone);
            inst.variables.insert(
                "error".into(),
                serde_json::json!({"code": code, "message": message, "element": origin}),
            );
            inst.history.push(b.clone());
            cx.leave(&b, t.scope);
            return Ok(());
        }
        current = t.scope;
    }
    Err(RunError::Unhandled {
        element: origin,
        code: code.to_owned(),
        message: message.to_owned(),
    })
}

/// Drops the queued work of ended scopes: a parallel branch still queued inside a subprocess
/// that a terminate or error end event ended must not enter anything afterwards.
fn drop_work_in(cx: &mut Cx, scopes: &std::collections::HashSet<u64>) {
    cx.work.retain(|w| {
        let (Work::Leave { scope, .. } | Work::Enter { scope, .. } | Work::ScopeDone(scope)) = w;
        !scope.is_some_and(|s| scopes.contains(&s))
    });
}

/// Takes the outgoing flows of a completed element.
fn leave(
    cx: &mut Cx,
    inst: &mut Instance,
    element_id: &str,
    scope: Option<u64>,
) -> Result<(), RunError> {
    let p = cx.p;
    let e = element(p, element_id)?;
    let outgoing: Vec<_> = p.outgoing(element_id).collect();
    let chosen: Vec<(String, String)> = match &e.kind {
        Kind::ExclusiveGateway { default } => {
            let mut hit = None;
            for f in outgoing
                .iter()
                .filter(|f| default.as_deref() != Some(f.id.as_str()))
            {
                let Some(c) = f.condition.as_deref() else {
                    continue;
                };
                // A condition that cannot be evaluated is an error (an incident), not `false`.
                let yes = compiled(p, c, &f.id)?
                    .eval_map(&inst.variables, cx.now, &mut cx.feel)
                    .map_err(|m| RunError::Element {
                        element: f.id.clone(),
                        message: m,
                    })?
                    == feel::Value::Bool(true);
                if yes {
                    hit = Some(f);
                    break;
                }
            }
            match (hit, default) {
                (Some(f), _) => vec![(f.id.clone(), f.target.clone())],
                (None, Some(d)) => match p.flows.get(d) {
                    Some(f) => vec![(d.clone(), f.target.clone())],
                    None => return Err(RunError::NoPath(element_id.into())),
                },
                (None, None) if outgoing.is_empty() => vec![],
                (None, None) => return Err(RunError::NoPath(element_id.into())),
            }
        }
        _ => outgoing
            .iter()
            .map(|f| (f.id.clone(), f.target.clone()))
            .collect(),
    };
    if chosen.is_empty() {
        // An element without outgoing flows ends its path (BPMN's implicit end).
        cx.work.push(Work::ScopeDone(scope));
        return Ok(());
    }
    // Reversed: the first flow's walk runs first.
    for (flow, target) in chosen.into_iter().rev() {
        cx.work.push(Work::Enter {
            flow,
            element: target,
            scope,
        });
    }
    Ok(())
}

/// A path in `scope` ended: when it was the last one, the subprocess completes.
fn scope_done(cx: &mut Cx, inst: &mut Instance, scope: Option<u64>) -> Result<(), RunError> {
    let Some(sub) = scope else {
        return Ok(());
    };
    if inst.tokens.iter().any(|t| t.scope == Some(sub)) {
        return Ok(());
    }
    // Already completed by an earlier path's end in this command.
    if !inst.tokens.iter().any(|t| t.id == sub) {
        return Ok(());
    }
    let t = inst.take(sub)?;
    drop_boundaries(cx, inst, sub);
    inst.history.push(t.element.clone());
    cx.leave(&t.element, t.scope);
    Ok(())
}

fn due_of(cx: &mut Cx, t: &Timer, inst: &Instance, element: &str) -> Result<i64, RunError> {
    let now = cx.now;
    let mut value = |d: &str| -> Result<Option<String>, RunError> {
        if d.starts_with('=') {
            Ok(eval(cx, d, &inst.vars(), element)?
                .as_str()
                .map(str::to_owned))
        } else {
            Ok(Some(d.to_owned()))
        }
    };
    let bad = |message: String| RunError::Element {
        element: element.into(),
        message,
    };
    match t {
        Timer::Duration(d) => match value(d)? {
            Some(text) => match feel::duration_checked(&text).map_err(bad)? {
                Some(ms) => Some(after(now, ms, element)?),
                None => None,
            },
            None => None,
        },
        Timer::Date(d) => value(d)?.as_deref().and_then(feel::parse_datetime),
        // A cycle first fires after one interval (and, non-interrupting, again: see FireTimer).
        Timer::Cycle(_) => Some(after(now, cycle_of(cx, t, inst, element)?.1, element)?),
    }
    .ok_or_else(|| RunError::Element {
        element: element.into(),
        message: "the timer has no valid due date".into(),
    })
}

/// A cycle's repetitions (`None`: unbounded, `R/…`) and interval in milliseconds.
fn cycle_of(
    cx: &mut Cx,
    t: &Timer,
    inst: &Instance,
    element: &str,
) -> Result<(Option<u32>, i64), RunError> {
    let bad = |message: String| RunError::Element {
        element: element.into(),
        message,
    };
    let Timer::Cycle(c) = t else {
        return Err(bad("the timer is not a cycle".into()));
    };
    let text = if c.starts_with('=') {
        eval(cx, c, &inst.vars(), element)?
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| bad(format!("the cycle `{c}` is not a text")))?
    } else {
        c.clone()
    };
    crate::parse_cycle(&text)
        .ok_or_else(|| bad(format!("`{text}` is not a cycle like R3/PT10M or R/PT1H")))
}

/// Creates an activity's token and the tokens of its boundary timers.
fn activity(
    cx: &mut Cx,
    inst: &mut Instance,
    element: &str,
    scope: Option<u64>,
) -> Result<u64, RunError> {
    let id = inst.new_token(element, scope, None);
    let p = cx.p;
    let attached = p.boundaries.get(element).into_iter().flatten();
    for b in attached.filter_map(|b| p.elements.get(b)) {
        if let Kind::BoundaryEvent {
            attached_to,
            trigger: BoundaryTrigger::Timer(t),
            ..
        } = &b.kind
            && attached_to == element
        {
            let due = due_of(cx, t, inst, &b.id)?;
            let bt = inst.new_token(&b.id, scope, Some(id));
            cx.step.waits.push(Wait::Timer {
                token: bt,
                element: b.id.clone(),
                due,
            });
        }
    }
    Ok(id)
}

fn correlation(
    cx: &mut Cx,
    key: &Option<String>,
    inst: &Instance,
    element: &str,
) -> Result<Option<String>, RunError> {
    let Some(k) = key else { return Ok(None) };
    let v = eval(cx, k, &inst.vars(), element)?;
    Ok(match v {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s),
        other => Some(other.to_string()),
    })
}

/// A token arrives at `element` over `flow`.
fn enter(
    cx: &mut Cx,
    inst: &mut Instance,
    flow: &str,
    element_id: &str,
    scope: Option<u64>,
) -> Result<(), RunError> {
    let p = cx.p;
    let e = element(p, element_id)?;
    let element = element_id;
    match &e.kind {
        Kind::ServiceTask {
            task_type,
            retries,
            headers,
        } => {
            let mut vars = inst.vars();
            let all = vars.clone();
            let mut inputs = serde_json::Map::new();
            for (src, target) in &e.io.inputs {
                let v = eval(cx, src, &all, &e.id)?;
                inputs.insert(target.clone(), v.clone());
                if let Some(o) = vars.as_object_mut() {
                    o.insert(target.clone(), v);
                }
            }
            // The boundary timers' tokens come after the task's, so a job's token is stable.
            let token = activity(cx, inst, element, scope)?;
            cx.step.waits.push(Wait::Job {
                token,
                element: element.into(),
                task_type: task_type.clone(),
                retries: *retries,
                headers: headers.clone(),
                variables: vars,
                inputs,
            });
        }
        Kind::UserTask {
            assignee,
            candidate_groups,
            form,
            ..
        } => {
            let vars = inst.vars();
            let assignee = match assignee {
                Some(a) => match eval(cx, a, &vars, &e.id)? {
                    serde_json::Value::String(s) => Some(s),
                    serde_json::Value::Null => None,
                    other => Some(other.to_string()),
                },
                None => None,
            };
            let candidate_groups = match candidate_groups {
                Some(g) if g.starts_with('=') => match eval(cx, g, &vars, &e.id)? {
                    serde_json::Value::String(s) => Some(s),
                    serde_json::Value::Array(a) => Some(
                        a.iter()
                            .filter_map(|x| x.as_str())
                            .collect::<Vec<_>>()
                            .join(","),
                    ),
                    _ => None,
                },
                other => other.clone(),
            };
            let token = activity(cx, inst, element, scope)?;
            cx.step.waits.push(Wait::UserTask {
                token,
                element: element.into(),
                name: e.name.clone(),
                assignee,
                candidate_groups,
                form: form.clone(),
            });
        }
        Kind::ReceiveTask {
            message,
            correlation_key,
        }
        | Kind::IntermediateMessage {
            message,
            correlation_key,
        } => {
            let key = correlation(cx, correlation_key, inst, &e.id)?;
            let token = if matches!(e.kind, Kind::ReceiveTask { .. }) {
                activity(cx, inst, element, scope)?
            } else {
                inst.new_token(element, scope, None)
            };
            cx.step.waits.push(Wait::Message {
                token,
                element: element.into(),
                name: message.clone(),
                correlation_key: key,
            });
        }
        Kind::IntermediateTimer(t) => {
            let due = due_of(cx, t, inst, element)?;
            let token = inst.new_token(element, scope, None);
            cx.step.waits.push(Wait::Timer {
                token,
                element: element.into(),
                due,
            });
        }
        Kind::SubProcess { .. } => {
            let sub = activity(cx, inst, element, scope)?;
            let start = p
                .elements
                .values()
                .find(|x| {
                    x.parent.as_deref() == Some(element)
                        && x.kind == Kind::StartEvent(StartTrigger::None)
                })
                .ok_or_else(|| RunError::Element {
                    element: element.into(),
                    message: "has no none start event".into(),
                })?;
            inst.history.push(start.id.clone());
            cx.leave(&start.id, Some(sub));
        }
        Kind::CallActivity { process_id } => {
            let mut vars = inst.vars();
            let all = vars.clone();
            for (src, target) in &e.io.inputs {
                let v = eval(cx, src, &all, &e.id)?;
                if let Some(o) = vars.as_object_mut() {
                    o.insert(target.clone(), v);
                }
            }
            let token = activity(cx, inst, element, scope)?;
            cx.step.waits.push(Wait::Call {
                token,
                element: element.into(),
                process_id: process_id.clone(),
                variables: vars,
            });
        }
        Kind::ExclusiveGateway { .. } => {
            inst.history.push(element.into());
            cx.leave(element, scope);
        }
        Kind::ParallelGateway => {
            let incoming = p.incoming_count(element);
            let arrived = inst.joins.entry(element.to_owned()).or_default();
            if !arrived.iter().any(|f| f == flow) {
                arrived.push(flow.to_owned());
            }
            if arrived.len() >= incoming {
                inst.joins.remove(element);
                inst.history.push(element.into());
                cx.leave(element, scope);
            }
        }
        Kind::EndEvent(EndKind::None) => {
            inst.history.push(element.into());
            cx.work.push(Work::ScopeDone(scope));
        }
        Kind::EndEvent(EndKind::Terminate) => {
            inst.history.push(element.into());
            match scope {
                // Terminates the instance: every token goes, and nothing else of this
                // command's walk runs.
                None => {
                    let all: Vec<u64> = inst.tokens.iter().map(|t| t.id).collect();
                    cx.step.cancelled.extend(all);
                    inst.tokens.clear();
                    inst.joins.clear();
                    cx.step.waits.clear();
                    cx.work.clear();
                }
                // Terminates the subprocess, which then completes.
                Some(sub) => {
                    let inner: Vec<u64> = inst
                        .tokens
                        .iter()
                        .filter(|t| t.scope == Some(sub))
                        .map(|t| t.id)
                        .collect();
                    let before = cx.step.cancelled.len();
                    for t in inner {
                        if inst.tokens.iter().any(|x| x.id == t) {
                            cancel(cx, inst, t);
                        }
                    }
                    let cancelled = cx.step.cancelled.clone();
                    cx.step.waits.retain(|w| !cancelled.contains(&w.token()));
                    let mut gone: std::collections::HashSet<u64> =
                        cx.step.cancelled[before..].iter().copied().collect();
                    gone.insert(sub);
                    drop_work_in(cx, &gone);
                    cx.work.push(Work::ScopeDone(scope));
                }
            }
        }
        Kind::EndEvent(EndKind::Error(code)) => {
            inst.history.push(element.into());
            match scope {
                Some(sub) => {
                    let before = cx.step.cancelled.len();
                    throw(cx, inst, sub, code, "error end event")?;
                    let cancelled: std::collections::HashSet<u64> =
                        cx.step.cancelled[before..].iter().copied().collect();
                    cx.step.waits.retain(|w| !cancelled.contains(&w.token()));
                }
                None => {
                    return Err(RunError::Unhandled {
                        element: element.into(),
                        code: code.clone(),
                        message: "error end event".into(),
                    });
                }
            }
        }
        other => {
            return Err(RunError::Element {
                element: element.into(),
                message: format!("a sequence flow may not lead to a {other:?}"),
            });
        }
    }
    Ok(())
}
