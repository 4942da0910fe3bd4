//! Teams as the sidecar knows them: a team holds keys, and its own rate
//! and quotas, shared by all of its keys (every request of a team's key is
//! admitted against the key's limits and the team's). What a team is,
//! how it is shown, and the rule its name follows.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tollgate_wire::Limits;

use super::clock::format_rfc3339;

/// Longest team name accepted (as a key's).
pub const MAX_TEAM_NAME_CHARS: usize = super::keys::MAX_NAME_CHARS;

/// A stored team.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Team {
    pub id: i64,
    pub name: String,
    /// Its rate and quotas (none by default), shared by its keys.
    pub limits: Limits,
    pub created_at: OffsetDateTime,
    /// Its keys' ids, ascending.
    pub key_ids: Vec<i64>,
}

/// Checks a team name by the rule of every name ([`super::names`]), and
/// one of its own: not digits only, so a command line's `T` (a team's id
/// or its name) always means one team.
pub fn validate_team_name(name: &str) -> Result<String, String> {
    let name = super::names::validate_name("team", name, MAX_TEAM_NAME_CHARS)?;
    if name.chars().all(|c| c.is_ascii_digit()) {
        return Err("the team name must not be digits only (a number names a team by id)".into());
    }
    Ok(name)
}

/// A team's limits as the admin API and the CLI show them: as a key's
/// (`rate` with its burst, `quotas`), and their canonical spelling
/// (`spec`, empty for none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamLimitsView {
    #[serde(flatten)]
    pub limits: Limits,
    pub spec: String,
}

/// A team as the admin API and `teams list --json` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamView {
    pub id: i64,
    pub name: String,
    pub limits: TeamLimitsView,
    /// Its keys' ids, ascending.
    pub key_ids: Vec<i64>,
    /// RFC 3339, UTC.
    pub created_at: String,
}

impl TeamView {
    /// `team` as shown.
    pub fn of(team: &Team) -> Self {
        TeamView {
            id: team.id,
            name: team.name.clone(),
            limits: TeamLimitsView {
                limits: team.limits.clone(),
                spec: team.limits.to_spec(),
            },
            key_ids: team.key_ids.clone(),
            created_at: format_rfc3339(team.created_at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_team_name_is_a_name_and_not_a_number() {
        assert_eq!(validate_team_name("  research ").unwrap(), "research");
        assert!(validate_team_name(" ").unwrap_err().contains("team name"));
        assert!(validate_team_name("a\u{202E}b").is_err());
        assert!(validate_team_name("42").unwrap_err().contains("digits"));
        assert_eq!(validate_team_name("team 42").unwrap(), "team 42");
    }

    #[test]
    fn a_view_shows_limits_as_a_key_does_with_their_spelling() {
        let team = Team {
            id: 3,
            name: "ml".into(),
            limits: Limits::from_parts(Some("10/s"), None, &["tokens=1k/day".into()]).unwrap(),
            created_at: OffsetDateTime::UNIX_EPOCH,
            key_ids: vec![1, 2],
        };
        let view = serde_json::to_value(TeamView::of(&team)).unwrap();
        assert_eq!(view["limits"]["rate"]["burst"], 10);
        assert_eq!(view["limits"]["quotas"][0]["kind"], "tokens");
        assert_eq!(view["limits"]["spec"], "rate=10/s burst=10 tokens=1000/day");
        assert_eq!(view["key_ids"], serde_json::json!([1, 2]));
    }
}
