//! SLURM accounting through the command line: the `sacct` and `sacctmgr` argument lists and
//! the parsers of their `--parsable2` output into model units, users and projects.
//!
//! Everything here is pure and synchronous; running the commands belongs to the caller.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono_tz::Tz;
use serde_json::Value;

use crate::model::json::to_go_json;
use crate::model::time::{format_dtz, parse_dt, parse_dtz};
use crate::model::{Generic, List, MetricMap, Metrics, Project, Unit, User};
use crate::pipeline::Window;

/// The `resource_manager` of every SLURM record.
pub const RESOURCE_MANAGER_SLURM: &str = "slurm";

/// The sacct `--format` fields, in the order the parser reads them.
pub const SACCT_FIELDS: [&str; 19] = [
    "jobidraw",
    "partition",
    "qos",
    "account",
    "group",
    "gid",
    "user",
    "uid",
    "submit",
    "start",
    "end",
    "elapsed",
    "elapsedraw",
    "exitcode",
    "state",
    "alloctres",
    "nodelist",
    "jobname",
    "workdir",
];

/// The job states asked of sacct (`--state`).
pub const SACCT_STATES: [&str; 7] = [
    "CANCELLED",
    "COMPLETED",
    "FAILED",
    "NODE_FAIL",
    "PREEMPTED",
    "TIMEOUT",
    "RUNNING",
];

/// The variable that asks sacct to print times with their UTC offset (newer SLURM releases
/// honour the `%z`; 22.05 cuts it off, which the parser copes with).
pub const SLURM_TIME_FORMAT_VARIABLE: &str = "SLURM_TIME_FORMAT";
/// Its value.
pub const SLURM_TIME_FORMAT_VALUE: &str = "%Y-%m-%dT%H:%M:%S%z";

// Positions of the fields in a sacct line (see `SACCT_FIELDS`).
const FIELD_JOBIDRAW: usize = 0;
const FIELD_PARTITION: usize = 1;
const FIELD_QOS: usize = 2;
const FIELD_ACCOUNT: usize = 3;
const FIELD_GROUP: usize = 4;
const FIELD_GID: usize = 5;
const FIELD_USER: usize = 6;
const FIELD_UID: usize = 7;
const FIELD_SUBMIT: usize = 8;
const FIELD_START: usize = 9;
const FIELD_END: usize = 10;
const FIELD_ELAPSED: usize = 11;
const FIELD_EXITCODE: usize = 13;
const FIELD_STATE: usize = 14;
const FIELD_ALLOCTRES: usize = 15;
const FIELD_NODELIST: usize = 16;
const FIELD_JOBNAME: usize = 17;
const FIELD_WORKDIR: usize = 18;

/// What sacct prints as the nodelist of a job that never got nodes.
const NODELIST_NONE_ASSIGNED: &str = "None assigned";

const BYTES_PER_MEBIBYTE: i64 = 1024 * 1024;

/// A nodelist that expands to more names than this is cut: a garbage range such as
/// `n[0-999999999]` must not exhaust memory. Real clusters are far below it.
pub const MAX_EXPANDED_NODES: usize = 100_000;
/// Expansion steps allowed per nodelist, so that ranges whose names all turn out unreadable
/// (`n[0-999999999999][x]`) cannot spin for ever either.
const MAX_EXPANSION_STEPS: usize = 1_000_000;

/// The arguments of `sacct` (after the program path) for the window `[start, end]`, both
/// given as `DT` wall-clock strings in the configured time zone.
pub fn sacct_arguments(start: &str, end: &str) -> Vec<String> {
    let mut arguments: Vec<String> = ["-D", "-X", "--noheader", "--allusers", "--parsable2"]
        .iter()
        .map(|argument| (*argument).to_owned())
        .collect();
    arguments.push("--format".to_owned());
    arguments.push(SACCT_FIELDS.join(","));
    arguments.push("--state".to_owned());
    arguments.push(SACCT_STATES.join(","));
    arguments.push("--starttime".to_owned());
    arguments.push(start.to_owned());
    arguments.push("--endtime".to_owned());
    arguments.push(end.to_owned());
    arguments
}

/// The variables added to the parent environment of `sacct`, before the cluster's own
/// `cli.environment_variables` (which therefore may override them).
pub fn sacct_environment() -> Vec<(String, String)> {
    vec![(
        SLURM_TIME_FORMAT_VARIABLE.to_owned(),
        SLURM_TIME_FORMAT_VALUE.to_owned(),
    )]
}

/// The arguments of `sacctmgr` (after the program path); it gets no extra environment.
pub fn sacctmgr_arguments() -> Vec<String> {
    [
        "--parsable2",
        "--noheader",
        "list",
        "associations",
        "format=Account,User",
    ]
    .iter()
    .map(|argument| (*argument).to_owned())
    .collect()
}

/// Why a sacct line gave no unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// Fewer `|`-separated fields than requested (an error message, a cut line).
    TooFewFields { found: usize },
    /// A job step (`123.batch`, `123.0`): its job is the unit.
    JobStep,
    /// The job id is not a number: not a sacct job line (a header, a message, garbage).
    InvalidJobId,
    /// Nodelist `None assigned`: the job never ran.
    NeverRan,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::TooFewFields { found } => write!(
                f,
                "{found} fields, expected at least {}",
                SACCT_FIELDS.len()
            ),
            SkipReason::JobStep => f.write_str("job step"),
            SkipReason::InvalidJobId => f.write_str("job id is not a number"),
            SkipReason::NeverRan => f.write_str("job never ran (no nodes assigned)"),
        }
    }
}

/// A sacct line that gave no unit, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedLine {
    /// 1-based.
    pub line_number: usize,
    pub reason: SkipReason,
}

/// The units of one sacct output and the lines that were skipped. Blank lines are neither.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParsedUnits {
    pub units: Vec<Unit>,
    pub skipped: Vec<SkippedLine>,
}

