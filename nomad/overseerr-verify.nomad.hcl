# Optional: a daily restore drill of Overseerr's replica. `liteship verify` checks the TXID
# chain of every level, restores the newest state into the task's own directory, runs
# integrity_check and fails (exit 1, the allocation is "failed") when anything is wrong or
# the newest file is older than -max-age. Watch it with `nomad job status overseerr-verify`
# or alert on failed allocations of this job. It only reads the bucket; it never writes.

variable "liteship_image" {
  type        = string
  description = "The liteship container image (see nomad/README.md, step 0)."
  default     = "ghcr.io/liteship/liteship:0.1.0"
}

variable "minio_service" {
  type        = string
  description = "Consul service name of MinIO's S3 API."
  default     = "minio"
}

variable "max_age" {
  type        = string
  description = "Fail when the replica's newest file is older than this. Overseerr writes every few minutes, so a day without a new file means replication stopped."
  default     = "26h"
}

job "overseerr-verify" {
  datacenters = ["dc1"]
  namespace   = "default"
  type        = "batch"

  periodic {
    crons            = ["30 4 * * *"]
    prohibit_overlap = true
    time_zone        = "UTC"
  }

  group "verify" {
    count = 1

    # A drill that fails is a finding, not something to retry until it passes.
    restart {
      attempts = 0
      mode     = "fail"
    }

    reschedule {
      attempts  = 0
      unlimited = false
    }

    ephemeral_disk {
      size = 300
    }

    task "verify" {
      driver = "docker"

      config {
        image = var.liteship_image
        args = [
          "verify",
          "-config", "${NOMAD_SECRETS_DIR}/litestream.yml",
          "-max-age", "${var.max_age}",
          "/alloc/data/db/db.sqlite3",
        ]
      }

      # The drill restores into a temporary directory under TMPDIR (removed afterwards):
      # the task's own directory on the ephemeral disk, sized above for the database.
      env {
        TMPDIR = "${NOMAD_TASK_DIR}"
      }

      # The replicate task's replica section, read-only use.
      template {
        destination          = "${NOMAD_SECRETS_DIR}/litestream.yml"
        change_mode          = "noop"
        error_on_missing_key = true
        data                 = <<-EOT
        dbs:
          - path: /alloc/data/db/db.sqlite3
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
        cpu    = 200
        memory = 128
      }
    }
  }
}
