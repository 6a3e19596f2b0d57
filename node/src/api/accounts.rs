//! Requests and answers of the person routes: sign-in, sign-out, the signed-in person, and the
//! administrator's account management (`/api/v1/login`, `/logout`, `/me`, `/users`).

use serde::{Deserialize, Serialize};

use crate::accounts::{Account, Role};

/// `POST /api/v1/login`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Login {
    /// Account (login) name.
    pub account: String,
    /// Password.
    pub password: String,
}

/// Answer to a sign-in: the session token (a bearer token for `/api/v1`), shown once.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SignedIn {
    /// Bearer token of the session (`hts_…`).
    pub token: String,
    /// CSRF token that the portal's forms echo.
    pub csrf: String,
    /// Who signed in.
    pub me: Me,
    /// Seconds the session lasts without use.
    pub idle_timeout_s: u64,
    /// Seconds the session lasts at most.
    pub max_age_s: u64,
}

/// `GET /api/v1/me`: who the request's token stands for.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Me {
    /// Account name; `None` for the node's admin token.
    pub account: Option<String>,
    /// Display name; `None` for the node's admin token.
    pub display_name: Option<String>,
    /// Roles (every right for the node's admin token, shown as none).
    pub roles: Vec<Role>,
    /// Whether the token is the node's admin token (`api.token`), which may do everything.
    pub node_token: bool,
}

/// `POST /api/v1/me/password`: a signed-in person changes their own password.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChangePassword {
    /// The current password.
    pub old: String,
    /// The new one.
    pub new: String,
}

/// An account as the administrator sees it (never the password hash).
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UserView {
    /// Account name.
    pub account: String,
    /// Display name.
    pub display_name: String,
    /// Roles.
    pub roles: Vec<Role>,
    /// Whether it is disabled.
    pub disabled: bool,
    /// When it was created (ms since the epoch).
    pub created_ms: u64,
    /// When its password was last set (ms since the epoch).
    pub password_set_ms: u64,
    /// Live sessions.
    pub sessions: usize,
}

impl UserView {
    /// The view of `a` with `sessions` live sessions.
    pub fn of(a: &Account, sessions: usize) -> Self {
        Self {
            account: a.name.clone(),
            display_name: a.display_name.clone(),
            roles: a.roles.clone(),
            disabled: a.disabled,
            created_ms: a.created_ms,
            password_set_ms: a.password_set_ms,
            sessions,
        }
    }
}

/// `POST /api/v1/users`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NewUser {
    /// Account name.
    pub account: String,
    /// Display name.
    pub display_name: String,
    /// Roles.
    pub roles: Vec<Role>,
    /// Password; when absent the node generates one and answers it once.
    #[serde(default)]
    pub password: Option<String>,
}

/// `POST /api/v1/users/{account}/password`: the administrator sets (or has the node generate)
/// a person's password.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SetPassword {
    /// The new password; when absent the node generates one and answers it once.
    #[serde(default)]
    pub password: Option<String>,
}

/// `POST /api/v1/users/{account}/roles`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SetRoles {
    /// The account's roles from now on.
    pub roles: Vec<Role>,
}

/// Answer to creating an account or setting its password.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UserChanged {
    /// The account now.
    pub user: UserView,
    /// The password the node generated, shown this once; `None` when one was given.
    pub generated_password: Option<String>,
    /// Sessions ended by the change (the person signs in again).
    pub sessions_ended: usize,
}
