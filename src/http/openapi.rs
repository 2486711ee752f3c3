//! The OpenAPI 3.1 contract, generated from the routes, parameters and JSON shapes this
//! server answers with, and the Swagger UI under `/swagger/` that serves it (`doc.json`,
//! `openapi.yaml`) with no internet access at build or run time.
//!
//! The top-level `openapi.yaml` is this document for the empty route prefix; the tests
//! below fail when either drifts from the route table, the query parsing or the models.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE, LOCATION};
use http::StatusCode;
use serde_json::{json, Value};
use utoipa::openapi::example::ExampleBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{
    HttpMethod, Operation, OperationBuilder, Parameter, ParameterBuilder, ParameterIn,
    ParameterStyle, PathItem,
};
use utoipa::openapi::schema::{
    AdditionalProperties, ArrayBuilder, KnownFormat, Object, ObjectBuilder, OneOfBuilder,
    RefBuilder, SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::tag::TagBuilder;
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, PathsBuilder, Ref,
    RefOr, Required, Response, ResponseBuilder, Schema,
};

use super::envelope::{self, ApiError, Reply};
use super::routes::Route;

/// Media type of the router's and middlewares' plain answers.
const TEXT_PLAIN: &str = "text/plain; charset=utf-8";
const APPLICATION_JSON: &str = "application/json";
/// The default user header; `--web.user-header-name` can replace it.
const USER_HEADER: &str = "X-Grafana-User";

// Security scheme names.
const BASIC_AUTH: &str = "basicAuth";
const USER_HEADER_SCHEME: &str = "userHeader";

// The exact `error` strings of the envelope, as the filters and middlewares write them.
const NO_USER: &str = "no user identified";
const NOT_ADMIN: &str = "current user does not have admin privileges";
const NOT_OWNER: &str = "user do not have permissions on uuids";
const INVALID_FIELDS: &str = "invalid query fields";
const MALFORMED_FROM: &str = "query parameter 'from': malformed timestamp";
const MALFORMED_TO: &str = "query parameter 'to': malformed timestamp";
const WINDOW_EXCEEDED: &str = "maximum query window exceeded";
const UUIDS_MISSING: &str = "uuids missing in the request";
const UNKNOWN_GROUPBY: &str = "query parameter 'groupby': unknown column \"uuid\" (allowed: cluster_id, resource_manager, groupname)";
/// A message SQLite gives when the database is busy beyond the busy timeout.
const DATABASE_ERROR_EXAMPLE: &str = "database is locked";
const EXPERIMENTAL_WITH_TERMINATED: &str =
    "query parameters 'experimental' and '__terminated' cannot be combined";

/// Every route of the route table, in the order the document describes them.
const DOCUMENTED_ROUTES: [Route; 19] = [
    Route::Units { admin: false },
    Route::Units { admin: true },
    Route::Verify,
    Route::CurrentUsage { admin: false },
    Route::CurrentUsage { admin: true },
    Route::GlobalUsage { admin: false },
    Route::GlobalUsage { admin: true },
    Route::Projects { admin: false },
    Route::Projects { admin: true },
    Route::Users { admin: false },
    Route::Users { admin: true },
    Route::Clusters,
    Route::Stats { current: true },
    Route::Stats { current: false },
    Route::DemoUnits,
    Route::DemoUsage,
    Route::Health,
    Route::Landing,
    Route::Swagger,
];

/// Builds the OpenAPI document; API paths carry `route_prefix` (normalised as the route
/// table takes it: `""` or `/something`), `/`, `/health` and `/swagger/` never do.
pub fn openapi_document(route_prefix: &str) -> OpenApi {
    let api_base = format!("{route_prefix}/api/v1");
    let mut paths = PathsBuilder::new();
    for endpoint in DOCUMENTED_ROUTES
        .into_iter()
        .flat_map(|route| endpoints(route, &api_base))
    {
        paths = paths.path(
            endpoint.path,
            PathItem::new(HttpMethod::Get, endpoint.operation),
        );
    }
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("ceems_api_server")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(info_description(&api_base)))
                .build(),
        )
        .paths(paths.build())
        .components(Some(components()))
        .tags(Some(tags()))
        .build()
}

fn info_description(api_base: &str) -> String {
    format!(
        "Usage and accounting API for HPC and cloud compute units (SLURM jobs, OpenStack \
VMs, Kubernetes pods), wire-compatible with the CEEMS API v1.\n\n\
API routes live under `{api_base}` (the `--web.route-prefix` applies to them only); `/`, \
`/health` and `/swagger/` are always at the root. API routes accept GET and OPTIONS only; \
an OPTIONS request is a CORS preflight answered 200 with an empty body and no user \
header needed.\n\n\
Every JSON answer is the envelope `{{status, data, errorType, error, warnings}}` (keys in \
that order; `data` always present, `null` on errors; `errorType`, `error` and `warnings` \
only when non-empty), compact JSON followed by one newline, `Content-Type: \
application/json`, `X-Content-Type-Options: nosniff`. A query that matched nothing gives \
`\"data\":[]`.\n\n\
Identity: the user comes from the `{USER_HEADER}` header (names configurable with \
`--web.user-header-name`). Routes ending in `/admin` need an admin: a user named in the \
config's `admin.users`, the load balancer's `ceems-int-svc`, or a row of `admin_users`. \
With a web config file that has `basic_auth_users`, HTTP basic auth applies to every \
route, `/health` and `/swagger/` included.\n\n\
CORS (API routes and `/health`): with an `Origin` header, `Access-Control-Allow-Headers`, \
`-Allow-Methods: GET`, `-Expose-Headers: Date` and `Vary: Origin` are set, and \
`Access-Control-Allow-Origin` echoes the origin when it matches `--web.cors.origin`. \
With `--web.compression`, JSON, HTML, CSS, JavaScript and plain-text handler answers are \
gzip- or deflate-encoded per `Accept-Encoding`. With `--web.max-requests N`, every \
response carries `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset`.\n\n\
Times: `from`/`to` are Unix epoch **seconds**; `*_ts` fields are epoch **milliseconds**; \
`*_at` fields are `YYYY-MM-DDTHH:MM:SS±hhmm` strings in the server's time zone."
    )
}

/// One documented path and its GET operation.
struct Endpoint {
    path: String,
    operation: Operation,
}

/// Who may call an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// No user header (basic auth still applies when configured).
    Public,
    /// Any identified user.
    User,
    /// An identified admin.
    Admin,
}

/// A documented 400 answer: its message and a query that provokes it.
#[derive(Debug, Clone, Copy)]
struct BadDataCase {
    name: &'static str,
    message: &'static str,
    /// A query string that gets this message.
    sample_query: &'static str,
    /// The server setting the sample needs, as text for the example (or `""`).
    setting: &'static str,
}

const INVALID_UNIT_FIELDS: BadDataCase = BadDataCase {
    name: "invalid_fields",
    message: INVALID_FIELDS,
    sample_query: "field=nope",
    setting: "",
};
const INVALID_USAGE_FIELDS: BadDataCase = BadDataCase {
    name: "invalid_fields",
    message: INVALID_FIELDS,
    sample_query: "field=uuid",
    setting: "",
};
const MALFORMED_FROM_CASE: BadDataCase = BadDataCase {
    name: "malformed_from",
    message: MALFORMED_FROM,
    sample_query: "from=1.5",
    setting: "",
};
const MALFORMED_TO_CASE: BadDataCase = BadDataCase {
    name: "malformed_to",
    message: MALFORMED_TO,
    sample_query: "to=2024-01-01",
    setting: "",
};
const WINDOW_EXCEEDED_CASE: BadDataCase = BadDataCase {
    name: "window_exceeded",
    message: WINDOW_EXCEEDED,
    sample_query: "from=0&to=86401",
    setting: " with `--query.max-period 1d`",
};

/// The 400 answers of a route, in the order the server checks for them.
fn bad_data_cases(route: Route) -> &'static [BadDataCase] {
    match route {
        Route::Units { .. } => &[
            INVALID_UNIT_FIELDS,
            MALFORMED_FROM_CASE,
            MALFORMED_TO_CASE,
            WINDOW_EXCEEDED_CASE,
        ],
        Route::Verify => &[BadDataCase {
            name: "uuids_missing",
            message: UUIDS_MISSING,
            sample_query: "cluster_id=slurm-0",
            setting: "",
        }],
        Route::CurrentUsage { .. } => &[
            INVALID_USAGE_FIELDS,
            BadDataCase {
                name: "unknown_groupby",
                message: UNKNOWN_GROUPBY,
                sample_query: "groupby=uuid",
                setting: "",
            },
            BadDataCase {
                name: "experimental_with_terminated",
                message: EXPERIMENTAL_WITH_TERMINATED,
                sample_query: "experimental&__terminated",
                setting: "",
            },
            MALFORMED_FROM_CASE,
            MALFORMED_TO_CASE,
            WINDOW_EXCEEDED_CASE,
        ],
        Route::GlobalUsage { .. } => &[INVALID_USAGE_FIELDS],
        Route::Stats { current: true } => {
            &[MALFORMED_FROM_CASE, MALFORMED_TO_CASE, WINDOW_EXCEEDED_CASE]
        }
        Route::Stats { current: false }
        | Route::Projects { .. }
        | Route::Users { .. }
        | Route::Clusters
        | Route::DemoUnits
        | Route::DemoUsage
        | Route::Health
        | Route::Landing
        | Route::Swagger => &[],
    }
}

