//! `huitong user`: the node's person accounts (who may sign in to its API and portal, under
//! which roles), administered with the node's admin token.

use std::io::BufRead;
use std::path::Path;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::output;
use crate::accounts::Role;
use crate::api::accounts::{NewUser, SetPassword, SetRoles, UserChanged, UserView};
use crate::client::ApiClient;

/// `huitong user …`.
#[derive(Subcommand, Debug)]
pub enum UserCmd {
    /// Create an account. Without --password-stdin the node generates a password and this
    /// prints it once.
    Add(AddArgs),
    /// List the accounts.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Replace an account's roles (its sessions end).
    Roles {
        /// Account name.
        account: String,
        /// Roles, comma-separated (see `user add --help`).
        #[arg(long = "role", value_delimiter = ',', required = true)]
        roles: Vec<Role>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Set an account's password (its sessions end). Without --password-stdin the node
    /// generates one and this prints it once.
    Passwd {
        /// Account name.
        account: String,
        /// Read the new password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Disable an account: it cannot sign in and its sessions end.
    Disable {
        /// Account name.
        account: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Enable a disabled account.
    Enable {
        /// Account name.
        account: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `huitong user add`.
#[derive(Args, Debug)]
pub struct AddArgs {
    /// Account (login) name: lower-case letters, digits, '.', '_', '-' (e.g. zhangsan).
    account: String,
    /// Name as people read it (e.g. 张三).
    #[arg(long = "name")]
    display_name: String,
    /// Roles, comma-separated: admin (系统管理员), cataloguer (目录管理员), approver (审批人),
    /// data_user (数据使用人), auditor (安全审计员); English or Chinese. The administrator may
    /// not also approve, and the auditor holds no other role (三员分立).
    #[arg(long = "role", value_delimiter = ',', required = true)]
    roles: Vec<Role>,
    /// Read the password from the first line of standard input instead of generating one.
    #[arg(long)]
    password_stdin: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Runs a `user` subcommand against the node in `dir`.
pub(super) async fn run(dir: &Path, cmd: UserCmd) -> anyhow::Result<()> {
    let api = ApiClient::new(dir)?;
    match cmd {
        UserCmd::Add(a) => {
            let password = a.password_stdin.then(read_password).transpose()?;
            let changed: UserChanged = api
                .post(
                    "/users",
                    &NewUser {
                        account: a.account,
                        display_name: a.display_name,
                        roles: a.roles,
                        password,
                    },
                )
                .await?;
            changed_out(&changed, a.json, "created")
        }
        UserCmd::List { json } => {
            let all: Vec<UserView> = api.get("/users", &()).await?;
            output::list(&all, json, "accounts", |u| {
                vec![
                    u.account.clone(),
                    u.display_name.clone(),
                    roles(&u.roles),
                    if u.disabled { "disabled" } else { "enabled" }.into(),
                    output::count(u.sessions as u64, "session", "sessions"),
                ]
            })
        }
        UserCmd::Roles {
            account,
            roles,
            json,
        } => {
            let changed: UserChanged = api
                .post(&format!("/users/{account}/roles"), &SetRoles { roles })
                .await?;
            changed_out(&changed, json, "roles changed")
        }
        UserCmd::Passwd {
            account,
            password_stdin,
            json,
        } => {
            let password = password_stdin.then(read_password).transpose()?;
            let changed: UserChanged = api
                .post(
                    &format!("/users/{account}/password"),
                    &SetPassword { password },
                )
                .await?;
            changed_out(&changed, json, "password set")
        }
        UserCmd::Disable { account, json } => {
            let changed: UserChanged = api.post(&format!("/users/{account}/disable"), &()).await?;
            changed_out(&changed, json, "disabled")
        }
        UserCmd::Enable { account, json } => {
            let changed: UserChanged = api.post(&format!("/users/{account}/enable"), &()).await?;
            changed_out(&changed, json, "enabled")
        }
    }
}

fn roles(rs: &[Role]) -> String {
    rs.iter()
        .map(|r| format!("{}({})", r.label(), r.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn changed_out(c: &UserChanged, json: bool, what: &str) -> anyhow::Result<()> {
    if json {
        return output::json(c);
    }
    let u = &c.user;
    println!(
        "account {} ({}) {what}: {}",
        u.account,
        u.display_name,
        roles(&u.roles)
    );
    if c.sessions_ended > 0 {
        println!(
            "{} ended; the person signs in again",
            output::count(c.sessions_ended as u64, "session", "sessions")
        );
    }
    if let Some(p) = &c.generated_password {
        println!("password (shown once; give it to the person): {p}");
    }
    Ok(())
}

/// The first line of standard input, without its line end.
fn read_password() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    let p = line.trim_end_matches(['\r', '\n']).to_string();
    if p.is_empty() {
        anyhow::bail!("--password-stdin: standard input held no password (one line expected)");
    }
    Ok(p)
}
