provider "minio" {
  minio_server      = var.minio_server
  minio_user        = var.minio_user
  minio_password    = var.minio_password
  minio_region      = var.minio_region
  minio_ssl         = var.minio_ssl
  minio_insecure    = var.minio_insecure
  minio_cacert_file = var.minio_cacert_file
}

provider "kubernetes" {
  config_path    = pathexpand(var.kubeconfig_path)
  config_context = var.kubeconfig_context
}
