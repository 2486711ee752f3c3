//! Grafana admin teams: fetching the members of the configured teams, the start-up
//! reachability check, and the periodic sync that makes the members admins (the
//! `admin_users` rows of source `grafana`, see [`crate::storage::admin`]).
//!
//! A sync is all or nothing: when any team cannot be read, nothing is written and the
//! previous admins stay, so one flaky team never revokes everyone's rights.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono_tz::Tz;
use http::header::{ACCEPT, CONTENT_TYPE};
use http::StatusCode;
use reqwest::Url;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::config::ClientUrl;
use crate::model::time::format_dt;
use crate::storage::admin::{self, GrafanaAdminChanges};
use crate::storage::{Database, StorageError};

/// How long one team's request may take, connection and body included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the start-up check waits for the TCP connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors talking to Grafana.
#[derive(Debug, thiserror::Error)]
pub enum GrafanaError {
    #[error("invalid Grafana URL: {0}")]
    InvalidUrl(String),
    #[error("Grafana team {team}: request failed: {source}")]
    Request {
        team: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("Grafana team {team}: unexpected HTTP status {status}")]
    Status { team: String, status: StatusCode },
    #[error("Grafana team {team}: the answer is not a JSON array of team members: {source}")]
    Body {
        team: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("Grafana at {address} is not reachable: {source}")]
    Unreachable {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Grafana at {address} did not accept a connection within {timeout:?}")]
    ConnectTimeout { address: String, timeout: Duration },
}

/// Errors of one admin sync.
#[derive(Debug, thiserror::Error)]
pub enum AdminSyncError {
    #[error(transparent)]
    Grafana(#[from] GrafanaError),
    #[error("recording the Grafana admins: {0}")]
    Storage(#[from] StorageError),
}

/// One member of a team as Grafana lists it (`GET /api/teams/{id}/members`); every other
/// field is ignored.
#[derive(Debug, Deserialize)]
struct TeamMember {
    #[serde(default)]
    login: Option<String>,
}

/// The client of the configured admin teams.
#[derive(Debug, Clone)]
pub struct GrafanaTeams {
    client: reqwest::Client,
    base_url: String,
    team_ids: Vec<String>,
}

impl GrafanaTeams {
    /// `client` carries the config's authentication, TLS and proxy settings. Empty team
    /// ids are dropped with a warning: they name no team.
    pub fn new(client: reqwest::Client, url: &ClientUrl, team_ids: Vec<String>) -> Self {
        let team_ids: Vec<String> = team_ids
            .into_iter()
            .filter(|id| {
                if id.is_empty() {
                    tracing::warn!("ignoring an empty Grafana team id");
                }
                !id.is_empty()
            })
            .collect();
        Self {
            client,
            base_url: url.as_str().to_owned(),
            team_ids,
        }
    }

    /// The team ids that are queried.
    pub fn team_ids(&self) -> &[String] {
        &self.team_ids
    }

    /// `{url}/api/teams/{id}/members`, the id escaped as one path segment and appended to
    /// the URL's own path (query and fragment kept).
    pub fn members_url(&self, team_id: &str) -> Result<Url, GrafanaError> {
        let mut url = parse_url(&self.base_url)?;
        url.path_segments_mut()
            .map_err(|()| GrafanaError::InvalidUrl("the URL cannot have a path".to_owned()))?
            .pop_if_empty()
            .extend(["api", "teams", team_id, "members"]);
        Ok(url)
    }

    /// The members of every team: their non-empty `login`s, de-duplicated and sorted. Any
    /// team that cannot be read (transport error, non-2xx status, a body that is not a JSON
    /// array of objects) makes the whole fetch fail. No team ids give an empty list.
    pub async fn fetch_members(&self) -> Result<Vec<String>, GrafanaError> {
        let mut logins = BTreeSet::new();
        for team_id in &self.team_ids {
            for member in self.fetch_team(team_id).await? {
                if let Some(login) = member.login.filter(|login| !login.is_empty()) {
                    logins.insert(login);
                }
            }
        }
        Ok(logins.into_iter().collect())
    }

    async fn fetch_team(&self, team_id: &str) -> Result<Vec<TeamMember>, GrafanaError> {
        let request_error = |source: reqwest::Error| GrafanaError::Request {
            team: team_id.to_owned(),
            // The URL may carry credentials; the team id says which request it was.
            source: source.without_url(),
        };
        let response = self
            .client
            .get(self.members_url(team_id)?)
            .header(ACCEPT, "application/json")
            .header(CONTENT_TYPE, "application/json")
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(request_error)?;
        let status = response.status();
        if !status.is_success() {
            return Err(GrafanaError::Status {
                team: team_id.to_owned(),
                status,
            });
        }
        let body = response.bytes().await.map_err(request_error)?;
        serde_json::from_slice(&body).map_err(|source| GrafanaError::Body {
            team: team_id.to_owned(),
            source,
        })
    }
}

fn parse_url(text: &str) -> Result<Url, GrafanaError> {
    Url::parse(text).map_err(|error| GrafanaError::InvalidUrl(error.to_string()))
}

/// The `host:port` the start-up check dials: the URL's port, else the scheme's default
/// (80 for http, 443 for https). IPv6 literals keep their brackets.
pub fn dial_address(url: &ClientUrl) -> Result<(String, u16), GrafanaError> {
    let parsed = parse_url(url.as_str())?;
    let host = parsed
        .host_str()
        .filter(|host| !host.is_empty())
        .ok_or_else(|| GrafanaError::InvalidUrl("no host".to_owned()))?;
    let port = parsed.port_or_known_default().ok_or_else(|| {
        GrafanaError::InvalidUrl(format!(
            "no port and no default port for the scheme {:?}",
            parsed.scheme()
        ))
    })?;
    Ok((host.to_owned(), port))
}

/// The start-up check: a TCP connection to the URL's host must open within
/// [`CONNECT_TIMEOUT`]. A URL without a port uses its scheme's default.
pub async fn check_reachable(url: &ClientUrl) -> Result<(), GrafanaError> {
    let (host, port) = dial_address(url)?;
    let address = format!("{host}:{port}");
    let unbracketed = host.trim_start_matches('[').trim_end_matches(']');
    match tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect((unbracketed, port)),
    )
    .await
    {
        Ok(Ok(_stream)) => Ok(()),
        Ok(Err(source)) => Err(GrafanaError::Unreachable { address, source }),
        Err(_) => Err(GrafanaError::ConnectTimeout {
            address,
            timeout: CONNECT_TIMEOUT,
        }),
    }
}

/// What one successful sync did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSyncOutcome {
    /// The members of the admin teams, now the `grafana` admins.
    pub members: Vec<String>,
    pub changes: GrafanaAdminChanges,
}

/// One sync: fetch the members of every team, then make the `grafana` admin rows equal to
/// them (`last_updated_at` = now in `zone`). `config_admins` are the `ceems` admins of the
/// running config: a name that leaves the teams but is one of them stays admin. On any
/// error nothing is written.
pub async fn sync_admins_once(
    teams: &GrafanaTeams,
    db: &Database,
    config_admins: &[String],
    zone: Tz,
) -> Result<AdminSyncOutcome, AdminSyncError> {
    let members = teams.fetch_members().await?;
    let now = format_dt(chrono::Utc::now().timestamp(), zone);
    let (written, config_admins) = (members.clone(), config_admins.to_vec());
    let changes = db
        .write(move |conn| admin::sync_grafana_admins(conn, &written, &config_admins, &now))
        .await?;
    Ok(AdminSyncOutcome { members, changes })
}

/// Syncs immediately, then every `interval` (a zero interval is taken as one second),
/// until `shutdown` is cancelled. Errors are logged and the previous admins kept; a tick
/// missed while a sync runs is skipped.
pub async fn run_admin_sync(
    teams: GrafanaTeams,
    db: Database,
    config_admins: Vec<String>,
    interval: Duration,
    zone: Tz,
    shutdown: CancellationToken,
) {
    let interval = if interval.is_zero() {
        Duration::from_secs(1)
    } else {
        interval
    };
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            _ = ticker.tick() => {}
        }
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            result = sync_admins_once(&teams, &db, &config_admins, zone) => log_outcome(&result),
        }
    }
    tracing::debug!("Grafana admin sync stopped");
}

