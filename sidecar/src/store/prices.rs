//! Prices in the database (`prices`, migration 0009): adding a version of
//! a model's price, listing them, and reading the versions of a batch's
//! models for ingestion to price its rows with (`domain::price`); setting
//! and listing prices as the CLI and the admin API both do.
//!
//! Every price is in one currency, the one the first price was set in: a
//! cost is summed across models and outcomes, and a sum of two currencies
//! means nothing. A price in another is refused, naming the currency; so
//! is a money quota (`cost=...`) in another, and a first price in another
//! currency than the money quotas already set.
//!
//! A price stored is a `prices` change on the key change feed for every
//! key with a money quota, its own or its team's, in the same transaction:
//! each Envoy re-verifies those keys and gets the new table with their
//! verdicts (docs/LIMITS.md, "Money quotas").

use sqlx::migrate::Migrate;
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Row, Type};

use super::dialect::Dialect;
use super::sql::text_column;
use super::{SqlStore, Store, StoreError, INSERT_CHUNK_ROWS};
use tollgate_wire::Limits;

use crate::domain::price::{Currency, Per, Price, PriceBook, PriceError, PriceRequest, PriceView};

/// The columns a price is read with ([`price_row`]).
const PRICE_COLUMNS: &str = "model, from_ms, currency, per_tokens, input_micros, \
     cached_input_micros, output_micros";

/// The kind of change a price makes on the key change feed, for each key
/// with a money quota.
pub const CHANGE_PRICES: &str = "prices";

/// The rows (of `api_keys` or `teams`) whose limits have a money quota:
/// the canonical spelling starts each part at the start or after a space,
/// and a model scope holds no space.
const HAS_MONEY_QUOTA: &str = "(limits_spec LIKE 'cost=%' OR limits_spec LIKE '% cost=%')";

/// What [`Store::insert_price`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PriceInsert {
    /// The version is stored.
    Stored,
    /// Nothing stored: prices are kept in this other currency.
    OtherCurrency(Currency),
    /// Nothing stored: money quotas are set in this other currency.
    QuotaCurrency(Currency),
    /// Nothing stored: the model has a version from this very instant.
    SameInstant,
}

