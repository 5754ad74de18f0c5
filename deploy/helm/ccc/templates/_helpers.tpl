{{/*
Helpers shared by every per-service template. Each template ranges over the `services:`
map and calls "ccc.services" to get every enabled service with serviceDefaults merged in,
so no manifest is ever written per service.
*/}}

{{- define "ccc.fullname" -}}
{{- if contains "ccc" .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-ccc" .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "ccc.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
All enabled services, defaults merged: a JSON map name -> config, plus derived fields
(fullname, kind "http" or "bus", port, domain). Usage:
  {{- range $name, $svc := (include "ccc.services" $ | fromJson) }}
*/}}
{{- define "ccc.services" -}}
{{- $out := dict -}}
{{- range $name, $cfg := .Values.services -}}
{{- $svc := mergeOverwrite (deepCopy $.Values.serviceDefaults) (deepCopy (default (dict) $cfg)) -}}
{{- if $svc.enabled -}}
{{- if not (regexMatch "^[a-z][a-z0-9_-]*$" $name) -}}
{{- fail (printf "services.%s: a service name is a lower-case token" $name) -}}
{{- end -}}
{{- $_ := set $svc "name" $name -}}
{{- $_ := set $svc "domain" ($name | replace "-" "_") -}}
{{- $_ := set $svc "fullname" (printf "%s-%s" (include "ccc.fullname" $) ($name | replace "_" "-") | trunc 63 | trimSuffix "-") -}}
{{- if and $svc.http $svc.http.port -}}
{{- $_ := set $svc "kind" "http" -}}
{{- $_ := set $svc "port" $svc.http.port -}}
{{- else -}}
{{- $_ := set $svc "kind" "bus" -}}
{{- $_ := set $svc "port" $svc.metricsPort -}}
{{- end -}}
{{- $_ := set $out $name $svc -}}
{{- end -}}
{{- end -}}
{{- $out | toJson -}}
{{- end -}}

