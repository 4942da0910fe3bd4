//! The safe wrapper of one HTTP stream's filter in Envoy: headers, body,
//! local reply, reset and resume, each one callback (its callouts and
//! metrics are in `context.rs`).

use std::ffi::c_void;

use super::api::EnvoyStream;
use super::buffers::{
    copy_buffer, copy_envoy, module_buffer, module_headers, overlap, EMPTY_ENVOY_BUFFER, NO_BUFFER,
};
use super::raw::*;

/// An HTTP stream's filter in Envoy (`http_filter_envoy_ptr`). Valid from
/// `on_http_filter_new` until `on_http_filter_destroy`, on the stream's
/// worker thread; the module keeps it only inside the stream's own state.
#[derive(Debug, Clone, Copy)]
pub struct StreamPtr(pub(super) *mut c_void);

impl StreamPtr {
    /// The stream Envoy passed to `on_http_filter_new`.
    pub fn new(filter_envoy_ptr: *mut c_void) -> Self {
        StreamPtr(filter_envoy_ptr)
    }

    fn body_chunks(&self, body_type: Enum) -> Option<Vec<EnvoyBuffer>> {
        // SAFETY: live filter.
        let count =
            unsafe { envoy_dynamic_module_callback_http_get_body_chunks_size(self.0, body_type) };
        if count == 0 {
            return Some(Vec::new());
        }
        let mut chunks = vec![EMPTY_ENVOY_BUFFER; count];
        // SAFETY: `chunks` has room for the `count` buffers just reported.
        let ok = unsafe {
            envoy_dynamic_module_callback_http_get_body_chunks(
                self.0,
                body_type,
                chunks.as_mut_ptr(),
            )
        };
        ok.then_some(chunks)
    }
}

impl EnvoyStream for StreamPtr {
    /// Every request header, in order, values as bytes.
    fn request_headers(&self) -> Option<Vec<(String, Vec<u8>)>> {
        // SAFETY: `self.0` is the live filter of the current hook.
        let count =
            unsafe { envoy_dynamic_module_callback_http_get_headers_size(self.0, HEADER_REQUEST) };
        let empty = EnvoyHttpHeader {
            key_ptr: std::ptr::null(),
            key_length: 0,
            value_ptr: std::ptr::null(),
            value_length: 0,
        };
        let mut raw = vec![empty; count];
        // SAFETY: `raw` has room for the `count` headers Envoy just reported
        // for this map, as the header requires.
        let ok = unsafe {
            envoy_dynamic_module_callback_http_get_headers(self.0, HEADER_REQUEST, raw.as_mut_ptr())
        };
        if !ok {
            return None;
        }
        let headers = raw.iter().map(|h| {
            let name = copy_envoy(h.key_ptr, h.key_length);
            (
                String::from_utf8_lossy(&name).into_owned(),
                copy_envoy(h.value_ptr, h.value_length),
            )
        });
        Some(headers.collect())
    }

    /// The first value of a response header.
    fn response_header(&self, name: &str) -> Option<Vec<u8>> {
        let mut out = EMPTY_ENVOY_BUFFER;
        // SAFETY: live filter; `name` outlives the call; `out` is a valid
        // place for the result; the count pointer may be null.
        let ok = unsafe {
            envoy_dynamic_module_callback_http_get_header(
                self.0,
                HEADER_RESPONSE,
                module_buffer(name.as_bytes()),
                &mut out,
                0,
                std::ptr::null_mut(),
            )
        };
        (ok && !out.ptr.is_null()).then(|| copy_envoy(out.ptr, out.length))
    }

    /// Sets (`Some`) or removes (`None`) a request header.
    fn set_request_header(&self, name: &str, value: Option<&str>) -> bool {
        let value = value.map_or(NO_BUFFER, |v| module_buffer(v.as_bytes()));
        // SAFETY: live filter; both buffers outlive the call (a null value
        // removes the header, as the header documents).
        unsafe {
            envoy_dynamic_module_callback_http_set_header(
                self.0,
                HEADER_REQUEST,
                module_buffer(name.as_bytes()),
                value,
            )
        }
    }

    /// Sets a response header (while the response headers pass).
    fn set_response_header(&self, name: &str, value: &str) -> bool {
        // SAFETY: live filter; both buffers outlive the call.
        unsafe {
            envoy_dynamic_module_callback_http_set_header(
                self.0,
                HEADER_RESPONSE,
                module_buffer(name.as_bytes()),
                module_buffer(value.as_bytes()),
            )
        }
    }

    /// Bytes of the request body Envoy holds: what it buffered before this
    /// hook, then what this hook received.
    fn request_body_size(&self) -> usize {
        // SAFETY: live filter.
        unsafe {
            envoy_dynamic_module_callback_http_get_body_size(self.0, BODY_BUFFERED_REQUEST)
                .saturating_add(envoy_dynamic_module_callback_http_get_body_size(
                    self.0,
                    BODY_RECEIVED_REQUEST,
                ))
        }
    }

