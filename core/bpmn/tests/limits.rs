//! What an admin's BPMN file cannot do to the server: loops without a wait state are refused at
//! deploy with their elements named; a command's walk is bounded; FEEL and XML nesting and
//! FEEL arithmetic are checked.

use ferrydesk_bpmn::run::{Command, Instance, MAX_STEPS, RunError, Wait, apply};
use ferrydesk_bpmn::{Process, parse};
use serde_json::json;

/// A process around `body` (elements and flows), with a start event `start` to wire.
fn process(body: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
  xmlns:zeebe="http://camunda.org/schema/zeebe/1.0" id="d" targetNamespace="t">
  <bpmn:message id="m" name="chat.message.received">
    <bpmn:extensionElements><zeebe:subscription correlationKey="=chatId" /></bpmn:extensionElements>
  </bpmn:message>
  <bpmn:process id="p" isExecutable="true">
    <bpmn:startEvent id="start" />
    {body}
  </bpmn:process>
</bpmn:definitions>"#
    )
}

fn problems(xml: &str) -> String {
    match parse(xml) {
        Ok(_) => panic!("deployed: {xml}"),
        Err(e) => e.to_string(),
    }
}

/// The issue's process: `gw1 -default-> gw2 -default-> gw1`.
const GATEWAY_LOOP: &str = r#"
    <bpmn:exclusiveGateway id="gw1" default="f2" />
    <bpmn:exclusiveGateway id="gw2" default="f3" />
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="gw1" />
    <bpmn:sequenceFlow id="f2" sourceRef="gw1" targetRef="gw2" />
    <bpmn:sequenceFlow id="f3" sourceRef="gw2" targetRef="gw1" />"#;

#[test]
fn a_loop_without_a_wait_state_is_refused_naming_its_elements() {
    let e = problems(&process(GATEWAY_LOOP));
    assert!(e.contains("`gw1`"), "{e}");
    assert!(e.contains("gw1 → gw2 → gw1"), "{e}");
    assert!(e.contains("no wait state"), "{e}");

    // A gateway looping on itself.
    let e = problems(&process(
        r#"
    <bpmn:parallelGateway id="split" />
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="split" />
    <bpmn:sequenceFlow id="f2" sourceRef="split" targetRef="split" />"#,
    ));
    assert!(e.contains("split → split"), "{e}");

    // Through an embedded subprocess whose inside does not wait either.
    let e = problems(&process(
        r#"
    <bpmn:exclusiveGateway id="gw" />
    <bpmn:subProcess id="sub">
      <bpmn:startEvent id="s2" />
      <bpmn:endEvent id="e2" />
      <bpmn:sequenceFlow id="i1" sourceRef="s2" targetRef="e2" />
    </bpmn:subProcess>
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="gw" />
    <bpmn:sequenceFlow id="f2" sourceRef="gw" targetRef="sub" />
    <bpmn:sequenceFlow id="f3" sourceRef="sub" targetRef="gw" />"#,
    ));
    assert!(e.contains("no wait state"), "{e}");
    assert!(
        e.contains("sub") && e.contains("s2") && e.contains("e2"),
        "{e}"
    );
}

#[test]
fn a_loop_through_a_wait_state_is_fine() {
    for wait in [
        r#"<bpmn:serviceTask id="w"><bpmn:extensionElements><zeebe:taskDefinition type="x" /></bpmn:extensionElements></bpmn:serviceTask>"#,
        r#"<bpmn:userTask id="w" />"#,
        r#"<bpmn:receiveTask id="w" messageRef="m" />"#,
        r#"<bpmn:intermediateCatchEvent id="w"><bpmn:timerEventDefinition><bpmn:timeDuration>PT1M</bpmn:timeDuration></bpmn:timerEventDefinition></bpmn:intermediateCatchEvent>"#,
        r#"<bpmn:callActivity id="w"><bpmn:extensionElements><zeebe:calledElement processId="q" /></bpmn:extensionElements></bpmn:callActivity>"#,
    ] {
        let xml = process(&format!(
            r#"
    <bpmn:exclusiveGateway id="gw1" default="f2" />
    {wait}
    <bpmn:exclusiveGateway id="gw2" default="f4" />
    <bpmn:endEvent id="end" />
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="gw1" />
    <bpmn:sequenceFlow id="f2" sourceRef="gw1" targetRef="w" />
    <bpmn:sequenceFlow id="f3" sourceRef="w" targetRef="gw2" />
    <bpmn:sequenceFlow id="f4" sourceRef="gw2" targetRef="gw1" />
    <bpmn:sequenceFlow id="f5" sourceRef="gw2" targetRef="end"><bpmn:conditionExpression>=done</bpmn:conditionExpression></bpmn:sequenceFlow>"#
        ));
        if let Err(e) = parse(&xml) {
            panic!("{wait}: {e}");
        }
    }
}

