//! Payload encoding: JSON as is, or protobuf through a `.proto` compiled at run time.

use std::path::Path;

use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};
use serde_json::Value;

/// How payloads are encoded and decoded.
#[derive(Debug, Clone)]
pub enum Codec {
    /// JSON bytes on the wire.
    Json,
    /// Protobuf bytes, converted from/to JSON with the canonical proto3 JSON mapping.
    Proto {
        /// The type of requests and notifies (`--type`).
        request: Option<MessageDescriptor>,
        /// The type of responses (`--response-type`).
        response: Option<MessageDescriptor>,
        /// The type of pushes (`--push-type`).
        push: Option<MessageDescriptor>,
    },
}

/// Compiles `proto` (imports resolved from its folder and `includes`) and looks up the types.
///
/// # Errors
///
/// A `.proto` that does not compile, or a type it does not define.
pub fn proto_codec(
    proto: &Path,
    includes: &[std::path::PathBuf],
    request: Option<&str>,
    response: Option<&str>,
    push: Option<&str>,
) -> Result<Codec, String> {
    let dir = proto.parent().unwrap_or(Path::new("."));
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let mut paths = vec![dir.to_path_buf()];
    paths.extend(includes.iter().cloned());
    let mut compiler =
        protox::Compiler::new(paths).map_err(|e| format!("{}: {e}", proto.display()))?;
    compiler.include_imports(true);
    let name = proto.file_name().unwrap_or(proto.as_os_str());
    compiler
        .open_file(name)
        .map_err(|e| format!("{}: {e}", proto.display()))?;
    let pool = compiler.descriptor_pool();
    let find = |name: Option<&str>| -> Result<Option<MessageDescriptor>, String> {
        name.map(|n| {
            pool.get_message_by_name(n)
                .ok_or_else(|| format!("no message {n:?} in {}{}", proto.display(), known(&pool)))
        })
        .transpose()
    };
    Ok(Codec::Proto {
        request: find(request)?,
        response: find(response)?,
        push: find(push)?,
    })
}

fn known(pool: &DescriptorPool) -> String {
    let names: Vec<String> = pool
        .all_messages()
        .map(|m| m.full_name().to_owned())
        .collect();
    format!(" (it defines: {})", names.join(", "))
}

impl Codec {
    /// Encodes a JSON text (an empty text is `{}`) as a request or notify payload.
    ///
    /// # Errors
    ///
    /// Invalid JSON, or JSON that does not fit the protobuf type.
    pub fn encode(&self, json: Option<&str>) -> Result<Vec<u8>, String> {
        let json = json
            .map(str::trim)
            .filter(|j| !j.is_empty())
            .unwrap_or("{}");
        match self {
            Codec::Json => {
                let v: Value =
                    serde_json::from_str(json).map_err(|e| format!("bad JSON payload: {e}"))?;
                serde_json::to_vec(&v).map_err(|e| e.to_string())
            }
            Codec::Proto { request, .. } => {
                let desc = request
                    .as_ref()
                    .ok_or("a protobuf payload needs --type pkg.Msg")?;
                let mut de = serde_json::Deserializer::from_str(json);
                let msg = DynamicMessage::deserialize(desc.clone(), &mut de)
                    .map_err(|e| format!("payload is not a {}: {e}", desc.full_name()))?;
                de.end()
                    .map_err(|e| format!("trailing data after the payload: {e}"))?;
                Ok(msg.encode_to_vec())
            }
        }
    }

    /// Decodes a response payload to JSON.
    pub fn decode_response(&self, bytes: &[u8]) -> Value {
        match self {
            Codec::Json => json_or_text(bytes),
            Codec::Proto { response, .. } => proto_or_hex(response.as_ref(), bytes),
        }
    }

    /// Decodes a push payload to JSON.
    pub fn decode_push(&self, bytes: &[u8]) -> Value {
        match self {
            Codec::Json => json_or_text(bytes),
            Codec::Proto { push, .. } => proto_or_hex(push.as_ref(), bytes),
        }
    }
}

/// JSON bytes as a value; anything else as a string (lossy UTF-8).
fn json_or_text(bytes: &[u8]) -> Value {
    if bytes.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// Protobuf bytes decoded with `desc`; without a type (or when they do not decode) their hex.
fn proto_or_hex(desc: Option<&MessageDescriptor>, bytes: &[u8]) -> Value {
    if let Some(desc) = desc {
        if let Ok(msg) = DynamicMessage::decode(desc.clone(), bytes) {
            if let Ok(v) = serde_json::to_value(&msg) {
                return v;
            }
        }
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    serde_json::json!({ "hex": hex })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_and_errors() {
        let c = Codec::Json;
        assert_eq!(c.encode(Some(r#" {"a": 1} "#)).unwrap(), br#"{"a":1}"#);
        assert_eq!(c.encode(None).unwrap(), b"{}");
        assert!(c.encode(Some("{nope")).is_err());
        assert_eq!(c.decode_response(b"[1]"), serde_json::json!([1]));
        assert_eq!(c.decode_response(b"hi"), serde_json::json!("hi"));
        assert_eq!(c.decode_push(b""), Value::Null);
    }

    #[test]
    fn proto_without_type_shows_hex() {
        assert_eq!(
            proto_or_hex(None, &[1, 0xab]),
            serde_json::json!({"hex": "01ab"})
        );
    }
}
