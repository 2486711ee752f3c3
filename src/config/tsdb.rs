//! The TSDB updater's `extra_config`: batching knobs, deletion settings and the PromQL
//! query templates, each template parsed at load so a typo fails the start, not a query.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use super::duration::{format_go_duration, format_prometheus_duration};
use super::node::{optional_field, Node};
use super::ConfigError;

pub const DEFAULT_QUERY_MAX_SERIES: u64 = 50;
pub const DEFAULT_QUERY_MIN_SAMPLES: f64 = 0.5;

/// `updaters[].extra_config` of a `tsdb` updater.
#[derive(Debug, Clone, PartialEq)]
pub struct TsdbUpdaterConfig {
    /// Series used by all queries together, for the batch size; > 0 (0 reads as 50).
    pub query_max_series: u64,
    /// Share of the TSDB's max samples the updater may use; in (0, 1] (0 reads as 0.5).
    pub query_min_samples: f64,
    /// Units that lived less than this are marked ignored.
    pub cutoff_duration: Duration,
    pub delete_ignored: bool,
    /// Series matchers to delete every update.
    pub labels_to_drop: Vec<String>,
    /// metric → submetric → query; the built-in set when the config gives none (a given
    /// map replaces it whole, no merge).
    pub queries: BTreeMap<String, BTreeMap<String, QueryTemplate>>,
}

impl Default for TsdbUpdaterConfig {
    fn default() -> Self {
        Self {
            query_max_series: DEFAULT_QUERY_MAX_SERIES,
            query_min_samples: DEFAULT_QUERY_MIN_SAMPLES,
            cutoff_duration: Duration::ZERO,
            delete_ignored: false,
            labels_to_drop: Vec::new(),
            queries: default_queries(),
        }
    }
}

/// A variable a query template may use as `{{.Name}}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateVariable {
    /// The batch's uuids joined by `|`.
    Uuids,
    /// The window length, Go duration string.
    Range,
    ScrapeInterval,
    ScrapeIntervalMilli,
    EvaluationInterval,
    EvaluationIntervalMilli,
    RateInterval,
}

impl TemplateVariable {
    pub const ALL: [TemplateVariable; 7] = [
        TemplateVariable::Uuids,
        TemplateVariable::Range,
        TemplateVariable::ScrapeInterval,
        TemplateVariable::ScrapeIntervalMilli,
        TemplateVariable::EvaluationInterval,
        TemplateVariable::EvaluationIntervalMilli,
        TemplateVariable::RateInterval,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TemplateVariable::Uuids => "UUIDs",
            TemplateVariable::Range => "Range",
            TemplateVariable::ScrapeInterval => "ScrapeInterval",
            TemplateVariable::ScrapeIntervalMilli => "ScrapeIntervalMilli",
            TemplateVariable::EvaluationInterval => "EvaluationInterval",
            TemplateVariable::EvaluationIntervalMilli => "EvaluationIntervalMilli",
            TemplateVariable::RateInterval => "RateInterval",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|variable| variable.name() == name)
    }
}

/// The values a template is rendered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateValues {
    pub uuids: String,
    pub range: Duration,
    pub scrape_interval: Duration,
    pub evaluation_interval: Duration,
    pub rate_interval: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum TemplatePart {
    Text(String),
    Variable(TemplateVariable),
}

/// A PromQL query template: text and `{{.Name}}` substitutions (the subset of Go's
/// text/template that query configs use; trim markers `{{- ... -}}` and comments are
/// understood too).
#[derive(Clone, PartialEq, Eq)]
pub struct QueryTemplate {
    source: String,
    parts: Vec<TemplatePart>,
}

impl fmt::Debug for QueryTemplate {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{:?}", self.source)
    }
}

