//! Token semantics on the benchmark process and a parallel split/join.

use ferrydesk_bpmn::parse;
use ferrydesk_bpmn::run::{Command, Instance, Wait, apply};
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
                variables: json!({}),
            },
            0,
        )
        .expect("start");
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
        .expect("complete");
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
        .expect("complete");
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
            variables: json!({}),
        },
        0,
    )
    .expect("start"));
    let (t2, ty) = job(&apply(
        p,
        &mut i,
        Command::Complete {
            token: t,
            variables: json!({}),
        },
        0,
    )
    .expect("complete"));
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
            variables: json!({}),
        },
        1_000,
    )
    .expect("start");
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
