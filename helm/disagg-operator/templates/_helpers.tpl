{{/*
Chart name, truncated to 63 characters (a label value limit).
*/}}
{{- define "disagg-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's objects: RELEASE-CHART, or RELEASE when it already
contains the chart name. Truncated to 63 characters (a DNS label).
*/}}
{{- define "disagg-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart label value: NAME-VERSION.
*/}}
{{- define "disagg-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels that select the operator pods. They never change across upgrades,
because a Deployment's selector is immutable.
*/}}
{{- define "disagg-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "disagg-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/*
Labels of every object the chart creates.
*/}}
{{- define "disagg-operator.labels" -}}
helm.sh/chart: {{ include "disagg-operator.chart" . }}
{{ include "disagg-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: disagg
{{- end }}

{{/*
Name of the operator's ServiceAccount.
*/}}
{{- define "disagg-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "disagg-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false: name an existing ServiceAccount" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Name of the kopf peering object (ClusterKopfPeering or KopfPeering).
*/}}
{{- define "disagg-operator.peeringName" -}}
{{- default (include "disagg-operator.fullname" .) .Values.peering.name }}
{{- end }}

{{/*
Operator image reference: REPOSITORY:TAG, the tag defaulting to appVersion.
*/}}
{{- define "disagg-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
Labels that every worker and router pod of a DisaggregatedDeployment carries;
the operator sets them (app.kubernetes.io/name=disagg,
app.kubernetes.io/managed-by=disagg-operator).
*/}}
{{- define "disagg-operator.workerSelector" -}}
app.kubernetes.io/name: disagg
app.kubernetes.io/managed-by: disagg-operator
{{- end }}

{{/*
Namespace selector of the ServiceMonitor/PodMonitor: every namespace when the
operator is cluster-wide, else the watched namespaces.
*/}}
{{- define "disagg-operator.monitorNamespaceSelector" -}}
{{- if .Values.clusterWide -}}
any: true
{{- else -}}
matchNames:
{{- range .Values.watchNamespaces }}
  - {{ . | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Seconds in a Prometheus duration such as 500ms, 15s, 2m or 1h, as a string.
values.schema.json admits only these forms.
*/}}
{{- define "disagg-operator.durationSeconds" -}}
{{- $number := regexFind "^[0-9]+" . | float64 }}
{{- $unit := regexFind "[a-z]+$" . }}
{{- $factors := dict "ms" 0.001 "s" 1.0 "m" 60.0 "h" 3600.0 }}
{{- mulf $number (get $factors $unit) }}
{{- end }}

{{/*
Arguments of the operator container, one YAML list item per line.
*/}}
{{- define "disagg-operator.args" -}}
- operator
{{- if .Values.clusterWide }}
- --all-namespaces
{{- else }}
{{- range .Values.watchNamespaces }}
- --namespace={{ . }}
{{- end }}
{{- end }}
{{- if .Values.peering.enabled }}
- --peering={{ include "disagg-operator.peeringName" . }}
{{- else }}
- --standalone
{{- end }}
- --liveness=http://0.0.0.0:{{ .Values.operator.livenessPort }}/healthz
- --log-level={{ .Values.operator.logLevel }}
{{- range .Values.operator.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}
