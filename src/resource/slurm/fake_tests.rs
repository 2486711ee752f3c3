//! The manager against the fake `sacct`/`sacctmgr` of `tests/fixtures/sacct/bin`: command
//! lines, environment, zones, errors, time limits and the exact units.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono_tz::Tz;

use super::parse::parse_sacct_output;
use super::*;
use crate::config::CliConfig;

const FIXTURE_22_05: &str = include_str!("../../../tests/fixtures/sacct/sacct-22.05-no-offset.txt");

fn fake_bin() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sacct/bin")
}

fn paris() -> Tz {
    "Europe/Paris".parse().expect("known zone")
}

/// 2026-11-22T10:00:00+0100 to 10:15:00+0100, the window of the fixtures.
fn window() -> Window {
    Window::new(1_795_338_000_000, 1_795_338_900_000, paris())
}

fn cluster(variables: &[(&str, &str)]) -> ClusterConfig {
    ClusterConfig {
        id: "slurm-fake".into(),
        manager: "slurm".into(),
        cli: CliConfig {
            path: Some(fake_bin()),
            environment_variables: variables
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect::<BTreeMap<_, _>>(),
        },
        ..ClusterConfig::default()
    }
}

fn manager(variables: &[(&str, &str)]) -> SlurmManager {
    SlurmManager::new(&cluster(variables), paris()).expect("the fake sacct is usable")
}

#[tokio::test]
async fn fixture_jobs_come_out_exactly_with_the_cluster_id() {
    let arguments = tempfile::NamedTempFile::new().expect("temp file");
    let arguments_path = arguments.path().to_str().expect("UTF-8 path").to_owned();
    // sacct runs in UTC here: the window is rendered in UTC for it, and its zone-less
    // times are read in UTC.
    let slurm = manager(&[("TZ", "UTC"), ("FAKE_SLURM_ARGS_FILE", &arguments_path)]);
    assert_eq!(slurm.sacct_zone(), Tz::UTC);

    let units = slurm.fetch_units(&window()).await.expect("units");

    let mut expected = parse_sacct_output(FIXTURE_22_05, &window(), Tz::UTC).units;
    for unit in &mut expected {
        unit.cluster_id = "slurm-fake".into();
    }
    assert_eq!(units, expected);
    // The job line the fake prints on stderr (9999) is not among them.
    let uuids: Vec<&str> = units.iter().map(|unit| unit.uuid.as_str()).collect();
    assert_eq!(
        uuids,
        ["4001", "4002", "4003", "4004", "4005", "4007", "4009"]
    );
    let first = &units[0];
    assert_eq!(
        (
            first.cluster_id.as_str(),
            first.resource_manager.as_str(),
            first.started_at.as_str(),
            first.started_at_ts,
            first.metrics.total_time_seconds.to_string()
        ),
        (
            "slurm-fake",
            "slurm",
            "2026-11-22T09:55:00+0100",
            1_795_337_700_000,
            r#"{"alloc_cpumemtime":41287680,"alloc_cputime":10080,"alloc_gpumemtime":0,"alloc_gputime":0,"walltime":630}"#.to_owned()
        )
    );

    // 10:00 to 10:15 in Paris is 09:00 to 09:15 in sacct's zone.
    let written = std::fs::read_to_string(arguments.path()).expect("arguments written");
    let lines: Vec<&str> = written.lines().collect();
    assert_eq!(
        lines.join(" "),
        "-D -X --noheader --allusers --parsable2 --format \
         jobidraw,partition,qos,account,group,gid,user,uid,submit,start,end,elapsed,\
         elapsedraw,exitcode,state,alloctres,nodelist,jobname,workdir --state \
         CANCELLED,COMPLETED,FAILED,NODE_FAIL,PREEMPTED,TIMEOUT,RUNNING \
         --starttime 2026-11-22T09:00:00 --endtime 2026-11-22T09:15:00"
    );
}

#[tokio::test]
async fn the_window_is_rendered_in_the_zone_sacct_runs_in() {
    let arguments = tempfile::NamedTempFile::new().expect("temp file");
    let arguments_path = arguments.path().to_str().expect("UTF-8 path").to_owned();
    let slurm = manager(&[
        ("TZ", ":Asia/Tokyo"),
        ("FAKE_SLURM_MODE", "empty"),
        ("FAKE_SLURM_ARGS_FILE", &arguments_path),
    ]);
    assert_eq!(slurm.sacct_zone(), chrono_tz::Asia::Tokyo);
    assert!(slurm
        .fetch_units(&window())
        .await
        .expect("no units")
        .is_empty());
    let written = std::fs::read_to_string(arguments.path()).expect("arguments written");
    assert!(
        written.ends_with("--starttime\n2026-11-22T18:00:00\n--endtime\n2026-11-22T18:15:00\n"),
        "{written}"
    );
}

