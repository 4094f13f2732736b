//! The Lambda's application object: configuration and AWS clients, built once per instance.

use lambda_http::{Body, Request, Response};

use crate::Config;
use crate::aws::AwsPorts;
use crate::handler::Handler;

/// The ingest function with its clients.
pub struct App {
    handler: Handler<AwsPorts>,
}

impl App {
    pub fn new(config: Config, sdk: &aws_config::SdkConfig) -> App {
        if config.is_unauthenticated() {
            tracing::warn!("ALLOW_UNAUTHENTICATED=true: accepting callbacks from anyone");
        }
        App { handler: Handler::new(&config, AwsPorts::new(&config, sdk)) }
    }

    /// Answer one request; every outcome is an HTTP response.
    pub async fn handle(&self, req: Request) -> Response<Body> {
        self.handler.handle(req).await
    }
}
