{{/* Names and labels. */}}
{{- define "filedriver.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "filedriver.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "filedriver.selectorLabels" -}}
app.kubernetes.io/name: {{ include "filedriver.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "filedriver.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "filedriver.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "filedriver.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "filedriver.sidecarImage" -}}
{{- printf "%s:%s" .image.repository .image.tag -}}
{{- end -}}

{{/*
Where a mount appears inside the driver's pods. A hostPath mount's *parent*
is bound at /filedriver/hosts/<name> and the share is looked for below it:
inside a container every volume is a mount point, so binding the share's own
directory would make an unmounted share (an empty local directory) look
mounted to the driver's mountinfo check. Through the parent, the share is a
mount point only when the host has it mounted (propagated HostToContainer).
*/}}
{{- define "filedriver.mountPath" -}}
{{- if .hostPath -}}
{{- printf "/filedriver/hosts/%s/%s" .name (base .hostPath) -}}
{{- else -}}
{{- printf "/filedriver/mounts/%s" .name -}}
{{- end -}}
{{- end -}}

{{- define "filedriver.mountArgs" -}}
{{- range .Values.mounts }}
- --mount={{ .name }}={{ include "filedriver.mountPath" . }}
{{- end }}
{{- end -}}

{{- define "filedriver.mountVolumeMounts" -}}
{{- range .Values.mounts }}
- name: mount-{{ .name }}
  mountPath: {{ if .hostPath }}/filedriver/hosts/{{ .name }}{{ else }}/filedriver/mounts/{{ .name }}{{ end }}
  {{- if .hostPath }}
  mountPropagation: HostToContainer
  {{- end }}
{{- end }}
{{- end -}}

{{- define "filedriver.mountVolumes" -}}
{{- $root := . -}}
{{- range .Values.mounts }}
- name: mount-{{ .name }}
  {{- if .hostPath }}
  hostPath:
    path: {{ dir .hostPath }}
    # Created empty where missing: a node without the share then runs and
    # simply does not offer this mount.
    type: DirectoryOrCreate
  {{- else }}
  persistentVolumeClaim:
    claimName: {{ include "filedriver.fullname" $root }}-mount-{{ .name }}
  {{- end }}
{{- end }}
{{- end -}}

{{/* Every controller container: nothing to escalate to, nothing to write but its volumes. */}}
{{- define "filedriver.restricted" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end -}}

{{/* The driver's settings shared by both pods. */}}
{{- define "filedriver.commonArgs" -}}
- --endpoint=unix:///csi/csi.sock
- --driver-name={{ .Values.driverName }}
- --log-level={{ .Values.logLevel }}
{{- if .Values.metrics.enabled }}
- --metrics-address=:{{ .Values.metrics.port }}
{{- end }}
{{- include "filedriver.mountArgs" . }}
{{- end -}}

{{/*
Checks the schema cannot express; each fails the render with one clear line.
*/}}
{{- define "filedriver.validate" -}}
{{- $names := list -}}
{{- range .Values.mounts -}}
{{- if and .hostPath .nfs -}}
{{- fail (printf "mounts: %s has both hostPath and nfs; give one" .name) -}}
{{- end -}}
{{- if not (or .hostPath .nfs) -}}
{{- fail (printf "mounts: %s needs hostPath (a directory the share is mounted on, on the nodes) or nfs {server, path}" .name) -}}
{{- end -}}
{{- if and .hostPath (or (has ".." (splitList "/" .hostPath)) (has "." (splitList "/" .hostPath))) -}}
{{- fail (printf "mounts: %s hostPath %s has a . or .. segment; give the plain path (its parent is bound into the pods)" .name .hostPath) -}}
{{- end -}}
{{- if has .name $names -}}
{{- fail (printf "mounts: %s is listed twice" .name) -}}
{{- end -}}
{{- $names = append $names .name -}}
{{- end -}}
{{- $defaults := 0 -}}
{{- range .Values.storageClasses -}}
{{- $sc := . -}}
{{- range .mounts -}}
{{- if not (has . $names) -}}
{{- fail (printf "storageClasses: %s names mount %s, which is not in mounts (%s)" $sc.name . (join ", " $names)) -}}
{{- end -}}
{{- end -}}
{{- if .default }}{{ $defaults = add1 $defaults }}{{ end -}}
{{- end -}}
{{- if gt $defaults 1 -}}
{{- fail "storageClasses: more than one has default: true" -}}
{{- end -}}
{{- range .Values.volumeAttributesClasses -}}
{{- if and .mount (not (has .mount $names)) -}}
{{- fail (printf "volumeAttributesClasses: %s names mount %s, which is not in mounts (%s)" .name .mount (join ", " $names)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
