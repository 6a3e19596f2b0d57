//! Person routes: sign-in and sign-out, the signed-in person, and the administrator's account
//! management. Password hashing runs off the runtime, at most [`HASHING_AT_ONCE`] at a time;
//! sign-ins are throttled per account and per source address ([`crate::accounts::throttle`]).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use super::authz::Principal;
use super::{fail, internal, Ctx, Fail, Res};
use crate::accounts::sessions::Sessions;
use crate::accounts::throttle::Throttle;
use crate::accounts::{password, Account, AccountError, Accounts, NewAccount};
use crate::api::accounts::{
    ChangePassword, Login, Me, NewUser, SetPassword, SetRoles, SignedIn, UserChanged, UserView,
};

/// The answer to a failed sign-in, whatever failed.
const WRONG: &str = "wrong account name or password, or the account is disabled";

/// How long a sign-in waits for its turn to hash before it is told to retry.
const HASHING_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Password hashes computed at once (each takes ~19 MiB and tens of milliseconds); a sign-in
/// beyond them is told to retry.
pub(crate) const HASHING_AT_ONCE: usize = 4;

/// The node's people: accounts, sessions, throttle, and the bound on hashing.
#[derive(Clone)]
pub(crate) struct People {
    pub(crate) accounts: Arc<Accounts>,
    pub(crate) sessions: Arc<Sessions>,
    throttle: Arc<Throttle>,
    hashing: Arc<tokio::sync::Semaphore>,
}

impl People {
    pub(crate) fn new(accounts: Arc<Accounts>) -> Self {
        Self {
            accounts,
            sessions: Arc::default(),
            throttle: Arc::default(),
            hashing: Arc::new(tokio::sync::Semaphore::new(HASHING_AT_ONCE)),
        }
    }

    /// Runs password work `f` off the runtime under the hashing bound.
    async fn hashing<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Fail> {
        // A fair queue (tokio's semaphore serves waiters in order), bounded in time.
        let Ok(Ok(permit)) =
            tokio::time::timeout(HASHING_WAIT, self.hashing.clone().acquire_owned()).await
        else {
            return Err(fail(
                StatusCode::TOO_MANY_REQUESTS,
                "too many sign-ins or password changes at once; try again in a few seconds",
            ));
        };
        let out = tokio::task::spawn_blocking(move || {
            let out = f();
            drop(permit);
            out
        })
        .await
        .map_err(internal)?;
        Ok(out)
    }
}

fn account_error(e: AccountError) -> Fail {
    match e {
        AccountError::Store(e) => internal(e),
        AccountError::NotFound(_) => fail(StatusCode::NOT_FOUND, e),
        AccountError::Exists(_) => fail(StatusCode::CONFLICT, e),
        AccountError::Full => fail(StatusCode::INSUFFICIENT_STORAGE, e),
        e => fail(StatusCode::UNPROCESSABLE_ENTITY, e),
    }
}