    /// Drains what Envoy buffered and what this hook received, then adds
    /// `body` as this hook's frame (or, outside a body hook, as the buffer).
    fn replace_request_body(&self, body: &[u8]) -> bool {
        // SAFETY: live filter; `body` outlives the call, which copies it.
        unsafe {
            let received =
                envoy_dynamic_module_callback_http_get_body_size(self.0, BODY_RECEIVED_REQUEST);
            let buffered =
                envoy_dynamic_module_callback_http_get_body_size(self.0, BODY_BUFFERED_REQUEST);
            if buffered > 0
                && !envoy_dynamic_module_callback_http_drain_body(
                    self.0,
                    BODY_BUFFERED_REQUEST,
                    buffered,
                )
            {
                return false;
            }
            let into = if received > 0 {
                if !envoy_dynamic_module_callback_http_drain_body(
                    self.0,
                    BODY_RECEIVED_REQUEST,
                    received,
                ) {
                    return false;
                }
                BODY_RECEIVED_REQUEST
            } else {
                BODY_BUFFERED_REQUEST
            };
            envoy_dynamic_module_callback_http_append_body(self.0, into, module_buffer(body))
        }
    }

    /// The response body frame of the current hook.
    fn received_response_body(&self) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        for chunk in self.body_chunks(BODY_RECEIVED_RESPONSE)? {
            // SAFETY: each chunk is readable for the current hook.
            out.extend_from_slice(&unsafe { copy_buffer(chunk) });
        }
        Some(out)
    }

    /// Replaces the response body frame of the current hook.
    fn replace_received_response_body(&self, bytes: &[u8]) -> bool {
        // SAFETY: live filter; `bytes` outlives the call, which copies it.
        unsafe {
            let size =
                envoy_dynamic_module_callback_http_get_body_size(self.0, BODY_RECEIVED_RESPONSE);
            envoy_dynamic_module_callback_http_drain_body(self.0, BODY_RECEIVED_RESPONSE, size)
                && (bytes.is_empty()
                    || envoy_dynamic_module_callback_http_append_body(
                        self.0,
                        BODY_RECEIVED_RESPONSE,
                        module_buffer(bytes),
                    ))
        }
    }

    /// Bytes of the response body frame of the current hook.
    fn received_response_body_size(&self) -> usize {
        // SAFETY: live filter.
        unsafe { envoy_dynamic_module_callback_http_get_body_size(self.0, BODY_RECEIVED_RESPONSE) }
    }

    /// `len` bytes of the request body from `start` (over the buffered and
    /// the received parts, in that order).
    fn request_body(&self, start: usize, len: usize) -> Option<Vec<u8>> {
        let end = start.checked_add(len)?;
        let mut out = Vec::with_capacity(len);
        let mut offset = 0usize;
        for body_type in [BODY_BUFFERED_REQUEST, BODY_RECEIVED_REQUEST] {
            for chunk in self.body_chunks(body_type)? {
                if let Some(part) = overlap(offset, chunk.length, start, end) {
                    if !chunk.ptr.is_null() {
                        // SAFETY: the chunk is `chunk.length` readable bytes
                        // owned by Envoy for the current hook, and `part`
                        // lies within them.
                        let bytes = unsafe {
                            std::slice::from_raw_parts(
                                chunk.ptr.cast::<u8>().add(part.start),
                                part.len(),
                            )
                        };
                        out.extend_from_slice(bytes);
                    }
                }
                offset = offset.saturating_add(chunk.length);
            }
        }
        (out.len() == len).then_some(out)
    }

    /// Envoy's `response.code_details`.
    fn response_code_details(&self) -> Option<String> {
        let mut out = EMPTY_ENVOY_BUFFER;
        // SAFETY: live filter; `out` is a valid place for the result.
        let ok = unsafe {
            envoy_dynamic_module_callback_http_filter_get_attribute_string(
                self.0,
                ATTRIBUTE_RESPONSE_CODE_DETAILS,
                &mut out,
            )
        };
        if !ok {
            return None;
        }
        String::from_utf8(copy_envoy(out.ptr, out.length)).ok()
    }

    /// Answers the request with a local reply.
    fn send_response(&self, status: u16, headers: &[(&str, &str)], body: &[u8]) {
        let mut raw = module_headers(headers);
        // SAFETY: live filter; the header array, its strings and the body
        // outlive the call, which copies them.
        unsafe {
            envoy_dynamic_module_callback_http_send_response(
                self.0,
                u32::from(status),
                raw.as_mut_ptr(),
                raw.len(),
                module_buffer(body),
                module_buffer(b"tollgate"),
            )
        }
    }

    /// Resets the stream.
    fn reset(&self) {
        // SAFETY: live filter; an empty details buffer is allowed.
        unsafe {
            envoy_dynamic_module_callback_http_filter_reset_stream(self.0, RESET_LOCAL, NO_BUFFER)
        }
    }

    /// Lets a held request go on.
    fn continue_decoding(&self) {
        // SAFETY: live filter.
        unsafe { envoy_dynamic_module_callback_http_filter_continue_decoding(self.0) }
    }
}