impl<DB> SqlStore<DB>
where
    DB: Dialect,
    DB::Connection: Migrate,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB> + Default,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB>,
    for<'q> Option<String>: Encode<'q, DB>,
    for<'q> Option<DB::Time>: Encode<'q, DB>,
    for<'q> Vec<u8>: Decode<'q, DB> + Type<DB>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
{
    /// See [`Store::insert_price`].
    pub async fn insert_price(
        &self,
        price: &Price,
        created_ms: u64,
    ) -> Result<PriceInsert, StoreError> {
        let mut tx = self.pool().begin().await?;
        let kept: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT currency FROM prices ORDER BY id LIMIT 1")
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(kept) = kept {
            let kept = stored_currency(&kept)?;
            if kept != price.currency {
                return Ok(PriceInsert::OtherCurrency(kept));
            }
        }
        let text = format!(
            "SELECT limits_spec FROM api_keys WHERE {HAS_MONEY_QUOTA} \
             UNION ALL SELECT limits_spec FROM teams WHERE {HAS_MONEY_QUOTA}"
        );
        // Read as bytes: MySQL reports the ascii_bin columns as binary.
        let specs: Vec<Option<Vec<u8>>> = sqlx::query_scalar(&text).fetch_all(&mut *tx).await?;
        let quoted = specs
            .iter()
            .flatten()
            .filter_map(|spec| std::str::from_utf8(spec).ok())
            .filter_map(|spec| Limits::parse_spec(spec).ok())
            .flat_map(|limits| limits.quotas)
            .filter_map(|q| q.currency)
            .find(|c| *c != price.currency);
        if let Some(other) = quoted {
            return Ok(PriceInsert::QuotaCurrency(other));
        }
        let insert = sqlx::query(
            "INSERT INTO prices (model, from_ms, currency, per_tokens, input_micros, \
             cached_input_micros, output_micros, created_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(price.model.as_str())
        .bind(to_i64(price.from_ms))
        .bind(price.currency.code())
        .bind(to_i64(price.per.tokens()))
        .bind(to_i64(price.input_micros))
        .bind(to_i64(price.cached_input_micros))
        .bind(to_i64(price.output_micros))
        .bind(to_i64(created_ms));
        match insert.execute(&mut *tx).await.map_err(StoreError::from) {
            Ok(_) => {}
            Err(StoreError::Duplicate) => return Ok(PriceInsert::SameInstant),
            Err(e) => return Err(e),
        }
        let text = format!(
            "SELECT key_hash FROM api_keys WHERE {HAS_MONEY_QUOTA} \
             OR team_id IN (SELECT id FROM teams WHERE {HAS_MONEY_QUOTA})"
        );
        let priced: Vec<Vec<u8>> = sqlx::query_scalar(&text).fetch_all(&mut *tx).await?;
        let now = i64::try_from(created_ms).unwrap_or(i64::MAX);
        for hash in priced.iter().filter_map(|h| std::str::from_utf8(h).ok()) {
            Self::publish_change(&mut tx, hash, CHANGE_PRICES, now).await?;
        }
        tx.commit().await?;
        Ok(PriceInsert::Stored)
    }

    /// See [`Store::list_prices`].
    pub async fn list_prices(&self) -> Result<Vec<Price>, StoreError> {
        let text = format!("SELECT {PRICE_COLUMNS} FROM prices ORDER BY model, from_ms");
        let rows = sqlx::query(&text).fetch_all(self.pool()).await?;
        rows.iter().map(price_row).collect()
    }

    /// Every version of the prices of `models` (each named once).
    pub async fn price_book(&self, models: &[&str]) -> Result<PriceBook, StoreError> {
        let mut prices = Vec::new();
        for chunk in models.chunks(INSERT_CHUNK_ROWS) {
            let text = format!(
                "SELECT {PRICE_COLUMNS} FROM prices WHERE model IN ({})",
                vec!["?"; chunk.len()].join(", ")
            );
            // One statement per model count: kept out of the statement cache.
            let mut query = sqlx::query(&text).persistent(false);
            for model in chunk {
                query = query.bind(*model);
            }
            for row in query.fetch_all(self.pool()).await? {
                prices.push(price_row(&row)?);
            }
        }
        Ok(PriceBook::new(prices))
    }

    /// See [`Store::price_currency`].
    pub async fn price_currency(&self) -> Result<Option<Currency>, StoreError> {
        let kept: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT currency FROM prices ORDER BY id LIMIT 1")
                .fetch_optional(self.pool())
                .await?;
        kept.as_deref().map(stored_currency).transpose()
    }
}

/// A stored currency code.
fn stored_currency(bytes: &[u8]) -> Result<Currency, StoreError> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(Currency::from_code)
        .ok_or_else(|| StoreError::Corrupt(format!("prices.currency {bytes:?} is unknown")))
}

/// One row of the prices table.
fn price_row<R: Row>(row: &R) -> Result<Price, StoreError>
where
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<Vec<u8>>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> &'r str: ColumnIndex<R>,
{
    let corrupt = |what: &str| StoreError::Corrupt(format!("prices.{what}"));
    let count = |column: &'static str| -> Result<u64, StoreError> {
        u64::try_from(row.try_get::<i64, _>(column)?)
            .map_err(|_| corrupt(&format!("{column} is negative")))
    };
    // Read as bytes: MySQL reports the ascii_bin columns as binary.
    let model = text_column(row, "model")?.ok_or_else(|| corrupt("model is NULL"))?;
    let currency = text_column(row, "currency")?.ok_or_else(|| corrupt("currency is NULL"))?;
    let per_tokens: i64 = row.try_get("per_tokens")?;
    Ok(Price {
        model,
        from_ms: count("from_ms")?,
        currency: stored_currency(currency.as_bytes())?,
        per: Per::from_tokens(per_tokens)
            .ok_or_else(|| corrupt(&format!("per_tokens {per_tokens} is not 1, 1k or 1M")))?,
        input_micros: count("input_micros")?,
        cached_input_micros: count("cached_input_micros")?,
        output_micros: count("output_micros")?,
    })
}

