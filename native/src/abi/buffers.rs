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
    #[cfg(test)]
    test_log::write(level, message);
    #[cfg(not(test))]
    // SAFETY: the buffer points at `message`, alive for the call; Envoy
    // only reads it during the call.
    unsafe {
        raw::envoy_dynamic_module_callback_log(level, module_buffer(message.as_bytes()))
    }
}

/// Unit tests' log: the lines the module would have written, per thread
/// (each test runs on its own).
#[cfg(test)]
pub mod test_log {
    use std::cell::RefCell;

    thread_local! {
        static LINES: RefCell<Vec<(u32, String)>> = const { RefCell::new(Vec::new()) };
    }

    pub(super) fn write(level: u32, message: &str) {
        LINES.with(|lines| lines.borrow_mut().push((level, message.to_string())));
    }

    /// The lines written on this thread at Envoy's error level.
    pub fn errors() -> Vec<String> {
        LINES.with(|lines| {
            let lines = lines.borrow();
            let errors = lines
                .iter()
                .filter(|(level, _)| *level == super::raw::LOG_ERROR);
            errors.map(|(_, line)| line.clone()).collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(key: &'static str, value: &'static str) -> EnvoyHttpHeader {
        EnvoyHttpHeader {
            key_ptr: key.as_ptr().cast(),
            key_length: key.len(),
            value_ptr: value.as_ptr().cast(),
            value_length: value.len(),
        }
    }

    fn buffer(bytes: &'static [u8]) -> EnvoyBuffer {
        EnvoyBuffer {
            ptr: bytes.as_ptr().cast(),
            length: bytes.len(),
        }
    }

    #[test]
    fn an_answer_keeps_its_status_and_every_body_chunk_in_order() {
        let headers = [
            header("content-type", "application/json"),
            header(":status", "200"),
        ];
        let chunks = [buffer(b"{\"verdict\""), buffer(b":\"active\"}")];
        // SAFETY: the arrays outlive the call, as Envoy's do a hook.
        let answer =
            unsafe { Answer::copy(CALLOUT_SUCCESS, headers.as_ptr(), 2, chunks.as_ptr(), 2) };
        assert_eq!(answer.status.as_deref(), Some(b"200".as_slice()));
        assert_eq!(answer.body, b"{\"verdict\":\"active\"}");
    }

    #[test]
    fn a_failed_callout_has_no_status_whatever_envoy_passes() {
        let headers = [header(":status", "200")];
        let chunks = [buffer(b"partial")];
        // SAFETY: as above.
        let answer = unsafe { Answer::copy(1, headers.as_ptr(), 1, chunks.as_ptr(), 1) };
        assert_eq!(answer, Answer::default());
        // SAFETY: null arrays are allowed.
        let empty =
            unsafe { Answer::copy(CALLOUT_SUCCESS, std::ptr::null(), 0, std::ptr::null(), 0) };
        assert_eq!(empty, Answer::default());
    }

    #[test]
    fn a_body_range_is_cut_from_the_chunks_that_hold_it() {
        // Chunks of 4 bytes at 0, 4 and 8; bytes 3..9 asked.
        assert_eq!(overlap(0, 4, 3, 9), Some(3..4));
        assert_eq!(overlap(4, 4, 3, 9), Some(0..4));
        assert_eq!(overlap(8, 4, 3, 9), Some(0..1));
        // Chunks wholly before or after the range give nothing.
        assert_eq!(overlap(0, 3, 3, 9), None);
        assert_eq!(overlap(9, 4, 3, 9), None);
        assert_eq!(overlap(4, 0, 3, 9), None);
    }
}
