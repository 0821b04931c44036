//! Helicone metadata sent in a unified request's body (`"helicone": {"session": {...}, "properties": {...}, "user_id": ...}`, the OpenAI SDK's `extra_body`): read like the equivalent headers, and removed before the body goes anywhere.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::error::GatewayError;

/// The body key that carries the metadata.
pub const KEY: &str = "helicone";

/// What a body's `helicone` object said.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BodyMeta {
    pub user_id: Option<String>,
    pub session_id: Option<String>,
    pub session_name: Option<String>,
    pub session_path: Option<String>,
    /// Property name (lower-cased, as header names are) -> value.
    pub properties: BTreeMap<String, String>,
}

fn bad(msg: String) -> GatewayError {
    GatewayError::BadRequest(format!(
        "{msg}; expected \"helicone\": {{\"session\": {{\"id\", \"name\", \"path\"}}, \"properties\": {{name: value}}, \"user_id\": \"...\"}}"
    ))
}

/// A scalar as the text a header would carry.
fn text(v: &Value, at: &str) -> Result<String, GatewayError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(bad(format!(
            "helicone.{at} must be a string, number or boolean, got {other}"
        ))),
    }
}

/// Removes `helicone` from `body` and reads it; `None` when the body has none.
pub fn take(body: &mut Map<String, Value>) -> Result<Option<BodyMeta>, GatewayError> {
    let Some(v) = body.remove(KEY) else {
        return Ok(None);
    };
    let Value::Object(obj) = v else {
        return Err(bad(format!("helicone must be an object, got {v}")));
    };
    let mut meta = BodyMeta::default();
    for (k, v) in obj {
        match k.as_str() {
            "user_id" | "userId" => meta.user_id = Some(text(&v, "user_id")?),
            "properties" => {
                let Value::Object(props) = v else {
                    return Err(bad(format!(
                        "helicone.properties must be an object, got {v}"
                    )));
                };
                for (name, value) in props {
                    let t = text(&value, &format!("properties.{name}"))?;
                    meta.properties.insert(name.to_ascii_lowercase(), t);
                }
            }
            "session" => {
                let Value::Object(session) = v else {
                    return Err(bad(format!("helicone.session must be an object, got {v}")));
                };
                for (sk, sv) in session {
                    let t = text(&sv, &format!("session.{sk}"))?;
                    match sk.as_str() {
                        "id" => meta.session_id = Some(t),
                        "name" => meta.session_name = Some(t),
                        "path" => meta.session_path = Some(t),
                        other => {
                            return Err(bad(format!(
                                "helicone.session.{other} is not a session field (id, name, path)"
                            )))
                        }
                    }
                }
            }
            other => {
                return Err(bad(format!(
                "helicone.{other} is not read by this gateway (session, properties, user_id are)"
            )))
            }
        }
    }
    Ok(Some(meta))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn reads_and_removes_the_helicone_object() {
        let mut b = body(serde_json::json!({"model": "m", "helicone": {
            "session": {"id": "s-1", "name": "Support", "path": "/triage/1"},
            "properties": {"Feature": "search", "tier": 2}, "user_id": "alice"}}));
        let m = take(&mut b).unwrap().unwrap();
        assert!(!b.contains_key("helicone"));
        assert_eq!(m.user_id.as_deref(), Some("alice"));
        assert_eq!(m.session_path.as_deref(), Some("/triage/1"));
        assert_eq!(m.properties["feature"], "search");
        assert_eq!(m.properties["tier"], "2");
        assert!(take(&mut body(serde_json::json!({"model": "m"})))
            .unwrap()
            .is_none());
    }

    #[test]
    fn bad_metadata_is_a_400_naming_the_field() {
        for (v, want) in [
            (serde_json::json!("x"), "helicone must be an object"),
            (
                serde_json::json!({"properties": []}),
                "helicone.properties must be an object",
            ),
            (
                serde_json::json!({"properties": {"a": {"b": 1}}}),
                "helicone.properties.a must be",
            ),
            (
                serde_json::json!({"session": {"idx": "1"}}),
                "helicone.session.idx is not a session field",
            ),
            (
                serde_json::json!({"cache": true}),
                "helicone.cache is not read",
            ),
        ] {
            let e = take(&mut body(serde_json::json!({"helicone": v}))).unwrap_err();
            assert_eq!(e.status(), 400);
            assert!(e.to_string().contains(want), "{e}");
        }
    }
}
