//! `tollgate prices set` and `tollgate prices list`: versions of models'
//! prices, checked and stored as the admin API does (`http::prices`).

use clap::{Args, Subcommand};

use super::{open_store, print_json};
use crate::domain::clock::{now_ms, to_unix_ms};
use crate::domain::price::{PriceRequest, PriceView};
use crate::store::prices::{price_list, set_price, PriceList, SetPriceError};
use crate::store::DatabaseTarget;

/// `tollgate prices ...`.
#[derive(Debug, Subcommand)]
pub enum PricesCommand {
    /// Add a version of a model's price, in effect from --from (default
    /// now). LLM calls are priced once, when they are ingested, by the
    /// version in effect at their own time.
    Set(SetArgs),
    /// Every version of every price, by model then oldest first.
    List {
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Flags of `tollgate prices set`.
#[derive(Debug, Args)]
pub struct SetArgs {
    /// The model, as the LLM calls name it (1 to 256 visible ASCII characters).
    #[arg(long)]
    pub model: String,
    /// Price of input tokens not read from the cache, per --per tokens
    /// (e.g. 2.50; at most six decimals).
    #[arg(long, allow_hyphen_values = true)]
    pub input: String,
    /// Price of output tokens (reasoning ones included), per --per tokens.
    #[arg(long, allow_hyphen_values = true)]
    pub output: String,
    /// Price of cached input tokens, per --per tokens (default: --input).
    #[arg(long, allow_hyphen_values = true)]
    pub cached_input: Option<String>,
    /// How many tokens the prices are for: 1, 1k or 1M.
    #[arg(long, default_value = "1M")]
    pub per: String,
    /// The currency: one of USD, EUR, GBP, JPY, CHF, CAD, AUD, CNY, INR.
    /// Every price is in the currency of the first.
    #[arg(long, default_value = "USD")]
    pub currency: String,
    /// When this version takes effect (RFC 3339, e.g. 2026-12-01T00:00:00Z).
    #[arg(long)]
    pub from: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `tollgate prices ...`.
pub async fn run(target: &DatabaseTarget, command: PricesCommand) -> Result<(), String> {
    match command {
        PricesCommand::Set(args) => {
            let request = PriceRequest {
                model: &args.model,
                input: &args.input,
                output: &args.output,
                cached_input: args.cached_input.as_deref(),
                per: Some(&args.per),
                currency: Some(&args.currency),
                from: args.from.as_deref(),
            };
            // Refuse bad input before the database is opened.
            request
                .read(0)
                .map_err(|e| format!("--{}: {}", e.field.replace('_', "-"), e.message))?;
            let store = open_store(target).await?;
            let set = set_price(&store, &request, to_unix_ms(now_ms())).await;
            store.close().await;
            let price = set.map_err(|e| match e {
                SetPriceError::Invalid(e) => {
                    format!("--{}: {}", e.field.replace('_', "-"), e.message)
                }
                SetPriceError::Store(e) => format!("the price was not stored: {e}"),
            })?;
            let view = PriceView::of(&price);
            if args.json {
                return print_json(&view);
            }
            println!(
                "Price of {} from {}: input {}, cached input {}, output {} {} per {} tokens.",
                view.model,
                view.from,
                view.input,
                view.cached_input,
                view.output,
                view.currency,
                view.per
            );
            Ok(())
        }
        PricesCommand::List { json } => {
            let store = open_store(target).await?;
            let list = price_list(&store).await;
            store.close().await;
            let list = list.map_err(|e| format!("the prices could not be read: {e}"))?;
            if json {
                return print_json(&list);
            }
            print_list(&list);
            Ok(())
        }
    }
}

fn print_list(list: &PriceList) {
    if list.prices.is_empty() {
        println!(
            "No prices yet; LLM calls are unpriced. Set one with: \
             tollgate prices set --model M --input 2.50 --output 10.00"
        );
        return;
    }
    println!(
        "{:<32}  {:<24}  {:>18}  {:>18}  {:>18}  {:<8}  {:>4}",
        "MODEL", "FROM", "INPUT", "CACHED_INPUT", "OUTPUT", "CURRENCY", "PER"
    );
    for p in &list.prices {
        println!(
            "{:<32}  {:<24}  {:>18}  {:>18}  {:>18}  {:<8}  {:>4}",
            p.model, p.from, p.input, p.cached_input, p.output, p.currency, p.per
        );
    }
}
