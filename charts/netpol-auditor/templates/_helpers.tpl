{{/*
Names. Every object is named "<fullname>" (or "<fullname>-<what>") so tests and users can find them predictably:
the ClusterRole and ClusterRoleBinding are "<fullname>", the metrics Service "<fullname>-metrics".
*/}}
{{- define "netpol-auditor.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "netpol-auditor.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "netpol-auditor.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "netpol-auditor.labels" -}}
helm.sh/chart: {{ include "netpol-auditor.chart" . }}
{{ include "netpol-auditor.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: netpol-auditor
{{- end -}}

{{/* Labels that select the operator pods (Deployment, Service, NetworkPolicy). */}}
{{- define "netpol-auditor.selectorLabels" -}}
app.kubernetes.io/name: {{ include "netpol-auditor.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "netpol-auditor.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "netpol-auditor.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The ClusterKopfPeering object the replicas coordinate through. */}}
{{- define "netpol-auditor.peeringName" -}}
{{- default (include "netpol-auditor.fullname" .) .Values.peering.name -}}
{{- end -}}

{{- define "netpol-auditor.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "netpol-auditor.probeImage" -}}
{{- printf "%s:%s" .Values.probe.image.repository .Values.probe.image.tag -}}
{{- end -}}

{{/*
The operator's own CRDs (every CRD in crds/ except kopf's peering ones), as a YAML list of {group, plural, kind}:
the ClusterRole grants them from here, so a CRD added to crds/ is covered without another edit.
*/}}
{{- define "netpol-auditor.ownedCRDs" -}}
{{- $out := list -}}
{{- range $path, $_ := .Files.Glob "crds/*.yaml" -}}
{{- range $doc := regexSplit "(?m)^---[ \t]*$" ($.Files.Get $path) -1 -}}
{{- $crd := fromYaml $doc -}}
{{- if and $crd (eq (default "" $crd.kind) "CustomResourceDefinition") (ne $crd.spec.group "kopf.dev") -}}
{{- $out = append $out (dict "group" $crd.spec.group "plural" $crd.spec.names.plural "kind" $crd.spec.names.kind) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}
