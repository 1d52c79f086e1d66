//! Label selectors (`matchLabels` + `matchExpressions`): validated and evaluated the way the
//! Kubernetes API does (`metav1validation.ValidateLabelSelector`, `labels.Parse`). Pure: used for
//! Placements' namespace, location and workload selectors.
//!
//! The generated schemas refuse most invalid selectors at admission (see
//! `apis::placement::validation`); [`validate`] is the same rules again for what the schema
//! cannot say within kcp's CEL cost budget (the keys of `matchLabels`) and for objects stored
//! before the rules existed. A selector that fails it is never evaluated: guessing what a
//! broken selector meant could place or unplace namespaces nobody asked for.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

use crate::apis::placement::v1alpha1::PlacementSpec;

/// Longest label name (the part after the optional `prefix/`), and longest label value.
pub const MAX_NAME: usize = 63;
/// Longest label key prefix (a DNS subdomain).
pub const MAX_PREFIX: usize = 253;

/// Why a selector is invalid, naming the field (`spec.namespaceSelector.matchExpressions[0].key`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct Invalid {
    pub field: String,
    pub problem: Problem,
}

/// What is wrong with one part of a selector. Tenant text is quoted and cut to [`Shown`]'s
/// bound, so a condition message never grows with what the tenant wrote.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("label key {0} is not valid: {1}")]
    Key(Shown, &'static str),
    #[error("label value {0} is not valid: {1}")]
    Value(Shown, &'static str),
    #[error("operator {0} is not one of In, NotIn, Exists, DoesNotExist")]
    Operator(Shown),
    #[error("operator {0} needs at least one value")]
    NoValues(&'static str),
    #[error("operator {0} takes no values")]
    Values(&'static str),
    #[error("{0} is not a workspace path such as root:org:team")]
    WorkspacePath(Shown),
}

/// Tenant text as it appears in a message: quoted, escaped, at most 80 characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shown(String);

impl Shown {
    pub fn of(text: &str) -> Self {
        const MAX: usize = 80;
        let cut: String = text.chars().take(MAX).collect();
        let more = if text.chars().count() > MAX { "…" } else { "" };
        Self(format!("{cut:?}{more}"))
    }
}

impl std::fmt::Display for Shown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn alnum(c: char) -> bool {
    c.is_ascii_alphanumeric()
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`: a label name, or a non-empty label value.
fn name_chars(s: &str) -> bool {
    let (first, last) = (s.chars().next(), s.chars().last());
    first.is_some_and(alnum) && last.is_some_and(alnum) && s.chars().all(|c| alnum(c) || matches!(c, '-' | '_' | '.'))
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*`, at most 253 characters.
fn dns_subdomain(s: &str) -> Result<(), &'static str> {
    if s.len() > MAX_PREFIX {
        return Err("the prefix must be no more than 253 characters");
    }
    let label_ok = |l: &str| {
        let lower = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
        l.chars().next().is_some_and(lower)
            && l.chars().last().is_some_and(lower)
            && l.chars().all(|c| lower(c) || c == '-')
    };
    if s.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(
            "the prefix must be a DNS subdomain: lower-case alphanumerics, '-' and '.', starting and ending alphanumeric",
        )
    }
}

/// Checks a label key: an optional DNS-subdomain prefix and `/`, then a name of at most 63
/// characters of `[A-Za-z0-9._-]` starting and ending alphanumeric.
pub fn validate_key(key: &str) -> Result<(), &'static str> {
    let name = match key.split_once('/') {
        None => key,
        Some(("", _)) => return Err("the prefix before '/' must not be empty"),
        Some((prefix, name)) => {
            dns_subdomain(prefix)?;
            name
        }
    };
    if name.is_empty() {
        return Err("the name must not be empty");
    }
    if name.contains('/') {
        return Err("a key has at most one '/'");
    }
    if name.len() > MAX_NAME {
        return Err("the name must be no more than 63 characters");
    }
    if !name_chars(name) {
        return Err("the name must be alphanumerics, '-', '_' or '.', starting and ending alphanumeric");
    }
    Ok(())
}

/// Checks a label value: empty, or at most 63 characters of `[A-Za-z0-9._-]` starting and ending
/// alphanumeric.
pub fn validate_value(value: &str) -> Result<(), &'static str> {
    if value.len() > MAX_NAME {
        return Err("it must be no more than 63 characters");
    }
    if !value.is_empty() && !name_chars(value) {
        return Err("it must be empty or alphanumerics, '-', '_' or '.', starting and ending alphanumeric");
    }
    Ok(())
}

