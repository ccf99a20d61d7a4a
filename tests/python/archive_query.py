#!/usr/bin/env python3
"""Reads Sediment's Parquet archive with real engines and prints what they saw as JSON, for the
end-to-end tests to compare with what was produced.

  archive_query.py duckdb-s3 --endpoint HOST:PORT --bucket B --prefix P --topic T
                   [--key-filter K --from-ms MS]
  archive_query.py spark --root DIR --topic T [--key-filter K --from-ms MS]
  archive_query.py pyarrow-s3 --endpoint HOST:PORT --bucket B --key OBJECT_KEY

Bytes (keys, values, header values) are printed as hex; timestamps as epoch milliseconds.
"""

import argparse
import datetime
import glob
import json
import os
import sys


def hexb(b):
    return None if b is None else bytes(b).hex()


def headers_json(headers):
    return [[h["key"], hexb(h["value"])] for h in (headers or [])]


def iso(ms):
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc).isoformat()


def duckdb_s3(a):
    import duckdb
    import duckdb_extension_httpfs

    ext = glob.glob(
        os.path.join(os.path.dirname(duckdb_extension_httpfs.__file__), "extensions", "*", "httpfs.duckdb_extension")
    )[0]
    con = duckdb.connect()
    con.execute(f"LOAD '{ext}'")
    con.execute(
        f"CREATE SECRET (TYPE s3, KEY_ID '{a.access_key}', SECRET '{a.secret_key}', "
        f"ENDPOINT '{a.endpoint}', URL_STYLE 'path', USE_SSL false, REGION 'us-east-1')"
    )
    prefix = f"{a.prefix}/" if a.prefix else ""
    path = f"s3://{a.bucket}/{prefix}topic={a.topic}/**/*.parquet"
    src = f"read_parquet('{path}', hive_partitioning=true)"
    # The query from the issue, verbatim apart from ORDER BY.
    summary = con.execute(
        f'SELECT partition, count(*), min("offset"), max("offset") FROM {src} GROUP BY 1 ORDER BY 1'
    ).fetchall()
    rows = con.execute(
        f'SELECT partition, "offset", epoch_ms(timestamp), timestamp_type, key, value, headers, '
        f"producer_id, leader_epoch FROM {src} ORDER BY partition, \"offset\""
    ).fetchall()
    out = {
        "summary": [[int(p), int(n), int(lo), int(hi)] for p, n, lo, hi in summary],
        "rows": [
            {
                "partition": int(r[0]),
                "offset": r[1],
                "timestamp": r[2],
                "timestamp_type": r[3],
                "key": hexb(r[4]),
                "value": hexb(r[5]),
                "headers": headers_json(r[6]),
                "producer_id": r[7],
                "leader_epoch": r[8],
            }
            for r in rows
        ],
    }
    if a.key_filter is not None:
        filtered = con.execute(
            f'SELECT partition, "offset" FROM {src} '
            f"WHERE timestamp >= CAST(? AS TIMESTAMPTZ) AND key = CAST(? AS BLOB) "
            f'ORDER BY partition, "offset"',
            [iso(a.from_ms), a.key_filter],
        ).fetchall()
        out["filtered"] = [[int(p), o] for p, o in filtered]
    print(json.dumps(out))


def spark(a):
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    spark = (
        SparkSession.builder.master("local[1]")
        .appName("sediment-archive-test")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.memory", "512m")
        .config("spark.sql.shuffle.partitions", "2")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    df = spark.read.parquet(os.path.join(a.root, f"topic={a.topic}"))
    summary = (
        df.groupBy("partition")
        .agg(F.count("*"), F.min("offset"), F.max("offset"))
        .orderBy("partition")
        .collect()
    )
    rows = (
        df.select(
            "partition",
            "offset",
            F.unix_millis("timestamp").alias("ts"),
            "timestamp_type",
            "key",
            "value",
            "headers",
            "producer_id",
            "leader_epoch",
        )
        .orderBy("partition", "offset")
        .collect()
    )
    out = {
        "schema": df.schema.simpleString(),
        "summary": [[r[0], r[1], r[2], r[3]] for r in summary],
        "rows": [
            {
                "partition": r["partition"],
                "offset": r["offset"],
                "timestamp": r["ts"],
                "timestamp_type": r["timestamp_type"],
                "key": hexb(r["key"]),
                "value": hexb(r["value"]),
                "headers": [[h["key"], hexb(h["value"])] for h in (r["headers"] or [])],
                "producer_id": r["producer_id"],
                "leader_epoch": r["leader_epoch"],
            }
            for r in rows
        ],
    }
    if a.key_filter is not None:
        filtered = (
            df.where(
                (F.col("timestamp") >= F.lit(iso(a.from_ms)).cast("timestamp"))
                & (F.col("key") == F.lit(a.key_filter).cast("binary"))
            )
            .select("partition", "offset")
            .orderBy("partition", "offset")
            .collect()
        )
        out["filtered"] = [[r[0], r[1]] for r in filtered]
    spark.stop()
    print(json.dumps(out))


def pyarrow_s3(a):
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    host, port = a.endpoint.rsplit(":", 1)
    fs = pafs.S3FileSystem(
        access_key=a.access_key,
        secret_key=a.secret_key,
        endpoint_override=f"{host}:{port}",
        scheme="http",
        region="us-east-1",
    )
    path = f"{a.bucket}/{a.key}"
    meta = pq.read_metadata(path, filesystem=fs)
    table = pq.read_table(path, filesystem=fs)
    kv = {k.decode(): v.decode() for k, v in (meta.metadata or {}).items() if k.startswith(b"sediment.")}
    cols = table.to_pydict()
    rows = []
    for i in range(table.num_rows):
        rows.append(
            {
                "partition": cols["partition"][i],
                "offset": cols["offset"][i],
                "timestamp": int(cols["timestamp"][i].timestamp() * 1000) if cols["timestamp"][i] else None,
                "key": hexb(cols["key"][i]),
                "value": hexb(cols["value"][i]),
                "headers": headers_json(cols["headers"][i]),
            }
        )
    print(
        json.dumps(
            {
                "metadata": kv,
                "num_row_groups": meta.num_row_groups,
                "schema": str(table.schema.field("timestamp").type),
                "rows": rows,
            }
        )
    )


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["duckdb-s3", "spark", "pyarrow-s3"])
    p.add_argument("--endpoint")
    p.add_argument("--bucket")
    p.add_argument("--prefix", default="")
    p.add_argument("--topic")
    p.add_argument("--root")
    p.add_argument("--key")
    p.add_argument("--key-filter")
    p.add_argument("--from-ms", type=int, default=0)
    p.add_argument("--access-key", default=os.environ.get("AWS_ACCESS_KEY_ID", ""))
    p.add_argument("--secret-key", default=os.environ.get("AWS_SECRET_ACCESS_KEY", ""))
    a = p.parse_args()
    {"duckdb-s3": duckdb_s3, "spark": spark, "pyarrow-s3": pyarrow_s3}[a.mode](a)


if __name__ == "__main__":
    sys.exit(main())