fn log_outcome(result: &Result<AdminSyncOutcome, AdminSyncError>) {
    match result {
        Ok(outcome) => {
            let GrafanaAdminChanges {
                revoked,
                handed_to_config,
            } = outcome.changes;
            if revoked > 0 || handed_to_config > 0 {
                tracing::info!(
                    admins = outcome.members.len(),
                    revoked,
                    kept_by_config = handed_to_config,
                    "Grafana admin teams synced; users who left the teams lost the rights they held through Grafana"
                );
            } else {
                tracing::debug!(admins = outcome.members.len(), "Grafana admin teams synced");
            }
        }
        Err(error) => tracing::error!(
            %error,
            "Grafana admin sync failed; the previous admins are kept"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn teams(url: &str, ids: &[&str]) -> GrafanaTeams {
        let _ = rustls::crypto::ring::default_provider().install_default();
        GrafanaTeams::new(
            reqwest::Client::new(),
            &ClientUrl::parse(url).unwrap(),
            ids.iter().map(|id| (*id).to_owned()).collect(),
        )
    }

    #[test]
    fn members_url_is_appended_to_the_path_with_the_id_escaped() {
        let cases = [
            ("http://g:3000", "1", "http://g:3000/api/teams/1/members"),
            ("http://g:3000/", "1", "http://g:3000/api/teams/1/members"),
            (
                "https://g/grafana",
                "12",
                "https://g/grafana/api/teams/12/members",
            ),
            (
                "https://g/grafana/?org=2",
                "a/b c?",
                "https://g/grafana/api/teams/a%2Fb%20c%3F/members?org=2",
            ),
        ];
        for (base, id, expected) in cases {
            assert_eq!(
                teams(base, &[]).members_url(id).unwrap().as_str(),
                expected,
                "{base} {id}"
            );
        }
    }

    #[test]
    fn empty_team_ids_are_dropped() {
        assert_eq!(teams("http://g", &["1", "", "2"]).team_ids(), ["1", "2"]);
    }

    #[test]
    fn dial_address_uses_the_scheme_default_port() {
        let cases = [
            ("http://grafana.example", ("grafana.example", 80)),
            ("https://grafana.example/sub", ("grafana.example", 443)),
            ("https://grafana.example:3000", ("grafana.example", 3000)),
            ("http://[::1]:8080/", ("[::1]", 8080)),
            ("http://user:pw@10.0.0.1", ("10.0.0.1", 80)),
        ];
        for (url, (host, port)) in cases {
            assert_eq!(
                dial_address(&ClientUrl::parse(url).unwrap()).unwrap(),
                (host.to_owned(), port),
                "{url}"
            );
        }
        let error = dial_address(&ClientUrl::parse("gopher://g").unwrap()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid Grafana URL: no port and no default port for the scheme \"gopher\""
        );
    }
}