impl QueryTemplate {
    pub fn parse(source: &str) -> Result<Self, String> {
        let mut parts: Vec<TemplatePart> = Vec::new();
        let mut rest = source;
        let mut trim_next_text = false;
        loop {
            let (text, after_text) = match rest.find("{{") {
                Some(start) => (&rest[..start], Some(&rest[start + 2..])),
                None => (rest, None),
            };
            let text = if trim_next_text {
                text.trim_start()
            } else {
                text
            };
            let Some(action_and_rest) = after_text else {
                push_text(&mut parts, text);
                break;
            };
            let end = action_and_rest
                .find("}}")
                .ok_or_else(|| format!("unclosed action in template {source:?}"))?;
            let raw_action = &action_and_rest[..end];
            rest = &action_and_rest[end + 2..];

            // Go reads "{{- " and " -}}" (with the space) as trim markers.
            let (trim_before, action) = match raw_action.strip_prefix("- ") {
                Some(action) => (true, action),
                None => (false, raw_action),
            };
            let (trim_after, action) = match action.strip_suffix(" -") {
                Some(action) => (true, action),
                None => (false, action),
            };
            push_text(&mut parts, if trim_before { text.trim_end() } else { text });
            trim_next_text = trim_after;

            let action = action.trim();
            if action.starts_with("/*") && action.ends_with("*/") && action.len() >= 4 {
                continue;
            }
            let variable = action
                .strip_prefix('.')
                .and_then(TemplateVariable::from_name)
                .ok_or_else(|| {
                    let supported: Vec<String> = TemplateVariable::ALL
                        .iter()
                        .map(|variable| format!("{{{{.{}}}}}", variable.name()))
                        .collect();
                    format!(
                        "unsupported template action {{{{{raw_action}}}}} (supported: {})",
                        supported.join(", ")
                    )
                })?;
            parts.push(TemplatePart::Variable(variable));
        }
        Ok(Self {
            source: source.to_owned(),
            parts,
        })
    }

    /// The template as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The variables used, in order of appearance.
    pub fn variables(&self) -> impl Iterator<Item = TemplateVariable> + '_ {
        self.parts.iter().filter_map(|part| match part {
            TemplatePart::Variable(variable) => Some(*variable),
            TemplatePart::Text(_) => None,
        })
    }

    /// The query: durations as Go duration strings, `*Milli` as integer milliseconds.
    pub fn render(&self, values: &TemplateValues) -> String {
        self.render_parts(values, None)
    }

    /// Like [`render`](Self::render), except that a `{{.Range}}` opening a subquery (directly
    /// followed by `:`, as in `[{{.Range}}:{{.ScrapeInterval}}]`) is written as
    /// `subquery_range` in Prometheus' notation (`59m59s999ms`: Prometheus does not read
    /// Go's `59m59.999s`).
    pub fn render_with_subquery_range(
        &self,
        values: &TemplateValues,
        subquery_range: Duration,
    ) -> String {
        self.render_parts(values, Some(subquery_range))
    }

    fn render_parts(&self, values: &TemplateValues, subquery_range: Option<Duration>) -> String {
        let mut query = String::with_capacity(self.source.len() + values.uuids.len());
        for (index, part) in self.parts.iter().enumerate() {
            let opens_subquery = || matches!(self.parts.get(index + 1), Some(TemplatePart::Text(text)) if text.starts_with(':'));
            match part {
                TemplatePart::Text(text) => query.push_str(text),
                TemplatePart::Variable(variable) => query.push_str(&match variable {
                    TemplateVariable::Uuids => values.uuids.clone(),
                    TemplateVariable::Range => match subquery_range {
                        Some(range) if opens_subquery() => format_prometheus_duration(range),
                        _ => format_go_duration(values.range),
                    },
                    TemplateVariable::ScrapeInterval => format_go_duration(values.scrape_interval),
                    TemplateVariable::ScrapeIntervalMilli => {
                        values.scrape_interval.as_millis().to_string()
                    }
                    TemplateVariable::EvaluationInterval => {
                        format_go_duration(values.evaluation_interval)
                    }
                    TemplateVariable::EvaluationIntervalMilli => {
                        values.evaluation_interval.as_millis().to_string()
                    }
                    TemplateVariable::RateInterval => format_go_duration(values.rate_interval),
                }),
            }
        }
        query
    }
}

fn push_text(parts: &mut Vec<TemplatePart>, text: &str) {
    if !text.is_empty() {
        parts.push(TemplatePart::Text(text.to_owned()));
    }
}

