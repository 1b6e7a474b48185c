//! What the policy kinds share: the API groups, object references
//! (Gateway API's shapes, as Linkerd's) and the pod label selector. A leaf.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The resources' API group.
pub const GROUP: &str = "policy.pimesh.io";
/// The resources' version.
pub const VERSION: &str = "v1alpha1";
/// Linkerd's API group, which a ported manifest replaces with [`GROUP`].
pub const LINKERD_GROUP: &str = "policy.linkerd.io";
/// The Gateway API's group (HTTPRoute, GRPCRoute).
pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// A reference's `group` (Gateway API's `Group`): empty for the core group.
pub(crate) const GROUP_PATTERN: &str =
    r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// A reference's `kind` (Gateway API's `Kind`).
pub(crate) const KIND_PATTERN: &str = r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$";

/// A resource in the policy's own namespace (Gateway API's
/// `LocalPolicyTargetReference`, as Linkerd's `targetRef`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TargetRef {
    /// Group is the group of the referent. When empty, the Kubernetes core
    /// API group is inferred.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253), regex(pattern = GROUP_PATTERN))]
    pub group: Option<String>,
    /// Kind is the kind of the referent.
    #[schemars(length(min = 1, max = 63), regex(pattern = KIND_PATTERN))]
    pub kind: String,
    /// Name is the name of the referent.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A named resource, in the policy's namespace unless `namespace` says
/// otherwise (Linkerd's `requiredAuthenticationRefs` and `clientRefs` items).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ObjectRef {
    /// Group is the group of the referent. When empty, the Kubernetes core
    /// API group is inferred.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253), regex(pattern = GROUP_PATTERN))]
    pub group: Option<String>,
    /// Kind is the kind of the referent.
    #[schemars(length(min = 1, max = 63), regex(pattern = KIND_PATTERN))]
    pub kind: String,
    /// Name is the name of the referent.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Namespace of the referent. When unspecified, the policy's own
    /// namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub namespace: Option<String>,
}

/// Selects pods of the same namespace by label (Kubernetes'
/// `LabelSelector`, meta/v1): the results of `matchLabels` and
/// `matchExpressions` are ANDed; an empty selector selects every pod.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    /// `{key: value}` pairs the pod's labels must all have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_labels: Option<BTreeMap<String, String>>,
    /// Requirements the pod's labels must all meet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_expressions: Option<Vec<LabelSelectorRequirement>>,
}

/// One requirement of a label selector.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LabelSelectorRequirement {
    /// The label's key.
    pub key: String,
    /// How the label's value relates to `values`.
    pub operator: SelectorOperator,
    /// Values for `In` and `NotIn` (at least one); empty for `Exists` and
    /// `DoesNotExist`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
}

/// A [`LabelSelectorRequirement`]'s operator (Kubernetes' names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SelectorOperator {
    /// The label's value is one of `values`.
    In,
    /// The label is absent or its value is none of `values`.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

impl LabelSelector {
    /// Whether a pod with `labels` is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let by_label = self
            .match_labels
            .iter()
            .flatten()
            .all(|(k, v)| labels.get(k) == Some(v));
        let by_expression = self.match_expressions.iter().flatten().all(|r| {
            let values = r.values.as_deref().unwrap_or_default();
            match (r.operator, labels.get(&r.key)) {
                (SelectorOperator::In, Some(v)) => values.contains(v),
                (SelectorOperator::In, None) => false,
                (SelectorOperator::NotIn, Some(v)) => !values.contains(v),
                (SelectorOperator::NotIn, None) => true,
                (SelectorOperator::Exists, v) => v.is_some(),
                (SelectorOperator::DoesNotExist, v) => v.is_none(),
            }
        });
        by_label && by_expression
    }
}
