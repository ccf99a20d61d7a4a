module "archive_bucket" {
  source = "../../modules/minio-bucket"

  bucket             = var.bucket
  prefix             = var.prefix
  versioning_enabled = var.versioning_enabled
}

# Same labels and annotation as deploy/kustomize/overlays/openshift/namespace.yaml, so that
# `kubectl apply -k` of the overlay finds the namespace as it would have made it.
resource "kubernetes_namespace_v1" "sediment" {
  count = var.create_namespace ? 1 : 0

  metadata {
    name = var.namespace

    labels = {
      "openshift.io/cluster-monitoring"    = "false"
      "pod-security.kubernetes.io/enforce" = "restricted"
      "pod-security.kubernetes.io/audit"   = "restricted"
      "pod-security.kubernetes.io/warn"    = "restricted"
    }

    annotations = {
      "openshift.io/display-name" = "Sediment"
    }
  }

  lifecycle {
    # OpenShift adds openshift.io/sa.scc.* annotations (UID and group ranges) to every
    # namespace, and kubectl its last-applied annotation.
    ignore_changes = [metadata[0].annotations]
  }
}

# The Kustomize base (deploy/kustomize/base/statefulset.yaml) reads the broker's S3
# credentials from a Secret of this name with exactly these two keys. The archive URL,
# endpoint and region are not secret: the base's ConfigMap `sediment-archive` sets them
# (see the broker_environment output).
resource "kubernetes_secret_v1" "archive" {
  metadata {
    name      = "sediment-archive"
    namespace = var.create_namespace ? kubernetes_namespace_v1.sediment[0].metadata[0].name : var.namespace

    labels = {
      "app.kubernetes.io/name"       = "sediment"
      "app.kubernetes.io/component"  = "archive"
      "app.kubernetes.io/managed-by" = "terraform"
    }
  }

  type = "Opaque"

  data = {
    AWS_ACCESS_KEY_ID     = module.archive_bucket.access_key_id
    AWS_SECRET_ACCESS_KEY = module.archive_bucket.secret_access_key
  }
}
