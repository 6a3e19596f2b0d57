//! Subscription routes: subscribe (checked, and a database target tried at once), list with
//! each one's lag and last error, unsubscribe.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};

use super::authz::Principal;
use super::{fail, internal, Ctx, Res};
use crate::subscribe::request::{self, RequestError, SubscribeRequest};
use crate::subscribe::{self, Subscription, SubscriptionView, Target};
use crate::transfer::pull::PullRequest;

fn refused(e: RequestError) -> super::Fail {
    match e {
        RequestError::Invalid(_) => fail(StatusCode::UNPROCESSABLE_ENTITY, e),
        RequestError::NotFound(_) => fail(StatusCode::NOT_FOUND, e),
        RequestError::Exists(_) => fail(StatusCode::CONFLICT, e),
        RequestError::Store(_) => internal(e),
    }
}

pub(super) async fn create(
    State(ctx): State<Ctx>,
    Extension(who): Extension<Principal>,
    Json(mut req): Json<SubscribeRequest>,
) -> Res<Subscription> {
    let (mut created_by, mut own_only) = (None, false);
    if let Principal::Person { account, .. } = &who {
        // A person's subscription delivers into their own directory of the exchange directory;
        // a database target (and its password) is the node operator's to set.
        match &mut req.target {
            Target::Dir { path, .. } => *path = super::paths::own_dir(&ctx, &account.name)?,
            _ => {
                return Err(fail(
                    StatusCode::FORBIDDEN,
                    "a database target is set by the node's operator (`huitong subscribe` on the node); subscribe into your own directory instead",
                ))
            }
        }
        // A person subscribes under their own grant, as they pull.
        let mut pull = PullRequest {
            code: req.code.clone(),
            provider: req.provider.clone(),
            version: None,
            fields: req.fields.clone(),
            out: std::path::PathBuf::new(),
            format: Default::default(),
            grant: req.grant.clone(),
            token: None,
            part: Default::default(),
            changes_from: None,
            out_dir_seen: None,
            started_by: None,
            own_grant_only: false,
        };
        super::datasets::own_grant(&ctx, &account.name, &mut pull)?;
        req.grant = pull.grant;
        own_only = true;
        created_by = Some(account.name.clone());
    }
    let sub = request::check(&ctx.state, req, created_by, own_only).map_err(refused)?;
    request::try_target(&ctx.state, &sub)
        .await
        .map_err(refused)?;
    subscribe::put(&ctx.state.store, &sub).map_err(internal)?;
    tracing::info!(subscription = %sub.name, code = %sub.code, provider = %sub.provider, target = %sub.target.describe(), "subscribed");
    ctx.subscriber.wake();
    Ok(Json(sub))
}

/// Whether `who` sees `sub`: the node token, the administrator and the auditor see every
/// subscription; a data user their own.
fn sees(who: &Principal, sub: &Subscription) -> bool {
    match who {
        Principal::Node => true,
        Principal::Person { account, .. } => {
            account.has(crate::accounts::Role::Admin)
                || account.has(crate::accounts::Role::Auditor)
                || owns(who, sub)
        }
    }
}

/// Whether `who` may end `sub`: the node token, or the person who made it.
fn owns(who: &Principal, sub: &Subscription) -> bool {
    match who {
        Principal::Node => true,
        Principal::Person { account, .. } => {
            sub.created_by.as_deref() == Some(account.name.as_str())
        }
    }
}

pub(super) async fn list(
    State(ctx): State<Ctx>,
    Extension(who): Extension<Principal>,
) -> Res<Vec<SubscriptionView>> {
    let mut subs = subscribe::list(&ctx.state.store).map_err(internal)?;
    subs.retain(|s| sees(&who, s));
    Ok(Json(
        subs.into_iter()
            .map(|s| {
                let latest = subscribe::task::latest(&ctx.state, &s);
                let lag = latest
                    .unwrap_or(0)
                    .saturating_sub(s.delivery.version.unwrap_or(0));
                SubscriptionView {
                    subscription: s,
                    latest,
                    lag,
                }
            })
            .collect(),
    ))
}

pub(super) async fn remove(
    State(ctx): State<Ctx>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
) -> Res<Subscription> {
    let found = subscribe::get(&ctx.state.store, &name).map_err(internal)?;
    let Some(sub) = found.filter(|s| owns(&who, s)) else {
        return Err(fail(
            StatusCode::NOT_FOUND,
            format!("no subscription called {name}; `huitong subscriptions` lists them"),
        ));
    };
    subscribe::remove(&ctx.state.store, &name).map_err(internal)?;
    tracing::info!(subscription = %name, "unsubscribed");
    Ok(Json(sub))
}
