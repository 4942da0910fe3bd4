//! The route table `llm.routes`: which request paths are which LLM API.
//! An operator points the gateway at real providers by changing Envoy's
//! cluster and this table, nothing else.
//!
//! Each route is a path prefix and an API shape; the longest prefix that
//! matches a path (its query left out) wins. Without `llm.routes` the table
//! is the providers' own paths ([`default_routes`]); `"routes": []` turns
//! LLM metering off.
//!
//! `llm.default_output_cap` (default [`DEFAULT_OUTPUT_CAP`]), or a route's
//! own `default_output_cap`, is the output cap written into a call that
//! sets none when its key has a token quota: the cap its reservation
//! counts on.

use serde::Deserialize;
use tollgate_wire::{Api, Provider};

/// Most routes a table may hold.
pub const MAX_ROUTES: usize = 64;

/// Longest path prefix of a route.
pub const MAX_PREFIX_LEN: usize = 256;

/// The output cap of a call without one, for a key with a token quota,
/// unless `llm.default_output_cap` says otherwise: 4096 tokens.
pub const DEFAULT_OUTPUT_CAP: u64 = 4096;

/// One route: requests whose path starts with `prefix` are `api` calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub prefix: String,
    pub api: Api,
    /// This route's default output cap, if it has its own.
    pub default_output_cap: Option<u64>,
}

/// The validated route table, longest prefix first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlmRoutes {
    routes: Vec<Route>,
    /// The output cap written into a call without one whose key has a
    /// token quota (1 to `request::MAX_OUTPUT_CAP`).
    pub default_output_cap: u64,
}

/// The table when the configuration names none: the providers' own paths.
pub fn default_routes() -> Vec<Route> {
    [
        ("/v1/chat/completions", Api::OpenAiChat),
        ("/v1/responses", Api::OpenAiResponses),
        ("/v1/embeddings", Api::OpenAiEmbeddings),
        ("/v1/messages", Api::AnthropicMessages),
        ("/v1beta/models/", Api::GeminiGenerate),
    ]
    .into_iter()
    .map(|(prefix, api)| Route {
        prefix: prefix.to_string(),
        api,
        default_output_cap: None,
    })
    .collect()
}

impl Default for LlmRoutes {
    fn default() -> Self {
        LlmRoutes::new(default_routes())
    }
}

impl LlmRoutes {
    fn new(mut routes: Vec<Route>) -> Self {
        routes.sort_by_key(|route| std::cmp::Reverse(route.prefix.len()));
        LlmRoutes {
            routes,
            default_output_cap: DEFAULT_OUTPUT_CAP,
        }
    }

    /// The API of a request path (`:path`, query included), if any route
    /// names it.
    pub fn api_of(&self, path: &str) -> Option<Api> {
        self.route_of(path).map(|route| route.api)
    }

    /// The route of a request path, if any.
    pub fn route_of(&self, path: &str) -> Option<&Route> {
        let path = path.split(['?', '#']).next().unwrap_or_default();
        self.routes
            .iter()
            .find(|route| path.starts_with(&route.prefix))
    }

    /// The output cap a call to `path` that sets none is given: its
    /// route's, else the table's.
    pub fn default_output_cap_of(&self, path: &str) -> u64 {
        self.route_of(path)
            .and_then(|route| route.default_output_cap)
            .unwrap_or(self.default_output_cap)
    }

    /// Every route, longest prefix first.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

/// The request header that carries the API key in a provider's own SDK,
/// besides `Authorization: Bearer` (OpenAI's SDK sends that one).
pub fn key_header(provider: Provider) -> Option<&'static str> {
    match provider {
        Provider::OpenAi => None,
        Provider::Anthropic => Some("x-api-key"),
        Provider::Gemini => Some("x-goog-api-key"),
    }
}

/// `llm` as the plugin configuration writes it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLlm {
    #[serde(default)]
    routes: Option<Vec<RawRoute>>,
    #[serde(default)]
    default_output_cap: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    prefix: String,
    api: String,
    #[serde(default)]
    default_output_cap: Option<u64>,
}

/// Validates `llm`: the field at fault and why, when it is not a table.
pub fn validate(raw: RawLlm) -> Result<LlmRoutes, (String, String)> {
    let default_output_cap = output_cap("llm.default_output_cap", raw.default_output_cap)?;
    let mut table = routes(raw.routes)?;
    table.default_output_cap = default_output_cap.unwrap_or(DEFAULT_OUTPUT_CAP);
    Ok(table)
}

/// A default output cap, if given: 1 to `request::MAX_OUTPUT_CAP`.
fn output_cap(field: &str, cap: Option<u64>) -> Result<Option<u64>, (String, String)> {
    let max = crate::llm::request::MAX_OUTPUT_CAP;
    match cap {
        Some(cap) if cap == 0 || cap > max => Err((
            field.to_owned(),
            format!("must be an integer from 1 to {max}"),
        )),
        cap => Ok(cap),
    }
}

