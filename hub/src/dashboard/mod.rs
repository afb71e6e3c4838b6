//! The operator dashboard: server-side rendered HTML (maud) served by the hub itself under
//! `/ui`, with its one stylesheet compiled into the binary (no CDN, no script).
//!
//! - `/ui` — freshness board: departments × datasets coloured by status, filters by department
//!   and status, each department's scorecard with a 12-period trend ([`chart`]);
//! - `/ui/scenarios` — scenario board: ready or blocked, with whom to call;
//! - `/ui/fleet` — agents (operators only);
//! - `/ui/datasets/{id}` — one dataset: freshness, history, schema and row counts;
//! - `/ui/login`, `/ui/logout` — see [`auth`].
//!
//! Pages render from the freshness evaluator's snapshot (and the warehouse status for fleet and
//! dataset pages), refresh themselves every [`pages::REFRESH_SECONDS`], speak Vietnamese unless
//! the `kho_lang` cookie (set by `?lang=en`) says English, and fit a 1366×768 screen. Without a
//! session every page redirects to the login, unless `dashboard.public_view` allows a read-only
//! view without the fleet, contacts' phone numbers and e-mail addresses, or recent changes (which
//! show key values).

pub mod auth;
pub mod chart;
pub mod i18n;
pub mod pages;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use serde::Deserialize;

use crate::catalog::CatalogHandle;
use crate::freshness::SnapshotCell;
use crate::warehouse::rows::RECENT_CHANGES;
use crate::warehouse::{WarehouseReader, WarehouseStatus};
use auth::{Auth, LOGIN_CSRF_COOKIE, SESSION_COOKIE, Viewer};
use i18n::{LANG_COOKIE, Lang};
use pages::{BoardFilter, Frame};

const STYLESHEET: &str = include_str!("static/kho.css");

/// State of the dashboard routes.
#[derive(Clone)]
pub struct Dashboard {
    pub snapshot: SnapshotCell,
    pub catalog: CatalogHandle,
    pub reader: Arc<dyn WarehouseReader>,
    pub auth: Arc<Auth>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub transports: crate::ingest::TransportBoard,
    /// Personal-data declarations to show, and the audit log of sensitive reads (issue 14).
    pub privacy: Option<(crate::privacy::Index, crate::privacy::AuditSink)>,
}

pub fn routes(state: Dashboard) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui") }))
        .route("/ui", get(board))
        .route("/ui/scenarios", get(scenarios))
        .route("/ui/fleet", get(fleet))
        .route("/ui/datasets/{id}", get(dataset))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/static/kho.css", get(stylesheet))
        .with_state(state)
}

#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    lang: Option<String>,
    department: Option<String>,
    status: Option<String>,
}

/// The page language: `?lang=` (remembered in a cookie), else the cookie, else Vietnamese.
fn language(q: &PageQuery, headers: &HeaderMap) -> (Lang, Option<String>) {
    if let Some(l) = q.lang.as_deref().and_then(Lang::parse) {
        let cookie = format!("{LANG_COOKIE}={}; Path=/; Max-Age=31536000; SameSite=Lax", l.code());
        return (l, Some(cookie));
    }
    (auth::cookie(headers, LANG_COOKIE).and_then(Lang::parse).unwrap_or_default(), None)
}

/// The request's path and query without `lang=…`.
fn here(uri: &Uri) -> String {
    let keep: Vec<&str> =
        uri.query().unwrap_or("").split('&').filter(|p| !p.is_empty() && !p.starts_with("lang=")).collect();
    if keep.is_empty() { uri.path().to_string() } else { format!("{}?{}", uri.path(), keep.join("&")) }
}

fn html_page(markup: Markup, set_cookie: Option<String>) -> Response {
    let mut r = Html(markup.into_string()).into_response();
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    if let Some(c) = set_cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        h.append(header::SET_COOKIE, c);
    }
    r
}

fn to_login() -> Response {
    Redirect::to("/ui/login").into_response()
}

struct Page {
    lang: Lang,
    set_cookie: Option<String>,
    viewer: Viewer,
    here: String,
}

/// The page's viewer and language; `None` when the viewer must log in first.
fn page(d: &Dashboard, q: &PageQuery, headers: &HeaderMap, uri: &Uri) -> Option<Page> {
    let viewer = d.auth.viewer(headers)?;
    let (lang, set_cookie) = language(q, headers);
    Some(Page { lang, set_cookie, viewer, here: here(uri) })
}