fn too_many(wait: std::time::Duration) -> Response {
    let secs = wait.as_secs().max(1);
    let mut r = fail(
        StatusCode::TOO_MANY_REQUESTS,
        format!(
            "too many failed sign-ins for this account or from this address; try again in {secs} s"
        ),
    )
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

fn me_of(p: &Principal) -> Me {
    match p {
        Principal::Node => Me {
            account: None,
            display_name: None,
            roles: Vec::new(),
            node_token: true,
        },
        Principal::Person { account, .. } => Me {
            account: Some(account.name.clone()),
            display_name: Some(account.display_name.clone()),
            roles: account.roles.clone(),
            node_token: false,
        },
    }
}

/// Checks a password against the account, the way sign-in does (unknown and disabled
/// accounts take as long as known ones). `Ok(Some(account))` on a match.
async fn check_password(
    people: &People,
    name: &str,
    clear: String,
) -> Result<Option<Account>, Fail> {
    let accounts = people.accounts.clone();
    let name = name.to_string();
    people
        .hashing(move || -> Result<Option<Account>, AccountError> {
            match accounts.get(&name)? {
                Some(a) if password::verify(&clear, &a.password) => Ok(Some(a)),
                Some(_) => Ok(None),
                None => {
                    password::verify_nobody(&clear);
                    Ok(None)
                }
            }
        })
        .await?
        .map_err(account_error)
}

/// Why a sign-in failed.
pub(super) enum SignInError {
    /// Wrong name or password, or a disabled account (one answer for all).
    Wrong,
    /// Too many failures: try again after this long.
    TooMany(std::time::Duration),
    /// The node could not check (hashing busy, store error).
    Failed(Fail),
}

impl IntoResponse for SignInError {
    fn into_response(self) -> Response {
        match self {
            SignInError::Wrong => fail(StatusCode::UNAUTHORIZED, WRONG).into_response(),
            SignInError::TooMany(wait) => too_many(wait),
            SignInError::Failed(f) => f.into_response(),
        }
    }
}

impl SignInError {
    /// What to tell the person.
    pub(super) fn message(&self) -> String {
        match self {
            SignInError::Wrong => WRONG.to_string(),
            SignInError::TooMany(wait) => format!(
                "too many failed sign-ins for this account or from this address; try again in {} s",
                wait.as_secs().max(1)
            ),
            SignInError::Failed(f) => f.1.error.clone(),
        }
    }
}

/// Checks a sign-in (throttled per account and address) and starts a session: the signed-in
/// principal with its fresh token. The API and the portal both sign in here.
pub(super) async fn sign_in(
    ctx: &Ctx,
    from: SocketAddr,
    account: &str,
    password: String,
) -> Result<Principal, SignInError> {
    let people = &ctx.people;
    let name = account.trim().to_lowercase();
    if huitong_protocol::actor::check_account(&name).is_err() {
        // No such account can exist: counted against the address only, so that junk names
        // (up to the body limit each) never fill the per-account table.
        people.throttle.failed_address(from.ip());
        return Err(SignInError::Wrong);
    }
    people
        .throttle
        .check(&name, from.ip())
        .map_err(SignInError::TooMany)?;
    let account = check_password(people, &name, password)
        .await
        .map_err(SignInError::Failed)?;
    // A disabled account answers like a wrong password: a right password for it is no
    // different from a guess (it may be an ex-employee's, or a compromised one).
    let Some(account) = account.filter(|a| !a.disabled) else {
        people.throttle.failed(&name, from.ip());
        tracing::warn!(target: "huitong::audit", account = %name, from = %from.ip(), "failed sign-in");
        return Err(SignInError::Wrong);
    };
    people.throttle.succeeded(&name);
    let (token, session) = people
        .sessions
        .start(&account.name, account.password_set_ms);
    tracing::info!(target: "huitong::audit", account = %account.name, from = %from.ip(), "signed in");
    Ok(Principal::Person {
        account,
        token,
        csrf: session.csrf,
    })
}

pub(super) async fn login(
    State(ctx): State<Ctx>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Json(req): Json<Login>,
) -> Response {
    let principal = match sign_in(&ctx, from, &req.account, req.password).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let Principal::Person { token, csrf, .. } = &principal else {
        return internal("sign-in made no person").into_response();
    };
    Json(SignedIn {
        token: token.clone(),
        csrf: csrf.clone(),
        me: me_of(&principal),
        idle_timeout_s: ctx.people.sessions.idle().as_secs(),
        max_age_s: ctx.people.sessions.max_age().as_secs(),
    })
    .into_response()
}

pub(super) async fn logout(
    State(ctx): State<Ctx>,
    Extension(p): Extension<Principal>,
) -> Result<StatusCode, Fail> {
    match p {
        Principal::Node => Err(fail(
            StatusCode::BAD_REQUEST,
            "the node's admin token is not a session; nothing to sign out of",
        )),
        Principal::Person { token, .. } => {
            ctx.people.sessions.end(&token);
            Ok(StatusCode::NO_CONTENT)
        }
    }
}

pub(super) async fn me(Extension(p): Extension<Principal>) -> Res<Me> {
    Ok(Json(me_of(&p)))
}

pub(super) async fn change_own_password(
    State(ctx): State<Ctx>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Extension(p): Extension<Principal>,
    Json(req): Json<ChangePassword>,
) -> Response {
    match own_password(&ctx, from, &p, req).await {
        Ok(changed) => Json(changed).into_response(),
        Err(Refused::Wait(wait)) => too_many(wait),
        Err(Refused::Fail(f)) => f.into_response(),
    }
}

/// Why a person's own password change was refused.
pub(crate) enum Refused {
    /// Too many wrong passwords: try again after this long.
    Wait(std::time::Duration),
    /// Any other refusal.
    Fail(Fail),
}

/// Changes the signed-in person's own password after checking the current one (throttled
/// like sign-in, from `from`); their sessions end.
pub(crate) async fn own_password(
    ctx: &Ctx,
    from: SocketAddr,
    p: &Principal,
    req: ChangePassword,
) -> Result<UserChanged, Refused> {
    let Principal::Person { account, .. } = p else {
        return Err(Refused::Fail(fail(
            StatusCode::BAD_REQUEST,
            "the node's admin token has no password; set a person's with POST /api/v1/users/{account}/password",
        )));
    };
    let people = &ctx.people;
    people
        .throttle
        .check(&account.name, from.ip())
        .map_err(Refused::Wait)?;
    match check_password(people, &account.name, req.old).await {
        Ok(Some(_)) => people.throttle.succeeded(&account.name),
        Ok(None) => {
            people.throttle.failed(&account.name, from.ip());
            return Err(Refused::Fail(fail(
                StatusCode::FORBIDDEN,
                "the current password is wrong",
            )));
        }
        Err(f) => return Err(Refused::Fail(f)),
    }
    set_password(ctx, p, account.name.clone(), Some(req.new))
        .await
        .map_err(Refused::Fail)
}

fn view(ctx: &Ctx, a: &Account) -> UserView {
    UserView::of(a, ctx.people.sessions.count(&a.name))
}

pub(super) async fn list_users(State(ctx): State<Ctx>) -> Res<Vec<UserView>> {
    users(&ctx).await.map(Json)
}

/// Every account of the node.
pub(crate) async fn users(ctx: &Ctx) -> Result<Vec<UserView>, Fail> {
    let accounts = ctx.people.accounts.clone();
    let all = tokio::task::spawn_blocking(move || accounts.list())
        .await
        .map_err(internal)?
        .map_err(internal)?;
    Ok(all.iter().map(|a| view(ctx, a)).collect())
}

pub(super) async fn add_user(
    State(ctx): State<Ctx>,
    Extension(p): Extension<Principal>,
    Json(req): Json<NewUser>,
) -> Res<UserChanged> {
    create_user(&ctx, &p, req).await.map(Json)
}

/// Creates an account (with a generated password when none is given, answered once).
pub(crate) async fn create_user(
    ctx: &Ctx,
    p: &Principal,
    req: NewUser,
) -> Result<UserChanged, Fail> {
    let generated = req.password.is_none().then(password::generate);
    let new = NewAccount {
        name: req.account.trim().to_string(),
        display_name: req.display_name.trim().to_string(),
        roles: req.roles,
        password: req
            .password
            .or_else(|| generated.clone())
            .unwrap_or_default(),
    };
    let accounts = ctx.people.accounts.clone();
    let account = ctx
        .people
        .hashing(move || accounts.add(new))
        .await?
        .map_err(account_error)?;
    tracing::info!(target: "huitong::audit", account = %account.name, roles = ?account.roles, by = %by(p), "account created");
    Ok(UserChanged {
        user: view(ctx, &account),
        generated_password: generated,
        sessions_ended: 0,
    })
}

/// Sets `name`'s password (generated when `clear` is `None`) and ends its sessions.
async fn set_password(
    ctx: &Ctx,
    p: &Principal,
    name: String,
    clear: Option<String>,
) -> Result<UserChanged, Fail> {
    let generated = clear.is_none().then(password::generate);
    let clear = clear.or_else(|| generated.clone()).unwrap_or_default();
    let accounts = ctx.people.accounts.clone();
    let account = ctx
        .people
        .hashing(move || accounts.set_password(&name, &clear))
        .await?
        .map_err(account_error)?;
    Ok(changed(ctx, p, "password set", &account, generated))
}

/// After a change to `account`: its sessions end, the change is logged, the answer built.
fn changed(
    ctx: &Ctx,
    p: &Principal,
    what: &'static str,
    account: &Account,
    generated_password: Option<String>,
) -> UserChanged {
    let ended = ctx.people.sessions.end_all(&account.name);
    // An administrator's reset or enabling also lifts a sign-in lock someone caused by guessing.
    ctx.people.throttle.succeeded(&account.name);
    tracing::info!(target: "huitong::audit", account = %account.name, roles = ?account.roles, disabled = account.disabled, by = %by(p), "account {what}");
    UserChanged {
        user: view(ctx, account),
        generated_password,
        sessions_ended: ended,
    }
}

pub(super) async fn reset_password(
    State(ctx): State<Ctx>,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
    body: Option<Json<SetPassword>>,
) -> Res<UserChanged> {
    let SetPassword { password } = body.map(|Json(b)| b).unwrap_or_default();
    reset(&ctx, &p, name, password).await.map(Json)
}

/// Sets another person's password (generated when `password` is `None`, answered once).
pub(crate) async fn reset(
    ctx: &Ctx,
    p: &Principal,
    name: String,
    password: Option<String>,
) -> Result<UserChanged, Fail> {
    not_self(p, &name)?;
    set_password(ctx, p, name, password).await
}

/// Refuses an administrator's change to their own account (roles, disabling, a password
/// without the old one): another administrator, or the node token, makes it.
fn not_self(p: &Principal, name: &str) -> Result<(), Fail> {
    if p.account() == Some(name) {
        return Err(fail(
            StatusCode::FORBIDDEN,
            "an administrator may not change their own roles, disable themselves or reset their own password here; another administrator or the node's admin token does (own password: POST /api/v1/me/password)",
        ));
    }
    Ok(())
}

/// Applies a change to an account off the runtime, ends its sessions, answers its view.
async fn change(
    ctx: &Ctx,
    p: &Principal,
    what: &'static str,
    name: &str,
    f: impl FnOnce(&Accounts) -> Result<Account, AccountError> + Send + 'static,
) -> Result<UserChanged, Fail> {
    not_self(p, name)?;
    let accounts = ctx.people.accounts.clone();
    let account = tokio::task::spawn_blocking(move || f(&accounts))
        .await
        .map_err(internal)?
        .map_err(account_error)?;
    Ok(changed(ctx, p, what, &account, None))
}

pub(super) async fn set_roles(
    State(ctx): State<Ctx>,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
    Json(req): Json<SetRoles>,
) -> Res<UserChanged> {
    roles(&ctx, &p, name, req.roles).await.map(Json)
}

/// Sets another person's roles; their sessions end.
pub(crate) async fn roles(
    ctx: &Ctx,
    p: &Principal,
    name: String,
    roles: Vec<crate::accounts::Role>,
) -> Result<UserChanged, Fail> {
    change(ctx, p, "roles changed", &name.clone(), move |a| {
        a.set_roles(&name, roles)
    })
    .await
}

pub(super) async fn disable(
    State(ctx): State<Ctx>,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
) -> Res<UserChanged> {
    disabled(&ctx, &p, name, true).await.map(Json)
}

pub(super) async fn enable(
    State(ctx): State<Ctx>,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
) -> Res<UserChanged> {
    disabled(&ctx, &p, name, false).await.map(Json)
}

/// Disables (or enables again) another person's account; their sessions end.
pub(crate) async fn disabled(
    ctx: &Ctx,
    p: &Principal,
    name: String,
    disabled: bool,
) -> Result<UserChanged, Fail> {
    let what = if disabled { "disabled" } else { "enabled" };
    change(ctx, p, what, &name.clone(), move |a| {
        a.set_disabled(&name, disabled)
    })
    .await
}

fn by(p: &Principal) -> String {
    match p {
        Principal::Node => "admin token".into(),
        Principal::Person { account, .. } => account.name.clone(),
    }
}