/// Validates `llm.routes`.
fn routes(raw_routes: Option<Vec<RawRoute>>) -> Result<LlmRoutes, (String, String)> {
    let Some(raw_routes) = raw_routes else {
        return Ok(LlmRoutes::default());
    };
    if raw_routes.len() > MAX_ROUTES {
        return Err(("llm.routes".into(), format!("at most {MAX_ROUTES} routes")));
    }
    let mut routes = Vec::with_capacity(raw_routes.len());
    for (i, raw) in raw_routes.into_iter().enumerate() {
        let field = |name: &str| format!("llm.routes[{i}].{name}");
        let visible = raw.prefix.bytes().all(|b| (0x21..=0x7e).contains(&b));
        if !raw.prefix.starts_with('/') || !visible || raw.prefix.len() > MAX_PREFIX_LEN {
            return Err((
                field("prefix"),
                format!(
                    "must start with / and be at most {MAX_PREFIX_LEN} visible ASCII characters"
                ),
            ));
        }
        if routes.iter().any(|r: &Route| r.prefix == raw.prefix) {
            return Err((field("prefix"), "names a prefix twice".into()));
        }
        let Some(api) = Api::from_name(&raw.api) else {
            let names: Vec<&str> = Api::ALL.iter().map(|a| a.name()).collect();
            return Err((field("api"), format!("must be one of {}", names.join(", "))));
        };
        let default_output_cap = output_cap(&field("default_output_cap"), raw.default_output_cap)?;
        routes.push(Route {
            prefix: raw.prefix,
            api,
            default_output_cap,
        });
    }
    Ok(LlmRoutes::new(routes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(json: &str) -> Result<LlmRoutes, (String, String)> {
        validate(serde_json::from_str(json).unwrap())
    }

    #[test]
    fn the_default_output_cap_is_4096_unless_configured_within_range() {
        assert_eq!(table("{}").unwrap().default_output_cap, 4096);
        let routes = table(r#"{"default_output_cap":100}"#).unwrap();
        assert_eq!(routes.default_output_cap, 100);
        for bad in ["0", "1048577"] {
            let json = format!(r#"{{"default_output_cap":{bad}}}"#);
            assert_eq!(table(&json).unwrap_err().0, "llm.default_output_cap");
            let json = format!(
                r#"{{"routes":[{{"prefix":"/a","api":"openai.chat","default_output_cap":{bad}}}]}}"#
            );
            assert_eq!(
                table(&json).unwrap_err().0,
                "llm.routes[0].default_output_cap"
            );
        }
        let routes = table(
            r#"{"default_output_cap":100,"routes":[
                {"prefix":"/a","api":"openai.chat","default_output_cap":7},
                {"prefix":"/b","api":"openai.chat"}]}"#,
        )
        .unwrap();
        assert_eq!(routes.default_output_cap_of("/a/x"), 7, "the route's own");
        assert_eq!(routes.default_output_cap_of("/b"), 100, "the table's");
    }

    #[test]
    fn the_default_table_is_the_providers_paths() {
        let routes = table("{}").unwrap();
        assert_eq!(routes.api_of("/v1/chat/completions"), Some(Api::OpenAiChat));
        assert_eq!(
            routes.api_of("/v1/responses?x=1"),
            Some(Api::OpenAiResponses)
        );
        assert_eq!(
            routes.api_of("/v1beta/models/m:streamGenerateContent?alt=sse"),
            Some(Api::GeminiGenerate)
        );
        assert_eq!(routes.api_of("/proxy/analyze"), None);
        assert_eq!(
            table(r#"{"routes": []}"#).unwrap().api_of("/v1/messages"),
            None
        );
    }

    #[test]
    fn the_longest_prefix_wins() {
        let routes = table(
            r#"{"routes": [{"prefix": "/llm/", "api": "openai.chat"},
                           {"prefix": "/llm/claude/", "api": "anthropic.messages"}]}"#,
        )
        .unwrap();
        assert_eq!(
            routes.api_of("/llm/claude/v1/messages"),
            Some(Api::AnthropicMessages)
        );
        assert_eq!(routes.api_of("/llm/other"), Some(Api::OpenAiChat));
    }

    #[test]
    fn a_bad_route_names_its_field() {
        let bad = |json: &str| table(json).unwrap_err().0;
        assert_eq!(
            bad(r#"{"routes": [{"prefix": "v1", "api": "openai.chat"}]}"#),
            "llm.routes[0].prefix"
        );
        assert_eq!(
            bad(r#"{"routes": [{"prefix": "/v1", "api": "openai"}]}"#),
            "llm.routes[0].api"
        );
        assert_eq!(
            bad(
                r#"{"routes": [{"prefix": "/a", "api": "openai.chat"}, {"prefix": "/a", "api": "openai.chat"}]}"#
            ),
            "llm.routes[1].prefix"
        );
    }
}
