//! Configuration problems, each with the path of its field: what validation of the config file, the catalogue, the registry and the gateway keys reports.

use std::fmt;

/// One problem found in the configuration, with the path of the field it concerns.
#[derive(Debug, Clone)]
pub struct Issue {
    pub path: String,
    pub message: String,
}

#[derive(Debug, Default)]
pub struct Issues(pub Vec<Issue>);

impl Issues {
    pub fn push(&mut self, path: String, message: String) {
        self.0.push(Issue { path, message });
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Issues {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {}", issue.path, issue.message)?;
        }
        Ok(())
    }
}