impl SkipReason {
    /// Whether the line is a well-formed sacct line that simply is no unit (a step, a job
    /// that never ran), as opposed to text that is no sacct line at all.
    pub fn is_known_skip(&self) -> bool {
        matches!(self, SkipReason::JobStep | SkipReason::NeverRan)
    }
}

/// Parses `sacct --parsable2` output into units, with `total_time_seconds` counted over
/// `window`.
///
/// Times with an offset (DTZ) are read as such; times without one (SLURM 22.05 cuts the
/// offset off) are wall clock in `sacct_zone`, the zone sacct runs in. Both are stored as
/// DTZ in the window's zone with `*_ts` in epoch ms; other text (`Unknown`) is kept with
/// ts 0. `cluster_id` is left empty for the caller.
pub fn parse_sacct_output(output: &str, window: &Window, sacct_zone: Tz) -> ParsedUnits {
    let zone = window.zone;
    let mut parsed = ParsedUnits::default();
    for (index, line) in output.split('\n').enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match parse_sacct_line(line, window, zone, sacct_zone) {
            Ok(unit) => parsed.units.push(unit),
            Err(reason) => parsed.skipped.push(SkippedLine {
                line_number: index + 1,
                reason,
            }),
        }
    }
    parsed
}

fn parse_sacct_line(
    line: &str,
    window: &Window,
    zone: Tz,
    sacct_zone: Tz,
) -> Result<Unit, SkipReason> {
    let fields: Vec<&str> = line.split('|').collect();
    if fields.len() < SACCT_FIELDS.len() {
        return Err(SkipReason::TooFewFields {
            found: fields.len(),
        });
    }
    let jobid = fields[FIELD_JOBIDRAW];
    if jobid.contains('.') {
        return Err(SkipReason::JobStep);
    }
    if jobid.is_empty() || !jobid.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(SkipReason::InvalidJobId);
    }
    let nodelist = fields[FIELD_NODELIST];
    if nodelist == NODELIST_NONE_ASSIGNED {
        return Err(SkipReason::NeverRan);
    }

    let gid = fields[FIELD_GID].parse::<i64>().unwrap_or(0);
    let uid = fields[FIELD_UID].parse::<i64>().unwrap_or(0);
    let (created_at, created_at_ts) = parse_sacct_time(fields[FIELD_SUBMIT], zone, sacct_zone);
    let (started_at, started_at_ts) = parse_sacct_time(fields[FIELD_START], zone, sacct_zone);
    let (ended_at, ended_at_ts) = parse_sacct_time(fields[FIELD_END], zone, sacct_zone);

    let resources = AllocatedResources::parse(fields[FIELD_ALLOCTRES]);
    let walltime = walltime_in_window(started_at_ts, ended_at_ts, window);
    let total_time_seconds = total_time_seconds(&resources, walltime);

    let mut allocation: BTreeMap<String, Value> = BTreeMap::new();
    allocation.insert("nodes".into(), resources.nodes.into());
    allocation.insert("cpus".into(), resources.cpus.into());
    allocation.insert("mem".into(), resources.memory_bytes.into());
    allocation.insert("gpus".into(), resources.gpus.into());
    allocation.insert("billing".into(), resources.billing.into());

    let mut tags: BTreeMap<String, Value> = BTreeMap::new();
    tags.insert("uid".into(), uid.into());
    tags.insert("gid".into(), gid.into());
    tags.insert("partition".into(), fields[FIELD_PARTITION].into());
    tags.insert("qos".into(), fields[FIELD_QOS].into());
    tags.insert("exit_code".into(), fields[FIELD_EXITCODE].into());
    tags.insert("nodelist".into(), nodelist.into());
    tags.insert(
        "nodelistexp".into(),
        expand_nodelist(nodelist).join("|").into(),
    );
    tags.insert("workdir".into(), fields[FIELD_WORKDIR].into());

    Ok(Unit {
        resource_manager: RESOURCE_MANAGER_SLURM.to_owned(),
        uuid: jobid.to_owned(),
        name: fields[FIELD_JOBNAME].to_owned(),
        project: fields[FIELD_ACCOUNT].to_owned(),
        groupname: fields[FIELD_GROUP].to_owned(),
        username: fields[FIELD_USER].to_owned(),
        created_at,
        started_at,
        ended_at,
        created_at_ts,
        started_at_ts,
        ended_at_ts,
        elapsed: fields[FIELD_ELAPSED].to_owned(),
        state: fields[FIELD_STATE].to_owned(),
        allocation: generic_from_map(&allocation),
        metrics: Metrics {
            total_time_seconds,
            ..Metrics::default()
        },
        tags: generic_from_map(&tags),
        ..Unit::default()
    })
}

/// Encodes a map built here (string keys, integers and strings) as a Generic column.
fn generic_from_map(map: &BTreeMap<String, Value>) -> Generic {
    let text = String::from_utf8(to_go_json(map)).expect("JSON is UTF-8");
    Generic::decode(&text).expect("a JSON object of integers and strings is a valid Generic")
}

/// One sacct time field: DTZ, or DT in `sacct_zone`, re-rendered as DTZ in `zone` with its
/// epoch ms; any other text is kept as it is with ts 0.
fn parse_sacct_time(text: &str, zone: Tz, sacct_zone: Tz) -> (String, i64) {
    let epoch_ms = parse_dtz(text)
        .map(|time| time.timestamp_millis())
        .or_else(|| parse_dt(text, sacct_zone).map(|time| time.timestamp_millis()));
    match epoch_ms {
        Some(epoch_ms) => (format_dtz(epoch_ms, zone), epoch_ms),
        None => (text.to_owned(), 0),
    }
}

