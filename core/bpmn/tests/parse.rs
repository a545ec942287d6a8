//! BPMN files as Camunda Modeler saves them parse into the model; what the engine cannot run is
//! rejected with the element id and the reason.

use ferrydesk_bpmn::{BoundaryTrigger, EndKind, Kind, StartTrigger, Timer, parse};

const CREATE_CASE: &str = include_str!("modeler_sample.bpmn");
const BENCH: &str = include_str!("bench_process.bpmn");

#[test]
fn the_first_party_process_parses_with_its_zeebe_extensions() {
    let d = parse(CREATE_CASE).expect("deploys");
    let p = &d.processes[0];
    assert_eq!(p.id, "create-case");
    assert_eq!(
        p.elements["StartEvent_chat"].name.as_deref(),
        Some("Operator chose \"Create case\"")
    );
    match &p.elements["Task_create_case"].kind {
        Kind::ServiceTask {
            task_type,
            retries,
            headers,
        } => {
            assert_eq!(task_type, "plugin:create-case/create-case");
            assert_eq!(*retries, 3);
            assert_eq!(headers.get("mapping").map(String::as_str), Some("default"));
        }
        other => panic!("{other:?}"),
    }
    let io = &p.elements["Task_create_case"].io;
    assert_eq!(io.inputs, vec![("=chat.id".to_owned(), "chat".to_owned())]);
    assert_eq!(
        io.outputs,
        vec![("=subject".to_owned(), "caseSubject".to_owned())]
    );
    assert_eq!(
        p.flows["Flow_high"].condition.as_deref(),
        Some("=priority = \"high\" and count(messages) > 2")
    );
    assert_eq!(
        p.elements["Gateway_priority"].kind,
        Kind::ExclusiveGateway {
            default: Some("Flow_normal".into())
        }
    );
    assert!(matches!(
        &p.elements["Task_review"].kind,
        Kind::UserTask { assignee: Some(a), candidate_groups: Some(g), .. } if a == "=operator.id" && g == "supervisors"
    ));
    assert_eq!(
        p.elements["Timer_escalate"].kind,
        Kind::BoundaryEvent {
            attached_to: "Task_review".into(),
            interrupting: false,
            trigger: BoundaryTrigger::Timer(Timer::Duration("PT1H".into())),
        }
    );
    assert_eq!(
        p.elements["Catch_client_replied"].kind,
        Kind::IntermediateMessage {
            message: "client-replied".into(),
            correlation_key: Some("=chat.id".into()),
        }
    );
    assert_eq!(
        d.messages["Message_client_replied"]
            .correlation_key
            .as_deref(),
        Some("=chat.id")
    );
    assert_eq!(p.elements["End_done"].kind, Kind::EndEvent(EndKind::None));
    assert_eq!(
        p.elements["StartEvent_chat"].kind,
        Kind::StartEvent(StartTrigger::None)
    );
    // The diagram is ignored: no element comes from it.
    assert!(!p.elements.contains_key("StartEvent_chat_di"));
}

#[test]
fn the_benchmark_process_parses() {
    let d = parse(BENCH).expect("deploys");
    let p = &d.processes[0];
    assert_eq!(p.elements.len(), 6);
    assert_eq!(
        p.flows["f_vip"].condition.as_deref(),
        Some("=amount > 1000")
    );
    assert_eq!(p.outgoing("gw").count(), 2);
}

fn problems(xml: &str) -> Vec<(String, String)> {
    parse(xml)
        .expect_err("must be rejected")
        .problems
        .into_iter()
        .map(|p| (p.element, p.message))
        .collect()
}