/// `stages` parallel splits, each doubling the tokens (two flows into one exclusive merge):
/// no loop, but 2^stages tokens reach the end in one command.
fn doubling(stages: usize) -> String {
    let mut body =
        String::from(r#"<bpmn:sequenceFlow id="f0" sourceRef="start" targetRef="p0" />"#);
    for k in 0..stages {
        body.push_str(&format!(
            r#"
    <bpmn:parallelGateway id="p{k}" />
    <bpmn:exclusiveGateway id="x{k}" default="n{k}" />
    <bpmn:sequenceFlow id="a{k}" sourceRef="p{k}" targetRef="x{k}" />
    <bpmn:sequenceFlow id="b{k}" sourceRef="p{k}" targetRef="x{k}" />
    <bpmn:sequenceFlow id="n{k}" sourceRef="x{k}" targetRef="{next}" />"#,
            next = if k + 1 == stages {
                "end".to_owned()
            } else {
                format!("p{}", k + 1)
            }
        ));
    }
    body.push_str(r#"<bpmn:endEvent id="end" />"#);
    process(&body)
}

fn start(p: &Process, i: &mut Instance) -> Result<Vec<Wait>, RunError> {
    apply(
        p,
        i,
        Command::Start {
            start: None,
            variables: json!({}),
        },
        0,
    )
    .map(|s| s.waits)
}

#[test]
fn a_command_walks_at_most_the_step_budget() {
    // Small fan-outs run to the end.
    let d = parse(&doubling(8)).expect("deploys");
    let mut i = Instance::default();
    start(&d.processes[0], &mut i).expect("runs");
    assert!(i.completed);

    // 2^14 tokens: far past the budget. An error naming an element, not a stack overflow.
    let d = parse(&doubling(14)).expect("deploys: it has no loop");
    let mut i = Instance::default();
    let t = std::time::Instant::now();
    match start(&d.processes[0], &mut i) {
        Err(RunError::Budget { element, limit }) => {
            assert_eq!(limit, MAX_STEPS);
            assert!(!element.is_empty());
        }
        other => panic!("{other:?}"),
    }
    assert!(t.elapsed().as_secs() < 5, "{:?}", t.elapsed());
}

#[test]
fn a_loop_that_bypasses_deploy_is_stopped_by_the_budget() {
    // Build the issue's loop by hand (as a stored definition from before the check would be).
    let mut d = parse(&process(
        r#"
    <bpmn:exclusiveGateway id="gw1" default="f2" />
    <bpmn:exclusiveGateway id="gw2" default="f4" />
    <bpmn:endEvent id="end" />
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="gw1" />
    <bpmn:sequenceFlow id="f2" sourceRef="gw1" targetRef="gw2" />
    <bpmn:sequenceFlow id="f4" sourceRef="gw2" targetRef="end" />"#,
    ))
    .expect("deploys");
    let p = &mut d.processes[0];
    if let Some(f) = p.flows.get_mut("f4") {
        f.target = "gw1".into();
    }
    p.link();
    let mut i = Instance::default();
    match start(p, &mut i) {
        Err(RunError::Budget { limit, .. }) => assert_eq!(limit, MAX_STEPS),
        other => panic!("{other:?}"),
    }
}

#[test]
fn deep_xml_and_deep_feel_are_refused_at_deploy() {
    let deep = format!(
        "<bpmn:definitions xmlns:bpmn=\"http://www.omg.org/spec/BPMN/20100524/MODEL\">{}{}</bpmn:definitions>",
        "<a>".repeat(65_000),
        "</a>".repeat(65_000)
    );
    let e = problems(&deep);
    assert!(e.contains("nest deeper than 128 levels"), "{e}");

    let big = format!(
        "{}{}",
        process(""),
        " ".repeat(ferrydesk_bpmn::MAX_FILE_BYTES)
    );
    let e = problems(&big);
    assert!(e.contains("the limit is"), "{e}");

    let cond = format!("={}x{}", "(".repeat(1000), ")".repeat(1000));
    let e = problems(&process(&format!(
        r#"
    <bpmn:exclusiveGateway id="gw" default="f3" />
    <bpmn:endEvent id="end" />
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="gw" />
    <bpmn:sequenceFlow id="f2" sourceRef="gw" targetRef="end"><bpmn:conditionExpression>{cond}</bpmn:conditionExpression></bpmn:sequenceFlow>
    <bpmn:sequenceFlow id="f3" sourceRef="gw" targetRef="end" />"#
    )));
    assert!(e.contains("`f2`"), "{e}");
    assert!(e.contains("nests deeper than 64 levels"), "{e}");
}

#[test]
fn expressions_are_compiled_once_at_deploy_and_evaluation_errors_fail_the_command() {
    let d = parse(&process(
        r#"
    <bpmn:exclusiveGateway id="gw" default="f3" />
    <bpmn:endEvent id="end" />
    <bpmn:intermediateCatchEvent id="wait">
      <bpmn:timerEventDefinition><bpmn:timeDuration>=string(duration("P999999999999D") + now())</bpmn:timeDuration></bpmn:timerEventDefinition>
    </bpmn:intermediateCatchEvent>
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="gw" />
    <bpmn:sequenceFlow id="f2" sourceRef="gw" targetRef="wait"><bpmn:conditionExpression>=now() + duration("P3000000D") > now()</bpmn:conditionExpression></bpmn:sequenceFlow>
    <bpmn:sequenceFlow id="f3" sourceRef="gw" targetRef="end" />
    <bpmn:sequenceFlow id="f4" sourceRef="wait" targetRef="end" />"#,
    ))
    .expect("deploys");
    let p = &d.processes[0];
    assert!(
        p.expression("=now() + duration(\"P3000000D\") > now()")
            .is_some(),
        "{:?}",
        p.expressions.keys()
    );
    // The condition overflows the date range: an error naming the flow, not `false` (which
    // would have taken the default flow).
    let mut i = Instance::default();
    match start(p, &mut i) {
        Err(RunError::Element { element, message }) => {
            assert_eq!(element, "f2");
            assert!(message.contains("leaves the years"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // The timer's duration overflows: an error, not a timer due at once.
    let mut d2 = d.clone();
    let p2 = &mut d2.processes[0];
    let src = "=now() + duration(\"P3000000D\") > now()";
    let always = ferrydesk_bpmn::feel::compile("=true").expect("compiles");
    p2.expressions.insert(src.to_owned(), always);
    let mut i = Instance::default();
    match start(p2, &mut i) {
        Err(RunError::Element { element, message }) => {
            assert_eq!(element, "wait");
            assert!(message.contains("longer than 20,000 years"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_large_file_deploys_in_bounded_time_and_its_long_walk_stops_at_the_budget() {
    // 20,000 gateways in a chain (about 2.5 MB): everything at deploy is near-linear.
    const N: usize = 20_000;
    let mut body =
        String::from(r#"<bpmn:sequenceFlow id="f_s" sourceRef="start" targetRef="g0" />"#);
    for k in 0..N {
        let next = if k + 1 == N {
            "end".to_owned()
        } else {
            format!("g{}", k + 1)
        };
        body.push_str(&format!(
            "<bpmn:exclusiveGateway id=\"g{k}\" default=\"f{k}\" />\n<bpmn:sequenceFlow id=\"f{k}\" sourceRef=\"g{k}\" targetRef=\"{next}\" />\n"
        ));
    }
    body.push_str(r#"<bpmn:endEvent id="end" />"#);
    let xml = process(&body);
    assert!(xml.len() < ferrydesk_bpmn::MAX_FILE_BYTES);
    let t = std::time::Instant::now();
    let d = parse(&xml).expect("deploys");
    let deploy = t.elapsed();
    let t = std::time::Instant::now();
    let mut i = Instance::default();
    let r = start(&d.processes[0], &mut i);
    let walk = t.elapsed();
    eprintln!(
        "{} bytes, {N} gateways: deploy {deploy:?}, walk to the budget {walk:?}",
        xml.len()
    );
    assert!(matches!(r, Err(RunError::Budget { .. })), "{r:?}");
    assert!(deploy.as_secs() < 10, "{deploy:?}");
    assert!(walk.as_secs() < 5, "{walk:?}");
}
