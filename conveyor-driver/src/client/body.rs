//! Reading a response body with a size cap: the API client never holds more of an answer in
//! memory than `CONVEYOR_API_MAX_RESPONSE_BYTES`, whatever the server sends.

/// Why a body was not read whole.
pub(crate) enum ReadError {
    /// Over the limit: the size announced by `Content-Length`, or read so far.
    TooLarge(u64),
    /// The connection failed or timed out.
    Transport(reqwest::Error),
}

/// The body of `response`, if it has at most `limit` bytes. A `Content-Length` over the limit
/// fails before anything is read; a body without one stops being read at the chunk that
/// passes it.
pub(crate) async fn read(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, ReadError> {
    let limit_u64 = u64::try_from(limit).unwrap_or(u64::MAX);
    if let Some(declared) = response.content_length().filter(|&n| n > limit_u64) {
        return Err(ReadError::TooLarge(declared));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(ReadError::Transport)? {
        let size = body.len().saturating_add(chunk.len());
        if size > limit {
            return Err(ReadError::TooLarge(u64::try_from(size).unwrap_or(u64::MAX)));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
