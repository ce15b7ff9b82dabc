//! The responses that whole kinds of routes share, added to the generated OpenAPI document in
//! one place instead of being repeated (and forgotten) on each route's annotation.
//!
//! They follow from the extractors a handler uses, which the annotations declare too:
//! - `security` (`AuthUser`, `AdminUser`, `AuthDevice`): 401 `unauthorized`, with
//!   `WWW-Authenticate`;
//! - a JSON request body (`ApiJson`): 400 `invalid_json`, 413 `payload_too_large` and 415
//!   `unsupported_media_type`;
//! - path or query parameters (`ApiPath`, `ApiQuery`): 400 `bad_request` for a malformed one.
//!
//! A response a route documents itself (its own 400 says which fields it checks) is kept.

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::{ContentBuilder, ObjectBuilder, OpenApi, Ref, RefOr, ResponseBuilder, Type};

/// Adds the shared responses to every operation of `doc`.
pub fn add_common_responses(doc: &mut OpenApi) {
    for item in doc.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ];
        for operation in operations.into_iter().flatten() {
            add_to_operation(operation);
        }
    }
}

fn add_to_operation(op: &mut Operation) {
    let authenticated = op.security.as_ref().is_some_and(|s| !s.is_empty());
    let json_body = op
        .request_body
        .as_ref()
        .is_some_and(|body| body.content.contains_key("application/json"));
    let has_parameters = op.parameters.as_ref().is_some_and(|params| {
        params
            .iter()
            .any(|p| matches!(p.parameter_in, ParameterIn::Path | ParameterIn::Query))
    });

    if authenticated {
        let challenge = HeaderBuilder::new()
            .schema(ObjectBuilder::new().schema_type(Type::String))
            .description(Some("Bearer realm=\"unhidra\""))
            .build();
        add(
            op,
            "401",
            error_response("Missing, malformed, expired or revoked credentials (`unauthorized`)")
                .header("WWW-Authenticate", challenge),
        );
    }
    if json_body {
        add(
            op,
            "400",
            error_response("Malformed JSON, unknown fields or wrong types (`invalid_json`)"),
        );
        add(
            op,
            "413",
            error_response("The body is over `max_body_bytes` (`payload_too_large`)"),
        );
        add(
            op,
            "415",
            error_response("The body is not `application/json` (`unsupported_media_type`)"),
        );
    }
    if has_parameters {
        add(
            op,
            "400",
            error_response("A malformed path or query parameter (`bad_request`)"),
        );
    }
}

fn add(op: &mut Operation, status: &str, response: ResponseBuilder) {
    op.responses
        .responses
        .entry(status.to_owned())
        .or_insert_with(|| RefOr::T(response.build()));
}

/// A response with the API's error body.
fn error_response(description: &str) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("ErrorBody")))
            .build(),
    )
}