/// What an API operation is made of; [`api_operation`] adds the shared parts.
struct ApiOperation {
    route: Route,
    id: &'static str,
    tag: &'static str,
    summary: &'static str,
    description: String,
    access: Access,
    parameters: Vec<Parameter>,
    success: ResponseBuilder,
    /// Whether a database error can surface as 500 `internal`.
    queries_database: bool,
    /// Answers specific to this operation, besides 200 and the shared ones.
    other_responses: Vec<(&'static str, ResponseBuilder)>,
}

/// The paths and operations of one route (several for the Swagger UI).
fn endpoints(route: Route, api_base: &str) -> Vec<Endpoint> {
    let api = |suffix: &str, operation: ApiOperation| Endpoint {
        path: format!("{api_base}{suffix}"),
        operation: api_operation(operation),
    };
    match route {
        Route::Units { admin } => vec![api(
            if admin { "/units/admin" } else { "/units" },
            units_operation(route, admin),
        )],
        Route::Verify => vec![api("/units/verify", verify_operation())],
        Route::CurrentUsage { admin } => vec![api(
            if admin {
                "/usage/current/admin"
            } else {
                "/usage/current"
            },
            current_usage_operation(route, admin),
        )],
        Route::GlobalUsage { admin } => vec![api(
            if admin {
                "/usage/global/admin"
            } else {
                "/usage/global"
            },
            global_usage_operation(route, admin),
        )],
        Route::Projects { admin } => vec![api(
            if admin {
                "/projects/admin"
            } else {
                "/projects"
            },
            projects_operation(route, admin),
        )],
        Route::Users { admin } => vec![api(
            if admin { "/users/admin" } else { "/users" },
            users_operation(route, admin),
        )],
        Route::Clusters => vec![api("/clusters/admin", clusters_operation())],
        Route::Stats { current } => vec![api(
            if current {
                "/stats/current/admin"
            } else {
                "/stats/global/admin"
            },
            stats_operation(route, current),
        )],
        Route::DemoUnits => vec![api("/demo/units", demo_units_operation())],
        Route::DemoUsage => vec![api("/demo/usage", demo_usage_operation())],
        Route::Health => vec![Endpoint {
            path: "/health".to_owned(),
            operation: health_operation(),
        }],
        Route::Landing => vec![Endpoint {
            path: "/".to_owned(),
            operation: landing_operation(),
        }],
        Route::Swagger => swagger_operations()
            .into_iter()
            .map(|(path, operation)| Endpoint {
                path: path.to_owned(),
                operation,
            })
            .collect(),
    }
}

/// Adds what every API operation shares: tag, security, the user header and the error
/// answers of the pipeline (401, 403, 404, 405, 429, 500).
fn api_operation(spec: ApiOperation) -> Operation {
    let mut builder = OperationBuilder::new()
        .tag(spec.tag)
        .operation_id(Some(spec.id))
        .summary(Some(spec.summary))
        .description(Some(spec.description));
    if spec.access != Access::Public {
        builder = builder.parameter(user_header_parameter());
    }
    if !spec.parameters.is_empty() {
        builder = builder.parameters(Some(spec.parameters));
    }
    builder = match spec.access {
        Access::Public => builder
            .security(basic_auth_requirement())
            .security(SecurityRequirement::default()),
        Access::User | Access::Admin => builder
            .security(basic_auth_requirement().add(USER_HEADER_SCHEME, no_scopes()))
            .security(SecurityRequirement::new(USER_HEADER_SCHEME, no_scopes())),
    };
    builder = builder.response("200", spec.success);
    let cases = bad_data_cases(spec.route);
    if !cases.is_empty() {
        builder = builder.response("400", bad_data_response(cases));
    }
    builder = match spec.access {
        Access::Public => builder.response("401", Ref::from_response_name("BasicAuthFailed")),
        Access::User | Access::Admin => {
            builder.response("401", Ref::from_response_name("Unauthorized"))
        }
    };
    if spec.access == Access::Admin {
        builder = builder.response("403", Ref::from_response_name("NotAdmin"));
    }
    builder = builder
        .response("404", Ref::from_response_name("NotFound"))
        .response("405", Ref::from_response_name("MethodNotAllowed"))
        .response("429", Ref::from_response_name("TooManyRequests"));
    if spec.queries_database {
        builder = builder.response("500", Ref::from_response_name("InternalError"));
    }
    for (status, response) in spec.other_responses {
        builder = builder.response(status, response);
    }
    builder.build()
}

fn no_scopes() -> std::iter::Empty<String> {
    std::iter::empty()
}

fn basic_auth_requirement() -> SecurityRequirement {
    SecurityRequirement::new(BASIC_AUTH, no_scopes())
}

fn admin_note(admin: bool) -> &'static str {
    if admin {
        " Admins only: any other user gets 403."
    } else {
        ""
    }
}

fn units_operation(route: Route, admin: bool) -> ApiOperation {
    let mut parameters = vec![
        cluster_id_parameter(),
        uuid_parameter(),
        project_parameter(),
    ];
    if admin {
        parameters.push(user_parameter());
    }
    parameters.extend([
        field_parameter(&unit_field_names(), "Unit"),
        running_parameter(),
        from_parameter(WindowKind::EndedAt),
        to_parameter(WindowKind::EndedAt),
        timezone_parameter(),
    ]);
    let who = if admin {
        "Units of any user (with no `user` and no `project`, of every user)."
    } else {
        "Units of the current user, plus the `<project>:svc` service-account units of \
the projects in `project` that the user is a member of (in the unit's cluster)."
    };
    ApiOperation {
        route,
        id: if admin { "listUnitsAdmin" } else { "listUnits" },
        tag: "units",
        summary: if admin {
            "List units of any user"
        } else {
            "List the current user's units"
        },
        description: format!(
            "{who} Units that ended inside [`from`, `to`] (default: the last 24 hours) \
and, with `running`, every unit still running; with `uuid`, exactly those units whatever \
their times. Rows with the `ignore` flag are never returned. Ordered by `cluster_id`, then \
`uuid`, both as text; no pagination. Fields not selected with `field` are omitted (`uuid` \
is then `\"\"`).{}",
            admin_note(admin)
        ),
        access: if admin { Access::Admin } else { Access::User },
        parameters,
        success: json_success("Units.", "UnitsEnvelope"),
        queries_database: true,
        other_responses: Vec::new(),
    }
}

fn verify_operation() -> ApiOperation {
    ApiOperation {
        route: Route::Verify,
        id: "verifyUnitOwnership",
        tag: "units",
        summary: "Check that the current user may see the given units",
        description: "Ownership check used by the CEEMS load balancer. Passes when every \
distinct `uuid` exists in the given clusters and every row with such a uuid belongs to the \
user (as owner, or as a member of the unit's project in the unit's cluster). Admins get no \
bypass here. Pass: 200 with `\"data\":null`; otherwise, or on a database error, 403."
            .to_owned(),
        access: Access::User,
        parameters: vec![
            required_parameter(multi_valued_parameter(
                "uuid",
                string_schema("Unit identifier (SLURM job id, VM or pod UUID)."),
                &format!(
                    "Units to check; repeat the key for several. Without it: 400 \
`{UUIDS_MISSING}`."
                ),
                json!(["1479765"]),
            )),
            required_parameter(multi_valued_parameter(
                "cluster_id",
                string_schema("Cluster identifier."),
                "Cluster of the units; repeat the key for several. Without it the check \
fails (403).",
                json!(["slurm-0"]),
            )),
        ],
        success: ResponseBuilder::new()
            .description("The user may see every given unit.")
            .content(
                APPLICATION_JSON,
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("VerifyEnvelope")))
                    .example(Some(json!({"status": "success", "data": null})))
                    .build(),
            ),
        queries_database: false,
        other_responses: vec![(
            "403",
            ResponseBuilder::new()
                .description(format!(
                    "The user may not see every given unit, no `cluster_id` was given, or \
the check failed: `{}`.",
                    wire_text(&ApiError::forbidden(NOT_OWNER))
                ))
                .content(
                    APPLICATION_JSON,
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorEnvelope")))
                        .example(Some(error_body(&ApiError::forbidden(NOT_OWNER))))
                        .build(),
                ),
        )],
    }
}

fn current_usage_operation(route: Route, admin: bool) -> ApiOperation {
    let mut parameters = vec![cluster_id_parameter(), project_parameter()];
    if admin {
        parameters.push(user_parameter());
    }
    parameters.extend([
        field_parameter(&usage_field_names(), "Usage"),
        from_parameter(WindowKind::CurrentUsage),
        to_parameter(WindowKind::CurrentUsage),
        flag_parameter(
            "experimental",
            "Presence flag: aggregate the `daily_usage` table instead of units. Cannot be \
combined with `__terminated`.",
        ),
        flag_parameter(
            "__terminated",
            "Presence flag: aggregate only units that have ended (`ended_at_ts > 0`).",
        ),
        multi_valued_parameter(
            "groupby",
            enum_schema("An extra grouping column.", &GROUP_BY_COLUMNS),
            "Extra grouping column besides `username` and `project`; repeat the key for \
several. Empty values are skipped; any other column is 400.",
            json!(["cluster_id"]),
        ),
    ]);
    let whose = if admin {
        "Usage of every member of the projects of the users in `user` (with no `user` and no \
`project`, of every project that has members)."
    } else {
        "Usage of every member of the current user's projects (membership per cluster)."
    };
    let success = json_success(
        "Usage rows. `data` is `null` when no selected field needs aggregation (only plain \
fields such as `username` or `num_units`) or when only `total_*` fields are selected and \
no unit was updated in the window.",
        "CurrentUsageEnvelope",
    )
    .header(
        "Expires",
        HeaderBuilder::new()
            .schema(ObjectBuilder::new().schema_type(Type::String))
            .description(Some(
                "Only on an answer from the cache: when the cached rows expire (15 minutes \
after they were stored), RFC 1123 in the server's zone, e.g. `Mon, 02 Jan 2006 15:04:05 \
CET`.",
            ))
            .build(),
    );
    ApiOperation {
        route,
        id: if admin {
            "getCurrentUsageAdmin"
        } else {
            "getCurrentUsage"
        },
        tag: "usage",
        summary: if admin {
            "Usage in a window, any project"
        } else {
            "Usage in a window of the current user's projects"
        },
        description: format!(
            "{whose} Aggregates the units updated in the window per (`username`, \
`project`, `groupby`...): `num_units` counts them, `total_*` maps sum each key over the \
units' lifetime totals, `avg_*` maps are means weighted by the matching \
`total_time_seconds` key (`alloc_cputime`, `alloc_cpumemtime`, `alloc_gputime`, \
`alloc_gpumemtime`). Each map holds the union of keys seen in the window; a key a group \
lacks is 0. `cluster_id`, `resource_manager` and `groupname` come from an arbitrary unit \
of the group. Non-empty answers are cached per user, route and parameters for 15 \
minutes. Ordered by `cluster_id`, `username`, `project`.{}",
            admin_note(admin)
        ),
        access: if admin { Access::Admin } else { Access::User },
        parameters,
        success,
        queries_database: true,
        other_responses: Vec::new(),
    }
}

fn global_usage_operation(route: Route, admin: bool) -> ApiOperation {
    let mut parameters = vec![cluster_id_parameter(), project_parameter()];
    if admin {
        parameters.push(user_parameter());
    }
    parameters.push(field_parameter(&usage_field_names(), "Usage"));
    let whose = if admin {
        "Lifetime usage rows of the projects of the users in `user` (with no `user` and no \
`project`, of every project that has members)."
    } else {
        "Lifetime usage rows of the current user's projects (membership per cluster)."
    };
    ApiOperation {
        route,
        id: if admin {
            "getGlobalUsageAdmin"
        } else {
            "getGlobalUsage"
        },
        tag: "usage",
        summary: if admin {
            "Lifetime usage, any project"
        } else {
            "Lifetime usage of the current user's projects"
        },
        description: format!(
            "{whose} Read from the `usage` table the updater maintains; there is no time \
filter (`from`/`to` are ignored). Plain fields are always present, selected or not. \
Ordered by `cluster_id`, `username`, `project`.{}",
            admin_note(admin)
        ),
        access: if admin { Access::Admin } else { Access::User },
        parameters,
        success: json_success("Usage rows.", "UsageEnvelope"),
        queries_database: true,
        other_responses: Vec::new(),
    }
}

fn projects_operation(route: Route, admin: bool) -> ApiOperation {
    ApiOperation {
        route,
        id: if admin {
            "listProjectsAdmin"
        } else {
            "listProjects"
        },
        tag: "projects",
        summary: if admin {
            "List projects that have members"
        } else {
            "List the current user's projects"
        },
        description: format!(
            "{} One row per cluster. Ordered by `cluster_id`, then `name`.{}",
            if admin {
                "Every project with a non-empty member list (`user` is ignored)."
            } else {
                "Projects the current user is a member of; a project the user is not in \
gives `[]`."
            },
            admin_note(admin)
        ),
        access: if admin { Access::Admin } else { Access::User },
        parameters: vec![project_parameter(), cluster_id_parameter()],
        success: json_success("Projects.", "ProjectsEnvelope"),
        queries_database: true,
        other_responses: Vec::new(),
    }
}

