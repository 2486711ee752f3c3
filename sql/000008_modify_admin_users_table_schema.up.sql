-- Reshape admin_users to one row per admin name, the shape of users.
-- The names of every old per-source array are copied (old row order, then array order;
-- empty and null elements skipped) with tags = [source].
-- A name listed more than once (in both sources, or twice in one list) keeps its first
-- row: INSERT OR IGNORE instead of failing the whole migration on the unique index.
ALTER TABLE admin_users RENAME TO tmp_admin_users;
CREATE TABLE IF NOT EXISTS admin_users (
  "id" integer not null primary key,
  "uid" text default '',
  "cluster_id" text default 'all',
  "resource_manager" text default '',
  "name" text,
  "projects" text default '[]',
  "tags" text default '[]',
  "last_updated_at" text
);
CREATE UNIQUE INDEX IF NOT EXISTS uq_cluster_id_admin_user ON admin_users (cluster_id,name);
INSERT OR IGNORE INTO admin_users (name,tags,last_updated_at)
  SELECT element.value, json_array(old.source), old.last_updated_at
  FROM tmp_admin_users AS old, json_each(old.users) AS element
  WHERE element.value != ''
  ORDER BY old.id, element.id;
DROP TABLE IF EXISTS tmp_admin_users;
