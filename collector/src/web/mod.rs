//! The operators' web UI, server-rendered (no front-end build, no CDN): `/` sites → rooms →
//! racks, `/racks/<site>/<rack>` rack elevations coloured by measured power, `/devices/<key>`
//! identity, location evidence, 24 h power chart and CMDB sync state, `/exceptions` with a
//! resolve action, and `/events` (server-sent events, one per committed batch) that the pages'
//! small script uses to refresh themselves.
//!
//! Auth: when `collector.api_token` is set every page needs it, either as
//! `Authorization: Bearer <token>` or as the `gt_token` cookie that `/login` sets (HttpOnly,
//! SameSite=Strict, Path=/). Every POST additionally needs a same-origin `Origin` (or, without
//! one, `Referer`) header matching `Host`, against cross-site request forgery. Pages are sent with
//! a strict Content-Security-Policy (`default-src 'self'`), so even text that escaped escaping
//! could not run script.

pub mod render;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use crate::http::{HttpState, token_matches};

/// Name of the session cookie holding the API token.
pub const COOKIE: &str = "gt_token";

const APP_JS: &str = include_str!("static/app.js");
const APP_CSS: &str = include_str!("static/app.css");
const CSP: &str = "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'";

/// The UI's routes (merged into [`crate::http::router`]).
pub fn routes() -> Router<Arc<HttpState>> {
    Router::new()
        .route("/", get(index))
        .route("/racks/{site}/{rack}", get(rack))
        .route("/devices/{*key}", get(device))
        .route("/exceptions", get(exceptions))
        .route("/exceptions/{id}/{action}", post(resolve))
        .route("/events", get(events))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route(
            "/static/app.js",
            get(|| async { asset(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/static/app.css",
            get(|| async { asset(APP_CSS, "text/css; charset=utf-8") }),
        )
}

fn asset(body: &'static str, ctype: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, ctype),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

fn html(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    r
}

fn store_error(e: &dyn std::fmt::Display) -> Response {
    tracing::error!(error = %e, "Web UI request failed on the store.");
    html(
        StatusCode::INTERNAL_SERVER_ERROR,
        render::page(
            "Error",
            "<h1>Store error</h1><p>See the collector log.</p>",
            false,
            false,
        ),
    )
}

/// Decodes `application/x-www-form-urlencoded` text (`+` is a space, `%XX` a byte).
#[must_use]
pub fn form_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => match b
                .get(i + 1..i + 3)
                .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok())
            {
                Some(v) => {
                    out.push(v);
                    i += 2;
                }
                None => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of `name` in a form body or query string.
#[must_use]
pub fn form_field(body: &str, name: &str) -> Option<String> {
    body.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (form_decode(k) == name).then(|| form_decode(v))
    })
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            let (k, v) = c.trim().split_once('=')?;
            (k == COOKIE).then(|| form_decode(v))
        })
}

/// Whether the request carries the API token (header or cookie), or no token is configured.
#[must_use]
pub fn signed_in(s: &HttpState, headers: &HeaderMap) -> bool {
    let Some(token) = &s.api_token else {
        return true;
    };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    bearer.is_some_and(|b| token_matches(b, token))
        || cookie_token(headers).is_some_and(|c| token_matches(&c, token))
}

/// Whether a state-changing request comes from a page of this site: its `Origin` (or, when the
/// browser sent none, its `Referer`) must name the `Host` it was sent to.
#[must_use]
pub fn same_origin(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let from = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .and_then(|v| v.to_str().ok());
    let Some(from) = from else { return false };
    let Some(rest) = from
        .strip_prefix("http://")
        .or_else(|| from.strip_prefix("https://"))
    else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    authority.eq_ignore_ascii_case(host)
}

/// A local path to return to after login (no scheme, no `//host`), else `/`.
fn safe_next(next: Option<String>) -> String {
    next.filter(|n| n.starts_with('/') && !n.starts_with("//") && !n.contains('\\'))
        .unwrap_or_else(|| "/".into())
}

fn to_login(path: &str) -> Response {
    Redirect::to(&format!("/login?next={}", render::seg(path))).into_response()
}

fn logged_in(s: &HttpState) -> bool {
    s.api_token.is_some()
}

