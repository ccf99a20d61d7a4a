terraform {
  required_version = ">= 1.5.0"

  required_providers {
    minio = {
      source = "aminueza/minio"
      # 3.11.3 is the first release that keeps an abort-only lifecycle rule in state
      # without sending it (MinIO rejects a rule with no expiration or transition).
      version = ">= 3.11.3, < 4.0.0"
    }
  }
}
