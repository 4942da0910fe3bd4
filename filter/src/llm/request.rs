//! What the gateway reads from an LLM request before forwarding it: the
//! model, whether the answer streams, the output cap and (OpenAI chat)
//! whether the stream will carry usage. The body is read once, keeping only
//! those members (`pick`).
//!
//! Where each comes from:
//!
//! | API | model | stream | output cap |
//! | --- | --- | --- | --- |
//! | `openai.chat` | `model` | `stream` | `max_completion_tokens`, else `max_tokens` |
//! | `openai.responses` | `model` | `stream` | `max_output_tokens` |
//! | `openai.embeddings` | `model` | never (a `stream` must still be a boolean) | none |
//! | `anthropic.messages` | `model` | `stream` | `max_tokens` |
//! | `gemini.generate` | the path: `.../models/{model}:generateContent` | the path's method is `streamGenerateContent` | `generationConfig.maxOutputTokens` |
//!
//! OpenAI chat also reads `stream_options.include_usage`. Gemini's members
//! may be spelled in camelCase or snake_case (`generation_config`,
//! `max_output_tokens`), as its JSON mapping accepts both.
//!
//! The gateway refuses rather than guesses (400 `invalid_request`, naming
//! the member): a body that is not one JSON object; a `model` that is
//! absent, not a string, empty or longer than [`MAX_MODEL_LEN`] bytes; a
//! `stream` or `include_usage` that is not a boolean; a `stream_options` or
//! `generationConfig` that is not an object; a cap that is not an integer
//! from 1 to [`MAX_OUTPUT_CAP`]; a member it reads that appears twice in
//! its object (under any spelling); a Gemini path without a model or with
//! another method. A JSON number with a fraction or an exponent (`10.0`,
//! `1e3`) is not an integer here, even when its value is whole: serde_json
//! reads it as a float, and which integer a float names is a guess. A
//! `null` member counts as absent (the providers' schemas make these
//! members nullable); the provider then applies its own rules.

mod pick;

use serde_json::Value;
use tollgate_wire::llm::{Api, MAX_MODEL_LEN};

use pick::{Member, Object};

/// Largest output cap the gateway accepts: 2^20 tokens (1,048,576), far
/// above any model's output limit today, and small enough that a
/// reservation computed from it stays an exact integer. A larger cap is
/// refused rather than clamped, as clamping would reserve less than the
/// provider may spend.
pub const MAX_OUTPUT_CAP: u64 = 1 << 20;

/// The name refusals give the body itself.
const BODY: &str = "body";
/// The name refusals give a Gemini request's path.
const PATH: &str = "path";

/// What the gateway read from an LLM request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlmRequest {
    pub api: Api,
    /// The model the request names (1 to [`MAX_MODEL_LEN`] bytes).
    pub model: String,
    /// Whether the answer is a stream of server-sent events.
    pub stream: bool,
    /// The output cap the request sets, if any (1 to [`MAX_OUTPUT_CAP`]).
    pub max_output_tokens: Option<u64>,
    /// OpenAI chat: the body asks for `stream_options.include_usage: true`.
    /// Always false for other APIs.
    pub include_usage: bool,
}

impl LlmRequest {
    /// Whether the forwarded body must ask for usage the client did not
    /// ask for: an OpenAI chat stream reports usage only when asked (see
    /// `rewrite`).
    pub fn needs_include_usage(&self) -> bool {
        self.api == Api::OpenAiChat && self.stream && !self.include_usage
    }
}

/// Why a request is refused: the member at fault (its JSON path, like
/// `generationConfig.maxOutputTokens`, or `body`, or `path`) and what is
/// wrong with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidRequest {
    pub field: &'static str,
    pub fault: Fault,
}

/// What is wrong with the member an [`InvalidRequest`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Not a JSON object (for `body`: not JSON, or not an object).
    NotObject,
    /// Absent (or `null`) though required.
    Missing,
    NotString,
    Empty,
    /// Longer than [`MAX_MODEL_LEN`] bytes.
    TooLong,
    NotBoolean,
    /// Not an integer from 1 to [`MAX_OUTPUT_CAP`].
    NotCap,
    /// Appears more than once in its object.
    Repeated,
    /// A Gemini path that names no model or another method.
    NotGeminiPath,
}

impl InvalidRequest {
    fn new(field: &'static str, fault: Fault) -> InvalidRequest {
        InvalidRequest { field, fault }
    }

    /// Text for a person, naming the member at fault.
    pub fn message(&self) -> String {
        let field = self.field;
        match self.fault {
            Fault::NotObject if field == BODY => "the request body must be a JSON object".into(),
            Fault::NotObject => format!("`{field}` must be a JSON object"),
            Fault::Missing => format!("`{field}` is required"),
            Fault::NotString => format!("`{field}` must be a string"),
            Fault::Empty => format!("`{field}` must not be empty"),
            Fault::TooLong => format!("`{field}` must be at most {MAX_MODEL_LEN} bytes"),
            Fault::NotBoolean => format!("`{field}` must be a boolean"),
            Fault::NotCap => format!("`{field}` must be an integer from 1 to {MAX_OUTPUT_CAP}"),
            Fault::Repeated => format!("`{field}` must appear only once"),
            Fault::NotGeminiPath => "the path must end in /models/{model}:generateContent \
                                     or /models/{model}:streamGenerateContent"
                .into(),
        }
    }
}

