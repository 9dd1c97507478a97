{{/*
Expand the name of the chart.
*/}}
{{- define "vte-proxy.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Create a default fully qualified app name.
We truncate at 63 chars because some Kubernetes name fields are limited to this (by the DNS naming spec).
If release name contains chart name it will be used as a full name.
*/}}
{{- define "vte-proxy.fullname" -}}
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
Create chart name and version as used by the chart label.
*/}}
{{- define "vte-proxy.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels
*/}}
{{- define "vte-proxy.labels" -}}
helm.sh/chart: {{ include "vte-proxy.chart" . }}
{{ include "vte-proxy.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: vte-proxy
{{- end }}

{{/*
Selector labels
*/}}
{{- define "vte-proxy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vte-proxy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels of the `helm test` pod: deliberately NOT the selector labels, so the Service, the
PodDisruptionBudget and the NetworkPolicy never select it.
*/}}
{{- define "vte-proxy.testSelectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-test" (include "vte-proxy.name" .) | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Create the name of the service account to use
*/}}
{{- define "vte-proxy.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "vte-proxy.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The container image reference (digest wins over tag).
*/}}
{{- define "vte-proxy.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/*
Name of the ConfigMap holding gateway.yaml (the chart's own or config.existingConfigMap).
*/}}
{{- define "vte-proxy.configMapName" -}}
{{- if .Values.config.existingConfigMap }}
{{- .Values.config.existingConfigMap }}
{{- else }}
{{- include "vte-proxy.fullname" . }}
{{- end }}
{{- end }}

{{/*
Name of the Secret created from secretEnv.
*/}}
{{- define "vte-proxy.secretEnvName" -}}
{{- printf "%s-env" (include "vte-proxy.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Directory the config is mounted at, and the file the gateway is pointed at. The directory
(never a subPath) is mounted so ConfigMap updates reach the pod and are hot-reloaded.
*/}}
{{- define "vte-proxy.configDir" -}}
/etc/vte-proxy
{{- end }}

{{- define "vte-proxy.configFile" -}}
{{ include "vte-proxy.configDir" . }}/gateway.yaml
{{- end }}

{{/*
The gateway.yaml document: config.gateway as a string (verbatim) or a mapping (toYaml).
*/}}
{{- define "vte-proxy.gatewayYaml" -}}
{{- if kindIs "string" .Values.config.gateway }}
{{- .Values.config.gateway }}
{{- else }}
{{- $gateway := deepCopy .Values.config.gateway }}
{{- if eq .Values.limits.store "redis" }}
{{- /* limits.store=redis: the counters live in Redis, whose URL comes from the pod environment. */}}
{{- $limits := get $gateway "limits" | default dict }}
{{- $_ := set $limits "store" "redis" }}
{{- $_ := set $limits "redis" (dict "url" "${REDIS_URL}" "on_error" .Values.limits.redis.onError) }}
{{- $_ := set $gateway "limits" $limits }}
{{- end }}
{{- toYaml $gateway }}
{{- end }}
{{- end }}

{{/*
server.shutdown_grace of config.gateway in whole seconds (rounded up); 30 (the gateway's
default) when absent, when config.gateway is a string or when existingConfigMap is used. Accepts numbers (seconds) and
durations like 500ms, 30s, 2m, 1h.
*/}}
{{- define "vte-proxy.shutdownGraceSeconds" -}}
{{- $grace := 30 }}
{{- if and (not .Values.config.existingConfigMap) (kindIs "map" .Values.config.gateway) }}
{{- $server := get .Values.config.gateway "server" | default dict }}
{{- if and (kindIs "map" $server) (hasKey $server "shutdown_grace") }}
{{- $raw := toString (get $server "shutdown_grace") | trim }}
{{- if regexMatch "^[0-9]+(\\.[0-9]+)?$" $raw }}
{{- $grace = $raw | float64 | ceil | int }}
{{- else if regexMatch "^[0-9]+(\\.[0-9]+)?(ms|s|m|h)$" $raw }}
{{- $num := regexFind "^[0-9]+(\\.[0-9]+)?" $raw | float64 }}
{{- $unit := regexFind "(ms|s|m|h)$" $raw }}
{{- $factor := dict "ms" 0.001 "s" 1.0 "m" 60.0 "h" 3600.0 }}
{{- $grace = mulf $num (get $factor $unit) | ceil | int }}
{{- end }}
{{- end }}
{{- end }}
{{- $grace }}
{{- end }}

{{/*
PromQL selector for this release's series (prometheusRule.selector or job + namespace).
*/}}
{{- define "vte-proxy.promSelector" -}}
{{- if .Values.prometheusRule.selector }}
{{- .Values.prometheusRule.selector }}
{{- else }}
{{- printf "job=%q, namespace=%q" (include "vte-proxy.fullname" .) .Release.Namespace }}
{{- end }}
{{- end }}

{{/*
Checks that values cannot express in values.schema.json.
*/}}
{{- define "vte-proxy.validateValues" -}}
{{- if eq .Values.limits.store "redis" }}
{{- if not .Values.limits.redis.existingSecret }}
{{- fail "limits.store=redis needs limits.redis.existingSecret: a Secret holding the Redis URL (it becomes REDIS_URL)" }}
{{- end }}
{{- if and (kindIs "string" .Values.config.gateway) (not .Values.config.existingConfigMap) (not (contains "${REDIS_URL}" .Values.config.gateway)) }}
{{- fail "limits.store=redis with config.gateway as a string: add limits: {store: redis, redis: {url: \"${REDIS_URL}\"}} to it" }}
{{- end }}
{{- end }}
{{- if and .Values.config.existingConfigMap (eq .Values.config.reloadStrategy "rollout") }}
{{- fail "config.reloadStrategy=rollout needs the chart-managed ConfigMap: with config.existingConfigMap use hotReload (or restart the pods yourself, e.g. with Reloader)" }}
{{- end }}
{{- if and (not .Values.config.existingConfigMap) (empty .Values.config.gateway) }}
{{- fail "config.gateway is empty: give the gateway.yaml contents or set config.existingConfigMap" }}
{{- end }}
{{- $grace := include "vte-proxy.shutdownGraceSeconds" . | int }}
{{- $preStop := .Values.shutdown.preStopSleepSeconds | int }}
{{- $termination := .Values.shutdown.terminationGracePeriodSeconds | int }}
{{- if le $termination (add $preStop $grace) }}
{{- fail (printf "shutdown.terminationGracePeriodSeconds (%d) must exceed shutdown.preStopSleepSeconds (%d) + server.shutdown_grace (%ds), or Kubernetes kills streams that are still draining" $termination $preStop $grace) }}
{{- end }}
{{- end }}

{{/*
OpenTelemetry: the standard OTEL_* variables of the gateway container (telemetry.enabled).
*/}}
{{- define "vte-proxy.telemetryEnv" -}}
{{- $t := .Values.telemetry -}}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ required "telemetry.endpoint is required when telemetry.enabled is true" $t.endpoint | quote }}
- name: OTEL_SERVICE_NAME
  value: {{ $t.serviceName | default (include "vte-proxy.fullname" .) | quote }}
- name: OTEL_TRACES_SAMPLER
  value: parentbased_traceidratio
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ $t.sampleRatio | toString | quote }}
{{- if $t.headersSecret.name }}
- name: OTEL_EXPORTER_OTLP_HEADERS
  valueFrom:
    secretKeyRef:
      name: {{ $t.headersSecret.name | quote }}
      key: {{ required "telemetry.headersSecret.key is required with telemetry.headersSecret.name" $t.headersSecret.key | quote }}
{{- end }}
- name: VTE_POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: VTE_POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- $attributes := list "k8s.pod.name=$(VTE_POD_NAME)" "k8s.namespace.name=$(VTE_POD_NAMESPACE)" }}
{{- range $k, $v := $t.resourceAttributes }}
{{- $attributes = append $attributes (printf "%s=%s" $k (toString $v)) }}
{{- end }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ join "," $attributes | quote }}
{{- end }}