fn users_operation(route: Route, admin: bool) -> ApiOperation {
    let mut parameters = vec![cluster_id_parameter()];
    if admin {
        parameters.extend([
            user_parameter(),
            multi_valued_parameter(
                "project",
                string_schema("Project name."),
                "Adds the project's service account `<project>:svc` to the users listed; \
repeat the key for several. Not a filter.",
                json!(["ns1"]),
            ),
            single_parameter(
                "role",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .examples([json!("admin")])
                    .into(),
                "`admin` lists every admin user (the `admin_users` table, in insertion \
order, e.g. `{\"cluster_id\":\"all\",\"name\":\"ceems-int-svc\",\"tags\":[\"ceems\"]}`) \
instead; all other parameters are then ignored. Other values are ignored.",
            ),
        ]);
    }
    ApiOperation {
        route,
        id: if admin { "listUsersAdmin" } else { "listUsers" },
        tag: "users",
        summary: if admin {
            "List users, or the admin users"
        } else {
            "List the current user's rows"
        },
        description: format!(
            "{} One row per cluster. Ordered by `cluster_id`, then `name`.{}",
            if admin {
                "The users named in `user` (and `<project>:svc` for each `project`); with \
neither, every user."
            } else {
                "The current user's rows, with the projects they are in."
            },
            admin_note(admin)
        ),
        access: if admin { Access::Admin } else { Access::User },
        parameters,
        success: json_success("Users.", "UsersEnvelope"),
        queries_database: true,
        other_responses: Vec::new(),
    }
}

fn clusters_operation() -> ApiOperation {
    ApiOperation {
        route: Route::Clusters,
        id: "listClustersAdmin",
        tag: "clusters",
        summary: "List the clusters seen in the units table",
        description: format!(
            "Distinct (`cluster_id`, `resource_manager`) pairs of the units table, ordered \
by `cluster_id`. The CEEMS load balancer calls it at start-up as `ceems-int-svc`. All \
parameters are ignored.{}",
            admin_note(true)
        ),
        access: Access::Admin,
        parameters: Vec::new(),
        success: json_success("Clusters.", "ClustersEnvelope"),
        queries_database: true,
        other_responses: Vec::new(),
    }
}

fn stats_operation(route: Route, current: bool) -> ApiOperation {
    let mut parameters = vec![cluster_id_parameter()];
    if current {
        parameters.extend([
            from_parameter(WindowKind::Stats),
            to_parameter(WindowKind::Stats),
        ]);
    }
    ApiOperation {
        route,
        id: if current {
            "getCurrentStatsAdmin"
        } else {
            "getGlobalStatsAdmin"
        },
        tag: "stats",
        summary: if current {
            "Per-cluster unit counts in a window"
        } else {
            "Per-cluster unit counts over all time"
        },
        description: format!(
            "One row per `cluster_id`, ordered by it, over every unit row (the `ignore` \
flag is not applied). {}{}",
            if current {
                "Units that ended inside [`from`, `to`] (default: the last 24 hours) or \
are still running."
            } else {
                "All units; `from`/`to` are ignored."
            },
            admin_note(true)
        ),
        access: Access::Admin,
        parameters,
        success: json_success("Statistics.", "StatsEnvelope"),
        queries_database: true,
        other_responses: Vec::new(),
    }
}

fn demo_units_operation() -> ApiOperation {
    ApiOperation {
        route: Route::DemoUnits,
        id: "listDemoUnits",
        tag: "demo",
        summary: "100 random units",
        description: "Random mock data, different on every call; no user header needed. \
Unlike real units, `*_ts` are Unix **seconds**, `*_at` use the RFC 1123 layout in the \
server's zone and `elapsed` is a duration such as `5h3m2s`."
            .to_owned(),
        access: Access::Public,
        parameters: Vec::new(),
        success: json_success("Random units.", "UnitsEnvelope"),
        queries_database: false,
        other_responses: Vec::new(),
    }
}

fn demo_usage_operation() -> ApiOperation {
    ApiOperation {
        route: Route::DemoUsage,
        id: "listDemoUsage",
        tag: "demo",
        summary: "Random usage rows",
        description: "Random mock data for `user1`…`user7`, different on every call; no \
user header needed."
            .to_owned(),
        access: Access::Public,
        parameters: Vec::new(),
        success: json_success("Random usage rows.", "UsageEnvelope"),
        queries_database: false,
        other_responses: Vec::new(),
    }
}

fn health_operation() -> Operation {
    OperationBuilder::new()
        .tag("server")
        .operation_id(Some("getHealth"))
        .summary(Some("Health check"))
        .description(Some(
            "Pings the database. Any method is accepted (OPTIONS is a CORS preflight). \
Plain text with `X-Content-Type-Options: nosniff`, no trailing newline.",
        ))
        .security(basic_auth_requirement())
        .security(SecurityRequirement::default())
        .response(
            "200",
            text_response("The database answers.", "CEEMS API Server is healthy"),
        )
        .response(
            "503",
            text_response(
                "The database does not answer (or does not exist yet).",
                "KO",
            ),
        )
        .response("401", Ref::from_response_name("BasicAuthFailed"))
        .response("429", Ref::from_response_name("TooManyRequests"))
        .build()
}

fn landing_operation() -> Operation {
    OperationBuilder::new()
        .tag("server")
        .operation_id(Some("getLandingPage"))
        .summary(Some("Landing page"))
        .description(Some(
            "An HTML page with the version and links to the Swagger UI and `/health`. The \
exact path `/` only; any method.",
        ))
        .security(basic_auth_requirement())
        .security(SecurityRequirement::default())
        .response(
            "200",
            ResponseBuilder::new()
                .description("The page, `text/html; charset=UTF-8`.")
                .content(
                    "text/html; charset=UTF-8",
                    ContentBuilder::new()
                        .schema(Some(string_schema("HTML.")))
                        .build(),
                ),
        )
        .response("401", Ref::from_response_name("BasicAuthFailed"))
        .response("429", Ref::from_response_name("TooManyRequests"))
        .build()
}

fn swagger_operations() -> Vec<(&'static str, Operation)> {
    let operation = |id: &str, summary: &str, description: &str, status: &str, ok| {
        OperationBuilder::new()
            .tag("server")
            .operation_id(Some(id))
            .summary(Some(summary))
            .description(Some(format!(
                "{description} Any method but GET is 405 `Method not allowed\\n`."
            )))
            .security(basic_auth_requirement())
            .security(SecurityRequirement::default())
            .response(status, ok)
            .response("401", Ref::from_response_name("BasicAuthFailed"))
            .response("404", Ref::from_response_name("NotFound"))
            .response("405", Ref::from_response_name("SwaggerMethodNotAllowed"))
            .response("429", Ref::from_response_name("TooManyRequests"))
    };
    let html = |description: &str| {
        ResponseBuilder::new().description(description).content(
            "text/html",
            ContentBuilder::new()
                .schema(Some(string_schema("HTML.")))
                .build(),
        )
    };
    vec![
        (
            "/swagger/",
            operation(
                "getSwaggerRoot",
                "Redirect to the Swagger UI",
                "Redirects to `/swagger/index.html`.",
                "301",
                ResponseBuilder::new().description("Empty body.").header(
                    "Location",
                    HeaderBuilder::new()
                        .schema(ObjectBuilder::new().schema_type(Type::String))
                        .description(Some("`/swagger/index.html`."))
                        .build(),
                ),
            )
            .build(),
        ),
        (
            "/swagger/index.html",
            operation(
                "getSwaggerUi",
                "Swagger UI",
                "The Swagger UI, reading `/swagger/doc.json`.",
                "200",
                html("The UI."),
            )
            .build(),
        ),
        (
            "/swagger/doc.json",
            operation(
                "getOpenApiJson",
                "This OpenAPI document, as JSON",
                "The OpenAPI 3.1 document, with API paths under the configured route prefix.",
                "200",
                ResponseBuilder::new().description("The document.").content(
                    APPLICATION_JSON,
                    ContentBuilder::new()
                        .schema(Some(object_schema("An OpenAPI 3.1 document.")))
                        .build(),
                ),
            )
            .build(),
        ),
        (
            "/swagger/openapi.yaml",
            operation(
                "getOpenApiYaml",
                "This OpenAPI document, as YAML",
                "The same document as `/swagger/doc.json`, in YAML.",
                "200",
                ResponseBuilder::new().description("The document.").content(
                    "application/yaml",
                    ContentBuilder::new()
                        .schema(Some(string_schema("An OpenAPI 3.1 document in YAML.")))
                        .build(),
                ),
            )
            .build(),
        ),
        (
            "/swagger/{asset}",
            operation(
                "getSwaggerAsset",
                "Swagger UI assets",
                "Scripts, style sheets and images of the Swagger UI (e.g. \
`swagger-ui-bundle.js`, `swagger-ui.css`, `swagger-initializer.js`); unknown names are 404.",
                "200",
                ResponseBuilder::new().description("The asset.").content(
                    "*/*",
                    ContentBuilder::new()
                        .schema(Some(string_schema("The file.")))
                        .build(),
                ),
            )
            .parameter(
                ParameterBuilder::new()
                    .name("asset")
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .description(Some("File name of the asset."))
                    .schema(Some(string_schema("File name.")))
                    .build(),
            )
            .build(),
        ),
    ]
}

// ---------------------------------------------------------------------------------------
// Parameters.

fn user_header_parameter() -> Parameter {
    ParameterBuilder::new()
        .name(USER_HEADER)
        .parameter_in(ParameterIn::Header)
        .required(Required::True)
        .description(Some(format!(
            "The user the request acts for, used verbatim. The header names come from \
`--web.user-header-name` (default `{USER_HEADER}`); the first with a non-empty value wins. \
Missing: 401 `{NO_USER}`."
        )))
        .schema(Some(string_schema("User name.")))
        .example(Some(json!("usr1")))
        .build()
}

/// A query parameter whose key may repeat (`key=a&key=b`), each value an `IN (...)` term.
fn multi_valued_parameter(
    name: &str,
    item: RefOr<Schema>,
    description: &str,
    example: Value,
) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(ArrayBuilder::new().items(item)))
        .style(Some(ParameterStyle::Form))
        .explode(Some(true))
        .example(Some(example))
        .build()
}

fn single_parameter(name: &str, schema: RefOr<Schema>, description: &str) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(schema))
        .build()
}

fn required_parameter(mut parameter: Parameter) -> Parameter {
    parameter.required = Required::True;
    parameter
}

/// A key that counts when present, whatever its value.
fn flag_parameter(name: &str, description: &str) -> Parameter {
    single_parameter(
        name,
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "Any value, or none: only the key's presence counts (`false` and `0` \
enable it too).",
            ))
            .examples([json!("1")])
            .into(),
        description,
    )
}

fn cluster_id_parameter() -> Parameter {
    multi_valued_parameter(
        "cluster_id",
        string_schema("Cluster identifier."),
        "Only rows of these clusters; repeat the key for several. An empty value matches \
only empty strings.",
        json!(["slurm-0"]),
    )
}

fn project_parameter() -> Parameter {
    multi_valued_parameter(
        "project",
        string_schema("Project name."),
        "Only rows of these projects (SLURM accounts, OpenStack projects, k8s \
namespaces); repeat the key for several.",
        json!(["acc1"]),
    )
}

fn user_parameter() -> Parameter {
    multi_valued_parameter(
        "user",
        string_schema("User name."),
        "Only these users; repeat the key for several. Honoured on admin routes only.",
        json!(["usr1"]),
    )
}

fn uuid_parameter() -> Parameter {
    multi_valued_parameter(
        "uuid",
        string_schema("Unit identifier (SLURM job id, VM or pod UUID)."),
        "Only these units; repeat the key for several. The time window, `running`, `from` \
and `to` are then ignored.",
        json!(["1479765"]),
    )
}

fn field_parameter(names: &[&str], model: &str) -> Parameter {
    multi_valued_parameter(
        "field",
        enum_schema(&format!("A key of `{model}`."), names),
        "Keys to return; repeat the key for several. Values are trimmed, unknown names are \
ignored; if every given name is unknown the answer is 400 `invalid query fields`. Without \
`field`, every key is returned. The output key order is fixed.",
        json!(["username", "avg_cpu_usage"]),
    )
}

