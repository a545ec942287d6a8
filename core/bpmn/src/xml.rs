//! A small namespace-aware element tree over quick-xml: enough for BPMN files, where element
//! namespaces matter (BPMN, Zeebe, diagram interchange) and attributes are unprefixed.

use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;

#[derive(Debug, Clone, Default)]
pub struct Node {
    pub ns: String,
    pub name: String,
    /// Attributes by local name (prefixes dropped).
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Node>,
    pub text: String,
    /// 1-based line of the start tag.
    pub line: usize,
}

impl Node {
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn child(&self, ns: &str, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.ns == ns && c.name == name)
    }
    pub fn children_named<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
    ) -> impl Iterator<Item = &'a Node> {
        self.children
            .iter()
            .filter(move |c| c.ns == ns && c.name == name)
    }
}

fn local(s: &str) -> String {
    match s.rsplit_once(':') {
        Some((_, l)) => l.to_owned(),
        None => s.to_owned(),
    }
}

/// How deeply elements may nest. Modeler files nest about 10 deep (subprocesses inside
/// subprocesses add a few levels each); the limit keeps the tree, and the recursive walks over
/// it (validation, drop), far away from the thread's stack size.
pub const MAX_DEPTH: usize = 128;

/// Parses a document into its root element.
pub fn parse(text: &str) -> Result<Node, String> {
    let mut reader = NsReader::from_str(text);
    let mut stack: Vec<Node> = Vec::new();
    // Lines are counted incrementally (positions only grow): counting from the start for each
    // element would make a large file quadratic.
    let (mut counted_to, mut lines) = (0usize, 1usize);
    loop {
        let pos = (reader.buffer_position() as usize).min(text.len());
        if pos > counted_to {
            lines += text.as_bytes()[counted_to..pos]
                .iter()
                .filter(|b| **b == b'\n')
                .count();
            counted_to = pos;
        }
        let (ns, ev) = reader
            .read_resolved_event()
            .map_err(|e| format!("line {}: {e}", lines))?;
        let ns = match ns {
            ResolveResult::Bound(n) => n.as_ref().to_owned(),
            _ => String::new(),
        };
        match ev {
            Event::Start(e) => {
                let node = element(&ns, &e, lines)?;
                if stack.len() >= MAX_DEPTH {
                    return Err(format!(
                        "line {}: elements nest deeper than {MAX_DEPTH} levels",
                        lines
                    ));
                }
                stack.push(node);
            }
            Event::Empty(e) => {
                let node = element(&ns, &e, lines)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(node),
                    None => return Ok(node),
                }
            }
            Event::End(_) => {
                let node = stack.pop().ok_or("unbalanced end tag")?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(node),
                    None => return Ok(node),
                }
            }
            Event::Text(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t.xml10_content());
                }
            }
            Event::CData(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t);
                }
            }
            Event::GeneralRef(r) => {
                let c = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    _ => match &*r {
                        "lt" => "<".into(),
                        "gt" => ">".into(),
                        "amp" => "&".into(),
                        "quot" => "\"".into(),
                        "apos" => "'".into(),
                        other => return Err(format!("unknown entity &{other};")),
                    },
                };
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&c);
                }
            }
            Event::Eof => return Err("the document ends before its root element is closed".into()),
            _ => {}
        }
    }
}

fn element(ns: &str, e: &quick_xml::events::BytesStart<'_>, line: usize) -> Result<Node, String> {
    let mut attrs = Vec::new();
    for a in e.attributes() {
        let a = a.map_err(|e| format!("line {line}: {e}"))?;
        let key = a.key.as_ref().to_owned();
        if key == "xmlns" || key.starts_with("xmlns:") {
            continue;
        }
        let value = a
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|e| format!("line {line}: attribute `{key}`: {e}"))?
            .into_owned();
        attrs.push((local(&key), value));
    }
    Ok(Node {
        ns: ns.to_owned(),
        name: local(e.name().as_ref()),
        attrs,
        children: Vec::new(),
        text: String::new(),
        line,
    })
}
