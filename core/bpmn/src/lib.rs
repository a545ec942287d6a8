//! BPMN 2.0 as Camunda Modeler saves it for Camunda 8: parsing and deploy-time validation.
//!
//! The diagram (`bpmndi`) is ignored. Service tasks are bound with `zeebe:taskDefinition`,
//! with `zeebe:taskHeaders` and `zeebe:ioMapping`; user tasks with
//! `zeebe:assignmentDefinition`; messages with `zeebe:subscription correlationKey`. Elements the
//! engine does not run are rejected at deploy, each problem naming the element id and the reason,
//! as Zeebe does. Expressions (`=…`, FEEL) are kept as text here; compiling them is the
//! engine's job.

pub mod feel;
mod forms;
pub mod run;
mod xml;

use std::collections::{BTreeMap, HashMap};

pub const BPMN_NS: &str = "http://www.omg.org/spec/BPMN/20100524/MODEL";
pub const ZEEBE_NS: &str = "http://camunda.org/schema/zeebe/1.0";

/// One problem in a BPMN file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// The element's id ("" for the document).
    pub element: String,
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.element.is_empty() {
            write!(f, "line {}: {}", self.line, self.message)
        } else {
            write!(
                f,
                "`{}` (line {}): {}",
                self.element, self.line, self.message
            )
        }
    }
}

