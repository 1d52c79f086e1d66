//! Label selectors (`matchLabels` + `matchExpressions`), evaluated the way the Kubernetes API
//! evaluates them. Pure: used for Placements' namespace and location selectors.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

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
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn req(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn table() {
        let east = labels(&[("region", "east"), ("tier", "gold")]);
        type Row<'a> = (&'a str, &'a [(&'a str, &'a str)], Vec<LabelSelectorRequirement>, bool);
        let cases: &[Row] = &[
            ("empty selects all", &[], vec![], true),
            ("matchLabels hit", &[("region", "east")], vec![], true),
            ("matchLabels miss", &[("region", "west")], vec![], false),
            ("matchLabels absent key", &[("zone", "a")], vec![], false),
            ("In hit", &[], vec![req("region", "In", &["east", "west"])], true),
            ("In miss", &[], vec![req("region", "In", &["west"])], false),
            ("NotIn hit", &[], vec![req("region", "NotIn", &["west"])], true),
            ("NotIn absent key", &[], vec![req("zone", "NotIn", &["a"])], true),
            ("NotIn miss", &[], vec![req("region", "NotIn", &["east"])], false),
            ("Exists", &[], vec![req("tier", "Exists", &[])], true),
            ("DoesNotExist", &[], vec![req("tier", "DoesNotExist", &[])], false),
            ("all must hold", &[("region", "east")], vec![req("tier", "In", &["silver"])], false),
            ("unknown operator fails closed", &[], vec![req("region", "Gt", &["1"])], false),
        ];
        for (name, ml, exprs, want) in cases {
            assert_eq!(matches(&labels(ml), exprs, &east), *want, "{name}");
        }
    }
}
