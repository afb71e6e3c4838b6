//! The dashboard's pages (pure): each takes the freshness snapshot (and, for the fleet and
//! dataset pages, the warehouse status) and returns markup. The layout, navigation and language
//! switch are in [`layout`].

use kho_shared::freshness::readiness::ReadinessState;
use kho_shared::freshness::scorecard::SCORECARD_PERIODS;
use kho_shared::freshness::{Freshness, Status};
use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::auth::Viewer;
use super::chart;
use super::i18n::{Lang, local_time};
use crate::catalog::Department;
use crate::freshness::views::{self, DepartmentScorecard};
use crate::freshness::{DatasetView, Snapshot};
use crate::warehouse::WarehouseStatus;
use crate::warehouse::rows::RecentChange;

/// Seconds between automatic reloads of every page.
pub const REFRESH_SECONDS: u32 = 30;

/// What every page needs besides its content.
pub struct Frame<'a> {
    pub lang: Lang,
    pub viewer: &'a Viewer,
    /// The page's own path and query without `lang`, for the language switch.
    pub here: String,
    pub title: &'static str,
    pub evaluated_at: Option<jiff::Timestamp>,
}

/// Wraps page content in the document, header and footer.
pub fn layout(f: &Frame<'_>, content: Markup) -> Markup {
    let l = f.lang;
    let sep = if f.here.contains('?') { '&' } else { '?' };
    html! {
        (DOCTYPE)
        html lang=(l.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta http-equiv="refresh" content=(REFRESH_SECONDS);
                title { (f.title) " — Kho" }
                link rel="stylesheet" href="/ui/static/kho.css";
            }
            body {
                header {
                    a.brand href="/ui" { "Kho" }
                    nav {
                        a href="/ui" { (l.tr("Độ cập nhật", "Freshness")) }
                        a href="/ui/scenarios" { (l.tr("Kịch bản điều hành", "Scenarios")) }
                        @if f.viewer.is_operator() { a href="/ui/fleet" { (l.tr("Máy trạm", "Fleet")) } }
                    }
                    span.spacer {}
                    a #lang-switch href=(format!("{}{sep}lang={}", f.here, l.other().code())) {
                        (l.tr("English", "Tiếng Việt"))
                    }
                    @match f.viewer {
                        Viewer::Operator { name, csrf } => {
                            form.inline method="post" action="/ui/logout" {
                                input type="hidden" name="csrf" value=(csrf);
                                span.who { (name) }
                                button #logout type="submit" { (l.tr("Đăng xuất", "Log out")) }
                            }
                        }
                        Viewer::Public => { a #login href="/ui/login" { (l.tr("Đăng nhập", "Log in")) } }
                    }
                }
                main { (content) }
                footer {
                    (l.tr("Đánh giá lúc", "Evaluated at")) " " (local_time(f.evaluated_at))
                    " · " (l.tr("tự làm mới mỗi", "refreshes every")) " " (REFRESH_SECONDS) " s"
                }
            }
        }
    }
}

fn status_class(f: Option<&Freshness>) -> &'static str {
    f.map_or("none", |f| f.status.as_str())
}

fn status_badge(l: Lang, f: Option<&Freshness>) -> Markup {
    html! {
        @match f {
            Some(f) => {
                span class=(format!("badge st-{}", f.status.as_str())) { (l.status(f.status)) }
                @if f.agent_offline { " " span.badge.st-offline { (l.tr("Máy trạm mất kết nối", "Agent offline")) } }
            }
            None => span.badge.st-none { "—" },
        }
    }
}

/// Board filters: a department code and a status (or `agent_offline`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BoardFilter {
    pub department: Option<String>,
    pub status: Option<String>,
}

impl BoardFilter {
    fn keeps(&self, d: &DatasetView) -> bool {
        let dept = self.department.as_ref().is_none_or(|c| &d.department == c);
        let status = match self.status.as_deref() {
            None => true,
            Some("agent_offline") => d.freshness.as_ref().is_some_and(|f| f.agent_offline),
            Some(s) => d.freshness.as_ref().is_some_and(|f| f.status.as_str() == s),
        };
        dept && status
    }

    fn link(&self, department: Option<&str>, status: Option<&str>) -> String {
        let mut q = Vec::new();
        if let Some(d) = department {
            q.push(format!("department={d}"));
        }
        if let Some(s) = status {
            q.push(format!("status={s}"));
        }
        if q.is_empty() { "/ui".into() } else { format!("/ui?{}", q.join("&")) }
    }
}

