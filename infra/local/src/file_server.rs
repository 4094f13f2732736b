//! The demo's stand-in for the provider's file host: `GET /<anything>.mp3` answers generated
//! audio (see [`crate::audio`]), anything else 404.

use bytes::Bytes;
use http_body_util::Full;
use hyper::http::{self, HeaderValue, Method, StatusCode};
use hyper::{Request, Response};
use tokio::net::TcpListener;

use crate::shutdown::StopSignal;

/// The answer for one request's method and path.
pub fn respond(method: &Method, path: &str) -> Response<Full<Bytes>> {
    let name = path.rsplit('/').next().unwrap_or_default();
    if !name.ends_with(".mp3") || name.len() == ".mp3".len() {
        return plain(StatusCode::NOT_FOUND, "not found");
    }
    if method != Method::GET && method != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    }
    let audio = crate::audio::stem_mp3(name);
    let length = audio.len();
    let body = if method == Method::HEAD { Bytes::new() } else { Bytes::from(audio) };
    let mut response = Response::new(Full::new(body));
    let headers = response.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("audio/mpeg"));
    headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(length));
    response
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response
}

/// Serve until `stop`.
pub async fn serve(listener: TcpListener, stop: StopSignal) {
    crate::http::serve(
        listener,
        |req: Request<hyper::body::Incoming>| {
            let response = respond(req.method(), req.uri().path());
            tracing::debug!("file server: {} {} -> {}", req.method(), req.uri().path(), response.status().as_u16());
            async move { response }
        },
        stop,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn serves_generated_mp3_with_its_length() {
        let response = respond(&Method::GET, "/s/a3c2da5a-b364-4422-adb5-2692b9c26d33_Bass.mp3");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "audio/mpeg");
        let expected = crate::audio::stem_mp3("a3c2da5a-b364-4422-adb5-2692b9c26d33_Bass.mp3");
        assert_eq!(response.headers()["content-length"], expected.len().to_string().as_str());
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body.as_ref(), expected.as_slice());
    }

    #[tokio::test]
    async fn head_has_length_but_no_body() {
        let response = respond(&Method::HEAD, "/s/x_Drums.mp3");
        assert_eq!(
            response.headers()["content-length"],
            crate::audio::stem_mp3("x_Drums.mp3").len().to_string().as_str()
        );
        assert!(response.into_body().collect().await.unwrap().to_bytes().is_empty());
    }

    #[test]
    fn other_paths_are_missing() {
        assert_eq!(respond(&Method::GET, "/").status(), StatusCode::NOT_FOUND);
        assert_eq!(respond(&Method::GET, "/s/.mp3").status(), StatusCode::NOT_FOUND);
        assert_eq!(respond(&Method::GET, "/s/cover.png").status(), StatusCode::NOT_FOUND);
        assert_eq!(respond(&Method::POST, "/s/a.mp3").status(), StatusCode::METHOD_NOT_ALLOWED);
    }
}
