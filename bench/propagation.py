"""Times WRITES writes with ?wait until every replica ACKed; prints percentiles.

Usage: propagation.py API_URL WRITES REPLICAS
"""
import json
import sys
import time
import urllib.request


def call(method, url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"null")


def main():
    api, writes, replicas = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    member = "127.0.0.1:18081"
    times = []
    version = 0
    for i in range(writes):
        started = time.perf_counter()
        answer = call("PATCH", f"{api}/api/v1/clusters/web/members/{member}?wait=10s", {"weight": 1 + i % 50})
        times.append((time.perf_counter() - started) * 1000)
        version = answer["version"]
    planes = call("GET", f"{api}/api/v1/dataplanes")
    synced = [p for p in planes if p["state"] == "synced" and p["version"] == version]
    if len(synced) != replicas:
        sys.exit(f"expected {replicas} replicas synced at version {version}, got {planes}")
    times.sort()
    pick = lambda q: times[min(len(times) - 1, int(q * len(times)))]
    print(f"replicas={replicas} writes={writes} write->all-ACK ms: "
          f"p50={pick(0.5):.2f} p90={pick(0.9):.2f} p99={pick(0.99):.2f} max={times[-1]:.2f}")


if __name__ == "__main__":
    main()
