//! Property tests (stable Rust, inside `cargo test`): random and mutated BPMN files through
//! parse and deploy checks, random FEEL text and random expression trees through compile and
//! evaluation. None may panic, and each case is bounded in time.

use std::time::{Duration, Instant};

use ferrydesk_bpmn::feel;
use ferrydesk_bpmn::run::{Command, Instance, apply};
use proptest::prelude::*;
use serde_json::json;

const SAMPLE: &str = include_str!("modeler_sample.bpmn");
const BENCH: &str = include_str!("bench_process.bpmn");
const LIMIT: Duration = Duration::from_secs(1);

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Parses and, when it deploys, starts every process: no panic, within the time limit.
fn deploy_and_start(xml: &str) {
    let t = Instant::now();
    if let Ok(d) = ferrydesk_bpmn::parse(xml) {
        for p in &d.processes {
            let mut i = Instance::default();
            let _ = apply(
                p,
                &mut i,
                Command::Start {
                    start: None,
                    variables: json!({"amount": 5, "chat": {"channel": "widget"}}),
                },
                1_795_564_800_000,
            );
        }
    }
    assert!(t.elapsed() < LIMIT, "took {:?}", t.elapsed());
}

/// A FEEL-ish token soup.
fn feel_text() -> impl Strategy<Value = String> {
    let atom = prop_oneof![
        Just("1".to_owned()),
        Just("2.5".to_owned()),
        Just("\"a\"".to_owned()),
        Just("x".to_owned()),
        Just("s".to_owned()),
        Just("l".to_owned()),
        Just("now()".to_owned()),
        Just("duration(\"P999999D\")".to_owned()),
        Just("duration(\"P1Y\")".to_owned()),
        Just("date and time(\"9999-12-31T23:59:59Z\")".to_owned()),
        Just("null".to_owned()),
        Just("true".to_owned()),
        "[a-z(\\[\\]),.+*/<>=! \"-]{0,6}",
    ];
    let op = prop_oneof![
        Just(" + "),
        Just(" - "),
        Just(" * "),
        Just(" / "),
        Just(" = "),
        Just(" < "),
        Just(" and "),
        Just(" or "),
        Just(" in "),
        Just(", "),
        Just("("),
        Just(")"),
        Just("["),
        Just("]"),
        Just("-"),
    ];
    prop::collection::vec((atom, op), 0..40).prop_map(|parts| {
        let mut s = String::from("=");
        for (a, o) in parts {
            s.push_str(&a);
            s.push_str(o);
        }
        s
    })
}

/// A random, well-formed expression tree (as text), up to a random depth.
fn feel_tree() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        any::<i32>().prop_map(|n| n.to_string()),
        Just("x".to_owned()),
        Just("s".to_owned()),
        Just("l".to_owned()),
        Just("now()".to_owned()),
        Just("duration(\"P3000000D\")".to_owned()),
        Just("duration(\"PT1H\")".to_owned()),
        "\"[a-z]{0,5}\"",
    ];
    leaf.prop_recursive(8, 256, 4, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone(), "[-+*/=<>]|and|or|!=|<=")
                .prop_map(|(a, b, o)| format!("({a} {o} {b})")),
            inner.clone().prop_map(|a| format!("-{a}")),
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
            (inner.clone(), inner.clone(), inner.clone())
                .prop_map(|(c, a, b)| format!("if {c} then {a} else {b}")),
            (
                prop_oneof![
                    Just("string"),
                    Just("count"),
                    Just("sum"),
                    Just("upper case"),
                    Just("string length"),
                    Just("number"),
                    Just("is defined"),
                    Just("duration"),
                    Just("date and time"),
                ],
                inner.clone()
            )
                .prop_map(|(f, a)| format!("{f}({a})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("substring({a}, {b})")),
            (inner.clone(), inner).prop_map(|(a, b)| format!("{a} in {b}")),
        ]
    })
}

fn compile_and_eval(src: &str) {
    let vars = json!({"x": 3, "s": "x".repeat(100_000), "l": [1, 2, 3]});
    let t = Instant::now();
    if let Ok(e) = feel::compile(src) {
        let _ = e.eval(&vars, 1_795_564_800_000);
        let _ = e.eval(&vars, i64::MAX);
        let _ = e.eval(&vars, i64::MIN);
    }
    assert!(t.elapsed() < LIMIT, "{src}: took {:?}", t.elapsed());
}

