//! One instant query and what became of it: a vector of per-uuid values, a permanent
//! failure (the query or the answer is wrong: retrying will not help) or a transient one
//! (the TSDB could not answer now).

use std::collections::HashMap;

use prometheus_http_query::response::{Data, PromqlResult};
use serde::Deserialize;

use crate::client::error_chain;

/// Why a query gave no data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum QueryError {
    /// Not reached, timed out, HTTP 5xx or 429, or an API error of type `timeout`,
    /// `unavailable` or `internal`: the whole window is to be retried.
    Transient(String),
    /// HTTP 4xx, `bad_data`/`execution` errors, a non-vector result or a body that is no
    /// Prometheus answer: logged, and this query gives no data.
    Permanent(String),
}

/// The parameters of every query of one update.
#[derive(Debug, Clone)]
pub(super) struct QueryParameters {
    /// Evaluation time: the window end, in seconds.
    pub time: String,
    /// `lookback_delta`: the scrape interval as a Go duration.
    pub lookback_delta: String,
}

/// A successful answer: uuid → value of the samples that carry a `uuid` label, and the
/// warnings Prometheus attached.
#[derive(Debug, Default)]
pub(super) struct QueryAnswer {
    pub values: HashMap<String, f64>,
    pub warnings: Vec<String>,
}

#[derive(Deserialize)]
struct Envelope {
    status: String,
    #[serde(default)]
    data: Option<PromqlResult>,
    #[serde(rename = "errorType", default)]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    warnings: Vec<String>,
}

/// API error types that say "the TSDB cannot answer now" rather than "this query is wrong".
const TRANSIENT_ERROR_TYPES: [&str; 3] = ["timeout", "unavailable", "internal"];

/// Sends the instant query by POST (form), and again by GET when the server refuses POST
/// (403, 405 or 501).
pub(super) async fn instant_query(
    client: &prometheus_http_query::Client,
    query: &str,
    parameters: &QueryParameters,
) -> Result<QueryAnswer, QueryError> {
    let request = client
        .query(query)
        .query("time", &parameters.time)
        .query("lookback_delta", &parameters.lookback_delta);
    let mut response = request.clone().post_raw().await.map_err(transport)?;
    if matches!(response.status().as_u16(), 403 | 405 | 501) {
        response = request.get_raw().await.map_err(transport)?;
    }
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|error| QueryError::Transient(error_chain(&error)))?;
    classify_answer(status, &body)
}

fn transport(error: prometheus_http_query::Error) -> QueryError {
    QueryError::Transient(error_chain(&error))
}

/// Turns an HTTP status and body into values or the kind of failure.
pub(super) fn classify_answer(
    status: reqwest::StatusCode,
    body: &[u8],
) -> Result<QueryAnswer, QueryError> {
    let transient_status =
        status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS;
    let envelope: Envelope = match serde_json::from_slice(body) {
        Ok(envelope) => envelope,
        Err(error) => {
            let message = format!(
                "HTTP {status}: not a Prometheus answer ({error}): {}",
                snippet(body)
            );
            return Err(if transient_status {
                QueryError::Transient(message)
            } else {
                QueryError::Permanent(message)
            });
        }
    };
    if envelope.status != "success" {
        let error_type = envelope.error_type.unwrap_or_default();
        let message = format!(
            "HTTP {status}: {error_type}: {}",
            envelope.error.unwrap_or_default()
        );
        return Err(
            if transient_status || TRANSIENT_ERROR_TYPES.contains(&error_type.as_str()) {
                QueryError::Transient(message)
            } else {
                QueryError::Permanent(message)
            },
        );
    }
    if transient_status {
        return Err(QueryError::Transient(format!("HTTP {status}")));
    }
    if !status.is_success() {
        return Err(QueryError::Permanent(format!("HTTP {status}")));
    }
    let data = envelope
        .data
        .ok_or_else(|| QueryError::Permanent("a success answer without data".to_owned()))?;
    let samples = match data.into_inner().0 {
        Data::Vector(samples) => samples,
        Data::Matrix(_) => {
            return Err(QueryError::Permanent(
                "the result is a range vector (matrix), not an instant vector".to_owned(),
            ))
        }
        Data::Scalar(_) => {
            return Err(QueryError::Permanent(
                "the result is a scalar, not an instant vector".to_owned(),
            ))
        }
    };
    let values = samples
        .into_iter()
        .filter_map(|sample| {
            let (mut labels, sample) = sample.into_inner();
            labels.remove("uuid").map(|uuid| (uuid, sample.value()))
        })
        .collect();
    Ok(QueryAnswer {
        values,
        warnings: envelope.warnings,
    })
}