/// The reference's built-in queries, used when an updater configures none.
const DEFAULT_QUERIES: [(&str, &str, &str); 20] = [
    (
        "avg_cpu_usage",
        "global",
        "avg_over_time(avg by (uuid) (uuid:ceems_cpu_usage:ratio_irate{uuid=~\"{{.UUIDs}}\"} >= 0 < inf)[{{.Range}}:])",
    ),
    (
        "avg_cpu_mem_usage",
        "global",
        "avg_over_time(avg by (uuid) (uuid:ceems_cpu_memory_usage:ratio{uuid=~\"{{.UUIDs}}\"} >= 0 < inf)[{{.Range}}:])",
    ),
    (
        "total_cpu_energy_usage_kwh",
        "total",
        "sum_over_time(sum by (uuid) (uuid:ceems_host_power_watts:pue{uuid=~\"{{.UUIDs}}\"} >= 0 < inf)[{{.Range}}:{{.ScrapeInterval}}]) * {{.ScrapeIntervalMilli}} / 3.6e9",
    ),
    (
        "total_cpu_emissions_gms",
        "rte_total",
        "sum_over_time(sum by (uuid) (uuid:ceems_host_emissions_g_s:pue{uuid=~\"{{.UUIDs}}\",provider=\"rte\"} >= 0 < inf)[{{.Range}}:{{.ScrapeInterval}}]) * {{.ScrapeIntervalMilli}} / 1e3",
    ),
    (
        "total_cpu_emissions_gms",
        "emaps_total",
        "sum_over_time(sum by (uuid) (uuid:ceems_host_emissions_g_s:pue{uuid=~\"{{.UUIDs}}\",provider=\"emaps\"} >= 0 < inf)[{{.Range}}:{{.ScrapeInterval}}]) * {{.ScrapeIntervalMilli}} / 1e3",
    ),
    (
        "total_cpu_emissions_gms",
        "owid_total",
        "sum_over_time(sum by (uuid) (uuid:ceems_host_emissions_g_s:pue{uuid=~\"{{.UUIDs}}\",provider=\"owid\"} >= 0 < inf)[{{.Range}}:{{.ScrapeInterval}}]) * {{.ScrapeIntervalMilli}} / 1e3",
    ),
    (
        "avg_gpu_usage",
        "global",
        "avg_over_time(avg by (uuid) (uuid:ceems_gpu_usage:ratio{uuid=~\"{{.UUIDs}}\"} >= 0 < inf)[{{.Range}}:])",
    ),
    (
        "avg_gpu_mem_usage",
        "global",
        "avg_over_time(avg by (uuid) (uuid:ceems_gpu_memory_usage:ratio{uuid=~\"{{.UUIDs}}\"} >= 0 < inf)[{{.Range}}:])",
    ),
    (
        "total_gpu_energy_usage_kwh",
        "total",
        "sum_over_time(sum by (uuid) (uuid:ceems_gpu_power_watts:pue{uuid=~\"{{.UUIDs}}\"} >= 0 < inf)[{{.Range}}:{{.ScrapeInterval}}]) * {{.ScrapeIntervalMilli}} / 3.6e9",
    ),
    (
        "total_gpu_emissions_gms",
        "rte_total",
        "sum_over_time(sum by (uuid) (uuid:ceems_gpu_emissions_g_s:pue{uuid=~\"{{.UUIDs}}\",provider=\"rte\"} >= 0 < inf)[{{.Range}}:{{.ScrapeInterval}}]) * {{.ScrapeIntervalMilli}} / 1e3",
    ),
    (
        "total_gpu_emissions_gms",
        "emaps_total",
        "sum_over_time(sum by (uuid) (uuid:ceems_gpu_emissions_g_s:pue{uuid=~\"{{.UUIDs}}\",provider=\"emaps\"} >= 0 < inf)[{{.Range}}:{{.ScrapeInterval}}]) * {{.ScrapeIntervalMilli}} / 1e3",
    ),
    (
        "total_gpu_emissions_gms",
        "owid_total",
        "sum_over_time(sum by (uuid) (uuid:ceems_gpu_emissions_g_s:pue{uuid=~\"{{.UUIDs}}\",provider=\"owid\"} >= 0 < inf)[{{.Range}}:{{.ScrapeInterval}}]) * {{.ScrapeIntervalMilli}} / 1e3",
    ),
    (
        "total_io_write_stats",
        "bytes_total",
        "sum by (uuid) (increase(ceems_ebpf_write_bytes_total{uuid=~\"{{.UUIDs}}\"}[{{.Range}}]) >= 0 < inf)",
    ),
    (
        "total_io_write_stats",
        "requests_total",
        "sum by (uuid) (increase(ceems_ebpf_write_requests_total{uuid=~\"{{.UUIDs}}\"}[{{.Range}}]) >= 0 < inf)",
    ),
    (
        "total_io_write_stats",
        "errors_total",
        "sum by (uuid) (increase(ceems_ebpf_write_errors_total{uuid=~\"{{.UUIDs}}\"}[{{.Range}}]) >= 0 < inf)",
    ),
    (
        "total_io_read_stats",
        "bytes_total",
        "sum by (uuid) (increase(ceems_ebpf_read_bytes_total{uuid=~\"{{.UUIDs}}\"}[{{.Range}}]) >= 0 < inf)",
    ),
    (
        "total_io_read_stats",
        "requests_total",
        "sum by (uuid) (increase(ceems_ebpf_read_requests_total{uuid=~\"{{.UUIDs}}\"}[{{.Range}}]) >= 0 < inf)",
    ),
    (
        "total_io_read_stats",
        "errors_total",
        "sum by (uuid) (increase(ceems_ebpf_read_errors_total{uuid=~\"{{.UUIDs}}\"}[{{.Range}}]) >= 0 < inf)",
    ),
    (
        "total_ingress_stats",
        "bytes_total",
        "sum by (uuid) (increase(ceems_ebpf_ingress_bytes_total{uuid=~\"{{.UUIDs}}\"}[{{.Range}}]) >= 0 < inf)",
    ),
    (
        "total_egress_stats",
        "bytes_total",
        "sum by (uuid) (increase(ceems_ebpf_egress_bytes_total{uuid=~\"{{.UUIDs}}\"}[{{.Range}}]) >= 0 < inf)",
    ),
];