#[test]
fn unsupported_elements_are_named() {
    let xml = BENCH.replace(
        r#"<bpmn:exclusiveGateway id="gw" name="VIP?" default="f_normal" />"#,
        r#"<bpmn:inclusiveGateway id="gw" name="VIP?" default="f_normal" />"#,
    );
    let p = problems(&xml);
    assert!(
        p.iter()
            .any(|(id, m)| id == "gw" && m.contains("bpmn:inclusiveGateway is not supported")),
        "{p:?}"
    );
    let xml = BENCH.replace(
        r#"<bpmn:endEvent id="end" />"#,
        r#"<bpmn:endEvent id="end"><bpmn:signalEventDefinition id="sig" /></bpmn:endEvent>"#,
    );
    let p = problems(&xml);
    assert!(
        p.iter()
            .any(|(id, m)| id == "end" && m.contains("signalEventDefinition")),
        "{p:?}"
    );
}

#[test]
fn structural_mistakes_are_named() {
    let xml = BENCH.replace(r#"targetRef="notifyVip""#, r#"targetRef="nowhere""#);
    let p = problems(&xml);
    assert!(
        p.iter()
            .any(|(id, m)| id == "f_vip" && m.contains("`nowhere`")),
        "{p:?}"
    );

    let xml = BENCH.replace(r#" default="f_normal""#, "");
    let p = problems(&xml);
    assert!(
        p.iter()
            .any(|(id, m)| id == "f_normal" && m.contains("without a condition")),
        "{p:?}"
    );

    let xml = BENCH.replace(r#"<zeebe:taskDefinition type="notify.vip" />"#, "");
    let p = problems(&xml);
    assert!(
        p.iter()
            .any(|(id, m)| id == "notifyVip" && m.contains("zeebe:taskDefinition")),
        "{p:?}"
    );

    let xml = BENCH.replace("=amount &gt; 1000", "amount &gt; 1000");
    let p = problems(&xml);
    assert!(
        p.iter().any(|(id, m)| id == "f_vip" && m.contains("`=`")),
        "{p:?}"
    );

    let xml = BENCH.replace("=amount &gt; 1000", "=amount &gt;&gt; 1000");
    let p = problems(&xml);
    assert!(
        p.iter()
            .any(|(id, m)| id == "f_vip" && m.contains("condition")),
        "{p:?}"
    );

    let xml = CREATE_CASE.replace("PT1H", "one hour");
    let p = problems(&xml);
    assert!(
        p.iter()
            .any(|(id, m)| id == "Timer_escalate" && m.contains("one hour")),
        "{p:?}"
    );

    let p = problems("<bpmn:definitions");
    assert!(p[0].1.contains("not well-formed"), "{p:?}");
}

/// Every first-party process deploys.
#[test]
fn the_first_party_processes_deploy() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../processes");
    let mut n = 0;
    for f in std::fs::read_dir(dir).expect("processes/") {
        let path = f.expect("entry").path();
        if path.extension().is_some_and(|x| x == "bpmn") {
            let text = std::fs::read_to_string(&path).expect("read");
            if let Err(e) = ferrydesk_bpmn::parse(&text) {
                panic!("{}: {e}", path.display());
            }
            n += 1;
        }
    }
    assert!(n >= 2, "create-case.bpmn and callback.bpmn");
}

/// A second element or flow with an id already used is refused, naming it (before, the later
/// one silently replaced the first: a duplicated flow id dropped the start event's flow and the
/// process ended at once).
#[test]
fn duplicate_ids_are_refused() {
    let xml = BENCH.replace(
        r#"<bpmn:sequenceFlow id="f_end1" sourceRef="notifyVip" targetRef="end" />"#,
        r#"<bpmn:sequenceFlow id="f_start" sourceRef="notifyVip" targetRef="end" />"#,
    );
    let p = problems(&xml);
    assert!(
        p.iter()
            .any(|(id, m)| id == "f_start" && m.contains("used by more than one")),
        "{p:?}"
    );
    let xml = BENCH.replace(
        r#"<bpmn:endEvent id="end" />"#,
        r#"<bpmn:endEvent id="end" /><bpmn:endEvent id="gw" />"#,
    );
    let p = problems(&xml);
    assert!(
        p.iter().any(|(id, m)| id == "gw"
            && m.contains("used by more than one")
            && m.contains("first on line")),
        "{p:?}"
    );
}
