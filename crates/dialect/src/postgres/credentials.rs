//! The passwords tcpcopy logs in to the target with: `--login USER:PASSWORD` values and
//! login files (one `USER:PASSWORD` a line; blank lines and lines starting with `#` skipped).
//! The user ends at the first colon; the password is the rest of the value, colons included.

use thiserror::Error;

/// A `--login` value or a login file's line that is not `USER:PASSWORD`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0}: expected USER:PASSWORD")]
pub struct BadLogin(String);

/// Users and their passwords at the target, in the order given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    logins: Vec<(String, String)>,
}

impl Credentials {
    /// Adds one `USER:PASSWORD`; a user given twice keeps the last password.
    pub fn add(&mut self, value: &str) -> Result<(), BadLogin> {
        let (user, password) = value
            .split_once(':')
            .filter(|(user, _)| !user.is_empty())
            .ok_or_else(|| BadLogin(redact(value)))?;
        self.logins.retain(|(u, _)| u != user);
        self.logins.push((user.to_owned(), password.to_owned()));
        Ok(())
    }

    /// Adds every line of a login file's text.
    pub fn add_file(&mut self, text: &str) -> Result<(), BadLogin> {
        text.lines()
            .map(str::trim_end)
            .filter(|line| !line.trim_start().is_empty() && !line.trim_start().starts_with('#'))
            .try_for_each(|line| self.add(line))
    }

    /// The password of `user`.
    pub fn password(&self, user: &str) -> Option<&str> {
        self.logins
            .iter()
            .find(|(u, _)| u == user)
            .map(|(_, p)| p.as_str())
    }

    /// The first user given: the one a session gets when its own login was never seen.
    pub fn first_user(&self) -> Option<&str> {
        self.logins.first().map(|(u, _)| u.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.logins.is_empty()
    }
}

/// A rejected value is named in messages without its password.
fn redact(value: &str) -> String {
    match value.split_once(':') {
        Some((user, _)) => format!("{user}:..."),
        None if value.is_empty() => "an empty login".to_owned(),
        None => format!("{value:?} (no colon)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_files_parse() {
        let mut c = Credentials::default();
        c.add("app:s3cr:et").unwrap();
        c.add_file("# accounts\n\nbench:pw\r\n  \napp:new\n")
            .unwrap();
        assert_eq!(c.password("app"), Some("new"));
        assert_eq!(c.password("bench"), Some("pw"));
        assert_eq!(c.password("nobody"), None);
        assert_eq!(c.first_user(), Some("bench"));
        c.add("empty:").unwrap();
        assert_eq!(c.password("empty"), Some(""));
    }

    #[test]
    fn bad_values_are_refused_without_their_password() {
        let mut c = Credentials::default();
        assert_eq!(
            c.add(":pw").unwrap_err().to_string(),
            ":...: expected USER:PASSWORD"
        );
        assert_eq!(
            c.add("alice").unwrap_err().to_string(),
            "\"alice\" (no colon): expected USER:PASSWORD"
        );
        assert!(c.add_file("ok:1\nbad\n").is_err());
        assert!(Credentials::default().is_empty());
    }
}
