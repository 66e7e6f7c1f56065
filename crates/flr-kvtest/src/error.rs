//! Key Vault's error answers: `{"error":{"code","message","innererror":{"code"}}}`
//! (`innererror` spelled exactly so: azure-core reads it case-sensitively).

use serde_json::{json, Value};

/// One refusal, as the service would send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KvError {
    pub(crate) status: u16,
    pub(crate) code: String,
    pub(crate) message: String,
    pub(crate) inner: Option<String>,
}

impl KvError {
    pub(crate) fn new(status: u16, code: &str, message: impl Into<String>) -> KvError {
        KvError {
            status,
            code: code.to_string(),
            message: message.into(),
            inner: None,
        }
    }

    pub(crate) fn with_inner(mut self, inner: &str) -> KvError {
        self.inner = Some(inner.to_string());
        self
    }

    pub(crate) fn bad_parameter(message: impl Into<String>) -> KvError {
        KvError::new(400, "BadParameter", message)
    }

    pub(crate) fn body(&self) -> Value {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(inner) = &self.inner {
            error["innererror"] = json!({ "code": inner });
        }
        json!({ "error": error })
    }
}
