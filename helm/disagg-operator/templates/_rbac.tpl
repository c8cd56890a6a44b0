{{/*
The rules mirror operator/disagg_operator/rbac.py, the list of API calls the
operator makes; tests/helm compares the two in both directions.

Rules on cluster-scoped resources. kopf lists and watches CRDs to find the
resources it serves; a namespace-limited operator also lists and watches
namespaces; a cluster-wide operator with peering writes keep-alives into its
ClusterKopfPeering.
*/}}
{{- define "disagg-operator.clusterScopedRules" -}}
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["get", "list", "watch"]
{{- if not .Values.clusterWide }}
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get", "list", "watch"]
{{- end }}
{{- if and .Values.clusterWide .Values.peering.enabled }}
- apiGroups: ["kopf.dev"]
  resources: ["clusterkopfpeerings"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
{{- end }}

{{/*
Rules on namespaced resources: the custom resource and its status, the child
Deployments, Services and PodDisruptionBudgets, the pods whose /metrics drive
autoscaling, events, and the KopfPeering of a namespace-limited operator with
peering.
*/}}
{{- define "disagg-operator.namespacedRules" -}}
- apiGroups: ["disagg.dev"]
  resources: ["disaggregateddeployments"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["disagg.dev"]
  resources: ["disaggregateddeployments/status"]
  verbs: ["get", "patch"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- if and (not .Values.clusterWide) .Values.peering.enabled }}
- apiGroups: ["kopf.dev"]
  resources: ["kopfpeerings"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
{{- end }}
