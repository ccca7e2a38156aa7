# The same job as overseerr.nomad.hcl for clusters without a container registry: liteship's
# two tasks run with Nomad's `exec` driver, and the binary is fetched by an `artifact` block
# (from your own MinIO, an HTTP server, or a GitHub release), checked against its SHA-256.
# The application task is unchanged. Build and upload the binary with
# scripts/package-binary.sh (see nomad/README.md, step 0).
#
# - task "restore"   (prestart):         restore the database if it is not on the disk
# - task "overseerr" (main):              the application
# - task "replicate" (poststart sidecar): continuous replication, /readyz checked by Nomad

variable "liteship_artifact" {
  type        = string
  description = "go-getter source of the liteship tarball (liteship-VERSION-ARCH-linux.tar.gz), e.g. http://minio.service.consul:9000/releases/liteship-0.1.0-x86_64-linux.tar.gz (a bucket with anonymous download)"
}

variable "liteship_checksum" {
  type        = string
  description = "sha256:<hex> of the tarball, as printed by scripts/package-binary.sh; Nomad refuses a download that does not match."
}

variable "minio_service" {
  type        = string
  description = "Consul service name of MinIO's S3 API."
  default     = "minio"
}

job "overseerr" {
  datacenters = ["dc1"]
  namespace   = "default"
  type        = "service"

  group "overseerr" {
    count = 1

    network {
      mode = "bridge"
      port "http" {
        to = 5055
      }
      port "liteship" {
        to = 9090
      }
    }

    ephemeral_disk {
      size    = 100
      sticky  = true
      migrate = true
    }

    volume "config" {
      type            = "csi"
      source          = "glusterfs_overseerr_config"
      access_mode     = "single-node-writer"
      attachment_mode = "file-system"
    }

    service {
      name = "overseerr"
      port = "5055"

      connect {
        sidecar_service {
          proxy {
            transparent_proxy {}
          }
        }
      }

      check {
        type     = "http"
        path     = "/api/v1/status"
        interval = "10s"
        timeout  = "30s"
        expose   = true
      }

      tags = [
        "traefik.enable=true",
        "traefik.http.routers.overseerr.rule=Host(`overseerr.brmartin.co.uk`)",
        "traefik.http.routers.overseerr.entrypoints=websecure",
        "traefik.consulcatalog.connect=true",
      ]
    }

    # The replicator's health: 200 once a snapshot is durable in MinIO and uploads keep up.
    service {
      name = "overseerr-liteship"
      port = "liteship"

      check {
        type     = "http"
        path     = "/readyz"
        interval = "15s"
        timeout  = "5s"
      }
    }

    task "restore" {
      driver = "exec"

      lifecycle {
        hook    = "prestart"
        sidecar = false
      }

      artifact {
        source      = var.liteship_artifact
        destination = "local/liteship"
        options {
          checksum = var.liteship_checksum
        }
      }

      config {
        command = "local/liteship/liteship"
        # Restores only when the database is not on the disk; exits 0 on an empty bucket
        # (first boot). An unreachable MinIO, a missing bucket or bad credentials fail the
        # task, and Nomad retries it instead of starting the app on an empty database.
        args = [
          "restore",
          "-config", "${NOMAD_SECRETS_DIR}/litestream.yml",
          "-if-db-not-exists",
          "-if-replica-exists",
          "${NOMAD_ALLOC_DIR}/data/db/db.sqlite3",
        ]
      }

      template {
        destination          = "${NOMAD_SECRETS_DIR}/litestream.yml"
        change_mode          = "noop"
        error_on_missing_key = true
        data                 = <<-EOT
        dbs:
          - path: {{ env "NOMAD_ALLOC_DIR" }}/data/db/db.sqlite3
            replica:
              type: s3
              bucket: overseerr-litestream
              path: db
              endpoint: {{ with service "${var.minio_service}" }}{{ with index . 0 }}http://{{ .Address }}:{{ .Port }}{{ end }}{{ else }}http://minio-not-registered.invalid:9000{{ end }}
              region: us-east-1
              force-path-style: true
        {{ with secret "nomad/data/default/overseerr" }}
              access-key-id: {{ .Data.data.MINIO_ACCESS_KEY }}
              secret-access-key: {{ .Data.data.MINIO_SECRET_KEY }}
        {{ end }}
        EOT
      }

      restart {
        attempts = 10
        delay    = "15s"
        mode     = "delay"
      }

      resources {
        cpu    = 200
        memory = 96
      }
    }

    task "overseerr" {
      driver = "docker"

      config {
        image = "sctx/overseerr:latest"
        ports = ["http"]

        mount {
          type   = "bind"
          source = "../alloc/data/db"
          target = "/app/config/db"
        }
      }

      volume_mount {
        volume      = "config"
        destination = "/config"
      }

      resources {
        cpu    = 500
        memory = 512
      }
    }

    task "replicate" {
      driver = "exec"

      lifecycle {
        hook    = "poststart"
        sidecar = true
      }

      # Longer than shutdown-sync-timeout (30 s): the final upload completes on stop and the
      # writer lease is released, so the next allocation replicates without waiting.
      kill_timeout = "45s"
      kill_signal  = "SIGTERM"

      artifact {
        source      = var.liteship_artifact
        destination = "local/liteship"
        options {
          checksum = var.liteship_checksum
        }
      }

      config {
        command = "local/liteship/liteship"
        args = [
          "replicate",
          "-config", "${NOMAD_SECRETS_DIR}/litestream.yml",
          "-addr", ":9090",
        ]
      }

      template {
        destination          = "${NOMAD_SECRETS_DIR}/litestream.yml"
        change_mode          = "restart"
        error_on_missing_key = true
        data                 = <<-EOT
        shutdown-sync-timeout: 30s
        # A crashed or lost allocation blocks its successor's uploads for at most this long.
        lease-ttl: 30s
        dbs:
          - path: {{ env "NOMAD_ALLOC_DIR" }}/data/db/db.sqlite3
            replica:
              type: s3
              bucket: overseerr-litestream
              path: db
              endpoint: {{ with service "${var.minio_service}" }}{{ with index . 0 }}http://{{ .Address }}:{{ .Port }}{{ end }}{{ else }}http://minio-not-registered.invalid:9000{{ end }}
              region: us-east-1
              force-path-style: true
        {{ with secret "nomad/data/default/overseerr" }}
              access-key-id: {{ .Data.data.MINIO_ACCESS_KEY }}
              secret-access-key: {{ .Data.data.MINIO_SECRET_KEY }}
        {{ end }}
        EOT
      }

      resources {
        cpu    = 100
        memory = 64
      }
    }
  }
}
