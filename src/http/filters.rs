//! Query-string parsing: raw `?a=1&a=2` into [`QueryParams`], then into the typed queries
//! of `model::query`, with the reference's rules and error messages.

use std::time::Duration;

use chrono_tz::Tz;

use super::envelope::ApiError;
use crate::model::time::TimeWindow;
use crate::model::{
    CurrentUsageQuery, Filters, GlobalUsageQuery, GroupBy, ProjectQuery, Scope, StatsQuery,
    UnitFieldSet, UnitQuery, UsageFieldSet, UserQuery, VerifyQuery,
};

/// Parsed query parameters, in their original order, repeated keys kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryParams(Vec<(String, String)>);

impl QueryParams {
    /// Parses a raw query string as Go's `url.ParseQuery` does: `+` is a space, and a pair
    /// containing `;` or a malformed `%` escape is dropped.
    pub fn parse(raw: &str) -> Self {
        let mut pairs = Vec::new();
        for pair in raw.split('&') {
            if pair.is_empty() || pair.contains(';') || has_malformed_escape(pair) {
                continue;
            }
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            pairs.push((decode_component(key), decode_component(value)));
        }
        Self(pairs)
    }

    /// Every value of `key`, in order.
    pub fn values(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(name, _)| name == key)
            .map(|(_, value)| value.clone())
            .collect()
    }

    /// The first value of `key`.
    pub fn first(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    }

    /// Presence flags count whatever their value (`running=false` enables running).
    pub fn has(&self, key: &str) -> bool {
        self.0.iter().any(|(name, _)| name == key)
    }

    /// The parameters re-encoded with keys sorted and values in their original order: the
    /// canonical form used in cache keys.
    pub fn canonical(&self) -> String {
        let mut sorted: Vec<&(String, String)> = self.0.iter().collect();
        sorted.sort_by(|left, right| left.0.cmp(&right.0));
        let mut serializer = form_urlencoded::Serializer::new(String::new());
        for (key, value) in sorted {
            serializer.append_pair(key, value);
        }
        serializer.finish()
    }

    /// Replaces every value of `key` by one value.
    pub fn set(&mut self, key: &str, value: String) {
        self.0.retain(|(name, _)| name != key);
        self.0.push((key.to_owned(), value));
    }

    /// Adds a value of `key`.
    pub fn add(&mut self, key: &str, value: String) {
        self.0.push((key.to_owned(), value));
    }

    fn filters(&self, admin: bool) -> Filters {
        Filters {
            cluster_ids: self.values("cluster_id"),
            projects: self.values("project"),
            users: if admin {
                self.values("user")
            } else {
                Vec::new()
            },
        }
    }
}

fn has_malformed_escape(text: &str) -> bool {
    let bytes = text.as_bytes();
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let valid = bytes.len() > index + 2
                && bytes[index + 1].is_ascii_hexdigit()
                && bytes[index + 2].is_ascii_hexdigit();
            if !valid {
                return true;
            }
            index += 3;
        } else {
            index += 1;
        }
    }
    false
}

fn decode_component(text: &str) -> String {
    form_urlencoded::parse(format!("{text}=").as_bytes())
        .next()
        .map(|(key, _)| key.into_owned())
        .unwrap_or_default()
}

/// Parses `from`/`to`: Unix seconds as a base-10 int64; an empty value is absent.
fn timestamp(params: &QueryParams, key: &'static str) -> Result<Option<i64>, ApiError> {
    match params.first(key) {
        None | Some("") => Ok(None),
        Some(text) => text.parse::<i64>().map(Some).map_err(|_| {
            ApiError::bad_data(format!("query parameter '{key}': malformed timestamp"))
        }),
    }
}

/// What the window rules need from the server's settings.
#[derive(Debug, Clone, Copy)]
pub struct WindowRules {
    pub time_zone: Tz,
    pub max_period: Duration,
    /// Current time, Unix seconds.
    pub now: i64,
}

fn check_period(window: TimeWindow, rules: &WindowRules) -> Result<TimeWindow, ApiError> {
    if window.exceeds(rules.max_period) {
        Err(ApiError::bad_data("maximum query window exceeded"))
    } else {
        Ok(window)
    }
}

/// The default-24h window of units and stats, checked against the maximum period.
fn unit_window(params: &QueryParams, rules: &WindowRules) -> Result<TimeWindow, ApiError> {
    let from = timestamp(params, "from")?;
    let to = timestamp(params, "to")?;
    check_period(TimeWindow::resolve(from, to, rules.now), rules)
}