/// The freshness board: departments × datasets, filters, scorecards with their trend.
pub fn board(l: Lang, s: &Snapshot, filter: &BoardFilter, show_contacts: bool) -> Markup {
    let statuses = [
        ("on_time", l.status(Status::OnTime)),
        ("due", l.status(Status::Due)),
        ("overdue", l.status(Status::Overdue)),
        ("never_received", l.status(Status::NeverReceived)),
        ("agent_offline", l.tr("Máy trạm mất kết nối", "Agent offline")),
    ];
    let f = filter;
    html! {
        h1 { (l.tr("Độ cập nhật dữ liệu theo sở, ngành", "Data freshness by department")) }
        div.filters {
            span.label { (l.tr("Sở, ngành", "Department")) ":" }
            a.chip.on[f.department.is_none()] href=(f.link(None, f.status.as_deref())) { (l.tr("Tất cả", "All")) }
            @for d in &s.catalog.departments {
                a.chip.on[f.department.as_deref() == Some(d.code.as_str())]
                    href=(f.link(Some(&d.code), f.status.as_deref())) { (d.name) }
            }
        }
        div.filters {
            span.label { (l.tr("Trạng thái", "Status")) ":" }
            a.chip.on[f.status.is_none()] href=(f.link(f.department.as_deref(), None)) { (l.tr("Tất cả", "All")) }
            @for (code, name) in statuses {
                a class=(format!("chip st-{code}{}", if f.status.as_deref() == Some(code) { " on" } else { "" }))
                    href=(f.link(f.department.as_deref(), Some(code))) { (name) }
            }
        }
        @for dept in s.catalog.departments.iter().filter(|d| f.department.as_ref().is_none_or(|c| c == &d.code)) {
            @let rows: Vec<&DatasetView> = s.datasets.iter().filter(|d| d.department == dept.code && f.keeps(d)).collect();
            @if !rows.is_empty() {
                section.department id=(format!("dept-{}", dept.code)) {
                    (department_head(l, s, dept, show_contacts))
                    table.board {
                        thead { tr {
                            th { (l.tr("Bộ dữ liệu", "Dataset")) }
                            th { (l.tr("Trạng thái", "Status")) }
                            th { (l.tr("Tần suất", "Cadence")) }
                            th { (l.tr("Kỳ", "Period")) }
                            th { (l.tr("Hạn", "Deadline")) }
                            th { (l.tr("Cập nhật gần nhất", "Last update")) }
                            th { (l.tr("Chất lượng", "Quality")) }
                        } }
                        tbody {
                            @for d in rows {
                                @let fr = d.freshness.as_ref();
                                tr class=(format!("row st-{}", status_class(fr))) data-dataset=(d.dataset) data-status=(status_class(fr)) {
                                    td { a href=(format!("/ui/datasets/{}", d.dataset)) { (d.title) } br; small.id { (d.dataset) } }
                                    td { (status_badge(l, fr)) }
                                    td { (l.cadence(&d.schedule.cadence)) }
                                    td { (fr.map_or("—", |f| f.period.label.as_str())) }
                                    td { (local_time(fr.map(|f| f.deadline))) }
                                    td { (local_time(fr.and_then(|f| f.max_loaded_at.max(f.last_sync_at)))) }
                                    td.quality { (quality_figure(s, &d.dataset)) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn department_head(l: Lang, s: &Snapshot, dept: &Department, show_contacts: bool) -> Markup {
    let card: Option<DepartmentScorecard> = views::department_scorecard(s, &dept.code).ok();
    html! {
        div.dept-head {
            h2 { (dept.name) }
            div.contact {
                (l.tr("Đầu mối", "Contact")) ": " (dept.contact.name)
                @if show_contacts {
                    @if let Some(p) = &dept.contact.phone { " · " a href=(format!("tel:{p}")) { (p) } }
                    @if let Some(e) = &dept.contact.email { " · " a href=(format!("mailto:{e}")) { (e) } }
                }
            }
            @if let Some(card) = card {
                div.scorecard {
                    span.score {
                        (l.tr("Đúng hạn", "On time")) ": " strong { (card.current.on_time) "/" (card.current.datasets) }
                        @if card.current.overdue > 0 { " · " span.st-overdue-text { (card.current.overdue) " " (l.tr("quá hạn", "overdue")) } }
                    }
                    @if let Some(q) = &card.quality {
                        span.score.quality {
                            (l.tr("Chất lượng", "Quality")) ": " strong { (percent(q.score)) }
                            @if q.open_violations > 0 { " · " (q.open_violations) " " (l.tr("vi phạm", "violations")) }
                            @if q.quarantined > 0 { " · " (q.quarantined) " " (l.tr("bị giữ lại", "held back")) }
                        }
                    }
                    span.trend-label { (SCORECARD_PERIODS) " " (l.tr("kỳ gần nhất", "last periods")) }
                    (PreEscaped(chart::trend_svg(&chart::department_trend(&card.datasets, SCORECARD_PERIODS),
                        l.tr("Tỷ lệ đúng hạn theo kỳ", "Share on time per period"))))
                }
            }
        }
    }
}

/// A share as a percentage with one decimal (`—` when unknown).
fn percent(share: Option<f64>) -> String {
    share.map_or_else(|| "—".into(), |x| format!("{:.1}%", x * 100.0))
}

/// A dataset's quality score on the board (`—` without rules, rows or a quality pass).
fn quality_figure(s: &Snapshot, dataset: &str) -> String {
    percent(s.quality.as_ref().and_then(|q| q.datasets.iter().find(|d| d.dataset == dataset)).and_then(|d| d.score))
}

/// A dataset's rules and open violations; example keys only when `keys` (they can be a
/// citizen's id number, so never on the public view).
fn quality_section(l: Lang, s: &Snapshot, id: &str, keys: bool) -> Markup {
    let Some(q) = s.quality.as_ref().and_then(|q| q.datasets.iter().find(|d| d.dataset == id)) else {
        return html! {};
    };
    html! {
        h2 { (l.tr("Chất lượng dữ liệu", "Data quality")) ": " (percent(q.score)) }
        table.quality {
            thead { tr {
                th { (l.tr("Quy tắc", "Rule")) } th { (l.tr("Cột", "Column")) } th { (l.tr("Xử lý", "Policy")) }
                th { (l.tr("Vi phạm", "Violations")) } th { (l.tr("Đạt", "Passing")) }
                @if keys { th { (l.tr("Ví dụ (khoá)", "Examples (keys)")) } }
            } }
            tbody { @for r in &q.rules {
                tr data-rule=(r.rule) {
                    td { (r.check.name()) } td { (r.column.as_deref().unwrap_or("—")) }
                    td { (match r.policy { crate::quality::Policy::Warn => l.tr("cảnh báo", "warn"), crate::quality::Policy::Reject => l.tr("giữ lại", "reject") }) }
                    td { (r.violations) } td { (percent(r.passing_share)) }
                    @if keys { td.keys {
                        (q.latest.iter().filter(|v| v.rule == r.rule).take(5).map(|v| match &v.value {
                            Some(value) => format!("{} ({value})", v.key),
                            None => v.key.clone(),
                        }).collect::<Vec<_>>().join(" · "))
                    } }
                }
            } }
        }
        @if q.quarantined > 0 { p { (q.quarantined) " " (l.tr("bản ghi đang bị giữ lại (không nạp vào kho).", "rows held in quarantine (not loaded).")) } }
        p.measured { (l.tr("Đo lúc", "Measured at")) " " (local_time(s.quality.as_ref().and_then(|d| d.generated_at.parse().ok()))) }
    }
}

/// The scenario board: ready or blocked, and for a blocked one whom to call about what.
pub fn scenarios(l: Lang, s: &Snapshot, show_contacts: bool) -> Markup {
    html! {
        h1 { (l.tr("Kịch bản điều hành", "Operational scenarios")) }
        div.cards {
            @for sc in &s.catalog.scenarios {
                @match views::scenario_readiness(s, &sc.id) {
                    Ok(r) => {
                        @let ready = r.state == ReadinessState::Ready;
                        article class=(if ready { "card ready" } else { "card blocked" }) data-scenario=(sc.id) {
                            h2 { (sc.title) }
                            p.state {
                                @if ready { span.badge.st-on_time { (l.tr("Sẵn sàng", "Ready")) } }
                                @else { span.badge.st-overdue { (l.tr("Bị chặn", "Blocked")) } }
                                " " (r.inputs) " " (l.tr("bộ dữ liệu đầu vào", "input datasets"))
                            }
                            @if !ready {
                                table.blockers {
                                    thead { tr {
                                        th { (l.tr("Bộ dữ liệu", "Dataset")) }
                                        th { (l.tr("Lý do", "Why")) }
                                        th { (l.tr("Sở, ngành", "Department")) }
                                        th { (l.tr("Liên hệ", "Call")) }
                                    } }
                                    tbody { @for b in &r.blocking {
                                        tr {
                                            td { a href=(format!("/ui/datasets/{}", b.blocker.dataset)) { (b.title.as_deref().unwrap_or(&b.blocker.dataset)) } }
                                            td { (reason(l, &b.blocker)) }
                                            td { (b.department_name.as_deref().unwrap_or("—")) }
                                            td { @if let Some(c) = &b.contact {
                                                (c.name)
                                                @if show_contacts { @if let Some(p) = &c.phone { br; a href=(format!("tel:{p}")) { (p) } } }
                                            } }
                                        }
                                    } }
                                }
                            }
                        }
                    }
                    Err(e) => article.card { h2 { (sc.title) } p { (e.to_string()) } },
                }
            }
        }
    }
}

fn reason(l: Lang, b: &kho_shared::freshness::readiness::Blocker) -> String {
    use kho_shared::freshness::readiness::BlockReason;
    let why = match b.reason {
        BlockReason::NotInCatalogue => l.tr("Không có trong danh mục", "Not in the catalogue"),
        BlockReason::NeverReceived => l.tr("Chưa từng nhận", "Never received"),
        BlockReason::Overdue => l.tr("Quá hạn", "Overdue"),
        BlockReason::Stale => l.tr("Dữ liệu quá cũ", "Too old"),
    };
    let offline = if b.agent_offline { l.tr(" · máy trạm mất kết nối", " · agent offline") } else { "" };
    format!("{why} ({} {}){offline}", l.tr("tối đa", "max"), l.staleness(&b.max_staleness))
}

/// The fleet: every agent's version, last contact, backlog and last error (operators only).
pub fn fleet(
    l: Lang,
    s: &Snapshot,
    status: &WarehouseStatus,
    transport: &dyn Fn(&str) -> Option<&'static str>,
) -> Markup {
    html! {
        h1 { (l.tr("Máy trạm (agent)", "Agents")) }
        table.board {
            thead { tr {
                th { "Agent" }
                th { (l.tr("Kết nối", "Contact")) }
                th { (l.tr("Phiên bản", "Version")) }
                th { (l.tr("Đường truyền", "Transport")) }
                th { (l.tr("Liên lạc gần nhất", "Last seen")) }
                th { (l.tr("Tồn đọng", "Backlog")) }
                th { (l.tr("Đã áp dụng đến", "Applied through")) }
                th { (l.tr("Lỗi gần nhất", "Last error")) }
            } }
            tbody {
                @for a in &s.agents {
                    @let st = status.agents.iter().find(|x| x.id == a.agent);
                    @let errors: Vec<String> = st.and_then(|x| x.report.as_ref()).map(|r| r.iter()
                        .filter_map(|d| d.last_error.as_ref().map(|e| format!("{}: {e}", d.dataset))).collect()).unwrap_or_default();
                    tr data-agent=(a.agent) {
                        td { (a.agent) @if !a.configured { br; small { (l.tr("không có trong cấu hình", "not configured")) } } }
                        td { @if a.offline { span.badge.st-offline { (l.tr("Mất kết nối", "Offline")) } } @else { span.badge.st-on_time { (l.tr("Trực tuyến", "Online")) } } }
                        td { (st.and_then(|x| x.version.as_deref()).unwrap_or("—")) }
                        td.transport { (transport(&a.agent).map_or("—".to_string(), str::to_uppercase)) }
                        td { (local_time(a.last_seen_at)) }
                        td { (st.and_then(|x| x.outbox_depth).map_or("—".into(), |d| d.to_string())) }
                        td { (st.map_or("—".into(), |x| x.applied_through.to_string())) }
                        td { @if errors.is_empty() { "—" } @else { @for e in errors { div.error { (e) } } } }
                    }
                }
            }
        }
    }
}

/// A dataset's page: freshness, schema, row counts, last changes and history.
pub fn dataset(
    l: Lang,
    s: &Snapshot,
    id: &str,
    status: Option<&crate::warehouse::DatasetStatus>,
    recent: Option<&[RecentChange]>,
    classes: &[(String, Vec<String>)],
) -> Option<Markup> {
    let d = s.dataset(id)?;
    let dept = s.catalog.department(&d.department);
    let fr = d.freshness.as_ref();
    let periods: Vec<(String, i64, kho_shared::freshness::history::Verdict)> =
        views::department_scorecard(s, &d.department)
            .ok()
            .and_then(|c| c.datasets.into_iter().find(|x| x.dataset == id))
            .map(|x| {
                x.periods.iter().map(|p| (p.outcome.period.label.clone(), p.days_late, p.outcome.verdict)).collect()
            })
            .unwrap_or_default();
    let transitions = s.transitions.get(id).map(Vec::as_slice).unwrap_or_default();
    Some(html! {
        h1 { (d.title) " " small.id { (d.dataset) } }
        p { (dept.map_or(d.department.as_str(), |x| x.name.as_str())) " · " (l.cadence(&d.schedule.cadence)) }
        div.facts data-dataset=(d.dataset) data-status=(status_class(fr)) {
            div { span.label { (l.tr("Trạng thái", "Status")) } (status_badge(l, fr)) }
            div { span.label { (l.tr("Kỳ", "Period")) } (fr.map_or("—", |f| f.period.label.as_str())) }
            div { span.label { (l.tr("Hạn", "Deadline")) } (local_time(fr.map(|f| f.deadline))) }
            div { span.label { (l.tr("Thay đổi gần nhất", "Last change")) } (local_time(fr.and_then(|f| f.max_loaded_at))) }
            div { span.label { (l.tr("Đồng bộ gần nhất", "Last sync")) } (local_time(fr.and_then(|f| f.last_sync_at))) }
            @if let Some(st) = status {
                div { span.label { (l.tr("Số bản ghi", "Rows")) } (st.rows) }
                div { span.label { (l.tr("Đã xoá", "Deleted")) } (st.deleted_rows) }
                div { span.label { (l.tr("Lô gần nhất", "Last batch")) } (st.last_agent.as_deref().unwrap_or("—")) " #" (st.last_seq.map_or("—".into(), |s| s.to_string())) }
            }
        }
        @if let Some(err) = status.and_then(|s| s.schema_error.as_ref()) { p.error { (err) } }
        (quality_section(l, s, id, recent.is_some()))
        h2 { (l.tr("Lịch sử đúng hạn", "Freshness history")) " (" (l.tr("số ngày trễ mỗi kỳ", "days late per period")) ")" }
        (PreEscaped(chart::lateness_svg(&periods)))
        table.history {
            thead { tr { th { (l.tr("Thời điểm", "At")) } th { (l.tr("Trạng thái", "Status")) } th { (l.tr("Kỳ", "Period")) } } }
            tbody { @for t in transitions.iter().rev().take(20) {
                tr { td { (local_time(Some(t.at))) } td { (l.status(t.status)) } td { (t.period.label) } }
            } }
        }
        @if let Some(recent) = recent {
            h2 { (l.tr("Thay đổi gần đây", "Recent changes")) }
            table.recent {
                thead { tr {
                    th { (l.tr("Khoá", "Key")) } th { (l.tr("Thao tác", "Change")) }
                    th { (l.tr("Áp dụng lúc", "Applied at")) } th { "Agent" }
                } }
                tbody { @for c in recent {
                    tr {
                        td { (c.key.iter().map(|v| match v { serde_json::Value::String(s) => s.clone(), other => other.to_string() }).collect::<Vec<_>>().join(", ")) }
                        td { @if c.deleted { (l.tr("Xoá", "Deleted")) } @else { (l.tr("Thêm/sửa", "Upserted")) } }
                        td { (local_time(c.applied_at.as_deref().and_then(|t| t.parse().ok()))) }
                        td { (c.agent.as_deref().unwrap_or("—")) " #" (c.seq.map_or("—".into(), |s| s.to_string())) }
                    }
                } }
            }
        }
        h2 { (l.tr("Dữ liệu cá nhân", "Personal data")) }
        @if classes.is_empty() {
            p.classes { (l.tr("Agent không khai báo phân loại cột nào.", "The agent declares no column classes.")) }
        } @else {
            table.classes data-classes=(classes.iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>().join(" ")) {
                thead { tr { th { (l.tr("Loại", "Class")) } th { (l.tr("Cột (xử lý tại agent)", "Columns (agent action)")) } } }
                tbody { @for (class, cols) in classes {
                    tr { td { (class) } td { (cols.join(", ")) } }
                } }
            }
        }
        h2 { (l.tr("Cấu trúc", "Schema")) }
        @match status {
            Some(st) => table.schema {
                thead { tr { th { (l.tr("Cột", "Column")) } th { (l.tr("Kiểu", "Type")) } th { (l.tr("Khoá", "Key")) } } }
                tbody { @for c in &st.columns {
                    tr { td { (c.name) } td { (format!("{:?}", c.ty).to_lowercase()) } td { @if st.key.contains(&c.name) { "✓" } } }
                } }
            },
            None => p { (l.tr("Kho chưa nhận dữ liệu của bộ này.", "The warehouse has received nothing for this dataset yet.")) },
        }
    })
}
