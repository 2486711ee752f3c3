//! The admin list in `admin_users`: upserting the names of a source (`ceems` from the
//! config, `grafana` from the admin teams), syncing the config's names and the Grafana
//! teams' members (both also revoke) and reading every admin name for the identity check.
//!
//! A name has one row (key `(cluster_id, name)`) tagged with one source: the last writer
//! (`["ceems"]` or `["grafana"]`). Each sync revokes only rows tagged with its own source,
//! and the Grafana sync hands a row it no longer lists back to the config when the config
//! names it, so a user in both lists stays admin when removed from either one.

use rusqlite::{params, Connection, Transaction, TransactionBehavior};

use super::StorageError;
use crate::model::List;

/// The `tags` of a row that comes from the config file.
pub const CONFIG_ADMIN_TAGS: &str = r#"["ceems"]"#;

/// The source name of the config file's admins.
pub const CONFIG_ADMIN_SOURCE: &str = "ceems";

/// The `tags` of a row that comes from the Grafana admin teams.
pub const GRAFANA_ADMIN_TAGS: &str = r#"["grafana"]"#;

/// The source name of the Grafana admin teams' members.
pub const GRAFANA_ADMIN_SOURCE: &str = "grafana";

/// What a Grafana sync changed besides the upserts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GrafanaAdminChanges {
    /// Rows deleted: names no longer in any admin team nor in the config.
    pub revoked: usize,
    /// Rows re-tagged `["ceems"]`: names no longer in any admin team but in the config.
    pub handed_to_config: usize,
}

/// Upserts one `admin_users` row per name of `source` (e.g. `grafana` for the members of
/// the admin teams) inside the caller's transaction: cluster `all`, empty uid and resource
/// manager, projects `[]`, tags `[source]`, `last_updated_at` = `updated_at_dt`. A name
/// already present under another source is taken over (the last writer wins, as in the
/// reference). Nothing is deleted.
pub fn upsert_source_admins<S: AsRef<str>>(
    transaction: &Transaction<'_>,
    source: &str,
    names: &[S],
    updated_at_dt: &str,
) -> Result<(), StorageError> {
    let tags = List::from_strings(&[source]);
    let mut upsert = transaction.prepare_cached(
        "INSERT INTO admin_users (uid, cluster_id, resource_manager, name, projects, tags, last_updated_at)
         VALUES ('', 'all', '', ?1, '[]', ?2, ?3)
         ON CONFLICT (cluster_id, name) DO UPDATE SET
           uid = excluded.uid,
           resource_manager = excluded.resource_manager,
           projects = excluded.projects,
           tags = excluded.tags,
           last_updated_at = excluded.last_updated_at",
    )?;
    for name in names
        .iter()
        .map(AsRef::as_ref)
        .filter(|name| !name.is_empty())
    {
        upsert.execute(params![name, tags.as_json(), updated_at_dt])?;
    }
    Ok(())
}

/// Makes the `ceems` rows of `admin_users` equal to `names`, in one transaction: upserts
/// one row per name (cluster `all`, empty uid and resource manager, projects `[]`, tags
/// `["ceems"]`, `last_updated_at` = `updated_at_dt`) and deletes the `["ceems"]` rows whose
/// name is no longer listed, so that removing an admin from the config revokes the right.
/// Empty names are skipped: an admin row named "" could match an unset identity.
pub fn sync_config_admins(
    conn: &mut Connection,
    names: &[String],
    updated_at_dt: &str,
) -> Result<(), StorageError> {
    let names: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|name| !name.is_empty())
        .collect();
    let transaction = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    upsert_source_admins(&transaction, CONFIG_ADMIN_SOURCE, &names, updated_at_dt)?;
    // The kept names travel as one JSON array so the statement has a fixed shape.
    let kept_names = serde_json::to_string(&names)
        .map_err(|error| StorageError::Other(format!("encoding admin names: {error}")))?;
    let removed = transaction.execute(
        "DELETE FROM admin_users
         WHERE cluster_id = 'all' AND tags = ?1
           AND (name IS NULL OR name NOT IN (SELECT value FROM json_each(?2)))",
        params![CONFIG_ADMIN_TAGS, kept_names],
    )?;
    if removed > 0 {
        tracing::info!(
            removed,
            "revoked admin rights of users no longer in the config"
        );
    }
    transaction.commit()?;
    Ok(())
}