/// The built-in query set.
pub fn default_queries() -> BTreeMap<String, BTreeMap<String, QueryTemplate>> {
    let mut queries: BTreeMap<String, BTreeMap<String, QueryTemplate>> = BTreeMap::new();
    for (metric, submetric, source) in DEFAULT_QUERIES {
        // The built-in sources are constants covered by a test: parse cannot fail.
        if let Ok(template) = QueryTemplate::parse(source) {
            queries
                .entry(metric.to_owned())
                .or_default()
                .insert(submetric.to_owned(), template);
        }
    }
    queries
}

/// Reads `updaters[i].extra_config` for a `tsdb` updater.
pub(crate) fn parse_tsdb_updater_config(node: &Node<'_>) -> Result<TsdbUpdaterConfig, ConfigError> {
    node.mapping()?;
    let path = node.path();
    let mut config = TsdbUpdaterConfig::default();

    if let Some(series) = optional_field(node, "query_max_series", |node| node.integer())? {
        config.query_max_series = match u64::try_from(series) {
            Ok(0) => DEFAULT_QUERY_MAX_SERIES,
            Ok(series) => series,
            Err(_) => {
                return Err(path
                    .key("query_max_series")
                    .error(format!("must be more than 0, got {series}")))
            }
        };
    }
    if let Some(samples) = optional_field(node, "query_min_samples", |node| node.float())? {
        config.query_min_samples = if samples == 0.0 {
            DEFAULT_QUERY_MIN_SAMPLES
        } else if samples > 0.0 && samples <= 1.0 {
            samples
        } else {
            return Err(path
                .key("query_min_samples")
                .error(format!("must be in (0, 1], got {samples}")));
        };
    }
    if let Some(cutoff) = optional_field(node, "cutoff_duration", |node| node.duration())? {
        config.cutoff_duration = cutoff;
    }
    if let Some(delete) = optional_field(node, "delete_ignored", |node| node.boolean())? {
        config.delete_ignored = delete;
    }
    if let Some(labels) = optional_field(node, "labels_to_drop", |node| node.string_list())? {
        config.labels_to_drop = labels;
    }
    if let Some(queries) = optional_field(node, "queries", |node| parse_queries(&node))? {
        if !queries.is_empty() {
            config.queries = queries;
        }
    }
    Ok(config)
}

