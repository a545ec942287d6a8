use std::time::Duration;

/// Errors of the desk services. The HTTP layer maps each variant to a status and a stable code;
/// store errors are logged there and never shown to clients.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} not found")]
    NotFound { what: &'static str },
    #[error("authentication required")]
    Unauthenticated,
    #[error("{0}")]
    Forbidden(String),
    /// The request conflicts with the current state (chat taken, limit reached, …).
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// Input that names the offending field.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{what} is larger than {limit} bytes")]
    TooLarge { what: &'static str, limit: u64 },
    #[error("too many attempts; retry in {} s", retry_after.as_secs())]
    RateLimited { retry_after: Duration },
    #[error(transparent)]
    Store(#[from] ferrydesk_store::Error),
    #[error("blob store: {0}")]
    Blob(#[from] std::io::Error),
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Error {
        Error::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Error {
        Error::Conflict {
            code,
            message: message.into(),
        }
    }
    pub fn forbidden(message: impl Into<String>) -> Error {
        Error::Forbidden(message.into())
    }
    pub fn not_found(what: &'static str) -> Error {
        Error::NotFound { what }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