fn running_parameter() -> Parameter {
    flag_parameter(
        "running",
        "Presence flag: also return every unit still running (`ended_at_ts = 0`), whenever \
it started.",
    )
}

/// Which window rules a `from`/`to` pair follows.
#[derive(Debug, Clone, Copy)]
enum WindowKind {
    /// Units: `ended_at` in the window.
    EndedAt,
    /// Current usage: rounded to 15 minutes, on `last_updated_at`.
    CurrentUsage,
    /// Stats: `ended_at` in the window or still running.
    Stats,
}

fn int64_schema(description: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .description(Some(description))
        .into()
}

fn from_parameter(kind: WindowKind) -> Parameter {
    let default = match kind {
        WindowKind::EndedAt | WindowKind::Stats => {
            "Without it: `to` − 24 h, or now − 24 h without `to`."
        }
        WindowKind::CurrentUsage => {
            "Rounded down to a multiple of 900 s. Without it: now − 24 h, rounded down."
        }
    };
    ParameterBuilder::new()
        .name("from")
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some(format!(
            "Start of the window, Unix epoch **seconds** (a base-10 int64, not \
milliseconds); only the first value counts, an empty value is absent. {default} Not an \
integer: 400 `{MALFORMED_FROM}`. With `--query.max-period` set, a longer window is 400 \
`{WINDOW_EXCEEDED}`."
        )))
        .schema(Some(int64_schema("Unix epoch seconds.")))
        .example(Some(json!(1_700_000_000)))
        .build()
}

fn to_parameter(kind: WindowKind) -> Parameter {
    let default = match kind {
        WindowKind::EndedAt | WindowKind::Stats => {
            "Without it: `from` + 24 h, or now without `from`."
        }
        WindowKind::CurrentUsage => {
            "Rounded up to a multiple of 900 s. Without it: now, rounded up."
        }
    };
    ParameterBuilder::new()
        .name("to")
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some(format!(
            "End of the window, Unix epoch **seconds** (a base-10 int64); only the first \
value counts, an empty value is absent. {default} Not an integer: 400 `{MALFORMED_TO}`."
        )))
        .schema(Some(int64_schema("Unix epoch seconds.")))
        .example(Some(json!(1_700_086_400)))
        .build()
}

fn timezone_parameter() -> Parameter {
    ParameterBuilder::new()
        .name("timezone")
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some(
            "IANA time zone in which `created_at`, `started_at` and `ended_at` are printed \
(`*_ts` are never changed; `Unknown`/`N/A` stay as they are). An unknown name keeps the \
server's zone and adds a warning.",
        ))
        .schema(Some(string_schema("IANA time zone name.")))
        .example(Some(json!("Europe/Paris")))
        .build()
}

// ---------------------------------------------------------------------------------------
// Responses.

fn json_success(description: &str, envelope: &str) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        APPLICATION_JSON,
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name(envelope)))
            .build(),
    )
}

fn error_body(error: &ApiError) -> Value {
    json!({
        "status": "error",
        "data": null,
        "errorType": error.kind.wire().0,
        "error": error.message,
    })
}

/// The exact body the server sends for `error`, without the final newline. Examples are
/// JSON values whose keys a YAML or JSON viewer may reorder; this text shows the wire order.
fn wire_text(error: &ApiError) -> String {
    String::from_utf8_lossy(&envelope::error(error).body)
        .trim_end()
        .to_owned()
}

fn bad_data_response(cases: &[BadDataCase]) -> ResponseBuilder {
    let list = cases
        .iter()
        .map(|case| format!("`{}`", case.message))
        .collect::<Vec<_>>()
        .join(", ");
    ResponseBuilder::new()
        .description(format!(
            "Invalid parameters, `errorType` `bad_data`, checked in this order: {list}."
        ))
        .content(
            APPLICATION_JSON,
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorEnvelope")))
                .examples_from_iter(cases.iter().map(|case| {
                    (
                        case.name,
                        ExampleBuilder::new()
                            .summary(case.message)
                            .description(format!(
                                "`?{}`{} answers `{}`.",
                                case.sample_query,
                                case.setting,
                                wire_text(&ApiError::bad_data(case.message))
                            ))
                            .value(Some(error_body(&ApiError::bad_data(case.message)))),
                    )
                }))
                .build(),
        )
}

fn text_response(description: &str, body: &str) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        TEXT_PLAIN,
        ContentBuilder::new()
            .schema(Some(string_schema("Plain text.")))
            .example(Some(json!(body)))
            .build(),
    )
}

fn www_authenticate_header() -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(ObjectBuilder::new().schema_type(Type::String))
        .description(Some("`Basic`, on a basic-auth failure."))
        .build()
}

fn shared_responses() -> Vec<(&'static str, Response)> {
    let integer_header = |description: &str| {
        HeaderBuilder::new()
            .schema(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64))),
            )
            .description(Some(description))
            .build()
    };
    vec![
        (
            "Unauthorized",
            ResponseBuilder::new()
                .description(format!(
                    "No user header: `{}`, sent (as the reference does) with \
`Content-Type: {TEXT_PLAIN}`, no CORS headers, never compressed. With basic auth \
configured, wrong or missing credentials give `Unauthorized\\n` with \
`WWW-Authenticate: Basic` before any routing.",
                    wire_text(&ApiError::unauthorized(NO_USER))
                ))
                .header("WWW-Authenticate", www_authenticate_header())
                .content(
                    TEXT_PLAIN,
                    ContentBuilder::new()
                        .schema(Some(
                            OneOfBuilder::new()
                                .item(Ref::from_schema_name("ErrorEnvelope"))
                                .item(enum_schema("Basic-auth failure.", &["Unauthorized\n"])),
                        ))
                        .examples_from_iter([
                            (
                                "no_user",
                                ExampleBuilder::new()
                                    .summary(NO_USER)
                                    .value(Some(error_body(&ApiError::unauthorized(NO_USER)))),
                            ),
                            (
                                "basic_auth",
                                ExampleBuilder::new()
                                    .summary("basic auth failed")
                                    .value(Some(json!("Unauthorized\n"))),
                            ),
                        ])
                        .build(),
                )
                .build(),
        ),
        (
            "BasicAuthFailed",
            ResponseBuilder::new()
                .description(
                    "Only with basic auth configured: wrong or missing credentials, before \
any routing.",
                )
                .header("WWW-Authenticate", www_authenticate_header())
                .content(
                    TEXT_PLAIN,
                    ContentBuilder::new()
                        .schema(Some(string_schema("Plain text.")))
                        .example(Some(json!("Unauthorized\n")))
                        .build(),
                )
                .build(),
        ),
        (
            "NotAdmin",
            ResponseBuilder::new()
                .description(format!(
                    "The user is not an admin: `{}`, sent (as the reference does) with \
`Content-Type: {TEXT_PLAIN}`, no CORS headers, never compressed.",
                    wire_text(&ApiError::forbidden(NOT_ADMIN))
                ))
                .content(
                    TEXT_PLAIN,
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorEnvelope")))
                        .example(Some(error_body(&ApiError::forbidden(NOT_ADMIN))))
                        .build(),
                )
                .build(),
        ),
        (
            "NotFound",
            ResponseBuilder::new()
                .description(
                    "No route has this path (e.g. a trailing slash, or a mode/resource other \
than the documented ones). Paths with `//`, `.` or `..` segments are first redirected \
(301) to their cleaned form.",
                )
                .content(
                    TEXT_PLAIN,
                    ContentBuilder::new()
                        .schema(Some(string_schema("Plain text.")))
                        .example(Some(json!("404 page not found\n")))
                        .build(),
                )
                .build(),
        ),
        (
            "MethodNotAllowed",
            ResponseBuilder::new()
                .description(
                    "The path exists but the method is neither GET nor OPTIONS: empty body.",
                )
                .build(),
        ),
        (
            "SwaggerMethodNotAllowed",
            ResponseBuilder::new()
                .description("Any method but GET under `/swagger/`.")
                .content(
                    TEXT_PLAIN,
                    ContentBuilder::new()
                        .schema(Some(string_schema("Plain text.")))
                        .example(Some(json!("Method not allowed\n")))
                        .build(),
                )
                .build(),
        ),
        (
            "TooManyRequests",
            ResponseBuilder::new()
                .description(
                    "Only with `--web.max-requests N` > 0: the caller (the identified user, \
else the peer IP) made N requests in the sliding minute. Every route counts.",
                )
                .header("Retry-After", integer_header("Seconds: `60`."))
                .header("X-RateLimit-Limit", integer_header("N."))
                .header(
                    "X-RateLimit-Remaining",
                    integer_header("Requests left in the window."),
                )
                .header(
                    "X-RateLimit-Reset",
                    integer_header("Unix seconds of the current minute's end."),
                )
                .content(
                    TEXT_PLAIN,
                    ContentBuilder::new()
                        .schema(Some(string_schema("Plain text.")))
                        .example(Some(json!("Too Many Requests\n")))
                        .build(),
                )
                .build(),
        ),
        (
            "InternalError",
            ResponseBuilder::new()
                .description(format!(
                    "The database query failed: `errorType` `internal`, `error` the \
database's message, e.g. `{}`.",
                    wire_text(&ApiError::internal(DATABASE_ERROR_EXAMPLE))
                ))
                .content(
                    APPLICATION_JSON,
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorEnvelope")))
                        .example(Some(error_body(&ApiError::internal(
                            DATABASE_ERROR_EXAMPLE,
                        ))))
                        .build(),
                )
                .build(),
        ),
    ]
}

// ---------------------------------------------------------------------------------------
// Schemas.

fn string_schema(description: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .into()
}

fn object_schema(description: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(description))
        .additional_properties(Some(AdditionalProperties::FreeForm(true)))
        .into()
}

fn enum_schema(description: &str, values: &[&str]) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .enum_values(Some(values.iter().copied()))
        .into()
}

/// How a model key is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Text,
    /// Epoch milliseconds.
    Millis,
    Count,
    /// `MetricMap`: string to number.
    Metrics,
    /// Any JSON object, keys sorted at every level.
    Generic,
    /// A JSON array as stored.
    List,
    /// A JSON array as stored, or `null`.
    NullableList,
}

/// One key of a model, in output order.
#[derive(Debug, Clone, Copy)]
struct ModelKey {
    key: &'static str,
    shape: Shape,
    /// Omitted when `""`, 0, `{}` or `[]` (Go's `omitempty`).
    omitted_when_empty: bool,
    description: &'static str,
}

const fn key(
    key: &'static str,
    shape: Shape,
    omitted_when_empty: bool,
    description: &'static str,
) -> ModelKey {
    ModelKey {
        key,
        shape,
        omitted_when_empty,
        description,
    }
}

const OMITTED: bool = true;
const ALWAYS: bool = false;