fn parse_queries(
    node: &Node<'_>,
) -> Result<BTreeMap<String, BTreeMap<String, QueryTemplate>>, ConfigError> {
    let mut queries = BTreeMap::new();
    for (metric, submetrics) in node.entries()? {
        let metric_path = node.path().key(&metric);
        let mut templates = BTreeMap::new();
        for (submetric, source) in Node::new(submetrics, &metric_path).entries()? {
            let submetric_path = metric_path.key(&submetric);
            let source = Node::new(source, &submetric_path).string()?;
            let template =
                QueryTemplate::parse(&source).map_err(|message| submetric_path.error(message))?;
            templates.insert(submetric, template);
        }
        queries.insert(metric, templates);
    }
    Ok(queries)
}

#[cfg(test)]
mod tests {
    use super::super::node::KeyPath;
    use super::*;

    fn values() -> TemplateValues {
        TemplateValues {
            uuids: "1|2|3".to_owned(),
            range: Duration::from_secs(900),
            scrape_interval: Duration::from_secs(15),
            evaluation_interval: Duration::from_millis(1_500),
            rate_interval: Duration::from_secs(60),
        }
    }

    #[test]
    fn templates_render_every_variable() {
        let template = QueryTemplate::parse(
            "q{uuid=~\"{{.UUIDs}}\"}[{{.Range}}:{{ .ScrapeInterval }}] {{.ScrapeIntervalMilli}} {{.EvaluationInterval}} {{.EvaluationIntervalMilli}} {{.RateInterval}}",
        )
        .unwrap();
        assert_eq!(
            template.render(&values()),
            "q{uuid=~\"1|2|3\"}[15m0s:15s] 15000 1.5s 1500 1m0s"
        );
        assert_eq!(template.variables().count(), 7);
    }

    #[test]
    fn subquery_ranges_can_be_rendered_apart() {
        let template = QueryTemplate::parse(
            "sum_over_time(x[{{.Range}}:{{.ScrapeInterval}}]) + increase(y[{{.Range}}]) + avg_over_time(z[{{ .Range -}} :])",
        )
        .unwrap();
        assert_eq!(
            template.render_with_subquery_range(&values(), Duration::from_millis(899_999)),
            "sum_over_time(x[14m59s999ms:15s]) + increase(y[15m0s]) + avg_over_time(z[14m59s999ms:])"
        );
        assert_eq!(
            template.render(&values()),
            "sum_over_time(x[15m0s:15s]) + increase(y[15m0s]) + avg_over_time(z[15m0s:])"
        );
    }

    #[test]
    fn templates_understand_trim_markers_and_comments() {
        let template = QueryTemplate::parse("a   {{- .Range -}}   b{{/* note */}}c").unwrap();
        assert_eq!(template.render(&values()), "a15m0sbc");
        let template = QueryTemplate::parse("{{-3}}");
        assert!(
            template.is_err(),
            "{{{{-3}}}} is a number, not a trim marker"
        );
    }

    #[test]
    fn templates_refuse_unknown_actions() {
        assert_eq!(
            QueryTemplate::parse("x{{.Uuids}}").unwrap_err(),
            "unsupported template action {{.Uuids}} (supported: {{.UUIDs}}, {{.Range}}, {{.ScrapeInterval}}, {{.ScrapeIntervalMilli}}, {{.EvaluationInterval}}, {{.EvaluationIntervalMilli}}, {{.RateInterval}})"
        );
        assert!(QueryTemplate::parse("{{if .Range}}x{{end}}").is_err());
        assert!(QueryTemplate::parse("{{.Range").is_err());
        assert!(QueryTemplate::parse("{{}}").is_err());
        assert_eq!(
            QueryTemplate::parse("no actions")
                .unwrap()
                .render(&values()),
            "no actions"
        );
    }

