{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "streamstop.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: the release name, unless it already contains the chart's. */}}
{{- define "streamstop.fullname" -}}
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

{{- define "streamstop.selectorLabels" -}}
app.kubernetes.io/name: {{ include "streamstop.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "streamstop.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "streamstop.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: consumer
{{- end }}

{{- define "streamstop.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "streamstop.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "streamstop.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* Where mounted secrets live in the pod; the ConfigMap names files under it. */}}
{{- define "streamstop.secretDir" -}}
/var/run/secrets/streamstop
{{- end }}

{{- define "streamstop.isSasl" -}}
{{- if hasPrefix "SASL_" (upper .Values.config.kafka.security_protocol) }}true{{ end }}
{{- end }}

{{/* SASL with OAUTHBEARER: the client secret comes from kafkaOAuth, no password. */}}
{{- define "streamstop.isOAuth" -}}
{{- if and (include "streamstop.isSasl" .) (eq (upper .Values.config.kafka.sasl_mechanism) "OAUTHBEARER") }}true{{ end }}
{{- end }}

{{/* SASL with PLAIN or SCRAM: a user name and the password from kafkaSasl. */}}
{{- define "streamstop.usesSaslPassword" -}}
{{- if and (include "streamstop.isSasl" .) (not (include "streamstop.isOAuth" .)) }}true{{ end }}
{{- end }}

{{- define "streamstop.isTls" -}}
{{- if has (upper .Values.config.kafka.security_protocol) (list "SSL" "SASL_SSL") }}true{{ end }}
{{- end }}

{{/*
Kafka files the chart mounts from Secrets into the secrets volume: a list of
{secret, key, path, config} with config the kafka.* key naming the file.
*/}}
{{- define "streamstop.kafkaFiles" -}}
{{- $files := list }}
{{- $tls := .Values.kafkaTls }}
{{- if include "streamstop.usesSaslPassword" . }}
{{- $files = append $files (dict "secret" (include "streamstop.saslSecret" .) "key" (include "streamstop.saslKey" .) "path" "sasl-password" "config" "sasl_password_file") }}
{{- end }}
{{- if include "streamstop.isOAuth" . }}
{{- $files = append $files (dict "secret" .Values.kafkaOAuth.existingSecret "key" .Values.kafkaOAuth.existingSecretKey "path" "kafka-oauth-client-secret" "config" "oauth_client_secret_file") }}
{{- end }}
{{- if $tls.caSecret }}
{{- $files = append $files (dict "secret" $tls.caSecret "key" $tls.caSecretKey "path" "kafka-ca.crt" "config" "ssl_cafile") }}
{{- end }}
{{- if $tls.clientSecret }}
{{- $files = append $files (dict "secret" $tls.clientSecret "key" $tls.clientCertKey "path" "kafka-client.crt" "config" "ssl_certfile") }}
{{- $files = append $files (dict "secret" $tls.clientSecret "key" $tls.clientKeyKey "path" "kafka-client.key" "config" "ssl_keyfile") }}
{{- if $tls.clientKeyPasswordKey }}
{{- $files = append $files (dict "secret" $tls.clientSecret "key" $tls.clientKeyPasswordKey "path" "kafka-client-key-password" "config" "ssl_key_password_file") }}
{{- end }}
{{- end }}
{{- toJson $files }}
{{- end }}

{{/* The Secret holding the API token: the user's, or the chart's when given inline. */}}
{{- define "streamstop.apiTokenSecret" -}}
{{- .Values.apiToken.existingSecret | default (include "streamstop.fullname" .) }}
{{- end }}

{{- define "streamstop.apiTokenKey" -}}
{{- if .Values.apiToken.existingSecret }}{{ .Values.apiToken.existingSecretKey }}{{ else }}api-token{{ end }}
{{- end }}

{{- define "streamstop.saslSecret" -}}
{{- .Values.kafkaSasl.existingSecret | default (include "streamstop.fullname" .) }}
{{- end }}

{{- define "streamstop.saslKey" -}}
{{- if .Values.kafkaSasl.existingSecret }}{{ .Values.kafkaSasl.existingSecretKey }}{{ else }}sasl-password{{ end }}
{{- end }}

{{/* True when the KEDA trigger needs credentials or TLS material from a TriggerAuthentication. */}}
{{- define "streamstop.kedaNeedsAuthentication" -}}
{{- if or (include "streamstop.isSasl" .) .Values.kafkaTls.caSecret .Values.kafkaTls.clientSecret .Values.keda.extraSecretTargetRefs }}true{{ end }}
{{- end }}

{{/* True when the chart must create a Secret for an inline token or SASL password. */}}
{{- define "streamstop.createSecret" -}}
{{- if or (and .Values.apiToken.value (not .Values.apiToken.existingSecret)) (and (include "streamstop.usesSaslPassword" .) .Values.kafkaSasl.value (not .Values.kafkaSasl.existingSecret)) }}true{{ end }}
{{- end }}

{{/*
One TOML value. Helm reads numbers from values files as float64, which would print large
whole numbers as 1e+07: whole numbers are printed as integers instead.
*/}}
{{- define "streamstop.tomlValue" -}}
{{- if kindIs "string" . }}{{ toJson . }}
{{- else if kindIs "bool" . }}{{ . }}
{{- else if eq (float64 .) (floor .) }}{{ int64 . }}
{{- else }}{{ toString . }}
{{- end }}
{{- end }}

{{/* streamstop.toml: every section of .Values.config plus the mounted secret files. */}}
{{- define "streamstop.toml" -}}
# Rendered by the streamstop Helm chart from .Values.config; edit values, not this file.
{{- $kafkaFiles := include "streamstop.kafkaFiles" . | fromJsonArray }}
{{- range $section, $keys := .Values.config }}

[{{ $section }}]
{{- range $key, $value := $keys }}
{{- /* A key the chart points at a mounted file is written once, below. */}}
{{- if not (and (eq $section "kafka") (eq $key "ssl_cafile") $.Values.kafkaTls.caSecret) }}
{{ $key }} = {{ include "streamstop.tomlValue" $value }}
{{- end }}
{{- end }}
{{- if eq $section "api" }}
token_file = {{ printf "%s/api-token" (include "streamstop.secretDir" $) | toJson }}
{{- end }}
{{- if eq $section "kafka" }}
{{- range $kafkaFiles }}
{{ .config }} = {{ printf "%s/%s" (include "streamstop.secretDir" $) .path | toJson }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* Refuse values that would deploy a daemon bound to fail or to be killed mid-drain. */}}
{{- define "streamstop.validate" -}}
{{- if and .Values.autoscaling.enabled .Values.keda.enabled }}
{{- fail "autoscaling.enabled and keda.enabled are mutually exclusive: both would drive the Deployment's replicas" }}
{{- end }}
{{- if le (float64 .Values.terminationGracePeriodSeconds) (float64 .Values.config.lifecycle.shutdown_timeout_s) }}
{{- fail "terminationGracePeriodSeconds must be greater than config.lifecycle.shutdown_timeout_s, or a draining pod is killed before it commits" }}
{{- end }}
{{- if and .Values.apiToken.value .Values.apiToken.existingSecret }}
{{- fail "set apiToken.existingSecret or apiToken.value, not both" }}
{{- end }}
{{- if not (or .Values.apiToken.value .Values.apiToken.existingSecret) }}
{{- fail "the stop API token is required: set apiToken.existingSecret (recommended) or apiToken.value" }}
{{- end }}
{{- if include "streamstop.usesSaslPassword" . }}
{{- if and .Values.kafkaSasl.value .Values.kafkaSasl.existingSecret }}
{{- fail "set kafkaSasl.existingSecret or kafkaSasl.value, not both" }}
{{- end }}
{{- if not (or .Values.kafkaSasl.value .Values.kafkaSasl.existingSecret) }}
{{- fail (printf "config.kafka.security_protocol %s needs kafkaSasl.existingSecret or kafkaSasl.value" .Values.config.kafka.security_protocol) }}
{{- end }}
{{- if not .Values.config.kafka.sasl_username }}
{{- fail (printf "config.kafka.security_protocol %s needs config.kafka.sasl_username" .Values.config.kafka.security_protocol) }}
{{- end }}
{{- end }}
{{- if include "streamstop.isOAuth" . }}
{{- if not .Values.kafkaOAuth.existingSecret }}
{{- fail "config.kafka.sasl_mechanism OAUTHBEARER needs kafkaOAuth.existingSecret (the client secret)" }}
{{- end }}
{{- if not (and .Values.config.kafka.oauth_token_url .Values.config.kafka.oauth_client_id) }}
{{- fail "config.kafka.sasl_mechanism OAUTHBEARER needs config.kafka.oauth_token_url and config.kafka.oauth_client_id" }}
{{- end }}
{{- end }}
{{- if and (or .Values.kafkaTls.caSecret .Values.kafkaTls.clientSecret) (not (include "streamstop.isTls" .)) }}
{{- fail (printf "kafkaTls is set but config.kafka.security_protocol %s uses no TLS: use SSL or SASL_SSL" .Values.config.kafka.security_protocol) }}
{{- end }}
{{- if and .Values.kafkaTls.caSecret .Values.config.kafka.ssl_cafile }}
{{- fail "set kafkaTls.caSecret or config.kafka.ssl_cafile, not both" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" }}
{{- end }}
{{- if and .Values.keda.enabled (gt (int .Values.keda.minReplicaCount) (int .Values.keda.maxReplicaCount)) }}
{{- fail "keda.minReplicaCount must not exceed keda.maxReplicaCount" }}
{{- end }}
{{- end }}