/// The 13 metric maps shared by units and usage, in output order.
const METRIC_KEYS: [ModelKey; 13] = [
    key("total_time_seconds", Shape::Metrics, OMITTED, "`walltime` in seconds and the allocation × time products `alloc_cputime`, `alloc_cpumemtime`, `alloc_gputime`, `alloc_gpumemtime` (which weight the `avg_*` means of current usage)."),
    key("avg_cpu_usage", Shape::Metrics, OMITTED, "Average CPU usage, percent (e.g. key `global`)."),
    key("avg_cpu_mem_usage", Shape::Metrics, OMITTED, "Average CPU memory usage, percent."),
    key("total_cpu_energy_usage_kwh", Shape::Metrics, OMITTED, "CPU energy, kWh."),
    key("total_cpu_emissions_gms", Shape::Metrics, OMITTED, "CPU emissions, grams of CO2 equivalent, per emission-factor source (e.g. `rte`, `owid`, `emaps`)."),
    key("avg_gpu_usage", Shape::Metrics, OMITTED, "Average GPU usage, percent."),
    key("avg_gpu_mem_usage", Shape::Metrics, OMITTED, "Average GPU memory usage, percent."),
    key("total_gpu_energy_usage_kwh", Shape::Metrics, OMITTED, "GPU energy, kWh."),
    key("total_gpu_emissions_gms", Shape::Metrics, OMITTED, "GPU emissions, grams of CO2 equivalent, per emission-factor source."),
    key("total_io_write_stats", Shape::Metrics, OMITTED, "Storage writes: `bytes`, `requests`."),
    key("total_io_read_stats", Shape::Metrics, OMITTED, "Storage reads: `bytes`, `requests`."),
    key("total_ingress_stats", Shape::Metrics, OMITTED, "Network ingress: `bytes`, `packets`."),
    key("total_egress_stats", Shape::Metrics, OMITTED, "Network egress: `bytes`, `packets`."),
];

const UNIT_HEAD_KEYS: [ModelKey; 16] = [
    key("cluster_id", Shape::Text, OMITTED, "Cluster identifier."),
    key(
        "resource_manager",
        Shape::Text,
        OMITTED,
        "`slurm`, `openstack` or `k8s`.",
    ),
    key(
        "uuid",
        Shape::Text,
        ALWAYS,
        "Unit identifier (SLURM job id, VM or pod UUID). Always present: `\"\"` when not selected.",
    ),
    key("name", Shape::Text, OMITTED, "Unit name."),
    key(
        "project",
        Shape::Text,
        OMITTED,
        "SLURM account, OpenStack project or k8s namespace.",
    ),
    key("groupname", Shape::Text, OMITTED, "Group of the owner."),
    key("username", Shape::Text, OMITTED, "Owner."),
    key(
        "created_at",
        Shape::Text,
        OMITTED,
        "Creation time, `YYYY-MM-DDTHH:MM:SS±hhmm` (in `timezone` when given).",
    ),
    key(
        "started_at",
        Shape::Text,
        OMITTED,
        "Start time, same format; `Unknown` or `N/A` before the start.",
    ),
    key(
        "ended_at",
        Shape::Text,
        OMITTED,
        "End time, same format; `Unknown` (SLURM) or `N/A` (OpenStack, k8s) while running.",
    ),
    key(
        "created_at_ts",
        Shape::Millis,
        OMITTED,
        "Creation time, Unix epoch milliseconds.",
    ),
    key(
        "started_at_ts",
        Shape::Millis,
        OMITTED,
        "Start time, Unix epoch milliseconds; 0 before the start.",
    ),
    key(
        "ended_at_ts",
        Shape::Millis,
        OMITTED,
        "End time, Unix epoch milliseconds; 0 while running.",
    ),
    key(
        "elapsed",
        Shape::Text,
        OMITTED,
        "Elapsed time as stored, e.g. `00:49:22` or `2-00:10:20`.",
    ),
    key(
        "state",
        Shape::Text,
        OMITTED,
        "State as the resource manager reports it, e.g. `COMPLETED`, `RUNNING`, `ACTIVE`.",
    ),
    key(
        "allocation",
        Shape::Generic,
        OMITTED,
        "Allocated resources as stored (CPUs, memory, GPUs...).",
    ),
];

const UNIT_TAGS_KEY: ModelKey = key(
    "tags",
    Shape::Generic,
    OMITTED,
    "Metadata of the resource manager (e.g. QoS, annotations).",
);

const USAGE_HEAD_KEYS: [ModelKey; 6] = [
    key("cluster_id", Shape::Text, ALWAYS, "Cluster identifier."),
    key(
        "resource_manager",
        Shape::Text,
        ALWAYS,
        "`slurm`, `openstack` or `k8s`.",
    ),
    key(
        "num_units",
        Shape::Count,
        ALWAYS,
        "Number of units aggregated.",
    ),
    key("project", Shape::Text, ALWAYS, "Project."),
    key("groupname", Shape::Text, ALWAYS, "Group."),
    key("username", Shape::Text, ALWAYS, "User."),
];

const STAT_KEYS: [ModelKey; 7] = [
    key("cluster_id", Shape::Text, ALWAYS, "Cluster identifier."),
    key(
        "resource_manager",
        Shape::Text,
        ALWAYS,
        "Resource manager of an arbitrary unit of the cluster.",
    ),
    key("num_units", Shape::Count, ALWAYS, "Units."),
    key(
        "num_inactive_units",
        Shape::Count,
        ALWAYS,
        "Units that have ended.",
    ),
    key(
        "num_active_units",
        Shape::Count,
        ALWAYS,
        "Units still running.",
    ),
    key("num_projects", Shape::Count, ALWAYS, "Distinct projects."),
    key("num_users", Shape::Count, ALWAYS, "Distinct users."),
];

const PROJECT_KEYS: [ModelKey; 6] = [
    key("uid", Shape::Text, OMITTED, "Identifier in the resource manager."),
    key("cluster_id", Shape::Text, ALWAYS, "Cluster identifier."),
    key("resource_manager", Shape::Text, ALWAYS, "`slurm`, `openstack` or `k8s`."),
    key("name", Shape::Text, ALWAYS, "Project name."),
    key("users", Shape::NullableList, ALWAYS, "Members as stored (`<namespace>:svc` service accounts included); `null` when none were recorded."),
    key("tags", Shape::List, OMITTED, "Tags as stored."),
];

const USER_KEYS: [ModelKey; 6] = [
    key(
        "uid",
        Shape::Text,
        OMITTED,
        "Identifier in the resource manager.",
    ),
    key(
        "cluster_id",
        Shape::Text,
        ALWAYS,
        "Cluster identifier (`all` for admin users).",
    ),
    key(
        "resource_manager",
        Shape::Text,
        OMITTED,
        "`slurm`, `openstack` or `k8s`.",
    ),
    key("name", Shape::Text, ALWAYS, "User name."),
    key(
        "projects",
        Shape::List,
        OMITTED,
        "Projects the user is in, as stored.",
    ),
    key(
        "tags",
        Shape::List,
        OMITTED,
        "Tags as stored (for admin users, the source: `ceems` or `grafana`).",
    ),
];

const CLUSTER_KEYS: [ModelKey; 2] = [
    key("id", Shape::Text, ALWAYS, "Cluster identifier."),
    key("manager", Shape::Text, ALWAYS, "Resource manager."),
];

/// Every key of a unit, in output order.
fn unit_keys() -> Vec<ModelKey> {
    UNIT_HEAD_KEYS
        .into_iter()
        .chain(METRIC_KEYS)
        .chain([UNIT_TAGS_KEY])
        .collect()
}

/// Every key of a usage row, in output order.
fn usage_keys() -> Vec<ModelKey> {
    USAGE_HEAD_KEYS.into_iter().chain(METRIC_KEYS).collect()
}

/// The `field` values of units: every key of a unit, from the model.
fn unit_field_names() -> Vec<&'static str> {
    crate::model::UnitField::all()
        .map(crate::model::UnitField::name)
        .collect()
}

/// The `field` values of usage: every key of a usage row, from the model.
fn usage_field_names() -> Vec<&'static str> {
    crate::model::UsageField::all()
        .map(crate::model::UsageField::name)
        .collect()
}

/// The `groupby` values current usage accepts.
const GROUP_BY_COLUMNS: [&str; 3] = ["cluster_id", "resource_manager", "groupname"];

/// The `errorType` values, with their HTTP status in the description.
const ERROR_TYPES: [&str; 5] = [
    "bad_data",
    "unauthorized",
    "forbidden",
    "internal",
    "unavailable",
];

fn key_schema(model_key: &ModelKey) -> RefOr<Schema> {
    let description = if model_key.omitted_when_empty {
        let when = match model_key.shape {
            Shape::Text => "`\"\"`",
            Shape::Millis | Shape::Count => "0",
            Shape::Metrics | Shape::Generic => "`{}`",
            Shape::List | Shape::NullableList => "`[]` or `null`",
        };
        format!("{} Omitted when {when}.", model_key.description)
    } else {
        model_key.description.to_owned()
    };
    match model_key.shape {
        Shape::Text => string_schema(&description),
        Shape::Millis | Shape::Count => int64_schema(&description),
        Shape::Metrics => RefBuilder::new()
            .ref_location_from_schema_name("MetricMap")
            .description(Some(description))
            .into(),
        Shape::Generic => object_schema(&description),
        Shape::List => ArrayBuilder::new()
            .description(Some(description))
            .items(ObjectBuilder::new().schema_type(SchemaType::AnyValue))
            .into(),
        Shape::NullableList => ArrayBuilder::new()
            .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
            .description(Some(description))
            .items(ObjectBuilder::new().schema_type(SchemaType::AnyValue))
            .into(),
    }
}

/// An object with exactly these keys, in this order; the always-present ones required.
fn model_schema(description: &str, keys: &[ModelKey]) -> Object {
    let mut builder = ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(description))
        .additional_properties(Some(AdditionalProperties::FreeForm(false)));
    for model_key in keys {
        builder = builder.property(model_key.key, key_schema(model_key));
        if !model_key.omitted_when_empty {
            builder = builder.required(model_key.key);
        }
    }
    builder.build()
}

/// `{status: "success", data, warnings}`.
fn success_envelope(description: &str, data: RefOr<Schema>) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(description))
        .property(
            "status",
            enum_schema("Always `success` here.", &["success"]),
        )
        .required("status")
        .property("data", data)
        .required("data")
        .property(
            "warnings",
            ArrayBuilder::new()
                .description(Some(
                    "Partial problems, e.g. `failed to scan 2 rows`. Omitted when empty.",
                ))
                .items(string_schema("A warning.")),
        )
        .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        .build()
}

fn array_of(schema_name: &str) -> RefOr<Schema> {
    ArrayBuilder::new()
        .items(Ref::from_schema_name(schema_name))
        .into()
}

fn nullable_array_of(schema_name: &str) -> RefOr<Schema> {
    ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .items(Ref::from_schema_name(schema_name))
        .into()
}

fn null_schema(description: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::Null)
        .description(Some(description))
        .into()
}

fn error_envelope() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(
            "An error answer. HTTP status per `errorType`: `bad_data` 400, `unauthorized` \
401, `forbidden` 403, `internal` 500, `unavailable` 503.",
        ))
        .property("status", enum_schema("Always `error`.", &["error"]))
        .required("status")
        .property("data", null_schema("Always `null`."))
        .required("data")
        .property("errorType", enum_schema("The kind of error.", &ERROR_TYPES))
        .required("errorType")
        .property("error", string_schema("The message. Omitted when empty."))
        .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        .build()
}

