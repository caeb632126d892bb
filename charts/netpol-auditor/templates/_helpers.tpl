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

{{/* Image references: `<repository>@<digest>` when a digest is pinned, else `<repository>:<tag>`. */}}
{{- define "netpol-auditor.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The probe image, exactly as the operator puts it on probe pods and the admission policy compares it. */}}
{{- define "netpol-auditor.probeImage" -}}
{{- if .Values.probe.image.digest -}}
{{- printf "%s@%s" .Values.probe.image.repository .Values.probe.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.probe.image.repository .Values.probe.image.tag -}}
{{- end -}}
{{- end -}}

{{/*
A stable identity of this install, on every probe pod (label netpol-auditor.io/install): the first 12 hex digits of
sha256("<release namespace>/<release name>"). Two releases of the same name in different namespaces differ, so one's
start-up sweep never deletes the other's probe pods.
*/}}
{{- define "netpol-auditor.installId" -}}
{{- printf "%s/%s" .Release.Namespace .Release.Name | sha256sum | trunc 12 -}}
{{- end -}}

{{/* The user name the API server gives the operator's ServiceAccount. */}}
{{- define "netpol-auditor.serviceAccountUser" -}}
{{- printf "system:serviceaccount:%s:%s" .Release.Namespace (include "netpol-auditor.serviceAccountName" .) -}}
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

{{/*
The namespaces of probe.namespaces that get a probe Role and RoleBinding, as a YAML list: all of them, except that
against a live cluster (helm install/upgrade, where `lookup` answers) the ones that do not exist yet are left out
instead of failing the install; NOTES.txt names them (netpol-auditor.missingProbeNamespaces). With `helm template`
or a GitOps tool `lookup` answers nothing, and every listed namespace is rendered.
*/}}
{{- define "netpol-auditor.probeRoleNamespaces" -}}
{{- $missing := include "netpol-auditor.missingProbeNamespaces" . | fromYamlArray -}}
{{- $out := list -}}
{{- range .Values.probe.namespaces -}}
{{- if not (has . $missing) -}}
{{- $out = append $out . -}}
{{- end -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{- define "netpol-auditor.missingProbeNamespaces" -}}
{{- $missing := list -}}
{{- $all := lookup "v1" "Namespace" "" "" -}}
{{- if and $all $all.items -}}
{{- $existing := list -}}
{{- range $all.items -}}
{{- $existing = append $existing .metadata.name -}}
{{- end -}}
{{- range .Values.probe.namespaces -}}
{{- if not (has . $existing) -}}
{{- $missing = append $missing . -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toYaml $missing -}}
{{- end -}}

{{/*
A CEL expression of the admission policy: the condition .cond (about a container `c`) holds for every container,
init container and ephemeral container of the pod `object`.
*/}}
{{- define "netpol-auditor.everyContainer" -}}
{{- $clauses := list -}}
{{- range list "containers" "initContainers" "ephemeralContainers" -}}
{{- $clauses = append $clauses (printf "(!has(object.spec.%s) || object.spec.%s.all(c, %s))" . . $.cond) -}}
{{- end -}}
{{- join " && " $clauses -}}
{{- end -}}

{{/*
Topology spread constraints of the operator pods, as a YAML list: topologySpreadConstraints when set (a constraint
without labelSelector selects this release's operator pods), else with more than one replica the chart's spread over
nodes and, optionally, zones (topologySpread).
*/}}
{{- define "netpol-auditor.topologySpreadConstraints" -}}
{{- $selector := dict "matchLabels" (include "netpol-auditor.selectorLabels" . | fromYaml) -}}
{{- $out := list -}}
{{- if .Values.topologySpreadConstraints -}}
{{- range .Values.topologySpreadConstraints -}}
{{- $constraint := deepCopy . -}}
{{- if not $constraint.labelSelector -}}
{{- $_ := set $constraint "labelSelector" $selector -}}
{{- end -}}
{{- $out = append $out $constraint -}}
{{- end -}}
{{- else if gt (int .Values.replicaCount) 1 -}}
{{- range $key, $when := dict "kubernetes.io/hostname" .Values.topologySpread.hostname "topology.kubernetes.io/zone" .Values.topologySpread.zone -}}
{{- if $when -}}
{{- $out = append $out (dict "maxSkew" 1 "topologyKey" $key "whenUnsatisfiable" $when "labelSelector" $selector) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{/*
Values keys this chart version reads that earlier chart versions' values lack, one dotted path a line.
`helm upgrade --reuse-values` renders with the previous release's chart defaults, not this chart's, so these keys
would be missing: a nil map fails deep in a template and a missing number silently becomes an empty setting.
tests/chart/test_chart_upgrade.py keeps this list complete.
*/}}
{{- define "netpol-auditor.keysNewSince010" -}}
peering.lifetimeSeconds
events.graceSeconds
probe.startDelaySeconds
probe.podStartTimeoutSeconds
topologySpread
topologySpreadConstraints
podDisruptionBudget
serviceMonitor.annotations
serviceMonitor.relabelings
serviceMonitor.metricRelabelings
prometheusRule.selector
prometheusRule.runbookBaseUrl
prometheusRule.for
policyReports
reachabilityPage
{{- end -}}

{{/* Fails the render, naming the missing keys and the fix, when the values come from an earlier chart version. */}}
{{- define "netpol-auditor.checkValues" -}}
{{- $missing := list -}}
{{- range $path := splitList "\n" (include "netpol-auditor.keysNewSince010" $) -}}
{{- $node := $.Values -}}
{{- $found := true -}}
{{- range $key := splitList "." (trim $path) -}}
{{- if and $found (kindIs "map" $node) (hasKey $node $key) -}}
{{- $node = index $node $key -}}
{{- else -}}
{{- $found = false -}}
{{- end -}}
{{- end -}}
{{- if not $found -}}
{{- $missing = append $missing (trim $path) -}}
{{- end -}}
{{- end -}}
{{- if $missing -}}
{{- fail (printf "values lack keys this chart version reads (%s): they are an earlier chart version's values, as `helm upgrade --reuse-values` keeps them. Upgrade with `--reset-then-reuse-values` (helm >= 3.14) or pass your values file with -f." (join ", " $missing)) -}}
{{- end -}}
{{- end -}}

{{/*
`namespaces` as one kopf namespace pattern. kopf's first inclusive glob makes the initial match and later ones only
re-match what a `!glob` excluded, so "shop,payments" would audit shop alone: a list that starts with an inclusive
glob is rendered after "!*" (everything excluded first), so that every listed glob includes. A list that starts with
`!glob` keeps kopf's implied catch-all ("every namespace but").
*/}}
{{- define "netpol-auditor.namespacePattern" -}}
{{- if and .Values.namespaces (not (hasPrefix "!" (first .Values.namespaces))) -}}
!*,{{ join "," .Values.namespaces }}
{{- else -}}
{{ join "," .Values.namespaces }}
{{- end -}}
{{- end -}}
