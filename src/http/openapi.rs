//! The OpenAPI contract (`openapi.yaml`, compiled in) and the Swagger UI under `/swagger/`,
//! served with no internet access at build or run time.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE, LOCATION};
use http::StatusCode;

use super::envelope::Reply;

/// The committed contract.
pub const OPENAPI_YAML: &str = include_str!("../../openapi.yaml");

/// Serves the Swagger UI assets, `doc.json` and `openapi.yaml`.
#[derive(Clone)]
pub struct SwaggerUi {
    config: Arc<utoipa_swagger_ui::Config<'static>>,
    doc_json: Bytes,
}

/// The compiled-in contract does not parse (a build defect, caught by the tests).
#[derive(Debug, thiserror::Error)]
#[error("openapi.yaml is not valid: {0}")]
pub struct InvalidContract(String);

impl SwaggerUi {
    pub fn new() -> Result<Self, InvalidContract> {
        let document: serde_json::Value = yaml_serde::from_str(OPENAPI_YAML)
            .map_err(|error| InvalidContract(error.to_string()))?;
        let doc_json =
            serde_json::to_vec(&document).map_err(|error| InvalidContract(error.to_string()))?;
        Ok(Self {
            config: Arc::new(utoipa_swagger_ui::Config::from("/swagger/doc.json")),
            doc_json: Bytes::from(doc_json),
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
            "openapi.yaml" => typed(
                Bytes::from_static(OPENAPI_YAML.as_bytes()),
                "application/yaml",
            ),
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
    use super::*;

    #[test]
    fn serves_the_ui_and_the_contract() {
        let swagger = SwaggerUi::new().unwrap();
        let index = swagger.serve("/swagger/index.html");
        assert_eq!(index.status, StatusCode::OK);
        assert!(index.headers[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        let initializer = swagger.serve("/swagger/swagger-initializer.js");
        assert!(std::str::from_utf8(&initializer.body)
            .unwrap()
            .contains("/swagger/doc.json"));
        let doc = swagger.serve("/swagger/doc.json");
        let document: serde_json::Value = serde_json::from_slice(&doc.body).unwrap();
        assert!(document["openapi"].as_str().unwrap().starts_with("3."));
        assert_eq!(
            swagger.serve("/swagger/").status,
            StatusCode::MOVED_PERMANENTLY
        );
        assert_eq!(swagger.serve("/swagger/nope").status, StatusCode::NOT_FOUND);
    }
}