fn components() -> utoipa::openapi::Components {
    let metric_map = ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(
            "Sub-metric name to value, keys sorted. Integral values print without a point \
(`970588160`), others with exactly 8 decimals (`21.22149394`); NaN and infinities print \
as 0. An empty map is omitted.",
        ))
        .additional_properties(Some(AdditionalProperties::RefOr(
            ObjectBuilder::new().schema_type(Type::Number).into(),
        )))
        .examples([json!({"global": 21.22149394})]);
    let mut builder = ComponentsBuilder::new()
        .schema(
            "Unit",
            model_schema(
                "A compute unit: a SLURM job, an OpenStack VM or a Kubernetes pod.",
                &unit_keys(),
            ),
        )
        .schema(
            "Usage",
            model_schema(
                "Usage of one user in one project: aggregated over a window (current) or \
over the units' lifetime (global).",
                &usage_keys(),
            ),
        )
        .schema(
            "Stat",
            model_schema("Unit counts of one cluster.", &STAT_KEYS),
        )
        .schema(
            "Project",
            model_schema(
                "A project (SLURM account, OpenStack project, k8s namespace) in one cluster.",
                &PROJECT_KEYS,
            ),
        )
        .schema(
            "User",
            model_schema(
                "A user in one cluster, or an admin user (`cluster_id` `all`).",
                &USER_KEYS,
            ),
        )
        .schema(
            "Cluster",
            model_schema("A cluster seen in the units table.", &CLUSTER_KEYS),
        )
        .schema("MetricMap", metric_map)
        .schema(
            "UnitsEnvelope",
            success_envelope("Units.", array_of("Unit")),
        )
        .schema(
            "UsageEnvelope",
            success_envelope("Usage rows.", array_of("Usage")),
        )
        .schema(
            "CurrentUsageEnvelope",
            success_envelope(
                "Usage rows, or `null` when nothing needed aggregation.",
                nullable_array_of("Usage"),
            ),
        )
        .schema(
            "ProjectsEnvelope",
            success_envelope("Projects.", array_of("Project")),
        )
        .schema(
            "UsersEnvelope",
            success_envelope("Users.", array_of("User")),
        )
        .schema(
            "ClustersEnvelope",
            success_envelope("Clusters.", array_of("Cluster")),
        )
        .schema(
            "StatsEnvelope",
            success_envelope("Statistics.", array_of("Stat")),
        )
        .schema(
            "VerifyEnvelope",
            success_envelope("The ownership check passed.", null_schema("Always `null`.")),
        )
        .schema("ErrorEnvelope", error_envelope())
        .security_scheme(
            BASIC_AUTH,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some(
                        "Only when the web config file (`--web.config.file`) has \
`basic_auth_users` (bcrypt hashes); then every route needs it, `/health` and `/swagger/` \
included.",
                    ))
                    .build(),
            ),
        )
        .security_scheme(
            USER_HEADER_SCHEME,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                USER_HEADER,
                "The user the request acts for (Grafana sends it). Header names are \
configurable with `--web.user-header-name`.",
            ))),
        );
    for (name, response) in shared_responses() {
        builder = builder.response(name, response);
    }
    builder.build()
}

fn tags() -> Vec<utoipa::openapi::tag::Tag> {
    [
        (
            "units",
            "Compute units: SLURM jobs, OpenStack VMs, Kubernetes pods.",
        ),
        ("usage", "Usage aggregated per user and project."),
        ("projects", "Projects and their members."),
        ("users", "Users and their projects; admin users."),
        ("clusters", "Clusters known to the server."),
        ("stats", "Per-cluster unit counts."),
        ("demo", "Random mock data."),
        ("server", "Health, landing page and this documentation."),
    ]
    .into_iter()
    .map(|(name, description)| {
        TagBuilder::new()
            .name(name)
            .description(Some(description))
            .build()
    })
    .collect()
}

// ---------------------------------------------------------------------------------------
// Serving.

/// The document could not be serialized (a build defect, caught by the tests).
#[derive(Debug, thiserror::Error)]
#[error("the OpenAPI document does not serialize: {0}")]
pub struct InvalidContract(String);

/// The document as YAML, as committed in `openapi.yaml`.
pub fn openapi_yaml(document: &OpenApi) -> Result<String, InvalidContract> {
    yaml_serde::to_string(document).map_err(|error| InvalidContract(error.to_string()))
}

/// Serves the Swagger UI assets, `doc.json` and `openapi.yaml`.
#[derive(Clone)]
pub struct SwaggerUi {
    config: Arc<utoipa_swagger_ui::Config<'static>>,
    doc_json: Bytes,
    doc_yaml: Bytes,
}

impl SwaggerUi {
    /// The UI for the root route prefix.
    pub fn new() -> Result<Self, InvalidContract> {
        Self::for_route_prefix("")
    }

    /// The UI serving the document whose API paths carry `route_prefix`. The UI itself
    /// stays under `/swagger/`.
    pub fn for_route_prefix(route_prefix: &str) -> Result<Self, InvalidContract> {
        let document = openapi_document(route_prefix);
        let doc_json =
            serde_json::to_vec(&document).map_err(|error| InvalidContract(error.to_string()))?;
        let doc_yaml = openapi_yaml(&document)?;
        Ok(Self {
            config: Arc::new(utoipa_swagger_ui::Config::from("/swagger/doc.json")),
            doc_json: Bytes::from(doc_json),
            doc_yaml: Bytes::from(doc_yaml),
        })
    }

