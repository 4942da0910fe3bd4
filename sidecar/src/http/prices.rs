//! Prices over the admin API: `GET /v1/prices` lists every version of
//! every model's price, `POST /v1/prices` adds one (`tollgate prices`). The
//! rules of a price are `domain::price`; what a price does to a usage row
//! is `store::ledger` (priced once, at ingestion).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use crate::domain::clock::{now_ms, to_unix_ms};
use crate::domain::price::{PriceRequest, PriceView};
use crate::http::error::{ApiError, Undone};
use crate::http::extract::{AdminCaller, JsonBody};
use crate::http::AppState;
use crate::store::prices::{price_list, set_price, PriceList, SetPriceError};

/// Body of `POST /v1/prices`: the amounts are decimal strings (`"2.50"`),
/// never JSON numbers, which are floats.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceBody {
    pub model: String,
    pub input: String,
    pub output: String,
    #[serde(default)]
    pub cached_input: Option<String>,
    #[serde(default)]
    pub per: Option<String>,
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub from: Option<String>,
}

impl PriceBody {
    /// The request as the domain reads it.
    pub fn request(&self) -> PriceRequest<'_> {
        PriceRequest {
            model: &self.model,
            input: &self.input,
            output: &self.output,
            cached_input: self.cached_input.as_deref(),
            per: self.per.as_deref(),
            currency: self.currency.as_deref(),
            from: self.from.as_deref(),
        }
    }
}

/// `GET /v1/prices`: every version of every price.
pub async fn list(
    _caller: AdminCaller,
    State(state): State<AppState>,
) -> Result<Json<PriceList>, ApiError> {
    let list = price_list(&state.store)
        .await
        .map_err(ApiError::reading(Undone::ReadPrices))?;
    Ok(Json(list))
}

/// `POST /v1/prices`: adds a version of a model's price (from `from`,
/// default now); 400 naming the field when it is refused, storing nothing.
pub async fn set(
    _caller: AdminCaller,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<PriceBody>,
) -> Result<(StatusCode, Json<PriceView>), ApiError> {
    let now = to_unix_ms(now_ms());
    let price = set_price(&state.store, &body.request(), now)
        .await
        .map_err(|e| match e {
            SetPriceError::Invalid(e) => ApiError::invalid_field(e.field, e.message),
            SetPriceError::Store(e) => ApiError::storing(e),
        })?;
    let view = PriceView::of(&price);
    tracing::info!(model = %view.model, from = %view.from, "price set");
    Ok((StatusCode::CREATED, Json(view)))
}

/// Prices (admin token).
pub fn admin_router() -> Router<AppState> {
    Router::new().route("/v1/prices", get(list).post(set))
}