fn scope(user: &str, admin: bool) -> Scope {
    if admin {
        Scope::Admin
    } else {
        Scope::User(user.to_owned())
    }
}

/// `units[/admin]`: fields, then (without uuid) from/to, then the maximum period.
pub fn unit_query(
    params: &QueryParams,
    user: &str,
    admin: bool,
    rules: &WindowRules,
) -> Result<UnitQuery, ApiError> {
    let fields = UnitFieldSet::from_params(&params.values("field"))
        .map_err(|error| ApiError::bad_data(error.to_string()))?;
    let uuids = params.values("uuid");
    let window = if uuids.is_empty() {
        Some(unit_window(params, rules)?.dt_bounds(rules.time_zone))
    } else {
        None
    };
    Ok(UnitQuery {
        scope: scope(user, admin),
        filters: params.filters(admin),
        uuids,
        window,
        running: params.has("running"),
        fields,
    })
}

/// `units/verify`: at least one uuid.
pub fn verify_query(params: &QueryParams, user: &str) -> Result<VerifyQuery, ApiError> {
    let uuids = params.values("uuid");
    if uuids.is_empty() {
        return Err(ApiError::bad_data("uuids missing in the request"));
    }
    Ok(VerifyQuery {
        user: user.to_owned(),
        cluster_ids: params.values("cluster_id"),
        uuids,
    })
}

/// `usage/current[/admin]`: fields, groupby, from/to rounded to 900 s, maximum period.
/// Returns the query and the rounded window (which goes into the cache key).
pub fn current_usage_query(
    params: &QueryParams,
    user: &str,
    admin: bool,
    rules: &WindowRules,
) -> Result<(CurrentUsageQuery, TimeWindow), ApiError> {
    let fields = UsageFieldSet::from_params(&params.values("field"))
        .map_err(|error| ApiError::bad_data(error.to_string()))?;
    let mut group_by = Vec::new();
    for value in params.values("groupby") {
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        let group = GroupBy::parse(value).ok_or_else(|| {
            ApiError::bad_data(format!(
                "query parameter 'groupby': unknown column {value:?} (allowed: cluster_id, resource_manager, groupname)"
            ))
        })?;
        group_by.push(group);
    }
    let experimental = params.has("experimental");
    let terminated_only = params.has("__terminated");
    if experimental && terminated_only {
        return Err(ApiError::bad_data(
            "query parameters 'experimental' and '__terminated' cannot be combined",
        ));
    }
    let from = timestamp(params, "from")?;
    let to = timestamp(params, "to")?;
    let window = check_period(
        TimeWindow::resolve_current_usage(from, to, rules.now),
        rules,
    )?;
    Ok((
        CurrentUsageQuery {
            scope: scope(user, admin),
            filters: params.filters(admin),
            window: window.dt_bounds(rules.time_zone),
            fields,
            experimental,
            terminated_only,
            group_by,
        },
        window,
    ))
}

/// `usage/global[/admin]`: fields only; no time filter.
pub fn global_usage_query(
    params: &QueryParams,
    user: &str,
    admin: bool,
) -> Result<GlobalUsageQuery, ApiError> {
    let fields = UsageFieldSet::from_params(&params.values("field"))
        .map_err(|error| ApiError::bad_data(error.to_string()))?;
    Ok(GlobalUsageQuery {
        scope: scope(user, admin),
        filters: params.filters(admin),
        fields,
    })
}

pub fn project_query(params: &QueryParams, user: &str, admin: bool) -> ProjectQuery {
    ProjectQuery {
        scope: scope(user, admin),
        filters: params.filters(admin),
    }
}

pub fn user_query(params: &QueryParams, user: &str, admin: bool) -> UserQuery {
    UserQuery {
        scope: scope(user, admin),
        filters: params.filters(admin),
    }
}

/// `role=admin` on the admin users route lists the admin users instead.
pub fn wants_admin_list(params: &QueryParams) -> bool {
    params.values("role").iter().any(|role| role == "admin")
}

