//! Files in chat channels: uploads, downloads and what makes serving them safe.
//!
//! - [`blobs`]: the content-addressed blob store under `<data_dir>/files`.
//! - [`routes`]: `POST /api/v1/channels/{id}/files`, `GET /api/v1/files/{id}` and
//!   `GET /api/v1/files/{id}/info`, for members of the file's channel only.
//!
//! An uploaded file is whatever its uploader made it, so a download must never be rendered
//! by the browser as a page: it is always an attachment, never sniffed, sandboxed by CSP,
//! and carries its declared type only when that type is inert ([`served_type`]); HTML, SVG
//! and everything else unknown are `application/octet-stream`.

pub mod blobs;
pub mod routes;

use std::fmt::Write as _;

use axum::http::HeaderValue;
use unhidra_proto::ErrorCode;

use crate::http::ApiError;

/// The type of a file whose uploader declared none.
pub const DEFAULT_TYPE: &str = "application/octet-stream";

/// Checks a file name given at upload. Names are refused, not repaired, so the name shown is
/// the name given: 1 to 255 bytes, no path (`/`, `\`, `.`, `..`), no control characters, and
/// no bidirectional formatting characters (which can make `gnp.exe` display as `exe.png`).
pub fn file_name(raw: &str) -> Result<&str, ApiError> {
    let bidi = |c: char| matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
    let ok = (1..=255).contains(&raw.len())
        && !matches!(raw, "." | "..")
        && !raw
            .chars()
            .any(|c| c.is_control() || bidi(c) || c == '/' || c == '\\');
    if ok {
        Ok(raw)
    } else {
        Err(ApiError::bad_request(
            ErrorCode::InvalidField,
            "name must be 1 to 255 bytes without '/', '\\', control or bidirectional \
             formatting characters, and not '.' or '..'",
        ))
    }
}

/// The media type an upload declares in its `Content-Type` (parameters dropped, lowercased),
/// or [`DEFAULT_TYPE`] when there is none.
pub fn declared_type(header: Option<&HeaderValue>) -> Result<String, ApiError> {
    let invalid = || {
        ApiError::bad_request(
            ErrorCode::InvalidField,
            "Content-Type must be a media type such as image/png",
        )
    };
    let Some(value) = header else {
        return Ok(DEFAULT_TYPE.to_owned());
    };
    let text = value.to_str().map_err(|_| invalid())?;
    let essence = text
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if essence.is_empty() {
        return Ok(DEFAULT_TYPE.to_owned());
    }
    // RFC 9110 tokens: type "/" subtype.
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    match essence.split_once('/') {
        Some((kind, sub)) if essence.len() <= 127 && token(kind) && token(sub) => Ok(essence),
        _ => Err(invalid()),
    }
}

/// The `Content-Type` a download is served with: the declared type when it is inert (a
/// browser that displays it runs no script), otherwise [`DEFAULT_TYPE`].
pub fn served_type(declared: &str) -> &'static str {
    match declared {
        "image/png" => "image/png",
        "image/jpeg" => "image/jpeg",
        "image/gif" => "image/gif",
        "image/webp" => "image/webp",
        "image/avif" => "image/avif",
        "application/pdf" => "application/pdf",
        "text/plain" => "text/plain; charset=utf-8",
        "audio/mpeg" => "audio/mpeg",
        "audio/ogg" => "audio/ogg",
        "audio/wav" => "audio/wav",
        "audio/webm" => "audio/webm",
        "audio/aac" => "audio/aac",
        "audio/flac" => "audio/flac",
        "audio/mp4" => "audio/mp4",
        "video/mp4" => "video/mp4",
        "video/webm" => "video/webm",
        "video/ogg" => "video/ogg",
        "video/quicktime" => "video/quicktime",
        _ => DEFAULT_TYPE,
    }
}

