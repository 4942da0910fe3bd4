//! Which database the sidecar talks to, read from `--database-url`.

use std::fmt;
use std::path::PathBuf;

use crate::domain::mask::mask_database_url;

/// Where the embedded default database lives, relative to the working directory.
pub const DEFAULT_SQLITE_PATH: &str = ".tollgate/tollgate.db";

/// Which database the sidecar talks to.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseTarget {
    /// A MySQL or MariaDB server, by `mysql://` URL.
    MySql(String),
    /// A SQLite file; created (with its directory) when missing.
    Sqlite(PathBuf),
}

impl DatabaseTarget {
    /// Reads `--database-url`; `None` means the SQLite file [`DEFAULT_SQLITE_PATH`].
    pub fn from_url(url: Option<&str>) -> Result<Self, String> {
        let Some(url) = url.map(str::trim).filter(|u| !u.is_empty()) else {
            return Ok(DatabaseTarget::Sqlite(PathBuf::from(DEFAULT_SQLITE_PATH)));
        };
        if url.starts_with("mysql://") || url.starts_with("mariadb://") {
            return Ok(DatabaseTarget::MySql(url.replacen(
                "mariadb://",
                "mysql://",
                1,
            )));
        }
        if let Some(rest) = url.strip_prefix("sqlite:") {
            let rest = rest.strip_prefix("//").unwrap_or(rest);
            let path = rest.split('?').next().unwrap_or_default();
            if path.is_empty() || path == ":memory:" {
                return Err(format!(
                    "database URL {:?} names no file; use e.g. sqlite://.tollgate/tollgate.db",
                    mask_database_url(url)
                ));
            }
            return Ok(DatabaseTarget::Sqlite(PathBuf::from(path)));
        }
        Err(format!(
            "database URL {:?} is neither mysql://... nor sqlite://...",
            mask_database_url(url)
        ))
    }

    /// The target as it may be printed: any password masked.
    pub fn masked(&self) -> String {
        match self {
            DatabaseTarget::MySql(url) => mask_database_url(url),
            DatabaseTarget::Sqlite(path) => format!("sqlite://{}", path.display()),
        }
    }
}

impl fmt::Debug for DatabaseTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}