/// A file that cannot be deployed, with every problem found.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the BPMN file cannot be deployed: {}", .problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct Error {
    pub problems: Vec<Problem>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StartTrigger {
    None,
    /// A message start event, by message name.
    Message(String),
    Timer(Timer),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Timer {
    /// `timeDuration`, e.g. `PT15M` or `=duration`.
    Duration(String),
    /// `timeDate`, an ISO 8601 date-time or an expression.
    Date(String),
    /// `timeCycle`, e.g. `R3/PT10M`.
    Cycle(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum EndKind {
    None,
    Terminate,
    /// An error end event, with the error code.
    Error(String),
}

/// `zeebe:ioMapping` entries: `source` (an expression) → `target` (a variable name).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IoMapping {
    pub inputs: Vec<(String, String)>,
    pub outputs: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    StartEvent(StartTrigger),
    EndEvent(EndKind),
    ServiceTask {
        task_type: String,
        retries: u32,
        headers: BTreeMap<String, String>,
    },
    UserTask {
        assignee: Option<String>,
        candidate_groups: Option<String>,
        form_key: Option<String>,
        /// The form as JSON Schema: an embedded `zeebe:userTaskForm` (JSON Schema, or Camunda
        /// Forms JSON converted to JSON Schema), found through `formKey`.
        form: Option<serde_json::Value>,
    },
    ReceiveTask {
        message: String,
        /// `=…` expression evaluated when the token arrives (from the message's subscription).
        correlation_key: Option<String>,
    },
    ExclusiveGateway {
        default: Option<String>,
    },
    ParallelGateway,
    IntermediateTimer(Timer),
    IntermediateMessage {
        message: String,
        correlation_key: Option<String>,
    },
    BoundaryEvent {
        attached_to: String,
        interrupting: bool,
        trigger: BoundaryTrigger,
    },
    SubProcess {
        elements: Vec<String>,
    },
    CallActivity {
        process_id: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum BoundaryTrigger {
    Timer(Timer),
    /// An error boundary, catching a code (or any error when `None`).
    Error(Option<String>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Element {
    pub id: String,
    pub name: Option<String>,
    pub kind: Kind,
    pub io: IoMapping,
    /// The embedded subprocess this element belongs to, if any.
    pub parent: Option<String>,
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Flow {
    pub id: String,
    pub source: String,
    pub target: String,
    /// `=…` FEEL condition.
    pub condition: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub id: String,
    pub name: String,
    pub correlation_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Process {
    pub id: String,
    pub name: Option<String>,
    pub elements: BTreeMap<String, Element>,
    pub flows: BTreeMap<String, Flow>,
    /// Every FEEL expression of the process (`=…`: conditions, mappings, timers, assignees,
    /// correlation keys), compiled once at deploy, by source text: evaluating one never parses.
    pub expressions: BTreeMap<String, feel::Expression>,
    /// Per element: its outgoing flows' ids (in id order) and how many flows come in; built
    /// by [`Process::link`] so a token walk does not scan every flow at each element.
    pub links: HashMap<String, (Vec<String>, usize)>,
    /// Per activity: the ids of its boundary events (by [`Process::link`]).
    pub boundaries: HashMap<String, Vec<String>>,
}

impl Process {
    /// The compiled expression for `source` (a text starting with `=`), if the process has it.
    pub fn expression(&self, source: &str) -> Option<&feel::Expression> {
        self.expressions.get(source)
    }

    pub fn outgoing<'a>(&'a self, element: &'a str) -> impl Iterator<Item = &'a Flow> {
        self.links
            .get(element)
            .into_iter()
            .flat_map(|(out, _)| out.iter())
            .filter_map(|id| self.flows.get(id))
    }
    /// How many sequence flows lead to the element.
    pub fn incoming_count(&self, element: &str) -> usize {
        self.links.get(element).map(|l| l.1).unwrap_or(0)
    }
    /// Builds [`Process::links`] and [`Process::boundaries`] (after changing flows or
    /// elements).
    pub fn link(&mut self) {
        let mut links: HashMap<String, (Vec<String>, usize)> = HashMap::new();
        for f in self.flows.values() {
            links
                .entry(f.source.clone())
                .or_default()
                .0
                .push(f.id.clone());
            links.entry(f.target.clone()).or_default().1 += 1;
        }
        self.links = links;
        let mut boundaries: HashMap<String, Vec<String>> = HashMap::new();
        for e in self.elements.values() {
            if let Kind::BoundaryEvent { attached_to, .. } = &e.kind {
                boundaries
                    .entry(attached_to.clone())
                    .or_default()
                    .push(e.id.clone());
            }
        }
        self.boundaries = boundaries;
    }
    pub fn incoming<'a>(&'a self, element: &'a str) -> impl Iterator<Item = &'a Flow> {
        self.flows.values().filter(move |f| f.target == element)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Definitions {
    pub processes: Vec<Process>,
    pub messages: BTreeMap<String, Message>,
}

/// Elements the engine runs, for the error message.
const SUPPORTED: &str = "startEvent (none, message, timer), endEvent (none, terminate, error), serviceTask, userTask, receiveTask, exclusiveGateway, parallelGateway, intermediateCatchEvent (timer, message), boundaryEvent (timer, error), subProcess, callActivity, sequenceFlow";

struct Ctx {
    problems: Vec<Problem>,
    messages: HashMap<String, (String, Option<String>)>,
    errors: HashMap<String, String>,
    /// Embedded forms of the process being parsed: `zeebe:userTaskForm` id → JSON text.
    forms: HashMap<String, String>,
}

impl Ctx {
    fn problem(&mut self, element: &str, line: usize, message: impl Into<String>) {
        self.problems.push(Problem {
            element: element.to_owned(),
            line,
            message: message.into(),
        });
    }
}

fn zeebe<'a>(n: &'a xml::Node, name: &str) -> Option<&'a xml::Node> {
    n.child(BPMN_NS, "extensionElements")?.child(ZEEBE_NS, name)
}

fn io_mapping(n: &xml::Node) -> IoMapping {
    let mut io = IoMapping::default();
    if let Some(m) = zeebe(n, "ioMapping") {
        for c in &m.children {
            let pair = (
                c.attr("source").unwrap_or_default().to_owned(),
                c.attr("target").unwrap_or_default().to_owned(),
            );
            match c.name.as_str() {
                "input" => io.inputs.push(pair),
                "output" => io.outputs.push(pair),
                _ => {}
            }
        }
    }
    io
}

fn timer(ctx: &mut Ctx, id: &str, n: &xml::Node) -> Option<Timer> {
    let def = n.child(BPMN_NS, "timerEventDefinition")?;
    let text = |name: &str| def.child(BPMN_NS, name).map(|c| c.text.trim().to_owned());
    match (text("timeDuration"), text("timeDate"), text("timeCycle")) {
        (Some(d), None, None) if !d.is_empty() => Some(Timer::Duration(d)),
        (None, Some(d), None) if !d.is_empty() => Some(Timer::Date(d)),
        (None, None, Some(c)) if !c.is_empty() => Some(Timer::Cycle(c)),
        _ => {
            ctx.problem(
                id,
                n.line,
                "a timer needs exactly one of timeDuration, timeDate, timeCycle",
            );
            None
        }
    }
}

fn message_ref(
    ctx: &mut Ctx,
    id: &str,
    n: &xml::Node,
    def: Option<&xml::Node>,
) -> (String, Option<String>) {
    let r = def
        .and_then(|d| d.attr("messageRef"))
        .or(n.attr("messageRef"));
    match r.and_then(|r| ctx.messages.get(r).cloned()) {
        Some(m) => m,
        None => {
            ctx.problem(
                id,
                n.line,
                "refers to no declared bpmn:message (messageRef)",
            );
            (String::new(), None)
        }
    }
}

fn element(ctx: &mut Ctx, n: &xml::Node, parent: Option<&str>, out: &mut Process) {
    let id = n.attr("id").unwrap_or_default().to_owned();
    if id.is_empty() {
        ctx.problem("", n.line, format!("a bpmn:{} has no id", n.name));
        return;
    }
    // A second element or flow with the same id would silently replace the first.
    if let Some(line) = out
        .elements
        .get(&id)
        .map(|e| Some(e.line))
        .or_else(|| out.flows.contains_key(&id).then_some(None))
    {
        let first = line
            .map(|l| format!(" (first on line {l})"))
            .unwrap_or_default();
        ctx.problem(
            &id,
            n.line,
            format!("the id `{id}` is used by more than one element or flow{first}"),
        );
        return;
    }
    let has = |name: &str| n.child(BPMN_NS, name).is_some();
    let definitions = n
        .children
        .iter()
        .filter(|c| c.ns == BPMN_NS && c.name.ends_with("EventDefinition"))
        .map(|c| c.name.clone())
        .collect::<Vec<_>>();
    let unsupported_definition = |ctx: &mut Ctx, allowed: &[&str]| {
        for d in &definitions {
            if !allowed.contains(&d.as_str()) {
                ctx.problem(
                    &id,
                    n.line,
                    format!("bpmn:{} with a {d} is not supported", n.name),
                );
                return true;
            }
        }
        false
    };
    let kind = match n.name.as_str() {
        "sequenceFlow" => {
            let condition = n
                .child(BPMN_NS, "conditionExpression")
                .map(|c| c.text.trim().to_owned());
            if let Some(c) = &condition
                && !c.starts_with('=')
            {
                ctx.problem(
                    &id,
                    n.line,
                    "a condition is a FEEL expression starting with `=`",
                );
            }
            out.flows.insert(
                id.clone(),
                Flow {
                    id,
                    source: n.attr("sourceRef").unwrap_or_default().to_owned(),
                    target: n.attr("targetRef").unwrap_or_default().to_owned(),
                    condition,
                },
            );
            return;
        }
        "startEvent" => {
            if unsupported_definition(ctx, &["messageEventDefinition", "timerEventDefinition"]) {
                return;
            }
            if has("messageEventDefinition") {
                let def = n.child(BPMN_NS, "messageEventDefinition");
                Kind::StartEvent(StartTrigger::Message(message_ref(ctx, &id, n, def).0))
            } else if has("timerEventDefinition") {
                match timer(ctx, &id, n) {
                    Some(t) => Kind::StartEvent(StartTrigger::Timer(t)),
                    None => return,
                }
            } else {
                Kind::StartEvent(StartTrigger::None)
            }
        }
        "endEvent" => {
            if unsupported_definition(ctx, &["terminateEventDefinition", "errorEventDefinition"]) {
                return;
            }
            if has("terminateEventDefinition") {
                Kind::EndEvent(EndKind::Terminate)
            } else if let Some(d) = n.child(BPMN_NS, "errorEventDefinition") {
                let code = d.attr("errorRef").and_then(|r| ctx.errors.get(r).cloned());
                match code {
                    Some(c) => Kind::EndEvent(EndKind::Error(c)),
                    None => {
                        ctx.problem(&id, n.line, "an error end event needs an errorRef to a bpmn:error with an errorCode");
                        return;
                    }
                }
            } else {
                Kind::EndEvent(EndKind::None)
            }
        }
        "serviceTask" => {
            let def = zeebe(n, "taskDefinition");
            let task_type = def
                .and_then(|d| d.attr("type"))
                .unwrap_or_default()
                .to_owned();
            if task_type.is_empty() {
                ctx.problem(
                    &id,
                    n.line,
                    "a service task needs <zeebe:taskDefinition type=\"…\"/>",
                );
            }
            let retries = match def.and_then(|d| d.attr("retries")) {
                None => 3,
                Some(r) => match r.parse() {
                    Ok(r) => r,
                    Err(_) => {
                        ctx.problem(&id, n.line, format!("retries `{r}` is not a number"));
                        3
                    }
                },
            };
            let headers = zeebe(n, "taskHeaders")
                .map(|h| {
                    h.children
                        .iter()
                        .map(|c| {
                            (
                                c.attr("key").unwrap_or_default().to_owned(),
                                c.attr("value").unwrap_or_default().to_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            Kind::ServiceTask {
                task_type,
                retries,
                headers,
            }
        }
        "userTask" => {
            let a = zeebe(n, "assignmentDefinition");
            let form_key = zeebe(n, "formDefinition")
                .and_then(|f| f.attr("formKey").or(f.attr("formId")))
                .map(str::to_owned);
            let form = match form_key.as_deref() {
                None => None,
                Some(k) => {
                    let local = k.strip_prefix("camunda-forms:bpmn:").unwrap_or(k);
                    match ctx.forms.get(local).cloned() {
                        None if k.starts_with("camunda-forms:bpmn:") => {
                            ctx.problem(
                                &id,
                                n.line,
                                format!(
                                    "form `{k}` is not embedded in the process (zeebe:userTaskForm)"
                                ),
                            );
                            None
                        }
                        None => None,
                        Some(text) => match forms::to_json_schema(&text) {
                            Ok(f) => Some(f),
                            Err(why) => {
                                ctx.problem(&id, n.line, format!("form `{k}`: {why}"));
                                None
                            }
                        },
                    }
                }
            };
            Kind::UserTask {
                assignee: a.and_then(|a| a.attr("assignee")).map(str::to_owned),
                candidate_groups: a.and_then(|a| a.attr("candidateGroups")).map(str::to_owned),
                form_key,
                form,
            }
        }
        "receiveTask" => {
            let (message, correlation_key) = message_ref(ctx, &id, n, None);
            Kind::ReceiveTask {
                message,
                correlation_key,
            }
        }
        "exclusiveGateway" => Kind::ExclusiveGateway {
            default: n.attr("default").map(str::to_owned),
        },
        "parallelGateway" => Kind::ParallelGateway,
        "intermediateCatchEvent" => {
            if unsupported_definition(ctx, &["messageEventDefinition", "timerEventDefinition"]) {
                return;
            }
            if let Some(def) = n.child(BPMN_NS, "messageEventDefinition") {
                let (message, correlation_key) = message_ref(ctx, &id, n, Some(def));
                Kind::IntermediateMessage {
                    message,
                    correlation_key,
                }
            } else {
                match timer(ctx, &id, n) {
                    Some(t) => Kind::IntermediateTimer(t),
                    None => {
                        if definitions.is_empty() {
                            ctx.problem(
                                &id,
                                n.line,
                                "an intermediate catch event needs a timer or message definition",
                            );
                        }
                        return;
                    }
                }
            }
        }
        "boundaryEvent" => {
            if unsupported_definition(ctx, &["errorEventDefinition", "timerEventDefinition"]) {
                return;
            }
            let attached_to = n.attr("attachedToRef").unwrap_or_default().to_owned();
            let interrupting = n.attr("cancelActivity") != Some("false");
            let trigger = if let Some(d) = n.child(BPMN_NS, "errorEventDefinition") {
                if !interrupting {
                    ctx.problem(
                        &id,
                        n.line,
                        "an error boundary event is always interrupting",
                    );
                }
                BoundaryTrigger::Error(d.attr("errorRef").and_then(|r| ctx.errors.get(r).cloned()))
            } else {
                match timer(ctx, &id, n) {
                    Some(t) => BoundaryTrigger::Timer(t),
                    None => {
                        if definitions.is_empty() {
                            ctx.problem(
                                &id,
                                n.line,
                                "a boundary event needs a timer or error definition",
                            );
                        }
                        return;
                    }
                }
            };
            Kind::BoundaryEvent {
                attached_to,
                interrupting,
                trigger,
            }
        }
        "subProcess" => {
            if n.attr("triggeredByEvent") == Some("true") {
                ctx.problem(&id, n.line, "event subprocesses are not supported");
                return;
            }
            let mut inner = Vec::new();
            for c in &n.children {
                if c.ns == BPMN_NS && !is_ignorable(&c.name) {
                    if let Some(cid) = c.attr("id")
                        && c.name != "sequenceFlow"
                    {
                        inner.push(cid.to_owned());
                    }
                    element(ctx, c, Some(&id), out);
                }
            }
            Kind::SubProcess { elements: inner }
        }
        "callActivity" => {
            let process_id = zeebe(n, "calledElement")
                .and_then(|c| c.attr("processId"))
                .unwrap_or_default()
                .to_owned();
            if process_id.is_empty() {
                ctx.problem(
                    &id,
                    n.line,
                    "a call activity needs <zeebe:calledElement processId=\"…\"/>",
                );
            }
            Kind::CallActivity { process_id }
        }
        other => {
            ctx.problem(
                &id,
                n.line,
                format!("bpmn:{other} is not supported (supported: {SUPPORTED})"),
            );
            return;
        }
    };
    out.elements.insert(
        id.clone(),
        Element {
            id,
            name: n.attr("name").map(str::to_owned),
            kind,
            io: io_mapping(n),
            parent: parent.map(str::to_owned),
            line: n.line,
        },
    );
}

/// Children of a process that carry no behaviour.
fn is_ignorable(name: &str) -> bool {
    matches!(
        name,
        "extensionElements"
            | "documentation"
            | "laneSet"
            | "textAnnotation"
            | "association"
            | "dataObject"
            | "dataObjectReference"
            | "dataStoreReference"
            | "incoming"
            | "outgoing"
            | "group"
            | "category"
    )
}

/// Largest BPMN file accepted, in bytes (Modeler files are tens of kilobytes).
pub const MAX_FILE_BYTES: usize = 4 * 1024 * 1024;

/// Deepest element nesting accepted in a BPMN file.
pub const MAX_XML_DEPTH: usize = xml::MAX_DEPTH;

/// Parses and validates a BPMN file.
pub fn parse(text: &str) -> Result<Definitions, Error> {
    if text.len() > MAX_FILE_BYTES {
        return Err(Error {
            problems: vec![Problem {
                element: String::new(),
                line: 0,
                message: format!(
                    "the file has {} bytes; the limit is {MAX_FILE_BYTES}",
                    text.len()
                ),
            }],
        });
    }
    let root = xml::parse(text).map_err(|e| Error {
        problems: vec![Problem {
            element: String::new(),
            line: 0,
            message: format!("not well-formed XML: {e}"),
        }],
    })?;
    let mut ctx = Ctx {
        problems: Vec::new(),
        messages: HashMap::new(),
        errors: HashMap::new(),
        forms: HashMap::new(),
    };
    if root.ns != BPMN_NS || root.name != "definitions" {
        ctx.problem(
            "",
            root.line,
            "the root element is not bpmn:definitions (BPMN 2.0 model namespace)",
        );
        return Err(Error {
            problems: ctx.problems,
        });
    }
    let mut messages = BTreeMap::new();
    for m in root.children_named(BPMN_NS, "message") {
        let id = m.attr("id").unwrap_or_default().to_owned();
        let name = m.attr("name").unwrap_or_default().to_owned();
        if name.is_empty() {
            ctx.problem(&id, m.line, "a message needs a name");
        }
        let correlation_key = zeebe(m, "subscription")
            .and_then(|s| s.attr("correlationKey"))
            .map(str::to_owned);
        if let Some(k) = &correlation_key
            && k.starts_with('=')
            && let Err(why) = feel::compile(k)
        {
            ctx.problem(&id, m.line, format!("correlationKey `{k}`: {why}"));
        }
        ctx.messages
            .insert(id.clone(), (name.clone(), correlation_key.clone()));
        messages.insert(
            id.clone(),
            Message {
                id,
                name,
                correlation_key,
            },
        );
    }
    for e in root.children_named(BPMN_NS, "error") {
        if let (Some(id), Some(code)) = (e.attr("id"), e.attr("errorCode")) {
            ctx.errors.insert(id.to_owned(), code.to_owned());
        }
    }
    let mut processes = Vec::new();
    for p in root.children_named(BPMN_NS, "process") {
        let mut process = Process {
            id: p.attr("id").unwrap_or_default().to_owned(),
            name: p.attr("name").map(str::to_owned),
            elements: BTreeMap::new(),
            flows: BTreeMap::new(),
            expressions: BTreeMap::new(),
            links: HashMap::new(),
            boundaries: HashMap::new(),
        };
        ctx.forms = p
            .child(BPMN_NS, "extensionElements")
            .map(|x| {
                x.children_named(ZEEBE_NS, "userTaskForm")
                    .filter_map(|f| Some((f.attr("id")?.to_owned(), f.text.clone())))
                    .collect()
            })
            .unwrap_or_default();
        for c in &p.children {
            if c.ns == BPMN_NS && !is_ignorable(&c.name) {
                element(&mut ctx, c, None, &mut process);
            }
        }
        process.link();
        process.expressions = check(&mut ctx, &process);
        cycles(&mut ctx, &process);
        processes.push(process);
    }
    for c in &root.children {
        if c.ns == BPMN_NS && c.name == "collaboration" {
            ctx.problem(
                c.attr("id").unwrap_or_default(),
                c.line,
                "collaborations (pools and message flows) are not supported; model one process",
            );
        }
    }
    if processes.is_empty() {
        ctx.problem("", root.line, "the file defines no bpmn:process");
    }
    if ctx.problems.is_empty() {
        Ok(Definitions {
            processes,
            messages,
        })
    } else {
        Err(Error {
            problems: ctx.problems,
        })
    }
}

/// Compiles `src` when it is an expression (`=…`) into `exprs`; a problem names the element.
fn compile_expr(
    ctx: &mut Ctx,
    exprs: &mut BTreeMap<String, feel::Expression>,
    element: &str,
    line: usize,
    what: &str,
    src: &str,
) -> bool {
    if !src.starts_with('=') || exprs.contains_key(src) {
        return true;
    }
    match feel::compile(src) {
        Ok(e) => {
            exprs.insert(src.to_owned(), e);
            true
        }
        Err(why) => {
            ctx.problem(element, line, format!("{what} `{}`: {why}", shorten(src)));
            false
        }
    }
}

/// An expression as quoted in a problem: at most 80 characters.
fn shorten(src: &str) -> String {
    if src.chars().count() <= 80 {
        src.to_owned()
    } else {
        format!("{}…", src.chars().take(80).collect::<String>())
    }
}

/// Structural rules: flows connect existing elements of the same scope, every scope has one
/// none start event, gateways and boundaries are wired consistently. Returns the process's
/// expressions, compiled.
fn check(ctx: &mut Ctx, p: &Process) -> BTreeMap<String, feel::Expression> {
    let mut exprs = BTreeMap::new();
    for f in p.flows.values() {
        if let Some(c) = &f.condition {
            compile_expr(ctx, &mut exprs, &f.id, 0, "condition", c);
        }
        for (end, what) in [(&f.source, "sourceRef"), (&f.target, "targetRef")] {
            if !p.elements.contains_key(end) {
                ctx.problem(
                    &f.id,
                    0,
                    format!("{what} `{end}` is not an element of the process"),
                );
            }
        }
        if let (Some(s), Some(t)) = (p.elements.get(&f.source), p.elements.get(&f.target))
            && s.parent != t.parent
        {
            ctx.problem(
                &f.id,
                0,
                "a sequence flow may not cross a subprocess boundary",
            );
        }
    }
    let scopes: Vec<Option<String>> = std::iter::once(None)
        .chain(
            p.elements
                .values()
                .filter(|e| matches!(e.kind, Kind::SubProcess { .. }))
                .map(|e| Some(e.id.clone())),
        )
        .collect();
    for scope in scopes {
        let starts: Vec<&Element> = p
            .elements
            .values()
            .filter(|e| e.parent == scope && matches!(e.kind, Kind::StartEvent(StartTrigger::None)))
            .collect();
        let any_start = p
            .elements
            .values()
            .any(|e| e.parent == scope && matches!(e.kind, Kind::StartEvent(_)));
        let at = scope.clone().unwrap_or_else(|| p.id.clone());
        if !any_start {
            ctx.problem(&at, 0, "has no start event");
        }
        if starts.len() > 1 {
            ctx.problem(&at, 0, "has more than one none start event");
        }
        if scope.is_some()
            && p.elements.values().any(|e| {
                e.parent == scope
                    && matches!(
                        e.kind,
                        Kind::StartEvent(StartTrigger::Message(_) | StartTrigger::Timer(_))
                    )
            })
        {
            ctx.problem(
                &at,
                0,
                "an embedded subprocess starts with a none start event only",
            );
        }
    }
    for e in p.elements.values() {
        let outgoing: Vec<&Flow> = p.outgoing(&e.id).collect();
        match &e.kind {
            Kind::ExclusiveGateway { default } => {
                if let Some(d) = default {
                    match p.flows.get(d) {
                        Some(f) if f.source == e.id => {
                            if f.condition.is_some() {
                                ctx.problem(d, 0, "the default flow has no condition");
                            }
                        }
                        _ => ctx.problem(
                            &e.id,
                            e.line,
                            format!("default flow `{d}` is not an outgoing flow of this gateway"),
                        ),
                    }
                }
                if outgoing.len() > 1 {
                    for f in &outgoing {
                        if f.condition.is_none() && default.as_deref() != Some(f.id.as_str()) {
                            ctx.problem(&f.id, 0, format!("leaves exclusive gateway `{}` without a condition and is not its default", e.id));
                        }
                    }
                }
            }
            Kind::ParallelGateway => {
                for f in &outgoing {
                    if f.condition.is_some() {
                        ctx.problem(
                            &f.id,
                            0,
                            "flows leaving a parallel gateway have no conditions",
                        );
                    }
                }
            }
            Kind::BoundaryEvent { attached_to, .. } => match p.elements.get(attached_to) {
                Some(t)
                    if matches!(
                        t.kind,
                        Kind::ServiceTask { .. }
                            | Kind::UserTask { .. }
                            | Kind::ReceiveTask { .. }
                            | Kind::SubProcess { .. }
                            | Kind::CallActivity { .. }
                    ) => {}
                _ => ctx.problem(
                    &e.id,
                    e.line,
                    format!(
                        "attachedToRef `{attached_to}` is not a task, subprocess or call activity"
                    ),
                ),
            },
            Kind::EndEvent(_) if !outgoing.is_empty() => {
                ctx.problem(&e.id, e.line, "an end event has no outgoing flows");
            }
            Kind::StartEvent(_) if p.incoming(&e.id).next().is_some() => {
                ctx.problem(&e.id, e.line, "a start event has no incoming flows");
            }
            _ => {}
        }
        // An activity without an outgoing flow ends its path (BPMN's implicit end): allowed.
        // Expressions are compiled now, so a typo fails the deploy, not a running instance.
        for (src, target) in e.io.inputs.iter().chain(&e.io.outputs) {
            if src.is_empty() || target.is_empty() {
                ctx.problem(&e.id, e.line, "an io mapping needs a source and a target");
            }
            compile_expr(ctx, &mut exprs, &e.id, e.line, "mapping", src);
        }
        match &e.kind {
            Kind::UserTask {
                assignee,
                candidate_groups,
                ..
            } => {
                for (what, x) in [
                    ("assignee", assignee),
                    ("candidateGroups", candidate_groups),
                ] {
                    if let Some(x) = x {
                        compile_expr(ctx, &mut exprs, &e.id, e.line, what, x);
                    }
                }
            }
            Kind::ReceiveTask {
                correlation_key: Some(k),
                ..
            }
            | Kind::IntermediateMessage {
                correlation_key: Some(k),
                ..
            } => {
                compile_expr(ctx, &mut exprs, &e.id, e.line, "correlationKey", k);
            }
            _ => {}
        }
        let timer = match &e.kind {
            Kind::IntermediateTimer(t)
            | Kind::StartEvent(StartTrigger::Timer(t))
            | Kind::BoundaryEvent {
                trigger: BoundaryTrigger::Timer(t),
                ..
            } => Some(t),
            _ => None,
        };
        if let Some(t) = timer {
            let (text, ok) = match t {
                Timer::Duration(d) | Timer::Date(d) | Timer::Cycle(d) if d.starts_with('=') => {
                    (d, compile_expr(ctx, &mut exprs, &e.id, e.line, "timer", d))
                }
                Timer::Duration(d) => (d, feel::parse_duration(d).is_some()),
                Timer::Date(d) => (d, feel::parse_datetime(d).is_some()),
                Timer::Cycle(c) => (c, parse_cycle(c).is_some()),
            };
            if !ok {
                ctx.problem(
                    &e.id,
                    e.line,
                    format!("timer `{text}` is not a valid ISO 8601 value or expression"),
                );
            }
        }
    }
    exprs
}

/// Whether entering the element makes its token wait (a job, a user task, a message or timer
/// catch, a called process); every other element passes the token straight on.
fn waits(kind: &Kind) -> bool {
    matches!(
        kind,
        Kind::ServiceTask { .. }
            | Kind::UserTask { .. }
            | Kind::ReceiveTask { .. }
            | Kind::IntermediateTimer(_)
            | Kind::IntermediateMessage { .. }
            | Kind::CallActivity { .. }
    )
}

/// Rejects every cycle of elements that do not wait (gateways, subprocesses, events passing
/// the token on): a token entering one would loop within one command forever. As Zeebe does
/// not run what it cannot finish, such a loop is refused at deploy with its elements named;
/// a loop through a task, a catch event or a call activity is fine.
///
/// The graph: sequence flows between non-waiting elements; a subprocess leads to its none
/// start event, and a path's last element inside it (no outgoing flow) leads on through the
/// subprocess's outgoing flows; an error end event leads to the error boundary events of its
/// enclosing subprocesses. Cycles are the strongly connected components (Tarjan's algorithm,
/// iterative: a large model must not recurse deeply).
fn cycles(ctx: &mut Ctx, p: &Process) {
    let ids: Vec<&str> = p
        .elements
        .values()
        .filter(|e| !waits(&e.kind))
        .map(|e| e.id.as_str())
        .collect();
    let index: HashMap<&str, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let mut out: Vec<HashMap<usize, ()>> = vec![HashMap::new(); ids.len()];
    let mut has_out: HashMap<&str, bool> = HashMap::new();
    for f in p.flows.values() {
        has_out.insert(f.source.as_str(), true);
        if let (Some(&a), Some(&b)) = (index.get(f.source.as_str()), index.get(f.target.as_str())) {
            out[a].insert(b, ());
        }
    }
    let targets_of = |element: &str| -> Vec<usize> {
        p.outgoing(element)
            .filter_map(|f| index.get(f.target.as_str()).copied())
            .collect()
    };
    for e in p.elements.values() {
        let Some(&from) = index.get(e.id.as_str()) else {
            continue;
        };
        match &e.kind {
            Kind::SubProcess { .. } => {
                for inner in p.elements.values().filter(|x| {
                    x.parent.as_deref() == Some(&e.id)
                        && x.kind == Kind::StartEvent(StartTrigger::None)
                }) {
                    if let Some(&s) = index.get(inner.id.as_str()) {
                        out[from].insert(s, ());
                    }
                }
            }
            Kind::EndEvent(EndKind::Error(_)) => {
                // To every error boundary of the enclosing subprocesses.
                let mut scope = e.parent.clone();
                while let Some(sub) = scope {
                    for b in p.elements.values() {
                        if let Kind::BoundaryEvent {
                            attached_to,
                            trigger: BoundaryTrigger::Error(_),
                            ..
                        } = &b.kind
                            && *attached_to == sub
                            && let Some(&t) = index.get(b.id.as_str())
                        {
                            out[from].insert(t, ());
                        }
                    }
                    scope = p.elements.get(&sub).and_then(|s| s.parent.clone());
                }
                continue;
            }
            _ => {}
        }
        // A path's end inside a subprocess continues after the subprocess.
        if !has_out.contains_key(e.id.as_str())
            && let Some(sub) = &e.parent
        {
            for t in targets_of(sub) {
                out[from].insert(t, ());
            }
        }
    }
    let adj: Vec<Vec<usize>> = out
        .into_iter()
        .map(|m| {
            let mut v: Vec<usize> = m.into_keys().collect();
            v.sort_unstable();
            v
        })
        .collect();
    for component in strongly_connected(&adj) {
        let looped = component.len() > 1 || adj[component[0]].contains(&component[0]);
        if !looped {
            continue;
        }
        let path = cycle_path(&adj, &component);
        let names: Vec<&str> = path.iter().map(|i| ids[*i]).collect();
        let first = p.elements.get(names[0]);
        ctx.problem(
            names[0],
            first.map(|e| e.line).unwrap_or(0),
            format!(
                "sequence flows form a loop with no wait state: {} → {}; a token would loop \
                 forever without waiting (put a task, a message or timer catch event or a call \
                 activity on the loop)",
                names.join(" → "),
                names[0]
            ),
        );
    }
}

/// Strongly connected components of a graph (Tarjan's algorithm with an explicit stack).
fn strongly_connected(adj: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let n = adj.len();
    let mut index = vec![usize::MAX; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut next = 0;
    let mut out = Vec::new();
    for root in 0..n {
        if index[root] != usize::MAX {
            continue;
        }
        // (node, next edge to look at)
        let mut work = vec![(root, 0usize)];
        while let Some(top) = work.last_mut() {
            let v = top.0;
            if top.1 == 0 && index[v] == usize::MAX {
                index[v] = next;
                low[v] = next;
                next += 1;
                stack.push(v);
                on_stack[v] = true;
            }
            if let Some(&w) = adj[v].get(top.1) {
                top.1 += 1;
                if index[w] == usize::MAX {
                    work.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                let mut component = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                component.sort_unstable();
                out.push(component);
            }
        }
    }
    out
}

/// One cycle through a component's first node, staying inside the component (breadth-first,
/// so the shortest).
fn cycle_path(adj: &[Vec<usize>], component: &[usize]) -> Vec<usize> {
    let start = component[0];
    let inside: std::collections::HashSet<usize> = component.iter().copied().collect();
    let mut prev: HashMap<usize, usize> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for &w in &adj[v] {
            if w == start {
                let mut path = vec![v];
                let mut cur = v;
                while let Some(&p) = prev.get(&cur).filter(|_| cur != start) {
                    cur = p;
                    path.push(cur);
                }
                path.reverse();
                return path;
            }
            if inside.contains(&w) && !prev.contains_key(&w) {
                prev.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    component.to_vec()
}

/// An ISO 8601 repeating interval as Zeebe takes it: `R<n>/<duration>` (`n` ≥ 1) or
/// `R/<duration>` (unbounded). Returns the repetitions and the interval in milliseconds (> 0).
pub fn parse_cycle(c: &str) -> Option<(Option<u32>, i64)> {
    let (r, d) = c.trim().split_once('/')?;
    let r = r.strip_prefix('R')?;
    let repeat = if r.is_empty() {
        None
    } else {
        Some(r.parse::<u32>().ok().filter(|n| *n >= 1)?)
    };
    let every = feel::parse_duration(d).filter(|ms| *ms > 0)?;
    Some((repeat, every))
}