/// `attachment` with the name twice (RFC 6266): `filename` in plain ASCII for old clients
/// (anything else, quotes, backslashes and `%` become `_`), and `filename*` percent-encoded
/// UTF-8 (RFC 8187), which current browsers prefer.
pub fn content_disposition(name: &str) -> Result<HeaderValue, ApiError> {
    let ascii: String = name
        .chars()
        .map(|c| match c {
            '"' | '\\' | '%' => '_',
            c if c == ' ' || c.is_ascii_graphic() => c,
            _ => '_',
        })
        .collect();
    let mut encoded = String::with_capacity(name.len() * 3);
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(char::from(b));
        } else {
            let _ = write!(encoded, "%{b:02X}");
        }
    }
    HeaderValue::from_str(&format!(
        "attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}"
    ))
    .map_err(ApiError::internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_refused_not_repaired() {
        for good in [
            "report.pdf",
            "Photo 2024-05-01 (1).JPG",
            "naïve résumé ☀.txt",
            "quote\"d.txt",
            ".hidden",
            "a..b",
            &"x".repeat(255),
        ] {
            assert_eq!(file_name(good).unwrap(), good);
        }
        for bad in [
            "",
            ".",
            "..",
            "dir/file.txt",
            "C:\\Users\\me\\file.txt",
            "tab\there",
            "new\nline",
            "nul\0byte",
            "del\u{7f}",
            "c1\u{85}",
            "gnp\u{202E}.exe",
            "isolate\u{2066}x",
            &"x".repeat(256),
            // 255 characters but 510 bytes.
            &"é".repeat(255),
        ] {
            let err = file_name(bad).unwrap_err();
            assert_eq!(err.code(), ErrorCode::InvalidField, "{bad:?}");
        }
    }

    #[test]
    fn declared_types_are_lowercased_media_types_without_parameters() {
        let declared = |v: &str| declared_type(Some(&HeaderValue::from_str(v).unwrap()));
        assert_eq!(declared_type(None).unwrap(), DEFAULT_TYPE);
        assert_eq!(declared("").unwrap(), DEFAULT_TYPE);
        assert_eq!(declared("image/PNG").unwrap(), "image/png");
        assert_eq!(
            declared("Text/Plain; charset=latin1").unwrap(),
            "text/plain"
        );
        assert_eq!(
            declared("application/vnd.openxmlformats-officedocument.wordprocessingml.document")
                .unwrap(),
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
        );
        for bad in [
            "png",
            "image/",
            "/png",
            "image/png/x",
            "ima ge/png",
            "a/b c",
        ] {
            let err = declared(bad).unwrap_err();
            assert_eq!(err.code(), ErrorCode::InvalidField, "{bad:?}");
        }
        let latin1 = HeaderValue::from_bytes(b"image/p\xe9ng").unwrap();
        assert!(declared_type(Some(&latin1)).is_err());
    }

    #[test]
    fn only_inert_types_are_served_as_declared() {
        assert_eq!(served_type("image/png"), "image/png");
        assert_eq!(served_type("application/pdf"), "application/pdf");
        assert_eq!(served_type("text/plain"), "text/plain; charset=utf-8");
        assert_eq!(served_type("video/mp4"), "video/mp4");
        for active in [
            "text/html",
            "image/svg+xml",
            "application/xhtml+xml",
            "application/xml",
            "text/xml",
            "text/javascript",
            "application/javascript",
            "text/css",
            "application/x-shockwave-flash",
            "multipart/x-mixed-replace",
            "text/plain; charset=utf-7",
            "",
        ] {
            assert_eq!(served_type(active), DEFAULT_TYPE, "{active}");
        }
    }

    #[test]
    fn content_disposition_carries_an_ascii_name_and_the_exact_one() {
        let cd = |n: &str| content_disposition(n).unwrap().to_str().unwrap().to_owned();
        assert_eq!(
            cd("report.pdf"),
            "attachment; filename=\"report.pdf\"; filename*=UTF-8''report.pdf"
        );
        assert_eq!(
            cd("a \"b\" 100%.txt"),
            "attachment; filename=\"a _b_ 100_.txt\"; filename*=UTF-8''a%20%22b%22%20100%25.txt"
        );
        assert_eq!(
            cd("été ☀;x.png"),
            "attachment; filename=\"_t_ _;x.png\"; \
             filename*=UTF-8''%C3%A9t%C3%A9%20%E2%98%80%3Bx.png"
        );
    }
}
