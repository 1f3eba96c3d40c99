{{/* Name of the objects: the release name, or <release>-kpistream when the
release name does not contain the chart's name. */}}
{{- define "kpistream.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "kpistream.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kpistream.labels" -}}
{{ include "kpistream.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: kpid
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* kpid.yaml (services/config.h): only keys kpid accepts. */}}
{{- define "kpistream.kpidYaml" -}}
{{- $props := dict -}}
{{- if .Values.kafka.tls.enabled -}}
{{- $_ := set $props "security.protocol" "SSL" -}}
{{- $_ := set $props "ssl.ca.location" "/var/run/secrets/kpistream/kafka/ca.crt" -}}
{{- $_ := set $props "ssl.endpoint.identification.algorithm" "https" -}}
{{- if .Values.kafka.tls.clientAuth -}}
{{- $_ := set $props "ssl.certificate.location" "/var/run/secrets/kpistream/kafka/tls.crt" -}}
{{- $_ := set $props "ssl.key.location" "/var/run/secrets/kpistream/kafka/tls.key" -}}
{{- end -}}
{{- end -}}
{{- range $k, $v := .Values.kafka.properties -}}
{{- $_ := set $props $k (toString $v) -}}
{{- end -}}
kafka:
  brokers: {{ .Values.kafka.brokers | quote }}
  group_id: {{ .Values.kafka.groupId | quote }}
  topics:
    {{- toYaml .Values.kafka.topics | nindent 4 }}
  format: {{ .Values.kafka.format | quote }}
  {{- with .Values.kafka.dlqTopic }}
  dlq_topic: {{ . | quote }}
  {{- end }}
  changelog: {{ .Values.kafka.changelog }}
  {{- if $props }}
  properties:
    {{- toYaml $props | nindent 4 }}
  {{- end }}
catalog: kpis.yaml
commit_interval: {{ .Values.commitInterval | quote }}
memory_budget_mb: {{ .Values.memoryBudgetMb | int }}
min_free_disk_mb: {{ .Values.minFreeDiskMb | int }}
{{- with .Values.retention }}
retention:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.dedupWindow }}
dedup_window: {{ . | quote }}
{{- end }}
{{- with .Values.alerting }}
alerting:
  {{- with .alertmanagers }}
  alertmanagers:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .webhooks }}
  webhooks:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .evaluationInterval }}
  evaluation_interval: {{ . | quote }}
  {{- end }}
  {{- with .resendInterval }}
  resend_interval: {{ . | quote }}
  {{- end }}
  {{- with .clock }}
  clock: {{ . | quote }}
  {{- end }}
  generator_url: {{ .generatorUrl | default (printf "http://%s:9464/metrics" (include "kpistream.fullname" $)) | quote }}
{{- end }}
{{- if or .Values.grpc.tls.enabled .Values.grpc.tokens.enabled }}
grpc:
  {{- if .Values.grpc.tls.enabled }}
  tls:
    cert_file: /var/run/secrets/kpistream/grpc-tls/tls.crt
    key_file: /var/run/secrets/kpistream/grpc-tls/tls.key
    {{- if .Values.grpc.tls.clientAuth }}
    client_ca_file: /var/run/secrets/kpistream/grpc-tls/ca.crt
    {{- end }}
  {{- end }}
  {{- if .Values.grpc.tokens.enabled }}
  tokens_file: /var/run/secrets/kpistream/grpc-tokens/tokens.yaml
  {{- end }}
{{- end }}
{{- if .Values.cluster.enabled }}
cluster:
  peers_dns: {{ printf "%s-headless:50051" (include "kpistream.fullname" .) | quote }}
  max_wait: {{ .Values.cluster.maxWait | quote }}
  {{- if .Values.grpc.tls.enabled }}
  tls:
    ca_file: /var/run/secrets/kpistream/grpc-tls/ca.crt
    {{- if .Values.grpc.tls.clientAuth }}
    cert_file: /var/run/secrets/kpistream/grpc-tls/tls.crt
    key_file: /var/run/secrets/kpistream/grpc-tls/tls.key
    {{- end }}
    server_name: {{ include "kpistream.fullname" . | quote }}
  {{- end }}
  {{- if .Values.grpc.tokens.enabled }}
  token_file: /var/run/secrets/kpistream/grpc-tokens/peer-token
  {{- end }}
{{- end }}
{{- if .Values.webConfig.enabled }}
http:
  web_config_file: /var/run/secrets/kpistream/web/web.yml
{{- end }}
{{- end -}}

{{- define "kpistream.memoryRequest" -}}
{{- .Values.resources.requests.memory | default (printf "%dMi" (add (int .Values.memoryBudgetMb) 128)) -}}
{{- end -}}
{{- define "kpistream.memoryLimit" -}}
{{- .Values.resources.limits.memory | default (printf "%dMi" (add (int .Values.memoryBudgetMb) 256)) -}}
{{- end -}}
