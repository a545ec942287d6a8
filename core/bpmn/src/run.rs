//! The token semantics of a process, as a pure state machine: no I/O, no clock, no storage.
//! The durable engine (issue 5) stores an [`Instance`] and feeds it [`Command`]s in one
//! transaction each; whatever the instance then waits for comes back as [`Wait`]s (jobs for
//! service tasks, user tasks, message subscriptions, timers), which the engine persists.
//!
//! Covered here: none start, service/user/receive tasks, exclusive gateways (conditions in
//! order, then the default), parallel split and join, intermediate timer and message catches,
//! none and terminate end events, io mappings. Boundary events, embedded subprocesses and call
//! activities are validated at deploy but not yet run by this module.

use std::collections::BTreeMap;

use crate::feel;
use crate::{EndKind, Kind, Process, StartTrigger, Timer};

/// A token waiting at an element.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    /// Unique within the instance; the element-instance key of a job or subscription.
    pub id: u64,
    pub element: String,
}

/// What a token waits for.
#[derive(Debug, Clone, PartialEq)]
pub enum Wait {
    Job {
        token: u64,
        element: String,
        task_type: String,
        retries: u32,
        variables: serde_json::Value,
    },
    UserTask {
        token: u64,
        element: String,
        assignee: Option<String>,
        candidate_groups: Option<String>,
    },
    Message {
        token: u64,
        element: String,
        name: String,
        correlation_key: Option<String>,
    },
    /// A timer due at unix milliseconds.
    Timer {
        token: u64,
        element: String,
        due: i64,
    },
}

/// What happens to an instance.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Start {
        variables: serde_json::Value,
    },
    /// A job, user task or message completed for the token, with variables to merge.
    Complete {
        token: u64,
        variables: serde_json::Value,
    },
    FireTimer {
        token: u64,
    },
}

/// A process instance's state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Instance {
    pub variables: serde_json::Map<String, serde_json::Value>,
    pub tokens: Vec<Token>,
    /// Arrivals at parallel joins: gateway id → incoming flows already taken.
    pub joins: BTreeMap<String, Vec<String>>,
    pub next_id: u64,
    pub completed: bool,
    /// Elements completed, in order (the history).
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
}

/// Applies one command; returns what the instance waits for afterwards (new waits only).
pub fn apply(
    p: &Process,
    inst: &mut Instance,
    cmd: Command,
    now: i64,
) -> Result<Vec<Wait>, RunError> {
    if inst.completed {
        return Err(RunError::Completed);
    }
    let mut waits = Vec::new();
    match cmd {
        Command::Start { variables } => {
            inst.merge(&variables);
            let start = p
                .elements
                .values()
                .find(|e| e.parent.is_none() && e.kind == Kind::StartEvent(StartTrigger::None))
                .ok_or_else(|| RunError::Element {
                    element: p.id.clone(),
                    message: "has no none start event".into(),
                })?;
            inst.history.push(start.id.clone());
            leave(p, inst, &start.id, now, &mut waits)?;
        }
        Command::Complete { token, variables } => {
            let t = take(inst, token)?;
            let e = &p.elements[&t.element];
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
            inst.history.push(t.element.clone());
            leave(p, inst, &t.element, now, &mut waits)?;
        }
        Command::FireTimer { token } => {
            let t = take(inst, token)?;
            inst.history.push(t.element.clone());
            leave(p, inst, &t.element, now, &mut waits)?;
        }
    }
    if inst.tokens.is_empty() && !inst.completed {
        inst.completed = true;
    }
    Ok(waits)
}

