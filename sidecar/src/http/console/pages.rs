//! The console's HTML pages: small shells that the console's script fills
//! from the data calls. Every value put into them here is one the sidecar
//! made (a CSRF token in hex, a key id); names and other stored text are set
//! by the script as text, never as markup.

/// Which page a shell is, for its script (`<body data-page>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    Keys,
    /// One key's budgets, limits, team and usage plots.
    Key(i64),
    /// The teams: their keys, limits and budgets.
    Teams,
    /// Budget alerts and their events.
    Alerts,
    Gateway,
}

impl Page {
    fn name(self) -> &'static str {
        match self {
            Page::Keys => "keys",
            Page::Key(_) => "key",
            Page::Teams => "teams",
            Page::Alerts => "alerts",
            Page::Gateway => "gateway",
        }
    }

    fn title(self) -> String {
        match self {
            Page::Keys => "Keys".into(),
            Page::Key(id) => format!("Key {id}"),
            Page::Teams => "Teams".into(),
            Page::Alerts => "Alerts".into(),
            Page::Gateway => "Gateway".into(),
        }
    }

    /// The dialogs a page has besides its main content.
    fn dialogs(self) -> &'static [&'static str] {
        match self {
            Page::Keys | Page::Key(_) => &[LIMITS_DIALOG],
            Page::Teams => &[LIMITS_DIALOG, DELETE_TEAM_DIALOG],
            Page::Alerts | Page::Gateway => &[],
        }
    }

    fn main(self) -> &'static str {
        match self {
            Page::Keys => KEYS_MAIN,
            Page::Key(_) => KEY_MAIN,
            Page::Teams => TEAMS_MAIN,
            Page::Alerts => ALERTS_MAIN,
            Page::Gateway => GATEWAY_MAIN,
        }
    }
}

/// The page for a live session whose CSRF token is `csrf_token`.
pub fn render(page: Page, csrf_token: &str) -> String {
    let key_id = match page {
        Page::Key(id) => id.to_string(),
        _ => String::new(),
    };
    format!(
        r#"{head}
<meta name="tollgate-csrf" content="{csrf}">
<script src="/console/assets/chart.umd.min.js" defer></script>
<script src="/console/assets/console.js" defer></script>
</head>
<body data-page="{page}" data-key-id="{key_id}">
<header>
<nav><span class="brand">tollgate</span> <a href="/console">Keys</a> <a href="/console/teams">Teams</a> <a href="/console/alerts">Alerts</a> <a href="/console/gateway">Gateway</a> <button type="button" id="logout">Log out</button></nav>
</header>
<main>
{main}
{dialogs}
</main>
</body>
</html>
"#,
        head = head(&page.title()),
        csrf = escape(csrf_token),
        page = page.name(),
        main = page.main(),
        dialogs = page.dialogs().join("\n"),
    )
}

