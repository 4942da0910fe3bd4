//! Bytes across the boundary: the module's buffers and headers handed to
//! Envoy for one call, Envoy's buffers copied out before a hook returns
//! (a callout's answer among them), and Envoy's log.

use std::ops::Range;
use std::os::raw::c_char;

use tollgate_filter::host::LogLevel;

use super::raw::{
    self, EnvoyBuffer, EnvoyHttpHeader, ModuleBuffer, ModuleHttpHeader, CALLOUT_SUCCESS,
};

/// A module buffer over `bytes`, valid while `bytes` is.
pub fn module_buffer(bytes: &[u8]) -> ModuleBuffer {
    ModuleBuffer {
        ptr: bytes.as_ptr().cast(),
        length: bytes.len(),
    }
}

/// No buffer (a null value removes a header; an empty detail is allowed).
pub const NO_BUFFER: ModuleBuffer = ModuleBuffer {
    ptr: std::ptr::null(),
    length: 0,
};

/// An empty Envoy buffer, for Envoy to fill.
pub const EMPTY_ENVOY_BUFFER: EnvoyBuffer = EnvoyBuffer {
    ptr: std::ptr::null(),
    length: 0,
};

/// Module headers over `headers`, valid while `headers` is.
pub fn module_headers(headers: &[(&str, &str)]) -> Vec<ModuleHttpHeader> {
    headers
        .iter()
        .map(|(k, v)| ModuleHttpHeader {
            key_ptr: k.as_ptr().cast(),
            key_length: k.len(),
            value_ptr: v.as_ptr().cast(),
            value_length: v.len(),
        })
        .collect()
}

/// Copies `length` bytes Envoy owns (null or empty reads as empty).
pub(super) fn copy_envoy(ptr: *const c_char, length: usize) -> Vec<u8> {
    if ptr.is_null() || length == 0 {
        return Vec::new();
    }
    // SAFETY: Envoy hands out (ptr, length) pairs that point at `length`
    // readable bytes it owns until the end of the current hook; this copies
    // them during the hook and keeps no reference.
    unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), length) }.to_vec()
}

/// Copies a buffer Envoy passed to a hook.
///
/// # Safety
/// `buffer` is one Envoy passed to the running hook (or null and empty).
pub unsafe fn copy_buffer(buffer: EnvoyBuffer) -> Vec<u8> {
    copy_envoy(buffer.ptr, buffer.length)
}

/// The part of `start..end` (offsets in a whole body) that a chunk of
/// `length` bytes at `offset` holds, as a range within the chunk.
pub(super) fn overlap(
    offset: usize,
    length: usize,
    start: usize,
    end: usize,
) -> Option<Range<usize>> {
    let chunk_end = offset.saturating_add(length);
    if length == 0 || chunk_end <= start || offset >= end {
        return None;
    }
    Some(start.saturating_sub(offset)..end.min(chunk_end) - offset)
}

/// The `:status` and body of a callout's answer (`status` is `None` when
/// the call failed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    /// The answer's `:status`.
    pub status: Option<Vec<u8>>,
    /// The answer's body.
    pub body: Vec<u8>,
}

impl Answer {
    /// Copies the answer Envoy passed to a `*_http_callout_done` hook.
    ///
    /// # Safety
    /// The arguments are the ones Envoy passed to the running hook: with
    /// `result` a success, `headers_size` headers at `headers` and
    /// `body_chunks_size` buffers at `body_chunks` (either may be null).
    pub unsafe fn copy(
        result: raw::Enum,
        headers: *const EnvoyHttpHeader,
        headers_size: usize,
        body_chunks: *const EnvoyBuffer,
        body_chunks_size: usize,
    ) -> Answer {
        let mut answer = Answer::default();
        if result != CALLOUT_SUCCESS {
            return answer;
        }
        if !headers.is_null() {
            // SAFETY: the caller's promise: `headers_size` headers valid
            // until the end of this hook; they are copied now.
            let headers = unsafe { std::slice::from_raw_parts(headers, headers_size) };
            answer.status = headers
                .iter()
                .find(|h| copy_envoy(h.key_ptr, h.key_length) == b":status")
                .map(|h| copy_envoy(h.value_ptr, h.value_length));
        }
        if !body_chunks.is_null() {
            // SAFETY: as for the headers: `body_chunks_size` buffers valid
            // for the hook, copied now.
            let chunks = unsafe { std::slice::from_raw_parts(body_chunks, body_chunks_size) };
            for chunk in chunks {
                answer.body.extend(copy_envoy(chunk.ptr, chunk.length));
            }
        }
        answer
    }
}

/// Writes a log line under Envoy's `dynamic_modules` logger.
pub fn log(level: LogLevel, message: &str) {
    let level = match level {
        LogLevel::Info => raw::LOG_INFO,
        LogLevel::Warn => raw::LOG_WARN,
        LogLevel::Error => raw::LOG_ERROR,
    };
    // SAFETY: the buffer points at `message`, alive for the call; Envoy
    // only reads it during the call.
    unsafe { raw::envoy_dynamic_module_callback_log(level, module_buffer(message.as_bytes())) }
}