/// The start of a body for a log line.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(200) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use reqwest::StatusCode;

    use super::*;

    #[test]
    fn a_vector_gives_the_values_of_samples_with_a_uuid() {
        let body =
            br#"{"status":"success","warnings":["careful"],"data":{"resultType":"vector","result":[
            {"metric":{"uuid":"1"},"value":[1700000000,"2.5"]},
            {"metric":{"uuid":"2","instance":"a"},"value":[1700000000,"NaN"]},
            {"metric":{"instance":"b"},"value":[1700000000,"7"]},
            {"metric":{"uuid":"3"},"value":[1700000000,"-Inf"]}]}}"#;
        let answer = classify_answer(StatusCode::OK, body).unwrap();
        assert_eq!(answer.values.len(), 3);
        assert_eq!(answer.values["1"], 2.5);
        assert!(answer.values["2"].is_nan());
        assert_eq!(answer.values["3"], f64::NEG_INFINITY);
        assert_eq!(answer.warnings, ["careful"]);
    }

    #[test]
    fn bad_queries_and_odd_answers_are_permanent() {
        let bad_data =
            br#"{"status":"error","errorType":"bad_data","error":"1:5: parse error: unexpected"}"#;
        assert_eq!(
            classify_answer(StatusCode::BAD_REQUEST, bad_data).unwrap_err(),
            QueryError::Permanent(
                "HTTP 400 Bad Request: bad_data: 1:5: parse error: unexpected".to_owned()
            )
        );
        let matrix = br#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        assert!(matches!(
            classify_answer(StatusCode::OK, matrix),
            Err(QueryError::Permanent(message)) if message.contains("matrix")
        ));
        let scalar = br#"{"status":"success","data":{"resultType":"scalar","result":[1,"1"]}}"#;
        assert!(matches!(
            classify_answer(StatusCode::OK, scalar),
            Err(QueryError::Permanent(message)) if message.contains("scalar")
        ));
        assert!(matches!(
            classify_answer(StatusCode::NOT_FOUND, b"404 page not found"),
            Err(QueryError::Permanent(message)) if message.ends_with("404 page not found")
        ));
        let too_many = br#"{"status":"error","errorType":"execution","error":"query processing would load too many samples into memory in query execution"}"#;
        assert!(matches!(
            classify_answer(StatusCode::UNPROCESSABLE_ENTITY, too_many),
            Err(QueryError::Permanent(_))
        ));
    }

    #[test]
    fn server_trouble_is_transient() {
        let timeout = br#"{"status":"error","errorType":"timeout","error":"query timed out in expression evaluation"}"#;
        assert!(matches!(
            classify_answer(StatusCode::SERVICE_UNAVAILABLE, timeout),
            Err(QueryError::Transient(_))
        ));
        assert!(matches!(
            classify_answer(StatusCode::BAD_GATEWAY, b"<html>bad gateway</html>"),
            Err(QueryError::Transient(_))
        ));
        assert!(matches!(
            classify_answer(StatusCode::TOO_MANY_REQUESTS, b"slow down"),
            Err(QueryError::Transient(_))
        ));
        let unavailable = br#"{"status":"error","errorType":"unavailable","error":"not ready"}"#;
        assert!(matches!(
            classify_answer(StatusCode::OK, unavailable),
            Err(QueryError::Transient(_))
        ));
    }
}
