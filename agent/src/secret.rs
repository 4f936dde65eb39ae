//! Secrets (communities, passwords, passphrases) that must never reach a log, an error message
//! or `--json` output. `Debug` and `Display` print `***`; the value is only reachable through
//! [`Secret::expose`], which makes every use greppable.

use std::path::Path;

#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    #[must_use]
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value itself. Call only where it is handed to a protocol library.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Reads a secret from a file, trimming one trailing newline (as `echo pass > file` leaves).
    ///
    /// # Errors
    /// If the file cannot be read; the message names the file, never its content.
    pub fn from_file(path: &Path) -> Result<Self, SecretError> {
        let text = std::fs::read_to_string(path).map_err(|e| SecretError::File {
            path: path.display().to_string(),
            detail: e.to_string(),
        })?;
        let text = text.strip_suffix('\n').unwrap_or(&text);
        let text = text.strip_suffix('\r').unwrap_or(text);
        Ok(Self(text.to_owned()))
    }

    /// Reads a secret from an environment variable.
    ///
    /// # Errors
    /// If the variable is unset or not UTF-8.
    pub fn from_env(var: &str) -> Result<Self, SecretError> {
        std::env::var(var)
            .map(Self)
            .map_err(|_| SecretError::Env { var: var.to_owned() })
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read secret file {path}: {detail}")]
    File { path: String, detail: String },
    #[error("environment variable {var} is not set (or not UTF-8)")]
    Env { var: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "*** ***");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn file_secret_drops_one_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "pa ss\n").unwrap();
        assert_eq!(Secret::from_file(&p).unwrap().expose(), "pa ss");
        let err = Secret::from_file(&dir.path().join("missing")).unwrap_err();
        assert!(err.to_string().contains("missing"));
    }
}