/// `stats/{current,global}/admin`.
pub fn stats_query(
    params: &QueryParams,
    current: bool,
    rules: &WindowRules,
) -> Result<StatsQuery, ApiError> {
    let window = if current {
        Some(unit_window(params, rules)?.dt_bounds(rules.time_zone))
    } else {
        None
    };
    Ok(StatsQuery {
        cluster_ids: params.values("cluster_id"),
        window,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{UnitField, UsageField};

    fn rules() -> WindowRules {
        WindowRules {
            time_zone: Tz::UTC,
            max_period: Duration::ZERO,
            now: 1_700_000_000,
        }
    }

    #[test]
    fn query_strings_parse_as_go_does() {
        let params = QueryParams::parse("a=1&a=2&b=x+y&c=%41&bad=%zz&semi=1;2&flag&d=");
        assert_eq!(params.values("a"), vec!["1", "2"]);
        assert_eq!(params.first("b"), Some("x y"));
        assert_eq!(params.first("c"), Some("A"));
        assert!(!params.has("bad"));
        assert!(!params.has("semi"));
        assert!(params.has("flag"));
        assert_eq!(params.first("d"), Some(""));
        assert_eq!(QueryParams::parse("z=1&a=2&z=0").canonical(), "a=2&z=1&z=0");
    }

    #[test]
    fn unit_query_checks_in_the_reference_order() {
        let bad_fields = unit_query(
            &QueryParams::parse("field=nope&from=x"),
            "u",
            false,
            &rules(),
        );
        assert_eq!(bad_fields.unwrap_err().message, "invalid query fields");
        let bad_from = unit_query(&QueryParams::parse("from=1.5"), "u", false, &rules());
        assert_eq!(
            bad_from.unwrap_err().message,
            "query parameter 'from': malformed timestamp"
        );
        let bad_to = unit_query(&QueryParams::parse("to=2024-01-01"), "u", false, &rules());
        assert_eq!(
            bad_to.unwrap_err().message,
            "query parameter 'to': malformed timestamp"
        );
        let limited = WindowRules {
            max_period: Duration::from_secs(3600),
            ..rules()
        };
        let too_long = unit_query(&QueryParams::parse("from=0&to=3601"), "u", false, &limited);
        assert_eq!(
            too_long.unwrap_err().message,
            "maximum query window exceeded"
        );
        // With uuid, from/to are not parsed at all.
        let by_uuid =
            unit_query(&QueryParams::parse("uuid=1&from=bad"), "u", false, &limited).unwrap();
        assert!(by_uuid.window.is_none());
    }

    #[test]
    fn unit_query_builds_the_window_and_scope() {
        let query = unit_query(
            &QueryParams::parse("from=0&to=86400&running=false&user=x&field=uuid"),
            "alice",
            false,
            &rules(),
        )
        .unwrap();
        assert!(query.running);
        assert_eq!(query.scope, Scope::User("alice".into()));
        assert!(
            query.filters.users.is_empty(),
            "user is ignored on user routes"
        );
        let window = query.window.unwrap();
        assert_eq!(window.from, "1970-01-01T00:00:00");
        assert_eq!(window.to, "1970-01-02T00:00:00");
        assert_eq!(
            query.fields.iter().collect::<Vec<_>>(),
            vec![UnitField::Uuid]
        );
        let admin = unit_query(&QueryParams::parse("user=x"), "alice", true, &rules()).unwrap();
        assert_eq!(admin.filters.users, vec!["x"]);
    }

    #[test]
    fn current_usage_rounds_and_validates() {
        let (query, window) = current_usage_query(
            &QueryParams::parse("from=1000&to=2000&field=avg_cpu_usage&groupby=cluster_id"),
            "u",
            false,
            &rules(),
        )
        .unwrap();
        assert_eq!(
            window,
            TimeWindow {
                from: 900,
                to: 2700
            }
        );
        assert_eq!(query.group_by, vec![GroupBy::ClusterId]);
        assert_eq!(
            query.fields.iter().collect::<Vec<_>>(),
            vec![UsageField::Metric(crate::model::Metric::AvgCpuUsage)]
        );
        let injected = current_usage_query(
            &QueryParams::parse("groupby=username;DROP"),
            "u",
            false,
            &rules(),
        );
        assert!(injected.is_ok(), "a pair with ';' is dropped, as Go does");
        let unknown =
            current_usage_query(&QueryParams::parse("groupby=uuid"), "u", false, &rules());
        assert!(unknown.unwrap_err().message.contains("'groupby'"));
        let both = current_usage_query(
            &QueryParams::parse("experimental&__terminated"),
            "u",
            false,
            &rules(),
        );
        assert!(both.unwrap_err().message.contains("'experimental'"));
    }

    #[test]
    fn verify_needs_a_uuid() {
        assert_eq!(
            verify_query(&QueryParams::parse("cluster_id=a"), "u")
                .unwrap_err()
                .message,
            "uuids missing in the request"
        );
    }
}