/// Reads an LLM request of `api`: its `path` (Gemini names the model and
/// the method there; the query is ignored) and its `body`.
pub fn parse(api: Api, path: &str, body: &[u8]) -> Result<LlmRequest, InvalidRequest> {
    match api {
        Api::OpenAiChat => {
            let body = pick::pick(body, CHAT)?;
            let include_usage = match body.object("stream_options") {
                Some(options) => boolean(options, "stream_options.include_usage")?,
                None => None,
            };
            let cap = match cap(&body, "max_completion_tokens")? {
                Some(cap) => Some(cap),
                None => cap(&body, "max_tokens")?,
            };
            read(api, &body, cap, include_usage.unwrap_or(false))
        }
        Api::OpenAiResponses => {
            let body = pick::pick(body, RESPONSES)?;
            let cap = cap(&body, "max_output_tokens")?;
            read(api, &body, cap, false)
        }
        Api::OpenAiEmbeddings => {
            let body = pick::pick(body, EMBEDDINGS)?;
            let request = read(api, &body, None, false)?;
            Ok(LlmRequest {
                stream: false,
                ..request
            })
        }
        Api::AnthropicMessages => {
            let body = pick::pick(body, MESSAGES)?;
            let cap = cap(&body, "max_tokens")?;
            read(api, &body, cap, false)
        }
        Api::GeminiGenerate => {
            let (model, stream) = gemini_target(path)?;
            let body = pick::pick(body, GEMINI)?;
            let cap = match body.object("generationConfig") {
                Some(config) => cap(config, "generationConfig.maxOutputTokens")?,
                None => None,
            };
            Ok(LlmRequest {
                api,
                model: model.to_string(),
                stream,
                max_output_tokens: cap,
                include_usage: false,
            })
        }
    }
}

/// The request of a body whose `model` and `stream` are members.
fn read(
    api: Api,
    body: &Object,
    max_output_tokens: Option<u64>,
    include_usage: bool,
) -> Result<LlmRequest, InvalidRequest> {
    let model = match body.value("model") {
        Some(Value::String(model)) => model_name(model, "model")?,
        Some(_) => return Err(InvalidRequest::new("model", Fault::NotString)),
        None => return Err(InvalidRequest::new("model", Fault::Missing)),
    };
    Ok(LlmRequest {
        api,
        model: model.to_string(),
        stream: boolean(body, "stream")?.unwrap_or(false),
        max_output_tokens,
        include_usage,
    })
}

fn model_name<'m>(model: &'m str, field: &'static str) -> Result<&'m str, InvalidRequest> {
    if model.is_empty() {
        Err(InvalidRequest::new(field, Fault::Empty))
    } else if model.len() > MAX_MODEL_LEN {
        Err(InvalidRequest::new(field, Fault::TooLong))
    } else {
        Ok(model)
    }
}

fn boolean(object: &Object, field: &'static str) -> Result<Option<bool>, InvalidRequest> {
    match object.value(field) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(InvalidRequest::new(field, Fault::NotBoolean)),
    }
}

fn cap(object: &Object, field: &'static str) -> Result<Option<u64>, InvalidRequest> {
    match object.value(field) {
        None => Ok(None),
        // `as_u64` is `None` for negative numbers and for any number
        // written with a fraction or an exponent.
        Some(value) => match value.as_u64() {
            Some(cap) if (1..=MAX_OUTPUT_CAP).contains(&cap) => Ok(Some(cap)),
            _ => Err(InvalidRequest::new(field, Fault::NotCap)),
        },
    }
}

/// The model and whether it streams, from a Gemini path
/// `.../models/{model}:generateContent` or `:streamGenerateContent`.
fn gemini_target(path: &str) -> Result<(&str, bool), InvalidRequest> {
    let not_gemini = InvalidRequest::new(PATH, Fault::NotGeminiPath);
    let path = path.split(['?', '#']).next().unwrap_or(path);
    let (parent, last) = path.rsplit_once('/').ok_or(not_gemini)?;
    if !parent.ends_with("/models") && parent != "models" {
        return Err(not_gemini);
    }
    let (model, method) = last.rsplit_once(':').ok_or(not_gemini)?;
    let stream = match method {
        "generateContent" => false,
        "streamGenerateContent" => true,
        _ => return Err(not_gemini),
    };
    if model.is_empty() {
        return Err(not_gemini);
    }
    Ok((model_name(model, "model")?, stream))
}

const MODEL: Member = Member {
    path: "model",
    names: &["model"],
    inner: &[],
};
const STREAM: Member = Member {
    path: "stream",
    names: &["stream"],
    inner: &[],
};

const CHAT: &[Member] = &[
    MODEL,
    STREAM,
    Member {
        path: "max_completion_tokens",
        names: &["max_completion_tokens"],
        inner: &[],
    },
    Member {
        path: "max_tokens",
        names: &["max_tokens"],
        inner: &[],
    },
    Member {
        path: "stream_options",
        names: &["stream_options"],
        inner: &[Member {
            path: "stream_options.include_usage",
            names: &["include_usage"],
            inner: &[],
        }],
    },
];

const RESPONSES: &[Member] = &[
    MODEL,
    STREAM,
    Member {
        path: "max_output_tokens",
        names: &["max_output_tokens"],
        inner: &[],
    },
];

const EMBEDDINGS: &[Member] = &[MODEL, STREAM];

const MESSAGES: &[Member] = &[
    MODEL,
    STREAM,
    Member {
        path: "max_tokens",
        names: &["max_tokens"],
        inner: &[],
    },
];

const GEMINI: &[Member] = &[Member {
    path: "generationConfig",
    names: &["generationConfig", "generation_config"],
    inner: &[Member {
        path: "generationConfig.maxOutputTokens",
        names: &["maxOutputTokens", "max_output_tokens"],
        inner: &[],
    }],
}];

#[cfg(test)]
mod tests;