/// Makes the `grafana` rows of `admin_users` equal to `grafana_names` (the members of the
/// admin teams), in one transaction:
/// - upserts one row per name (cluster `all`, empty uid and resource manager, projects
///   `[]`, tags `["grafana"]`, `last_updated_at` = `updated_at_dt`), taking over a
///   `["ceems"]` row of the same name as the reference does;
/// - a `["grafana"]` row whose name is no longer listed but is in `config_names` (the
///   `ceems` admins of the running config) is re-tagged `["ceems"]` with
///   `last_updated_at` = `updated_at_dt`, so the user stays admin and a later removal from
///   the config revokes it;
/// - every other `["grafana"]` row whose name is no longer listed is deleted.
///
/// Rows of other clusters or tags are untouched. Empty names are skipped.
pub fn sync_grafana_admins(
    conn: &mut Connection,
    grafana_names: &[String],
    config_names: &[String],
    updated_at_dt: &str,
) -> Result<GrafanaAdminChanges, StorageError> {
    let grafana_names = non_empty(grafana_names);
    let config_names = non_empty(config_names);
    let transaction = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    upsert_source_admins(
        &transaction,
        GRAFANA_ADMIN_SOURCE,
        &grafana_names,
        updated_at_dt,
    )?;
    let kept_names = names_as_json(&grafana_names)?;
    let config_names = names_as_json(&config_names)?;
    let handed_to_config = transaction.execute(
        "UPDATE admin_users SET tags = ?1, last_updated_at = ?2
         WHERE cluster_id = 'all' AND tags = ?3
           AND name NOT IN (SELECT value FROM json_each(?4))
           AND name IN (SELECT value FROM json_each(?5))",
        params![
            CONFIG_ADMIN_TAGS,
            updated_at_dt,
            GRAFANA_ADMIN_TAGS,
            kept_names,
            config_names
        ],
    )?;
    let revoked = transaction.execute(
        "DELETE FROM admin_users
         WHERE cluster_id = 'all' AND tags = ?1
           AND (name IS NULL OR name NOT IN (SELECT value FROM json_each(?2)))",
        params![GRAFANA_ADMIN_TAGS, kept_names],
    )?;
    transaction.commit()?;
    Ok(GrafanaAdminChanges {
        revoked,
        handed_to_config,
    })
}

fn non_empty(names: &[String]) -> Vec<&str> {
    names
        .iter()
        .map(String::as_str)
        .filter(|name| !name.is_empty())
        .collect()
}

/// The names as one JSON array, so a statement keeps a fixed shape whatever their number.
fn names_as_json(names: &[&str]) -> Result<String, StorageError> {
    serde_json::to_string(names)
        .map_err(|error| StorageError::Other(format!("encoding admin names: {error}")))
}

