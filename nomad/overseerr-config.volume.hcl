# CSI volume for Overseerr's configuration (settings.json, logs/). The database is NOT on
# this volume: it lives on the allocation's ephemeral disk and is replicated by liteship.
# Create with: nomad volume create nomad/overseerr-config.volume.hcl
id        = "glusterfs_overseerr_config"
name      = "glusterfs_overseerr_config"
type      = "csi"
plugin_id = "glusterfs"
namespace = "default"

capacity_min = "100MiB"
capacity_max = "1GiB"

capability {
  access_mode     = "single-node-writer"
  attachment_mode = "file-system"
}

lifecycle {
  prevent_destroy = true
}
