//! The SLURM resource manager against a real single-node SLURM with accounting.
//!
//! With `CEEMS_TEST_SLURM_CONF` set (the `slurm.conf` of a running cluster, see
//! `scripts/slurm/start.sh`), that cluster is used. Otherwise the test starts one under
//! `$CARGO_TARGET_TMPDIR/slurm-stack` with `scripts/slurm/start.sh` and stops it at the end.
//! It needs root (jobs are submitted for other users with `sbatch --uid`), and it fails,
//! never skips, when SLURM cannot be started. The stack uses fixed ports, so everything runs
//! in one test.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ceems_api_server::config::{CliConfig, ClusterConfig};
use ceems_api_server::model::time::format_dtz;
use ceems_api_server::model::Unit;
use ceems_api_server::pipeline::Window;
use ceems_api_server::resource::slurm::{ExecMode, SlurmManager};
use chrono_tz::Tz;

/// How long the jobs may take to reach their states.
const STATES_TIMEOUT: Duration = Duration::from_secs(90);

/// A SLURM cluster for the test: started here (and stopped on drop) or given.
struct SlurmStack {
    conf: PathBuf,
    /// The BASE of a stack started here.
    owned_base: Option<PathBuf>,
    /// Jobs to cancel on drop when the stack is not ours.
    submitted: Vec<String>,
}

