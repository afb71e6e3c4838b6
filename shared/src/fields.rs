//! Configuration problems, named by field.
//!
//! Both programs validate their TOML configuration (and the hub its catalogue) before they open a
//! file or bind a port, and report every problem at once, each with the dotted path of the field it
//! is about (`dataset[0].cursor_column`, `agent[1].token`). This is that one shape.

use std::fmt;

/// One bad field: where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    pub field: String,
    pub problem: String,
}

impl FieldProblem {
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> FieldProblem {
        FieldProblem { field: field.into(), problem: problem.into() }
    }
}

impl fmt::Display for FieldProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

/// The problems as an indented list, one per line, for error messages.
pub fn list(problems: &[FieldProblem]) -> String {
    problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_name_their_field() {
        let ps = [FieldProblem::new("hub.url", "must be https"), FieldProblem::new("dataset[0].key", "is empty")];
        assert_eq!(list(&ps), "  - hub.url: must be https\n  - dataset[0].key: is empty");
    }
}
