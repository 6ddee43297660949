"""What the AWS integration tests do to the emulator with boto3, as a producer or an operator would.

    moto_ops.py firehose-setup BUCKET STREAM PREFIX   create the bucket and a delivery stream to s3://BUCKET/PREFIX
    moto_ops.py firehose-put STREAM DIR               send every record of the drops under DIR with PutRecordBatch
    moto_ops.py upload BUCKET PREFIX DIR              copy a folder of drops to s3://BUCKET/PREFIX as it is
    moto_ops.py count S3_URL                          how many objects are below s3://BUCKET/PREFIX
    moto_ops.py athena-results JSON                   queue results the emulator returns to the next Athena query
    moto_ops.py athena-executions                     the Athena query executions, as JSON

The endpoint and credentials come from the environment (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...).
"""

import gzip
import json
import os
import sys
import urllib.request

import boto3


def athena(operation, body):
    """One Athena call in the JSON protocol the runner's SDK speaks (X-Amz-Target). boto3 1.44
    moved Athena to another protocol that moto 5.1 does not route, and moto 5.2 routes neither."""
    region = os.environ.get("AWS_REGION", os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    headers = {
        "X-Amz-Target": f"AmazonAthena.{operation}",
        "Content-Type": "application/x-amz-json-1.1",
        # moto routes by the credential scope's service; it does not check the signature.
        "Authorization": f"AWS4-HMAC-SHA256 Credential=testing/20260101/{region}/athena/aws4_request, "
        "SignedHeaders=host, Signature=0",
    }
    url = os.environ["AWS_ENDPOINT_URL"].rstrip("/") + "/"
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    return json.loads(urllib.request.urlopen(req).read())


def records(text):
    """The records of a drop: JSON values back to back or one per line; text that is not JSON
    stays one record per line, as a broken producer would have sent it."""
    dec = json.JSONDecoder()
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " \t\r\n":
            i += 1
        if i >= n:
            break
        try:
            _, end = dec.raw_decode(text, i)
        except json.JSONDecodeError:
            end = text.find("\n", i)
            end = n if end < 0 else end
        yield text[i:end]
        i = end


def drop_files(root):
    for dirpath, _, files in sorted(os.walk(root)):
        if "failed" in dirpath:
            continue
        for f in sorted(files):
            if f.endswith(".txt"):
                continue
            yield os.path.join(dirpath, f)


def ensure_bucket(name):
    s3 = boto3.client("s3")
    try:
        s3.create_bucket(Bucket=name)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    return s3


def main(argv):
    cmd = argv[1]
    if cmd == "firehose-setup":
        bucket, stream, prefix = argv[2:5]
        ensure_bucket(bucket)
        boto3.client("firehose").create_delivery_stream(
            DeliveryStreamName=stream,
            DeliveryStreamType="DirectPut",
            ExtendedS3DestinationConfiguration={
                "RoleARN": "arn:aws:iam::123456789012:role/firehose",
                "BucketARN": f"arn:aws:s3:::{bucket}",
                "Prefix": prefix,
                "BufferingHints": {"SizeInMBs": 5, "IntervalInSeconds": 300},
                "CompressionFormat": "UNCOMPRESSED",
            },
        )
    elif cmd == "firehose-put":
        stream, root = argv[2:4]
        fh = boto3.client("firehose")
        sent = 0
        for path in drop_files(root):
            data = open(path, "rb").read()
            if path.endswith(".gz"):
                data = gzip.decompress(data)
            recs = [{"Data": (r + "\n").encode()} for r in records(data.decode("utf-8", "replace"))]
            # One drop's records per call (at most 500 per call, Firehose's limit).
            for k in range(0, len(recs), 500):
                out = fh.put_record_batch(DeliveryStreamName=stream, Records=recs[k : k + 500])
                assert out["FailedPutCount"] == 0, out
                sent += len(recs[k : k + 500])
        print(sent)
    elif cmd == "upload":
        bucket, prefix, root = argv[2:5]
        s3 = ensure_bucket(bucket)
        for path in drop_files(root):
            key = prefix.rstrip("/") + "/" + os.path.relpath(path, root)
            s3.put_object(Bucket=bucket, Key=key, Body=open(path, "rb").read())
    elif cmd == "count":
        bucket, _, prefix = argv[2].removeprefix("s3://").partition("/")
        pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix.rstrip("/") + "/")
        print(sum(p.get("KeyCount", 0) for p in pages))
    elif cmd == "athena-results":
        url = os.environ["AWS_ENDPOINT_URL"] + "/moto-api/static/athena/query-results"
        req = urllib.request.Request(url, data=argv[2].encode(), headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req).read()
    elif cmd == "athena-executions":
        ids = athena("ListQueryExecutions", {})["QueryExecutionIds"]
        out = [athena("GetQueryExecution", {"QueryExecutionId": i})["QueryExecution"] for i in ids]
        print(json.dumps(out, default=str))
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main(sys.argv)
