//! LLM calls as both sides name them: the API shapes the gateway meters
//! (`api` in a usage row and in the filter's `llm.routes`), where a call's
//! token counts came from (`usage_source`), its token counts, and the bounds
//! every count is held to.

use serde::{Deserialize, Serialize};

/// Largest token count of one call, in any field: 2^30 (about 1.07
/// billion), far beyond any model's context and output together. A provider
/// figure above it is not believed (the row is `estimated`), and sums of
/// capped counts stay exact in a signed 64-bit total.
pub const MAX_TOKENS: u64 = 1 << 30;

/// Longest `model` name kept in a usage row; a longer one is refused on the
/// request side (400 `invalid_request`).
pub const MAX_MODEL_LEN: usize = 256;

/// An LLM API shape the gateway knows how to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Api {
    /// OpenAI Chat Completions (`POST /v1/chat/completions`).
    #[serde(rename = "openai.chat")]
    OpenAiChat,
    /// OpenAI Responses (`POST /v1/responses`).
    #[serde(rename = "openai.responses")]
    OpenAiResponses,
    /// OpenAI Embeddings (`POST /v1/embeddings`).
    #[serde(rename = "openai.embeddings")]
    OpenAiEmbeddings,
    /// Anthropic Messages (`POST /v1/messages`).
    #[serde(rename = "anthropic.messages")]
    AnthropicMessages,
    /// Gemini `generateContent` and `streamGenerateContent`
    /// (`POST /v1beta/models/{model}:...`).
    #[serde(rename = "gemini.generate")]
    GeminiGenerate,
}

/// Who defines an API's error shape and its key header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    OpenAi,
    Anthropic,
    Gemini,
}

impl Api {
    /// Every API, in the order documentation lists them.
    pub const ALL: [Api; 5] = [
        Api::OpenAiChat,
        Api::OpenAiResponses,
        Api::OpenAiEmbeddings,
        Api::AnthropicMessages,
        Api::GeminiGenerate,
    ];

    /// The name rows and configuration use (`openai.chat`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Api::OpenAiChat => "openai.chat",
            Api::OpenAiResponses => "openai.responses",
            Api::OpenAiEmbeddings => "openai.embeddings",
            Api::AnthropicMessages => "anthropic.messages",
            Api::GeminiGenerate => "gemini.generate",
        }
    }

    /// The API of a name, if it is one.
    pub fn from_name(name: &str) -> Option<Api> {
        Api::ALL.into_iter().find(|api| api.name() == name)
    }

    /// Whose API it is.
    pub fn provider(self) -> Provider {
        match self {
            Api::OpenAiChat | Api::OpenAiResponses | Api::OpenAiEmbeddings => Provider::OpenAi,
            Api::AnthropicMessages => Provider::Anthropic,
            Api::GeminiGenerate => Provider::Gemini,
        }
    }
}

/// Where a usage row's token counts came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageSource {
    /// Not an LLM call: no tokens.
    #[default]
    None,
    /// The provider reported them (in the body or the stream).
    Reported,
    /// The answer ended without believable usage; the gateway estimated
    /// them from what was delivered (docs/METERING.md).
    Estimated,
}

impl UsageSource {
    /// The name rows use.
    pub fn name(self) -> &'static str {
        match self {
            UsageSource::None => "none",
            UsageSource::Reported => "reported",
            UsageSource::Estimated => "estimated",
        }
    }
}

/// The token counts of one call, each at most [`MAX_TOKENS`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    /// Prompt tokens, cached ones included.
    #[serde(default)]
    pub input_tokens: u64,
    /// Generated tokens, reasoning ones included.
    #[serde(default)]
    pub output_tokens: u64,
    /// Of `input_tokens`, those read from the provider's prompt cache.
    #[serde(default)]
    pub cached_input_tokens: u64,
    /// Of `output_tokens`, those spent on reasoning.
    #[serde(default)]
    pub reasoning_tokens: u64,
}

/// What a usage record says of an LLM call (`llm` in the record; absent
/// for any other call, whose row has `usage_source` `none`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LlmUsage {
    /// The API shape of the route.
    pub api: Api,
    /// The model the request named (at most [`MAX_MODEL_LEN`] bytes).
    pub model: String,
    /// Whether the answer was streamed.
    pub streamed: bool,
    /// `reported` or `estimated`.
    pub usage_source: UsageSource,
    /// The counts, normalized across providers: `input_tokens` includes
    /// cached ones and `output_tokens` reasoning ones.
    #[serde(flatten)]
    pub tokens: TokenUsage,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_api_is_named_once_and_read_back() {
        for api in Api::ALL {
            assert_eq!(Api::from_name(api.name()), Some(api));
            let json = serde_json::to_string(&api).unwrap();
            assert_eq!(json, format!("\"{}\"", api.name()));
        }
        assert_eq!(Api::from_name("openai"), None);
    }

    #[test]
    fn an_llm_usage_is_one_flat_object() {
        let usage = LlmUsage {
            api: Api::AnthropicMessages,
            model: "m".into(),
            streamed: true,
            usage_source: UsageSource::Reported,
            tokens: TokenUsage {
                input_tokens: 3,
                output_tokens: 5,
                ..TokenUsage::default()
            },
        };
        let json = serde_json::to_value(&usage).unwrap();
        assert_eq!(json["api"], "anthropic.messages");
        assert_eq!(json["input_tokens"], 3);
        assert_eq!(json["reasoning_tokens"], 0);
        assert_eq!(serde_json::from_value::<LlmUsage>(json).unwrap(), usage);
    }

    #[test]
    fn a_usage_source_is_none_unless_said() {
        assert_eq!(UsageSource::default(), UsageSource::None);
        let read: UsageSource = serde_json::from_str("\"estimated\"").unwrap();
        assert_eq!(read, UsageSource::Estimated);
    }
}