/// The login page, with a line saying why it is shown again, if it is.
pub fn login(message: Option<&str>, form: bool) -> String {
    let message = message
        .map(|m| format!(r#"<p class="error" role="alert">{}</p>"#, escape(m)))
        .unwrap_or_default();
    let form = if form {
        r#"<form method="post" action="/console/login">
<label>Admin token <input type="password" name="token" autocomplete="current-password" required autofocus></label>
<button type="submit">Log in</button>
</form>"#
    } else {
        ""
    };
    format!(
        r#"{head}
</head>
<body data-page="login">
<main class="login">
<h1>tollgate console</h1>
{message}
{form}
</main>
</body>
</html>
"#,
        head = head("Log in"),
    )
}

/// The start of every page's `<head>`: its title, icon and style sheet.
fn head(title: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{} · tollgate console</title>
<link rel="icon" href="/console/assets/favicon.svg">
<link rel="stylesheet" href="/console/assets/console.css">"#,
        escape(title)
    )
}

/// Text made safe to put in HTML, in an element or a quoted attribute.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const KEYS_MAIN: &str = r#"<h1>Keys</h1>
<section id="created" class="created" hidden>
<h2>New key <span id="created-name"></span>: copy it now</h2>
<p>This is the only time the key is shown. It is stored only as a hash, and cannot be shown again.</p>
<dl>
<dt>Key</dt><dd><code id="created-key"></code></dd>
<dt class="created-secret" hidden>Signing secret</dt><dd class="created-secret" hidden><code id="created-secret"></code></dd>
</dl>
<button type="button" id="created-done">I have copied it</button>
</section>
<section>
<h2>Create a key</h2>
<form id="create-form">
<label>Name <input name="name" required maxlength="200"></label>
<label>Expires at (UTC, optional) <input name="expires_at" type="datetime-local"></label>
<label class="check"><input type="checkbox" name="signing_secret"> its own signing secret</label>
<label>Rate (optional) <input name="rate" placeholder="10/s" size="8"></label>
<label>Burst <input name="burst" type="number" min="1" placeholder="default" size="6"></label>
<label class="wide">Quotas (optional, space-separated) <input name="quotas" placeholder="requests=1000/day tokens=100k/day@gpt-4o"></label>
<label>Team (optional) <select name="team_id"><option value="">none</option></select></label>
<button type="submit">Create</button>
</form>
<p class="note">Rate: <code>N/s</code> or <code>N/min</code>, the burst one second's worth unless given. A quota: <code>KIND=AMOUNT/WINDOW[@MODEL]</code>, the kind one of <code>requests</code>, <code>request_bytes</code>, <code>response_bytes</code>, <code>units</code>, <code>tokens</code>, <code>input_tokens</code>, <code>output_tokens</code>; the window <code>minute</code>, <code>hour</code>, <code>day</code> or <code>month</code> (UTC); amounts with <code>k</code>/<code>M</code>, sizes with <code>KiB</code>/<code>MiB</code>/<code>GiB</code>.</p>
<p id="create-error" class="error" role="alert"></p>
</section>
<section>
<h2>All keys</h2>
<p class="note">Limits: the key's rate and quotas as stored (sizes in bytes); <em>none</em> for a key without any. A key's page shows its budgets now. A key of a team is admitted against its own limits and its team's.</p>
<table id="keys">
<thead><tr><th>ID</th><th>Name</th><th>Prefix</th><th>Status</th><th>Limits</th><th>Team</th><th>Last use</th><th>Created</th><th>Expires</th><th>Signing secret</th><th></th></tr></thead>
<tbody></tbody>
</table>
<p id="keys-error" class="error" role="alert"></p>
</section>
<dialog id="revoke-dialog">
<form method="dialog">
<p>Revoke key <strong id="revoke-name"></strong>? Its requests are refused from then on (within the filter's cache lifetime). This cannot be undone.</p>
<button value="cancel" type="submit">Cancel</button>
<button value="revoke" type="submit" id="revoke-confirm" class="danger">Revoke</button>
</form>
</dialog>"#;

const KEY_MAIN: &str = r#"<h1>Key <span id="key-title"></span></h1>
<p id="key-facts" class="note"></p>
<p class="limits-line">Limits: <code id="key-limits"></code> <button type="button" id="key-limits-edit">Change limits</button></p>
<form id="key-team-form" class="team-line">
<label>Team <select name="team_id" id="key-team"><option value="">none</option></select></label>
<button type="submit">Move</button>
<span id="key-team-link"></span>
</form>
<p id="key-team-error" class="error" role="alert"></p>
<section id="budgets-section">
<h2>Budgets now</h2>
<p class="note">Each quota in its current window (UTC): <span class="swatch used"></span> used (the ledger), <span class="swatch reserved"></span> reserved (charged by the sidecar's counter, not yet in the ledger: grants an Envoy holds, calls in flight), <span class="swatch left"></span> left to grant.</p>
<p id="budgets-status" class="note" role="status"></p>
<div id="budgets"></div>
</section>
<div class="windows">
<button type="button" data-window="hour" aria-pressed="true">Last hour</button>
<button type="button" data-window="day" aria-pressed="false">Last day</button>
<button type="button" data-window="30d" aria-pressed="false">Last 30 days</button>
</div>
<p id="series-status" class="note" role="status"></p>
<table id="series-totals">
<thead><tr><th>Requests</th><th>Request bytes</th><th>Response bytes</th><th>Units</th><th>Denials</th></tr></thead>
<tbody><tr><td id="total-requests">–</td><td id="total-request-bytes">–</td><td id="total-response-bytes">–</td><td id="total-units">–</td><td id="total-denials">–</td></tr></tbody>
</table>
<section class="chart"><h2>Requests</h2><div class="plot"><canvas id="chart-requests"></canvas></div></section>
<section class="chart"><h2>Bytes</h2><div class="plot"><canvas id="chart-bytes"></canvas></div></section>
<section class="chart"><h2>Units</h2><p class="note">What the upstream said the calls cost, in its own units (its <code>x-usage-units</code> header, or the one the filter's <code>limits.units_header</code> names).</p><div class="plot"><canvas id="chart-units"></canvas></div></section>
<section class="chart"><h2>Denials by code</h2><div class="plot"><canvas id="chart-denials"></canvas></div></section>
<section class="chart"><h2>Tokens by model</h2><p class="note">The LLM calls' tokens per model: input (cached ones included) and output (reasoning ones included), stacked per bucket.</p><div class="plot"><canvas id="chart-tokens"></canvas></div>
<table id="model-totals">
<thead><tr><th>Model</th><th>Input tokens</th><th>Of which cached</th><th>Output tokens</th><th>Of which reasoning</th></tr></thead>
<tbody></tbody>
</table>
<p id="model-totals-empty" class="note">No LLM calls in this window.</p>
<h3>Spend by model</h3>
<p id="model-spend-status" class="note" role="status"></p>
<table id="model-spend">
<thead><tr><th>Model</th><th>Cost</th><th>Priced calls</th><th>Unpriced calls</th></tr></thead>
<tbody></tbody>
</table></section>
<section class="chart"><h2>Spend by model over time</h2><p class="note">What each model's calls cost per bucket (each call priced once, when it was stored; calls of a model without a price are not in it).</p><p id="spend-chart-status" class="note" role="status"></p><div class="plot"><canvas id="chart-spend"></canvas></div></section>"#;

const TEAMS_MAIN: &str = r#"<h1>Teams</h1>
<p class="note">A team holds keys and its own rate and quotas, shared by all of them: a request of a team's key is admitted against the key's limits and the team's. Its budgets count its keys' use (those it holds now) in its own counters.</p>
<section>
<h2>Create a team</h2>
<form id="team-form">
<label>Name <input name="name" required maxlength="200"></label>
<label>Rate (optional) <input name="rate" placeholder="100/s" size="8"></label>
<label>Burst <input name="burst" type="number" min="1" placeholder="default" size="6"></label>
<label class="wide">Quotas (optional, space-separated) <input name="quotas" placeholder="tokens=10M/month requests=100k/day"></label>
<button type="submit">Create</button>
</form>
<p class="note">Limits are spelled as a key's (see the Keys page): a rate <code>N/s</code> or <code>N/min</code>, quotas <code>KIND=AMOUNT/WINDOW[@MODEL]</code>.</p>
<p id="team-create-error" class="error" role="alert"></p>
</section>
<section>
<h2>All teams</h2>
<p class="note">Each quota in its current window (UTC): <span class="swatch used"></span> used (the ledger, the team's keys summed), <span class="swatch reserved"></span> reserved (charged by the team's counter, not yet in the ledger), <span class="swatch left"></span> left to grant.</p>
<p id="teams-status" class="note" role="status"></p>
<p id="teams-error" class="error" role="alert"></p>
<div id="teams"></div>
<p id="teams-empty" class="note" hidden>No team yet.</p>
</section>"#;

/// The confirmation of a team's deletion (the teams page).
const DELETE_TEAM_DIALOG: &str = r#"<dialog id="delete-team-dialog">
<form method="dialog">
<p>Delete team <strong id="delete-team-name"></strong>? Only a team without keys can be deleted.</p>
<button value="cancel" type="submit">Cancel</button>
<button value="delete" type="submit" id="delete-team-confirm" class="danger">Delete</button>
</form>
</dialog>"#;

/// The dialog that changes a key's or a team's limits (the keys list, a
/// key's page, the teams page).
const LIMITS_DIALOG: &str = r#"<dialog id="limits-dialog">
<form id="limits-form">
<h2>Limits of <span id="limits-name"></span></h2>
<label>Rate <input name="rate" placeholder="10/s (empty: none)" size="10"></label>
<label>Burst <input name="burst" type="number" min="1" placeholder="default" size="6"></label>
<label class="wide">Quotas, space-separated (empty: none) <input name="quotas" placeholder="requests=1000/day"></label>
<p id="limits-error" class="error" role="alert"></p>
<button type="button" id="limits-cancel">Cancel</button>
<button type="submit">Save</button>
</form>
</dialog>"#;

const ALERTS_MAIN: &str = r#"<h1>Budget alerts</h1>
<p class="note">Added with <code>tollgate alerts add</code> or <code>POST /v1/alerts</code>. The checker turns each threshold a key's or a team's quota use crosses in its window into one event; the sender delivers it signed, retrying until it is delivered or failed.</p>
<p id="alerts-status" class="note" role="status"></p>
<section>
<h2>Alerts</h2>
<table id="alerts"><thead><tr><th>ID</th><th>Budget</th><th>Thresholds</th><th>URL</th><th>Secret</th><th>Created</th></tr></thead><tbody></tbody></table>
<p id="alerts-empty" class="note" hidden>No alert.</p>
</section>
<section>
<h2>Events, newest first</h2>
<table id="alert-events"><thead><tr><th>Created</th><th>Alert</th><th>Budget</th><th>Quota</th><th>Window from</th><th>Threshold</th><th>Used of limit</th><th>State</th><th>Attempts</th><th>Delivered / last error</th></tr></thead><tbody></tbody></table>
<p id="alert-events-empty" class="note" hidden>No event yet.</p>
</section>
<section>
<h2>Failed events</h2>
<p class="note">Every attempt failed (as <code>tollgate alerts list --failed</code> lists them).</p>
<table id="failed-events"><thead><tr><th>Created</th><th>Alert</th><th>Quota</th><th>Threshold</th><th>Attempts</th><th>Last error</th></tr></thead><tbody></tbody></table>
<p id="failed-events-empty" class="note" hidden>None.</p>
</section>"#;

const GATEWAY_MAIN: &str = r#"<h1>Gateway</h1>
<p id="history-status" class="note" role="status"></p>
<section class="chart"><h2>Requests per second</h2><p class="note">Allowed, and denied by code (Envoy's filter).</p><div class="plot"><canvas id="chart-gw-requests"></canvas></div></section>
<section class="chart"><h2>Key cache hit ratio</h2><p class="note">Look-ups answered from the filter's cache (fresh or stale) over all look-ups.</p><div class="plot"><canvas id="chart-gw-cache"></canvas></div></section>
<section class="chart"><h2>Key verification latency</h2><p class="note">The sidecar's verify calls, database included: percentiles per interval, from its histogram's buckets (ms).</p><div class="plot"><canvas id="chart-gw-verify"></canvas></div></section>
<section class="chart"><h2>Usage records</h2><p class="note">Held in the filter's buffers, and refused by the sidecar per second.</p><div class="plot"><canvas id="chart-gw-usage"></canvas></div></section>
<p><button type="button" id="raw-toggle" aria-expanded="false">Show every figure</button></p>
<div id="raw-figures" hidden>
<p id="gateway-read-at" class="note" role="status"></p>
<section>
<h2>Envoy: the filter's figures</h2>
<p id="envoy-status"></p>
<table id="envoy-metrics"><thead><tr><th>Metric</th><th>Labels</th><th>Value</th></tr></thead><tbody></tbody></table>
</section>
<section>
<h2>Sidecar</h2>
<table id="sidecar-metrics"><thead><tr><th>Metric</th><th>Labels</th><th>Value</th></tr></thead><tbody></tbody></table>
</section>
</div>"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_carry_their_token_and_no_inline_script() {
        let html = render(Page::Key(7), "abc123");
        assert!(html.contains(r#"<meta name="tollgate-csrf" content="abc123">"#));
        assert!(html.contains(r#"data-page="key" data-key-id="7""#));
        assert!(html.contains(r#"<canvas id="chart-tokens">"#));
        assert!(html.contains(r#"<table id="model-totals">"#));
        assert!(html.contains(r#"<table id="model-spend">"#));
        assert!(html.contains(r#"<canvas id="chart-spend">"#));
        assert!(html.contains(r#"<div id="budgets">"#));
        assert!(render(Page::Keys, "t").contains(r#"<dialog id="limits-dialog">"#));
        assert!(render(Page::Gateway, "t").contains(r#"<canvas id="chart-gw-requests">"#));
        let teams = render(Page::Teams, "t");
        assert!(teams.contains(r#"data-page="teams""#));
        assert!(teams.contains(r#"<dialog id="limits-dialog">"#));
        assert!(teams.contains(r#"<dialog id="delete-team-dialog">"#));
        assert!(teams.contains(r#"<a href="/console/teams">Teams</a>"#));
        assert!(render(Page::Keys, "t").contains(r#"<select name="team_id">"#));
        assert!(render(Page::Key(1), "t").contains(r#"<form id="key-team-form""#));
        for page in [
            Page::Keys,
            Page::Key(1),
            Page::Teams,
            Page::Alerts,
            Page::Gateway,
        ] {
            let html = render(page, "t");
            assert!(
                !html.contains("<script>") && !html.contains("style="),
                "{page:?}"
            );
        }
        assert!(!login(None, true).contains("<script"));
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