/// Active seconds of a job inside `window`, truncated toward zero as the reference does.
///
/// A job that has not started counts 0. A job that finished before the window counts its
/// whole run (the reference does so; sacct does not return such jobs in practice). A job
/// starting after the window end counts negative, as the reference does.
fn walltime_in_window(started_at_ts: i64, ended_at_ts: i64, window: &Window) -> i64 {
    let (start_mark, end_mark) = if started_at_ts == 0 {
        (window.start_ms, window.start_ms)
    } else if ended_at_ts > 0 && ended_at_ts < window.start_ms {
        (started_at_ts, ended_at_ts)
    } else {
        let start_mark = started_at_ts.max(window.start_ms);
        let end_mark = if ended_at_ts > 0 && ended_at_ts < window.end_ms {
            ended_at_ts
        } else {
            window.end_ms
        };
        (start_mark, end_mark)
    };
    end_mark.saturating_sub(start_mark) / 1000
}

fn total_time_seconds(resources: &AllocatedResources, walltime: i64) -> MetricMap {
    let cpumemtime = if resources.memory_bytes > 0 {
        // In i128 so that a huge allocation times a long window cannot overflow.
        let mebibyte_seconds = i128::from(resources.memory_bytes) * i128::from(walltime)
            / i128::from(BYTES_PER_MEBIBYTE);
        saturate_i128(mebibyte_seconds)
    } else {
        walltime
    };
    let gpumemtime = if resources.gpus > 0 { walltime } else { 0 };
    let mut map = BTreeMap::new();
    map.insert("walltime".to_owned(), walltime as f64);
    map.insert(
        "alloc_cputime".to_owned(),
        resources.cpus.saturating_mul(walltime) as f64,
    );
    map.insert("alloc_cpumemtime".to_owned(), cpumemtime as f64);
    map.insert(
        "alloc_gputime".to_owned(),
        resources.gpus.saturating_mul(walltime) as f64,
    );
    map.insert("alloc_gpumemtime".to_owned(), gpumemtime as f64);
    MetricMap(map)
}

fn saturate_i128(value: i128) -> i64 {
    i64::try_from(value).unwrap_or(if value < 0 { i64::MIN } else { i64::MAX })
}

/// The resources read from sacct's AllocTRES (`billing=16,cpu=16,gres/gpu=2,mem=64G,node=1`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct AllocatedResources {
    billing: i64,
    nodes: i64,
    cpus: i64,
    gpus: i64,
    memory_bytes: i64,
}

impl AllocatedResources {
    fn parse(alloctres: &str) -> Self {
        let mut resources = Self::default();
        let mut memory_text = "";
        for element in alloctres.split(',') {
            let mut parts = element.split('=');
            let key = parts.next().unwrap_or("");
            // The reference reads the text between the first and second `=`.
            let value = parts.next().unwrap_or("");
            if let Some(gpus) = gpu_count(key, value) {
                // The last GPU element wins: SLURM prints `gres/gpu=N` next to the typed
                // `gres/gpu:<type>=N`, both with the same count.
                resources.gpus = gpus;
            }
            match key {
                "billing" => resources.billing = value.parse().unwrap_or(0),
                "node" => resources.nodes = value.parse().unwrap_or(0),
                "cpu" => resources.cpus = value.parse().unwrap_or(0),
                "mem" => memory_text = value,
                _ => {}
            }
        }
        resources.memory_bytes = parse_memory_bytes(memory_text);
        resources
    }
}

/// The GPU count of one TRES element: only `gres/gpu=N` and `gres/gpu:<type>=N`, never
/// `gres/gpumem=...` or other keys that merely start with `gres/gpu`. Like the reference,
/// the leading digits of the value are the count.
fn gpu_count(key: &str, value: &str) -> Option<i64> {
    if key != "gres/gpu" && !key.starts_with("gres/gpu:") {
        return None;
    }
    let digits_end = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    value[..digits_end].parse().ok()
}

/// Bytes of a TRES memory value: the first run of digits and dots, times the unit letter
/// right after it (K, M, G, T, P as powers of 1024). No unit means megabytes, SLURM's unit
/// for memory. Fractions are kept, rounded to whole bytes. Anything unreadable is 0.
pub fn parse_memory_bytes(text: &str) -> i64 {
    let is_number_char = |c: char| c.is_ascii_digit() || c == '.';
    let Some(number_start) = text.find(is_number_char) else {
        return 0;
    };
    let rest = &text[number_start..];
    let number_end = rest
        .find(|c: char| !is_number_char(c))
        .unwrap_or(rest.len());
    let Ok(number) = rest[..number_end].parse::<f64>() else {
        return 0;
    };
    let multiplier: f64 = match rest[number_end..].chars().next() {
        Some('K') => 1024.0,
        Some('G') => 1024f64.powi(3),
        Some('T') => 1024f64.powi(4),
        Some('P') => 1024f64.powi(5),
        // `M` and no unit at all.
        _ => 1024f64.powi(2),
    };
    let bytes = (number * multiplier).round();
    // `as` saturates at the i64 bounds; the value is never negative or NaN here.
    bytes as i64
}

/// Expands a SLURM nodelist (`compute-[0-2,5],gpu07`) into regex-escaped node names, in
/// order, as the `nodelistexp` tag joins them with `|`.
///
/// Bracket groups are kept whole when splitting on `,`; each group item `x` or `x-y` is
/// iterated and zero-padded to the width of `x`'s text. Several groups in one name give
/// their product, as SLURM means it (`r[1-2]c[1-2]` is four nodes; the reference replaced
/// every copy of the first group's text at once and got two). A part with an unclosed `[`
/// or an unreadable range item gives no names, as in the reference. The output is cut at
/// [`MAX_EXPANDED_NODES`] names.
pub fn expand_nodelist(nodelist: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut steps_left = MAX_EXPANSION_STEPS;
    for part in split_nodelist(nodelist) {
        expand_nodelist_part(&part, &mut names, &mut steps_left);
    }
    names
}

