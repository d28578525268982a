//! One error type for every route, always answered as `{"error": "..."}` JSON, and the
//! body extractors that turn axum's and serde's rejections into it.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;

use crate::admin::types::ErrorBody;
use crate::cluster::{Rejection, WriteError};

/// The largest request body accepted by default (`[admin] max_body`): a zone of about a
/// million records.
pub const BODY_LIMIT: usize = 64 * 1024 * 1024;

/// Why a request failed; each variant is one HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// 400: malformed input (bad JSON, a zone that does not parse, a bad name).
    #[error("{0}")]
    BadRequest(String),
    /// 401: no token, a wrong token, or no token configured on the node.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: a read token on a write.
    #[error("{0}")]
    Forbidden(String),
    /// 412: `If-Match` names a version the object no longer has.
    #[error("{0}")]
    PreconditionFailed(String),
    /// 404: no such route or object.
    #[error("{0}")]
    NotFound(String),
    /// 405: the route exists, the method does not.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 409: conflicts with the state (a datacenter still in use).
    #[error("{0}")]
    Conflict(String),
    /// 413: the body is over [`BODY_LIMIT`].
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 415: a zone sent as something other than text.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422: well-formed but invalid (wrong types, unknown fields, bad values).
    #[error("{0}")]
    Unprocessable(String),
    /// 503: refused before it was proposed (no leader in time, no quorum): not applied.
    #[error("{0}")]
    Unavailable(String),
    /// 503: proposed but not seen committed in time: it may still apply.
    #[error("{0}")]
    Unknown(String),
    /// 409: a write with the same `Idempotency-Key` is still under way here.
    #[error("{0}")]
    InFlight(String),
    /// 500: a bug.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable(_) | ApiError::Unknown(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::InFlight(_) => StatusCode::CONFLICT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let outcome = match self {
            ApiError::Unknown(_) | ApiError::InFlight(_) => Some("unknown"),
            _ => None,
        };
        let mut response = (
            status,
            Json(ErrorBody {
                error: self.to_string(),
                outcome: outcome.map(String::from),
            }),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"meridian\""),
            );
        }
        response
    }
}

impl From<Rejection> for ApiError {
    fn from(why: Rejection) -> ApiError {
        match why {
            Rejection::BadRequest(m) => ApiError::BadRequest(m),
            Rejection::NotFound(m) => ApiError::NotFound(m),
            Rejection::Conflict(m) => ApiError::Conflict(m),
            Rejection::Invalid(m) => ApiError::Unprocessable(m),
            Rejection::PreconditionFailed(m) => ApiError::PreconditionFailed(m),
        }
    }
}

/// A name in a URL or a body that is not one: 400, with the name's own message.
impl From<crate::name::NameError> for ApiError {
    fn from(e: crate::name::NameError) -> ApiError {
        ApiError::BadRequest(e.to_string())
    }
}

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> ApiError {
        match e {
            WriteError::NotApplied(_) => ApiError::Unavailable(e.to_string()),
            WriteError::Unknown(_) => ApiError::Unknown(e.to_string()),
            WriteError::Membership(m) => {
                let lower = m.to_ascii_lowercase();
                if lower.contains("not the leader") || lower.contains("no leader") {
                    ApiError::Unavailable(m)
                } else if ["not a member", "unknown", "no such", "not found"]
                    .iter()
                    .any(|w| lower.contains(w))
                {
                    ApiError::NotFound(m)
                } else if ["already", "conflict", "in progress", "last voter"]
                    .iter()
                    .any(|w| lower.contains(w))
                {
                    ApiError::Conflict(m)
                } else {
                    ApiError::BadRequest(m)
                }
            }
        }
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> ApiError {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(
                "the request body is over the limit ([admin] max_body, 64 MiB by default)".into(),
            )
        } else {
            ApiError::BadRequest(format!(
                "the request body could not be read: {}",
                r.body_text()
            ))
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> ApiError {
        ApiError::BadRequest(format!("bad path: {}", r.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> ApiError {
        ApiError::BadRequest(format!("bad query string: {}", r.body_text()))
    }
}

/// A JSON body, sent as `Content-Type: application/json` (415 otherwise: a browser form
/// cannot send it cross-site without a preflight). Syntax errors and unknown fields are
/// 400; valid JSON with a wrong value (wrong type, missing field, bad enum value) is 422;
/// both with serde's message and position.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let ct = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let essence = ct.split(';').next().unwrap_or("").trim();
        if essence != "application/json" && !essence.ends_with("+json") {
            return Err(ApiError::UnsupportedMediaType(format!(
                "send the body as Content-Type: application/json, not {essence:?}"
            )));
        }
        let bytes = Bytes::from_request(req, state).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Parse a JSON request body with [`JsonBody`]'s error mapping.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::BadRequest(
            "the request body is empty; a JSON object is expected".into(),
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data if e.to_string().starts_with("unknown field") => {
                ApiError::BadRequest(format!("invalid request body: {e}"))
            }
            Category::Data => ApiError::Unprocessable(format!("invalid request body: {e}")),
            Category::Syntax | Category::Eof | Category::Io => {
                ApiError::BadRequest(format!("the request body is not valid JSON: {e}"))
            }
        }
    })
}

/// A zone's text: `Content-Type` `text/dns` or `text/plain` (or none); UTF-8.
pub struct ZoneText(pub String);

impl<S: Send + Sync> FromRequest<S> for ZoneText {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
            let essence = ct.split(';').next().unwrap_or("").trim();
            let ok = matches!(essence, "text/dns" | "text/plain");
            if !ok {
                return Err(ApiError::UnsupportedMediaType(format!(
                    "a zone is RFC 1035 text: send it as Content-Type text/dns or text/plain, not {essence:?}"
                )));
            }
        }
        let bytes = Bytes::from_request(req, state).await?;
        let text = String::from_utf8(bytes.to_vec())
            .map_err(|e| ApiError::BadRequest(format!("the zone text is not UTF-8: {e}")))?;
        Ok(ZoneText(text))
    }
}
