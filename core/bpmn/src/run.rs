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

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RunError {
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

struct Cx<'a> {
    p: &'a Process,
    now: i64,
    step: Step,
}

/// Applies one command; returns the new waits and the cancelled tokens.
pub fn apply(p: &Process, inst: &mut Instance, cmd: Command, now: i64) -> Result<Step, RunError> {
    if inst.completed {
        return Err(RunError::Completed);
    }
    let mut cx = Cx {
        p,
        now,
        step: Step::default(),
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
            leave(&mut cx, inst, &start.id, None)?;
        }
        Command::Complete { token, variables } => {
            let t = inst.token(token)?.clone();
            let e = &p.elements[&t.element];
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
                    let v = eval(src, &scope, now, &e.id)?;
                    inst.variables.insert(target.clone(), v);
                }
            }
            drop_boundaries(&mut cx, inst, token);
            inst.history.push(t.element.clone());
            leave(&mut cx, inst, &t.element, t.scope)?;
        }
        Command::FireTimer { token } => {
            let t = inst.token(token)?.clone();
            match &p.elements[&t.element].kind {
                Kind::IntermediateTimer(_) => {
                    inst.take(token)?;
                    inst.history.push(t.element.clone());
                    leave(&mut cx, inst, &t.element, t.scope)?;
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
                        let (repeat, every) = cycle_of(timer, inst, cx.now, &t.element)?;
                        let fired = t.fired + 1;
                        if repeat.is_none_or(|r| fired < r) {
                            let next = inst.new_token(&t.element, t.scope, Some(activity));
                            if let Some(n) = inst.tokens.last_mut() {
                                n.fired = fired;
                            }
                            cx.step.waits.push(Wait::Timer {
                                token: next,
                                element: t.element.clone(),
                                due: cx.now + every,
                            });
                        }
                    }
                    inst.history.push(t.element.clone());
                    leave(&mut cx, inst, &t.element, t.scope)?;
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
    // Waits of tokens that were created and cancelled within this step never reach the engine.
    cx.step
        .waits
        .retain(|w| inst.tokens.iter().any(|t| t.id == w.token()));
    if inst.tokens.is_empty() {
        inst.completed = true;
        inst.joins.clear();
    }
    Ok(cx.step)
}

fn eval(
    src: &str,
    vars: &serde_json::Value,
    now: i64,
    element: &str,
) -> Result<serde_json::Value, RunError> {
    if !src.starts_with('=') {
        return Ok(serde_json::Value::String(src.to_owned()));
    }
    feel::compile(src)
        .map(|e| e.eval(vars, now).to_json())
        .map_err(|m| RunError::Element {
            element: element.into(),
            message: m,
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
    let mut i = 0;
    while i < doomed.len() {
        let t = doomed[i];
        doomed.extend(
            inst.tokens
                .iter()
                .filter(|x| x.scope == Some(t) || x.attached == Some(t))
                .map(|x| x.id),
        );
        i += 1;
    }
    // Joins inside a cancelled subprocess forget their arrivals.
    for id in &doomed {
        if let Some(t) = inst.tokens.iter().find(|t| t.id == *id)
            && matches!(cx.p.elements[&t.element].kind, Kind::SubProcess { .. })
        {
            let sub = t.element.clone();
            let p = cx.p;
            inst.joins
                .retain(|g, _| p.elements.get(g).and_then(|e| e.parent.as_deref()) != Some(&sub));
        }
    }
    inst.tokens.retain(|t| !doomed.contains(&t.id));
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
            cancel(cx, inst, tid);
            inst.variables.insert(
                "error".into(),
                serde_json::json!({"code": code, "message": message, "element": origin}),
            );
            inst.history.push(b.clone());
            return leave(cx, inst, &b, t.scope);
        }
        current = t.scope;
    }
    Err(RunError::Unhandled {
        element: origin,
        code: code.to_owned(),
        message: message.to_owned(),
    })
}

/// Takes the outgoing flows of a completed element.
fn leave(
    cx: &mut Cx,
    inst: &mut Instance,
    element: &str,
    scope: Option<u64>,
) -> Result<(), RunError> {
    let p = cx.p;
    let e = &p.elements[element];
    let outgoing: Vec<_> = p.outgoing(element).collect();
    let chosen: Vec<(String, String)> = match &e.kind {
        Kind::ExclusiveGateway { default } => {
            let vars = inst.vars();
            let hit = outgoing
                .iter()
                .filter(|f| default.as_deref() != Some(f.id.as_str()))
                .find(|f| {
                    f.condition.as_deref().is_some_and(|c| {
                        feel::compile(c)
                            .map(|x| x.truthy(&vars, cx.now))
                            .unwrap_or(false)
                    })
                });
            match (hit, default) {
                (Some(f), _) => vec![(f.id.clone(), f.target.clone())],
                (None, Some(d)) => vec![(d.clone(), p.flows[d].target.clone())],
                (None, None) if outgoing.is_empty() => vec![],
                (None, None) => return Err(RunError::NoPath(element.into())),
            }
        }
        _ => outgoing
            .iter()
            .map(|f| (f.id.clone(), f.target.clone()))
            .collect(),
    };
    if chosen.is_empty() {
        // An element without outgoing flows ends its path (BPMN's implicit end).
        return scope_done(cx, inst, scope);
    }
    for (flow, target) in chosen {
        enter(cx, inst, &flow, &target, scope)?;
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
    let t = inst.take(sub)?;
    drop_boundaries(cx, inst, sub);
    inst.history.push(t.element.clone());
    leave(cx, inst, &t.element, t.scope)
}

fn due_of(t: &Timer, inst: &Instance, now: i64, element: &str) -> Result<i64, RunError> {
    let value = |d: &str| -> Result<Option<String>, RunError> {
        if d.starts_with('=') {
            Ok(eval(d, &inst.vars(), now, element)?
                .as_str()
                .map(str::to_owned))
        } else {
            Ok(Some(d.to_owned()))
        }
    };
    match t {
        Timer::Duration(d) => value(d)?
            .as_deref()
            .and_then(feel::parse_duration)
            .map(|d| now + d),
        Timer::Date(d) => value(d)?.as_deref().and_then(feel::parse_datetime),
        // A cycle first fires after one interval (and, non-interrupting, again: see FireTimer).
        Timer::Cycle(_) => Some(now + cycle_of(t, inst, now, element)?.1),
    }
    .ok_or_else(|| RunError::Element {
        element: element.into(),
        message: "the timer has no valid due date".into(),
    })
}

/// A cycle's repetitions (`None`: unbounded, `R/…`) and interval in milliseconds.
fn cycle_of(
    t: &Timer,
    inst: &Instance,
    now: i64,
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
        eval(c, &inst.vars(), now, element)?
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
    for b in p.elements.values() {
        if let Kind::BoundaryEvent {
            attached_to,
            trigger: BoundaryTrigger::Timer(t),
            ..
        } = &b.kind
            && attached_to == element
        {
            let due = due_of(t, inst, cx.now, &b.id)?;
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
    key: &Option<String>,
    inst: &Instance,
    now: i64,
    element: &str,
) -> Result<Option<String>, RunError> {
    let Some(k) = key else { return Ok(None) };
    let v = eval(k, &inst.vars(), now, element)?;
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
    element: &str,
    scope: Option<u64>,
) -> Result<(), RunError> {
    let p = cx.p;
    let now = cx.now;
    let e = &p.elements[element];
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
                let v = eval(src, &all, now, &e.id)?;
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
                Some(a) => match eval(a, &vars, now, &e.id)? {
                    serde_json::Value::String(s) => Some(s),
                    serde_json::Value::Null => None,
                    other => Some(other.to_string()),
                },
                None => None,
            };
            let candidate_groups = match candidate_groups {
                Some(g) if g.starts_with('=') => match eval(g, &vars, now, &e.id)? {
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
            let key = correlation(correlation_key, inst, now, &e.id)?;
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
            let due = due_of(t, inst, now, element)?;
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
            leave(cx, inst, &start.id, Some(sub))?;
        }
        Kind::CallActivity { process_id } => {
            let mut vars = inst.vars();
            let all = vars.clone();
            for (src, target) in &e.io.inputs {
                let v = eval(src, &all, now, &e.id)?;
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
            leave(cx, inst, element, scope)?;
        }
        Kind::ParallelGateway => {
            let incoming = p.incoming(element).count();
            let arrived = inst.joins.entry(element.to_owned()).or_default();
            if !arrived.iter().any(|f| f == flow) {
                arrived.push(flow.to_owned());
            }
            if arrived.len() >= incoming {
                inst.joins.remove(element);
                inst.history.push(element.into());
                leave(cx, inst, element, scope)?;
            }
        }
        Kind::EndEvent(EndKind::None) => {
            inst.history.push(element.into());
            scope_done(cx, inst, scope)?;
        }
        Kind::EndEvent(EndKind::Terminate) => {
            inst.history.push(element.into());
            match scope {
                // Terminates the instance: every token goes.
                None => {
                    let all: Vec<u64> = inst.tokens.iter().map(|t| t.id).collect();
                    cx.step.cancelled.extend(all);
                    inst.tokens.clear();
                    inst.joins.clear();
                    cx.step.waits.clear();
                }
                // Terminates the subprocess, which then completes.
                Some(sub) => {
                    let inner: Vec<u64> = inst
                        .tokens
                        .iter()
                        .filter(|t| t.scope == Some(sub))
                        .map(|t| t.id)
                        .collect();
                    for t in inner {
                        if inst.tokens.iter().any(|x| x.id == t) {
                            cancel(cx, inst, t);
                        }
                    }
                    let cancelled = cx.step.cancelled.clone();
                    cx.step.waits.retain(|w| !cancelled.contains(&w.token()));
                    scope_done(cx, inst, scope)?;
                }
            }
        }
        Kind::EndEvent(EndKind::Error(code)) => {
            inst.history.push(element.into());
            match scope {
                Some(sub) => {
                    throw(cx, inst, sub, code, "error end event")?;
                    let cancelled = cx.step.cancelled.clone();
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
