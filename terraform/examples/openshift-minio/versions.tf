terraform {
  required_version = ">= 1.5.0"

  required_providers {
    minio = {
      source  = "aminueza/minio"
      version = ">= 3.11.3, < 4.0.0"
    }
    kubernetes = {
      source  = "hashicorp/kubernetes"
      version = ">= 2.23.0, < 4.0.0"
    }
  }

  # The state holds the broker's secret key (service account and Secret): keep it in an
  # encrypted, access-controlled backend, for example
  # backend "s3" { bucket = "tf-state" key = "sediment/openshift-minio.tfstate" encrypt = true }
  # or backend "kubernetes" { secret_suffix = "sediment-archive" namespace = "terraform" }.
}
