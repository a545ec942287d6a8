//! User task forms. A form embedded in the process (`zeebe:userTaskForm`) is either a JSON
//! Schema (an object with `"type": "object"`), used as it is, or a form saved by Camunda
//! Modeler's form editor (Camunda Forms JSON, with `components`), converted to the JSON Schema
//! the web app draws forms from: text fields and areas become strings, number fields numbers,
//! checkboxes booleans, selects and radios enums; `validate.required` makes a field required.

use serde_json::{Map, Value, json};

pub fn to_json_schema(text: &str) -> Result<Value, String> {
    let v: Value = serde_json::from_str(text.trim()).map_err(|e| format!("not valid JSON: {e}"))?;
    if v.get("type").and_then(Value::as_str) == Some("object") {
        return Ok(v);
    }
    let Some(components) = v.get("components").and_then(Value::as_array) else {
        return Err(
            "is neither a JSON Schema (`\"type\": \"object\"`) nor Camunda Forms JSON (`components`)"
                .into(),
        );
    };
    let mut properties = Map::new();
    let mut required = Vec::new();
    for (i, c) in components.iter().enumerate() {
        let ty = c.get("type").and_then(Value::as_str).unwrap_or_default();
        let Some(key) = c.get("key").and_then(Value::as_str) else {
            // Text blocks, spacers, buttons: no value to collect.
            continue;
        };
        let label = c.get("label").and_then(Value::as_str).unwrap_or(key);
        let mut prop = match ty {
            "textfield" => json!({"type": "string"}),
            "textarea" => json!({"type": "string", "format": "textarea"}),
            "number" => json!({"type": "number"}),
            "checkbox" => json!({"type": "boolean"}),
            "datetime" => json!({"type": "string", "format": "date"}),
            "select" | "radio" => {
                let values: Vec<Value> = c
                    .get("values")
                    .and_then(Value::as_array)
                    .map(|vs| vs.iter().filter_map(|o| o.get("value").cloned()).collect())
                    .unwrap_or_default();
                if values.is_empty() {
                    return Err(format!(
                        "components[{i}] (`{key}`): a {ty} needs static values"
                    ));
                }
                json!({"enum": values})
            }
            other => {
                return Err(format!(
                    "components[{i}] (`{key}`): field type `{other}` is not supported (textfield, textarea, number, checkbox, datetime, select, radio)"
                ));
            }
        };
        if let Some(o) = prop.as_object_mut() {
            o.insert("title".into(), Value::String(label.to_owned()));
            if let Some(d) = c.get("defaultValue") {
                o.insert("default".into(), d.clone());
            }
        }
        if c.pointer("/validate/required").and_then(Value::as_bool) == Some(true) {
            required.push(Value::String(key.to_owned()));
        }
        properties.insert(key.to_owned(), prop);
    }
    Ok(json!({"type": "object", "properties": properties, "required": required}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn camunda_forms_become_json_schema() {
        let s = to_json_schema(
            r#"{"components":[{"type":"textfield","key":"answer","label":"Answer","validate":{"required":true}},
               {"type":"select","key":"prio","values":[{"label":"High","value":"high"}]},
               {"type":"text","text":"hello"}],"type":"default"}"#,
        )
        .expect("converts");
        assert_eq!(s["properties"]["answer"]["type"], "string");
        assert_eq!(s["properties"]["prio"]["enum"], json!(["high"]));
        assert_eq!(s["required"], json!(["answer"]));
        assert!(to_json_schema(r#"{"components":[{"type":"filepicker","key":"f"}]}"#).is_err());
    }
}