{{- define "ccc.labels" -}}
helm.sh/chart: {{ include "ccc.chart" .root }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: ccc
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
{{ include "ccc.selectorLabels" . }}
{{- end -}}

{{- define "ccc.selectorLabels" -}}
app.kubernetes.io/name: {{ .svc.name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .svc.kind }}-service
{{- end -}}

{{/* The image of a service: services.<name>.image overrides the fleet-wide `image`. */}}
{{- define "ccc.image" -}}
{{- $img := default (dict) .svc.image -}}
{{- $repo := $img.repository | default (printf "%s/ccc-%s" .root.Values.image.registry .svc.name | trimPrefix "/") -}}
{{- $tag := $img.tag | default .root.Values.image.tag | default .root.Chart.AppVersion -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $repo $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}
{{- end -}}

{{/* The NATS URL every process connects to (without credentials). */}}
{{- define "ccc.natsHost" -}}
{{- if .Values.bus.url -}}
{{- .Values.bus.url | trimPrefix "nats://" -}}
{{- else if .Values.nats.enabled -}}
{{- printf "%s:%v" (.Values.nats.fullnameOverride | default (printf "%s-nats" .Release.Name)) .Values.bus.port -}}
{{- else -}}
{{- fail "bus.url is required when nats.enabled=false" -}}
{{- end -}}
{{- end -}}

{{/* Env var holding a service's NATS password (key of bus.auth.passwordsSecret). */}}
{{- define "ccc.natsPasswordVar" -}}
{{- printf "CCC_NATS_PASSWORD_%s" (.name | upper | replace "-" "_") -}}
{{- end -}}

{{/*
Subjects a service's NATS user may use. Each service subscribes only to its own request
subjects, discovery and its inboxes; it publishes requests to other services, commands,
its own events, and JetStream API calls scoped to the shared streams and its own KV and
object buckets. The gateway is the edge: it may request and publish events for any domain.
Input: dict root, svc, domains (list of every service domain).
*/}}
{{/* JetStream API subjects to own one stream (create, read, consume, ack). */}}
{{- define "ccc.jsStream" -}}
{{- $s := . -}}
{{- list
  (printf "$JS.API.STREAM.*.%s" $s) (printf "$JS.API.STREAM.MSG.*.%s" $s)
  (printf "$JS.API.DIRECT.GET.%s" $s) (printf "$JS.API.DIRECT.GET.%s.>" $s)
  (printf "$JS.API.CONSUMER.*.%s" $s) (printf "$JS.API.CONSUMER.*.%s.>" $s)
  (printf "$JS.API.CONSUMER.DURABLE.CREATE.%s.>" $s) (printf "$JS.API.CONSUMER.MSG.NEXT.%s.>" $s)
  (printf "$JS.ACK.%s.>" $s)
  | toJson -}}
{{- end -}}

{{/*
Subjects a service's NATS user may use. Each service subscribes only to its own request
subjects, discovery and its inboxes; it publishes requests to other services, commands,
its own events, and JetStream API calls scoped to the shared streams, its own KV and
object buckets and the streams it declares (services.<name>.streams). The gateway is the
edge: it may request and publish for any domain and follows lifecycle events.
Input: dict root, svc, domains (list of every service domain).
*/}}
{{- define "ccc.natsPermissions" -}}
{{- $d := .svc.domain -}}
{{- $bucket := printf "ccc_%s" $d -}}
{{- $js := list
  "$JS.API.INFO"
  "$JS.API.STREAM.INFO.CCC_COMMANDS" "$JS.API.STREAM.CREATE.CCC_COMMANDS" "$JS.API.STREAM.UPDATE.CCC_COMMANDS"
  "$JS.API.STREAM.INFO.CCC_EVENTS" "$JS.API.STREAM.CREATE.CCC_EVENTS" "$JS.API.STREAM.UPDATE.CCC_EVENTS"
  (printf "$JS.API.CONSUMER.*.CCC_COMMANDS.%s" $d) (printf "$JS.API.CONSUMER.*.CCC_COMMANDS.%s.>" $d)
  (printf "$JS.API.CONSUMER.DURABLE.CREATE.CCC_COMMANDS.%s" $d)
  (printf "$JS.API.CONSUMER.MSG.NEXT.CCC_COMMANDS.%s" $d) (printf "$JS.ACK.CCC_COMMANDS.%s.>" $d)
  "$JS.API.CONSUMER.*.CCC_EVENTS" "$JS.API.CONSUMER.*.CCC_EVENTS.>"
  "$JS.API.CONSUMER.DURABLE.CREATE.CCC_EVENTS.>" "$JS.API.CONSUMER.MSG.NEXT.CCC_EVENTS.>"
  "$JS.ACK.CCC_EVENTS.>" "$JS.FC.>"
  (printf "$KV.%s.>" $bucket) (printf "$O.%s.>" $bucket)
-}}
{{- range (concat (list (printf "KV_%s" $bucket) (printf "OBJ_%s" $bucket)) (default (list) .svc.streams)) -}}
{{- $js = concat $js (include "ccc.jsStream" . | fromJsonArray) -}}
{{- end -}}
{{- $pub := concat $js (list "ccc.cmd.>" (printf "ccc.evt.%s.>" $d) (printf "ccc.%s.>" $d) "$SRV.>" "_INBOX.>") -}}
{{- $sub := list (printf "ccc.%s.>" $d) "$SRV.PING" "$SRV.INFO" "$SRV.STATS" (printf "$SRV.*.%s" $d) (printf "$SRV.*.%s.>" $d) "_INBOX.>" -}}
{{- if eq .svc.kind "http" -}}
{{- $pub = concat $pub (list "ccc.>" "$JS.API.STREAM.NAMES" "$JS.API.STREAM.MSG.GET.CCC_EVENTS") -}}
{{- $sub = append $sub "ccc.evt.*.service.*" -}}
{{- else -}}
{{- range .domains -}}
{{- if ne . $d -}}{{- $pub = append $pub (printf "ccc.%s.>" .) -}}{{- end -}}
{{- end -}}
{{- end -}}
{{- $extra := default (dict) .svc.natsPermissions -}}
{{- $pub = concat $pub (default (list) $extra.publish) | uniq -}}
{{- $sub = concat $sub (default (list) $extra.subscribe) | uniq -}}
{{- dict "publish" (dict "allow" $pub) "subscribe" (dict "allow" $sub) "allow_responses" true | toRawJson -}}
{{- end -}}

{{/* Pod-level pieces shared by service pods and the test pod. */}}
{{- define "ccc.podSecurity" -}}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