fn render(p: Page, title: &'static str, evaluated_at: Option<jiff::Timestamp>, content: Markup) -> Response {
    let frame = Frame { lang: p.lang, viewer: &p.viewer, here: p.here, title, evaluated_at };
    html_page(pages::layout(&frame, content), p.set_cookie)
}

async fn board(State(d): State<Dashboard>, Query(q): Query<PageQuery>, headers: HeaderMap, uri: Uri) -> Response {
    let Some(p) = page(&d, &q, &headers, &uri) else { return to_login() };
    let s = d.snapshot.get();
    let filter = BoardFilter { department: q.department.clone(), status: q.status.clone() };
    let content = pages::board(p.lang, &s, &filter, p.viewer.is_operator());
    let title = p.lang.tr("Độ cập nhật", "Freshness");
    render(p, title, s.evaluated_at, content)
}

async fn scenarios(State(d): State<Dashboard>, Query(q): Query<PageQuery>, headers: HeaderMap, uri: Uri) -> Response {
    let Some(p) = page(&d, &q, &headers, &uri) else { return to_login() };
    let s = d.snapshot.get();
    let content = pages::scenarios(p.lang, &s, p.viewer.is_operator());
    let title = p.lang.tr("Kịch bản điều hành", "Scenarios");
    render(p, title, s.evaluated_at, content)
}

/// The warehouse status, read on the blocking pool.
async fn warehouse_status(d: &Dashboard) -> Result<WarehouseStatus, Response> {
    let reader = Arc::clone(&d.reader);
    match tokio::task::spawn_blocking(move || reader.status()).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "dashboard: cannot read the warehouse status");
            Err((StatusCode::INTERNAL_SERVER_ERROR, "warehouse unavailable").into_response())
        }
        Err(e) => Err((StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()),
    }
}

async fn fleet(State(d): State<Dashboard>, Query(q): Query<PageQuery>, headers: HeaderMap, uri: Uri) -> Response {
    let Some(p) = page(&d, &q, &headers, &uri).filter(|p| p.viewer.is_operator()) else { return to_login() };
    let status = match warehouse_status(&d).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let s = d.snapshot.get();
    let content = pages::fleet(p.lang, &s, &status, &|agent| d.transports.get(agent));
    let title = p.lang.tr("Máy trạm", "Fleet");
    render(p, title, s.evaluated_at, content)
}

async fn dataset(
    State(d): State<Dashboard>,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let Some(p) = page(&d, &q, &headers, &uri) else { return to_login() };
    let s = d.snapshot.get();
    if s.dataset(&id).is_none() {
        let content = html! { h1 { (p.lang.tr("Không có bộ dữ liệu này", "No such dataset")) } };
        let mut r = render(p, "404", s.evaluated_at, content);
        *r.status_mut() = StatusCode::NOT_FOUND;
        return r;
    }
    let status = match warehouse_status(&d).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    // Recent changes show key values (a citizen id can be a key): operators only, and a read of a
    // dataset holding sensitive columns is audited (issue 14).
    let recent = if p.viewer.is_operator() {
        if let Some((index, audit)) = &d.privacy
            && index.is_sensitive(&id)
        {
            audit.sensitive_read(&id, "dashboard", &format!("operator:{}", p.viewer.name())).await;
        }
        let reader = Arc::clone(&d.reader);
        let dataset = id.clone();
        match tokio::task::spawn_blocking(move || reader.recent_changes(&dataset, RECENT_CHANGES)).await {
            Ok(Ok(r)) => Some(r),
            Ok(Err(e)) => {
                tracing::error!(error = %e, dataset = %id, "dashboard: cannot read recent changes");
                Some(Vec::new())
            }
            Err(_) => Some(Vec::new()),
        }
    } else {
        None
    };
    let st = status.datasets.iter().find(|x| x.dataset == id);
    let classes = d.privacy.as_ref().map(|(index, _)| index.classes(&id)).unwrap_or_default();
    let Some(content) = pages::dataset(p.lang, &s, &id, st, recent.as_deref(), &classes) else {
        return (StatusCode::NOT_FOUND, "no such dataset").into_response();
    };
    let title = p.lang.tr("Bộ dữ liệu", "Dataset");
    render(p, title, s.evaluated_at, content)
}

async fn stylesheet() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "public, max-age=3600")], STYLESHEET)
        .into_response()
}

