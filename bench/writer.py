"""Sends config writes to the control plane as fast as it answers, for a time.

Usage: writer.py API_URL SECONDS WRITERS — each writer flips a member's weight.
"""
import json
import sys
import threading
import time
import urllib.request


def writer(api, deadline, index, counts):
    member = "127.0.0.1:18081" if index % 2 == 0 else "127.0.0.1:18082"
    n = 0
    while time.monotonic() < deadline:
        body = json.dumps({"weight": 1 + (n % 2)}).encode()
        request = urllib.request.Request(
            f"{api}/api/v1/clusters/bench/members/{member}", data=body, method="PATCH",
            headers={"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
        n += 1
    counts[index] = n


def main():
    api, seconds, writers = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    deadline = time.monotonic() + seconds
    counts = [0] * writers
    threads = [threading.Thread(target=writer, args=(api, deadline, i, counts)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"writes: {sum(counts)} in {seconds:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
