//! The API router and the OpenAPI document generated from the same route list, so the
//! document cannot miss a route.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{middleware, Json, Router};
use tower_http::trace::TraceLayer;
use unhidra_proto::ErrorCode;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::middleware::{protective_headers, time_limit, track_metrics, TimeLimits};
use super::openapi::add_common_responses;
use super::ApiError;
use crate::state::SharedState;
use crate::{auth, chat, devices, files, gateway, ops};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Unhidra API",
        description = "Accounts, sessions and the device registry. Errors are always \
            `{\"error\":{\"code\",\"message\"}}` with a stable code (see docs/api.md).",
        license(name = "AGPL-3.0-only")
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "auth", description = "Accounts and sessions"),
        (name = "devices", description = "The device registry"),
        (name = "channels", description = "Channels (membership decides who may read and post)"),
        (name = "files", description = "Files in channels (members only; always downloaded as attachments)"),
        (name = "gateway", description = "The WebSocket endpoint (see docs/protocol.md)"),
        (name = "admin", description = "Administrators only"),
        (name = "ops", description = "Health, readiness and signing keys"),
    )
)]
struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("A user's access token from /api/v1/auth/login"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "device_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A device's API key, unh_dk_…"))
                    .build(),
            ),
        );
    }
}

fn routes() -> OpenApiRouter<SharedState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(auth::routes::register))
        .routes(routes!(auth::routes::login))
        .routes(routes!(auth::routes::refresh))
        .routes(routes!(auth::routes::logout))
        .routes(routes!(auth::routes::logout_all))
        .routes(routes!(auth::routes::me))
        .routes(routes!(devices::routes::create, devices::routes::list))
        .routes(routes!(devices::routes::get, devices::routes::revoke))
        .routes(routes!(devices::routes::whoami))
        .routes(routes!(devices::routes::link_channel))
        .routes(routes!(devices::telemetry_routes::series))
        .routes(routes!(devices::telemetry_routes::metrics))
        .routes(routes!(devices::commands::create))
        .routes(routes!(devices::commands::get))
        .routes(routes!(chat::routes::create, chat::routes::list))
        .routes(routes!(chat::routes::update))
        .routes(routes!(chat::routes::add_member, chat::routes::members))
        .routes(routes!(chat::routes::devices))
        .routes(routes!(chat::routes::open_direct))
        .routes(routes!(chat::routes::user))
        .routes(routes!(chat::routes::lookup_user))
        .routes(routes!(chat::routes::remove_member))
        .routes(routes!(chat::routes::history))
        .routes(routes!(chat::messages::edit, chat::messages::delete))
        .routes(routes!(chat::messages::revisions))
        .routes(routes!(
            chat::messages::add_reaction,
            chat::messages::remove_reaction
        ))
        .routes(routes!(chat::routes::thread))
        .routes(routes!(chat::routes::mark_read))
        .routes(routes!(chat::routes::search))
        .routes(routes!(files::routes::upload))
        .routes(routes!(files::routes::download))
        .routes(routes!(files::routes::info))
        .routes(routes!(gateway::handshake::upgrade))
        .routes(routes!(ops::audit))
        .routes(routes!(ops::connections))
        .routes(routes!(ops::close_connection))
        .routes(routes!(chat::moderation::queue))
        .routes(routes!(chat::moderation::release))
        .routes(routes!(chat::moderation::reject))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::jwks))
}

/// The routes and their OpenAPI document, with the responses shared by kinds of routes
/// (see `openapi.rs`).
fn routes_and_document() -> (Router<SharedState>, utoipa::openapi::OpenApi) {
    let (router, mut document) = routes().split_for_parts();
    add_common_responses(&mut document);
    (router, document)
}

/// The OpenAPI document of every route.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes_and_document().1
}

/// The complete API: routes, the OpenAPI document, error fallbacks and middleware.
pub fn api_router(state: SharedState) -> Router {
    let (router, document) = routes_and_document();
    let document = Arc::new(document);
    router
        .route(
            "/api/v1/openapi.json",
            get(move || {
                let document = Arc::clone(&document);
                async move { Json(document) }
            }),
        )
        .merge(crate::web::router())
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorCode::MethodNotAllowed,
                "method not allowed on this route",
            )
        })
        .route_layer(middleware::from_fn(track_metrics))
        .layer(middleware::from_fn(protective_headers))
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(middleware::from_fn_with_state(
            TimeLimits {
                request: Duration::from_secs(u64::from(state.config.request_timeout_secs)),
                upload: Duration::from_secs(u64::from(state.config.files.upload_timeout_secs)),
            },
            time_limit,
        ))
        // Failures are logged where they happen (ApiError::internal logs 500s with their
        // cause); expected refusals such as 503 `overloaded` must not flood the error log.
        .layer(TraceLayer::new_for_http().on_failure(()))
        .with_state(state)
}
