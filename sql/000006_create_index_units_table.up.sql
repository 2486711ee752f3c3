-- Speeds up the per-project, per-user scans of units bounded by end time.
CREATE INDEX idx_cluster_id_project_user_ended ON units (cluster_id,project,username,ended_at);
