//! How a request fails: a status and one line of text that says what was wrong, and where.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    /// The kiosk's journal is held by a tamper alert.
    #[error("{0}")]
    Conflict(String),
    /// A signed request no later than the kiosk's last one: replayed, or out of order.
    #[error(
        "kiosk {kiosk}: a request signed at {time} ms, not after its last one ({last} ms): \
         replayed or out of order"
    )]
    Replayed { kiosk: String, time: i64, last: i64 },
    /// The instance is busy; the request may be sent again.
    #[error("{0}")]
    Busy(String),
    #[error("the fleet's database: {0}")]
    Database(String),
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(e: tokio_postgres::Error) -> Self {
        ApiError::Database(e.to_string())
    }
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        ApiError::Database(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Busy(_) => {
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(axum::http::header::RETRY_AFTER, "5")],
                    self.to_string(),
                )
                    .into_response();
            }
            ApiError::Replayed { last, .. } => {
                let last = last.to_string();
                return (
                    StatusCode::CONFLICT,
                    [(selfvend_fleet_wire::LAST_TIME_HEADER, last)],
                    self.to_string(),
                )
                    .into_response();
            }
            ApiError::Database(e) => {
                tracing::error!("database: {e}");
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        (status, self.to_string()).into_response()
    }
}

/// Parses a JSON body, naming where it does not fit.
pub fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("the request body: {e}")))
}