/// A checked amount (at most 10^15) or instant as the columns keep it.
fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Reply of `GET /v1/prices` and `tollgate prices list --json`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PriceList {
    /// The one currency of every price; `None` before the first.
    pub currency: Option<&'static str>,
    /// By model, then oldest first.
    pub prices: Vec<PriceView>,
}

/// Why setting a price stored nothing.
#[derive(Debug)]
pub enum SetPriceError {
    /// The price is refused: the part at fault, and why.
    Invalid(PriceError),
    /// The database failed.
    Store(StoreError),
}

/// Checks and stores a price (the CLI and the admin API alike), `now_ms`
/// being its default `from` and its creation time.
pub async fn set_price(
    store: &Store,
    request: &PriceRequest<'_>,
    now_ms: u64,
) -> Result<Price, SetPriceError> {
    let price = request.read(now_ms).map_err(SetPriceError::Invalid)?;
    let refuse = |field, message| SetPriceError::Invalid(PriceError { field, message });
    match store
        .insert_price(&price, now_ms)
        .await
        .map_err(SetPriceError::Store)?
    {
        PriceInsert::Stored => Ok(price),
        PriceInsert::OtherCurrency(kept) => Err(refuse(
            "currency",
            format!(
                "prices are kept in {kept}, and every price is in that one currency \
                 (a cost is summed across models); {} is refused",
                price.currency
            ),
        )),
        PriceInsert::QuotaCurrency(quoted) => Err(refuse(
            "currency",
            format!(
                "money quotas are set in {quoted}, and a price must be in their currency; {} \
                 is refused",
                price.currency
            ),
        )),
        PriceInsert::SameInstant => Err(refuse(
            "from",
            format!(
                "{} already has a price from {}; a price is changed by a version from a \
                 later instant",
                price.model,
                PriceView::of(&price).from
            ),
        )),
    }
}

/// Why a money quota of `limits` cannot be set, if it cannot: its
/// currency is not the one prices are kept in (a message for the `quota`
/// field). Limits without a money quota, or a gateway without prices yet,
/// are fine.
pub async fn money_quota_fault(
    store: &Store,
    limits: &Limits,
) -> Result<Option<String>, StoreError> {
    let Some(asked) = limits.quotas.iter().find_map(|q| q.currency) else {
        return Ok(None);
    };
    let kept = store.price_currency().await?;
    Ok(kept.filter(|kept| *kept != asked).map(|kept| {
        format!(
            "prices are kept in {kept}: a money quota must be in that currency, not {asked} \
             (e.g. cost=100{kept}/month)"
        )
    }))
}

/// Every price, as listed.
pub async fn price_list(store: &Store) -> Result<PriceList, StoreError> {
    let prices = store.list_prices().await?;
    Ok(PriceList {
        currency: prices.first().map(|p| p.currency.code()),
        prices: prices.iter().map(PriceView::of).collect(),
    })
}

impl Store {
    /// Adds a version of a model's price, in effect from `price.from_ms`.
    /// Refused, storing nothing, when prices are kept in another currency
    /// or the model has a version from the same instant.
    pub async fn insert_price(
        &self,
        price: &Price,
        created_ms: u64,
    ) -> Result<PriceInsert, StoreError> {
        match self {
            Store::MySql(s) => s.sql().insert_price(price, created_ms).await,
            Store::Sqlite(s) => s.sql().insert_price(price, created_ms).await,
        }
    }

    /// Every version of every price, by model then from oldest.
    pub async fn list_prices(&self) -> Result<Vec<Price>, StoreError> {
        match self {
            Store::MySql(s) => s.sql().list_prices().await,
            Store::Sqlite(s) => s.sql().list_prices().await,
        }
    }

    /// The currency prices are kept in; `None` before the first price.
    pub async fn price_currency(&self) -> Result<Option<Currency>, StoreError> {
        match self {
            Store::MySql(s) => s.sql().price_currency().await,
            Store::Sqlite(s) => s.sql().price_currency().await,
        }
    }
}
