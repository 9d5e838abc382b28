//! A tiny JSON writer for the control channel's replies and events.
//!
//! Owns one `String` it appends to; no locks, no state beyond whether the
//! next value needs a comma before it. Callers open and close objects and
//! arrays in order; keys and string values are escaped (`"`, `\`, control
//! characters), so any process or LWP name gives valid JSON.

use alloc::string::String;
use core::fmt::Write;

/// Builds one JSON text, left to right.
#[derive(Default)]
pub struct JsonWriter {
    text: String,
    /// A value was written at this level: the next one needs a comma.
    after_value: bool,
}

impl JsonWriter {
    pub fn new() -> JsonWriter {
        JsonWriter::default()
    }

    fn separate(&mut self) {
        if self.after_value {
            self.text.push(',');
        }
        self.after_value = false;
    }

    pub fn begin_object(&mut self) -> &mut Self {
        self.separate();
        self.text.push('{');
        self
    }

    pub fn end_object(&mut self) -> &mut Self {
        self.text.push('}');
        self.after_value = true;
        self
    }

    pub fn begin_array(&mut self) -> &mut Self {
        self.separate();
        self.text.push('[');
        self
    }

    pub fn end_array(&mut self) -> &mut Self {
        self.text.push(']');
        self.after_value = true;
        self
    }

    /// An object key; its value comes next.
    pub fn key(&mut self, name: &str) -> &mut Self {
        self.separate();
        escape_into(&mut self.text, name);
        self.text.push(':');
        self
    }

    pub fn string(&mut self, value: &str) -> &mut Self {
        self.separate();
        escape_into(&mut self.text, value);
        self.after_value = true;
        self
    }

    /// A string made by formatting (`0x`-prefixed hex and the like).
    pub fn string_fmt(&mut self, value: core::fmt::Arguments) -> &mut Self {
        let mut formatted = String::new();
        let _ = formatted.write_fmt(value);
        self.string(&formatted)
    }

    pub fn unsigned(&mut self, value: u64) -> &mut Self {
        self.separate();
        let _ = write!(self.text, "{value}");
        self.after_value = true;
        self
    }

    pub fn signed(&mut self, value: i64) -> &mut Self {
        self.separate();
        let _ = write!(self.text, "{value}");
        self.after_value = true;
        self
    }

    pub fn boolean(&mut self, value: bool) -> &mut Self {
        self.separate();
        self.text.push_str(if value { "true" } else { "false" });
        self.after_value = true;
        self
    }

    pub fn null(&mut self) -> &mut Self {
        self.separate();
        self.text.push_str("null");
        self.after_value = true;
        self
    }

    /// A string, or `null` for None.
    pub fn optional_string(&mut self, value: Option<&str>) -> &mut Self {
        match value {
            Some(text) => self.string(text),
            None => self.null(),
        }
    }

    pub fn finish(self) -> String {
        self.text
    }
}

/// Appends `value` to `out` as a quoted JSON string.
pub fn escape_into(out: &mut String, value: &str) {
    out.push('"');
    for character in value.chars() {
        match character {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            control if (control as u32) < 0x20 || control == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", control as u32);
            }
            other => out.push(other),
        }
    }
    out.push('"');
}

/// `{"error":"<message>"}`.
pub fn error_line(message: &str) -> String {
    let mut json = JsonWriter::new();
    json.begin_object()
        .key("error")
        .string(message)
        .end_object();
    json.finish()
}

crate::ktests! {
    fn escapes_quotes_backslashes_and_control_characters() {
        let mut out = String::new();
        escape_into(&mut out, "a\"b\\c\nd\re\tf\u{1}g\u{7f}h\u{8}\u{c}");
        assert_eq!(out, "\"a\\\"b\\\\c\\nd\\re\\tf\\u0001g\\u007fh\\b\\f\"");
        let mut unicode = String::new();
        escape_into(&mut unicode, "é→");
        assert_eq!(unicode, "\"é→\"", "non-ASCII passes through as UTF-8");
    }

    fn writes_nested_objects_and_arrays_with_commas() {
        let mut json = JsonWriter::new();
        json.begin_object()
            .key("ok")
            .begin_array()
            .begin_object()
            .key("pid")
            .unsigned(2)
            .key("name")
            .string("x\"y")
            .key("rep")
            .null()
            .end_object()
            .begin_object()
            .key("flags")
            .begin_array()
            .string("user")
            .string("mpsafe")
            .end_array()
            .key("parked")
            .boolean(false)
            .key("delta")
            .signed(-3)
            .end_object()
            .end_array()
            .end_object();
        assert_eq!(
            json.finish(),
            "{\"ok\":[{\"pid\":2,\"name\":\"x\\\"y\",\"rep\":null},\
             {\"flags\":[\"user\",\"mpsafe\"],\"parked\":false,\"delta\":-3}]}"
        );
        let mut empty = JsonWriter::new();
        empty.begin_object().key("ok").begin_array().end_array().end_object();
        assert_eq!(empty.finish(), "{\"ok\":[]}");
        assert_eq!(error_line("bad \"pid\""), "{\"error\":\"bad \\\"pid\\\"\"}");
    }
}
