//! The HTTP edge: the router, the one error type, the extractors and the middleware.

pub mod error;
pub mod extract;
mod middleware;
mod openapi;
mod router;

pub use error::ApiError;
pub use router::{api_router, openapi};