fn login_form(lang: Lang, token: &str, error: Option<&str>, has_operators: bool) -> Markup {
    let l = lang;
    html! {
        (maud::DOCTYPE)
        html lang=(l.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (l.tr("Đăng nhập", "Log in")) " — Kho" }
                link rel="stylesheet" href="/ui/static/kho.css";
            }
            body.login {
                main {
                    h1 { "Kho" }
                    p { (l.tr("Kho dữ liệu dùng chung tỉnh Sơn La", "Sơn La province shared data warehouse")) }
                    @if !has_operators {
                        p.error { (l.tr("Chưa cấu hình tài khoản vận hành ([[dashboard.operator]]).",
                            "No operator account is configured ([[dashboard.operator]]).")) }
                    }
                    @if let Some(e) = error { p.error #login-error { (e) } }
                    form method="post" action="/ui/login" {
                        input type="hidden" name="csrf" value=(token);
                        label { (l.tr("Tên đăng nhập", "User name")) input #name type="text" name="name" autocomplete="username" required; }
                        label { (l.tr("Mật khẩu", "Password")) input #password type="password" name="password" autocomplete="current-password" required; }
                        button #submit type="submit" { (l.tr("Đăng nhập", "Log in")) }
                    }
                    p { a href=(format!("/ui/login?lang={}", l.other().code())) { (l.tr("English", "Tiếng Việt")) } }
                }
            }
        }
    }
}

/// The login page with a fresh double-submit CSRF token.
fn login_response(
    d: &Dashboard,
    lang: Lang,
    lang_cookie: Option<String>,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let token = auth::random_token();
    let mut r = html_page(login_form(lang, &token, error, d.auth.has_operators()), lang_cookie);
    *r.status_mut() = status;
    if let Ok(c) = HeaderValue::from_str(&d.auth.set_cookie(LOGIN_CSRF_COOKIE, &token, None)) {
        r.headers_mut().append(header::SET_COOKIE, c);
    }
    r
}

async fn login_page(State(d): State<Dashboard>, Query(q): Query<PageQuery>, headers: HeaderMap) -> Response {
    let (lang, cookie) = language(&q, &headers);
    login_response(&d, lang, cookie, None, StatusCode::OK)
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
}

async fn login(State(d): State<Dashboard>, headers: HeaderMap, axum::Form(form): axum::Form<LoginForm>) -> Response {
    let (lang, _) = language(&PageQuery::default(), &headers);
    let expected = auth::cookie(&headers, LOGIN_CSRF_COOKIE).unwrap_or("");
    if !auth::same(expected, &form.csrf) {
        d.metrics.dashboard_login(false);
        let msg = lang.tr("Phiên đăng nhập đã hết hạn, vui lòng thử lại.", "The login form expired; please try again.");
        return login_response(&d, lang, None, Some(msg), StatusCode::FORBIDDEN);
    }
    let Ok(permit) = Arc::clone(&d.auth.checks).acquire_owned().await else {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    };
    let auth = Arc::clone(&d.auth);
    let name = form.name.clone();
    let ok = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        auth.check_password(&name, &form.password)
    })
    .await
    .unwrap_or(false);
    d.metrics.dashboard_login(ok);
    if !ok {
        tracing::warn!(operator = %form.name, "dashboard login refused");
        // Slows password guessing on a connection without costing CPU or blocking other logins.
        tokio::time::sleep(auth::FAILED_LOGIN_DELAY).await;
        let msg = lang.tr("Sai tên đăng nhập hoặc mật khẩu.", "Wrong user name or password.");
        return login_response(&d, lang, None, Some(msg), StatusCode::UNAUTHORIZED);
    }
    tracing::info!(operator = %form.name, "dashboard login");
    let id = d.auth.start_session(&form.name);
    let mut r = Redirect::to("/ui").into_response();
    for c in [d.auth.session_cookie(&id), d.auth.set_cookie(LOGIN_CSRF_COOKIE, "", Some(std::time::Duration::ZERO))] {
        if let Ok(v) = HeaderValue::from_str(&c) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    r
}

#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(State(d): State<Dashboard>, headers: HeaderMap, axum::Form(form): axum::Form<CsrfForm>) -> Response {
    match d.auth.viewer(&headers) {
        Some(Viewer::Operator { csrf, .. }) if auth::same(&csrf, &form.csrf) => {
            d.auth.end_session(&headers);
            let mut r = Redirect::to("/ui/login").into_response();
            if let Ok(v) =
                HeaderValue::from_str(&d.auth.set_cookie(SESSION_COOKIE, "", Some(std::time::Duration::ZERO)))
            {
                r.headers_mut().append(header::SET_COOKIE, v);
            }
            r
        }
        Some(Viewer::Operator { .. }) => (StatusCode::FORBIDDEN, "CSRF token missing or wrong").into_response(),
        _ => to_login(),
    }
}