/// Splits on `,` outside brackets: `a[0-1,3],b2` gives `a[0-1,3]` and `b2`.
fn split_nodelist(nodelist: &str) -> Vec<String> {
    let pieces: Vec<&str> = nodelist.split(',').collect();
    let mut parts = Vec::new();
    let mut index = 0;
    while index < pieces.len() {
        let piece = pieces[index];
        if piece.contains('[') && !piece.contains(']') {
            // Gather up to the piece that closes the group (contains `]` and no `[`); an
            // unclosed group takes the rest of the list instead of failing.
            let mut end = index + 1;
            let closes_group = |piece: &str| piece.contains(']') && !piece.contains('[');
            while end < pieces.len() && !closes_group(pieces[end]) {
                end += 1;
            }
            let end = end.min(pieces.len() - 1);
            parts.push(pieces[index..=end].join(","));
            index = end + 1;
        } else {
            parts.push(piece.to_owned());
            index += 1;
        }
    }
    parts
}

fn expand_nodelist_part(part: &str, names: &mut Vec<String>, steps_left: &mut usize) {
    if names.len() >= MAX_EXPANDED_NODES || *steps_left == 0 {
        return;
    }
    *steps_left -= 1;
    if !part.contains('[') {
        names.push(quote_meta(part));
        return;
    }
    // The first `[...]` group, non-greedy as the reference's `\[(.*?)\]`.
    let Some(open) = part.find('[') else {
        return;
    };
    let Some(close_offset) = part[open..].find(']') else {
        return;
    };
    let group = &part[open..=open + close_offset];
    let inside = &group[1..group.len() - 1];
    for item in inside.split(',') {
        let mut bounds = item.split('-');
        let first_text = bounds.next().unwrap_or("");
        let last_text = bounds.next().unwrap_or(first_text);
        let (Ok(first), Ok(last)) = (first_text.parse::<i64>(), last_text.parse::<i64>()) else {
            continue;
        };
        let width = first_text.len();
        let mut number = first;
        while number <= last {
            if names.len() >= MAX_EXPANDED_NODES || *steps_left == 0 {
                return;
            }
            // Only this group (the first), so that an identical later group is expanded
            // on its own in the recursion.
            let name = part.replacen(group, &format!("{number:0width$}"), 1);
            expand_nodelist_part(&name, names, steps_left);
            let Some(next) = number.checked_add(1) else {
                break;
            };
            number = next;
        }
    }
}

