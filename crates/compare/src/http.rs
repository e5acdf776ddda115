//! Just enough HTTP/1.x to compare answers: the request line, the status and headers of a
//! response, where its body starts.

/// Headers left out of a comparison unless the user says otherwise: they differ between any two
/// servers or any two moments.
pub const DEFAULT_IGNORED: &[&str] = &[
    "date",
    "server",
    "age",
    "expires",
    "last-modified",
    "etag",
    "set-cookie",
    "x-request-id",
    "keep-alive",
    "connection",
];
