//! `ConvertError`: a wire message that does not make a valid core value, and which field is bad.

/// A field of a wire message could not become a core value. `field` is a dotted path from the
/// outermost message converted (`messages[3].prepare.leg.coordinator`), so the sender learns
/// exactly what to fix; `reason` is the core constructor's own explanation.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {reason}")]
pub struct ConvertError {
    pub field: String,
    pub reason: String,
}

impl ConvertError {
    pub fn new(field: impl Into<String>, reason: impl std::fmt::Display) -> ConvertError {
        ConvertError {
            field: field.into(),
            reason: reason.to_string(),
        }
    }

    /// A message field that proto3 leaves absent but the core needs.
    pub fn missing(field: impl Into<String>) -> ConvertError {
        ConvertError::new(field, "is missing")
    }

    /// Puts the path of the enclosing field in front, as the error travels outwards.
    pub fn within(mut self, parent: &str) -> ConvertError {
        self.field = if self.field.is_empty() {
            parent.to_string()
        } else if self.field.starts_with('[') {
            format!("{parent}{}", self.field)
        } else {
            format!("{parent}.{}", self.field)
        };
        self
    }
}

/// Shorthand for the conversions' results.
pub type ConvertResult<T> = Result<T, ConvertError>;