    #[test]
    fn default_queries_all_parse() {
        let queries = default_queries();
        let count: usize = queries.values().map(BTreeMap::len).sum();
        assert_eq!(count, 20);
        assert_eq!(queries.len(), 12);
        assert_eq!(
            queries["avg_cpu_usage"]["global"].render(&values()),
            "avg_over_time(avg by (uuid) (uuid:ceems_cpu_usage:ratio_irate{uuid=~\"1|2|3\"} >= 0 < inf)[15m0s:])"
        );
        for (_, _, source) in DEFAULT_QUERIES {
            assert!(QueryTemplate::parse(source).is_ok(), "{source}");
        }
    }

    fn parse(text: &str) -> Result<TsdbUpdaterConfig, ConfigError> {
        let value: yaml_serde::Value = yaml_serde::from_str(text).unwrap();
        let path = KeyPath::root().key("updaters").index(0).key("extra_config");
        parse_tsdb_updater_config(&Node::new(&value, &path))
    }

    #[test]
    fn extra_config_defaults_and_values() {
        assert_eq!(parse("{}").unwrap(), TsdbUpdaterConfig::default());
        assert_eq!(parse("null").unwrap(), TsdbUpdaterConfig::default());
        let zeros = parse("query_max_series: 0\nquery_min_samples: 0\nqueries: {}").unwrap();
        assert_eq!(zeros, TsdbUpdaterConfig::default());
        let config = parse(
            "query_max_series: 20\nquery_min_samples: 1\ncutoff_duration: 5m\ndelete_ignored: true\nlabels_to_drop: [ceems_ipmi_dcmi_avg_watts]\nqueries:\n  avg_cpu_usage:\n    global: 'cpu{uuid=~\"{{.UUIDs}}\"}'\n",
        )
        .unwrap();
        assert_eq!(config.query_max_series, 20);
        assert_eq!(config.query_min_samples, 1.0);
        assert_eq!(config.cutoff_duration, Duration::from_secs(300));
        assert!(config.delete_ignored);
        assert_eq!(config.labels_to_drop, ["ceems_ipmi_dcmi_avg_watts"]);
        assert_eq!(
            config.queries.len(),
            1,
            "a given map replaces the built-in one"
        );
        assert_eq!(
            config.queries["avg_cpu_usage"]["global"].source(),
            "cpu{uuid=~\"{{.UUIDs}}\"}"
        );
    }

    #[test]
    fn extra_config_errors_name_the_key() {
        let cases = [
            (
                "query_max_series: -1",
                "config: updaters[0].extra_config.query_max_series: must be more than 0, got -1",
            ),
            (
                "query_max_series: many",
                "config: updaters[0].extra_config.query_max_series: expected an integer, found a string",
            ),
            (
                "query_min_samples: 1.5",
                "config: updaters[0].extra_config.query_min_samples: must be in (0, 1], got 1.5",
            ),
            (
                "query_min_samples: -0.1",
                "config: updaters[0].extra_config.query_min_samples: must be in (0, 1], got -0.1",
            ),
            (
                "cutoff_duration: m5",
                "config: updaters[0].extra_config.cutoff_duration: not a valid duration string: \"m5\"",
            ),
            (
                "delete_ignored: maybe",
                "config: updaters[0].extra_config.delete_ignored: expected a boolean, found \"maybe\"",
            ),
            (
                "labels_to_drop: one",
                "config: updaters[0].extra_config.labels_to_drop: expected a list, found a string",
            ),
            (
                "queries: {avg_cpu_usage: 'x'}",
                "config: updaters[0].extra_config.queries.avg_cpu_usage: expected a mapping, found a string",
            ),
            (
                "queries: {avg_cpu_usage: {global: 'x{{.Foo}}'}}",
                "config: updaters[0].extra_config.queries.avg_cpu_usage.global: unsupported template action {{.Foo}} (supported: {{.UUIDs}}, {{.Range}}, {{.ScrapeInterval}}, {{.ScrapeIntervalMilli}}, {{.EvaluationInterval}}, {{.EvaluationIntervalMilli}}, {{.RateInterval}})",
            ),
            (
                "queries: {avg_cpu_usage: {global: 'x{{.UUIDs'}}",
                "config: updaters[0].extra_config.queries.avg_cpu_usage.global: unclosed action in template \"x{{.UUIDs\"",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(
                parse(text).unwrap_err().to_string(),
                expected,
                "for {text:?}"
            );
        }
    }
}
