//! What every page shares: the language, the header and navigation a person's roles allow
//! (with a count of pending work), the audit alarm banner, the error page, and the response
//! headers that keep the pages to their own origin.

use askama::Template;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};

use super::guard::{self, Viewer};
use crate::accounts::Role;
use crate::http::Ctx;

/// The language of the pages: 中文 first, English on request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lang {
    /// 简体中文.
    Zh,
    /// English.
    En,
}

impl Lang {
    /// The language the request's cookie chose (中文 by default).
    pub(crate) fn of(headers: &HeaderMap) -> Self {
        match guard::cookie(headers, guard::LANG_COOKIE) {
            Some("en") => Lang::En,
            _ => Lang::Zh,
        }
    }

    /// The text in this language.
    pub(crate) fn t<'a>(self, zh: &'a str, en: &'a str) -> &'a str {
        match self {
            Lang::Zh => zh,
            Lang::En => en,
        }
    }

    /// The `lang` attribute.
    pub(crate) fn code(self) -> &'static str {
        match self {
            Lang::Zh => "zh-CN",
            Lang::En => "en",
        }
    }

    /// Whether the pages are in English.
    pub(crate) fn en(self) -> bool {
        self == Lang::En
    }
}

/// One item of the top navigation.
#[derive(Clone, Debug)]
pub(crate) struct Nav {
    pub(crate) href: &'static str,
    pub(crate) label: &'static str,
    /// Pending work (a red badge when above zero).
    pub(crate) badge: usize,
    pub(crate) current: bool,
}

/// The header, navigation and banner of a page.
#[derive(Clone, Debug)]
pub(crate) struct Chrome {
    pub(crate) lang: Lang,
    pub(crate) title: String,
    pub(crate) node: String,
    /// The signed-in person's name and role labels.
    pub(crate) person: Option<(String, String)>,
    pub(crate) nav: Vec<Nav>,
    pub(crate) csrf: String,
    /// The page's own path (the language switch comes back to it).
    pub(crate) path: String,
    /// An audit alarm, shown on every page until it is resolved.
    pub(crate) alarm: Option<String>,
}

impl Chrome {
    /// The chrome of a page titled `title` for `viewer`.
    pub(crate) fn new(ctx: &Ctx, viewer: &Viewer, title: &str) -> Self {
        let lang = viewer.lang;
        let roles = |rs: &[Role]| rs.iter().any(|r| viewer.has(*r));
        let pending = if viewer.has(Role::Approver) {
            super::applications::awaiting(ctx).len()
        } else {
            0
        };
        let unread = if viewer.account().is_some() {
            super::notices::unread(ctx, viewer)
        } else {
            0
        };
        let items: [(&str, &str, &str, bool, usize); 12] = [
            ("/", "首页", "Home", viewer.account().is_some(), 0),
            (
                "/notifications",
                "通知",
                "Notifications",
                viewer.account().is_some(),
                unread,
            ),
            (
                "/catalogue",
                "资源目录",
                "Catalogue",
                viewer.account().is_some(),
                0,
            ),
            (
                "/applications",
                "我的申请",
                "Applications",
                roles(&[Role::DataUser, Role::Approver, Role::Auditor]),
                0,
            ),
            (
                "/inbox",
                "待我审批",
                "To approve",
                roles(&[Role::Approver]),
                pending,
            ),
            ("/pulls", "数据拉取", "Pulls", roles(&[Role::DataUser]), 0),
            (
                "/subscriptions",
                "订阅",
                "Subscriptions",
                roles(&[Role::DataUser, Role::Admin, Role::Auditor]),
                0,
            ),
            (
                "/collect",
                "数据采集",
                "Collection",
                roles(&[Role::Cataloguer, Role::Admin, Role::Auditor]),
                0,
            ),
            (
                "/cataloguing",
                "目录编制",
                "Cataloguing",
                roles(&[Role::Cataloguer]),
                0,
            ),
            (
                "/audit",
                "审计",
                "Audit",
                roles(&[Role::Auditor]) || (ctx.state.is_hub() && roles(&[Role::Admin])),
                0,
            ),
            (
                "/statistics",
                "统计",
                "Statistics",
                viewer.account().is_some(),
                0,
            ),
            (
                "/people",
                "人员与角色",
                "People",
                roles(&[Role::Admin, Role::Auditor]),
                0,
            ),
        ];
        let current = viewer.path.split('?').next().unwrap_or("/");
        let nav = items
            .iter()
            .filter(|(_, _, _, shown, _)| *shown)
            .map(|(href, zh, en, _, badge)| Nav {
                href,
                label: lang.t(zh, en),
                badge: *badge,
                current: *href == current
                    || (*href != "/" && current.starts_with(&format!("{href}/"))),
            })
            .collect();
        Self {
            lang,
            title: title.to_string(),
            node: ctx.state.config.node.name.clone(),
            person: viewer.account().map(|a| {
                (
                    a.display_name.clone(),
                    a.roles
                        .iter()
                        .map(|r| if lang.en() { r.as_str() } else { r.label() })
                        .collect::<Vec<_>>()
                        .join(" · "),
                )
            }),
            nav,
            csrf: viewer.csrf().to_string(),
            path: viewer.path.clone(),
            alarm: alarm(ctx, lang),
        }
    }