/// Escapes regex metacharacters as Go's `regexp.QuoteMeta` does.
fn quote_meta(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(
            c,
            '\\' | '.' | '+' | '*' | '?' | '(' | ')' | '|' | '[' | ']' | '{' | '}' | '^' | '$'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The 1-based numbers of the non-blank lines of sacctmgr output that are no association
/// line at all (no `|`), and the count of non-blank lines.
pub fn unreadable_sacctmgr_lines(output: &str) -> (Vec<usize>, usize) {
    let mut unreadable = Vec::new();
    let mut non_blank = 0;
    for (index, line) in output.split('\n').enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        non_blank += 1;
        if !line.contains('|') {
            unreadable.push(index + 1);
        }
    }
    (unreadable, non_blank)
}

/// Parses `sacctmgr --parsable2 list associations format=Account,User` output.
///
/// Lines with fewer than two fields, with `root` as account or user, or with an empty one
/// are skipped. Users and projects come out sorted and unique, each with its sorted unique
/// members; `uid` empty, `tags` null, `cluster_id` left for the caller. The window-end
/// `last_updated_at` is not part of the model: the storage upsert takes it.
pub fn parse_sacctmgr_output(output: &str) -> (Vec<User>, Vec<Project>) {
    let mut projects_of_user: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut users_of_project: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for line in output.split('\n') {
        let fields: Vec<&str> = line.split('|').collect();
        if fields.len() < 2 {
            continue;
        }
        let (account, user) = (fields[0], fields[1]);
        if account == "root" || user == "root" || account.is_empty() || user.is_empty() {
            continue;
        }
        projects_of_user.entry(user).or_default().insert(account);
        users_of_project.entry(account).or_default().insert(user);
    }
    let users = projects_of_user
        .into_iter()
        .map(|(name, projects)| User {
            resource_manager: RESOURCE_MANAGER_SLURM.to_owned(),
            name: name.to_owned(),
            projects: List::from_strings(&projects.into_iter().collect::<Vec<_>>()),
            tags: List::default(),
            ..User::default()
        })
        .collect();
    let projects = users_of_project
        .into_iter()
        .map(|(name, users)| Project {
            resource_manager: RESOURCE_MANAGER_SLURM.to_owned(),
            name: name.to_owned(),
            users: List::from_strings(&users.into_iter().collect::<Vec<_>>()),
            tags: List::default(),
            ..Project::default()
        })
        .collect();
    (users, projects)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SACCT_22_05: &str =
        include_str!("../../../tests/fixtures/sacct/sacct-22.05-no-offset.txt");
    const SACCT_OFFSETS: &str = include_str!("../../../tests/fixtures/sacct/sacct-offsets.txt");
    const SACCTMGR: &str = include_str!("../../../tests/fixtures/sacct/sacctmgr-associations.txt");

    const WINDOW_START_MS: i64 = 1_795_338_000_000;
    const WINDOW_END_MS: i64 = 1_795_338_900_000;

    fn paris() -> Tz {
        "Europe/Paris".parse().expect("known zone")
    }

    /// 2026-11-22T10:00:00+0100 to 10:15:00+0100, rendered in Paris.
    fn window() -> Window {
        Window::new(WINDOW_START_MS, WINDOW_END_MS, paris())
    }

    fn times(unit: &Unit) -> String {
        unit.metrics.total_time_seconds.to_string()
    }

    fn unit<'a>(parsed: &'a ParsedUnits, uuid: &str) -> &'a Unit {
        parsed
            .units
            .iter()
            .find(|unit| unit.uuid == uuid)
            .unwrap_or_else(|| panic!("unit {uuid} missing"))
    }

    #[test]
    fn sacct_command_line_is_the_reference_one() {
        assert_eq!(
            sacct_arguments("2026-11-22T10:00:00", "2026-11-22T10:15:00").join(" "),
            "-D -X --noheader --allusers --parsable2 --format \
             jobidraw,partition,qos,account,group,gid,user,uid,submit,start,end,elapsed,\
             elapsedraw,exitcode,state,alloctres,nodelist,jobname,workdir --state \
             CANCELLED,COMPLETED,FAILED,NODE_FAIL,PREEMPTED,TIMEOUT,RUNNING \
             --starttime 2026-11-22T10:00:00 --endtime 2026-11-22T10:15:00"
        );
        assert_eq!(
            sacct_environment(),
            vec![(
                "SLURM_TIME_FORMAT".to_owned(),
                "%Y-%m-%dT%H:%M:%S%z".to_owned()
            )]
        );
        assert_eq!(
            sacctmgr_arguments().join(" "),
            "--parsable2 --noheader list associations format=Account,User"
        );
    }

    #[test]
    fn sacct_22_05_output_without_offsets_gives_every_field() {
        let parsed = parse_sacct_output(SACCT_22_05, &window(), Tz::UTC);
        let uuids: Vec<&str> = parsed.units.iter().map(|unit| unit.uuid.as_str()).collect();
        assert_eq!(
            uuids,
            ["4001", "4002", "4003", "4004", "4005", "4007", "4009"]
        );
        let skipped: Vec<(usize, SkipReason)> = parsed
            .skipped
            .iter()
            .map(|line| (line.line_number, line.reason.clone()))
            .collect();
        assert_eq!(
            skipped,
            vec![
                (2, SkipReason::JobStep),
                (3, SkipReason::JobStep),
                (8, SkipReason::JobStep),
                (9, SkipReason::NeverRan),
                (11, SkipReason::TooFewFields { found: 1 }),
                (12, SkipReason::TooFewFields { found: 4 }),
            ]
        );

        // Started before the window, ended inside it: clipped at the window start.
        let completed = unit(&parsed, "4001");
        assert_eq!(
            completed,
            &Unit {
                resource_manager: "slurm".into(),
                uuid: "4001".into(),
                name: "sim_a".into(),
                project: "acc1".into(),
                groupname: "grp1".into(),
                username: "usr1".into(),
                created_at: "2026-11-22T09:50:00+0100".into(),
                started_at: "2026-11-22T09:55:00+0100".into(),
                ended_at: "2026-11-22T10:10:30+0100".into(),
                created_at_ts: 1_795_337_400_000,
                started_at_ts: 1_795_337_700_000,
                ended_at_ts: 1_795_338_630_000,
                elapsed: "00:15:30".into(),
                state: "COMPLETED".into(),
                allocation: Generic::decode(
                    r#"{"billing":16,"cpus":16,"gpus":0,"mem":68719476736,"nodes":3}"#
                )
                .unwrap(),
                metrics: Metrics {
                    total_time_seconds: MetricMap::decode(
                        r#"{"alloc_cpumemtime":41287680,"alloc_cputime":10080,"alloc_gpumemtime":0,"alloc_gputime":0,"walltime":630}"#
                    )
                    .unwrap(),
                    ..Metrics::default()
                },
                tags: Generic::decode(
                    r#"{"exit_code":"0:0","gid":1000,"nodelist":"compute-[0-1,3]","nodelistexp":"compute-0|compute-1|compute-3","partition":"cpu","qos":"normal","uid":1000,"workdir":"/home/usr1/sim"}"#
                )
                .unwrap(),
                ..Unit::default()
            }
        );
        assert_eq!(
            completed.tags.as_json(),
            r#"{"exit_code":"0:0","gid":1000,"nodelist":"compute-[0-1,3]","nodelistexp":"compute-0|compute-1|compute-3","partition":"cpu","qos":"normal","uid":1000,"workdir":"/home/usr1/sim"}"#
        );

        // Running GPU job started inside the window: 10:02 to the window end, 780 s;
        // two GPUs (not the 40 of gres/gpumem=40G); 320.5 GiB kept exactly.
        let running = unit(&parsed, "4002");
        assert_eq!(running.created_at, "2026-11-22T10:01:00+0100");
        assert_eq!(running.created_at_ts, 1_795_338_060_000);
        assert_eq!(running.started_at, "2026-11-22T10:02:00+0100");
        assert_eq!(running.started_at_ts, 1_795_338_120_000);
        assert_eq!(running.ended_at, "Unknown");
        assert_eq!(running.ended_at_ts, 0);
        assert_eq!(running.elapsed, "00:13:00");
        assert_eq!(running.state, "RUNNING");
        assert_eq!(running.name, "train.py");
        assert_eq!(
            running.allocation.as_json(),
            r#"{"billing":32,"cpus":8,"gpus":2,"mem":344134254592,"nodes":2}"#
        );
        assert_eq!(
            times(running),
            r#"{"alloc_cpumemtime":255989760,"alloc_cputime":6240,"alloc_gpumemtime":780,"alloc_gputime":1560,"walltime":780}"#
        );
        assert_eq!(
            running.tags.as_json(),
            r#"{"exit_code":"0:0","gid":1001,"nodelist":"gpu-n[001-002]","nodelistexp":"gpu-n001|gpu-n002","partition":"gpu","qos":"high","uid":1001,"workdir":"/scratch/usr2/run"}"#
        );

        // Failed, memory without unit is megabytes: 2000 MiB.
        let failed = unit(&parsed, "4003");
        assert_eq!(failed.state, "FAILED");
        assert_eq!(
            failed.allocation.as_json(),
            r#"{"billing":4,"cpus":4,"gpus":0,"mem":2097152000,"nodes":1}"#
        );
        assert_eq!(
            times(failed),
            r#"{"alloc_cpumemtime":600000,"alloc_cputime":1200,"alloc_gpumemtime":0,"alloc_gputime":0,"walltime":300}"#
        );

        // Finished before the window: the reference counts its own start and end.
        let cancelled = unit(&parsed, "4004");
        assert_eq!(cancelled.state, "CANCELLED by 1002");
        assert_eq!(cancelled.started_at, "2026-11-22T08:00:05+0100");
        assert_eq!(cancelled.ended_at_ts, 1_795_334_405_000);
        assert_eq!(
            times(cancelled),
            r#"{"alloc_cpumemtime":1843200,"alloc_cputime":3600,"alloc_gpumemtime":0,"alloc_gputime":0,"walltime":3600}"#
        );

        // Timeout ten seconds into the window, 1.5 TiB on two bracket groups.
        let timeout = unit(&parsed, "4005");
        assert_eq!(timeout.state, "TIMEOUT");
        assert_eq!(timeout.elapsed, "1-00:00:00");
        assert_eq!(
            timeout.allocation.as_json(),
            r#"{"billing":64,"cpus":64,"gpus":0,"mem":1649267441664,"nodes":4}"#
        );
        assert_eq!(
            times(timeout),
            r#"{"alloc_cpumemtime":15728640,"alloc_cputime":640,"alloc_gpumemtime":0,"alloc_gputime":0,"walltime":10}"#
        );
        assert!(timeout
            .tags
            .as_json()
            .contains(r#""nodelistexp":"node01|node02|big8|big9""#));

        // Not started yet: no time at all.
        let starting = unit(&parsed, "4007");
        assert_eq!(starting.started_at, "Unknown");
        assert_eq!(starting.started_at_ts, 0);
        assert_eq!(
            times(starting),
            r#"{"alloc_cpumemtime":0,"alloc_cputime":0,"alloc_gpumemtime":0,"alloc_gputime":0,"walltime":0}"#
        );

        // Garbage in every field: kept as text, numbers 0, no panic.
        let garbage = unit(&parsed, "4009");
        assert_eq!(garbage.created_at, "garbage");
        assert_eq!(garbage.started_at, "2026-13-45T99:00:00");
        assert_eq!(garbage.ended_at, "-");
        assert_eq!(
            (
                garbage.created_at_ts,
                garbage.started_at_ts,
                garbage.ended_at_ts
            ),
            (0, 0, 0)
        );
        assert_eq!(
            garbage.allocation.as_json(),
            r#"{"billing":0,"cpus":0,"gpus":0,"mem":0,"nodes":0}"#
        );
        assert_eq!(
            garbage.tags.as_json(),
            r#"{"exit_code":"0:0","gid":0,"nodelist":"n[5-x]","nodelistexp":"","partition":"cpu","qos":"normal","uid":0,"workdir":"/w"}"#
        );
        assert_eq!(
            times(garbage),
            r#"{"alloc_cpumemtime":0,"alloc_cputime":0,"alloc_gpumemtime":0,"alloc_gputime":0,"walltime":0}"#
        );
    }

    #[test]
    fn sacct_output_with_offsets_is_read_in_its_own_offset_and_truncated() {
        // Half a second into the hour, so the clipped walltime has to truncate.
        let window = Window::new(WINDOW_START_MS + 500, WINDOW_END_MS, paris());
        let new_york: Tz = "America/New_York".parse().expect("known zone");
        let parsed = parse_sacct_output(SACCT_OFFSETS, &window, new_york);
        let uuids: Vec<&str> = parsed.units.iter().map(|unit| unit.uuid.as_str()).collect();
        assert_eq!(uuids, ["5001", "5002", "5003"]);
        assert_eq!(
            parsed.skipped,
            vec![
                SkippedLine {
                    line_number: 2,
                    reason: SkipReason::JobStep
                },
                SkippedLine {
                    line_number: 3,
                    reason: SkipReason::JobStep
                },
            ]
        );

        // Started before the window, ended at 10:14:59: 898.5 s, truncated to 898.
        let gpu = unit(&parsed, "5001");
        assert_eq!(gpu.created_at, "2026-11-22T09:58:00+0100");
        assert_eq!(gpu.created_at_ts, 1_795_337_880_000);
        assert_eq!(gpu.started_at, "2026-11-22T09:59:00+0100");
        assert_eq!(gpu.started_at_ts, 1_795_337_940_000);
        assert_eq!(gpu.ended_at, "2026-11-22T10:14:59+0100");
        assert_eq!(gpu.ended_at_ts, 1_795_338_899_000);
        assert_eq!(gpu.name, "job&<x>");
        assert_eq!(
            gpu.allocation.as_json(),
            r#"{"billing":10,"cpus":10,"gpus":4,"mem":107374182400,"nodes":1}"#
        );
        assert_eq!(
            times(gpu),
            r#"{"alloc_cpumemtime":91955200,"alloc_cputime":8980,"alloc_gpumemtime":898,"alloc_gputime":3592,"walltime":898}"#
        );
        assert_eq!(
            gpu.tags.as_json(),
            r#"{"exit_code":"0:0","gid":1001,"nodelist":"gpu-n003","nodelistexp":"gpu-n003","partition":"gpu","qos":"normal","uid":1001,"workdir":"/scratch/a\u0026b"}"#
        );

        // 1024K is one MiB: cpumemtime equals walltime.
        let interactive = unit(&parsed, "5002");
        assert_eq!(
            times(interactive),
            r#"{"alloc_cpumemtime":30,"alloc_cputime":60,"alloc_gpumemtime":0,"alloc_gputime":0,"walltime":30}"#
        );

        // Starting after the window end counts negative, as the reference does.
        let late = unit(&parsed, "5003");
        assert_eq!(late.started_at_ts, 1_795_338_960_000);
        assert_eq!(
            times(late),
            r#"{"alloc_cpumemtime":-61440,"alloc_cputime":-60,"alloc_gpumemtime":0,"alloc_gputime":0,"walltime":-60}"#
        );
    }

    #[test]
    fn fake_sacct_job_keeps_its_fractional_memory() {
        // The TRES of the e2e fake job 1481508, 497 s inside the window. The reference
        // stores mem 343597383680 and cpumemtime 162856960 (320 GiB); we keep 320.5 GiB.
        let line = "1481508|part1|qos1|acc1|grp|1000|usr2|1000|2026-11-22T10:00:00+0100|\
                    2026-11-22T10:01:00+0100|2026-11-22T10:09:17+0100|00:08:17|497|0:0|\
                    COMPLETED|billing=160,cpu=16,gres/gpu=0,mem=320.5G,node=2|compute-[0-2]|\
                    test_script2|/home/usr2";
        let parsed = parse_sacct_output(line, &window(), Tz::UTC);
        assert!(parsed.skipped.is_empty());
        let job = unit(&parsed, "1481508");
        assert_eq!(
            job.allocation.as_json(),
            r#"{"billing":160,"cpus":16,"gpus":0,"mem":344134254592,"nodes":2}"#
        );
        assert_eq!(
            times(job),
            r#"{"alloc_cpumemtime":163111424,"alloc_cputime":7952,"alloc_gpumemtime":0,"alloc_gputime":0,"walltime":497}"#
        );
    }

    #[test]
    fn zone_less_times_are_read_in_the_sacct_zone() {
        assert_eq!(
            parse_sacct_time("2026-11-22T10:00:00", Tz::UTC, paris()),
            ("2026-11-22T09:00:00+0000".to_owned(), 1_795_338_000_000)
        );
        assert_eq!(
            parse_sacct_time("2026-11-22T10:00:00+0100", Tz::UTC, Tz::UTC),
            ("2026-11-22T09:00:00+0000".to_owned(), 1_795_338_000_000)
        );
        assert_eq!(
            parse_sacct_time("Unknown", Tz::UTC, Tz::UTC),
            ("Unknown".to_owned(), 0)
        );
        assert_eq!(parse_sacct_time("", Tz::UTC, Tz::UTC), (String::new(), 0));
    }

    #[test]
    fn walltime_follows_the_reference_marks() {
        let window = &Window::new(10_000, 20_000, Tz::UTC);
        assert_eq!(walltime_in_window(0, 15_000, window), 0);
        assert_eq!(walltime_in_window(1_000, 5_500, window), 4);
        assert_eq!(walltime_in_window(5_000, 0, window), 10);
        assert_eq!(walltime_in_window(12_000, 0, window), 8);
        assert_eq!(walltime_in_window(12_000, 19_999, window), 7);
        assert_eq!(walltime_in_window(12_000, 25_000, window), 8);
        assert_eq!(walltime_in_window(21_500, 0, window), -1);
    }

    #[test]
    fn memory_units_and_fractions() {
        assert_eq!(parse_memory_bytes("512K"), 524_288);
        assert_eq!(parse_memory_bytes("200M"), 209_715_200);
        assert_eq!(parse_memory_bytes("200"), 209_715_200);
        assert_eq!(parse_memory_bytes("320.5G"), 344_134_254_592);
        assert_eq!(parse_memory_bytes("2T"), 2_199_023_255_552);
        assert_eq!(parse_memory_bytes("1P"), 1_125_899_906_842_624);
        assert_eq!(parse_memory_bytes("0.1K"), 102);
        assert_eq!(parse_memory_bytes(""), 0);
        assert_eq!(parse_memory_bytes("G"), 0);
        assert_eq!(parse_memory_bytes("1.2.3G"), 0);
        assert_eq!(parse_memory_bytes("99999999999999999999P"), i64::MAX);
    }

    #[test]
    fn gpus_come_only_from_gpu_counts() {
        let resources =
            AllocatedResources::parse("billing=8,cpu=4,gres/gpu:a100=2,gres/gpumem=40G,mem=1G");
        assert_eq!(resources.gpus, 2);
        assert_eq!(AllocatedResources::parse("gres/gpumem=40G").gpus, 0);
        assert_eq!(
            AllocatedResources::parse("gres/gpu:1g.10gb=3,gres/gpu=3").gpus,
            3
        );
        assert_eq!(AllocatedResources::parse("gres/gpu=x").gpus, 0);
        assert_eq!(
            AllocatedResources::parse("billing,cpu,node=,mem"),
            AllocatedResources::default()
        );
    }

    #[test]
    fn nodelists_expand_like_the_reference() {
        assert_eq!(
            expand_nodelist("compute-[0-2]"),
            ["compute-0", "compute-1", "compute-2"]
        );
        assert_eq!(expand_nodelist("n[001-002]"), ["n001", "n002"]);
        assert_eq!(expand_nodelist("a[0-1,3],b2"), ["a0", "a1", "a3", "b2"]);
        assert_eq!(
            expand_nodelist("a[8-10]x[1-2]"),
            ["a8x1", "a8x2", "a9x1", "a9x2", "a10x1", "a10x2"]
        );
        // Two groups give their product, even with the same text (the reference got
        // r1c1|r2c2).
        assert_eq!(
            expand_nodelist("r[1-2]c[1-2]"),
            ["r1c1", "r1c2", "r2c1", "r2c2"]
        );
        assert_eq!(
            expand_nodelist("r[1-2]c[1-2],x[1-2]y[3]"),
            ["r1c1", "r1c2", "r2c1", "r2c2", "x1y3", "x2y3"]
        );
        // The product is bounded too.
        assert_eq!(
            expand_nodelist("r[0-99999]c[0-99999]").len(),
            MAX_EXPANDED_NODES
        );
        assert_eq!(
            expand_nodelist("gpu.node+1,a(b)"),
            [r"gpu\.node\+1", r"a\(b\)"]
        );
        assert_eq!(expand_nodelist(""), [""]);
        // An unclosed group takes the rest of the list and gives nothing; no panic.
        assert_eq!(expand_nodelist("a[1-2,b1"), Vec::<String>::new());
        assert_eq!(expand_nodelist("c1,a[x-y]"), ["c1"]);
        assert_eq!(
            expand_nodelist("n[0-99999999999]").len(),
            MAX_EXPANDED_NODES
        );
        assert!(expand_nodelist("n[0-99999999999][x]").is_empty());
        assert_eq!(
            expand_nodelist(&format!("n[{}-{}]", i64::MAX - 1, i64::MAX)).len(),
            2
        );
    }

    #[test]
    fn sacctmgr_associations_give_sorted_users_and_projects() {
        let (users, projects) = parse_sacctmgr_output(SACCTMGR);
        let users: Vec<(String, String, String)> = users
            .iter()
            .map(|user| {
                (
                    user.name.clone(),
                    user.projects.as_json().to_owned(),
                    user.tags.as_json().to_owned(),
                )
            })
            .collect();
        assert_eq!(
            users,
            [
                ("usr1".into(), r#"["acc1"]"#.into(), "null".into()),
                ("usr2".into(), r#"["acc1","acc2"]"#.into(), "null".into()),
                ("usr3".into(), r#"["acc3"]"#.into(), "null".into()),
            ]
        );
        let projects: Vec<(String, String, String)> = projects
            .iter()
            .map(|project| {
                (
                    project.name.clone(),
                    project.users.as_json().to_owned(),
                    project.tags.as_json().to_owned(),
                )
            })
            .collect();
        assert_eq!(
            projects,
            [
                ("acc1".into(), r#"["usr1","usr2"]"#.into(), "null".into()),
                ("acc2".into(), r#"["usr2"]"#.into(), "null".into()),
                ("acc3".into(), r#"["usr3"]"#.into(), "null".into()),
            ]
        );
        assert!(parse_sacctmgr_output("").0.is_empty());
        // Only `garbage` (line 11) has no `|`; the blank last line is not counted.
        assert_eq!(unreadable_sacctmgr_lines(SACCTMGR), (vec![11], 13));
    }

    #[test]
    fn a_line_whose_job_id_is_no_number_is_no_sacct_line() {
        let header = SACCT_FIELDS.join("|");
        let parsed = parse_sacct_output(&header, &window(), Tz::UTC);
        assert!(parsed.units.is_empty());
        assert_eq!(
            parsed.skipped,
            vec![SkippedLine {
                line_number: 1,
                reason: SkipReason::InvalidJobId
            }]
        );
        let empty_id = format!("{}|", "|".repeat(SACCT_FIELDS.len() - 1));
        let parsed = parse_sacct_output(&empty_id, &window(), Tz::UTC);
        assert_eq!(parsed.skipped[0].reason, SkipReason::InvalidJobId);
        assert!(!SkipReason::InvalidJobId.is_known_skip());
        assert!(!SkipReason::TooFewFields { found: 3 }.is_known_skip());
        assert!(SkipReason::JobStep.is_known_skip());
        assert!(SkipReason::NeverRan.is_known_skip());
    }

    mod arbitrary_input {
        use super::*;
        use proptest::prelude::*;

        /// Lines made of sacct-like pieces, so that many reach the field parsers.
        fn sacct_like_line() -> impl Strategy<Value = String> {
            let field = prop_oneof![
                Just(String::new()),
                "[0-9]{1,25}",
                "[0-9]{1,6}\\.[a-z0-9]{1,5}",
                "20[0-9]{2}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}([+-][0-9]{4})?",
                "(billing|cpu|node|mem|gres/gpu(:[a-z0-9]{1,4})?|gres/gpumem)(=[0-9.]{0,25}[KMGTP]?)?(,(cpu|mem)=[0-9.]{0,8}[KMGTPx]?){0,3}",
                // Short numbers: the size bound has its own test, big ranges only slow
                // this one down.
                "[a-z]{0,3}(\\[([0-9]{1,2}|[,\\-\\[\\]]){0,6}\\]?)?[a-z0-9]{0,3}(,[a-z]{0,2}\\[[0-9]{1,2}(-[0-9]{1,2})?\\]){0,2}",
                "None assigned",
                "\\PC{0,12}",
            ];
            proptest::collection::vec(field, 0..24).prop_map(|fields| fields.join("|"))
        }

        proptest! {
            // Each case builds whole units (JSON maps, nodelists): fewer cases keep it quick.
            #![proptest_config(ProptestConfig::with_cases(96))]

            #[test]
            fn sacct_parser_never_panics_on_any_text(text in "\\PC{0,400}") {
                let parsed = parse_sacct_output(&text, &window(), paris());
                let non_blank = text.split('\n').filter(|line| !line.trim().is_empty()).count();
                prop_assert_eq!(parsed.units.len() + parsed.skipped.len(), non_blank);
            }

            #[test]
            fn sacct_parser_never_panics_on_sacct_like_lines(
                lines in proptest::collection::vec(sacct_like_line(), 0..6)
            ) {
                let output = lines.join("\n");
                let parsed = parse_sacct_output(&output, &window(), Tz::UTC);
                for unit in &parsed.units {
                    prop_assert!(unit.uuid.bytes().all(|byte| byte.is_ascii_digit()));
                    prop_assert!(!unit.uuid.is_empty());
                }
            }

            #[test]
            fn nodelist_expansion_is_bounded(nodelist in "[a-z0-9,\\[\\]\\-]{0,40}") {
                prop_assert!(expand_nodelist(&nodelist).len() <= MAX_EXPANDED_NODES);
            }

            #[test]
            fn sacctmgr_parser_never_panics(text in "\\PC{0,300}") {
                let (users, projects) = parse_sacctmgr_output(&text);
                let (unreadable, non_blank) = unreadable_sacctmgr_lines(&text);
                prop_assert!(unreadable.len() <= non_blank);
                for user in &users {
                    prop_assert!(!user.name.is_empty() && user.name != "root");
                }
                for project in &projects {
                    prop_assert!(!project.name.is_empty() && project.name != "root");
                }
            }
        }
    }
}