    /// Answers a GET under `/swagger/`.
    pub fn serve(&self, path: &str) -> Reply {
        let tail = path.strip_prefix("/swagger/").unwrap_or("");
        match tail {
            "" => {
                let mut reply = Reply::empty(StatusCode::MOVED_PERMANENTLY);
                reply
                    .headers
                    .insert(LOCATION, HeaderValue::from_static("/swagger/index.html"));
                reply
            }
            "doc.json" => typed(self.doc_json.clone(), "application/json"),
            "openapi.yaml" => typed(self.doc_yaml.clone(), "application/yaml"),
            _ => match utoipa_swagger_ui::serve(tail, self.config.clone()) {
                Ok(Some(file)) => {
                    let mut reply = typed(Bytes::from(file.bytes.into_owned()), "");
                    if let Ok(value) = HeaderValue::from_str(&file.content_type) {
                        reply.headers.insert(CONTENT_TYPE, value);
                    }
                    reply
                }
                Ok(None) => Reply::plain(StatusCode::NOT_FOUND, "404 page not found\n"),
                Err(error) => {
                    tracing::error!(%error, "failed to serve a Swagger UI asset");
                    Reply::plain(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error\n")
                }
            },
        }
    }
}

fn typed(body: Bytes, content_type: &'static str) -> Reply {
    let mut reply = Reply::empty(StatusCode::OK);
    if !content_type.is_empty() {
        reply
            .headers
            .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    reply.body = body;
    reply.compressible = true;
    reply
}

#[cfg(test)]
mod tests {
    use std::fmt;
    use std::path::PathBuf;
    use std::time::Duration;

    use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
    use yaml_serde::Value as Yaml;

    use super::*;
    use crate::http::envelope::ErrorType;
    use crate::http::filters::{self, QueryParams, WindowRules};
    use crate::http::routes::RouteTable;
    use crate::model::json::to_go_json;
    use crate::model::query::GroupBy;
    use crate::model::{
        Cluster, Generic, List, MetricMap, Metrics, Project, Stat, Unit, UnitField, Usage,
        UsageField, User,
    };

    /// The document as its YAML value: mappings keep their key order.
    fn document_value(route_prefix: &str) -> Yaml {
        let text = openapi_yaml(&openapi_document(route_prefix)).expect("document serializes");
        yaml_serde::from_str(&text).expect("the generated YAML parses")
    }

    fn keys_of(mapping: &Yaml) -> Vec<String> {
        mapping
            .as_mapping()
            .map(|mapping| {
                mapping
                    .keys()
                    .map(|key| key.as_str().unwrap_or("<non-string key>").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn strings_of(sequence: &Yaml) -> Vec<String> {
        sequence
            .as_sequence()
            .map(|items| {
                items
                    .iter()
                    .map(|item| item.as_str().unwrap_or("<non-string>").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    // -----------------------------------------------------------------------------------
    // The committed contract.

    fn contract_path() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("openapi.yaml")
    }

    fn render(value: &Yaml) -> String {
        let shorten = |text: &str| {
            if text.chars().count() > 60 {
                format!("{}…", text.chars().take(60).collect::<String>())
            } else {
                text.to_owned()
            }
        };
        match value {
            Yaml::Mapping(mapping) => format!("{{…{} keys}}", mapping.len()),
            Yaml::Sequence(items) => format!("[…{} items]", items.len()),
            Yaml::String(text) => format!("{:?}", shorten(text)),
            scalar => shorten(yaml_serde::to_string(scalar).unwrap_or_default().trim_end()),
        }
    }

    /// `path.key`, or `path["key"]` for keys that are not plain identifiers.
    fn child(path: &str, key: &Yaml) -> String {
        match key.as_str() {
            Some(name)
                if !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$') =>
            {
                format!("{path}.{name}")
            }
            Some(name) => format!("{path}[{name:?}]"),
            None => format!("{path}[{}]", render(key)),
        }
    }

    /// Lists where `generated` differs from `committed`, key order included.
    fn differences(path: &str, committed: &Yaml, generated: &Yaml, out: &mut Vec<String>) {
        match (committed, generated) {
            (Yaml::Mapping(old), Yaml::Mapping(new)) => {
                for (key, old_value) in old {
                    let name = child(path, key);
                    match new.get(key) {
                        Some(new_value) => differences(&name, old_value, new_value, out),
                        None => out.push(format!("- {name}: only in openapi.yaml")),
                    }
                }
                for (key, new_value) in new {
                    if !old.contains_key(key) {
                        out.push(format!(
                            "+ {}: only in the generated document ({})",
                            child(path, key),
                            render(new_value)
                        ));
                    }
                }
                let old_order: Vec<&Yaml> =
                    old.keys().filter(|key| new.contains_key(*key)).collect();
                let new_order: Vec<&Yaml> =
                    new.keys().filter(|key| old.contains_key(*key)).collect();
                if old_order != new_order {
                    out.push(format!("~ {path}: keys in another order"));
                }
            }
            (Yaml::Sequence(old), Yaml::Sequence(new)) => {
                if old.len() != new.len() {
                    out.push(format!(
                        "~ {path}: {} items in openapi.yaml, {} generated",
                        old.len(),
                        new.len()
                    ));
                }
                for (index, (old_item, new_item)) in old.iter().zip(new).enumerate() {
                    differences(&format!("{path}[{index}]"), old_item, new_item, out);
                }
            }
            (old, new) if old != new => out.push(format!(
                "~ {path}: openapi.yaml has {}, generated {}",
                render(old),
                render(new)
            )),
            _ => {}
        }
    }

    #[test]
    fn committed_contract_is_the_generated_document() {
        let generated_text = openapi_yaml(&openapi_document("")).expect("the document serializes");
        if std::env::var("UPDATE_OPENAPI").is_ok_and(|value| value == "1") {
            std::fs::write(contract_path(), &generated_text).expect("openapi.yaml is writable");
        }
        let committed_text = std::fs::read_to_string(contract_path()).unwrap_or_default();
        let committed: Yaml = yaml_serde::from_str(&committed_text).unwrap_or(Yaml::Null);
        let generated: Yaml = yaml_serde::from_str(&generated_text).expect("generated YAML parses");
        let mut found = Vec::new();
        differences("$", &committed, &generated, &mut found);
        let shown: Vec<&str> = found.iter().take(40).map(String::as_str).collect();
        assert!(
            found.is_empty(),
            "openapi.yaml differs from the generated document in {} places:\n{}{}\n\
             If the change is intended, rewrite it with:\n  \
             UPDATE_OPENAPI=1 cargo test --lib http::openapi",
            found.len(),
            shown.join("\n"),
            if found.len() > shown.len() {
                "\n…"
            } else {
                ""
            }
        );
    }

    #[test]
    fn the_diff_names_what_changed() {
        let old: Yaml = yaml_serde::from_str("a: 1\nb: {c: x, d: [1, 2]}\ne: 3\n/p: {}\n").unwrap();
        let new: Yaml = yaml_serde::from_str("b: {d: [1], c: y}\na: 1\nf: 4\n/p: {}\n").unwrap();
        let mut found = Vec::new();
        differences("$", &old, &new, &mut found);
        assert_eq!(
            found,
            vec![
                "~ $.b.c: openapi.yaml has \"x\", generated \"y\"",
                "~ $.b.d: 2 items in openapi.yaml, 1 generated",
                "~ $.b: keys in another order",
                "- $.e: only in openapi.yaml",
                "+ $.f: only in the generated document (4)",
                "~ $: keys in another order",
            ]
        );
        let mut found = Vec::new();
        differences("$", &new, &new, &mut found);
        assert!(found.is_empty());
        let changed: Yaml = yaml_serde::from_str("/p: {get: 1}\n").unwrap();
        let original: Yaml = yaml_serde::from_str("/p: {}\n").unwrap();
        let mut found = Vec::new();
        differences("$", &original, &changed, &mut found);
        assert_eq!(
            found,
            vec!["+ $[\"/p\"].get: only in the generated document (1)"]
        );
    }

    // -----------------------------------------------------------------------------------
    // Routes.

    /// Every route variant; the match fails to compile when a variant is added.
    fn every_route_variant() -> Vec<Route> {
        let all = vec![
            Route::Landing,
            Route::Health,
            Route::Swagger,
            Route::DemoUnits,
            Route::DemoUsage,
            Route::Units { admin: false },
            Route::Units { admin: true },
            Route::Verify,
            Route::CurrentUsage { admin: false },
            Route::CurrentUsage { admin: true },
            Route::GlobalUsage { admin: false },
            Route::GlobalUsage { admin: true },
            Route::Projects { admin: false },
            Route::Projects { admin: true },
            Route::Users { admin: false },
            Route::Users { admin: true },
            Route::Clusters,
            Route::Stats { current: false },
            Route::Stats { current: true },
        ];
        for route in &all {
            match route {
                Route::Landing
                | Route::Health
                | Route::Swagger
                | Route::DemoUnits
                | Route::DemoUsage
                | Route::Units { .. }
                | Route::Verify
                | Route::CurrentUsage { .. }
                | Route::GlobalUsage { .. }
                | Route::Projects { .. }
                | Route::Users { .. }
                | Route::Clusters
                | Route::Stats { .. } => {}
            }
        }
        all
    }

    /// The exact paths of a route table, sorted.
    fn route_table_paths(table: &RouteTable) -> Vec<String> {
        let mut paths: Vec<String> = table.paths().map(str::to_owned).collect();
        paths.sort();
        paths
    }

    /// A concrete path for a documented path template.
    fn concrete(path: &str) -> String {
        path.replace("{asset}", "swagger-ui.css")
    }

    fn check_routes_match(route_prefix: &str) {
        let table = RouteTable::new(route_prefix);
        let document = openapi_document(route_prefix);
        let api_base = format!("{route_prefix}/api/v1");

        let mut documented: Vec<(String, Route)> = Vec::new();
        for route in DOCUMENTED_ROUTES {
            for endpoint in endpoints(route, &api_base) {
                documented.push((endpoint.path, route));
            }
        }
        let document_paths: Vec<&String> = document.paths.paths.keys().collect();
        assert_eq!(
            document_paths.len(),
            documented.len(),
            "two documented routes share a path"
        );

        for (path, route) in &documented {
            assert_eq!(
                table.lookup(&concrete(path)),
                Some(*route),
                "documented path {path} is not {route:?} in the route table"
            );
            let item = document.paths.get_path_item(path).expect("documented");
            assert!(item.get.is_some(), "{path} has no GET operation");
        }

        let table_paths = route_table_paths(&table);
        assert!(
            table_paths.len() >= 18,
            "could not read the route table's paths: {table_paths:?}"
        );
        for path in &table_paths {
            assert!(
                documented.iter().any(|(documented, _)| documented == path),
                "route table path {path} has no operation in the document"
            );
        }

        for route in every_route_variant() {
            assert!(
                documented
                    .iter()
                    .any(|(_, documented)| *documented == route),
                "{route:?} is not documented"
            );
        }
    }

    #[test]
    fn every_route_has_an_operation_and_every_operation_a_route() {
        check_routes_match("");
        check_routes_match("/ceems");
    }

    #[test]
    fn operation_ids_are_unique() {
        let document = openapi_document("");
        let mut ids: Vec<String> = document
            .paths
            .paths
            .values()
            .filter_map(|item| item.get.as_ref()?.operation_id.clone())
            .collect();
        let count = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), count);
        assert_eq!(count, document.paths.paths.len(), "an operation has no id");
    }

    // -----------------------------------------------------------------------------------
    // Parameters.

    const MULTI_VALUED: [&str; 6] = ["cluster_id", "project", "user", "uuid", "field", "groupby"];
    const PRESENCE_FLAGS: [&str; 3] = ["running", "experimental", "__terminated"];

    fn operations(document: &Yaml) -> Vec<(String, &Yaml)> {
        let paths = document["paths"].as_mapping().expect("paths");
        paths
            .iter()
            .map(|(path, item)| (path.as_str().unwrap_or("").to_owned(), &item["get"]))
            .collect()
    }

    fn parameter<'a>(operation: &'a Yaml, name: &str) -> Option<&'a Yaml> {
        operation["parameters"]
            .as_sequence()?
            .iter()
            .find(|parameter| parameter["name"].as_str() == Some(name))
    }

    #[test]
    fn parameters_have_the_documented_shapes() {
        let document = document_value("");
        for (path, operation) in operations(&document) {
            let Some(parameters) = operation["parameters"].as_sequence() else {
                continue;
            };
            for parameter in parameters {
                let name = parameter["name"].as_str().unwrap_or("");
                let schema = &parameter["schema"];
                if parameter["in"].as_str() != Some("query") {
                    continue;
                }
                if MULTI_VALUED.contains(&name) {
                    assert_eq!(schema["type"].as_str(), Some("array"), "{path} {name}");
                    assert_eq!(parameter["style"].as_str(), Some("form"), "{path} {name}");
                    assert_eq!(parameter["explode"].as_bool(), Some(true), "{path} {name}");
                } else {
                    assert_ne!(schema["type"].as_str(), Some("array"), "{path} {name}");
                }
                if name == "from" || name == "to" {
                    assert_eq!(schema["type"].as_str(), Some("integer"), "{path} {name}");
                    assert_eq!(schema["format"].as_str(), Some("int64"), "{path} {name}");
                    let description = parameter["description"].as_str().unwrap_or("");
                    assert!(description.contains("**seconds**"), "{path} {name}");
                }
                if PRESENCE_FLAGS.contains(&name) {
                    assert_eq!(schema["type"].as_str(), Some("string"), "{path} {name}");
                    let description = parameter["description"].as_str().unwrap_or("");
                    assert!(description.starts_with("Presence flag"), "{path} {name}");
                }
            }
        }
    }

    #[test]
    fn user_routes_require_the_user_header() {
        let document = document_value("");
        let mut checked = 0;
        for (path, operation) in operations(&document) {
            let needs_user = operation["security"]
                .as_sequence()
                .is_some_and(|requirements| {
                    requirements
                        .iter()
                        .all(|requirement| !requirement[USER_HEADER_SCHEME].is_null())
                });
            let header = parameter(operation, USER_HEADER);
            let route = RouteTable::new("").lookup(&concrete(&path));
            let public = matches!(
                route,
                Some(
                    Route::Landing
                        | Route::Health
                        | Route::Swagger
                        | Route::DemoUnits
                        | Route::DemoUsage
                )
            );
            assert_eq!(needs_user, !public, "{path}: security");
            assert_eq!(header.is_some(), !public, "{path}: user header parameter");
            if let Some(header) = header {
                assert_eq!(header["in"].as_str(), Some("header"));
                assert_eq!(header["required"].as_bool(), Some(true));
                checked += 1;
            }
            let admin = path.ends_with("/admin");
            assert_eq!(
                !operation["responses"]["403"].is_null(),
                admin || path.ends_with("/units/verify"),
                "{path}: 403"
            );
        }
        assert_eq!(checked, 14);
    }

    fn field_enum(document: &Yaml, path: &str) -> Vec<String> {
        let operation = &document["paths"][path]["get"];
        let field = parameter(operation, "field").expect("a field parameter");
        strings_of(&field["schema"]["items"]["enum"])
    }

    #[test]
    fn field_enums_are_the_models_fields() {
        let document = document_value("");
        let unit_fields: Vec<String> = UnitField::all()
            .map(|field| field.name().to_owned())
            .collect();
        let usage_fields: Vec<String> = UsageField::all()
            .map(|field| field.name().to_owned())
            .collect();
        for path in ["/api/v1/units", "/api/v1/units/admin"] {
            assert_eq!(field_enum(&document, path), unit_fields, "{path}");
        }
        for path in [
            "/api/v1/usage/current",
            "/api/v1/usage/current/admin",
            "/api/v1/usage/global",
            "/api/v1/usage/global/admin",
        ] {
            assert_eq!(field_enum(&document, path), usage_fields, "{path}");
        }
    }

    #[test]
    fn groupby_enum_is_what_the_filters_accept() {
        let document = document_value("");
        for path in ["/api/v1/usage/current", "/api/v1/usage/current/admin"] {
            let operation = &document["paths"][path]["get"];
            let groupby = parameter(operation, "groupby").expect("groupby");
            let values = strings_of(&groupby["schema"]["items"]["enum"]);
            for value in &values {
                let parsed = GroupBy::parse(value).expect("documented groupby value parses");
                assert_eq!(parsed.column(), value);
            }
            // Every other usage column is refused, so the list is complete.
            for field in UsageField::all() {
                if GroupBy::parse(field.name()).is_some() {
                    assert!(
                        values.iter().any(|value| value == field.name()),
                        "{field:?}"
                    );
                }
            }
        }
    }

    // -----------------------------------------------------------------------------------
    // Errors.

    #[test]
    fn documented_bad_data_messages_are_what_the_filters_answer() {
        let rules = WindowRules {
            time_zone: chrono_tz::Tz::UTC,
            max_period: Duration::from_secs(86_400),
            now: 1_700_000_000,
        };
        let mut checked = 0;
        for route in DOCUMENTED_ROUTES {
            for case in bad_data_cases(route) {
                let params = QueryParams::parse(case.sample_query);
                let result: Result<(), ApiError> = match route {
                    Route::Units { admin } => {
                        filters::unit_query(&params, "usr1", admin, &rules).map(drop)
                    }
                    Route::Verify => filters::verify_query(&params, "usr1").map(drop),
                    Route::CurrentUsage { admin } => {
                        filters::current_usage_query(&params, "usr1", admin, &rules).map(drop)
                    }
                    Route::GlobalUsage { admin } => {
                        filters::global_usage_query(&params, "usr1", admin).map(drop)
                    }
                    Route::Stats { current } => {
                        filters::stats_query(&params, current, &rules).map(drop)
                    }
                    other => panic!("{other:?} documents a 400 but parses no parameters"),
                };
                let error = result.expect_err(case.sample_query);
                assert_eq!(error.kind, ErrorType::BadData, "{route:?} {}", case.name);
                assert_eq!(error.message, case.message, "{route:?} {}", case.name);
                checked += 1;
            }
        }
        assert_eq!(checked, 4 * 2 + 1 + 6 * 2 + 2 + 3);
    }

    #[test]
    fn error_types_are_the_envelopes() {
        let every = [
            ErrorType::BadData,
            ErrorType::Unauthorized,
            ErrorType::Forbidden,
            ErrorType::Internal,
            ErrorType::Unavailable,
        ];
        for kind in every {
            // Fails to compile when a kind is added, so the list above stays complete.
            match kind {
                ErrorType::BadData
                | ErrorType::Unauthorized
                | ErrorType::Forbidden
                | ErrorType::Internal
                | ErrorType::Unavailable => {}
            }
        }
        let names: Vec<&str> = every.iter().map(|kind| kind.wire().0).collect();
        assert_eq!(names, ERROR_TYPES);
        let document = document_value("");
        let envelope = &document["components"]["schemas"]["ErrorEnvelope"];
        let description = envelope["description"].as_str().unwrap_or("");
        for kind in every {
            let (name, status) = kind.wire();
            assert!(
                description.contains(&format!("`{name}` {}", status.as_u16())),
                "{name} {status}"
            );
        }
        assert_eq!(
            strings_of(&envelope["properties"]["errorType"]["enum"]),
            names
        );
    }

    // -----------------------------------------------------------------------------------
    // Models and envelopes.

    /// A JSON object's entries in their order in the text.
    struct OrderedObject(Vec<(String, serde_json::Value)>);

    impl<'de> Deserialize<'de> for OrderedObject {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct Entries;
            impl<'de> Visitor<'de> for Entries {
                type Value = OrderedObject;
                fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                    formatter.write_str("a JSON object")
                }
                fn visit_map<A: MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<OrderedObject, A::Error> {
                    let mut entries = Vec::new();
                    while let Some(entry) = map.next_entry::<String, serde_json::Value>()? {
                        entries.push(entry);
                    }
                    Ok(OrderedObject(entries))
                }
            }
            deserializer.deserialize_map(Entries)
        }
    }

    fn ordered(json: &[u8]) -> OrderedObject {
        let text = std::str::from_utf8(json).expect("UTF-8");
        serde_json::from_str(text.trim_end_matches('\n')).expect("a JSON object")
    }

    fn map(text: &str) -> MetricMap {
        MetricMap::decode(text).expect("valid metric map")
    }

    /// Every map filled; a struct literal so a new metric breaks the build here.
    fn full_metrics() -> Metrics {
        Metrics {
            total_time_seconds: map(r#"{"walltime":3600,"alloc_cputime":7200}"#),
            avg_cpu_usage: map(r#"{"global":12.5}"#),
            avg_cpu_mem_usage: map(r#"{"global":40}"#),
            total_cpu_energy_usage_kwh: map(r#"{"total":0.25}"#),
            total_cpu_emissions_gms: map(r#"{"rte":17.5}"#),
            avg_gpu_usage: map(r#"{"global":90}"#),
            avg_gpu_mem_usage: map(r#"{"global":60}"#),
            total_gpu_energy_usage_kwh: map(r#"{"total":1.5}"#),
            total_gpu_emissions_gms: map(r#"{"rte":158}"#),
            total_io_write_stats: map(r#"{"bytes":1000,"requests":10}"#),
            total_io_read_stats: map(r#"{"bytes":2000,"requests":20}"#),
            total_ingress_stats: map(r#"{"bytes":3000,"packets":30}"#),
            total_egress_stats: map(r#"{"bytes":4000,"packets":40}"#),
        }
    }

    fn full_unit() -> Unit {
        Unit {
            cluster_id: "slurm-0".into(),
            resource_manager: "slurm".into(),
            uuid: "1479765".into(),
            name: "job".into(),
            project: "acc1".into(),
            groupname: "grp1".into(),
            username: "usr1".into(),
            created_at: "2024-10-15T16:20:00+0200".into(),
            started_at: "2024-10-15T16:28:50+0200".into(),
            ended_at: "2024-10-15T17:18:12+0200".into(),
            created_at_ts: 1_729_002_000_000,
            started_at_ts: 1_729_002_530_000,
            ended_at_ts: 1_729_005_492_000,
            elapsed: "00:49:22".into(),
            state: "COMPLETED".into(),
            allocation: Generic::decode(r#"{"cpus":2,"mem":"4G"}"#).expect("valid"),
            metrics: full_metrics(),
            tags: Generic::decode(r#"{"qos":"normal"}"#).expect("valid"),
        }
    }

    fn full_usage() -> Usage {
        Usage {
            cluster_id: "slurm-0".into(),
            resource_manager: "slurm".into(),
            num_units: 3,
            project: "acc1".into(),
            groupname: "grp1".into(),
            username: "usr1".into(),
            metrics: full_metrics(),
        }
    }

    /// (schema name, a fully populated instance, an instance with every zero value).
    fn models() -> Vec<(&'static str, Vec<u8>, Vec<u8>)> {
        vec![
            (
                "Unit",
                to_go_json(&full_unit()),
                to_go_json(&Unit::default()),
            ),
            (
                "Usage",
                to_go_json(&full_usage()),
                to_go_json(&Usage::default()),
            ),
            (
                "Stat",
                to_go_json(&Stat {
                    cluster_id: "slurm-0".into(),
                    resource_manager: "slurm".into(),
                    num_units: 10,
                    num_inactive_units: 7,
                    num_active_units: 3,
                    num_projects: 2,
                    num_users: 4,
                }),
                to_go_json(&Stat::default()),
            ),
            (
                "Project",
                to_go_json(&Project {
                    uid: "1000".into(),
                    cluster_id: "slurm-0".into(),
                    resource_manager: "slurm".into(),
                    name: "acc1".into(),
                    users: List::from_strings(&["usr1", "usr2"]),
                    tags: List::from_strings(&["gpu"]),
                }),
                to_go_json(&Project::default()),
            ),
            (
                "User",
                to_go_json(&User {
                    uid: "1001".into(),
                    cluster_id: "slurm-0".into(),
                    resource_manager: "slurm".into(),
                    name: "usr1".into(),
                    projects: List::from_strings(&["acc1"]),
                    tags: List::from_strings(&["ceems"]),
                }),
                to_go_json(&User::default()),
            ),
            (
                "Cluster",
                to_go_json(&Cluster {
                    id: "slurm-0".into(),
                    manager: "slurm".into(),
                }),
                to_go_json(&Cluster::default()),
            ),
        ]
    }

    /// Whether `value` has the JSON type `schema` (one of this document's key schemas).
    fn has_schema_type(value: &serde_json::Value, schema: &Yaml) -> bool {
        if schema["$ref"].as_str() == Some("#/components/schemas/MetricMap") {
            return value.as_object().is_some_and(|map| {
                !map.is_empty() && map.values().all(serde_json::Value::is_number)
            });
        }
        let types = match &schema["type"] {
            Yaml::String(one) => vec![one.clone()],
            many => strings_of(many),
        };
        types.iter().any(|kind| match kind.as_str() {
            "string" => value.is_string(),
            "integer" => value.is_i64(),
            "number" => value.is_number(),
            "object" => value.is_object(),
            "array" => value.is_array(),
            "null" => value.is_null(),
            _ => false,
        })
    }

    #[test]
    fn model_schemas_have_the_models_keys_in_output_order() {
        let document = document_value("");
        for (name, full, empty) in models() {
            let schema = &document["components"]["schemas"][name];
            let properties = keys_of(&schema["properties"]);
            let full = ordered(&full);
            let full_keys: Vec<&str> = full.0.iter().map(|(key, _)| key.as_str()).collect();
            assert_eq!(
                full_keys, properties,
                "{name}: keys of a fully populated value"
            );
            for (key, value) in &full.0 {
                let property = &schema["properties"][key.as_str()];
                assert!(
                    has_schema_type(value, property),
                    "{name}.{key}: {value} vs {property:?}"
                );
            }
            let empty = ordered(&empty);
            let empty_keys: Vec<&str> = empty.0.iter().map(|(key, _)| key.as_str()).collect();
            assert_eq!(
                empty_keys,
                strings_of(&schema["required"]),
                "{name}: keys that stay when empty must be exactly the required ones"
            );
            for (key, value) in &empty.0 {
                let property = &schema["properties"][key.as_str()];
                assert!(
                    has_schema_type(value, property),
                    "{name}.{key}: {value} vs {property:?}"
                );
            }
            assert_eq!(
                schema["additionalProperties"].as_bool(),
                Some(false),
                "{name}"
            );
        }
    }

    #[test]
    fn envelope_schemas_have_the_envelopes_keys_in_order() {
        let document = document_value("");
        let schemas = &document["components"]["schemas"];
        let success = envelope::success(&[full_unit()], &["failed to scan 1 rows".to_owned()]);
        let success = ordered(&success.body);
        let keys: Vec<&str> = success.0.iter().map(|(key, _)| key.as_str()).collect();
        for name in [
            "UnitsEnvelope",
            "UsageEnvelope",
            "CurrentUsageEnvelope",
            "ProjectsEnvelope",
            "UsersEnvelope",
            "ClustersEnvelope",
            "StatsEnvelope",
            "VerifyEnvelope",
        ] {
            assert_eq!(keys_of(&schemas[name]["properties"]), keys, "{name}");
            assert_eq!(
                strings_of(&schemas[name]["required"]),
                ["status", "data"],
                "{name}"
            );
        }
        let null = ordered(&envelope::success_null(&[]).body);
        assert_eq!(null.0.len(), 2);
        assert!(null.0[1].1.is_null());
        assert_eq!(
            schemas["VerifyEnvelope"]["properties"]["data"]["type"].as_str(),
            Some("null")
        );
        assert_eq!(
            strings_of(&schemas["CurrentUsageEnvelope"]["properties"]["data"]["type"]),
            ["array", "null"]
        );
        let error = envelope::error(&ApiError::bad_data(INVALID_FIELDS));
        let error = ordered(&error.body);
        let keys: Vec<&str> = error.0.iter().map(|(key, _)| key.as_str()).collect();
        assert_eq!(keys_of(&schemas["ErrorEnvelope"]["properties"]), keys);
    }

    // -----------------------------------------------------------------------------------
    // Serving.

    #[test]
    fn serves_the_ui_and_the_generated_document() {
        let swagger = SwaggerUi::for_route_prefix("/ceems").expect("serializes");
        let index = swagger.serve("/swagger/index.html");
        assert_eq!(index.status, StatusCode::OK);
        assert!(index.headers[CONTENT_TYPE]
            .to_str()
            .expect("ASCII")
            .starts_with("text/html"));
        let initializer = swagger.serve("/swagger/swagger-initializer.js");
        assert!(std::str::from_utf8(&initializer.body)
            .expect("UTF-8")
            .contains("/swagger/doc.json"));

        let doc = swagger.serve("/swagger/doc.json");
        assert_eq!(doc.headers[CONTENT_TYPE], "application/json");
        let served: serde_json::Value = serde_json::from_slice(&doc.body).expect("JSON");
        let expected =
            serde_json::to_value(openapi_document("/ceems")).expect("document serializes");
        assert_eq!(served, expected);
        assert_eq!(served["openapi"], "3.1.0");
        assert!(served["paths"]["/ceems/api/v1/units"].is_object());
        assert!(served["paths"]["/health"].is_object());

        let yaml = swagger.serve("/swagger/openapi.yaml");
        assert_eq!(yaml.headers[CONTENT_TYPE], "application/yaml");
        let served_yaml: serde_json::Value = yaml_serde::from_slice(&yaml.body).expect("YAML");
        assert_eq!(served_yaml, expected);

        assert_eq!(
            swagger.serve("/swagger/").status,
            StatusCode::MOVED_PERMANENTLY
        );
        assert_eq!(swagger.serve("/swagger/nope").status, StatusCode::NOT_FOUND);
        let root = SwaggerUi::new()
            .expect("serializes")
            .serve("/swagger/doc.json");
        let root: serde_json::Value = serde_json::from_slice(&root.body).expect("JSON");
        assert!(root["paths"]["/api/v1/units"].is_object());
    }
}