fn forbidden(why: &str) -> Response {
    html(
        StatusCode::FORBIDDEN,
        render::page(
            "Forbidden",
            &format!("<h1>Forbidden</h1><p>{}</p>", render::esc(why)),
            false,
            false,
        ),
    )
}

async fn index(State(s): State<Arc<HttpState>>, headers: HeaderMap) -> Response {
    if !signed_in(&s, &headers) {
        return to_login("/");
    }
    let (devices, readings, heights) = match load(&s).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let inv = render::inventory(&devices, &readings, &heights, &s.rules);
    html(
        StatusCode::OK,
        render::page("Racks", &render::index(&inv), true, logged_in(&s)),
    )
}

type Loaded = (
    Vec<crate::store::DeviceRow>,
    Vec<crate::store::LatestReading>,
    std::collections::HashMap<String, u32>,
);

async fn load(s: &HttpState) -> Result<Loaded, Response> {
    let devices = s.store.devices().await.map_err(|e| store_error(&e))?;
    let readings = s.store.latest_readings().await.map_err(|e| store_error(&e))?;
    let heights = s.store.u_heights().await.map_err(|e| store_error(&e))?;
    Ok((devices, readings, heights))
}

async fn rack(
    State(s): State<Arc<HttpState>>,
    Path((site, rack)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if !signed_in(&s, &headers) {
        return to_login(&render::rack_href(&site, &rack));
    }
    let (devices, readings, heights) = match load(&s).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let inv = render::inventory(&devices, &readings, &heights, &s.rules);
    let site = if site == render::NO_SITE { "" } else { &site };
    let found = inv.racks.iter().find(|r| {
        r.site.trim().eq_ignore_ascii_case(site.trim()) && r.name.trim().eq_ignore_ascii_case(rack.trim())
    });
    match found {
        Some(r) => html(
            StatusCode::OK,
            render::page(
                &format!("Rack {}", r.name),
                &render::rack_page(r),
                true,
                logged_in(&s),
            ),
        ),
        None => html(
            StatusCode::NOT_FOUND,
            render::page(
                "Not found",
                &format!(
                    "<h1>No rack {} in site {}</h1><p>Neither the site map nor any located device names it. <a href=\"/\">All racks</a></p>",
                    render::esc(&rack),
                    render::esc(site)
                ),
                true,
                logged_in(&s),
            ),
        ),
    }
}

async fn device(State(s): State<Arc<HttpState>>, Path(key): Path<String>, headers: HeaderMap) -> Response {
    if !signed_in(&s, &headers) {
        return to_login(&render::device_href(&key));
    }
    let (devices, readings, _) = match load(&s).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let Some(d) = devices.iter().find(|d| d.device_key == key) else {
        return html(
            StatusCode::NOT_FOUND,
            render::page(
                "Not found",
                &format!(
                    "<h1>No device {}</h1><p><a href=\"/\">All racks</a></p>",
                    render::esc(&key)
                ),
                false,
                logged_in(&s),
            ),
        );
    };
    let now = SystemTime::now();
    let since = now
        .checked_sub(Duration::from_secs(24 * 3600))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let history = match s.store.readings_since(&key, "power", since).await {
        Ok(h) => h,
        Err(e) => return store_error(&e),
    };
    let sync = match s.store.cmdb_sync_state(&key).await {
        Ok(x) => x,
        Err(e) => return store_error(&e),
    };
    let open = match s.store.open_exceptions().await {
        Ok(x) => x,
        Err(e) => return store_error(&e),
    };
    let extras = render::DeviceExtras {
        readings: readings.iter().filter(|r| r.device_key == key).collect(),
        history,
        sync,
        exceptions: open.iter().filter(|e| e.device_key == key).collect(),
        cmdb_configured: s.cmdb_configured,
    };
    html(
        StatusCode::OK,
        render::page(
            &format!("Device {}", render::label(d)),
            &render::device_page(d, &s.rules, &extras, now),
            true,
            logged_in(&s),
        ),
    )
}

async fn exceptions(State(s): State<Arc<HttpState>>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    if !signed_in(&s, &headers) {
        return to_login("/exceptions");
    }
    let list = match s.store.open_exceptions().await {
        Ok(x) => x,
        Err(e) => return store_error(&e),
    };
    let notice = q
        .as_deref()
        .and_then(|q| form_field(q, "resolved"))
        .and_then(|id| id.parse::<i64>().ok())
        .map(|id| format!("Exception {id} resolved."));
    html(
        StatusCode::OK,
        render::page(
            "Exceptions",
            &render::exceptions_page(&list, notice.as_deref()),
            true,
            logged_in(&s),
        ),
    )
}

/// The exception actions of the web UI: `resolve` (accept), `ignore`, `pin` (form fields `by`,
/// `note`, and for a pin `site`, `rack`, `u`).
async fn resolve(
    State(s): State<Arc<HttpState>>,
    Path((id, action)): Path<(i64, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !same_origin(&headers) {
        return forbidden("cross-site request refused (Origin/Referer does not match Host)");
    }
    if !signed_in(&s, &headers) {
        return to_login("/exceptions");
    }
    let body = String::from_utf8_lossy(&body);
    let name: String = form_field(&body, "by")
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect();
    let by = if name.trim().is_empty() {
        "web UI".to_owned()
    } else {
        format!("{} (web UI)", name.trim())
    };
    let field = |name: &str, max: usize| -> String {
        form_field(&body, name)
            .unwrap_or_default()
            .chars()
            .filter(|c| !c.is_control())
            .take(max)
            .collect::<String>()
            .trim()
            .to_owned()
    };
    let note = field("note", 200);
    let done = match action.as_str() {
        "resolve" => s.store.accept_exception(id, &by, &note).await,
        "ignore" => s.store.ignore_exception(id, &by, &note).await,
        "pin" => {
            let u = field("u", 3);
            let Ok(u) = (!u.is_empty()).then(|| u.parse::<u32>()).transpose() else {
                return html(
                    StatusCode::BAD_REQUEST,
                    render::page(
                        "Bad request",
                        "<h1>U must be a number</h1><p><a href=\"/exceptions\">Back</a></p>",
                        false,
                        logged_in(&s),
                    ),
                );
            };
            let pin = crate::store::Pin {
                site: field("site", 64),
                rack: field("rack", 64),
                u,
                ..Default::default()
            };
            s.store.pin_exception(id, &pin, &by, &note).await
        }
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    match done {
        Ok(true) => {
            tracing::info!(id, action = %action, by = %by, "Exception action taken from the web UI.");
            Redirect::to(&format!("/exceptions?resolved={id}")).into_response()
        }
        Err(e @ crate::store::StoreError::Refused(_)) => html(
            StatusCode::BAD_REQUEST,
            render::page(
                "Refused",
                &format!(
                    "<h1>{}</h1><p><a href=\"/exceptions\">Back</a></p>",
                    render::esc(&e.to_string())
                ),
                false,
                logged_in(&s),
            ),
        ),
        Ok(false) => html(
            StatusCode::NOT_FOUND,
            render::page(
                "Not found",
                &format!("<h1>No open exception {id}</h1><p><a href=\"/exceptions\">Open exceptions</a></p>"),
                false,
                logged_in(&s),
            ),
        ),
        Err(e) => store_error(&e),
    }
}

async fn events(State(s): State<Arc<HttpState>>, headers: HeaderMap) -> Response {
    if !signed_in(&s, &headers) {
        return (StatusCode::UNAUTHORIZED, "log in first\n").into_response();
    }
    let mut rx = s.events.clone();
    // Only batches committed from now on.
    rx.borrow_and_update();
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.changed().await.ok()?;
        let n = *rx.borrow_and_update();
        Some((
            Ok::<_, Infallible>(Event::default().event("batch").data(n.to_string())),
            rx,
        ))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

async fn login_form(State(s): State<Arc<HttpState>>, RawQuery(q): RawQuery) -> Response {
    let next = safe_next(q.as_deref().and_then(|q| form_field(q, "next")));
    if s.api_token.is_none() {
        return Redirect::to(&next).into_response();
    }
    html(
        StatusCode::OK,
        render::page("Log in", &render::login_page(&next, None), false, false),
    )
}

async fn login(State(s): State<Arc<HttpState>>, headers: HeaderMap, body: Bytes) -> Response {
    if !same_origin(&headers) {
        return forbidden("cross-site request refused (Origin/Referer does not match Host)");
    }
    let body = String::from_utf8_lossy(&body);
    let next = safe_next(form_field(&body, "next"));
    let Some(token) = &s.api_token else {
        return Redirect::to(&next).into_response();
    };
    let given = form_field(&body, "token").unwrap_or_default();
    if !token_matches(&given, token) {
        tracing::warn!("Web UI login with a wrong token.");
        return html(
            StatusCode::UNAUTHORIZED,
            render::page(
                "Log in",
                &render::login_page(&next, Some("Wrong token.")),
                false,
                false,
            ),
        );
    }
    let mut r = Redirect::to(&next).into_response();
    // Behind a TLS reverse proxy the cookie is also marked Secure.
    let tls = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict{}",
        render::seg(&given),
        if tls { "; Secure" } else { "" }
    )) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

async fn logout(headers: HeaderMap) -> Response {
    if !same_origin(&headers) {
        return forbidden("cross-site request refused (Origin/Referer does not match Host)");
    }
    let mut r = Redirect::to("/login").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("gt_token=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, v.parse().unwrap());
        }
        m
    }

    #[test]
    fn form_decoding() {
        assert_eq!(form_decode("a+b%20c%2F%zz%4"), "a b c/%zz%4");
        assert_eq!(
            form_field("next=%2Fracks%2FDC1&token=t%26k", "token").as_deref(),
            Some("t&k")
        );
        assert_eq!(form_field("by", "by").as_deref(), Some(""));
        assert_eq!(form_field("x=1", "by"), None);
    }

    #[test]
    fn same_origin_needs_origin_or_referer_naming_the_host() {
        assert!(same_origin(&h(&[
            ("host", "127.0.0.1:9000"),
            ("origin", "http://127.0.0.1:9000")
        ])));
        assert!(same_origin(&h(&[
            ("host", "gt.example:9000"),
            ("referer", "https://gt.example:9000/exceptions")
        ])));
        assert!(!same_origin(&h(&[
            ("host", "127.0.0.1:9000"),
            ("origin", "http://evil.example")
        ])));
        assert!(!same_origin(&h(&[
            ("host", "127.0.0.1:9000"),
            ("origin", "null")
        ])));
        assert!(!same_origin(&h(&[
            ("host", "127.0.0.1:9000"),
            ("referer", "http://127.0.0.1:9000.evil.example/")
        ])));
        assert!(!same_origin(&h(&[("host", "127.0.0.1:9000")])));
    }

    #[test]
    fn next_must_stay_on_this_site() {
        assert_eq!(safe_next(Some("/racks/DC1/R07".into())), "/racks/DC1/R07");
        assert_eq!(safe_next(Some("//evil.example/".into())), "/");
        assert_eq!(safe_next(Some("https://evil.example/".into())), "/");
        assert_eq!(safe_next(Some("/\\evil.example".into())), "/");
        assert_eq!(safe_next(None), "/");
    }

    #[tokio::test]
    async fn cookie_or_bearer_unlocks_pages_and_posts_need_same_origin() {
        use tower::ServiceExt as _;
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(&dir.path().join("s.db")).await.unwrap();
        store
            .raise_exception("serial:X", "no_location", "<b>x</b>")
            .await
            .unwrap();
        let id = store.open_exceptions().await.unwrap()[0].id;
        let (_tx, rx) = tokio::sync::watch::channel(0u64);
        let app = crate::http::router(HttpState {
            store: store.clone(),
            ingest: Arc::default(),
            rules: crate::reconcile::Rules::builtin("DC1"),
            api_token: Some("s3cret;=".into()),
            events: rx,
            cmdb_configured: false,
            leader: None,
        });
        let req = |method: &str, uri: &str, hdrs: &[(&'static str, &str)], body: &str| {
            let mut b = axum::http::Request::builder().method(method).uri(uri);
            for (k, v) in hdrs {
                b = b.header(*k, *v);
            }
            b.body(axum::body::Body::from(body.to_owned())).unwrap()
        };
        let r = app
            .clone()
            .oneshot(req("GET", "/exceptions", &[], ""))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        assert_eq!(r.headers()["location"], "/login?next=%2Fexceptions");
        // Wrong token: no cookie.
        let same = [("host", "gt:1"), ("origin", "http://gt:1")];
        let r = app
            .clone()
            .oneshot(req("POST", "/login", &same, "token=nope&next=%2Fexceptions"))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(r.headers().get("set-cookie").is_none());
        // Login from another site is refused even with the right token.
        let r = app
            .clone()
            .oneshot(req(
                "POST",
                "/login",
                &[("host", "gt:1"), ("origin", "http://evil")],
                "token=s3cret%3B%3D",
            ))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let r = app
            .clone()
            .oneshot(req(
                "POST",
                "/login",
                &same,
                "token=s3cret%3B%3D&next=%2Fexceptions",
            ))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        assert_eq!(r.headers()["location"], "/exceptions");
        let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
            "{cookie}"
        );
        let pair = cookie.split(';').next().unwrap().to_owned();
        assert_eq!(pair, "gt_token=s3cret%3B%3D");
        assert!(!cookie.contains("Secure"), "{cookie}");
        let behind_tls = [
            ("host", "gt:1"),
            ("origin", "https://gt:1"),
            ("x-forwarded-proto", "https"),
        ];
        let r = app
            .clone()
            .oneshot(req("POST", "/login", &behind_tls, "token=s3cret%3B%3D"))
            .await
            .unwrap();
        assert!(r.headers()["set-cookie"].to_str().unwrap().ends_with("; Secure"));
        let r = app
            .clone()
            .oneshot(req("GET", "/exceptions", &[("cookie", &pair)], ""))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert!(
            r.headers()["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("default-src 'self'")
        );
        let r = app
            .clone()
            .oneshot(req("GET", "/", &[("authorization", "Bearer s3cret;=")], ""))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        // Resolve: cookie without same-origin is refused; with it, resolved.
        let uri = format!("/exceptions/{id}/resolve");
        let r = app
            .clone()
            .oneshot(req(
                "POST",
                &uri,
                &[("host", "gt:1"), ("cookie", &pair)],
                "by=alice",
            ))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let r = app
            .clone()
            .oneshot(req("POST", &uri, &same, "by=alice"))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        assert!(r.headers()["location"].to_str().unwrap().starts_with("/login"));
        assert_eq!(store.open_exceptions().await.unwrap().len(), 1);
        let r = app
            .clone()
            .oneshot(req(
                "POST",
                &uri,
                &[("host", "gt:1"), ("origin", "http://gt:1"), ("cookie", &pair)],
                "by=alice",
            ))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        assert!(store.open_exceptions().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn device_keys_with_slashes_round_trip_through_links() {
        use groundtruth_proto::v1::{DeviceIdentity, DeviceReport, PollOutcome, PollStatus};
        use tower::ServiceExt as _;
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(&dir.path().join("s.db")).await.unwrap();
        store
            .commit_batch(&crate::store::testdb::batch(
                "a1",
                "",
                1,
                vec![DeviceReport {
                    identity: Some(DeviceIdentity {
                        endpoint_key: "snmp://10.0.0.9:161".into(),
                        model: "<i>PDU</i>".into(),
                        ..Default::default()
                    }),
                    status: Some(PollStatus {
                        outcome: PollOutcome::Ok as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
            ))
            .await
            .unwrap();
        let key = "endpoint:a1/snmp://10.0.0.9:161";
        let app = crate::http::router(HttpState {
            store,
            ingest: Arc::default(),
            rules: crate::reconcile::Rules::builtin(""),
            api_token: None,
            events: tokio::sync::watch::channel(0).1,
            cmdb_configured: true,
            leader: None,
        });
        let get = |uri: String| {
            axum::http::Request::builder()
                .uri(uri)
                .body(axum::body::Body::empty())
                .unwrap()
        };
        let index = app.clone().oneshot(get("/".into())).await.unwrap();
        let body = axum::body::to_bytes(index.into_body(), 1 << 20).await.unwrap();
        let body = String::from_utf8(body.to_vec()).unwrap();
        let href = render::device_href(key);
        assert!(body.contains(&format!("href=\"{href}\"")), "{body}");
        let r = app.oneshot(get(href)).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        let body = String::from_utf8(body.to_vec()).unwrap();
        assert!(body.contains("endpoint:a1/snmp://10.0.0.9:161"), "{body}");
        assert!(body.contains("&lt;i&gt;PDU&lt;/i&gt;") && body.contains("Not synced yet."));
    }
}
