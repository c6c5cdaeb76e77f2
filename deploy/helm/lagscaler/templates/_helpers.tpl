{{/* The name of every object: the release name, with "lagscaler" unless it says so. */}}
{{- define "lagscaler.fullname" -}}
{{- if contains "lagscaler" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-lagscaler" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels that select the pods. app.kubernetes.io/name is also the alert rules' job. */}}
{{- define "lagscaler.selectorLabels" -}}
app.kubernetes.io/name: lagscaler
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "lagscaler.labels" -}}
{{ include "lagscaler.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Checks that refuse a combination of values that cannot work, before anything runs. */}}
{{- define "lagscaler.validate" -}}
{{- $sasl := .Values.kafka.sasl -}}
{{- if not (has $sasl (list "none" "plaintext" "scram_sha256" "scram_sha512" "oauthbearer" "gssapi")) -}}
{{- fail "kafka.sasl: accepted are none, plaintext, scram_sha256, scram_sha512, oauthbearer, gssapi" -}}
{{- end -}}
{{- if and (eq $sasl "gssapi") (not .Values.kafka.kerberos.keytabSecret.name) -}}
{{- fail "kafka.kerberos.keytabSecret.name: a Secret holding the keytab is needed with kafka.sasl=gssapi" -}}
{{- end -}}
{{- if and (eq $sasl "gssapi") .Values.kafka.passwordSecret.name -}}
{{- fail "kafka.passwordSecret.name: not with kafka.sasl=gssapi, which logs in with a keytab (kafka.kerberos.keytabSecret)" -}}
{{- end -}}
{{- if and (ne $sasl "none") (ne $sasl "gssapi") (not .Values.kafka.passwordSecret.name) -}}
{{- fail "kafka.passwordSecret.name: a Secret holding the SASL password (or OAUTHBEARER client secret) is needed with kafka.sasl" -}}
{{- end -}}
{{- if and (ne $sasl "none") (not .Values.kafka.username) -}}
{{- fail "kafka.username: needed with kafka.sasl (OAUTHBEARER: the client id; GSSAPI: the principal)" -}}
{{- end -}}
{{- if and (eq $sasl "oauthbearer") (not .Values.kafka.oauth.tokenEndpointUri) -}}
{{- fail "kafka.oauth.tokenEndpointUri: needed with kafka.sasl=oauthbearer" -}}
{{- end -}}
{{- if and .Values.kafka.tls.enabled (not .Values.kafka.tls.secret.name) -}}
{{- fail "kafka.tls.secret.name: a Secret with the brokers' CA is needed with kafka.tls.enabled" -}}
{{- end -}}
{{- if ne (empty .Values.kafka.tls.secret.certKey) (empty .Values.kafka.tls.secret.keyKey) -}}
{{- fail "kafka.tls.secret.certKey and keyKey: both or neither (mutual TLS needs the certificate and its key)" -}}
{{- end -}}
{{- if and .Values.fleet.enabled (not .Values.fleet.redisUrl) -}}
{{- fail "fleet.redisUrl: the fleet's Redis is needed with fleet.enabled" -}}
{{- end -}}
{{- if and .Values.fleet.enabled (regexMatch "://[^/@]*:[^/@]*@" .Values.fleet.redisUrl) -}}
{{- fail "fleet.redisUrl: no password in the URL (it would be in the Pod spec); put it in the Secret fleet.passwordSecret names" -}}
{{- end -}}
{{- if and .Values.grpcTls.enabled (not .Values.grpcTls.secret) -}}
{{- fail "grpcTls.secret: a kubernetes.io/tls Secret is needed with grpcTls.enabled" -}}
{{- end -}}
{{- end -}}