/// Every admin name, whatever its source, in first-insertion order, without duplicates.
pub fn admin_user_names(conn: &Connection) -> Result<Vec<String>, StorageError> {
    let mut statement = conn.prepare_cached(
        "SELECT name FROM admin_users WHERE name IS NOT NULL GROUP BY name ORDER BY min(id)",
    )?;
    let names = statement
        .query_map([], |row| row.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::migrations::migrate;

    fn migrated() -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        conn
    }

    fn rows(conn: &Connection) -> Vec<(String, String, String, String, String, String, String)> {
        conn.prepare(
            "SELECT uid, cluster_id, resource_manager, name, projects, tags, last_updated_at
             FROM admin_users ORDER BY name",
        )
        .unwrap()
        .query_map([], |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
                row.get(5)?,
                row.get(6)?,
            ))
        })
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
    }

    fn row(
        name: &str,
        tags: &str,
        at: &str,
    ) -> (String, String, String, String, String, String, String) {
        (
            String::new(),
            "all".into(),
            String::new(),
            name.into(),
            "[]".into(),
            tags.into(),
            at.into(),
        )
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|name| (*name).to_owned()).collect()
    }

    #[test]
    fn sync_inserts_updates_and_revokes_config_admins_only() {
        let mut conn = migrated();
        conn.execute(
            "INSERT INTO admin_users (name, tags, last_updated_at) VALUES ('graf1', '[\"grafana\"]', 'g')",
            [],
        )
        .unwrap();
        sync_config_admins(&mut conn, &names(&["adm1", "adm2", "", "adm1"]), "t1").unwrap();
        assert_eq!(
            rows(&conn),
            vec![
                row("adm1", r#"["ceems"]"#, "t1"),
                row("adm2", r#"["ceems"]"#, "t1"),
                row("graf1", r#"["grafana"]"#, "g"),
            ]
        );

        // adm2 leaves the config: its row goes; graf1 is not the config's to remove.
        sync_config_admins(&mut conn, &names(&["adm1", "adm3"]), "t2").unwrap();
        assert_eq!(
            rows(&conn),
            vec![
                row("adm1", r#"["ceems"]"#, "t2"),
                row("adm3", r#"["ceems"]"#, "t2"),
                row("graf1", r#"["grafana"]"#, "g"),
            ]
        );

        // An empty config list removes every config admin.
        sync_config_admins(&mut conn, &[], "t3").unwrap();
        assert_eq!(rows(&conn), vec![row("graf1", r#"["grafana"]"#, "g")]);
    }

    #[test]
    fn sync_keeps_a_name_whose_row_another_source_took_over() {
        let mut conn = migrated();
        sync_config_admins(&mut conn, &names(&["both"]), "t1").unwrap();
        // The Grafana sync rewrites the row with its own tag.
        conn.execute(
            "UPDATE admin_users SET tags = '[\"grafana\"]', last_updated_at = 'g' WHERE name = 'both'",
            [],
        )
        .unwrap();
        sync_config_admins(&mut conn, &[], "t2").unwrap();
        assert_eq!(rows(&conn), vec![row("both", r#"["grafana"]"#, "g")]);
    }

    #[test]
    fn names_with_quotes_and_unicode_survive_the_json_round_trip() {
        let mut conn = migrated();
        let tricky = names(&["o'neil", "a\"b", "zoë", "<x>&"]);
        sync_config_admins(&mut conn, &tricky, "t1").unwrap();
        sync_config_admins(&mut conn, &tricky, "t2").unwrap();
        let mut stored = admin_user_names(&conn).unwrap();
        stored.sort();
        let mut expected = tricky.clone();
        expected.sort();
        assert_eq!(stored, expected);
    }

    #[test]
    fn grafana_admins_take_over_a_config_row_and_are_never_deleted_here() {
        let mut conn = migrated();
        sync_config_admins(&mut conn, &names(&["both", "adm1"]), "t1").unwrap();
        let transaction = conn.transaction().unwrap();
        upsert_source_admins(&transaction, "grafana", &["both", "graf1", ""], "t2").unwrap();
        transaction.commit().unwrap();
        assert_eq!(
            rows(&conn),
            vec![
                row("adm1", r#"["ceems"]"#, "t1"),
                row("both", r#"["grafana"]"#, "t2"),
                row("graf1", r#"["grafana"]"#, "t2"),
            ]
        );
        sync_config_admins(&mut conn, &[], "t3").unwrap();
        assert_eq!(
            rows(&conn),
            vec![
                row("both", r#"["grafana"]"#, "t2"),
                row("graf1", r#"["grafana"]"#, "t2"),
            ]
        );
    }

    #[test]
    fn admin_user_names_lists_every_non_null_name_once() {
        let mut conn = migrated();
        conn.execute_batch(
            "INSERT INTO admin_users (name, tags) VALUES ('graf1', '[\"grafana\"]');
             INSERT INTO admin_users (name, tags) VALUES (NULL, '[\"grafana\"]');
             INSERT INTO admin_users (cluster_id, name, tags) VALUES ('c0', 'graf1', '[\"grafana\"]');",
        )
        .unwrap();
        sync_config_admins(&mut conn, &names(&["adm1"]), "t").unwrap();
        assert_eq!(admin_user_names(&conn).unwrap(), names(&["graf1", "adm1"]));
    }

    /// A real database file in a temporary directory, as the server opens it.
    fn database_file() -> (tempfile::TempDir, crate::storage::Database) {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::storage::Database::open(dir.path()).unwrap();
        (dir, db)
    }

    async fn stored_rows(
        db: &crate::storage::Database,
    ) -> Vec<(String, String, String, String, String, String, String)> {
        db.read(|conn| Ok(rows(conn))).await.unwrap()
    }

    async fn sync_grafana(
        db: &crate::storage::Database,
        grafana: &[&str],
        config: &[&str],
        at: &str,
    ) -> GrafanaAdminChanges {
        let (grafana, config, at) = (names(grafana), names(config), at.to_owned());
        db.write(move |conn| sync_grafana_admins(conn, &grafana, &config, &at))
            .await
            .unwrap()
    }

    async fn sync_config(db: &crate::storage::Database, config: &[&str], at: &str) {
        let (config, at) = (names(config), at.to_owned());
        db.write(move |conn| sync_config_admins(conn, &config, &at))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn grafana_sync_upserts_and_revokes_only_its_own_rows() {
        let (_dir, db) = database_file();
        sync_config(&db, &["adm1"], "t0").await;
        db.write(|conn| {
            conn.execute(
                "INSERT INTO admin_users (cluster_id, name, tags, last_updated_at)
                 VALUES ('c0', 'other', '[\"grafana\"]', 'x')",
                [],
            )?;
            Ok(())
        })
        .await
        .unwrap();

        let changes = sync_grafana(&db, &["g1", "g2", "", "g1"], &["adm1"], "t1").await;
        assert_eq!(changes, GrafanaAdminChanges::default());
        let other = (
            String::new(),
            "c0".to_owned(),
            String::new(),
            "other".to_owned(),
            "[]".to_owned(),
            r#"["grafana"]"#.to_owned(),
            "x".to_owned(),
        );
        assert_eq!(
            stored_rows(&db).await,
            vec![
                row("adm1", r#"["ceems"]"#, "t0"),
                row("g1", r#"["grafana"]"#, "t1"),
                row("g2", r#"["grafana"]"#, "t1"),
                other.clone(),
            ]
        );

        // g1 leaves the teams, g3 joins: g1's row goes, the config's and other clusters'
        // rows stay.
        let changes = sync_grafana(&db, &["g2", "g3"], &["adm1"], "t2").await;
        assert_eq!(
            changes,
            GrafanaAdminChanges {
                revoked: 1,
                handed_to_config: 0
            }
        );
        assert_eq!(
            stored_rows(&db).await,
            vec![
                row("adm1", r#"["ceems"]"#, "t0"),
                row("g2", r#"["grafana"]"#, "t2"),
                row("g3", r#"["grafana"]"#, "t2"),
                other.clone(),
            ]
        );

        // Empty teams revoke every Grafana admin of cluster `all`.
        let changes = sync_grafana(&db, &[], &["adm1"], "t3").await;
        assert_eq!(changes.revoked, 2);
        assert_eq!(
            stored_rows(&db).await,
            vec![row("adm1", r#"["ceems"]"#, "t0"), other]
        );
    }

    #[tokio::test]
    async fn a_config_admin_removed_from_grafana_stays_admin_through_the_config() {
        let (_dir, db) = database_file();
        sync_config(&db, &["both", "adm1"], "t0").await;
        sync_grafana(&db, &["both", "g1"], &["both", "adm1"], "t1").await;
        // One row per name; the Grafana sync took it over, as in the reference.
        assert_eq!(
            stored_rows(&db).await,
            vec![
                row("adm1", r#"["ceems"]"#, "t0"),
                row("both", r#"["grafana"]"#, "t1"),
                row("g1", r#"["grafana"]"#, "t1"),
            ]
        );

        let changes = sync_grafana(&db, &["g1"], &["both", "adm1"], "t2").await;
        assert_eq!(
            changes,
            GrafanaAdminChanges {
                revoked: 0,
                handed_to_config: 1
            }
        );
        assert_eq!(
            stored_rows(&db).await,
            vec![
                row("adm1", r#"["ceems"]"#, "t0"),
                row("both", r#"["ceems"]"#, "t2"),
                row("g1", r#"["grafana"]"#, "t2"),
            ]
        );

        // Now only the config holds it: removing it there revokes it.
        sync_config(&db, &["adm1"], "t3").await;
        assert_eq!(
            db.read(admin_user_names).await.unwrap(),
            names(&["adm1", "g1"])
        );
    }

    #[tokio::test]
    async fn a_grafana_admin_removed_from_the_config_stays_admin_through_grafana() {
        let (_dir, db) = database_file();
        sync_config(&db, &["both"], "t0").await;
        sync_grafana(&db, &["both"], &["both"], "t1").await;
        // A restart with `both` gone from the config leaves the Grafana row alone.
        sync_config(&db, &[], "t2").await;
        assert_eq!(
            stored_rows(&db).await,
            vec![row("both", r#"["grafana"]"#, "t1")]
        );
        sync_grafana(&db, &["both"], &[], "t3").await;
        assert_eq!(
            stored_rows(&db).await,
            vec![row("both", r#"["grafana"]"#, "t3")]
        );
        // Gone from both lists: revoked.
        let changes = sync_grafana(&db, &[], &[], "t4").await;
        assert_eq!(changes.revoked, 1);
        assert_eq!(
            db.read(admin_user_names).await.unwrap(),
            Vec::<String>::new()
        );
    }

    #[tokio::test]
    async fn a_config_row_of_a_name_not_in_grafana_is_never_touched_by_the_grafana_sync() {
        let (_dir, db) = database_file();
        sync_config(&db, &["adm1"], "t0").await;
        // Even when the caller's config list is stale (empty), a `["ceems"]` row is not
        // Grafana's to delete.
        let changes = sync_grafana(&db, &[], &[], "t1").await;
        assert_eq!(changes, GrafanaAdminChanges::default());
        assert_eq!(
            stored_rows(&db).await,
            vec![row("adm1", r#"["ceems"]"#, "t0")]
        );
    }
}