/// A random graph of exclusive gateways (`g…`, passing the token on) and service tasks (`t…`,
/// waiting), wired by `edges`, behind a none start event leading to node 0.
fn graph_xml(kinds: &[bool], edges: &[(usize, usize)]) -> String {
    let n = kinds.len();
    let name = |i: usize| {
        if kinds[i] {
            format!("t{i}")
        } else {
            format!("g{i}")
        }
    };
    let mut body = String::from(
        r#"<bpmn:startEvent id="s" /><bpmn:sequenceFlow id="f_s" sourceRef="s" targetRef="N0" />"#,
    )
    .replace("N0", &name(0));
    for (i, task) in kinds.iter().enumerate() {
        let out: Vec<(usize, usize)> = edges
            .iter()
            .enumerate()
            .filter(|(_, (a, _))| *a % n == i)
            .map(|(k, (_, b))| (k, *b % n))
            .collect();
        if *task {
            body.push_str(&format!(
                r#"<bpmn:serviceTask id="t{i}"><bpmn:extensionElements><zeebe:taskDefinition type="x" /></bpmn:extensionElements></bpmn:serviceTask>"#
            ));
        } else {
            let default = out
                .first()
                .map(|(k, _)| format!(r#" default="e{k}""#))
                .unwrap_or_default();
            body.push_str(&format!(r#"<bpmn:exclusiveGateway id="g{i}"{default} />"#));
        }
        for (j, (k, b)) in out.iter().enumerate() {
            let cond = if !*task && j > 0 {
                "<bpmn:conditionExpression>=x > 1</bpmn:conditionExpression>"
            } else {
                ""
            };
            body.push_str(&format!(
                r#"<bpmn:sequenceFlow id="e{k}" sourceRef="{}" targetRef="{}">{cond}</bpmn:sequenceFlow>"#,
                name(i),
                name(*b)
            ));
        }
    }
    format!(
        r#"<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:zeebe="http://camunda.org/schema/zeebe/1.0"><bpmn:process id="p">{body}</bpmn:process></bpmn:definitions>"#
    )
}

/// Whether the gateways alone (edges between two gateways) contain a cycle (Kahn's algorithm).
fn gateway_cycle(kinds: &[bool], edges: &[(usize, usize)]) -> bool {
    let n = kinds.len();
    let es: Vec<(usize, usize)> = edges
        .iter()
        .map(|(a, b)| (a % n, b % n))
        .filter(|(a, b)| !kinds[*a] && !kinds[*b])
        .collect();
    let mut indeg = vec![0; n];
    for (_, b) in &es {
        indeg[*b] += 1;
    }
    let mut ready: Vec<usize> = (0..n).filter(|i| !kinds[*i] && indeg[*i] == 0).collect();
    let mut seen = 0;
    while let Some(v) = ready.pop() {
        seen += 1;
        for (a, b) in &es {
            if *a == v {
                indeg[*b] -= 1;
                if indeg[*b] == 0 {
                    ready.push(*b);
                }
            }
        }
    }
    seen < kinds.iter().filter(|k| !**k).count()
}

proptest! {
    #![proptest_config(config())]

    /// Deploy refuses exactly the graphs whose gateways loop; an accepted graph of exclusive
    /// gateways and tasks never runs out of the step budget (each entry moves forward).
    #[test]
    fn loops_without_wait_states_are_refused_exactly(
        kinds in prop::collection::vec(any::<bool>(), 1..10),
        edges in prop::collection::vec((0usize..10, 0usize..10), 0..20),
    ) {
        let xml = graph_xml(&kinds, &edges);
        let t = Instant::now();
        let parsed = ferrydesk_bpmn::parse(&xml);
        let looping = gateway_cycle(&kinds, &edges);
        prop_assert_eq!(parsed.is_err(), looping, "{:?}\n{}", parsed.as_ref().err(), xml);
        if let Ok(d) = parsed {
            let mut i = Instance::default();
            let r = apply(
                &d.processes[0],
                &mut i,
                Command::Start { start: None, variables: json!({}) },
                0,
            );
            prop_assert!(
                !matches!(r, Err(ferrydesk_bpmn::run::RunError::Budget { .. })),
                "{:?}", r
            );
        }
        prop_assert!(t.elapsed() < LIMIT);
    }

    #[test]
    fn feel_text_never_panics(src in feel_text()) {
        compile_and_eval(&src);
    }

    #[test]
    fn feel_trees_never_panic(src in feel_tree()) {
        compile_and_eval(&format!("={src}"));
    }

    #[test]
    fn arbitrary_text_never_panics(src in ".{0,200}") {
        compile_and_eval(&src);
        deploy_and_start(&src);
    }

    /// A real file with a slice cut out, replaced or duplicated.
    #[test]
    fn mutated_bpmn_never_panics(
        which in 0usize..2,
        at in 0.0f64..1.0,
        len in 0usize..400,
        insert in prop_oneof![
            Just(String::new()),
            Just("<bpmn:exclusiveGateway id=\"start\" />".to_owned()),
            Just("<bpmn:sequenceFlow id=\"z\" sourceRef=\"end\" targetRef=\"start\" />".to_owned()),
            Just("<a><a><a>".to_owned()),
            Just("=((((".to_owned()),
            Just("&amp;&#0;&#xFFFFFFFF;&bogus;".to_owned()),
            ".{0,30}",
        ],
        repeat in 1usize..4,
    ) {
        let base = if which == 0 { SAMPLE } else { BENCH };
        let mut from = ((base.len() as f64) * at) as usize;
        while !base.is_char_boundary(from) {
            from -= 1;
        }
        let mut to = (from + len).min(base.len());
        while !base.is_char_boundary(to) {
            to -= 1;
        }
        let xml = format!("{}{}{}", &base[..from], insert.repeat(repeat), &base[to..]);
        deploy_and_start(&xml);
        let dup = format!("{}{}{}", &base[..to], &base[from..to], &base[to..]);
        deploy_and_start(&dup);
    }
}
