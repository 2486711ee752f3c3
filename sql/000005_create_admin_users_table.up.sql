-- First shape of the admin list: one row per source (ceems, grafana) holding a JSON
-- array of user names. Reshaped by migration 8.
CREATE TABLE IF NOT EXISTS admin_users (
  "id" integer not null primary key,
  "source" text,
  "users" text default '[]',
  "last_updated_at" text
);
CREATE UNIQUE INDEX IF NOT EXISTS uq_source ON admin_users (source);