#[tokio::test]
async fn configured_variables_reach_the_commands() {
    let slurm = manager(&[
        ("TZ", "Asia/Tokyo"),
        ("FAKE_SLURM_MODE", "environment"),
        ("FAKE_ACCOUNT", "acc_from_config"),
    ]);
    let units = slurm.fetch_units(&window()).await.expect("units");
    assert_eq!(units.len(), 1);
    let job = &units[0];
    assert_eq!(job.uuid, "7001");
    assert_eq!(job.project, "acc_from_config");
    // sacct gets our time format, and the configured TZ, in which its times are read:
    // 09:02 in Tokyo is 01:02 in Paris.
    assert_eq!(job.name, "%Y-%m-%dT%H:%M:%S%z");
    assert!(job.tags.as_json().contains(r#""workdir":"Asia/Tokyo""#));
    assert_eq!(job.started_at, "2026-11-22T01:02:00+0100");
    assert_eq!(job.ended_at, "2026-11-22T01:03:00+0100");

    // sacctmgr gets the configured variables but not sacct's time format.
    let (users, projects) = slurm.fetch_users_projects(&window()).await.expect("users");
    let names: Vec<(&str, &str, &str)> = users
        .iter()
        .map(|user| {
            (
                user.cluster_id.as_str(),
                user.name.as_str(),
                user.projects.as_json(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [(
            "slurm-fake",
            "user_without_time_format",
            r#"["acc_from_config"]"#
        )]
    );
    assert_eq!(projects.len(), 1);
    assert_eq!(projects[0].name, "acc_from_config");
    assert_eq!(projects[0].resource_manager, "slurm");
}

#[tokio::test]
async fn associations_become_users_and_projects_of_the_cluster() {
    let slurm = manager(&[]);
    let (users, projects) = slurm.fetch_users_projects(&window()).await.expect("users");
    let users: Vec<(&str, &str, &str, &str)> = users
        .iter()
        .map(|user| {
            (
                user.cluster_id.as_str(),
                user.resource_manager.as_str(),
                user.name.as_str(),
                user.projects.as_json(),
            )
        })
        .collect();
    assert_eq!(
        users,
        [
            ("slurm-fake", "slurm", "usr1", r#"["acc1"]"#),
            ("slurm-fake", "slurm", "usr2", r#"["acc1","acc2"]"#),
            ("slurm-fake", "slurm", "usr3", r#"["acc3"]"#),
        ]
    );
    let projects: Vec<(&str, &str, &str)> = projects
        .iter()
        .map(|project| {
            (
                project.cluster_id.as_str(),
                project.name.as_str(),
                project.users.as_json(),
            )
        })
        .collect();
    assert_eq!(
        projects,
        [
            ("slurm-fake", "acc1", r#"["usr1","usr2"]"#),
            ("slurm-fake", "acc2", r#"["usr2"]"#),
            ("slurm-fake", "acc3", r#"["usr3"]"#),
        ]
    );
}

#[tokio::test]
async fn a_failing_command_is_an_error_naming_it_with_its_stderr() {
    let slurm = manager(&[("FAKE_SLURM_MODE", "fail")]);
    let error = slurm.fetch_units(&window()).await.expect_err("sacct fails");
    let SlurmError::Failed {
        command,
        status,
        stderr,
    } = &error
    else {
        panic!("unexpected error {error:?}");
    };
    assert_eq!(command.split(' ').next(), fake_bin().join("sacct").to_str());
    assert!(command.contains(" --starttime "), "{command}");
    assert_eq!(status, "exit status: 1");
    assert_eq!(
        stderr,
        "sacct: error: Problem talking to the database: Connection refused / \
         sacct: error: second line"
    );
    assert!(error.to_string().ends_with(
        ": failed (exit status: 1); stderr: sacct: error: Problem talking to the database: \
         Connection refused / sacct: error: second line"
    ));

    let error = slurm
        .fetch_users_projects(&window())
        .await
        .expect_err("sacctmgr fails");
    assert_eq!(
        error.to_string(),
        format!(
            "{} --parsable2 --noheader list associations format=Account,User: failed (exit \
             status: 1); stderr: sacctmgr: error: Problem talking to the database: \
             Connection refused",
            fake_bin().join("sacctmgr").display()
        )
    );
}

#[tokio::test]
async fn output_with_no_readable_line_is_an_error_so_the_window_is_retried() {
    let slurm = manager(&[("FAKE_SLURM_MODE", "garbage")]);
    let error = slurm.fetch_units(&window()).await.expect_err("garbage");
    assert_eq!(
        error.to_string(),
        "sacct output unparsable: none of its 4 non-blank lines could be read \
         (line 1: \"<html>\")"
    );
    let error = slurm
        .fetch_users_projects(&window())
        .await
        .expect_err("garbage");
    assert_eq!(
        error.to_string(),
        "sacctmgr output unparsable: none of its 2 non-blank lines could be read \
         (line 1: \"sacctmgr: error: garbage\")"
    );
}

#[tokio::test]
async fn steps_and_never_run_jobs_alone_or_nothing_at_all_are_no_error() {
    let steps = manager(&[("FAKE_SLURM_MODE", "steps")]);
    assert_eq!(steps.fetch_units(&window()).await.expect("no units"), []);
    let empty = manager(&[("FAKE_SLURM_MODE", "empty")]);
    assert_eq!(empty.fetch_units(&window()).await.expect("no units"), []);
    let (users, projects) = empty
        .fetch_users_projects(&window())
        .await
        .expect("nothing");
    assert!(users.is_empty() && projects.is_empty());
}

#[tokio::test]
async fn a_command_that_hangs_is_killed_with_what_it_started() {
    let pid_file = tempfile::NamedTempFile::new().expect("temp file");
    let pid_path = pid_file.path().to_str().expect("UTF-8 path").to_owned();
    let slurm = manager(&[
        ("TZ", "Europe/Paris"),
        ("FAKE_SLURM_MODE", "slow"),
        ("FAKE_SLURM_PID_FILE", &pid_path),
    ])
    .with_timeout(Duration::from_millis(700));
    let started = Instant::now();
    let error = slurm.fetch_units(&window()).await.expect_err("times out");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    let SlurmError::Timeout { command, timeout } = &error else {
        panic!("unexpected error {error:?}");
    };
    assert!(
        command.ends_with("--endtime 2026-11-22T10:15:00"),
        "{command}"
    );
    assert_eq!(*timeout, Duration::from_millis(700));

    // The `sleep 30` the fake started in its process group is gone too.
    let sleep_pid = std::fs::read_to_string(pid_file.path()).expect("pid written");
    let stat = format!("/proc/{}/stat", sleep_pid.trim());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let gone = match std::fs::read_to_string(&stat) {
            Err(_) => true,
            // A zombie waiting for its reaper is dead as well.
            Ok(text) => text
                .rsplit(") ")
                .next()
                .is_some_and(|rest| rest.starts_with('Z')),
        };
        if gone {
            break;
        }
        assert!(Instant::now() < deadline, "sleep {sleep_pid} still runs");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let error = slurm
        .fetch_users_projects(&window())
        .await
        .expect_err("times out");
    assert!(matches!(error, SlurmError::Timeout { .. }), "{error:?}");
}

#[test]
fn preflight_refuses_a_path_without_sacct_and_an_unknown_tz() {
    let empty = tempfile::tempdir().expect("temp dir");
    let mut config = cluster(&[]);
    config.cli.path = Some(empty.path().to_path_buf());
    let error = SlurmManager::new(&config, paris()).expect_err("no sacct");
    assert_eq!(
        error.to_string(),
        format!(
            "SLURM preflight: cli.path {}: no executable sacct in it",
            empty.path().display()
        )
    );

    let error = SlurmManager::new(&cluster(&[("TZ", "CET-1CEST")]), paris()).expect_err("POSIX TZ");
    assert_eq!(
        error.to_string(),
        "SLURM preflight: TZ=\"CET-1CEST\" for sacct is not an IANA zone name, so its times \
         could not be read; set TZ in cli.environment_variables to a name such as Europe/Paris"
    );
}

#[test]
fn an_empty_path_finds_sacct_on_the_configured_path() {
    let mut config = cluster(&[("PATH", fake_bin().to_str().expect("UTF-8 path"))]);
    config.cli.path = Some(PathBuf::new());
    let slurm = SlurmManager::new(&config, paris()).expect("found on PATH");
    assert_eq!(slurm.sacct, fake_bin().join("sacct"));
    assert_eq!(slurm.sacctmgr, fake_bin().join("sacctmgr"));

    config.cli.path = None;
    config
        .cli
        .environment_variables
        .insert("PATH".into(), "/nonexistent-dir".into());
    let error = SlurmManager::new(&config, paris()).expect_err("not on PATH");
    assert_eq!(
        error.to_string(),
        "SLURM preflight: sacct not found on PATH (/nonexistent-dir); install the SLURM \
         client commands or set cli.path to their directory"
    );
}
