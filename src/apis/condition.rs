//! Helpers for the standard `metav1.Condition` lists both APIs carry in their status.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

/// The three values a condition's `status` may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl ConditionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }

    pub fn parse(s: &str) -> Self {
        match s {
            "True" => Self::True,
            "False" => Self::False,
            _ => Self::Unknown,
        }
    }
}

/// The status of the condition `type_` in `conditions`, or `None` when it is absent.
pub fn condition_status(conditions: &[Condition], type_: &str) -> Option<ConditionStatus> {
    conditions.iter().find(|c| c.type_ == type_).map(|c| ConditionStatus::parse(&c.status))
}
