//! Token semantics on the benchmark process and a parallel split/join.

use ferrydesk_bpmn::parse;
use ferrydesk_bpmn::run::{Command, Instance, RunError, Wait, apply};
use serde_json::json;

const BENCH: &str = include_str!("bench_process.bpmn");

fn job(w: &[Wait]) -> (u64, String) {
    match w {
        [
            Wait::Job {
                token, task_type, ..
            },
        ] => (*token, task_type.clone()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn exclusive_gateway_routes_on_a_variable() {
    let d = parse(BENCH).expect("deploys");
    let p = &d.processes[0];
    for (amount, expect) in [
        (5000, "notify.vip"),
        (10, "notify.normal"),
        (0, "notify.normal"),
    ] {
        let mut i = Instance::default();
        let w = apply(
            p,
            &mut i,
            Command::Start {
                start: None,
                variables: json!({}),
            },
            0,
        )
        .expect("start")
        .waits;
        let (t, ty) = job(&w);
        assert_eq!(ty, "cases.create");
        let w = apply(
            p,
            &mut i,
            Command::Complete {
                token: t,
                variables: json!({"amount": amount}),
            },
            0,
        )
        .expect("complete")
        .waits;
        let (t, ty) = job(&w);
        assert_eq!(ty, expect, "amount {amount}");
        let w = apply(
            p,
            &mut i,
            Command::Complete {
                token: t,
                variables: json!({}),
            },
            0,
        )
        .expect("complete")
        .waits;
        assert!(w.is_empty());
        assert!(i.completed);
        assert_eq!(i.history.first().map(String::as_str), Some("start"));
        assert_eq!(i.history.last().map(String::as_str), Some("end"));
    }
}

#[test]
fn a_missing_variable_takes_the_default_and_stale_tokens_are_refused() {
    let d = parse(BENCH).expect("deploys");
    let p = &d.processes[0];
    let mut i = Instance::default();
    let (t, _) = job(&apply(
        p,
        &mut i,
        Command::Start {
            start: None,
            variables: json!({}),
        },
        0,
    )
    .expect("start")
    .waits);
    let (t2, ty) = job(&apply(
        p,
        &mut i,
        Command::Complete {
            token: t,
            variables: json!({}),
        },
        0,
    )
    .expect("complete")
    .waits);
    assert_eq!(ty, "notify.normal");
    // Completing the first job again (a stale worker) is refused.
    assert!(
        apply(
            p,
            &mut i,
            Command::Complete {
                token: t,
                variables: json!({})
            },
            0
        )
        .is_err()
    );
    apply(
        p,
        &mut i,
        Command::Complete {
            token: t2,
            variables: json!({}),
        },
        0,
    )
    .expect("complete");
    assert!(i.completed);
}

const PARALLEL: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:zeebe="http://camunda.org/schema/zeebe/1.0" id="d">
  <bpmn:process id="par" isExecutable="true">
    <bpmn:startEvent id="s" />
    <bpmn:parallelGateway id="split" />
    <bpmn:serviceTask id="a"><bpmn:extensionElements><zeebe:taskDefinition type="a" /></bpmn:extensionElements></bpmn:serviceTask>
    <bpmn:intermediateCatchEvent id="wait"><bpmn:timerEventDefinition><bpmn:timeDuration>PT15M</bpmn:timeDuration></bpmn:timerEventDefinition></bpmn:intermediateCatchEvent>
    <bpmn:parallelGateway id="join" />
    <bpmn:endEvent id="e" />
    <bpmn:sequenceFlow id="f1" sourceRef="s" targetRef="split" />
    <bpmn:sequenceFlow id="f2" sourceRef="split" targetRef="a" />
    <bpmn:sequenceFlow id="f3" sourceRef="split" targetRef="wait" />
    <bpmn:sequenceFlow id="f4" sourceRef="a" targetRef="join" />
    <bpmn:sequenceFlow id="f5" sourceRef="wait" targetRef="join" />
    <bpmn:sequenceFlow id="f6" sourceRef="join" targetRef="e" />
  </bpmn:process>
</bpmn:definitions>"#;

#[test]
fn parallel_join_waits_for_every_branch() {
    let d = parse(PARALLEL).expect("deploys");
    let p = &d.processes[0];
    let mut i = Instance::default();
    let w = apply(
        p,
        &mut i,
        Command::Start {
            start: None,
            variables: json!({}),
        },
        1_000,
    )
    .expect("start")
    .waits;
    assert_eq!(w.len(), 2);
    let (job, timer) = match &w[..] {
        [
            Wait::Job { token: j, .. },
            Wait::Timer { token: t, due, .. },
        ] => {
            assert_eq!(*due, 1_000 + 15 * 60_000);
            (*j, *t)
        }
        other => panic!("{other:?}"),
    };
    apply(
        p,
        &mut i,
        Command::Complete {
            token: job,
            variables: json!({}),
        },
        2_000,
    )
    .expect("job");
    assert!(!i.completed, "the join waits for the timer branch");
    apply(p, &mut i, Command::FireTimer { token: timer }, 901_000).expect("timer");
    assert!(i.completed);
    assert_eq!(i.history.iter().filter(|h| *h == "join").count(), 1);
}

const SCOPES: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:zeebe="http://camunda.org/schema/zeebe/1.0" id="d">
  <bpmn:message id="m" name="client-replied"><bpmn:extensionElements><zeebe:subscription correlationKey="=chatId" /></bpmn:extensionElements></bpmn:message>
  <bpmn:error id="err" errorCode="not-found" />
  <bpmn:process id="scopes" isExecutable="true">
    <bpmn:startEvent id="s" />
    <bpmn:userTask id="review"><bpmn:extensionElements><zeebe:assignmentDefinition assignee="=operatorId" /></bpmn:extensionElements></bpmn:userTask>
    <bpmn:boundaryEvent id="remind" attachedToRef="review" cancelActivity="false"><bpmn:timerEventDefinition><bpmn:timeDuration>PT1M</bpmn:timeDuration></bpmn:timerEventDefinition></bpmn:boundaryEvent>
    <bpmn:boundaryEvent id="escalate" attachedToRef="review"><bpmn:timerEventDefinition><bpmn:timeDuration>PT1H</bpmn:timeDuration></bpmn:timerEventDefinition></bpmn:boundaryEvent>
    <bpmn:serviceTask id="notify"><bpmn:extensionElements><zeebe:taskDefinition type="notify" /></bpmn:extensionElements></bpmn:serviceTask>
    <bpmn:subProcess id="sub">
      <bpmn:startEvent id="sub_s" />
      <bpmn:serviceTask id="lookup"><bpmn:extensionElements><zeebe:taskDefinition type="lookup" /></bpmn:extensionElements></bpmn:serviceTask>
      <bpmn:intermediateCatchEvent id="reply"><bpmn:messageEventDefinition messageRef="m" /></bpmn:intermediateCatchEvent>
      <bpmn:endEvent id="sub_e" />
      <bpmn:sequenceFlow id="g1" sourceRef="sub_s" targetRef="lookup" />
      <bpmn:sequenceFlow id="g2" sourceRef="lookup" targetRef="reply" />
      <bpmn:sequenceFlow id="g3" sourceRef="reply" targetRef="sub_e" />
    </bpmn:subProcess>
    <bpmn:boundaryEvent id="missing" attachedToRef="sub"><bpmn:errorEventDefinition errorRef="err" /></bpmn:boundaryEvent>
    <bpmn:endEvent id="done" />
    <bpmn:endEvent id="gave_up" />
    <bpmn:sequenceFlow id="f1" sourceRef="s" targetRef="review" />
    <bpmn:sequenceFlow id="f2" sourceRef="review" targetRef="sub" />
    <bpmn:sequenceFlow id="f3" sourceRef="escalate" targetRef="sub" />
    <bpmn:sequenceFlow id="f4" sourceRef="remind" targetRef="notify" />
    <bpmn:sequenceFlow id="f5" sourceRef="sub" targetRef="done" />
    <bpmn:sequenceFlow id="f6" sourceRef="missing" targetRef="gave_up" />
  </bpmn:process>
</bpmn:definitions>"#;

fn start(p: &ferrydesk_bpmn::Process, i: &mut Instance, vars: serde_json::Value) -> Vec<Wait> {
    apply(
        p,
        i,
        Command::Start {
            start: None,
            variables: vars,
        },
        0,
    )
    .expect("start")
    .waits
}

#[test]
fn boundary_timers_remind_then_escalate_and_cancel_the_task() {
    let d = parse(SCOPES).expect("deploys");
    let p = &d.processes[0];
    let mut i = Instance::default();
    let w = start(p, &mut i, json!({"operatorId": "u1", "chatId": "c9"}));
    let (task, remind, escalate) = match &w[..] {
        [
            Wait::Timer {
                token: e,
                due: 3_600_000,
                ..
            },
            Wait::Timer {
                token: r,
                due: 60_000,
                ..
            },
            Wait::UserTask {
                token: t,
                assignee: Some(a),
                ..
            },
        ] if a == "u1" => (*t, *r, *e),
        other => panic!("{other:?}"),
    };
    // Non-interrupting: the task stays, a notification job appears.
    let s = apply(p, &mut i, Command::FireTimer { token: remind }, 60_000).expect("remind");
    assert!(matches!(&s.waits[..], [Wait::Job { task_type, .. }] if task_type == "notify"));
    assert!(s.cancelled.is_empty());
    assert!(i.tokens.iter().any(|t| t.id == task));
    // Interrupting: the task is cancelled and the subprocess starts.
    let s = apply(p, &mut i, Command::FireTimer { token: escalate }, 3_600_000).expect("escalate");
    assert_eq!(s.cancelled, vec![task]);
    assert!(matches!(&s.waits[..], [Wait::Job { task_type, .. }] if task_type == "lookup"));
    // Completing the cancelled user task now is refused.
    assert_eq!(
        apply(
            p,
            &mut i,
            Command::Complete {
                token: task,
                variables: json!({})
            },
            0
        ),
        Err(RunError::UnknownToken(task))
    );
}

#[test]
fn an_error_inside_a_subprocess_is_caught_by_its_boundary() {
    let d = parse(SCOPES).expect("deploys");
    let p = &d.processes[0];
    let mut i = Instance::default();
    let w = start(p, &mut i, json!({"chatId": "c9"}));
    let task = w
        .iter()
        .find_map(|w| match w {
            Wait::UserTask { token, .. } => Some(*token),
            _ => None,
        })
        .expect("task");
    let s = apply(
        p,
        &mut i,
        Command::Complete {
            token: task,
            variables: json!({"ok": true}),
        },
        5,
    )
    .expect("done");
    // Completing the task drops its two boundary timers.
    assert_eq!(s.cancelled.len(), 2);
    let lookup = match &s.waits[..] {
        [Wait::Job { token, .. }] => *token,
        other => panic!("{other:?}"),
    };
    let s = apply(
        p,
        &mut i,
        Command::Throw {
            token: lookup,
            code: "not-found".into(),
            message: "no such order".into(),
        },
        6,
    )
    .expect("throw");
    assert!(s.waits.is_empty());
    assert!(i.completed);
    assert_eq!(i.history.last().map(String::as_str), Some("gave_up"));
    assert_eq!(i.variables["error"]["code"], "not-found");
}

#[test]
fn a_message_catch_in_a_subprocess_completes_it_and_uncaught_errors_are_refused() {
    let d = parse(SCOPES).expect("deploys");
    let p = &d.processes[0];
    let mut i = Instance::default();
    let w = start(p, &mut i, json!({"chatId": "c9"}));
    let task = w
        .iter()
        .find_map(|w| match w {
            Wait::UserTask { token, .. } => Some(*token),
            _ => None,
        })
        .expect("task");
    let s = apply(
        p,
        &mut i,
        Command::Complete {
            token: task,
            variables: json!({}),
        },
        5,
    )
    .expect("done");
    let lookup = s.waits[0].token();
    let mut failed = i.clone();
    assert!(matches!(
        apply(p, &mut failed, Command::Throw { token: lookup, code: "other".into(), message: "x".into() }, 6),
        Err(RunError::Unhandled { ref code, .. }) if code == "other"
    ));
    let s = apply(
        p,
        &mut i,
        Command::Complete {
            token: lookup,
            variables: json!({}),
        },
        6,
    )
    .expect("lookup");
    let reply = match &s.waits[..] {
        [
            Wait::Message {
                token,
                name,
                correlation_key: Some(k),
                ..
            },
        ] if name == "client-replied" && k == "c9" => *token,
        other => panic!("{other:?}"),
    };
    apply(
        p,
        &mut i,
        Command::Complete {
            token: reply,
            variables: json!({"text": "thanks"}),
        },
        7,
    )
    .expect("reply");
    assert!(i.completed);
    assert_eq!(&i.history[i.history.len() - 3..], ["sub_e", "sub", "done"]);
    // The state round-trips through JSON (it is stored as JSON).
    let back: Instance =
        serde_json::from_str(&serde_json::to_string(&i).expect("json")).expect("parse");
    assert_eq!(back, i);
}

#[test]
fn a_non_interrupting_cycle_repeats_while_the_task_lasts() {
    let xml = SCOPES
        .replace(
            "<bpmn:timeDuration>PT1M</bpmn:timeDuration>",
            "<bpmn:timeCycle>R3/PT1M</bpmn:timeCycle>",
        )
        .replace(
            "<bpmn:timeDuration>PT1H</bpmn:timeDuration>",
            "<bpmn:timeCycle>R5/PT1H</bpmn:timeCycle>",
        );
    let d = parse(&xml).expect("deploys");
    let p = &d.processes[0];
    let mut i = Instance::default();
    let w = start(p, &mut i, json!({"operatorId": "u1", "chatId": "c9"}));
    let (task, mut remind, escalate) = match &w[..] {
        [
            Wait::Timer {
                token: e,
                due: 3_600_000,
                ..
            },
            Wait::Timer {
                token: r,
                due: 60_000,
                ..
            },
            Wait::UserTask { token: t, .. },
        ] => (*t, *r, *e),
        other => panic!("{other:?}"),
    };
    // R3: the reminder fires three times, a minute apart, each time starting `notify`.
    let mut now = 60_000;
    for n in 1..=3 {
        let s = apply(p, &mut i, Command::FireTimer { token: remind }, now).expect("remind");
        let jobs = s
            .waits
            .iter()
            .filter(|w| matches!(w, Wait::Job { task_type, .. } if task_type == "notify"))
            .count();
        assert_eq!(jobs, 1, "firing {n}");
        let next: Vec<_> = s
            .waits
            .iter()
            .filter_map(|w| match w {
                Wait::Timer {
                    token,
                    element,
                    due,
                } if element == "remind" => Some((*token, *due)),
                _ => None,
            })
            .collect();
        if n < 3 {
            assert_eq!(next.len(), 1, "re-armed after firing {n}: {:?}", s.waits);
            assert_eq!(next[0].1, now + 60_000);
            remind = next[0].0;
        } else {
            assert!(next.is_empty(), "R3 fires three times: {:?}", s.waits);
        }
        assert!(i.tokens.iter().any(|t| t.id == task), "the task stays");
        now += 60_000;
    }
    // An interrupting cycle fires once: the task is cancelled, the reminder with it.
    let s = apply(p, &mut i, Command::FireTimer { token: escalate }, 3_600_000).expect("escalate");
    assert_eq!(s.cancelled, vec![task]);
    assert!(!s.waits.iter().any(|w| matches!(w, Wait::Timer { .. })));
    assert!(
        !i.tokens
            .iter()
            .any(|t| t.element == "remind" || t.element == "escalate")
    );
}

#[test]
fn a_cycle_timer_is_dropped_when_its_task_completes() {
    let xml = SCOPES.replace(
        "<bpmn:timeDuration>PT1M</bpmn:timeDuration>",
        "<bpmn:timeCycle>R/PT1M</bpmn:timeCycle>",
    );
    let d = parse(&xml).expect("deploys");
    let p = &d.processes[0];
    let mut i = Instance::default();
    let w = start(p, &mut i, json!({"operatorId": "u1", "chatId": "c9"}));
    let (task, remind) = match &w[..] {
        [
            Wait::Timer { .. },
            Wait::Timer { token: r, .. },
            Wait::UserTask { token: t, .. },
        ] => (*t, *r),
        other => panic!("{other:?}"),
    };
    // Unbounded: it keeps re-arming.
    let s = apply(p, &mut i, Command::FireTimer { token: remind }, 60_000).expect("remind");
    let again = s
        .waits
        .iter()
        .find_map(|w| match w {
            Wait::Timer { token, element, .. } if element == "remind" => Some(*token),
            _ => None,
        })
        .expect("re-armed");
    let s = apply(
        p,
        &mut i,
        Command::Complete {
            token: task,
            variables: json!({}),
        },
        90_000,
    )
    .expect("complete");
    assert!(s.cancelled.contains(&again), "{:?}", s.cancelled);
    assert_eq!(
        apply(p, &mut i, Command::FireTimer { token: again }, 120_000),
        Err(RunError::UnknownToken(again))
    );
}

#[test]
fn cycles_are_checked_at_deploy() {
    for (cycle, ok) in [
        ("R3/PT10M", true),
        ("R/PT1H", true),
        ("R0/PT1M", false),
        ("R3/PT0S", false),
        ("3/PT1M", false),
        ("R3", false),
    ] {
        let xml = SCOPES.replace(
            "<bpmn:timeDuration>PT1M</bpmn:timeDuration>",
            &format!("<bpmn:timeCycle>{cycle}</bpmn:timeCycle>"),
        );
        assert_eq!(parse(&xml).is_ok(), ok, "{cycle}");
    }
    assert_eq!(
        ferrydesk_bpmn::parse_cycle("R3/PT10M"),
        Some((Some(3), 600_000))
    );
    assert_eq!(ferrydesk_bpmn::parse_cycle("R/PT1S"), Some((None, 1_000)));
}

/// A subprocess whose parallel split runs into an end event of `kind` on its first branch while
/// its second branch (a service task) is still queued in the same command.
fn ended_subprocess(end: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:zeebe="http://camunda.org/schema/zeebe/1.0" id="d">
  <bpmn:error id="err" errorCode="boom" />
  <bpmn:process id="p" isExecutable="true">
    <bpmn:startEvent id="s" />
    <bpmn:subProcess id="sub">
      <bpmn:startEvent id="sub_s" />
      <bpmn:parallelGateway id="fork" />
      <bpmn:endEvent id="stop">{end}</bpmn:endEvent>
      <bpmn:serviceTask id="orphan"><bpmn:extensionElements><zeebe:taskDefinition type="orphan" /></bpmn:extensionElements></bpmn:serviceTask>
      <bpmn:endEvent id="sub_e" />
      <bpmn:sequenceFlow id="g1" sourceRef="sub_s" targetRef="fork" />
      <bpmn:sequenceFlow id="g2" sourceRef="fork" targetRef="stop" />
      <bpmn:sequenceFlow id="g3" sourceRef="fork" targetRef="orphan" />
      <bpmn:sequenceFlow id="g4" sourceRef="orphan" targetRef="sub_e" />
    </bpmn:subProcess>
    <bpmn:boundaryEvent id="caught" attachedToRef="sub"><bpmn:errorEventDefinition errorRef="err" /></bpmn:boundaryEvent>
    <bpmn:endEvent id="done" />
    <bpmn:endEvent id="gave_up" />
    <bpmn:sequenceFlow id="f1" sourceRef="s" targetRef="sub" />
    <bpmn:sequenceFlow id="f2" sourceRef="sub" targetRef="done" />
    <bpmn:sequenceFlow id="f3" sourceRef="caught" targetRef="gave_up" />
  </bpmn:process>
</bpmn:definitions>"#
    )
}

/// A terminate or error end event ends its subprocess: a parallel branch of that subprocess
/// still queued in the same command enters nothing afterwards (before: the service task was
/// entered after the subprocess had completed, an orphan token with a job).
#[test]
fn an_ended_subprocess_drops_its_queued_branches() {
    for (end, after) in [
        ("<bpmn:terminateEventDefinition />", "done"),
        (r#"<bpmn:errorEventDefinition errorRef="err" />"#, "gave_up"),
    ] {
        let d = parse(&ended_subprocess(end)).expect("deploys");
        let p = &d.processes[0];
        let mut i = Instance::default();
        let w = start(p, &mut i, json!({}));
        assert!(w.is_empty(), "{end}: no job for the ended branch: {w:?}");
        assert!(i.completed, "{end}: the instance completed: {:?}", i.tokens);
        assert!(i.tokens.is_empty(), "{end}: {:?}", i.tokens);
        assert!(!i.history.iter().any(|h| h == "orphan"), "{:?}", i.history);
        assert_eq!(i.history.last().map(String::as_str), Some(after));
    }
}

/// The engine's per-command budget: `apply_within` allows what is left of it and `Step::entries`
/// reports what a walk used; past the allowance the walk fails with the budget error.
#[test]
fn apply_within_counts_and_bounds_element_entries() {
    let d = parse(PARALLEL).expect("deploys");
    let p = &d.processes[0];
    let start = || Command::Start {
        start: None,
        variables: json!({}),
    };
    let mut i = Instance::default();
    let used = apply(p, &mut i, start(), 0).expect("start").entries;
    assert!(used >= 3, "{used}");
    let mut j = Instance::default();
    let step = ferrydesk_bpmn::run::apply_within(p, &mut j, start(), 0, used).expect("enough");
    assert_eq!(step.entries, used);
    let mut k = Instance::default();
    let r = ferrydesk_bpmn::run::apply_within(p, &mut k, start(), 0, used - 1);
    assert!(matches!(r, Err(RunError::Budget { .. })), "{r:?}");
}
