//! The web softphone that every node serves at `/`: the files of `web/dist/`
//! (built from `web/src/` by `web/build.sh`, committed), embedded in the
//! binary so that a node needs nothing beside itself to serve them. The page
//! reads `/api/v1/webrtc` for the node's SIP WebSocket and ICE servers.
//!
//! Every answer carries an `ETag` (a hash of the file) and
//! `Cache-Control: no-cache`: browsers keep the files but ask again, and get
//! 304 until a new binary serves new files.

use std::sync::OnceLock;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// One embedded file.
pub struct Asset {
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
}

/// The softphone's files, by the path they are served at.
pub const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../../../web/dist/index.html"),
    },
    Asset {
        path: "/softphone.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../../web/dist/softphone.js"),
    },
    Asset {
        path: "/softphone.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../../web/dist/softphone.css"),
    },
];

/// What the page may load and connect to: its own files, and the node's SIP
/// WebSockets (which may be on another port, or `wss:` on the TLS listener).
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    connect-src 'self' ws: wss:; media-src 'self' blob: mediastream:; img-src 'self' data:; \
    object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'";

/// The routes of the softphone's files (`/` and `/index.html` are the page).
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let mut router = Router::new().route("/index.html", get(|h: HeaderMap| serve(0, h)));
    for (i, asset) in ASSETS.iter().enumerate() {
        router = router.route(asset.path, get(move |h: HeaderMap| serve(i, h)));
    }
    router
}

/// The strong ETag of each asset, in `ASSETS` order.
fn etags() -> &'static [HeaderValue] {
    static ETAGS: OnceLock<Vec<HeaderValue>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                HeaderValue::from_str(&format!("\"{:016x}\"", fnv1a(a.body)))
                    .expect("hex is a valid header value")
            })
            .collect()
    })
}

/// FNV-1a, 64 bits: enough to tell one build's file from another's.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Whether `If-None-Match` names this ETag (or is `*`).
fn not_modified(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == "*" || t.as_bytes() == etag.as_bytes())
}

async fn serve(index: usize, headers: HeaderMap) -> Response {
    let asset = &ASSETS[index];
    let etag = etags()[index].clone();
    let mut resp = if not_modified(&headers, &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            )],
            asset.body,
        )
            .into_response()
    };
    let h = resp.headers_mut();
    h.insert(header::ETAG, etag);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if asset.content_type.starts_with("text/html") {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::to_bytes;

    fn index_of(path: &str) -> usize {
        ASSETS.iter().position(|a| a.path == path).unwrap()
    }

    async fn get_asset(path: &str, if_none_match: Option<&str>) -> Response {
        let mut headers = HeaderMap::new();
        if let Some(tag) = if_none_match {
            headers.insert(header::IF_NONE_MATCH, HeaderValue::from_str(tag).unwrap());
        }
        serve(index_of(path), headers).await
    }

    #[tokio::test]
    async fn serves_each_file_with_its_type_and_cache_headers() {
        for (path, ty, needle) in [
            ("/", "text/html", "id=\"login-form\""),
            ("/softphone.js", "text/javascript", "api/v1/webrtc"),
            ("/softphone.css", "text/css", "--accent"),
        ] {
            let resp = get_asset(path, None).await;
            assert_eq!(resp.status(), StatusCode::OK, "{path}");
            let h = resp.headers();
            assert!(
                h[header::CONTENT_TYPE].to_str().unwrap().starts_with(ty),
                "{path}: {:?}",
                h[header::CONTENT_TYPE]
            );
            assert_eq!(h[header::CACHE_CONTROL], "no-cache", "{path}");
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{path}");
            assert!(h.contains_key(header::ETAG), "{path}");
            assert_eq!(
                h.contains_key(header::CONTENT_SECURITY_POLICY),
                ty == "text/html",
                "{path}"
            );
            let body = to_bytes(resp.into_body(), usize::MAX).await.unwrap();
            let text = String::from_utf8(body.to_vec()).unwrap();
            assert!(text.contains(needle), "{path} lacks {needle}");
        }
    }

    #[tokio::test]
    async fn answers_304_to_the_current_etag_only() {
        let first = get_asset("/softphone.js", None).await;
        let tag = first.headers()[header::ETAG].to_str().unwrap().to_string();
        let again = get_asset("/softphone.js", Some(&tag)).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(again.headers()[header::ETAG].to_str().unwrap(), tag);
        let body = to_bytes(again.into_body(), usize::MAX).await.unwrap();
        assert!(body.is_empty());
        let listed = get_asset("/softphone.js", Some(&format!("\"0\", W/{tag}"))).await;
        assert_eq!(listed.status(), StatusCode::NOT_MODIFIED);
        let other = get_asset("/softphone.js", Some("\"0000000000000000\"")).await;
        assert_eq!(other.status(), StatusCode::OK);
        // Each file has its own tag.
        let css = get_asset("/softphone.css", None).await;
        assert_ne!(css.headers()[header::ETAG].to_str().unwrap(), tag);
    }

    #[test]
    fn the_page_names_only_embedded_files() {
        let html = std::str::from_utf8(ASSETS[index_of("/")].body).unwrap();
        let mut named = 0;
        for reference in html.split(['"', '\'']).filter(|s| s.starts_with('/')) {
            named += 1;
            assert!(
                ASSETS.iter().any(|a| a.path == reference),
                "index.html refers to {reference}, which is not embedded"
            );
        }
        assert!(named >= 2, "index.html names no script or style sheet");
        // Nothing from elsewhere: no http(s) URL the browser would fetch.
        assert!(
            !html.contains("src=\"http"),
            "index.html loads a remote file"
        );
        assert!(
            !html.contains("href=\"http"),
            "index.html loads a remote file"
        );
    }
}
