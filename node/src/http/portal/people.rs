//! People in the portal: the administrator's account pages (list, create with a generated
//! first password shown once, roles, password reset, disable and enable; the auditor reads the
//! list), and every person's own password change. Each action goes through the API's own
//! functions, so separation of duties (三员分立), the rule that an administrator does not change
//! their own account, and the audit log lines are the API's.

use std::net::SocketAddr;

use askama::Template;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use axum::Extension;

use super::form::Form;
use super::format;
use super::guard::{encode, Viewer};
use super::page::{html_with, show, Chrome, Lang, PageError, PageResult};
use crate::accounts::Role;
use crate::api::accounts::{ChangePassword, NewUser, UserChanged, UserView};
use crate::http::people as api;
use crate::http::Ctx;

/// A role checkbox.
pub(crate) struct RoleBox {
    key: &'static str,
    label: String,
    checked: bool,
}

fn role_boxes(held: &[Role], lang: Lang) -> Vec<RoleBox> {
    Role::ALL
        .iter()
        .map(|r| RoleBox {
            key: r.as_str(),
            label: format!("{}（{}）", r.label(), r.as_str()),
            checked: held.contains(r),
        })
        .map(|mut b| {
            if lang.en() {
                b.label = b.key.to_string();
            }
            b
        })
        .collect()
}

/// A row of the accounts table.
pub(crate) struct PersonRow {
    account: String,
    href: String,
    display_name: String,
    roles: String,
    disabled: bool,
    sessions: usize,
    password_set: String,
}

#[derive(Template)]
#[template(path = "people.html")]
struct PeoplePage {
    c: Chrome,
    rows: Vec<PersonRow>,
    /// The administrator may change accounts (the auditor only reads).
    admin: bool,
    roles: Vec<RoleBox>,
    account: String,
    display_name: String,
    error: Option<String>,
    /// A first password, generated now and shown this once.
    created: Option<(String, String)>,
}

/// An account as a row of the page.
fn person_row(u: UserView, lang: Lang, tz: chrono_tz::Tz) -> PersonRow {
    PersonRow {
        href: format!("/people/{}", encode(&u.account)),
        roles: roles_text(&u.roles, lang),
        display_name: u.display_name,
        disabled: u.disabled,
        sessions: u.sessions,
        password_set: format::time(tz, u.password_set_ms),
        account: u.account,
    }
}

fn roles_text(roles: &[Role], lang: Lang) -> String {
    roles
        .iter()
        .map(|r| if lang.en() { r.as_str() } else { r.label() })
        .collect::<Vec<_>>()
        .join("、")
}

async fn people_page(
    ctx: &Ctx,
    viewer: &Viewer,
    form: Option<&Form>,
    error: Option<String>,
    created: Option<UserChanged>,
) -> Result<PeoplePage, PageError> {
    let lang = viewer.lang;
    let tz = ctx.state.timezone();
    let rows = api::users(ctx)
        .await?
        .into_iter()
        .map(|u| person_row(u, lang, tz))
        .collect();
    let picked = form.map(picked_roles).unwrap_or_default();
    Ok(PeoplePage {
        c: Chrome::new(ctx, viewer, lang.t("人员与角色", "People and roles")),
        rows,
        admin: viewer.has(Role::Admin),
        roles: role_boxes(&picked, lang),
        account: form
            .map(|f| f.get("account").to_string())
            .unwrap_or_default(),
        display_name: form
            .map(|f| f.get("display_name").to_string())
            .unwrap_or_default(),
        error,
        created: created.and_then(|c| c.generated_password.map(|p| (c.user.account, p))),
    })
}

/// The roles ticked in a form (unknown values are ignored: the checkboxes name known ones).
fn picked_roles(form: &Form) -> Vec<Role> {
    form.all("roles")
        .iter()
        .filter_map(|r| r.parse().ok())
        .collect()
}

/// `GET /people`.
pub(crate) async fn list(
    State(ctx): State<Ctx>,
    Extension(viewer): Extension<Viewer>,
) -> PageResult {
    show(&people_page(&ctx, &viewer, None, None, None).await?)
}

/// `POST /people`: creates an account; its first password is shown once.
pub(crate) async fn create(
    State(ctx): State<Ctx>,
    Extension(viewer): Extension<Viewer>,
    Extension(form): Extension<Form>,
) -> PageResult {
    let who = viewer.acting()?;
    let req = NewUser {
        account: form.get("account").to_string(),
        display_name: form.get("display_name").to_string(),
        roles: picked_roles(&form),
        password: None,
    };
    match api::create_user(&ctx, &who, req).await {
        Ok(created) => show(&people_page(&ctx, &viewer, None, None, Some(created)).await?),
        Err(f) if f.0.is_client_error() => {
            let status = f.0;
            let page = people_page(&ctx, &viewer, Some(&form), Some(f.1.error), None).await?;
            Ok(html_with(&page, status))
        }
        Err(f) => Err(f.into()),
    }
}

#[derive(Template)]
#[template(path = "person.html")]
struct PersonPage {
    c: Chrome,
    user: PersonRow,
    roles: Vec<RoleBox>,
    /// A password generated now and shown this once.
    password: Option<String>,
    /// What was just done.
    done: Option<String>,
    error: Option<String>,
}

async fn person_page(
    ctx: &Ctx,
    viewer: &Viewer,
    name: &str,
    outcome: Result<Option<UserChanged>, String>,
    done: Option<String>,
) -> Result<PersonPage, PageError> {
    let lang = viewer.lang;
    let tz = ctx.state.timezone();
    let u = api::users(ctx)
        .await?
        .into_iter()
        .find(|u| u.account == name)
        .ok_or_else(|| {
            PageError::new(
                StatusCode::NOT_FOUND,
                format!("{} {name}", lang.t("没有这个账号：", "No such account:")),
            )
        })?;
    let (password, error) = match outcome {
        Ok(c) => (c.and_then(|c| c.generated_password), None),
        Err(e) => (None, Some(e)),
    };
    Ok(PersonPage {
        c: Chrome::new(ctx, viewer, &u.display_name),
        roles: role_boxes(&u.roles, lang),
        user: person_row(u, lang, tz),
        password,
        done,
        error,
    })
}

