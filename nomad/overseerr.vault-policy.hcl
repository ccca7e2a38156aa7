# Vault policy for the overseerr job: read the MinIO credentials used by liteship.
# The secret is KV v2 at mount "nomad", path "default/overseerr", with the keys
# MINIO_ACCESS_KEY and MINIO_SECRET_KEY.
# Apply with: vault policy write overseerr nomad/overseerr.vault-policy.hcl
path "nomad/data/default/overseerr" {
  capabilities = ["read"]
}