/// Validates a selector given as its parts; `field` is its path in the object
/// (`spec.locationSelector`). The first problem found is reported.
pub fn validate(
    field: &str,
    match_labels: &BTreeMap<String, String>,
    expressions: &[LabelSelectorRequirement],
) -> Result<(), Invalid> {
    let invalid = |field: String, problem| Err(Invalid { field, problem });
    for (key, value) in match_labels {
        if let Err(why) = validate_key(key) {
            return invalid(format!("{field}.matchLabels"), Problem::Key(Shown::of(key), why));
        }
        if let Err(why) = validate_value(value) {
            return invalid(format!("{field}.matchLabels[{}]", Shown::of(key)), Problem::Value(Shown::of(value), why));
        }
    }
    for (i, r) in expressions.iter().enumerate() {
        let at = format!("{field}.matchExpressions[{i}]");
        if let Err(why) = validate_key(&r.key) {
            return invalid(format!("{at}.key"), Problem::Key(Shown::of(&r.key), why));
        }
        let values = r.values.as_deref().unwrap_or_default();
        let (op, needs_values): (&'static str, bool) = match r.operator.as_str() {
            "In" => ("In", true),
            "NotIn" => ("NotIn", true),
            "Exists" => ("Exists", false),
            "DoesNotExist" => ("DoesNotExist", false),
            other => return invalid(format!("{at}.operator"), Problem::Operator(Shown::of(other))),
        };
        match (needs_values, values.is_empty()) {
            (true, true) => return invalid(format!("{at}.values"), Problem::NoValues(op)),
            (false, false) => return invalid(format!("{at}.values"), Problem::Values(op)),
            _ => {}
        }
        for (j, v) in values.iter().enumerate() {
            if let Err(why) = validate_value(v) {
                return invalid(format!("{at}.values[{j}]"), Problem::Value(Shown::of(v), why));
            }
        }
    }
    Ok(())
}

/// [`validate`] for a `metav1.LabelSelector`.
pub fn validate_selector(field: &str, selector: &LabelSelector) -> Result<(), Invalid> {
    let empty = BTreeMap::new();
    validate(
        field,
        selector.match_labels.as_ref().unwrap_or(&empty),
        selector.match_expressions.as_deref().unwrap_or_default(),
    )
}

/// Validates the three selectors of a Placement: where it runs (`locationSelector`), which
/// namespaces (`namespaceSelector`) and which of their objects (`workloadSelector`).
pub fn validate_spec(spec: &PlacementSpec) -> Result<(), Invalid> {
    let location = &spec.location_selector;
    validate("spec.locationSelector", &location.match_labels, &location.match_expressions)?;
    validate_selector("spec.namespaceSelector", &spec.namespace_selector)?;
    spec.workload_selector.as_ref().map_or(Ok(()), |s| validate_selector("spec.workloadSelector", s))
}

/// Whether `labels` satisfy every `match_labels` entry and every requirement. An empty selector
/// matches everything. An unknown operator matches nothing (fail closed: never place by accident).
pub fn matches(
    match_labels: &BTreeMap<String, String>,
    expressions: &[LabelSelectorRequirement],
    labels: &BTreeMap<String, String>,
) -> bool {
    match_labels.iter().all(|(k, v)| labels.get(k) == Some(v)) && expressions.iter().all(|r| requirement(r, labels))
}

/// [`matches`] for a `metav1.LabelSelector`.
pub fn matches_selector(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let empty = BTreeMap::new();
    matches(
        selector.match_labels.as_ref().unwrap_or(&empty),
        selector.match_expressions.as_deref().unwrap_or_default(),
        labels,
    )
}

fn requirement(r: &LabelSelectorRequirement, labels: &BTreeMap<String, String>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let value = labels.get(&r.key);
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        _ => false,
    }
}

#[cfg(test)]
#[path = "selector_tests.rs"]
mod tests;