impl SlurmStack {
    fn start() -> Self {
        if let Some(conf) = std::env::var_os("CEEMS_TEST_SLURM_CONF") {
            return Self {
                conf: PathBuf::from(conf),
                owned_base: None,
                submitted: Vec::new(),
            };
        }
        let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("slurm-stack");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/slurm/start.sh");
        let started = Instant::now();
        let output = Command::new("bash")
            .arg(&script)
            .arg(&base)
            .output()
            .expect("run scripts/slurm/start.sh");
        // From here on the guard stops whatever part of the stack came up.
        let stack = Self {
            conf: base.join("etc/slurm.conf"),
            owned_base: Some(base),
            submitted: Vec::new(),
        };
        assert!(
            output.status.success(),
            "SLURM could not be started ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        eprintln!("SLURM started in {:?}", started.elapsed());
        stack
    }

    /// Runs a SLURM command against this cluster; its stdout.
    fn run(&self, program: &str, arguments: &[&str]) -> Result<String, String> {
        let output = Command::new(program)
            .args(arguments)
            .env("SLURM_CONF", &self.conf)
            .current_dir("/tmp")
            .output()
            .map_err(|error| format!("{program}: {error}"))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(format!(
                "{program} {arguments:?}: {}: {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }

    /// `sacctmgr -i add ...`; "Nothing new added" (exit 1) is fine when it is there already.
    fn sacctmgr_add(&self, arguments: &[&str]) {
        let mut all = vec!["-i", "add"];
        all.extend_from_slice(arguments);
        if let Err(error) = self.run("sacctmgr", &all) {
            assert!(error.contains("Nothing new added"), "{error}");
        }
    }

    /// Submits a batch job; its job id.
    fn sbatch(&mut self, arguments: &[&str], script: &str) -> String {
        let mut all = vec!["--parsable", "-o", "/dev/null", "--chdir=/tmp"];
        all.extend_from_slice(arguments);
        all.extend_from_slice(&["--wrap", script]);
        let output = self.run("sbatch", &all).expect("sbatch");
        let id = output
            .trim()
            .split(';')
            .next()
            .unwrap_or_default()
            .to_owned();
        assert!(
            !id.is_empty() && id.bytes().all(|byte| byte.is_ascii_digit()),
            "sbatch printed {output:?}"
        );
        self.submitted.push(id.clone());
        id
    }

    /// JobID (`12`, `12_1`) -> (JobIDRaw, State) of the given jobs, from sacct.
    fn job_states(&self, ids: &[&str]) -> BTreeMap<String, (String, String)> {
        let list = ids.join(",");
        let output = self
            .run(
                "sacct",
                &[
                    "-X",
                    "-n",
                    "-P",
                    "-a",
                    "-o",
                    "JobID,JobIDRaw,State",
                    "-S",
                    "now-1days",
                    "-j",
                    &list,
                ],
            )
            .unwrap_or_default();
        output
            .lines()
            .filter_map(|line| {
                let mut fields = line.split('|');
                Some((
                    fields.next()?.to_owned(),
                    (fields.next()?.to_owned(), fields.next()?.to_owned()),
                ))
            })
            .collect()
    }

    /// Polls sacct until `done` holds for the states of `ids`.
    fn wait_for_states(
        &self,
        ids: &[&str],
        what: &str,
        done: impl Fn(&BTreeMap<String, (String, String)>) -> bool,
    ) -> BTreeMap<String, (String, String)> {
        let deadline = Instant::now() + STATES_TIMEOUT;
        loop {
            let states = self.job_states(ids);
            if done(&states) {
                return states;
            }
            assert!(
                Instant::now() < deadline,
                "jobs did not reach {what} within {STATES_TIMEOUT:?}: {states:?}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for SlurmStack {
    fn drop(&mut self) {
        match &self.owned_base {
            Some(base) => {
                let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/slurm/stop.sh");
                let stopped = Instant::now();
                match Command::new("bash").arg(script).arg(base).status() {
                    Ok(status) if status.success() => {
                        eprintln!("SLURM stopped in {:?}", stopped.elapsed());
                        let _ = std::fs::remove_dir_all(base);
                    }
                    other => eprintln!("stopping SLURM under {}: {other:?}", base.display()),
                }
            }
            None => {
                if !self.submitted.is_empty() {
                    let ids: Vec<&str> = self.submitted.iter().map(String::as_str).collect();
                    let _ = self.run("scancel", &ids);
                }
            }
        }
    }
}

fn now_ms() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(since_epoch.as_millis()).expect("in range")
}

fn unit<'a>(units: &'a [Unit], uuid: &str) -> &'a Unit {
    units
        .iter()
        .find(|unit| unit.uuid == uuid)
        .unwrap_or_else(|| panic!("no unit {uuid} among {:?}", uuids(units)))
}

fn uuids(units: &[Unit]) -> Vec<&str> {
    units.iter().map(|unit| unit.uuid.as_str()).collect()
}

fn metric(unit: &Unit, key: &str) -> f64 {
    *unit
        .metrics
        .total_time_seconds
        .0
        .get(key)
        .unwrap_or_else(|| panic!("unit {} has no {key}", unit.uuid))
}

fn host_name() -> String {
    let output = Command::new("hostname")
        .arg("-s")
        .output()
        .expect("hostname");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// What the test knows of one job it submitted.
struct Expected<'a> {
    user: &'a str,
    group: &'a str,
    uid: i64,
    account: &'a str,
    name: &'a str,
    cpus: i64,
    memory_mib: i64,
    exit_code: &'a str,
}

/// Checks the facts every finished or running job shares, and returns its walltime.
fn check_job(units: &[Unit], uuid: &str, expected: &Expected, window: &Window, host: &str) -> i64 {
    let job = unit(units, uuid);
    assert_eq!(job.cluster_id, "slurm-real", "{uuid}");
    assert_eq!(job.resource_manager, "slurm", "{uuid}");
    assert_eq!(job.username, expected.user, "{uuid}");
    assert_eq!(job.groupname, expected.group, "{uuid}");
    assert_eq!(job.project, expected.account, "{uuid}");
    assert_eq!(job.name, expected.name, "{uuid}");
    let memory_bytes = expected.memory_mib * 1024 * 1024;
    assert_eq!(
        job.allocation.as_json(),
        format!(
            r#"{{"billing":{cpus},"cpus":{cpus},"gpus":0,"mem":{memory_bytes},"nodes":1}}"#,
            cpus = expected.cpus
        ),
        "{uuid}"
    );
    assert_eq!(
        job.tags.as_json(),
        format!(
            r#"{{"exit_code":"{exit}","gid":{uid},"nodelist":"{host}","nodelistexp":"{host}","partition":"debug","qos":"normal","uid":{uid},"workdir":"/tmp"}}"#,
            exit = expected.exit_code,
            uid = expected.uid
        ),
        "{uuid}"
    );
    // Times: sacct prints them in Tokyo, they are stored in the window's zone, and they
    // fall inside the window (a zone mix-up would move them by hours).
    assert!(
        job.created_at_ts >= window.start_ms && job.created_at_ts <= window.end_ms,
        "{uuid} submitted at {} outside the window",
        job.created_at
    );
    assert!(job.started_at_ts >= job.created_at_ts - 1000, "{uuid}");
    assert_eq!(
        job.started_at,
        format_dtz(job.started_at_ts, window.zone),
        "{uuid}"
    );
    assert_eq!(
        job.created_at,
        format_dtz(job.created_at_ts, window.zone),
        "{uuid}"
    );
    let walltime = metric(job, "walltime") as i64;
    assert_eq!(
        metric(job, "alloc_cputime") as i64,
        expected.cpus * walltime,
        "{uuid}"
    );
    assert_eq!(
        metric(job, "alloc_cpumemtime") as i64,
        expected.memory_mib * walltime,
        "{uuid}"
    );
    assert_eq!(metric(job, "alloc_gputime"), 0.0, "{uuid}");
    if job.ended_at_ts > 0 {
        assert!(job.ended_at_ts <= window.end_ms, "{uuid}");
        assert_eq!(
            job.ended_at,
            format_dtz(job.ended_at_ts, window.zone),
            "{uuid}"
        );
        assert_eq!(
            walltime,
            (job.ended_at_ts - job.started_at_ts) / 1000,
            "{uuid}"
        );
    }
    walltime
}

#[test]
fn sacct_and_sacctmgr_of_a_real_cluster() {
    let test_started = Instant::now();
    let mut stack = SlurmStack::start();
    let window_start_ms = now_ms() - 60_000;

    // Accounts and associations for system users that exist everywhere.
    stack.sacctmgr_add(&[
        "account",
        "acc1,acc2,acc3",
        "Description=ceems",
        "Organization=ceems",
    ]);
    stack.sacctmgr_add(&["user", "root", "Account=acc1"]);
    stack.sacctmgr_add(&["user", "nobody", "Account=acc1,acc2"]);
    stack.sacctmgr_add(&["user", "daemon", "Account=acc3"]);

    let done = stack.sbatch(
        &["-A", "acc1", "-c", "2", "--mem=300M", "-J", "done"],
        "sleep 4",
    );
    let failed = stack.sbatch(
        &[
            "--uid=nobody",
            "--gid=nogroup",
            "-A",
            "acc2",
            "-c",
            "1",
            "--mem=200M",
            "-J",
            "fails",
        ],
        "exit 3",
    );
    let array = stack.sbatch(
        &[
            "--uid=daemon",
            "--gid=daemon",
            "-A",
            "acc3",
            "-c",
            "1",
            "--mem=128M",
            "-J",
            "arr",
            "--array=1-2",
        ],
        "sleep 2",
    );
    let cancelled = stack.sbatch(
        &[
            "--uid=daemon",
            "--gid=daemon",
            "-A",
            "acc3",
            "-c",
            "1",
            "--mem=256M",
            "-J",
            "cancelled",
        ],
        "sleep 300",
    );
    let running = stack.sbatch(
        &[
            "--uid=nobody",
            "--gid=nogroup",
            "-A",
            "acc1",
            "-c",
            "1",
            "--mem=512M",
            "-J",
            "running",
        ],
        "sleep 300",
    );

    stack.wait_for_states(&[&cancelled], "RUNNING", |states| {
        states.get(&cancelled).map(|(_, state)| state.as_str()) == Some("RUNNING")
    });
    stack.run("scancel", &[&cancelled]).expect("scancel");

    let array_first = format!("{array}_1");
    let array_second = format!("{array}_2");
    let states = stack.wait_for_states(
        &[&done, &failed, &array, &cancelled, &running],
        "their final states",
        |states| {
            let state = |id: &str| states.get(id).map(|(_, state)| state.as_str());
            state(&done) == Some("COMPLETED")
                && state(&failed) == Some("FAILED")
                && state(&array_first) == Some("COMPLETED")
                && state(&array_second) == Some("COMPLETED")
                && state(&cancelled).is_some_and(|state| state.starts_with("CANCELLED"))
                && state(&running) == Some("RUNNING")
        },
    );
    let array_uuids: Vec<String> = [&array_first, &array_second]
        .iter()
        .map(|id| states[id.as_str()].0.clone())
        .collect();
    // The tasks are jobs of their own: their raw ids are plain numbers.
    for raw in &array_uuids {
        assert!(raw.bytes().all(|byte| byte.is_ascii_digit()), "{raw}");
    }
    std::thread::sleep(Duration::from_millis(1100));
    let window_end_ms = now_ms();
    eprintln!("jobs in their states after {:?}", test_started.elapsed());

    // sacct runs in Tokyo, the units are rendered in New York.
    let new_york: Tz = "America/New_York".parse().expect("zone");
    let cluster = ClusterConfig {
        id: "slurm-real".into(),
        manager: "slurm".into(),
        cli: CliConfig {
            path: None,
            environment_variables: [
                ("SLURM_CONF".to_owned(), stack.conf.display().to_string()),
                ("TZ".to_owned(), "Asia/Tokyo".to_owned()),
            ]
            .into_iter()
            .collect(),
        },
        ..ClusterConfig::default()
    };
    let manager = SlurmManager::new(&cluster, new_york).expect("sacct found on PATH");
    assert_eq!(manager.exec_mode(), ExecMode::Direct);
    assert_eq!(manager.sacct_zone(), chrono_tz::Asia::Tokyo);
    let window = Window::new(window_start_ms, window_end_ms, new_york);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let units = runtime
        .block_on(manager.fetch_units(&window))
        .expect("units");
    let host = host_name();

    // Every job of ours is there once; with a fresh stack there is nothing else.
    let mut ours: Vec<&str> = vec![&done, &failed, &cancelled, &running];
    ours.extend(array_uuids.iter().map(String::as_str));
    ours.sort_unstable();
    let mut seen: Vec<&str> = uuids(&units)
        .into_iter()
        .filter(|uuid| ours.contains(uuid))
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, ours);
    if stack.owned_base.is_some() {
        let mut all = uuids(&units);
        all.sort_unstable();
        assert_eq!(all, ours);
    }

    let walltime = check_job(
        &units,
        &done,
        &Expected {
            user: "root",
            group: "root",
            uid: 0,
            account: "acc1",
            name: "done",
            cpus: 2,
            memory_mib: 300,
            exit_code: "0:0",
        },
        &window,
        &host,
    );
    assert!((4..=9).contains(&walltime), "sleep 4 ran {walltime} s");
    assert_eq!(unit(&units, &done).state, "COMPLETED");

    check_job(
        &units,
        &failed,
        &Expected {
            user: "nobody",
            group: "nogroup",
            uid: 65534,
            account: "acc2",
            name: "fails",
            cpus: 1,
            memory_mib: 200,
            exit_code: "3:0",
        },
        &window,
        &host,
    );
    assert_eq!(unit(&units, &failed).state, "FAILED");

    for raw in &array_uuids {
        let walltime = check_job(
            &units,
            raw,
            &Expected {
                user: "daemon",
                group: "daemon",
                uid: 1,
                account: "acc3",
                name: "arr",
                cpus: 1,
                memory_mib: 128,
                exit_code: "0:0",
            },
            &window,
            &host,
        );
        assert!((2..=7).contains(&walltime), "sleep 2 ran {walltime} s");
        assert_eq!(unit(&units, raw).state, "COMPLETED");
    }

    check_job(
        &units,
        &cancelled,
        &Expected {
            user: "daemon",
            group: "daemon",
            uid: 1,
            account: "acc3",
            name: "cancelled",
            cpus: 1,
            memory_mib: 256,
            exit_code: "0:0",
        },
        &window,
        &host,
    );
    assert_eq!(unit(&units, &cancelled).state, "CANCELLED by 0");
    assert!(unit(&units, &cancelled).ended_at_ts > 0);

    let still_running = unit(&units, &running);
    let walltime = check_job(
        &units,
        &running,
        &Expected {
            user: "nobody",
            group: "nogroup",
            uid: 65534,
            account: "acc1",
            name: "running",
            cpus: 1,
            memory_mib: 512,
            exit_code: "0:0",
        },
        &window,
        &host,
    );
    assert_eq!(still_running.state, "RUNNING");
    assert_eq!(still_running.ended_at, "Unknown");
    assert_eq!(still_running.ended_at_ts, 0);
    // A running job counts up to the window end.
    assert_eq!(
        walltime,
        (window.end_ms - still_running.started_at_ts) / 1000
    );

    // Users and projects: the associations made above, without root's.
    let (users, projects) = runtime
        .block_on(manager.fetch_users_projects(&window))
        .expect("associations");
    let shared_cluster = stack.owned_base.is_none();
    let users: Vec<(String, String, String, String)> = users
        .iter()
        .filter(|user| !shared_cluster || ["nobody", "daemon"].contains(&user.name.as_str()))
        .map(|user| {
            (
                user.cluster_id.clone(),
                user.resource_manager.clone(),
                user.name.clone(),
                user.projects.as_json().to_owned(),
            )
        })
        .collect();
    let expected_user = |name: &str, projects: &str| {
        (
            "slurm-real".to_owned(),
            "slurm".to_owned(),
            name.to_owned(),
            projects.to_owned(),
        )
    };
    if shared_cluster {
        // Another cluster may give these users more accounts: ours must be among them.
        for (_, _, name, projects) in &users {
            match name.as_str() {
                "nobody" => assert!(projects.contains(r#""acc1","acc2""#), "{projects}"),
                _ => assert!(projects.contains(r#""acc3""#), "{projects}"),
            }
        }
    } else {
        assert_eq!(
            users,
            [
                expected_user("daemon", r#"["acc3"]"#),
                expected_user("nobody", r#"["acc1","acc2"]"#),
            ]
        );
    }
    let projects: Vec<(String, String, String)> = projects
        .iter()
        .filter(|project| {
            !shared_cluster || ["acc1", "acc2", "acc3"].contains(&project.name.as_str())
        })
        .map(|project| {
            (
                project.cluster_id.clone(),
                project.name.clone(),
                project.users.as_json().to_owned(),
            )
        })
        .collect();
    if !shared_cluster {
        assert_eq!(
            projects,
            [
                ("slurm-real".into(), "acc1".into(), r#"["nobody"]"#.into()),
                ("slurm-real".into(), "acc2".into(), r#"["nobody"]"#.into()),
                ("slurm-real".into(), "acc3".into(), r#"["daemon"]"#.into()),
            ]
        );
    } else {
        assert_eq!(projects.len(), 3, "{projects:?}");
    }

    // A sacct that fails is an error naming the command and quoting its stderr. (A missing
    // SLURM_CONF file would make sacct retry for a minute: an unreadable one fails at once.)
    let bad_conf = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(bad_conf.path(), "NotAKey=1\n").expect("write");
    let mut broken = cluster.clone();
    broken
        .cli
        .environment_variables
        .insert("SLURM_CONF".into(), bad_conf.path().display().to_string());
    let broken = SlurmManager::new(&broken, new_york).expect("sacct found");
    let error = runtime
        .block_on(broken.fetch_units(&window))
        .expect_err("no configuration");
    let message = error.to_string();
    assert!(
        message.contains("sacct -D -X")
            && message.contains("failed (exit status: 1); stderr: sacct: error:")
            && message.contains("sacct: fatal: Unable to process configuration file"),
        "{message}"
    );

    drop(runtime);
    drop(stack);
    eprintln!("real SLURM test took {:?}", test_started.elapsed());
}