fn take(inst: &mut Instance, token: u64) -> Result<Token, RunError> {
    let i = inst
        .tokens
        .iter()
        .position(|t| t.id == token)
        .ok_or(RunError::UnknownToken(token))?;
    Ok(inst.tokens.remove(i))
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

/// Takes the outgoing flows of a completed element.
fn leave(
    p: &Process,
    inst: &mut Instance,
    element: &str,
    now: i64,
    waits: &mut Vec<Wait>,
) -> Result<(), RunError> {
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
                            .map(|x| x.truthy(&vars, now))
                            .unwrap_or(false)
                    })
                });
            match (hit, default) {
                (Some(f), _) => vec![(f.id.clone(), f.target.clone())],
                (None, Some(d)) => vec![(d.clone(), p.flows[d].target.clone())],
                (None, None) => return Err(RunError::NoPath(element.into())),
            }
        }
        _ => outgoing
            .iter()
            .map(|f| (f.id.clone(), f.target.clone()))
            .collect(),
    };
    for (flow, target) in chosen {
        enter(p, inst, &flow, &target, now, waits)?;
    }
    Ok(())
}

/// A token arrives at `element` over `flow`.
fn enter(
    p: &Process,
    inst: &mut Instance,
    flow: &str,
    element: &str,
    now: i64,
    waits: &mut Vec<Wait>,
) -> Result<(), RunError> {
    let e = &p.elements[element];
    let token = |inst: &mut Instance| {
        inst.next_id += 1;
        inst.tokens.push(Token {
            id: inst.next_id,
            element: element.to_owned(),
        });
        inst.next_id
    };
    match &e.kind {
        Kind::ServiceTask {
            task_type, retries, ..
        } => {
            let mut vars = inst.vars();
            let scope = vars.clone();
            for (src, target) in &e.io.inputs {
                let v = eval(src, &scope, now, &e.id)?;
                if let Some(o) = vars.as_object_mut() {
                    o.insert(target.clone(), v);
                }
            }
            let id = token(inst);
            waits.push(Wait::Job {
                token: id,
                element: element.into(),
                task_type: task_type.clone(),
                retries: *retries,
                variables: vars,
            });
        }
        Kind::UserTask {
            assignee,
            candidate_groups,
            ..
        } => {
            let vars = inst.vars();
            let assignee = match assignee {
                Some(a) => {
                    Some(eval(a, &vars, now, &e.id)?).and_then(|v| v.as_str().map(str::to_owned))
                }
                None => None,
            };
            let id = token(inst);
            waits.push(Wait::UserTask {
                token: id,
                element: element.into(),
                assignee,
                candidate_groups: candidate_groups.clone(),
            });
        }
        Kind::ReceiveTask { message } | Kind::IntermediateMessage { message } => {
            let id = token(inst);
            waits.push(Wait::Message {
                token: id,
                element: element.into(),
                name: message.clone(),
                correlation_key: None,
            });
        }
        Kind::IntermediateTimer(t) => {
            let due = match t {
                Timer::Duration(d) => {
                    let d = if d.starts_with('=') {
                        eval(d, &inst.vars(), now, &e.id)?
                            .as_str()
                            .and_then(feel::parse_duration)
                    } else {
                        feel::parse_duration(d)
                    };
                    d.map(|d| now + d)
                }
                Timer::Date(d) => {
                    if d.starts_with('=') {
                        eval(d, &inst.vars(), now, &e.id)?
                            .as_str()
                            .and_then(feel::parse_datetime)
                    } else {
                        feel::parse_datetime(d)
                    }
                }
                Timer::Cycle(_) => None,
            }
            .ok_or_else(|| RunError::Element {
                element: element.into(),
                message: "the timer has no valid due date".into(),
            })?;
            let id = token(inst);
            waits.push(Wait::Timer {
                token: id,
                element: element.into(),
                due,
            });
        }
        Kind::ExclusiveGateway { .. } => {
            inst.history.push(element.into());
            leave(p, inst, element, now, waits)?;
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
                leave(p, inst, element, now, waits)?;
            }
        }
        Kind::EndEvent(EndKind::None) => inst.history.push(element.into()),
        Kind::EndEvent(EndKind::Terminate) => {
            inst.history.push(element.into());
            inst.tokens.clear();
            inst.joins.clear();
            inst.completed = true;
            waits.clear();
        }
        other => {
            return Err(RunError::Element {
                element: element.into(),
                message: format!("{other:?} is not run by this version of the engine"),
            });
        }
    }
    Ok(())
}