/// `GET /people/{account}`.
pub(crate) async fn person(
    State(ctx): State<Ctx>,
    Extension(viewer): Extension<Viewer>,
    Path(name): Path<String>,
) -> PageResult {
    show(&person_page(&ctx, &viewer, &name, Ok(None), None).await?)
}

/// The answer to a change of `name`: the person page with what was done, or with the refusal.
async fn after(
    ctx: &Ctx,
    viewer: &Viewer,
    name: &str,
    result: Result<UserChanged, crate::http::Fail>,
    done: &str,
) -> PageResult {
    match result {
        Ok(changed) => {
            let ended = changed.sessions_ended;
            let done = format!(
                "{done}{}",
                if ended > 0 {
                    format!(
                        " {} {ended}",
                        viewer.lang.t("已结束其登录会话：", "Sessions ended:")
                    )
                } else {
                    String::new()
                }
            );
            show(&person_page(ctx, viewer, name, Ok(Some(changed)), Some(done)).await?)
        }
        Err(f) if f.0.is_client_error() => {
            let status = f.0;
            Ok(html_with(
                &person_page(ctx, viewer, name, Err(f.1.error), None).await?,
                status,
            ))
        }
        Err(f) => Err(f.into()),
    }
}

/// `POST /people/{account}/{action}`: `roles` (the ticked ones), `password` (a new generated
/// one, shown once), `disable` or `enable`.
pub(crate) async fn change(
    State(ctx): State<Ctx>,
    Extension(viewer): Extension<Viewer>,
    Extension(form): Extension<Form>,
    Path((name, action)): Path<(String, String)>,
) -> PageResult {
    let lang = viewer.lang;
    let who = viewer.acting()?;
    let (result, done) = match action.as_str() {
        "roles" => (
            api::roles(&ctx, &who, name.clone(), picked_roles(&form)).await,
            lang.t("角色已更新。", "Roles updated."),
        ),
        "password" => (
            api::reset(&ctx, &who, name.clone(), None).await,
            lang.t("密码已重置。", "Password reset."),
        ),
        "disable" => (
            api::disabled(&ctx, &who, name.clone(), true).await,
            lang.t("账号已停用。", "Account disabled."),
        ),
        "enable" => (
            api::disabled(&ctx, &who, name.clone(), false).await,
            lang.t("账号已启用。", "Account enabled."),
        ),
        _ => {
            return Err(PageError::new(
                StatusCode::NOT_FOUND,
                lang.t("没有这个操作。", "There is no such action."),
            ))
        }
    };
    after(&ctx, &viewer, &name, result, done).await
}

#[derive(Template)]
#[template(path = "me.html")]
struct MePage {
    c: Chrome,
    account: String,
    roles: String,
    error: Option<String>,
}

fn me_page(ctx: &Ctx, viewer: &Viewer, error: Option<String>) -> MePage {
    let lang = viewer.lang;
    let (account, roles) = viewer
        .account()
        .map(|a| (a.name.clone(), roles_text(&a.roles, lang)))
        .unwrap_or_default();
    MePage {
        c: Chrome::new(ctx, viewer, lang.t("我的账号", "My account")),
        account,
        roles,
        error,
    }
}

/// `GET /me`.
pub(crate) async fn me(State(ctx): State<Ctx>, Extension(viewer): Extension<Viewer>) -> PageResult {
    show(&me_page(&ctx, &viewer, None))
}

/// `POST /me/password`: the person's own password, after the current one; every session of
/// theirs ends, so they sign in again.
pub(crate) async fn change_password(
    State(ctx): State<Ctx>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Extension(viewer): Extension<Viewer>,
    Extension(form): Extension<Form>,
) -> PageResult {
    let lang = viewer.lang;
    let refused = |status: StatusCode, message: String| {
        Ok(html_with(&me_page(&ctx, &viewer, Some(message)), status))
    };
    if form.raw("old").is_empty() {
        return refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            lang.t("请输入当前密码。", "Enter your current password.")
                .to_string(),
        );
    }
    // Not trimmed: a password is taken as typed.
    let new = form.raw("new");
    if new != form.raw("repeat") {
        return refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            lang.t(
                "两次输入的新密码不一致。",
                "The new password and its repetition differ.",
            )
            .to_string(),
        );
    }
    let who = viewer.acting()?;
    let req = ChangePassword {
        old: form.raw("old").to_string(),
        new: new.to_string(),
    };
    match api::own_password(&ctx, from, &who, req).await {
        Ok(_) => Ok(Redirect::to(&format!("/login?next={}", encode("/"))).into_response()),
        Err(api::Refused::Wait(wait)) => refused(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "{} {} s",
                lang.t(
                    "当前密码错误次数过多，请稍后再试：",
                    "Too many wrong passwords; try again in"
                ),
                wait.as_secs().max(1)
            ),
        ),
        // A wrong current password is a mistake in the form, not a refusal of the page.
        Err(api::Refused::Fail(f)) if f.0 == StatusCode::FORBIDDEN => {
            refused(StatusCode::UNPROCESSABLE_ENTITY, f.1.error)
        }
        Err(api::Refused::Fail(f)) if f.0.is_client_error() => refused(f.0, f.1.error),
        Err(api::Refused::Fail(f)) => Err(f.into()),
    }
}