    /// Whether the navigation holds `href` (the person may open it).
    pub(crate) fn shows(&self, href: &str) -> bool {
        self.nav.iter().any(|n| n.href == href)
    }

    /// The language switch's link.
    pub(crate) fn switch_href(&self) -> String {
        let to = if self.lang.en() { "zh" } else { "en" };
        format!("/lang?to={to}&next={}", guard::encode(&self.path))
    }
}

/// The members the charter held now suspends (fully or to read-only), by name.
pub(crate) fn suspended_members(
    ctx: &Ctx,
) -> Vec<(String, huitong_protocol::charter::MemberStatus)> {
    use huitong_protocol::charter::MemberStatus;
    ctx.state.with_charter(|c| {
        c.map(|c| {
            c.members
                .iter()
                .filter(|m| m.status != MemberStatus::Active)
                .map(|m| (m.name.clone(), m.status))
                .collect()
        })
        .unwrap_or_default()
    })
}

/// The audit alarm to show on every page, if any: split views, omissions, forks, suspended
/// members.
pub(crate) fn alarm(ctx: &Ctx, lang: Lang) -> Option<String> {
    let s = &ctx.state;
    let split = crate::audit::checkpoints::evidence_count(s).unwrap_or(0);
    let omissions = crate::audit::omission::list(s).map_or(0, |l| l.len());
    let forks = s.store.forks().map_or(0, |f| f.len());
    let suspended = suspended_members(ctx).len();
    if split + omissions as u64 + forks as u64 + suspended as u64 == 0 {
        return None;
    }
    Some(format!(
        "{} {split} · {} {omissions} · {} {forks} · {} {suspended}",
        lang.t("审计告警：分叉视图", "Audit alarm: split views"),
        lang.t("遗漏", "omissions"),
        lang.t("分叉", "forks"),
        lang.t("被暂停成员", "suspended members"),
    ))
}

/// A page that could not be shown: the status and what to tell the person.
#[derive(Debug)]
pub(crate) struct PageError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
}

impl PageError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// An internal fault: logged with a reference; the person is told the node could not
    /// answer and the reference to give the operator (not the detail, which may name files).
    pub(crate) fn internal(e: impl std::fmt::Display) -> Self {
        let reference = hex::encode(rand::random::<[u8; 4]>());
        tracing::error!(error = %e, reference = %reference, "portal page failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("本节点暂时无法处理此请求，请联系系统管理员并提供编号 {reference}。 The node could not answer; give the operator the reference {reference}."),
        )
    }
}

impl From<crate::http::Fail> for PageError {
    fn from(f: crate::http::Fail) -> Self {
        if f.0.is_server_error() {
            return Self::internal(f.1.error);
        }
        let mut message = f.1.error;
        for d in f.1.details {
            message.push_str(&format!("\n{}: {}", d.path, d.message));
        }
        Self::new(f.0, message)
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    status: u16,
    message: &'a str,
    en: bool,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let page = ErrorPage {
            status: self.status.as_u16(),
            message: &self.message,
            en: !self.message.is_empty() && self.message.is_ascii(),
        };
        let mut r = html(&page);
        *r.status_mut() = self.status;
        r
    }
}

/// A page's result.
pub(crate) type PageResult = Result<Response, PageError>;

/// Renders `page` with the portal's headers.
pub(crate) fn html(page: &impl Template) -> Response {
    match page.render() {
        Ok(body) => with_headers(Html(body).into_response()),
        Err(e) => {
            tracing::error!(error = %e, "cannot render a portal page");
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot render the page").into_response()
        }
    }
}

/// Renders `page` as the answer to a request.
pub(crate) fn show(page: &impl Template) -> PageResult {
    Ok(html(page))
}

/// The headers every portal page carries: its own origin only for scripts, styles, frames and
/// forms; never framed; no MIME sniffing; no referrer to other sites; never cached (pages show
/// a person's data).
pub(crate) fn with_headers(r: Response) -> Response {
    let mut r = with_headers_keeping_cache(r);
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The same headers but for the cache time, which an answer may set itself (the assets are
/// cached; redirects and downloads say `no-store` where they need to).
pub(crate) fn with_headers_keeping_cache(mut r: Response) -> Response {
    let h = r.headers_mut();
    for (k, v) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "same-origin"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

/// `body` as a download of type `mime` named `name` (quotes dropped from the name).
pub(crate) fn download(body: impl IntoResponse, mime: &'static str, name: &str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"{}\"",
        name.replace('"', "")
    )) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    r
}

/// `page` rendered with `status` (a form shown again with what was wrong).
pub(crate) fn html_with(page: &impl Template, status: StatusCode) -> Response {
    let mut r = html(page);
    *r.status_mut() = status;
    r
}
