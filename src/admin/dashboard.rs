//! The dashboard at `GET /`: one page, its script and its style sheet, all built into the
//! binary (no CDN, works offline). The page reads and writes through the same API as
//! everyone else, with the token the operator types in (kept in the page's memory only).
//!
//! The world outline (`dashboard/world.svg`, made by `scripts/world-map.py` from Natural
//! Earth's public-domain 1:110m land) is put into the page once, at the first request.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("dashboard/index.html");
const WORLD: &str = include_str!("dashboard/world.svg");
const SCRIPT: &str = include_str!("dashboard/dashboard.js");
const STYLE: &str = include_str!("dashboard/dashboard.css");

/// The page with the world outline in place of its `<!--WORLD-->` marker.
static PAGE: LazyLock<String> = LazyLock::new(|| INDEX.replacen("<!--WORLD-->", WORLD, 1));

/// Only this node's own script, style and API: a script injected through data shown on
/// the page could neither run inline nor send anything elsewhere, and no other site may
/// frame the page to trick a click on Drain.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

pub async fn page() -> Response {
    asset("text/html; charset=utf-8", PAGE.as_str())
}

pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

pub async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}
